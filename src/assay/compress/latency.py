"""Latency harness and efficiency profile of a model on this machine.

Latency (following Hoefler & Belli 2015, "Scientific Benchmarking of Parallel Computing Systems",
SC'15: medians with nonparametric CIs, repeated until the CI is tight): per batch size, a few untimed
warm-up calls, then single calls timed with ``time.perf_counter_ns`` (garbage collection paused, as
``timeit`` does) until the confidence interval of the median is within ``target_rel_halfwidth`` (5%)
of the median -- and the p95 has a two-sided interval -- or the time budget ends. Quantiles
are reported with distribution-free order-statistic intervals: ``[X(l), X(u)]`` covers the population
q-quantile with probability ``F(u-1) - F(l-1)``, F the Binomial(n, q) CDF (Conover 1999, *Practical
Nonparametric Statistics*, 3rd ed., sec. 3.2; Hahn & Meeker 1991, *Statistical Intervals*, sec. 5.2).
We take the narrowest such equal-tailed choice with each tail <= (1 - confidence) / 2, so coverage is
at least ``confidence`` (exact coverage is recorded). Point values are the sample quantiles
``X(ceil(n q))`` (Hyndman & Fan 1996, type 1), which always lie inside those intervals.
Latency times are not independent draws (caches, frequency scaling, other load), so the intervals
describe this run's variability, not the machine's. The stopping rule looks at the median's interval
repeatedly (every ~5% more runs), which makes the final interval slightly optimistic, as any sequential
look does; the recorded coverage is the fixed-n one.

Peak memory is measured in a fresh process (``python -c``) that imports numpy, then only the runtime
the model needs (onnxruntime or torch), loads the model from its file and runs one batch: its
peak RSS (``VmHWM`` on Linux: ``ru_maxrss`` would keep the parent's peak across fork + exec) is
what a minimal deployment would need, runtime included (the numpy-only baseline is
recorded beside it).

Sizes are in MB of 2**20 bytes (MiB), as elsewhere in Assay.
"""

from __future__ import annotations

import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from assay.compress.energy import (
    EnergyEstimate,
    energy_per_1000,
    measure_energy,
    rapl_available,
)
from assay.compress.flops import FlopCount
from assay.errors import UserError

if TYPE_CHECKING:
    from assay.models.base import Model

__all__ = [
    "BatchLatency",
    "EfficiencyProfile",
    "LatencyProfile",
    "make_batch",
    "measure_latency",
    "min_runs_for_upper_bound",
    "model_file_size",
    "peak_rss_subprocess",
    "profile_model",
    "quantile_ci",
    "sample_quantile",
    "summarize_times",
]

MB = 2**20
StopReason = Literal["precise", "budget", "max_runs"]
QUANTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}
RSS_TIMEOUT_S = 300.0
CI_METHOD = ("distribution-free order-statistic interval [X(l), X(u)] from the Binomial(n, q) CDF "
             "(Conover 1999, sec. 3.2), coverage >= confidence")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class BatchLatency(_Model):
    """Latency of single calls at one batch size (milliseconds per call, not per sample)."""

    batch_size: int
    n_runs: int
    p50_ms: float
    p50_ci_low_ms: float | None
    p50_ci_high_ms: float | None
    p95_ms: float
    p95_ci_low_ms: float | None
    p95_ci_high_ms: float | None
    p99_ms: float
    p99_ci_low_ms: float | None
    p99_ci_high_ms: float | None
    ci_coverage: dict[str, float] = Field(description="Exact coverage of each quantile's interval.")
    mean_ms: float
    std_ms: float
    cv: float = Field(description="Coefficient of variation, std / mean.")
    min_ms: float
    max_ms: float
    throughput_per_s: float = Field(description="Samples per second, batch_size / p50.")
    throughput_ci_low: float | None
    throughput_ci_high: float | None
    p50_rel_halfwidth: float | None = Field(description="(CI high - CI low) / 2 / p50; None without a CI.")
    precise: bool = Field(description="The p50 half-width met the target.")
    stop_reason: StopReason
    elapsed_s: float
    times_ms: list[float] = Field(default_factory=list, exclude=True, repr=False,
                                  description="Raw per-call times (kept in memory, not serialised).")

    @property
    def seconds_per_inference(self) -> float:
        return self.p50_ms / 1e3 / self.batch_size


