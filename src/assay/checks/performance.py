"""Performance: accuracy, F1 family, per-class metrics, top-5, NLL and Brier — each with a bootstrap CI.

Count-based metrics are functions of the contingency table (label x prediction x top-5 hit), so their
bootstrap resamples the table directly (exact, see ``stats.bootstrap.bootstrap_cell_counts``).
Averaging conventions follow scikit-learn: macro averages run over the labels present in the labels or the
predictions (``sklearn.utils.multiclass.unique_labels``); undefined precision/F1 (0/0) count as 0.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from assay.checks.base import Check, CheckContext, exact_interval_if_collapsed, make_metric
from assay.evidence.schema import Finding, Metric, Section, Verdict
from assay.stats.bootstrap import bootstrap_cell_counts, spawn_seed
from assay.stats.probabilities import nll_per_sample, softmax

__all__ = [
    "PerformanceCheck",
    "accuracy_from_confusion",
    "balanced_accuracy_from_confusion",
    "brier_per_sample",
    "check_performance",
    "confusion_matrix",
    "f1_from_confusion",
    "macro_f1_from_confusion",
    "nll_per_sample",
    "precision_recall_from_confusion",
    "top_k_correct",
    "weighted_f1_from_confusion",
]


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``cm[i, j]`` of samples with label i predicted as j."""
    flat = np.asarray(labels, np.int64) * num_classes + np.asarray(predictions, np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)


def accuracy_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Fraction correct; ``cm`` may carry leading batch dimensions (..., C, C)."""
    cm = np.asarray(cm, np.float64)
    return np.trace(cm, axis1=-2, axis2=-1) / cm.sum(axis=(-2, -1))


def precision_recall_from_confusion(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class precision (diag / predicted) and recall (diag / true), 0 where undefined."""
    cm = np.asarray(cm, np.float64)
    diag = np.diagonal(cm, axis1=-2, axis2=-1)
    return _safe_div(diag, cm.sum(axis=-2)), _safe_div(diag, cm.sum(axis=-1))


