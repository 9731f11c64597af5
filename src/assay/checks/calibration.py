"""The ``calibration`` check: does the model's confidence match how often it is right?

Builds the ``calibration`` section of the evidence — the ECE family with bootstrap intervals on the
run's shared resamples, temperature scaling fitted on separate calibration data or a held-out split,
the verdict, findings and plot data. The metrics themselves are pure functions in
:mod:`assay.stats.calibration`; conventions and references are in docs/metrics.md, section "Calibration".

The metric names that used to live here (``ece``, ``TemperatureScaler``, ``TopLabelBins``, ...) still
import from this module for one release, with a ``DeprecationWarning`` (PEP 562 ``__getattr__``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field

from assay.checks.base import Check, CheckConfig, CheckContext, make_metric
from assay.errors import DataError
from assay.evidence.schema import Finding, Metric, Section, Verdict
from assay.stats import calibration as calibration_stats
from assay.stats.binning import equal_mass_edges, equal_width_edges
from assay.stats.bootstrap import bootstrap_weights, percentile_ci, spawn_seed
from assay.stats.probabilities import nll_per_sample, softmax

__all__ = ["CalibrationCheck", "CalibrationConfig", "check_calibration"]

PASS_IF_ECE_CI_HIGH_BELOW = 0.05
WARN_IF_ECE_BELOW = 0.15
# Without separate calibration data, temperature scaling needs this many samples to split in two.
MIN_SAMPLES_TO_SPLIT = 20
# Classwise ECE is bootstrapped only up to this many (sample x class) cells: its resamples cost a dense
# (B x n) @ (n x C) product. Above it, the point estimate is reported without an interval.
CLASSWISE_BOOTSTRAP_MAX_CELLS = 10_000_000
# Bootstrap multiplicities of the temperature-scaling comparison are drawn in arrays of at most this many
# (2M float32 = 8 MB; the values do not depend on it).
_WEIGHTS_PER_ARRAY = 2_000_000
# Temperature-scaling findings call a change in ECE or NLL smaller than this "unchanged" (they print 4 decimals,
# so "lowers"/"raises" always come with printed values that differ).
UNCHANGED_WITHIN = 1e-4

_EQUAL_WIDTH = "equal-width; left-closed [lo, hi), last bin [lo, 1] (np.histogram, netcal)"
_EQUAL_MASS = (
    "equal-mass; inner edges halfway between consecutive parts of the sorted top-label confidences of "
    "the evaluation set (Kumar et al. 2019, get_equal_bins); right-closed (lo, hi], first bin [0, hi]; "
    "edges fixed during the bootstrap"
)

# Public names moved to assay.stats.calibration (issue 11); importable from here until the next release.
_MOVED_TO_STATS = frozenset({
    "DEFAULT_BINS", "BinStats", "ClasswiseBins", "TemperatureScaler", "TopLabelBins", "bin_stats",
    "classwise_bin_stats", "classwise_ece", "confidence_histogram", "debiased_ce_from_stats", "ece",
    "ece_adaptive", "ece_debiased", "ece_from_stats", "mce", "mce_from_stats", "reliability_bins",
    "reliability_from_stats", "stratified_split", "top_label",
})


def __getattr__(name: str) -> Any:
    """PEP 562: the moved metric names, with a ``DeprecationWarning`` pointing at their new module."""
    if name in _MOVED_TO_STATS:
        warnings.warn(
            f"assay.checks.calibration.{name} moved to assay.stats.calibration.{name}; import it from "
            "assay.stats.calibration (the old path will be removed in the next release)",
            DeprecationWarning, stacklevel=2,
        )
        return getattr(calibration_stats, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _MOVED_TO_STATS)


def _metric_configs(n_bins: int) -> dict[str, dict[str, Any]]:
    common = {"bins": n_bins, "lower_is_better": True}
    return {
        "ece": {**common, "binning": _EQUAL_WIDTH, "norm": "l1", "label": "top-label", "weighting": "bin mass",
                "reference": "Guo, Pleiss, Sun & Weinberger 2017, On Calibration of Modern Neural Networks"},
        "ece_adaptive": {**common, "binning": _EQUAL_MASS, "norm": "l1", "label": "top-label",
                         "weighting": "bin mass",
                         "reference": "Nixon, Dusenberry, Zhang, Jerfel & Tran 2019, Measuring Calibration in Deep "
                         "Learning (adaptive binning)"},
        "mce": {**common, "binning": _EQUAL_WIDTH, "norm": "max", "label": "top-label",
                "weighting": "maximum over non-empty bins",
                "reference": "Naeini, Cooper & Hauskrecht 2015, Obtaining Well Calibrated Probabilities Using "
                "Bayesian Binning"},
        "classwise_ece": {**common, "binning": _EQUAL_WIDTH + ", per class on p_k", "norm": "l1",
                          "label": "classwise", "weighting": "bin mass within each class, mean over all classes",
                          "reference": "Kull et al. 2019, Beyond temperature scaling (classwise-ECE); Nixon et al. "
                          "2019 (static calibration error)"},
        "ece_debiased": {**common, "binning": _EQUAL_MASS, "norm": "l2", "label": "top-label", "debiased": True,
                         "estimator": "sqrt(max(0, sum_b (n_b/n) [(conf_b - acc_b)^2 - acc_b (1 - acc_b)/(n_b - 1)])); "
                         "bins with n_b < 2 contribute 0",
                         "reference": "Kumar, Liang & Ma 2019, Verified Uncertainty Calibration; same as "
                         "calibration.lower_bound_scaling_ce(p=2, debias=True, num_bins=15, mode='top-label')"},
    }


Statistic = Callable[[np.ndarray], dict[str, np.ndarray]]


def _point_and_bootstrap(
    statistic: Statistic, n: int, resample_weights: Iterable[np.ndarray]
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """``statistic(weights (b, n)) -> {name: (b,)}`` at weights of ones (the point estimate) and over
    the bootstrap resamples (chunks of multiplicities, converted to float64 once)."""
    point = {name: float(v[0]) for name, v in statistic(np.ones((1, n))).items()}
    # Multiplicities stay float32 (exact integers); the statistics are finished in float64.
    parts = [statistic(chunk) for chunk in resample_weights]
    return point, {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def check_calibration(ctx: CheckContext) -> Section:
    """Calibration of the top-label confidence (ECE family with bootstrap CIs), temperature scaling, plots."""
    cfg = ctx.config
    n_bins = cfg.ece_bins
    logits = calibration_stats.validated_logits(ctx.logits, ctx.labels, "calibration check (evaluation logits)")
    labels = np.asarray(ctx.labels, dtype=np.int64)
    n, num_classes = logits.shape
    probabilities = softmax(logits)
    confidence, correct = calibration_stats.top_label(probabilities, labels)
    width_edges = equal_width_edges(n_bins)
    mass_edges = equal_mass_edges(confidence, n_bins)
    bootstrap_classwise = n * num_classes <= CLASSWISE_BOOTSTRAP_MAX_CELLS

    width_bins = calibration_stats.TopLabelBins(confidence, correct, width_edges)
    mass_bins = calibration_stats.TopLabelBins(confidence, correct, mass_edges, closed="right")
    classwise_bins = calibration_stats.ClasswiseBins(probabilities, labels, width_edges)

    def classwise(weights: np.ndarray) -> np.ndarray:
        return calibration_stats.ece_from_stats(classwise_bins(weights)).mean(axis=-1)

    def evaluation_statistics(weights: np.ndarray) -> dict[str, np.ndarray]:
        width = width_bins(weights)
        mass = mass_bins(weights)
        out = {
            "ece": calibration_stats.ece_from_stats(width),
            "mce": calibration_stats.mce_from_stats(width),
            "ece_adaptive": calibration_stats.ece_from_stats(mass),
            "ece_debiased": calibration_stats.debiased_ce_from_stats(mass),
            "confidence_gap": (width.sum_confidence.sum(-1) - width.sum_correct.sum(-1)) / width.total,
        }
        if bootstrap_classwise:
            out["classwise_ece"] = classwise(weights)
        return out

    # The run's shared resamples: calibration and performance CIs come from the same bootstrap draws.
    point, boot = _point_and_bootstrap(evaluation_statistics, n, ctx.resample_weights())
    if not bootstrap_classwise:
        point["classwise_ece"] = float(classwise(np.ones((1, n)))[0])
    configs = _metric_configs(n_bins)
    metrics: dict[str, Metric] = {}
    for name in ("ece", "ece_adaptive", "mce", "classwise_ece", "ece_debiased"):
        samples = boot.get(name)
        method = None if samples is not None else (
            f"point estimate (no interval: n x classes = {n * num_classes} exceeds the bootstrap limit "
            f"{CLASSWISE_BOOTSTRAP_MAX_CELLS})")
        metrics[name] = make_metric(point[name], samples, n=n, config=cfg, method=method, metric_config=configs[name])

    width_stats = width_bins()
    correct_counts, incorrect_counts = calibration_stats.confidence_histogram(confidence, correct, width_edges)
    reliability_series = [{"label": "uncalibrated", "bins": calibration_stats.reliability_from_stats(width_stats)}]

    temperature = _temperature_scaling(ctx, logits, probabilities, labels, width_edges, configs["ece"])
    metrics.update(temperature.metrics)
    if temperature.scaled_bins is not None:
        reliability_series.append({"label": "temperature-scaled", "bins": temperature.scaled_bins})

    ece_metric = metrics["ece"]
    verdict: Verdict
    if ece_metric.ci_high is not None and ece_metric.ci_high < PASS_IF_ECE_CI_HIGH_BELOW:
        verdict = "pass"
    elif ece_metric.value is not None and ece_metric.value < WARN_IF_ECE_BELOW:
        verdict = "warn"
    else:
        verdict = "fail"

    findings = _findings(verdict, metrics, width_stats, confidence, correct,
                         percentile_ci(boot["confidence_gap"], cfg.confidence), n, cfg.confidence, bootstrap_classwise)
    findings.extend(temperature.findings)

    summary = (
        f"ECE {ece_metric.value:.4f} ({int(cfg.confidence * 100)}% CI {_fmt(ece_metric.ci_low)}–"
        f"{_fmt(ece_metric.ci_high)}; top-label, {n_bins} equal-width bins) on {n} samples"
    )
    if "temperature" in metrics:
        summary += (f"; temperature scaling (T={metrics['temperature'].value:.3f}) takes ECE from "
                    f"{metrics['ece_before_temperature'].value:.4f} to {metrics['ece_after_temperature'].value:.4f} "
                    f"on {temperature.config['n_eval']} held-apart samples")
    summary += "."

    return Section(
        name="calibration",
        title="Calibration",
        verdict=verdict,
        summary=summary,
        metrics=metrics,
        findings=findings,
        plots={
            "reliability": {"kind": "reliability", "title": "Reliability diagram", "series": reliability_series},
            "confidence_histogram": {
                "kind": "histogram",
                "title": "Confidence of predictions",
                "edges": [float(e) for e in width_edges],
                "series": [{"label": "correct", "counts": correct_counts},
                           {"label": "incorrect", "counts": incorrect_counts}],
                "xlabel": "confidence",
                "ylabel": "count",
            },
        },
        config={
            "n_bins": n_bins,
            "confidence_definition": "top-label: max softmax probability; correct = argmax equals label",
            "binning": {"equal_width": _EQUAL_WIDTH, "equal_mass": _EQUAL_MASS},
            "thresholds": {"pass_if_ece_ci_high_below": PASS_IF_ECE_CI_HIGH_BELOW,
                           "warn_if_ece_below": WARN_IF_ECE_BELOW, "otherwise": "fail"},
            "bootstrap": {"n_bootstrap": cfg.n_bootstrap, "confidence": cfg.confidence, "seed": cfg.seed,
                          "scheme": "multinomial sample weights; the same resamples for every metric of the "
                          "evaluation set; bin edges fixed at their evaluation-set values",
                          "classwise_bootstrapped": bootstrap_classwise},
            "reliability": {"uncalibrated": f"full evaluation set (n={n})",
                            "temperature-scaled": "evaluation part of the temperature split"
                            if temperature.scaled_bins is not None else "not computed"},
            "temperature_scaling": temperature.config,
        },
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _change(name: str, before: float, after: float) -> str:
    """What temperature scaling did to a lower-is-better number, in words that match the printed values:
    a change within :data:`UNCHANGED_WITHIN` (the printed precision) is "unchanged"."""
    if before - after > UNCHANGED_WITHIN:
        return f"lowers {name} from {before:.4f} to {after:.4f}"
    if after - before > UNCHANGED_WITHIN:
        return f"raises {name} from {before:.4f} to {after:.4f}"
    return f"leaves {name} unchanged ({before:.4f} to {after:.4f}, within {UNCHANGED_WITHIN:g})"


@dataclass
class _TemperatureResult:
    metrics: dict[str, Metric]
    findings: list[Finding]
    config: dict[str, Any]
    scaled_bins: list[dict[str, Any]] | None


def _temperature_scaling(
    ctx: CheckContext,
    logits: np.ndarray,
    probabilities: np.ndarray,
    labels: np.ndarray,
    edges: np.ndarray,
    ece_config: dict[str, Any],
) -> _TemperatureResult:
    """Fit T on calibration data (or a held-out split) and compare ECE/NLL before and after on other data."""
    cfg = ctx.config
    n, num_classes = logits.shape
    config: dict[str, Any] = {"method": "temperature scaling (Guo et al. 2017): one T > 0, softmax(z / T), "
                              "T minimizing mean NLL; bounded search over log T in [log 0.01, log 100]"}
    if ctx.calibration is not None:
        fit_logits, fit_labels = ctx.calibration
        fit_logits = calibration_stats.validated_logits(fit_logits, fit_labels, "calibration data")
        if fit_logits.shape[1] != num_classes:
            raise DataError(
                f"calibration data has {fit_logits.shape[1]} classes but the evaluation data has {num_classes}",
                where="calibration data", fix="give calibration data scored by the same model",
            )
        fit_labels = np.asarray(fit_labels, dtype=np.int64)
        eval_index = np.arange(n)
        config.update({"fit_on": "separate calibration data", "n_fit": len(fit_labels), "n_eval": n})
        where = (f"the {len(fit_labels)} samples of the separate calibration data; before/after on all {n} "
                 "evaluation samples")
    elif n >= MIN_SAMPLES_TO_SPLIT:
        fit_index, eval_index, stratified = calibration_stats.stratified_split(labels, cfg.calibration_split,
                                                             spawn_seed(cfg.seed, "calibration/split"))
        fit_logits, fit_labels = logits[fit_index], labels[fit_index]
        config.update({"fit_on": "held-out split of the evaluation set", "split_fraction": cfg.calibration_split,
                       "stratified": stratified, "seed": cfg.seed, "n_fit": int(fit_index.size),
                       "n_eval": int(eval_index.size)})
        where = (f"a {'stratified ' if stratified else ''}{cfg.calibration_split:.0%} split of the evaluation set "
                 f"({fit_index.size} samples, seed {cfg.seed}); before/after on the other {eval_index.size} samples")
    else:
        config.update({"fit_on": None,
                       "reason": f"fewer than {MIN_SAMPLES_TO_SPLIT} samples and no calibration data"})
        return _TemperatureResult({}, [Finding(
            severity="info",
            message=f"temperature scaling skipped: only {n} samples and no separate calibration data",
            evidence="calibration.config.temperature_scaling",
        )], config, None)

    scaler = calibration_stats.TemperatureScaler().fit(fit_logits, fit_labels)
    t = scaler.temperature_
    eval_logits, eval_labels = logits[eval_index], labels[eval_index]
    n_eval = eval_labels.size
    conf_before, correct = calibration_stats.top_label(probabilities[eval_index], eval_labels)
    conf_after, _ = calibration_stats.top_label(scaler.predict_proba(eval_logits), eval_labels)
    nll = np.stack([nll_per_sample(eval_logits, eval_labels), nll_per_sample(eval_logits, eval_labels, t)], axis=1)

    before_bins = calibration_stats.TopLabelBins(conf_before, correct, edges)
    after_bins = calibration_stats.TopLabelBins(conf_after, correct, edges)

    def statistic(weights: np.ndarray) -> dict[str, np.ndarray]:
        mean_nll = weights @ nll.astype(weights.dtype, copy=False) / n_eval
        return {
            "ece_before_temperature": calibration_stats.ece_from_stats(before_bins(weights)),
            "ece_after_temperature": calibration_stats.ece_from_stats(after_bins(weights)),
            "nll_before_temperature": mean_nll[:, 0],
            "nll_after_temperature": mean_nll[:, 1],
        }

    resamples = bootstrap_weights(n_eval, cfg.n_bootstrap, spawn_seed(cfg.seed, "calibration/temperature"),
                                  max_weights=_WEIGHTS_PER_ARRAY, order="F")
    point, boot = _point_and_bootstrap(statistic, n_eval, resamples)
    subset = {"subset": "evaluation samples not used to fit T", "n_fit": config["n_fit"], "fit_on": config["fit_on"]}
    metrics = {"temperature": make_metric(
        t, None, n=config["n_fit"], config=cfg,
        method="point estimate: NLL-minimizing temperature, fitted once (no interval)",
        metric_config={"fit_on": config["fit_on"], "search": "bounded Brent over log T in [log 0.01, log 100]",
                       "fit_nll": scaler.nll_, "reference": "Guo et al. 2017"})}
    for name in ("ece_before_temperature", "ece_after_temperature"):
        metrics[name] = make_metric(point[name], boot[name], n=n_eval, config=cfg,
                                    metric_config={**ece_config, **subset})
    for name in ("nll_before_temperature", "nll_after_temperature"):
        metrics[name] = make_metric(point[name], boot[name], n=n_eval, config=cfg, metric_config={
            "definition": "mean -log softmax(z / T)[label], natural log", "lower_is_better": True, **subset})
    config["temperature"] = t

    pct = int(cfg.confidence * 100)
    ece_before, ece_after = point["ece_before_temperature"], point["ece_after_temperature"]
    nll_before, nll_after = point["nll_before_temperature"], point["nll_after_temperature"]
    ece_change = make_metric(ece_before - ece_after, boot["ece_before_temperature"] - boot["ece_after_temperature"],
                             n=n_eval, config=cfg)
    nll_change = make_metric(nll_before - nll_after, boot["nll_before_temperature"] - boot["nll_after_temperature"],
                             n=n_eval, config=cfg)
    nll_fell = nll_before - nll_after > UNCHANGED_WITHIN
    config["unchanged_within"] = UNCHANGED_WITHIN
    bounds = f"[{scaler.min_temperature:g}, {scaler.max_temperature:g}]"
    if scaler.at_bound_:
        reading = (f"T={t:.4g} is at the edge of the search range {bounds}, so it says nothing about over- or "
                   "underconfidence (see the warning)")
    elif t == 1.0:
        reading = "T = 1: no change"
    else:
        # A direction is claimed only when the held-out NLL fell and its paired interval lies above 0.
        kind, looked = ("T > 1 softens", "overconfident") if t > 1 else ("T < 1 sharpens", "underconfident")
        if nll_fell and nll_change.ci_low is not None and nll_change.ci_low > 0:
            reading = f"{kind} the predictions and lowered the held-out NLL: the model is {looked}"
        elif nll_fell:
            reading = (f"{kind} the predictions and the held-out NLL fell, but its interval includes no change: "
                       f"no clear sign that the model is {looked}")
        else:
            reading = (f"{kind} the predictions, but the held-out NLL did not fall: the model looked {looked} on "
                       "the fitting data only")
    findings = [
        Finding(severity="info", message=f"temperature fitted on {where}",
                evidence="calibration.config.temperature_scaling"),
        Finding(
            severity="info",
            message=(f"temperature scaling (T={t:.3f}) {_change('ECE', ece_before, ece_after)} (paired difference "
                     f"{ece_change.value:.4f}, {pct}% CI {_fmt(ece_change.ci_low)}–{_fmt(ece_change.ci_high)}) and "
                     f"{_change('NLL', nll_before, nll_after)} (paired difference {nll_change.value:.4f}, {pct}% CI "
                     f"{_fmt(nll_change.ci_low)}–{_fmt(nll_change.ci_high)}) on the samples not used to fit T; "
                     f"{reading}"),
            evidence="calibration.metrics.ece_after_temperature",
        ),
    ]
    if scaler.at_bound_:
        findings.append(Finding(
            severity="warning",
            message=f"the fit hit its bound T={t:.4g}: the true optimum lies beyond the search range {bounds} (the "
            "NLL keeps falling towards it); the calibration data may be too small (e.g. every fitting prediction is "
            "correct) or the model degenerate (e.g. constant logits)",
            evidence="calibration.metrics.temperature",
        ))
    scaled = calibration_stats.reliability_from_stats(after_bins())
    return _TemperatureResult(metrics, findings, config, scaled)


def _findings(
    verdict: Verdict,
    metrics: dict[str, Metric],
    width_stats: calibration_stats.BinStats,
    confidence: np.ndarray,
    correct: np.ndarray,
    gap_ci: tuple[float, float],
    n: int,
    level: float,
    bootstrap_classwise: bool,
) -> list[Finding]:
    findings: list[Finding] = []
    pct = int(level * 100)
    e = metrics["ece"]
    rule = (f"pass needs the upper end of the ECE interval below {PASS_IF_ECE_CI_HIGH_BELOW}, warn needs the point "
            f"estimate below {WARN_IF_ECE_BELOW}")
    severity = {"pass": "info", "warn": "warning", "fail": "critical"}[verdict]
    findings.append(Finding(
        severity=severity,  # type: ignore[arg-type]
        sets_verdict=verdict != "pass",
        message=f"ECE {e.value:.4f} ({pct}% CI {_fmt(e.ci_low)}–{_fmt(e.ci_high)}) gives '{verdict}': {rule}",
        evidence="calibration.metrics.ece",
    ))

    mean_conf, accuracy = float(confidence.mean()), float(correct.mean())
    lo, hi = gap_ci
    significant = bool(np.isfinite(lo) and np.isfinite(hi) and (lo > 0 or hi < 0))
    if significant:
        kind = "overconfident" if mean_conf > accuracy else "underconfident"
        findings.append(Finding(
            severity="info" if verdict == "pass" else "warning",
            message=f"{kind}: mean confidence {mean_conf:.3f} vs accuracy {accuracy:.3f} "
            f"(gap {mean_conf - accuracy:+.3f}, {pct}% CI {lo:+.3f} to {hi:+.3f})",
            evidence="calibration.plots.reliability",
        ))
    else:
        findings.append(Finding(
            severity="info",
            message=f"no overall over- or underconfidence detected: mean confidence {mean_conf:.3f} vs accuracy "
            f"{accuracy:.3f} (gap interval includes 0); per-bin errors may still cancel out, see the reliability "
            "diagram",
            evidence="calibration.plots.reliability",
        ))

    contribution = np.abs(width_stats.sum_correct - width_stats.sum_confidence)
    if contribution.max() > 0:
        b = int(np.argmax(contribution))
        count = width_stats.count[b]
        acc, conf = width_stats.sum_correct[b] / count, width_stats.sum_confidence[b] / count
        close = "]" if b == contribution.size - 1 else ")"
        findings.append(Finding(
            severity="info",
            message=f"largest share of the ECE ({contribution[b] / contribution.sum():.0%}) comes from confidences in "
            f"[{width_stats.edges[b]:.3f}, {width_stats.edges[b + 1]:.3f}{close}: accuracy {acc:.3f} vs mean "
            f"confidence {conf:.3f} over {count / n:.1%} of the samples",
            evidence="calibration.plots.reliability",
        ))
    if n < 1000:
        findings.append(Finding(
            severity="info",
            message=f"with {n} samples the plug-in ECE is biased upwards (sampling noise adds to |acc - conf| in each "
            f"bin); ece_debiased ({metrics['ece_debiased'].value:.4f}, an L2 estimate with that bias removed) is the "
            "better guide at this size",
            evidence="calibration.metrics.ece_debiased",
        ))
    for name in ("ece", "ece_adaptive", "mce", "classwise_ece", "ece_debiased"):
        m = metrics[name]
        if None in (m.value, m.ci_low, m.ci_high) or m.ci_low <= m.value <= m.ci_high:  # type: ignore[operator]
            continue
        findings.append(Finding(
            severity="info",
            message=f"{name} {m.value:.4f} lies outside its own bootstrap interval ({m.ci_low:.4f}–{m.ci_high:.4f}): "
            "binned calibration errors are biased upwards when bins hold few samples, and resampling adds that bias "
            "again; read the interval as indicative",
            evidence=f"calibration.metrics.{name}",
        ))
    if not bootstrap_classwise:
        findings.append(Finding(
            severity="info",
            message="classwise ECE is reported without an interval: too many (sample x class) cells to bootstrap "
            "quickly",
            evidence="calibration.metrics.classwise_ece",
        ))
    return findings


class CalibrationConfig(CheckConfig):
    calibration_split: float = Field(
        0.5, gt=0.0, lt=1.0, description="Fraction of the evaluation set held out to fit the temperature "
        "when no calibration data is given.")


class CalibrationCheck(Check):
    """The ECE family with bootstrap CIs, reliability diagrams, and temperature scaling before/after."""

    name = "calibration"
    Config = CalibrationConfig

    def run(self, ctx: CheckContext) -> Section:
        return check_calibration(ctx)
