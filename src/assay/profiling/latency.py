"""The latency harness: per-call times of a model on this machine, with distribution-free CIs.

Following Hoefler & Belli 2015, "Scientific Benchmarking of Parallel Computing Systems", SC'15 (medians
with nonparametric CIs, repeated until the CI is tight): per batch size, a few untimed warm-up calls,
then single calls timed with ``time.perf_counter_ns`` (garbage collection paused, as ``timeit`` does)
until the confidence interval of the median is within ``target_rel_halfwidth`` (5%) of the median --
and the p95 has a two-sided interval -- or the time budget ends. Quantiles are reported with the
order-statistic intervals of :mod:`assay.stats.order` (coverage >= ``confidence``, exact coverage
recorded) around the sample quantiles ``X(ceil(n q))``.
Latency times are not independent draws (caches, frequency scaling, other load), so the intervals
describe this run's variability, not the machine's. The stopping rule looks at the median's interval
repeatedly (every ~5% more runs), which makes the final interval slightly optimistic, as any sequential
look does; the recorded coverage is the fixed-n one.

:func:`interleaved_latency` times several models head to head in alternating rounds, so that drift
(frequency scaling, other load) hits all of them alike.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from assay.errors import UserError
from assay.models._common import describe_error, first_line
from assay.progress import stage
from assay.stats.order import (
    ORDER_STATISTIC_CI_METHOD,
    min_runs_for_upper_bound,
    quantile_ci,
    sample_quantile,
)

__all__ = [
    "CI_METHOD",
    "QUANTILES",
    "BatchLatency",
    "LatencyProfile",
    "interleaved_latency",
    "make_batch",
    "measure_latency",
    "min_runs_for_upper_bound",
    "quantile_ci",
    "sample_quantile",
    "summarize_times",
]

StopReason = Literal["precise", "budget", "max_runs"]
QUANTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}
CI_METHOD = ORDER_STATISTIC_CI_METHOD


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


# ------------------------------------------------------------------------------------------- statistics


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
    progress: bool | None = None,
) -> LatencyProfile:
    """Time ``run_batch`` on batches built from ``sample`` rows, per batch size (see the module docstring).

    Stops a batch size when the p50 CI half-width is <= ``target_rel_halfwidth`` x p50, checked from
    ``max(min_runs, runs the p95 needs for a two-sided interval)`` on (72 at 95%: the compare gate reads
    the p95), and every ~5% more runs after; or after ``max_runs`` runs; or when ``budget_s`` (warm-up
    included) is spent -- then possibly before ``min_runs``, but after at least one timed run.
    ``threads`` is only recorded. ``clock`` (integer nanoseconds) is a seam for tests. ``progress``: one step
    per batch size, shown between timings, never inside one (None: as :func:`assay.progress.scope` says).
    """
    sizes = _validate(batch_sizes, warmup, min_runs, max_runs, target_rel_halfwidth, budget_s, confidence)
    batches = []
    with stage("latency timing", total=len(sizes), unit="batch sizes", enabled=progress,
               note=f"at most {budget_s:g} s each") as advance:
        for b in sizes:
            advance.detail(f"[batch {b}]")
            batches.append(_time_one_size(run_batch, make_batch(sample, b, seed), warmup=warmup, min_runs=min_runs,
                                          max_runs=max_runs, target=target_rel_halfwidth, budget_s=budget_s,
                                          confidence=confidence, clock=clock))
            advance()
    return LatencyProfile(batches=batches, threads=threads, confidence=confidence,
                          target_rel_halfwidth=target_rel_halfwidth, budget_s=budget_s, warmup=warmup,
                          min_runs=min_runs, max_runs=max_runs, seed=seed)


# ------------------------------------------------------------------------------------------- head to head


def interleaved_latency(models: dict[str, Any], sample: np.ndarray, batch: int, *, budget_s: float,
                        confidence: float, rounds: int = 5,
                        failures: dict[str, str] | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Head-to-head timing at one batch size: ``rounds`` alternating rounds over all models (original and
    variants), per-call times pooled per model, then summarised (p50 with its order-statistic CI). Every
    model meets the same drift (frequency scaling, other load), so the comparison is fair where timing the
    models one after another is not. A model that raises is dropped from the rounds and left out of the
    result; with ``failures`` its reason is recorded there (otherwise the error propagates). ``progress``:
    one step per model and round, shown between timings (None: as :func:`assay.progress.scope` says)."""
    pooled: dict[str, list[float]] = {name: [] for name in models}
    with stage("head-to-head timing", total=rounds * len(models), unit="timings", enabled=progress,
               note=f"{len(models)} models x {rounds} rounds at batch {batch}, at most {budget_s:g} s") as advance:
        for round_ in range(rounds):
            for name, model in models.items():
                if name not in pooled:
                    advance()
                    continue
                advance.detail(f"[{name}, round {round_ + 1}]")
                try:
                    prof = measure_latency(model.logits, sample, batch_sizes=(batch,), warmup=3, min_runs=30,
                                           max_runs=150, budget_s=budget_s / rounds, confidence=confidence,
                                           progress=False)
                except Exception as exc:
                    if failures is None:
                        raise
                    failures[name] = describe_error(exc)
                    del pooled[name]
                    continue
                finally:
                    advance()
                pooled[name].extend(prof.batches[0].times_ms)
    return {name: summarize_times(times, batch, confidence=confidence) for name, times in pooled.items()}
