"""Ctrl-C ends the ``assay`` script with "Aborted." and exit 130 — during start-up as well as during the
work — never with a KeyboardInterrupt traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(sys.executable).parent / "assay"


@pytest.fixture(scope="module")
def slow_job(tmp_path_factory) -> list[str]:
    """An evaluation that runs for several seconds: a wide MLP on 200,000 rows, no cache."""
    import torch

    from assay.models.export import export_onnx

    root = tmp_path_factory.mktemp("signals")
    net = torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10))
    export_onnx(net, torch.zeros(2, 64), root / "m.onnx")
    rng = np.random.default_rng(0)
    np.savez(root / "d.npz", x=rng.random((200_000, 64)).astype(np.float32), y=rng.integers(0, 10, 200_000))
    return [str(SCRIPT), "evaluate", str(root / "m.onnx"), "--data", str(root / "d.npz"), "--out",
            str(root / "out"), "--no-cache"]


@pytest.fixture(autouse=True)
def _sigint_not_ignored():
    """A test run started in the background by a non-interactive shell (``make test &``) inherits SIGINT
    ignored, children keep an ignored signal across exec, and Python keeps an inherited SIG_IGN (as ``nohup``
    wants): the script would never see the Ctrl-C this test sends. A handled signal is reset to the default
    in the child, so handle it here while the test runs."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _interrupt(args: list[str], delay: float) -> tuple[int, str]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "120"})
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


@pytest.mark.skipif(not SCRIPT.exists(), reason="the assay script is not installed in this environment")
def test_ctrl_c_during_the_work_says_aborted(slow_job):
    code, err = _interrupt(slow_job, 6.0)
    assert code == 130, err
    assert "Aborted." in err and "Traceback" not in err


def _interpreter_start_seconds() -> float:
    """How long this Python takes to run nothing (its own start-up, site imports included)."""
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        runs.append(time.perf_counter() - t)
    return sorted(runs)[1]


@pytest.mark.skipif(not SCRIPT.exists(), reason="the assay script is not installed in this environment")
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5, 1.0])
def test_ctrl_c_during_start_up_never_prints_a_traceback(slow_job, fraction):
    """Interrupts spread over the start-up (imports of typer, rich, numpy, onnxruntime...). A signal that
    lands while the interpreter itself is still starting (before any Assay code) is Python's business
    (it may print "Fatal Python error: init_import_site"), so the first delay is past that."""
    delay = 3 * _interpreter_start_seconds() + fraction
    code, err = _interrupt(slow_job, delay)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert code == 130 and "Aborted." in err, (code, err)


def _run_with_entry_handler(tmp_path: Path, body: str) -> tuple[int, str, str]:
    """Run ``body`` in a fresh interpreter with the console script's SIGINT handler, interrupting it once it
    printed "ready"."""
    (tmp_path / "slow_module.py").write_text("import time\nfor _ in range(200):\n    time.sleep(0.05)\n")
    code = ("import signal\nfrom assay import _entry\nsignal.signal(signal.SIGINT, _entry._on_sigint)\n"
            "print('ready', flush=True)\n" + body)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


def test_ctrl_c_inside_an_import_ends_the_process_at_once(tmp_path):
    """No KeyboardInterrupt is raised into a half-imported module (an interpreter that then finalises a
    half-initialised extension can crash): the process writes "Aborted." and exits 130 right away."""
    code, out, err = _run_with_entry_handler(tmp_path, "import slow_module\nprint('imported')\n")
    assert (code, out, err) == (130, "", "Aborted.\n")


def test_ctrl_c_outside_an_import_is_a_keyboard_interrupt(tmp_path):
    body = "import time\ntry:\n    time.sleep(20)\nexcept KeyboardInterrupt:\n    print('cleaned up')\n"
    code, out, err = _run_with_entry_handler(tmp_path, body)
    assert (code, out.strip(), err) == (0, "cleaned up", "")
