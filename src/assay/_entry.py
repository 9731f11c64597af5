"""The ``assay`` console script: a Ctrl-C at any moment, even while the CLI is still importing its
libraries, ends with "Aborted." and exit code 130, never a KeyboardInterrupt traceback."""

from __future__ import annotations

import sys

__all__ = ["console_main"]


def console_main() -> None:
    try:
        from assay.cli import main

        code = main()
    except KeyboardInterrupt:
        sys.stderr.write("Aborted.\n")
        code = 130
    sys.exit(code)