def f1_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class F1 = 2 TP / (2 TP + FP + FN), 0 where undefined (scikit-learn's zero_division=0)."""
    cm = np.asarray(cm, np.float64)
    diag = np.diagonal(cm, axis1=-2, axis2=-1)
    return _safe_div(2 * diag, cm.sum(axis=-2) + cm.sum(axis=-1))


def _present(cm: np.ndarray) -> np.ndarray:
    """Mask of classes present among labels or predictions (scikit-learn's ``unique_labels``)."""
    return (cm.sum(axis=-1) + cm.sum(axis=-2)) > 0


def macro_f1_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Unweighted mean F1 over classes present in labels or predictions."""
    present = _present(cm)
    return (f1_from_confusion(cm) * present).sum(-1) / present.sum(-1)


def weighted_f1_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Support-weighted mean F1."""
    cm = np.asarray(cm, np.float64)
    support = cm.sum(axis=-1)
    return (f1_from_confusion(cm) * support).sum(-1) / support.sum(-1)


def balanced_accuracy_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Mean recall over classes present in the labels (Brodersen et al. 2010; scikit-learn's convention)."""
    cm = np.asarray(cm, np.float64)
    has_label = cm.sum(axis=-1) > 0
    _, recall = precision_recall_from_confusion(cm)
    return (recall * has_label).sum(-1) / has_label.sum(-1)


def top_k_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per-sample: is the label among the k highest logits? (ties broken by argpartition order)."""
    top = np.argpartition(-logits, kth=k - 1, axis=1)[:, :k]
    return (top == np.asarray(labels)[:, None]).any(axis=1)


def brier_per_sample(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Multiclass Brier score per sample: sum_k (p_k - 1[y=k])^2 (Brier 1950; range [0, 2])."""
    p = softmax(logits)
    p[np.arange(len(labels)), labels] -= 1.0
    return (p**2).sum(axis=1)


def check_performance(ctx: CheckContext) -> Section:
    """Headline classification metrics with bootstrap percentile CIs, per-class table and confusion matrix."""
    cfg = ctx.config
    logits, labels = ctx.logits, ctx.labels
    n, num_classes = logits.shape
    names = ctx.dataset.class_names or [str(i) for i in range(num_classes)]
    pred = logits.argmax(axis=1)
    use_top5 = num_classes > 5
    top5 = top_k_correct(logits, labels, 5) if use_top5 else np.zeros(n, bool)

    # Table of (label, prediction, top-5 hit) counts: everything count-based derives from it.
    cells = np.bincount(
        (labels * num_classes + pred) * 2 + top5, minlength=num_classes * num_classes * 2
    ).reshape(num_classes, num_classes, 2)
    cm = cells.sum(-1)
    boot_cells = bootstrap_cell_counts(cells, cfg.n_bootstrap, spawn_seed(cfg.seed, "performance/cells"))
    boot_cm = boot_cells.sum(-1)

    metrics = {}
    count_metrics = {
        "accuracy": accuracy_from_confusion,
        "balanced_accuracy": balanced_accuracy_from_confusion,
        "macro_f1": macro_f1_from_confusion,
        "weighted_f1": weighted_f1_from_confusion,
    }
    conventions = {
        "accuracy": "fraction of argmax predictions equal to the label",
        "balanced_accuracy": "mean per-class recall over classes present in the labels",
        "macro_f1": "unweighted mean F1 over classes present in labels or predictions; 0/0 -> 0",
        "weighted_f1": "support-weighted mean F1",
    }
    for name, fn in count_metrics.items():
        metrics[name] = make_metric(
            float(fn(cm)), fn(boot_cm), n=n, config=cfg, metric_config={"definition": conventions[name]}
        )
    if use_top5:
        top5_value = cells[..., 1].sum() / n
        metrics["top5_accuracy"] = make_metric(
            top5_value, boot_cells[..., 1].sum(axis=(-2, -1)) / n, n=n, config=cfg, metric_config={"k": 5}
        )

    for name, successes in (("accuracy", int(np.trace(cm))), ("top5_accuracy", int(cells[..., 1].sum()))):
        if name in metrics:
            exact_interval_if_collapsed(metrics[name], successes, n, cfg.confidence)

    per_sample = {"nll": nll_per_sample(logits, labels), "brier": brier_per_sample(logits, labels)}
    boot = ctx.resample_weights().means(np.stack(list(per_sample.values()), axis=1))
    boot_means = {name: boot[:, i] for i, name in enumerate(per_sample)}
    metrics["nll"] = make_metric(
        per_sample["nll"].mean(), boot_means["nll"], n=n, config=cfg,
        metric_config={"definition": "mean -log softmax(logits)[label], natural log", "lower_is_better": True},
    )
    metrics["brier"] = make_metric(
        per_sample["brier"].mean(), boot_means["brier"], n=n, config=cfg,
        metric_config={"definition": "mean over samples of sum_k (p_k - 1[y=k])^2, range [0, 2]",
                       "lower_is_better": True},
    )

    precision, recall = precision_recall_from_confusion(cm)
    f1 = f1_from_confusion(cm)
    b_precision, b_recall = precision_recall_from_confusion(boot_cm)
    b_f1 = f1_from_confusion(boot_cm)
    alpha = (1 - cfg.confidence) / 2
    q = [alpha, 1 - alpha]
    support = cm.sum(axis=1)
    # A class absent from a resample has undefined recall: exclude those resamples from its interval.
    b_recall_masked = np.where(boot_cm.sum(-1) > 0, b_recall, np.nan)
    with warnings.catch_warnings():  # a class absent from every resample has an all-NaN column: NaN bounds
        warnings.simplefilter("ignore", RuntimeWarning)
        recall_lo, recall_hi = np.nanquantile(b_recall_masked, q, axis=0) if n else (recall, recall)
    prec_lo, prec_hi = np.quantile(b_precision, q, axis=0)
    f1_lo, f1_hi = np.quantile(b_f1, q, axis=0)
    per_class: list[dict[str, Any]] = [
        {
            "class": names[k],
            "index": k,
            "support": int(support[k]),
            "predicted": int(cm[:, k].sum()),
            "precision": float(precision[k]),
            "precision_ci_low": float(prec_lo[k]),
            "precision_ci_high": float(prec_hi[k]),
            "recall": float(recall[k]),
            "recall_ci_low": float(recall_lo[k]),
            "recall_ci_high": float(recall_hi[k]),
            "f1": float(f1[k]),
            "f1_ci_low": float(f1_lo[k]),
            "f1_ci_high": float(f1_hi[k]),
        }
        for k in range(num_classes)
    ]

    findings = _findings(metrics, per_class, n)
    chance = _chance_finding(metrics["accuracy"], support, names)
    if chance is not None:
        findings.insert(0, chance)
    verdict: Verdict = (
        "fail" if chance is not None else "warn" if any(f.severity != "info" for f in findings) else "pass"
    )
    acc = metrics["accuracy"]
    present = [row for row in per_class if row["support"] > 0]
    return Section(
        name="performance",
        title="Performance",
        verdict=verdict,
        summary=(
            f"Accuracy {acc.value:.4f} (95% CI {acc.ci_low:.4f}–{acc.ci_high:.4f}) on {n} samples, "
            f"macro-F1 {metrics['macro_f1'].value:.4f}."
        ),
        metrics=metrics,
        findings=findings,
        tables={"per_class": per_class, **({"confusion_matrix": [
            {"label": names[i], **{names[j]: int(cm[i, j]) for j in range(num_classes)}} for i in range(num_classes)
        ]} if num_classes <= 30 else {})},
        plots={
            "per_class": {
                "kind": "bars",
                "title": "Per-class recall and precision (95% CI)",
                "categories": [row["class"] for row in present],
                "series": [
                    {"label": "recall", "values": [r["recall"] for r in present],
                     "ci_low": [r["recall_ci_low"] for r in present],
                     "ci_high": [r["recall_ci_high"] for r in present]},
                    {"label": "precision", "values": [r["precision"] for r in present],
                     "ci_low": [r["precision_ci_low"] for r in present],
                     "ci_high": [r["precision_ci_high"] for r in present]},
                ],
                "ylabel": "score",
                "xlabel": "class",
            },
            "confusion_matrix": {
                "kind": "heatmap",
                "title": "Confusion matrix (rows: label, columns: prediction)",
                "rows": names,
                "cols": names,
                "values": cm.tolist(),
                "xlabel": "predicted",
                "ylabel": "label",
                "normalize": "row",
            },
        },
        config={"bootstrap": "exact multinomial over the (label, prediction, top-5) table for count metrics; "
                "multinomial sample weights for NLL and Brier", "n_bootstrap": cfg.n_bootstrap,
                "confidence": cfg.confidence, "seed": cfg.seed},
    )


def _chance_finding(acc: Metric, support: np.ndarray, names: list[str]) -> Finding | None:
    """A critical finding when accuracy is no better than chance: its whole CI lies at or below the accuracy of
    always predicting the most frequent label. A trained model that scores this low almost always meets its
    labels in another order than it was trained with, or inputs preprocessed differently (scale, size, channel
    order, normalization) — not a model that learned nothing."""
    n = int(support.sum())
    if n == 0 or acc.ci_high is None:
        return None
    majority = int(np.argmax(support))
    chance = float(support[majority]) / n
    if acc.ci_high > chance:
        return None
    return Finding(
        severity="critical", sets_verdict=True,
        message=(f"accuracy {acc.value:.3f} (CI {acc.ci_low:.3f}-{acc.ci_high:.3f}) is no better than chance: always "
                 f"predicting the most frequent class ({names[majority]!r}) scores {chance:.3f}. The likely cause is "
                 "the label order (the model's classes in another order than the data's: see the notes on how the "
                 "data was read, and pass --class-names in the model's output order) or preprocessing that differs "
                 "from training (scale to [0, 1], image size, channel order, normalization inside the model)"),
        evidence="performance.metrics.accuracy",
    )


def _findings(metrics: dict, per_class: list[dict], n: int) -> list[Finding]:
    findings: list[Finding] = []
    acc = metrics["accuracy"]
    if n < 100:
        findings.append(Finding(
            severity="warning",
            message=f"only {n} labelled samples: intervals are wide (accuracy CI {acc.ci_low:.3f}–{acc.ci_high:.3f}); "
            "collect more test data before trusting small differences",
            evidence="performance.metrics.accuracy",
        ))
    present = [r for r in per_class if r["support"] > 0]
    never = [r["class"] for r in present if r["predicted"] == 0]
    if never:
        findings.append(Finding(
            severity="warning",
            message=f"class(es) never predicted although present in the data: {', '.join(never[:10])}",
            evidence="performance.tables.per_class",
        ))
    weak = [r for r in present if r["recall_ci_high"] < acc.value - 0.10]
    for r in sorted(weak, key=lambda r: r["recall"])[:5]:
        findings.append(Finding(
            severity="warning",
            message=f"class {r['class']!s} is significantly weaker: recall {r['recall']:.3f} "
            f"(CI {r['recall_ci_low']:.3f}–{r['recall_ci_high']:.3f}) vs overall accuracy {acc.value:.3f}",
            evidence="performance.tables.per_class",
        ))
    if present:
        worst = min(present, key=lambda r: r["recall"])
        findings.append(Finding(
            severity="info",
            message=f"worst class by recall: {worst['class']} at {worst['recall']:.3f} "
            f"(CI {worst['recall_ci_low']:.3f}–{worst['recall_ci_high']:.3f}, support {worst['support']})",
            evidence="performance.tables.per_class",
        ))
    return findings


class PerformanceCheck(Check):
    """Accuracy, balanced accuracy, F1 (macro/weighted/per class), top-5, NLL and Brier, with CIs."""

    name = "performance"

    def run(self, ctx: CheckContext) -> Section:
        return check_performance(ctx)