class LatencyProfile(_Model):
    """Per-batch-size latency and the harness settings that produced it."""

    batches: list[BatchLatency]
    threads: int | None
    confidence: float
    target_rel_halfwidth: float
    budget_s: float
    warmup: int
    min_runs: int
    max_runs: int
    seed: int
    timer: str = "time.perf_counter_ns, one call per sample, gc paused"
    ci_method: str = CI_METHOD

    def batch(self, batch_size: int) -> BatchLatency:
        for b in self.batches:
            if b.batch_size == batch_size:
                return b
        raise KeyError(batch_size)

    @property
    def best(self) -> BatchLatency:
        """The batch size with the highest throughput (samples/s at p50)."""
        return max(self.batches, key=lambda b: b.throughput_per_s)


class EfficiencyProfile(_Model):
    """What a model costs on this machine: latency, size, parameters, FLOPs, memory, energy, money."""

    model_path: str | None
    model_format: str | None
    latency: LatencyProfile
    threads: int | None
    threads_source: str
    model_size_mb: float | None
    model_files: list[str] = Field(default_factory=list)
    model_size_note: str
    parameters: int | None
    parameters_convention: str
    flops: int | None = Field(description="FLOPs per sample (2 x MACs), see flop_count.method.")
    flop_count: FlopCount
    cpu_model: str | None
    cpu_count: int | None
    isa_flags: list[str]
    peak_rss_mb: float | None
    rss_baseline_mb: float | None = Field(description="Peak RSS of the fresh process before loading the model.")
    rss_note: str
    best_batch_size: int
    seconds_per_inference: float = Field(description="p50 / batch at the best-throughput batch size.")
    energy: EnergyEstimate
    energy_j_per_1000: float
    price_per_hour: float | None
    cost_per_million: float | None
    cost_note: str | None
    notes: list[str] = Field(default_factory=list)


# ------------------------------------------------------------------------------------------- statistics


def quantile_ci(sorted_values: np.ndarray, q: float, confidence: float) -> tuple[float | None, float | None, float]:
    """Order-statistic confidence interval of the q-quantile from sorted values: ``(low, high, coverage)``.

    ``low = X(l)`` with ``l - 1`` the largest k with ``F(k) <= alpha/2`` and ``high = X(u)`` with ``u - 1``
    the smallest k with ``F(k) >= 1 - alpha/2`` (F: Binomial(n, q) CDF, X(i) 1-based); a bound that
    needs an order statistic outside 1..n is None (too few runs) and the coverage counts it as
    unbounded. Coverage of ``[X(l), X(u)]`` is ``F(u-1) - F(l-1)`` for continuous distributions.
    """
    from scipy.stats import binom

    x = np.asarray(sorted_values, dtype=np.float64)
    n = x.size
    if n == 0:
        return None, None, 0.0
    tail = (1.0 - confidence) / 2.0
    cdf = binom.cdf(np.arange(n + 1), n, q)  # cdf[k] = P(K <= k), K = #observations below the quantile
    eps = 1e-12
    below = np.flatnonzero(cdf <= tail + eps)
    above = np.flatnonzero(cdf >= 1.0 - tail - eps)
    lower_k = int(below[-1]) if below.size else -1  # l - 1
    upper_k = int(above[0]) if above.size else n  # u - 1
    low = float(x[lower_k]) if lower_k >= 0 else None  # X(l) is x[l - 1] = x[lower_k]
    high = float(x[upper_k]) if upper_k <= n - 1 else None  # X(u) is x[u - 1] = x[upper_k]
    f_upper = float(cdf[upper_k]) if upper_k <= n - 1 else 1.0
    f_lower = float(cdf[lower_k]) if lower_k >= 0 else 0.0
    return low, high, f_upper - f_lower


def sample_quantile(sorted_values: np.ndarray, q: float) -> float:
    """``X(ceil(n q))``, the inverse of the empirical CDF (Hyndman & Fan 1996, type 1; numpy's
    "inverted_cdf"). Unlike interpolated quantiles it always lies inside :func:`quantile_ci`'s interval
    (the Binomial(n, q) median is floor or ceil of n q)."""
    x = np.asarray(sorted_values, dtype=np.float64)
    return float(x[max(math.ceil(round(x.size * q, 9)), 1) - 1])  # round: 0.07 * 100 is 7.000000000000001


