"""The ``label_free`` check: accuracy estimates for unlabeled target data (``--unlabeled``), and how far to
trust them — every estimator is also run on each corruption view with its labels hidden (the validation
set is the evaluation set), its error reported by its tail (median, 90th percentile, worst) and direction,
and each target interval widened by the estimator's split-conformal error band, whose transfer to an
unfamiliar shift is checked leaving one corruption out (:mod:`assay.checks.label_free`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from assay.checks.base import Check, CheckConfig, CheckContext, PlanContext, Preparation
from assay.checks.label_free import (
    ESTIMATOR_NAMES,
    SHIFT_BAND_LEVEL,
    SHIFT_SCALE_FLOOR,
    ATCEstimator,
    GroupOutCoverage,
    ShiftErrors,
    average_confidence,
    doc_estimate,
    label_free_estimates,
    leave_one_group_out_coverage,
    min_scores_for_level,
    shift_aware_interval,
    shift_errors,
)
from assay.data.dataset import Dataset
from assay.engine.robust_views import CorruptionView, PrecomputedCorruptionView
from assay.engine.views import InputSetView
from assay.evidence.schema import Finding, Metric, Section, Severity

if TYPE_CHECKING:
    pass

__all__ = ["LabelFreeCheck", "LabelFreeConfig", "ShiftValidation", "UnlabeledView", "check_label_free",
           "point_estimates", "validate_on_shifts"]


class UnlabeledView(InputSetView):
    """The inputs of one unlabeled target set."""

    kind = "unlabeled"

    def __init__(self, name: str, dataset: Dataset | None) -> None:
        super().__init__(name, dataset)
        self.has_labels = dataset is not None and dataset.y is not None

    @property
    def labels(self) -> np.ndarray | None:
        return None if self._dataset is None else self._dataset.y


def point_estimates(val_logits: np.ndarray, val_labels: np.ndarray, target_logits: np.ndarray) -> dict[str, float]:
    """The four estimators' point values (ATC thresholds fitted on the validation set)."""
    return {
        "atc_mc": ATCEstimator("maxconf").fit(val_logits, val_labels).estimate(target_logits),
        "atc_ne": ATCEstimator("negentropy").fit(val_logits, val_labels).estimate(target_logits),
        "doc": doc_estimate(val_logits, val_labels, target_logits),
        "average_confidence": average_confidence(target_logits),
    }


@dataclass
class ShiftValidation:
    """Every estimator applied to each corruption view with its labels hidden: per-view rows, each
    estimator's :class:`ShiftErrors` and its leave-one-corruption-out coverage (None with one corruption).
    ``val_accuracy`` is the validation (clean evaluation) accuracy the error scale is measured from."""

    rows: list[dict[str, Any]]
    errors: dict[str, ShiftErrors]
    coverage: dict[str, GroupOutCoverage | None]
    val_accuracy: float

    def typical_half_width(self, estimator: str) -> float:
        """Median over the views of the half-width this estimator's band would have had there."""
        err = self.errors[estimator]
        estimates = np.array([r[estimator] for r in self.rows])
        return float(np.median([err.widening(v, self.val_accuracy) for v in estimates]))

    @property
    def best(self) -> str:
        """The estimator whose intervals are typically tightest on these views (the mean error breaks ties)."""
        return min(self.errors, key=lambda e: (self.typical_half_width(e), self.errors[e].mean_abs))

    def widening(self, estimator: str, estimate: float) -> float:
        """Half-width to add on each side of ``estimator``'s interval around ``estimate`` on new data."""
        return self.errors[estimator].widening(estimate, self.val_accuracy)


