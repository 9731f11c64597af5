"""The ``assay`` console script: a Ctrl-C at any moment, even while the CLI is still importing its
libraries, ends with "Aborted." and exit code 130, never a KeyboardInterrupt traceback.

A KeyboardInterrupt raised inside an import (typer at start-up; torch, onnxruntime or scipy when a command
first needs them) leaves a half-initialised extension module behind, and the interpreter can crash while it
finalises one (CI saw a SIGSEGV with nothing on stderr). So a Ctrl-C that lands during an import ends the
process at once, without finalisation; anywhere else it raises KeyboardInterrupt as usual, so commands
still clean up their temporary output and say how far they got."""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

__all__ = ["console_main"]


def _inside_import(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    if _inside_import(frame):
        os.write(2, b"Aborted.\n")
        os._exit(130)
    raise KeyboardInterrupt


def console_main() -> None:
    # An inherited SIG_IGN (nohup, a background job of a non-interactive shell) stays ignored.
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        from assay.cli import main

        code = main()
    except KeyboardInterrupt:
        sys.stderr.write("Aborted.\n")
        code = 130
    sys.exit(code)
