"""Slices and fairness as checks: where the model fails, and for whom.

``slices``: per value of each ``--slice-by`` column (numeric columns binned into quartiles), accuracy with an
exact CI, macro-F1 and ECE, a slice-vs-rest Fisher test with Benjamini-Hochberg control over all slices
tested, and the worst-slice gap with a bootstrap CI. ``fairness``: group metrics for each ``--sensitive``
column (demographic parity, equalized odds, equal opportunity; one-vs-rest and worst class if multiclass).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from assay.checks.base import Check, CheckConfig, CheckContext, PlanContext, Preparation
from assay.checks.fairness_metrics import INTERVAL_METHOD, Estimate, fairness_metrics
from assay.checks.performance import confusion_matrix, macro_f1_from_confusion
from assay.checks.slice_metrics import GAP_INTERVAL_METHOD, bin_numeric, slice_table, worst_slice_gap
from assay.errors import UserError
from assay.evidence.schema import Finding, Metric, Section
from assay.stats.bootstrap import spawn_seed
from assay.stats.calibration import ece
from assay.stats.multiple_testing import benjamini_hochberg
from assay.stats.probabilities import softmax

__all__ = [
    "FairnessCheck",
    "FairnessConfig",
    "SlicesCheck",
    "SlicesConfig",
    "check_fairness",
    "check_slices",
    "slice_groups",
    "slice_labels",
]


def slice_labels(meta: Any, column: str, where: str) -> np.ndarray:
    """The group label (str) of every sample for a metadata column; numeric columns with more than 10
    distinct values are binned into quartiles (``bin_numeric``)."""
    if column not in meta.columns:
        available = ", ".join(map(str, meta.columns)) or "none"
        raise UserError(f"no column {column!r} in the data's metadata", where=where,
                        fix=f"choose one of: {available} (NPZ meta_<name> arrays, CSV/Parquet columns)")
    values = meta[column].to_numpy()
    if values.dtype.kind in "fiu" and len(np.unique(values[~np.isnan(values.astype(float))])) > 10:
        return bin_numeric(values.astype(float), q=4).astype(str)
    return values.astype(str)


def slice_groups(ctx: CheckContext, column: str, where: str) -> np.ndarray:
    """:func:`slice_labels` of the evaluation set."""
    return slice_labels(ctx.dataset.meta, column, where)


def check_slices(ctx: CheckContext) -> Section:
    cfg = ctx.config
    labels = ctx.labels
    pred = ctx.logits.argmax(axis=1)
    correct = pred == labels
    probs = softmax(ctx.logits)
    num_classes = ctx.logits.shape[1]
    metrics: dict[str, Metric] = {}
    tables: dict[str, list[dict[str, Any]]] = {}
    plots: dict[str, dict[str, Any]] = {}
    findings: list[Finding] = []
    import pandas as pd

    per_column = {column: slice_groups(ctx, column, "--slice-by") for column in cfg.slice_by}
    rows_by_column = {column: slice_table(correct, groups, min_size=cfg.min_slice_size, alpha=0.05,
                                          confidence=cfg.confidence) for column, groups in per_column.items()}
    # One Benjamini-Hochberg family over every slice tested, across all --slice-by columns.
    raw = np.array([r.p_value for rows in rows_by_column.values() for r in rows], dtype=float)
    reject, adjusted = benjamini_hochberg(raw, 0.05) if raw.size else (np.zeros(0, bool), raw)
    k = 0
    for column, rows in rows_by_column.items():
        groups = per_column[column]
        codes, uniques = pd.factorize(groups)  # integer codes: one hash pass instead of a string compare per slice
        position = {str(u): i for i, u in enumerate(uniques)}
        table = []
        for row in rows:
            mask = codes == position[row.slice]
            cm = confusion_matrix(labels[mask], pred[mask], num_classes)
            flagged = bool(reject[k] and row.accuracy < row.rest_accuracy)
            table.append({**row.__dict__, "p_adjusted": float(adjusted[k]), "flagged": flagged,
                          "macro_f1": float(macro_f1_from_confusion(cm)),
                          "ece": float(ece(probs[mask], labels[mask], n_bins=cfg.ece_bins))})
            k += 1
        tables[column] = table
        sufficient = [r for r in rows if not r.insufficient]
        if len(sufficient) >= 2:
            gap = worst_slice_gap(correct, groups, min_size=cfg.min_slice_size, seed=spawn_seed(cfg.seed, column),
                                  n_bootstrap=cfg.n_bootstrap, confidence=cfg.confidence)
            metrics[f"worst_slice_gap[{column}]"] = Metric(
                value=gap.value, ci_low=gap.ci_low, ci_high=gap.ci_high, n=len(labels),
                method=f"{GAP_INTERVAL_METHOD}, {int(cfg.confidence * 100)}% (B={cfg.n_bootstrap}, "
                       f"seed={cfg.seed})",
                config={"definition": "best minus worst slice accuracy over slices with n >= min size",
                        "best": gap.best_slice, "worst": gap.worst_slice, "min_slice_size": cfg.min_slice_size})
        for r in table:
            if r["flagged"]:
                findings.append(Finding(severity="warning", message=(
                    f"{column}={r['slice']}: accuracy {r['accuracy']:.3f} (CI {r['ci_low']:.3f}-{r['ci_high']:.3f}, "
                    f"n={r['n']}) vs {r['rest_accuracy']:.3f} elsewhere; significant after Benjamini-Hochberg "
                    f"(adjusted p {r['p_adjusted']:.3g})"), evidence=f"slices.tables.{column}"))
        small = [r.slice for r in rows if r.insufficient]
        if small:
            findings.append(Finding(severity="info", message=(
                f"{column}: {len(small)} slice(s) below {cfg.min_slice_size} samples are reported as insufficient, "
                f"not tested: {', '.join(small[:8])}"), evidence=f"slices.tables.{column}"))
        plots[f"accuracy[{column}]"] = {
            "kind": "bars", "title": (f"Accuracy by {column} ({int(cfg.confidence * 100)}% CI; hatched: "
                                      f"n < {cfg.min_slice_size}, insufficient, not tested)"),
            "ylabel": "accuracy", "categories": [r.slice for r in rows], "muted": [r.insufficient for r in rows],
            "series": [{"label": "accuracy", "values": [r.accuracy for r in rows],
                        "ci_low": [r.ci_low for r in rows], "ci_high": [r.ci_high for r in rows]}]}
    flagged = any(f.severity == "warning" for f in findings)
    return Section(
        name="slices", title="Slices", verdict="warn" if flagged else "pass",
        summary=f"{sum(len(t) for t in tables.values())} slices over {', '.join(cfg.slice_by)}; "
                f"{sum(r['flagged'] for t in tables.values() for r in t)} flagged (BH FDR 0.05).",
        metrics=metrics, findings=findings, tables=tables, plots=plots,
        config={"slice_by": cfg.slice_by, "min_slice_size": cfg.min_slice_size, "test": "two-sided Fisher exact, "
                "slice vs rest",
                "correction": "Benjamini-Hochberg over all slices tested (all columns together), FDR 0.05",
                "numeric_columns": "binned into quartiles when they have more than 10 distinct values"})


def check_fairness(ctx: CheckContext) -> Section:
    cfg = ctx.config
    pred = ctx.logits.argmax(axis=1)
    metrics: dict[str, Metric] = {}
    tables: dict[str, list[dict[str, Any]]] = {}
    method = f"{INTERVAL_METHOD}, {int(cfg.confidence * 100)}% (B={cfg.n_bootstrap}, seed={cfg.seed})"
    for column in cfg.sensitive:
        groups = slice_groups(ctx, column, "--sensitive")
        result = fairness_metrics(ctx.labels, pred, groups, seed=spawn_seed(cfg.seed, f"fairness/{column}"),
                                  n_bootstrap=cfg.n_bootstrap, confidence=cfg.confidence,
                                  num_classes=ctx.logits.shape[1])
        for name, est in result.summary.items():
            metrics[f"{name}[{column}]"] = Metric(
                value=est.value, ci_low=est.ci_low, ci_high=est.ci_high, n=len(pred), method=method,
                config={"column": column, "scope": "positive class" if result.binary else "worst class, one-vs-rest"})
        tables[column] = [_group_row(g, v) for g, v in result.per_group.items()]
    parity = {k: m.value for k, m in metrics.items()
              if k.startswith("demographic_parity_difference") and m.value is not None}
    worst_key = max(parity, key=lambda k: parity[k], default=None)
    worst = parity[worst_key] if worst_key is not None else 0.0
    findings = [Finding(severity="info", message="metrics follow fairlearn's definitions (tested equal); "
                        "multiclass models are assessed one-vs-rest per class, and the worst class is reported")]
    if worst_key is not None and worst > 0.1:
        findings.insert(0, Finding(
            severity="warning", sets_verdict=True, evidence=f"fairness.metrics.{worst_key}",
            message=f"demographic parity difference {worst:.3f} over {metrics[worst_key].config['column']!r} is "
                    "above 0.1: the groups receive the positive prediction at rates more than 10 points apart"))
    return Section(
        name="fairness", title="Fairness", verdict="warn" if worst > 0.1 else "pass",
        summary=f"Largest demographic parity difference {worst:.3f} over {', '.join(cfg.sensitive)}.",
        metrics=metrics, tables=tables, findings=findings,
        config={"sensitive": cfg.sensitive, "warn_above_demographic_parity_difference": 0.1})


def _group_row(group: str, rates: dict[str, Estimate | int]) -> dict[str, Any]:
    """One row of the fairness table: a group's size, error rate (with its CI) and selection rates."""
    n, error = rates["n"], rates["error_rate"]
    assert isinstance(n, int) and isinstance(error, Estimate)  # the layout of FairnessResult.per_group
    return {"group": group, "n": int(n), "error_rate": error.value,
            "error_rate_ci_low": error.ci_low, "error_rate_ci_high": error.ci_high,
            **{k: e.value for k, e in rates.items() if k.startswith("selection_rate[") and isinstance(e, Estimate)}}