def min_runs_for_upper_bound(q: float, confidence: float) -> int:
    """Fewest runs for which the q-quantile has an upper order-statistic bound: q^n <= (1 - confidence)/2."""
    return math.ceil(math.log((1.0 - confidence) / 2.0) / math.log(q))


def _rel_halfwidth(sorted_ms: np.ndarray, confidence: float) -> float | None:
    lo, hi, _ = quantile_ci(sorted_ms, 0.5, confidence)
    p50 = sample_quantile(sorted_ms, 0.5)
    if lo is None or hi is None or p50 <= 0:
        return None
    return (hi - lo) / 2.0 / p50


def summarize_times(times_ms: Sequence[float] | np.ndarray, batch_size: int, *, confidence: float = 0.95,
                    target_rel_halfwidth: float = 0.05, stop_reason: StopReason = "budget",
                    elapsed_s: float = 0.0) -> BatchLatency:
    """A :class:`BatchLatency` from raw per-call times (ms)."""
    times = np.sort(np.asarray(times_ms, dtype=np.float64))
    if times.size == 0:
        raise ValueError("no timed runs")
    fields: dict[str, Any] = {}
    coverage: dict[str, float] = {}
    for name, q in QUANTILES.items():
        lo, hi, cov = quantile_ci(times, q, confidence)
        fields[f"{name}_ms"] = sample_quantile(times, q)
        fields[f"{name}_ci_low_ms"], fields[f"{name}_ci_high_ms"] = lo, hi
        coverage[name] = cov
    mean = float(times.mean())
    std = float(times.std(ddof=1)) if times.size > 1 else 0.0
    p50, lo50, hi50 = fields["p50_ms"], fields["p50_ci_low_ms"], fields["p50_ci_high_ms"]
    rel = _rel_halfwidth(times, confidence)
    per_s = 1e3 * batch_size
    return BatchLatency(
        batch_size=int(batch_size), n_runs=int(times.size), **fields, ci_coverage=coverage,
        mean_ms=mean, std_ms=std, cv=std / mean if mean > 0 else 0.0,
        min_ms=float(times[0]), max_ms=float(times[-1]),
        throughput_per_s=per_s / p50 if p50 > 0 else math.inf,
        throughput_ci_low=per_s / hi50 if hi50 else None,
        throughput_ci_high=per_s / lo50 if lo50 else None,
        p50_rel_halfwidth=rel, precise=rel is not None and rel <= target_rel_halfwidth,
        stop_reason=stop_reason, elapsed_s=float(elapsed_s), times_ms=[float(t) for t in times_ms],
    )


# ------------------------------------------------------------------------------------------- harness


def _validate(batch_sizes: Sequence[int], warmup: int, min_runs: int, max_runs: int, target: float,
              budget_s: float, confidence: float) -> list[int]:
    sizes = [int(b) for b in batch_sizes]
    if not sizes or min(sizes) < 1:
        raise UserError(f"batch sizes must be positive integers, got {list(batch_sizes)}", where="batch_sizes",
                        fix="e.g. batch_sizes=(1, 8, 32)")
    if warmup < 0 or min_runs < 1 or max_runs < min_runs:
        raise UserError(f"need warmup >= 0 and 1 <= min_runs <= max_runs, got warmup={warmup}, "
                        f"min_runs={min_runs}, max_runs={max_runs}", where="measure_latency",
                        fix="e.g. warmup=5, min_runs=20, max_runs=2000")
    if not target > 0 or not budget_s > 0 or not 0 < confidence < 1:
        raise UserError(f"need target_rel_halfwidth > 0, budget_s > 0 and 0 < confidence < 1, got "
                        f"{target}, {budget_s}, {confidence}", where="measure_latency",
                        fix="e.g. target_rel_halfwidth=0.05, budget_s=10, confidence=0.95")
    return list(dict.fromkeys(sizes))


def make_batch(sample: np.ndarray, batch_size: int, seed: int = 0) -> np.ndarray:
    """``batch_size`` rows of ``sample`` (drawn without replacement when there are enough, else tiled)."""
    sample = np.asarray(sample)
    if sample.ndim == 0 or len(sample) == 0:
        raise UserError("the latency sample has no rows", where="sample", fix="pass at least one input row")
    rng = np.random.default_rng([int(seed), int(batch_size)])
    idx = rng.choice(len(sample), size=batch_size, replace=len(sample) < batch_size)
    return np.ascontiguousarray(sample[idx])


