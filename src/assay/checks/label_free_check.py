"""The ``label_free`` check: accuracy estimates for unlabeled target data (``--unlabeled``), and how far to
trust them — every estimator is also run on each corruption view with its labels hidden, and its mean
absolute error against the true accuracy is reported (the validation set is the evaluation set)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from assay.checks.base import Check, CheckConfig, CheckContext, PlanContext, Preparation
from assay.checks.label_free import (
    ESTIMATOR_NAMES,
    ATCEstimator,
    average_confidence,
    doc_estimate,
    label_free_estimates,
)
from assay.data.dataset import Dataset
from assay.engine.robust_views import CorruptionView, PrecomputedCorruptionView
from assay.engine.views import View, ViewSpec
from assay.evidence.schema import Finding, Metric, Section

if TYPE_CHECKING:
    from assay.models.base import Model

__all__ = ["LabelFreeCheck", "LabelFreeConfig", "UnlabeledView", "check_label_free", "point_estimates"]


class UnlabeledView(View):
    """The inputs of one unlabeled target set."""

    def __init__(self, name: str, dataset: Dataset | None) -> None:
        self.name, self._dataset = name, dataset
        self.has_labels = dataset is not None and dataset.y is not None
        self.spec = ViewSpec.make("unlabeled", name=name, fingerprint=None if dataset is None else dataset.fingerprint)

    @classmethod
    def _from_spec(cls, spec: ViewSpec, model: Model | None) -> View:
        """In a worker: the rows come in each shard, so the view holds no data (its transform is the identity)."""
        view = cls(dict(spec.params)["name"], None)
        view.spec = spec
        return view

    def source(self, dataset: Dataset) -> Dataset:
        if self._dataset is None:
            raise RuntimeError("an unlabeled view rebuilt from its spec holds no data")
        return self._dataset

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


def check_label_free(ctx: CheckContext) -> Section:
    cfg = ctx.config
    val_logits, val_labels = ctx.logits, ctx.labels
    metrics: dict[str, Metric] = {}
    findings: list[Finding] = []
    tables: dict[str, list[dict[str, Any]]] = {}
    plots: dict[str, dict[str, Any]] = {}
    method = (f"bootstrap percentile, {int(cfg.confidence * 100)}% over target and validation resamples "
              f"(B={cfg.n_bootstrap}, seed={cfg.seed}); covers sampling noise, not the estimator's bias under shift")
    rows = []
    for name, view in ((n, v) for n, v in ctx.views.items() if isinstance(v, UnlabeledView)):
        target = ctx.outputs[name].logits
        results = label_free_estimates(val_logits, val_labels, target, n_resamples=cfg.n_bootstrap, seed=cfg.seed,
                                       confidence=cfg.confidence)
        row: dict[str, Any] = {"target": view.name, "n": len(target)}
        for est, r in results.items():
            metrics[f"{est}[{view.name}]"] = Metric(value=r.value, ci_low=r.ci_low, ci_high=r.ci_high,
                                                    n=len(target), method=method, config={"estimator": est})
            row[est] = r.value
        if view.has_labels:
            true = float((target.argmax(1) == view.labels).mean())
            row["true_accuracy"] = true
            findings.append(Finding(severity="info", message=(
                f"{view.name} has labels: they were not used by the estimators, only to report the true accuracy "
                f"{true:.3f} next to them"), evidence="label_free.tables.targets"))
        rows.append(row)
    if rows:
        tables["targets"] = rows

    corrupted = [(n, v) for n, v in ctx.views.items() if isinstance(v, (CorruptionView, PrecomputedCorruptionView))]
    if corrupted:
        shift_rows: list[dict[str, Any]] = []
        for name, v in corrupted:
            logits = ctx.outputs[name].logits
            estimates = point_estimates(val_logits, val_labels, logits)
            shift_rows.append({"corruption": v.name, "severity": v.severity,
                               "true_accuracy": float((logits.argmax(1) == val_labels).mean()), **estimates})
        errors = {e: float(np.mean([abs(r[e] - r["true_accuracy"]) for r in shift_rows])) for e in ESTIMATOR_NAMES}
        for e, mae in errors.items():
            metrics[f"mae_on_corruptions[{e}]"] = Metric(
                value=mae, n=len(shift_rows), method="point estimate over corruption views (labels hidden)",
                config={"definition": "mean |estimated - true accuracy| over corruption views",
                        "lower_is_better": True})
        best = min(errors, key=errors.__getitem__)
        findings.append(Finding(severity="info", message=(
            f"on {len(shift_rows)} corruption views with labels hidden, {best} was closest to the true accuracy "
            f"(mean absolute error {errors[best]:.3f}); trust label-free estimates to about that much"),
            evidence="label_free.tables.corruption_shifts"))
        tables["corruption_shifts"] = shift_rows
        plots["estimator_error"] = {"kind": "bars", "title": "Label-free estimator error on corruption views",
                                    "ylabel": "mean absolute error", "categories": list(errors),
                                    "series": [{"label": "MAE", "values": list(errors.values())}]}
    return Section(name="label_free", title="Label-free accuracy estimation", verdict="info",
                   summary=f"{len(rows)} unlabeled target set(s); estimators ATC-MC, ATC-NE (Garg et al. 2022), "
                           "DoC (Guillory et al. 2021), average confidence.",
                   metrics=metrics, findings=findings, tables=tables, plots=plots,
                   config={"validation": "the labelled evaluation set"})


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
