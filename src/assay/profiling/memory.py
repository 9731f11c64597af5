"""Peak memory of a model: a fresh process loads it from its spec and runs one batch.

The child (:mod:`assay.profiling._rss_child`) imports numpy, records its peak RSS, then loads the model
through :meth:`ModelSpec.load <assay.models.spec.ModelSpec.load>` -- the normal loader with its safety
checks, importing only the runtime the model needs -- and runs the batch; its peak RSS is what a minimal
deployment would need, runtime and loader included (the numpy-only baseline is recorded beside it).
Sizes are in MB of 2**20 bytes (MiB), as elsewhere in Assay.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from assay.models.spec import ModelSpec

__all__ = ["RSS_TIMEOUT_S", "peak_rss_subprocess"]

RSS_TIMEOUT_S = 300.0


def peak_rss_subprocess(spec: ModelSpec, batch: np.ndarray, *, input_dtype: str | None = None,
                        timeout_s: float = RSS_TIMEOUT_S) -> tuple[float | None, float | None, str]:
    """Peak RSS (MB) of a fresh Python process that loads the model of ``spec`` and runs ``batch`` through it.

    ``input_dtype``: the model's input dtype (the batch is cast to it). Returns ``(peak_mb, baseline_mb,
    note)``; ``baseline_mb`` is the process's peak with only numpy imported. None and the reason in
    ``note`` when the measurement fails (the model cannot be loaded there, the process times out).
    """
    from assay.models.formats import get_format

    arr = np.asarray(batch)
    if arr.dtype == object:
        arr = arr.astype(str)  # np.save without pickle: strings as a fixed-width unicode array
    elif input_dtype not in (None, "string") and arr.dtype != np.dtype(input_dtype):
        arr = arr.astype(input_dtype)
    with tempfile.TemporaryDirectory(prefix="assay-rss-") as tmp:
        input_file = Path(tmp) / "batch.npy"
        np.save(input_file, arr, allow_pickle=False)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # Assay and factories importable as here
        command = [sys.executable, "-m", "assay.profiling._rss_child", spec.model_dump_json(), str(input_file)]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
        except subprocess.TimeoutExpired:
            return None, None, f"not measured: the fresh process took longer than {timeout_s:g} s"
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return None, None, f"not measured: the fresh process failed ({err})"
    result = json.loads(lines[-1])
    if result.get("peak_rss_mb") is None:
        return None, None, "not measured: resource.getrusage is unavailable on this platform"
    baseline = result.get("baseline_rss_mb")
    before = "" if baseline is None else f"; {baseline:.1f} MB of it is Python + numpy before anything else"
    runtime = get_format(spec.format).runtime
    return float(result["peak_rss_mb"]), baseline, (
        f"peak RSS (VmHWM, else ru_maxrss) of a fresh process that imported numpy, loaded the model through "
        f"Assay's loader (its safety checks; runtime {runtime}) and ran a batch of {len(arr)}{before}")