def _time_one_size(run_batch: Callable[[np.ndarray], object], batch: np.ndarray, *, warmup: int, min_runs: int,
                   max_runs: int, target: float, budget_s: float, confidence: float,
                   clock: Callable[[], int]) -> BatchLatency:
    import scipy.stats  # noqa: F401  (imported before the clock starts: the stopping rule needs it)

    try:
        return _timing_loop(run_batch, batch, warmup=warmup, min_runs=min_runs, max_runs=max_runs, target=target,
                            budget_s=budget_s, confidence=confidence, clock=clock)
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as exc:
        from assay.models._common import first_line

        raise UserError(f"the model failed on a batch of {len(batch)}: {type(exc).__name__}: {first_line(exc)}",
                        where="batch_sizes", fix="profile batch sizes the model accepts (a graph exported with "
                        "a fixed batch size takes only that size)") from exc


def _timing_loop(run_batch: Callable[[np.ndarray], object], batch: np.ndarray, *, warmup: int, min_runs: int,
                 max_runs: int, target: float, budget_s: float, confidence: float,
                 clock: Callable[[], int]) -> BatchLatency:
    start = clock()
    deadline = start + int(budget_s * 1e9)
    # Keep going until the p95 (the gate's latency metric) has a two-sided interval too, budget permitting.
    enough = min(max_runs, max(min_runs, min_runs_for_upper_bound(QUANTILES["p95"], confidence)))
    for _ in range(warmup):
        run_batch(batch)
        if clock() >= deadline:
            break
    times_ns: list[int] = []
    next_check = enough
    reason: StopReason = "max_runs"
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        while len(times_ns) < max_runs:
            t0 = clock()
            run_batch(batch)
            t1 = clock()
            times_ns.append(t1 - t0)
            n = len(times_ns)
            if n >= next_check:
                # Checking the stopping rule costs a sort and a binomial CDF: do it every ~5% more runs.
                next_check = n + max(1, n // 20)
                rel = _rel_halfwidth(np.sort(np.asarray(times_ns, dtype=np.float64)) / 1e6, confidence)
                if rel is not None and rel <= target:
                    reason = "precise"
                    break
            if t1 >= deadline:
                reason = "budget"
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    elapsed = (clock() - start) / 1e9
    return summarize_times(np.asarray(times_ns, dtype=np.float64) / 1e6, len(batch), confidence=confidence,
                           target_rel_halfwidth=target, stop_reason=reason, elapsed_s=elapsed)


def measure_latency(
    run_batch: Callable[[np.ndarray], object],
    sample: np.ndarray,
    *,
    batch_sizes: Sequence[int] = (1, 8, 32),
    warmup: int = 5,
    min_runs: int = 20,
    max_runs: int = 2000,
    target_rel_halfwidth: float = 0.05,
    budget_s: float = 10.0,
    confidence: float = 0.95,
    seed: int = 0,
    threads: int | None = None,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> LatencyProfile:
    """Time ``run_batch`` on batches built from ``sample`` rows, per batch size (see the module docstring).

    Stops a batch size when the p50 CI half-width is <= ``target_rel_halfwidth`` x p50, checked from
    ``max(min_runs, runs the p95 needs for a two-sided interval)`` on (72 at 95%: the compare gate reads
    the p95), and every ~5% more runs after; or after ``max_runs`` runs; or when ``budget_s`` (warm-up
    included) is spent -- then possibly before ``min_runs``, but after at least one timed run.
    ``threads`` is only recorded. ``clock`` (integer nanoseconds) is a seam for tests.
    """
    sizes = _validate(batch_sizes, warmup, min_runs, max_runs, target_rel_halfwidth, budget_s, confidence)
    batches = [_time_one_size(run_batch, make_batch(sample, b, seed), warmup=warmup, min_runs=min_runs,
                              max_runs=max_runs, target=target_rel_halfwidth, budget_s=budget_s,
                              confidence=confidence, clock=clock) for b in sizes]
    return LatencyProfile(batches=batches, threads=threads, confidence=confidence,
                          target_rel_halfwidth=target_rel_halfwidth, budget_s=budget_s, warmup=warmup,
                          min_runs=min_runs, max_runs=max_runs, seed=seed)


# ------------------------------------------------------------------------------------------- profile


def _noop() -> None:
    return None


def _fix_threads(model: Model, threads: int | None, model_path: str | None,
                 notes: list[str]) -> tuple[Any, int | None, str, Callable[[], None]]:
    """(model to time, threads in effect, where that number comes from, undo)."""
    if threads is not None and threads < 1:
        raise UserError(f"threads must be at least 1, got {threads}", where="threads", fix="pass a positive count")
    if model.torch_module() is not None:
        import torch

        previous = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        used = torch.get_num_threads()
        how = "set by torch.set_num_threads" if threads is not None else "the process's torch.get_num_threads()"
        return model, used, how, lambda: torch.set_num_threads(previous)
    session = getattr(model, "session", None)
    if session is not None and hasattr(session, "get_session_options"):
        current = int(session.get_session_options().intra_op_num_threads)
        if threads is not None and threads != current:
            path = model_path or model.info.path
            if Path(path).is_file() and model.info.format == "onnx":
                from assay.models.onnx_model import load_onnx

                runner = load_onnx(path, threads=threads, outputs=model.info.outputs,
                                   num_classes=model.info.num_classes, class_names=model.info.class_names)
                notes.append(f"the ONNX session had intra_op_num_threads={current}; timed a session reloaded from "
                             f"the file with {threads}")
                return runner, threads, "onnxruntime session intra_op_num_threads (reloaded)", _noop
            notes.append(f"threads={threads} not applied: the ONNX session has intra_op_num_threads={current} and "
                         "there is no file to reload it from")
        if current > 0:
            return model, current, "onnxruntime session intra_op_num_threads", _noop
        return model, os.cpu_count(), "onnxruntime default (intra_op_num_threads=0: one per core)", _noop
    return model, threads, "the threads argument (unknown runtime: recorded, not enforced)", _noop


def model_file_size(path: str | None, fmt: str | None) -> tuple[float | None, list[str], str]:
    """(size in MB of 2**20 bytes, files counted, note); ONNX external data files are included."""
    if path is None:
        return None, [], "no model file (in-memory model)"
    file, note = Path(path), "model file"
    if fmt == "factory" and " --weights " in path:
        file, note = Path(path.split(" --weights ", 1)[1]), "weights file only (the factory's code is not counted)"
    if not file.is_file():
        return None, [], f"no model file at {path!r} (in-memory or factory model)"
    files = [file]
    if file.suffix.lower() == ".onnx":
        import onnx
        from onnx.external_data_helper import _get_all_tensors

        proto = onnx.load(str(file), load_external_data=False)
        for tensor in _get_all_tensors(proto):
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                for entry in tensor.external_data:
                    extra = file.parent / entry.value
                    if entry.key == "location" and extra not in files and extra.is_file():
                        files.append(extra)
        if len(files) > 1:
            note = f"model file plus {len(files) - 1} external data file(s)"
    size = sum(f.stat().st_size for f in files)
    return size / MB, [str(f) for f in files], note


# The fresh process runs this script (``python -c``): it imports numpy, notes its peak RSS, then imports
# only the runtime the model needs (onnxruntime, or torch; Assay itself only for factory models), loads
# the model, runs the batch, and prints both peaks as JSON. Not importing Assay keeps the numbers close
# to a deployment's.
_RSS_CHILD = r"""
import json, sys
import numpy as np

def maxrss_mb():
    # Linux: VmHWM, the peak of this address space (ru_maxrss keeps the parent's peak across fork + exec).
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 2**20
    except OSError:
        pass
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak * 1024 / 2**20

args = json.loads(sys.argv[1])
batch = np.load(args["input"], allow_pickle=False)
baseline = maxrss_mb()
kind, path, threads = args["kind"], args["path"], args["threads"]
if kind == "onnx":
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    if batch.dtype.kind in "US":
        batch = batch.astype(object)
    session.run([session.get_outputs()[0].name], {session.get_inputs()[0].name: batch})
elif kind in ("torchscript", "torch-export"):
    import torch
    if threads:
        torch.set_num_threads(threads)
    try:
        module = torch.jit.load(path, map_location="cpu") if kind == "torchscript" else None
    except Exception:
        module = None
    if module is None:
        module = torch.export.load(path).module()
    if batch.dtype.kind in "US":
        inputs = [str(v) for v in batch]
    else:
        inputs = torch.from_numpy(np.ascontiguousarray(batch, np.float32 if batch.dtype.kind == "f" else None))
    with torch.inference_mode():
        module(inputs)
else:
    from assay.models.loader import load_model
    model = load_model(path, weights=args["weights"], threads=threads, outputs=args["outputs"],
                       num_classes=args["num_classes"], untrained=args["weights"] is None)
    model.logits(batch)
print(json.dumps({"peak_rss_mb": maxrss_mb(), "baseline_rss_mb": baseline}))
"""

_RSS_IMPORTS = {"onnx": "numpy + onnxruntime", "torchscript": "numpy + torch", "torch-export": "numpy + torch",
                "factory": "numpy + Assay + torch"}


def _load_spec(path: str, fmt: str | None) -> tuple[str, str | None]:
    """(path or factory spec, weights) that load_model needs to load the model again."""
    if fmt == "factory" and " --weights " in path:
        spec, weights = path.split(" --weights ", 1)
        return spec, weights
    return path, None


def _rss_target(model: Model, model_path: str | None) -> tuple[str, str] | None:
    """(what a fresh process loads, its format), or None when there is nothing to load."""
    from assay.models.loader import SUPPORTED_FORMATS

    if model_path is not None:
        fmt = SUPPORTED_FORMATS.get(Path(model_path).suffix.lower())
        return (model_path, fmt) if Path(model_path).is_file() and fmt is not None else None
    path, fmt = model.info.path, model.info.format
    if fmt == "factory":
        spec, _ = _load_spec(path, fmt)
        return (path, fmt) if ":" in spec and not spec.startswith("<") else None
    return (path, fmt) if Path(path).is_file() else None


def peak_rss_subprocess(path: str, batch: np.ndarray, *, fmt: str = "onnx", threads: int | None = None,
                        outputs: str = "logits", num_classes: int | None = None, input_dtype: str | None = None,
                        timeout_s: float = RSS_TIMEOUT_S) -> tuple[float | None, float | None, str]:
    """Peak RSS (MB) of a fresh Python process that loads ``path`` and runs ``batch`` through it.

    ``fmt``: "onnx", "torchscript", "torch-export" (loaded with the bare runtime) or "factory" (``path``
    is the factory spec, optionally ``"SPEC --weights FILE"``; loaded with Assay). Returns
    ``(peak_mb, baseline_mb, note)``; ``baseline_mb`` is the process's peak with only numpy imported.
    None and the reason in ``note`` when the measurement fails.
    """
    spec, weights = _load_spec(path, fmt)
    arr = np.asarray(batch)
    if arr.dtype == object:
        arr = arr.astype(str)  # np.save without pickle: strings as a fixed-width unicode array
    elif input_dtype not in (None, "string") and arr.dtype != np.dtype(input_dtype):
        arr = arr.astype(input_dtype)
    with tempfile.TemporaryDirectory(prefix="assay-rss-") as tmp:
        input_file = Path(tmp) / "batch.npy"
        np.save(input_file, arr, allow_pickle=False)
        args = {"kind": fmt, "path": spec, "weights": weights, "threads": threads, "outputs": outputs,
                "num_classes": num_classes, "input": str(input_file)}
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # factories importable as here
        try:
            proc = subprocess.run([sys.executable, "-c", _RSS_CHILD, json.dumps(args)], capture_output=True,
                                  text=True, timeout=timeout_s, env=env, check=False)
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
    return float(result["peak_rss_mb"]), baseline, (
        f"peak RSS (VmHWM, else ru_maxrss) of a fresh process that imported {_RSS_IMPORTS.get(fmt, fmt)}, "
        f"loaded the model and ran a batch of {len(arr)}{before}")


def profile_model(
    model: Model,
    sample: np.ndarray,
    *,
    batch_sizes: Sequence[int] = (1, 8, 32),
    threads: int | None = None,
    budget_s: float = 10.0,
    price_per_hour: float | None = None,
    measure_rss: bool = True,
    model_path: str | None = None,
    confidence: float = 0.95,
    seed: int = 0,
    warmup: int = 5,
    min_runs: int = 20,
    max_runs: int = 2000,
    target_rel_halfwidth: float = 0.05,
) -> EfficiencyProfile:
    """Latency per batch size (``model.logits``), size, parameters, FLOPs, peak RSS, energy and cost.

    ``threads``: torch -> ``torch.set_num_threads`` for the measurement (restored afterwards); ONNX ->
    the session's setting, reloaded from the file when ``threads`` differs. ``budget_s`` is per batch
    size. ``model_path`` defaults to ``model.info.path``; without a file, size and RSS are None (with
    the reason). ``price_per_hour`` (the machine's price) gives the cost per million inferences at the
    best-throughput batch size.
    """
    from assay.compress.flops import count_flops, count_parameters, parameter_convention
    from assay.environment import cpu_model_and_flags

    if price_per_hour is not None and not price_per_hour >= 0:
        raise UserError(f"price_per_hour must be non-negative, got {price_per_hour}", where="price_per_hour",
                        fix="give the machine's hourly price, e.g. 0.1")
    sample = np.asarray(sample)
    notes: list[str] = []
    runner, used_threads, threads_source, restore = _fix_threads(model, threads, model_path, notes)
    try:
        latency = measure_latency(runner.logits, sample, batch_sizes=batch_sizes, warmup=warmup, min_runs=min_runs,
                                  max_runs=max_runs, target_rel_halfwidth=target_rel_halfwidth, budget_s=budget_s,
                                  confidence=confidence, seed=seed, threads=used_threads)
        best = latency.best
        spi = best.seconds_per_inference
        if rapl_available():
            batch = make_batch(sample, best.batch_size, seed)
            energy = measure_energy(lambda: runner.logits(batch), best.batch_size, used_threads,
                                    min_seconds=min(2.0, budget_s))
        else:
            energy = energy_per_1000(spi, used_threads)
    finally:
        restore()

    path = model_path or model.info.path
    size_mb, files, size_note = model_file_size(path, model.info.format if model_path is None else None)
    if model_path is not None and model_path.lower().endswith(".onnx") and Path(model_path).is_file() \
            and model.torch_module() is None:
        flop_count = count_flops(model_path, sample)
    else:
        flop_count = count_flops(model, sample)
    cpu_model, isa_flags = cpu_model_and_flags()

    rss_target = _rss_target(model, model_path)
    if not measure_rss:
        peak, baseline, rss_note = None, None, "not measured (measure_rss=False)"
    elif rss_target is None:
        peak, baseline, rss_note = None, None, "not measured: no model file to load in a fresh process"
    else:
        rss_path, rss_fmt = rss_target
        rss_batch = max(b.batch_size for b in latency.batches)
        if rss_fmt == "onnx" and model.info.input_shape and model.info.input_shape[0] is not None:
            rss_batch = int(model.info.input_shape[0])  # a graph exported with a fixed batch size
        peak, baseline, rss_note = peak_rss_subprocess(
            rss_path, make_batch(sample, rss_batch, seed), fmt=rss_fmt,
            threads=used_threads, outputs=model.info.outputs, num_classes=model.info.num_classes,
            input_dtype=model.info.input_dtype)

    cost = cost_note = None
    if price_per_hour is not None:
        cost = price_per_hour / 3600.0 * spi * 1e6
        cost_note = (f"{price_per_hour:g}/h / 3600 x {spi * 1e3:.4g} ms per inference (p50 at batch "
                     f"{best.batch_size}, the best throughput) x 1e6; assumes the machine runs only this model")
    return EfficiencyProfile(
        model_path=path, model_format=model.info.format, latency=latency, threads=used_threads,
        threads_source=threads_source, model_size_mb=size_mb, model_files=files, model_size_note=size_note,
        parameters=count_parameters(model), parameters_convention=parameter_convention(model),
        flops=flop_count.flops, flop_count=flop_count, cpu_model=cpu_model, cpu_count=os.cpu_count(),
        isa_flags=list(isa_flags), peak_rss_mb=peak, rss_baseline_mb=baseline, rss_note=rss_note,
        best_batch_size=best.batch_size, seconds_per_inference=spi, energy=energy,
        energy_j_per_1000=energy.joules, price_per_hour=price_per_hour, cost_per_million=cost,
        cost_note=cost_note, notes=notes)