def validate_on_shifts(val_logits: np.ndarray, val_labels: np.ndarray,
                       views: list[tuple[str, int, np.ndarray]]) -> ShiftValidation:
    """Apply every estimator to each ``(corruption, severity, logits)`` view of the labelled validation set
    (labels hidden) and compare with its true accuracy; the band is checked leaving one corruption out."""
    rows: list[dict[str, Any]] = []
    for corruption, severity, logits in views:
        rows.append({"corruption": corruption, "severity": severity,
                     "true_accuracy": float((logits.argmax(1) == val_labels).mean()),
                     **point_estimates(val_logits, val_labels, logits)})
    truth = np.array([r["true_accuracy"] for r in rows])
    groups = [str(r["corruption"]) for r in rows]
    val_accuracy = float((np.asarray(val_logits).argmax(1) == val_labels).mean())
    errors = {e: shift_errors(np.array([r[e] for r in rows]), truth, val_accuracy) for e in ESTIMATOR_NAMES}
    coverage = {e: leave_one_group_out_coverage(err.scores, groups) for e, err in errors.items()}
    return ShiftValidation(rows=rows, errors=errors, coverage=coverage, val_accuracy=val_accuracy)


def _view_label(row: dict[str, Any]) -> str:
    return f"{row['corruption']} s{row['severity']}"


def _ordinal(k: int) -> str:
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def _lean_words(err: ShiftErrors) -> str:
    share = (f"too high on {err.share_too_high:.0%} of views, too low on {err.share_too_low:.0%} "
             f"(mean signed error {err.mean_signed:+.3f})")
    if err.lean == "high":
        return share + ": it overestimates accuracy under shift, so read it as an upper guess"
    if err.lean == "low":
        return share + ": it underestimates accuracy under shift"
    return share + ": no consistent direction"


def _band_words(validation: ShiftValidation, estimator: str) -> str:
    """The band of one estimator in words: the multiplier and what it gives at two predicted drops."""
    err = validation.errors[estimator]
    assert err.band is not None
    at = [(d, err.band * (SHIFT_SCALE_FLOOR + d)) for d in (0.0, 0.2)]
    return (f"{err.band:.2f} x ({SHIFT_SCALE_FLOOR:g} + the accuracy drop the estimate predicts), the "
            f"split-conformal {round(err.level * 100)}% quantile of errors divided by that scale ("
            f"{_ordinal(err.band_rank)} smallest of {err.n}): ±{at[0][1]:.3f} when no drop is predicted, "
            f"±{at[1][1]:.3f} at a predicted drop of {at[1][0]:g}")


