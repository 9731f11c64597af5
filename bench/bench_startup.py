"""Start-up: whole-process wall time of small commands, next to bare Python and ``import numpy`` measured in
the same run (interleaved rounds, median), and which heavy libraries ``import assay`` loads. The smallest
real job, ``assay evaluate`` of a linear ONNX model on digits:test (540 images) with a warm cache, is timed
next to a bare onnxruntime process that loads the same model and runs one forward pass.

Fixed costs dominate small jobs: every command pays the interpreter, the imports and, for evaluate, the
report. Target: ``assay --help`` <= 0.5 s; ``import assay`` loads none of torch, matplotlib, onnxruntime,
onnx, scikit-learn, scipy, pandas (they load when a command needs them).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine

ROUNDS = 7
HELP_TARGET_SECONDS = 0.5
HEAVY = ("torch", "matplotlib", "onnxruntime", "onnx", "sklearn", "scipy", "pandas")


def _assay_command() -> list[str]:
    """The installed console script next to this interpreter, else the module form."""
    script = Path(sys.executable).with_name("assay")
    if script.exists():
        return [str(script)]
    found = shutil.which("assay")
    return [found] if found else [sys.executable, "-m", "assay.cli"]


_OLD_HELP = "import sys, assay.api; from assay.cli import main; sys.exit(main(['--help']))"
_BARE_ORT = ("import sys, numpy as np, onnxruntime as ort; s = ort.InferenceSession(sys.argv[1]); "
             "s.run(None, {'x': np.random.default_rng(0).random((540, 1, 8, 8), dtype=np.float32)})")


def _linear_onnx(path: Path) -> None:
    """A 64 -> 10 linear classifier for 1x8x8 inputs, written with onnx.helper (no torch needed)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(64, 10)).astype(np.float32), "w"),
             numpy_helper.from_array(np.zeros(10, np.float32), "b"),
             numpy_helper.from_array(np.array([-1, 64], np.int64), "shape")]
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["flat"]),
         helper.make_node("Gemm", ["flat", "w", "b"], ["logits"])],
        "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _measure(Path(tmp))


def _measure(tmp: Path) -> None:
    py, assay = [sys.executable], _assay_command()
    model = tmp / "linear.onnx"
    _linear_onnx(model)
    evaluate = assay + ["evaluate", str(model), "--data", "digits:test", "--out", str(tmp / "bundle"),
                        "--cache-dir", str(tmp / "cache")]
    subprocess.run(evaluate, check=True, capture_output=True)  # warm the cache
    commands = {
        'python -c "pass"': py + ["-c", "pass"],
        'python -c "import numpy"': py + ["-c", "import numpy"],
        'python -c "import assay"': py + ["-c", "import assay"],
        "assay --help": assay + ["--help"],
        "assay version": assay + ["version"],
        # what evaluate imports, and what `import assay` used to load eagerly before the lazy __init__
        'python -c "import assay.api"': py + ["-c", "import assay.api"],
        # the old --help, reconstructed: the eager __init__ imported assay.api before the CLI could start
        "assay --help as before (assay.api first)": py + ["-c", _OLD_HELP],
        "bare onnxruntime process (load, 540 images)": py + ["-c", _BARE_ORT, str(model)],
        "assay evaluate (same model, digits:test, warm cache)": evaluate,
    }
    runs: dict[str, list[float]] = {name: [] for name in commands}
    load_before = os.getloadavg()[0]
    for _ in range(ROUNDS):  # interleaved: every command sees the same machine load
        for name, argv in commands.items():
            t = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True)
            runs[name].append(time.perf_counter() - t)
    load_after = os.getloadavg()[0]
    median = {name: statistics.median(r) for name, r in runs.items()}
    loaded = json.loads(subprocess.run(
        py + ["-c", f"import json, sys, assay; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"],
        check=True, capture_output=True, text=True).stdout)
    bare, numpy = median['python -c "pass"'], median['python -c "import numpy"']
    print(f"# start-up: whole processes, median of {ROUNDS} interleaved rounds — {machine()}; "
          f"load average {load_before:.1f} before, {load_after:.1f} after")
    width = max(len(n) for n in commands)
    for name in commands:
        print(f"{name:<{width}}  {median[name]:6.3f} s   x{median[name] / numpy:5.2f} numpy   "
              f"+{median[name] - bare:6.3f} s over bare python   (runs {', '.join(f'{r:.2f}' for r in runs[name])})")
    print(f"heavy libraries loaded by `import assay`: {', '.join(loaded) if loaded else 'none'} "
          f"(checked: {', '.join(HEAVY)})")
    help_seconds = median["assay --help"]
    print(f"assay --help speed-up over the eager-import reconstruction: "
          f"{median['assay --help as before (assay.api first)'] / help_seconds:.1f}x")
    small_job = median["assay evaluate (same model, digits:test, warm cache)"]
    bare_job = median["bare onnxruntime process (load, 540 images)"]
    print(f"small job: assay evaluate / bare onnxruntime process: {small_job / bare_job:.1f}x "
          f"(+{small_job - bare_job:.2f} s of fixed cost: imports, validation, checks, bundle, report)")
    help_verdict = "met" if help_seconds <= HELP_TARGET_SECONDS else "MISSED"
    print(f"target assay --help <= {HELP_TARGET_SECONDS} s: {help_verdict} ({help_seconds:.2f} s); "
          f"import assay loads no heavy library: {'met' if not loaded else 'MISSED'}")


if __name__ == "__main__":
    sys.exit(main())
