"""Efficiency: what the model costs on this machine -- latency quantiles per batch size with
distribution-free CIs, throughput, size, parameters, FLOPs, peak memory, energy and money.

Profiling judges nothing by itself (verdict "info"); the compare gate and model selection read
``latency_p95_ms`` (batch 1) and ``model_size_mb`` from this section. Metric keys:
``latency_p50_ms``/``latency_p95_ms``/``latency_p99_ms`` at batch 1 (else the smallest batch profiled),
``latency_pXX_ms[batch=B]`` for the other batch sizes, ``throughput_per_s`` (best batch size),
``model_size_mb``, ``parameters``, ``flops`` (per sample), ``peak_rss_mb``, ``energy_j_per_1000`` and,
when a price is given, ``cost_per_million``. Unmeasured quantities keep their key with value None.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from assay.checks.base import Check, CheckConfig, CheckContext, PlanContext, Preparation
from assay.evidence.schema import Finding, Metric, Section
from assay.profiling.latency import CI_METHOD, QUANTILES, BatchLatency, summarize_times
from assay.profiling.profile import EfficiencyProfile
from assay.stats.order import min_runs_for_upper_bound

__all__ = ["NOISY_CV", "EfficiencyCheck", "EfficiencyConfig", "check_efficiency", "efficiency_section"]

# Above this coefficient of variation, the machine (or the model) is too noisy for tight comparisons.
NOISY_CV = 0.25


def _rebuild_at(batches: list[BatchLatency], confidence: float, target: float) -> list[BatchLatency] | None:
    """The same runs summarised at another confidence level, when the raw times are at hand."""
    if not all(b.times_ms for b in batches):
        return None
    return [summarize_times(b.times_ms, b.batch_size, confidence=confidence, target_rel_halfwidth=target,
                            stop_reason=b.stop_reason, elapsed_s=b.elapsed_s) for b in batches]


def _latency_metric(b: BatchLatency, name: str, level: float, threads: int | None) -> Metric:
    q = QUANTILES[name]
    return Metric(
        value=getattr(b, f"{name}_ms"), ci_low=getattr(b, f"{name}_ci_low_ms"),
        ci_high=getattr(b, f"{name}_ci_high_ms"), n=b.n_runs,
        method=(f"order-statistic CI, {level:.0%} (exact coverage {b.ci_coverage[name]:.3f}), distribution-free "
                "(Conover 1999, sec. 3.2)"),
        config={"batch_size": b.batch_size, "quantile": q, "unit": "ms per call", "threads": threads,
                "stop_reason": b.stop_reason, "p50_precise": b.precise},
    )


def efficiency_section(profile: EfficiencyProfile, confidence: float = 0.95) -> Section:
    """The "efficiency" Section of an :class:`~assay.profiling.profile.EfficiencyProfile`.

    Latency CIs are recomputed at ``confidence`` from the in-memory raw times when the profile was
    measured at another level; a profile read back from JSON keeps its own level (said in a finding).
    """
    lat = profile.latency
    batches = sorted(lat.batches, key=lambda b: b.batch_size)
    findings: list[Finding] = []
    level = lat.confidence
    if abs(confidence - lat.confidence) > 1e-12:
        rebuilt = _rebuild_at(batches, confidence, lat.target_rel_halfwidth)
        if rebuilt is not None:
            batches, level = rebuilt, confidence
        else:
            findings.append(Finding(severity="info", message=(
                f"latency intervals are at the profiling level {lat.confidence:.0%}, not {confidence:.0%} (the "
                "raw times were not kept)"), evidence="efficiency.config"))
    main = next((b for b in batches if b.batch_size == 1), batches[0])
    threads = profile.threads
    metrics: dict[str, Metric] = {}
    for b in batches:
        suffix = "" if b is main else f"[batch={b.batch_size}]"
        for name in QUANTILES:
            metrics[f"latency_{name}_ms{suffix}"] = _latency_metric(b, name, level, threads)

    best = max(batches, key=lambda b: b.throughput_per_s)
    metrics["throughput_per_s"] = Metric(
        value=best.throughput_per_s, ci_low=best.throughput_ci_low, ci_high=best.throughput_ci_high, n=best.n_runs,
        method=f"batch size / p50 at the best batch size; CI from the p50 order-statistic CI ({level:.0%})",
        config={"batch_size": best.batch_size, "threads": threads, "unit": "samples per second"})
    metrics["model_size_mb"] = Metric(
        value=profile.model_size_mb, n=1, method=f"bytes on disk / 2**20 ({profile.model_size_note})",
        config={"files": profile.model_files, "unit": "MB (2**20 bytes)"})
    metrics["parameters"] = Metric(
        value=None if profile.parameters is None else float(profile.parameters), n=1,
        method=f"count: {profile.parameters_convention}")
    fc = profile.flop_count
    metrics["flops"] = Metric(
        value=None if fc.flops is None else float(fc.flops), n=1, method=fc.method,
        config={"convention": fc.convention, "macs": fc.macs, "by_op": dict(fc.by_op), "per": "input sample"})
    metrics["peak_rss_mb"] = Metric(
        value=profile.peak_rss_mb, n=1, method=profile.rss_note,
        config={"baseline_mb": profile.rss_baseline_mb, "unit": "MB (2**20 bytes)"})
    metrics["energy_j_per_1000"] = Metric(
        value=profile.energy.joules, n=best.n_runs, method=f"{profile.energy.method}: {profile.energy.detail}",
        config={"method": profile.energy.method, "batch_size": best.batch_size, "threads": threads})
    if profile.cost_per_million is not None and profile.price_per_hour is not None:
        scale = profile.price_per_hour / 3600.0 / best.batch_size / 1e3 * 1e6  # p50 (ms) -> cost per 1M
        metrics["cost_per_million"] = Metric(
            value=profile.cost_per_million,
            ci_low=None if best.p50_ci_low_ms is None else best.p50_ci_low_ms * scale,
            ci_high=None if best.p50_ci_high_ms is None else best.p50_ci_high_ms * scale, n=best.n_runs,
            method=f"{profile.cost_note}; CI from the p50 CI", config={
                "price_per_hour": profile.price_per_hour, "batch_size": best.batch_size, "threads": threads})

    findings += _findings(profile, batches, level)
    plots = _plots(batches, level)
    rows = [{"batch_size": b.batch_size, "n_runs": b.n_runs, "p50_ms": b.p50_ms, "p50_ci_low_ms": b.p50_ci_low_ms,
             "p50_ci_high_ms": b.p50_ci_high_ms, "p95_ms": b.p95_ms, "p99_ms": b.p99_ms, "mean_ms": b.mean_ms,
             "std_ms": b.std_ms, "cv": b.cv, "throughput_per_s": b.throughput_per_s,
             "p50_rel_halfwidth": b.p50_rel_halfwidth, "precise": b.precise, "stop_reason": b.stop_reason,
             "elapsed_s": b.elapsed_s} for b in batches]
    size = "size unknown" if profile.model_size_mb is None else f"{profile.model_size_mb:.3g} MB"
    flops = "FLOPs unknown" if fc.flops is None else f"{fc.flops / 1e6:.3g} MFLOPs/sample"
    summary = (f"p50 {main.p50_ms:.3g} ms, p95 {main.p95_ms:.3g} ms at batch {main.batch_size} ({threads} thread(s)); "
               f"best throughput {best.throughput_per_s:.4g}/s at batch {best.batch_size}; {size}; {flops}.")
    return Section(
        name="efficiency", title="Efficiency", verdict="info", summary=summary, metrics=metrics, findings=findings,
        tables={"latency": rows}, plots=plots,
        config={"threads": threads, "threads_source": profile.threads_source, "cpu_model": profile.cpu_model,
                "cpu_count": profile.cpu_count, "isa_flags": list(profile.isa_flags),
                "batch_sizes": [b.batch_size for b in batches], "latency_batch_size": main.batch_size,
                "confidence": level, "target_rel_halfwidth": lat.target_rel_halfwidth,
                "budget_s_per_batch_size": lat.budget_s, "warmup": lat.warmup, "min_runs": lat.min_runs,
                "max_runs": lat.max_runs, "timer": lat.timer, "ci_method": CI_METHOD,
                "flop_convention": fc.convention, "energy_method": profile.energy.method,
                "price_per_hour": profile.price_per_hour, "model_format": profile.model_format,
                "key_metrics": ["latency_p95_ms", "throughput_per_s", "model_size_mb", "flops"]},
    )


def _findings(profile: EfficiencyProfile, batches: list[BatchLatency], level: float) -> list[Finding]:
    lat = profile.latency
    out: list[Finding] = []
    main = next((b for b in batches if b.batch_size == 1), batches[0])
    for b in batches:
        key = "latency_p50_ms" if b is main else f"latency_p50_ms[batch={b.batch_size}]"
        if not b.precise:
            width = "undefined (too few runs)" if b.p50_rel_halfwidth is None else f"{b.p50_rel_halfwidth:.1%}"
            out.append(Finding(severity="warning", message=(
                f"p50 precision target not met within budget at batch {b.batch_size}: CI half-width {width} of p50 "
                f"(target {lat.target_rel_halfwidth:.0%}) after {b.n_runs} runs in {b.elapsed_s:.3g} s; compare "
                "these latencies with care or raise the budget"), evidence=f"efficiency.metrics.{key}"))
        if b.cv > NOISY_CV:
            out.append(Finding(severity="info", message=(
                f"latency varies a lot at batch {b.batch_size} (coefficient of variation {b.cv:.2f}, max "
                f"{b.max_ms:.3g} ms vs p50 {b.p50_ms:.3g} ms): other load or frequency scaling; the tail "
                "quantiles reflect it"), evidence="efficiency.tables.latency"))
    needed = min_runs_for_upper_bound(QUANTILES["p99"], level)
    if main.p99_ci_high_ms is None:
        out.append(Finding(severity="info", message=(
            f"p99 at batch {main.batch_size} has no upper confidence bound: it needs at least {needed} runs at "
            f"{level:.0%} ({main.n_runs} were run)"), evidence="efficiency.metrics.latency_p99_ms"))
    out.append(Finding(severity="info", message=(
        f"measured with {profile.threads} thread(s) ({profile.threads_source}) on {profile.cpu_model or 'unknown CPU'}"
        f" ({profile.cpu_count} logical cores; ISA: {', '.join(profile.isa_flags) or 'unknown'}); latency depends on "
        "both, so compare numbers from the same machine and thread count only"), evidence="efficiency.config"))
    if profile.energy.method == "tdp-estimate":
        out.append(Finding(severity="info", message=f"energy per 1000 inferences: {profile.energy.detail}",
                           evidence="efficiency.metrics.energy_j_per_1000"))
    if profile.peak_rss_mb is None:
        out.append(Finding(severity="info", message=f"peak memory {profile.rss_note}",
                           evidence="efficiency.metrics.peak_rss_mb"))
    if profile.model_size_mb is None:
        out.append(Finding(severity="info", message=f"model size not measured: {profile.model_size_note}",
                           evidence="efficiency.metrics.model_size_mb"))
    fc = profile.flop_count
    if fc.flops is None or "PARTIAL" in fc.method or "not counted" in fc.method:
        out.append(Finding(severity="warning" if "PARTIAL" in fc.method else "info",
                           message=f"FLOP count incomplete: {fc.method}", evidence="efficiency.metrics.flops"))
    out += [Finding(severity="info", message=note, evidence="efficiency.config") for note in profile.notes]
    return out


def _plots(batches: list[BatchLatency], level: float) -> dict[str, dict[str, Any]]:
    sizes = [b.batch_size for b in batches]
    log_x = len(sizes) > 1 and max(sizes) / min(sizes) >= 4
    series = [{"label": name, "x": sizes, "y": [getattr(b, f"{name}_ms") for b in batches],
               "y_low": [getattr(b, f"{name}_ci_low_ms") for b in batches],
               "y_high": [getattr(b, f"{name}_ci_high_ms") for b in batches]} for name in ("p50", "p95")]
    latency_plot: dict[str, Any] = {
        "kind": "line", "title": f"Latency per call vs batch size ({level:.0%} order-statistic CIs)",
        "xlabel": "batch size", "ylabel": "ms per call", "series": series}
    if log_x:
        latency_plot["xscale"] = "log"
    return {
        "latency_vs_batch": latency_plot,
        "throughput": {
            "kind": "bars", "title": f"Throughput at p50 ({level:.0%} CI)", "xlabel": "batch size",
            "ylabel": "samples per second", "categories": [str(s) for s in sizes],
            "series": [{"label": "throughput", "values": [b.throughput_per_s for b in batches],
                        "ci_low": [b.throughput_ci_low for b in batches],
                        "ci_high": [b.throughput_ci_high for b in batches]}]},
    }


def check_efficiency(ctx: Any) -> Section:
    """The ``efficiency`` check: the profile measured by the API before the checks ran (``ctx.facts``)."""
    return efficiency_section(ctx.facts["efficiency"], ctx.config.confidence)


class EfficiencyConfig(CheckConfig):
    latency_batch_sizes: list[int] = Field(default_factory=lambda: [1, 8, 32], description="Batch sizes timed by "
                                           "the efficiency check.")
    latency_budget: float = Field(10.0, gt=0, description="Seconds of timing per batch size (efficiency check).")
    price_per_hour: float | None = Field(None, ge=0, description="Machine price per hour: cost per 1M inferences.")

    @field_validator("latency_batch_sizes")
    @classmethod
    def _positive_sizes(cls, sizes: list[int]) -> list[int]:
        if not sizes or min(sizes) < 1:
            raise ValueError("must list positive batch sizes, e.g. [1, 8, 32]")
        return sizes


class EfficiencyCheck(Check):
    """Latency quantiles, throughput, size, parameters, FLOPs, peak memory, energy and cost, measured after
    inference (the only check that runs the model itself: it times it)."""

    name = "efficiency"
    Config = EfficiencyConfig

    def prepare(self, plan: PlanContext, settings: EfficiencyConfig) -> Preparation:
        import os

        import numpy as np

        sizes = sorted(set(settings.latency_batch_sizes))

        def measure() -> Any:
            from assay.profiling.profile import profile_model

            path = plan.model.info.path
            return profile_model(
                plan.model, np.asarray(plan.dataset.x[: max(sizes)]), batch_sizes=tuple(sizes),
                budget_s=settings.latency_budget, price_per_hour=settings.price_per_hour,
                confidence=plan.config.confidence, seed=plan.config.seed,
                model_path=path if path and os.path.isfile(path) else None)

        return Preparation(measure=measure)

    def run(self, ctx: CheckContext) -> Section:
        return check_efficiency(ctx)