class SlicesConfig(CheckConfig):
    slice_by: list[str] = Field(default_factory=list, description="Metadata columns to slice by.")
    min_slice_size: int = Field(30, ge=1, description="Slices smaller than this are reported as insufficient.")


class SlicesCheck(Check):
    """Per-slice accuracy, weak slices (BH-controlled), the worst-slice gap (``--slice-by``)."""

    name = "slices"
    Config = SlicesConfig
    needs = "--slice-by"

    def wanted(self, settings: SlicesConfig) -> bool:
        return bool(settings.slice_by)

    def prepare(self, plan: PlanContext, settings: SlicesConfig) -> Preparation:
        for column in settings.slice_by:  # a misspelt column fails before any inference
            slice_labels(plan.dataset.meta, column, "slice_by")
        return Preparation()

    def run(self, ctx: CheckContext) -> Section:
        return check_slices(ctx)


class FairnessConfig(CheckConfig):
    sensitive: list[str] = Field(default_factory=list, description="Metadata columns for fairness metrics.")


class FairnessCheck(Check):
    """Demographic parity, equalized odds, equal opportunity per ``--sensitive`` column (fairlearn's definitions)."""

    name = "fairness"
    Config = FairnessConfig
    needs = "--sensitive"

    def wanted(self, settings: FairnessConfig) -> bool:
        return bool(settings.sensitive)

    def prepare(self, plan: PlanContext, settings: FairnessConfig) -> Preparation:
        for column in settings.sensitive:
            slice_labels(plan.dataset.meta, column, "sensitive")
        return Preparation()

    def run(self, ctx: CheckContext) -> Section:
        return check_fairness(ctx)