def _validation_output(validation: ShiftValidation, level: float) -> tuple[dict[str, Metric], list[Finding],
                                                                           list[dict[str, Any]], dict[str, Any]]:
    """Metrics, findings, the ``estimator_error`` table and plot of the validation on corruption views."""
    rows = validation.rows
    n = len(rows)
    n_corruptions = len({r["corruption"] for r in rows})
    pct = round(level * 100)
    metrics: dict[str, Metric] = {}
    table: list[dict[str, Any]] = []
    point = "point estimate over corruption views (labels hidden)"
    for e, err in validation.errors.items():
        worst = _view_label(rows[err.worst])
        cov = validation.coverage[e]
        base = {"views": n, "corruptions": n_corruptions, "lower_is_better": True}
        metrics[f"mae_on_corruptions[{e}]"] = Metric(
            value=err.mean_abs, n=n, method=point,
            config={**base, "definition": "mean |estimated - true accuracy| over corruption views"})
        metrics[f"median_abs_error_on_corruptions[{e}]"] = Metric(
            value=err.median_abs, n=n, method=point,
            config={**base, "definition": "median |estimated - true accuracy| over corruption views"})
        metrics[f"p90_abs_error_on_corruptions[{e}]"] = Metric(
            value=err.p90_abs, n=n, method=point,
            config={**base, "definition": "90th percentile of |estimated - true accuracy| over corruption views "
                    "(numpy linear interpolation)"})
        metrics[f"max_abs_error_on_corruptions[{e}]"] = Metric(
            value=err.max_abs, n=n, method=point, config={**base, "worst_view": worst,
                                                          "definition": "largest |estimated - true accuracy|"})
        metrics[f"share_too_high_on_corruptions[{e}]"] = Metric(
            value=err.share_too_high, n=n, method=point,
            config={"views": n, "definition": "fraction of corruption views where the estimate exceeds the true "
                    "accuracy", "share_too_low": err.share_too_low})
        metrics[f"mean_signed_error_on_corruptions[{e}]"] = Metric(
            value=err.mean_signed, n=n, method=point,
            config={"views": n, "definition": "mean (estimated - true accuracy): positive = too high"})
        metrics[f"shift_band[{e}]"] = Metric(
            value=err.band, n=n, method=f"split conformal, {pct}%: the {_ordinal(err.band_rank)} smallest of {n} "
            "normalized errors on corruption views" + ("" if err.band is not None else " (more than the views: no "
                                                       "band)"),
            config={"level": level, "rank": err.band_rank, "views": n, "lower_is_better": True,
                    "normalized_error": f"|estimated - true accuracy| / ({SHIFT_SCALE_FLOOR:g} + max(0, validation "
                                        "accuracy - estimate))",
                    "half_width": f"value x ({SHIFT_SCALE_FLOOR:g} + max(0, validation accuracy - estimate))",
                    "reference": "Lei, G'Sell, Rinaldo, Tibshirani & Wasserman 2018 (split conformal, locally "
                                 "weighted)",
                    "covers": "the estimator's error on a new shift exchangeable with these views"})
        row: dict[str, Any] = {
            "estimator": e, "median_abs_error": err.median_abs, "p90_abs_error": err.p90_abs,
            "max_abs_error": err.max_abs, "worst_view": worst, "mean_abs_error": err.mean_abs,
            "share_too_high": err.share_too_high, "mean_signed_error": err.mean_signed, "shift_band": err.band,
            "typical_half_width": validation.typical_half_width(e)}
        if cov is not None:
            metrics[f"loco_coverage[{e}]"] = Metric(
                value=cov.coverage, n=n, method="leave one corruption out: the band calibrated on the other "
                "corruptions' views, checked on the held-out corruption's views",
                config={"level": level, "corruptions": n_corruptions, "per_corruption": cov.per_group,
                        "worst_corruption": cov.worst_group, "unbounded_for": cov.unbounded_groups})
            row.update(loco_coverage=cov.coverage, loco_worst_corruption=cov.worst_group,
                       loco_worst_coverage=cov.per_group[cov.worst_group])
        table.append(row)

    best = validation.best
    err, cov = validation.errors[best], validation.coverage[best]
    text = (f"on {n} corruption views ({n_corruptions} corruptions) with labels hidden, {best} gave the tightest "
            f"intervals: its absolute error has median {err.median_abs:.3f}, 90th percentile {err.p90_abs:.3f} "
            f"and worst {err.max_abs:.3f} ({_view_label(rows[err.worst])}); {_lean_words(err)}")
    severity: Severity = "info"
    if err.band is None:
        text += (f". {n} views are too few for a {pct}% error band (it needs at least {min_scores_for_level(level)}"
                 "): label-free intervals are widened by the largest error seen, scaled to the predicted drop, and "
                 "no coverage is promised")
        severity = "warning"
    else:
        text += f". Label-free intervals on new data are widened on each side by {_band_words(validation, best)}"
        if cov is None:
            text += "; with one corruption, how the band transfers to another kind of shift cannot be checked"
        else:
            text += (f"; leaving one corruption out, the band covered {cov.coverage:.0%} of the held-out views "
                     f"(worst: {cov.worst_group}, {cov.per_group[cov.worst_group]:.0%})")
            if cov.coverage < level - 0.05:
                text += f", below {pct}%: coverage cannot be promised for a shift unlike these corruptions"
                severity = "warning"
            else:
                text += (f"; expect about {pct}% coverage for shifts like these corruptions; a shift of another "
                         "nature (e.g. a new camera or population) may exceed the band")
    findings = [Finding(severity=severity, message=text, evidence="label_free.tables.estimator_error")]
    others = [f"{e}: median {x.median_abs:.3f}, 90th percentile {x.p90_abs:.3f}, worst {x.max_abs:.3f}, too high "
              f"on {x.share_too_high:.0%}" for e, x in validation.errors.items() if e != best]
    findings.append(Finding(severity="info", message="absolute error of the other estimators on the same views: "
                            + "; ".join(others), evidence="label_free.tables.estimator_error"))
    plot = {"kind": "bars", "title": "Label-free estimator error on corruption views (labels hidden)",
            "ylabel": "|estimated - true accuracy|", "categories": list(validation.errors),
            "series": [{"label": label, "values": [getattr(x, attr) for x in validation.errors.values()]}
                       for label, attr in (("median", "median_abs"), ("90th percentile", "p90_abs"),
                                           ("worst", "max_abs"))]}
    return metrics, findings, table, plot


def check_label_free(ctx: CheckContext) -> Section:
    cfg = ctx.config
    val_logits, val_labels = ctx.logits, ctx.labels
    metrics: dict[str, Metric] = {}
    findings: list[Finding] = []
    tables: dict[str, list[dict[str, Any]]] = {}
    plots: dict[str, dict[str, Any]] = {}
    level, pct = SHIFT_BAND_LEVEL, round(SHIFT_BAND_LEVEL * 100)

    corrupted = [(ctx.outputs[n].logits, v) for n, v in ctx.views.items()
                 if isinstance(v, (CorruptionView, PrecomputedCorruptionView))]
    validation = (validate_on_shifts(val_logits, val_labels, [(v.name, v.severity, lg) for lg, v in corrupted])
                  if corrupted else None)

    sampling = (f"bootstrap percentile, {int(cfg.confidence * 100)}% over target and validation resamples "
                f"(B={cfg.n_bootstrap}, seed={cfg.seed})")
    rows = []
    for name, view in ((n, v) for n, v in ctx.views.items() if isinstance(v, UnlabeledView)):
        target = ctx.outputs[name].logits
        results = label_free_estimates(val_logits, val_labels, target, n_resamples=cfg.n_bootstrap, seed=cfg.seed,
                                       confidence=cfg.confidence)
        row: dict[str, Any] = {"target": view.name, "n": len(target)}
        intervals: dict[str, tuple[float, float]] = {}
        widths: dict[str, float] = {}
        for est, r in results.items():
            config: dict[str, Any] = {"estimator": est, "sampling_ci": [r.ci_low, r.ci_high]}
            if validation is None:
                lo, hi = r.ci_low, r.ci_high
                method = (sampling + "; covers sampling noise only, not the estimator's error under shift (no "
                          "corruption views to measure it)")
            else:
                widths[est] = validation.widening(est, r.value)
                lo, hi = shift_aware_interval(r.value, r.ci_low, r.ci_high, widths[est])
                promised = validation.errors[est].band is not None
                method = (f"shift-aware: the {sampling} widened on each side by {widths[est]:.3f}, "
                          + (f"this estimator's split-conformal {pct}% error band" if promised else
                             "this estimator's largest error (too few views for a band: no coverage promised)")
                          + f" from {len(validation.rows)} corruption views with labels hidden")
                config.update(shift_widening=widths[est], shift_band_level=level,
                              shift_band_views=len(validation.rows), coverage_promised=promised)
            intervals[est] = (lo, hi)
            metrics[f"{est}[{view.name}]"] = Metric(value=r.value, ci_low=lo, ci_high=hi, n=len(target),
                                                    method=method, config=config)
            row[est] = r.value
        if validation is not None:
            best, res = validation.best, results[validation.best]
            lo, hi = intervals[best]
            row.update(interval_estimator=best, interval=f"{lo:.3f}–{hi:.3f}")
            leans_high = validation.errors[best].lean == "high"
            findings.append(Finding(severity="info", message=(
                f"{view.name}: {best} estimates accuracy {res.value:.3f}, interval {lo:.3f}–{hi:.3f} (the "
                f"{int(cfg.confidence * 100)}% sampling interval {res.ci_low:.3f}–{res.ci_high:.3f} widened by "
                f"±{widths[best]:.3f} for its error under shift)"
                + (f"; it overestimated accuracy on {validation.errors[best].share_too_high:.0%} of the corruption "
                   "views, so the truth more likely lies in the lower part" if leans_high else "")),
                evidence=f"label_free.metrics.{best}[{view.name}]"))
        if view.has_labels:
            true = float((target.argmax(1) == view.labels).mean())
            row["true_accuracy"] = true
            inside = [e for e, (lo, hi) in intervals.items() if lo <= true <= hi]
            outside = [e for e in intervals if e not in inside]
            findings.append(Finding(severity="info", message=(
                f"{view.name} has labels: they were not used by the estimators, only to report the true accuracy "
                f"{true:.3f} next to them; it lies inside the interval of "
                + (", ".join(inside) or "no estimator") + (f" and outside that of {', '.join(outside)}"
                                                            if outside else "")),
                evidence="label_free.tables.targets"))
            row["inside_interval"] = ", ".join(inside)
        rows.append(row)
    if rows:
        tables["targets"] = rows
        if validation is None:
            findings.append(Finding(severity="warning", message=(
                "no corruption views in this run: the label-free intervals cover sampling noise only, not the "
                "estimators' error under shift, which is usually larger; add --corruptions standard to measure it "
                "and widen the intervals accordingly"), evidence="label_free.metrics"))

    if validation is not None:
        v_metrics, v_findings, v_table, v_plot = _validation_output(validation, level)
        metrics.update(v_metrics)
        findings.extend(v_findings)
        tables["estimator_error"] = v_table
        tables["corruption_shifts"] = validation.rows
        plots["estimator_error"] = v_plot
    return Section(name="label_free", title="Label-free accuracy estimation", verdict="info",
                   summary=f"{len(rows)} unlabeled target set(s); estimators ATC-MC, ATC-NE (Garg et al. 2022), "
                           "DoC (Guillory et al. 2021), average confidence.",
                   metrics=metrics, findings=findings, tables=tables, plots=plots,
                   lead_tables=[t for t in ("targets", "estimator_error") if t in tables],
                   config={"validation": "the labelled evaluation set",
                           "shift_band": {"level": level, "scale_floor": SHIFT_SCALE_FLOOR,
                                          "method": "locally weighted split conformal on each estimator's errors on "
                                          "the corruption views (labels hidden), divided by (floor + the accuracy "
                                          "drop the estimate predicts); target intervals = sampling interval widened "
                                          "on each side by band x that scale, clipped to [0, 1]",
                                          "check": "leave one corruption out"}})


class LabelFreeConfig(CheckConfig):
    unlabeled: list[str] = Field(default_factory=list, description="Unlabeled target data for label-free "
                                 "accuracy estimates.")


class LabelFreeCheck(Check):
    """Label-free accuracy estimates (ATC, DoC, average confidence) for each ``--unlabeled`` set."""

    name = "label_free"
    Config = LabelFreeConfig
    needs = "--unlabeled"

    def wanted(self, settings: LabelFreeConfig) -> bool:
        return bool(settings.unlabeled)

    def prepare(self, plan: PlanContext, settings: LabelFreeConfig) -> Preparation:
        assert plan.load_inputs is not None
        targets = [plan.load_inputs(spec, f"unlabeled set {spec!r}") for spec in settings.unlabeled]
        return Preparation(views=[UnlabeledView(target.name, target) for target in targets])

    def run(self, ctx: CheckContext) -> Section:
        return check_label_free(ctx)
