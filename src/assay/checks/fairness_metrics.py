"""Group-fairness metrics for a sensitive attribute, each with a bootstrap interval that covers.

Definitions follow fairlearn (Bird et al. 2020) and are checked against ``fairlearn.metrics`` in tests:

* selection rate of a group: P(pred = c | group); demographic parity difference = max - min over groups,
  ratio = min / max;
* equal opportunity difference: max - min of the true-positive rate P(pred = c | true = c, group);
* equalized odds difference: the larger of the TPR and FPR differences (fairlearn's ``worst_case``);
* error rate of a group: P(pred != true | group).

Binary labels: the positive class is ``pos_label`` (default: the larger label), as fairlearn.
Multiclass: each class one-vs-rest, and the worst class (largest difference, smallest ratio).

Everything derives from the (group x true x predicted) contingency table, so the bootstrap is exact and
cheap: resampling rows with replacement is a multinomial draw over the table's non-empty cells. The
numbers are computed here rather than by calling fairlearn per resample (1,000 calls would cost
seconds); a group/class where a rate is undefined (no positives) is skipped, as a NaN.

The four summary metrics are maxima of absolute differences of group rates (a ratio min / max is
``exp(-max |log r_g - log r_h|)``), and the worst class is one more maximum. Their plug-in values are
biased upward where rates tie or differences vanish and their bootstrap is inconsistent there, so a
percentile or bias-corrected interval can exclude the truth (a DP difference of 0.075 got [0.057, 0.076]
with 96 % of resamples above it). Their intervals are the union of simultaneous max-|t| bootstrap intervals
on every pairwise difference (``stats.bootstrap.rate_spread_intervals``): coverage at least the nominal
simultaneous one by construction, checked by simulation in ``tests/test_fairness_coverage.py``. Per-group
rates (one proportion each) keep the BC percentile interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType

import numpy as np
import scipy.sparse as sp

from assay.errors import UserError
from assay.stats.bootstrap import SpreadIntervals, bias_corrected_ci, bootstrap_cell_counts, rate_spread_intervals

__all__ = ["INTERVAL_METHOD", "Estimate", "FairnessResult", "fairness_metrics"]

# How the summary metrics' intervals are made (the Section's ``method`` text starts with it).
INTERVAL_METHOD = "union of simultaneous max-|t| bootstrap intervals on the pairwise group differences"

SUMMARY_METRICS = (
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equal_opportunity_difference",
)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap interval (see the module docstring for which)."""

    value: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class FairnessResult:
    """``summary``: the four metrics (positive class if binary, worst class if multiclass);
    ``per_class``: class label -> the four metrics (one entry if binary);
    ``per_group``: group label -> ``n``, ``error_rate`` and ``selection_rate[<class>]``."""

    groups: list[str]
    classes: list[str]
    binary: bool
    summary: dict[str, Estimate]
    per_class: dict[str, dict[str, Estimate]]
    per_group: dict[str, dict[str, Estimate | int]] = field(default_factory=dict)


def _rates(counts: np.ndarray, cells: np.ndarray, n_groups: int, n_classes: int,
           ) -> dict[str, np.ndarray]:
    """Rates from cell counts of shape (b, n_cells); cells rows are (group, true, pred) codes.

    Returns arrays of shape (b, n_groups, n_classes) (``error`` and ``size`` are (b, n_groups)), with the
    rates' denominators: ``size`` (selection), ``positives`` (TPR) and ``negatives`` (FPR).
    """
    g, t, p = cells[:, 0], cells[:, 1], cells[:, 2]
    n_cells = len(cells)
    cols = np.arange(n_cells)

    def summed(rows: np.ndarray, mask: np.ndarray, n_rows: int) -> np.ndarray:
        ind = sp.csr_matrix((np.ones(mask.sum()), (rows[mask], cols[mask])), shape=(n_rows, n_cells))
        return np.asarray((ind @ counts.T).T)

    every = np.ones(n_cells, dtype=bool)
    size = summed(g, every, n_groups)                                            # (b, G)
    true_pos = summed(g * n_classes + t, t == p, n_groups * n_classes)           # (b, G*K)
    positives = summed(g * n_classes + t, every, n_groups * n_classes)
    selected = summed(g * n_classes + p, every, n_groups * n_classes)
    shape = (counts.shape[0], n_groups, n_classes)
    true_pos, positives, selected = (a.reshape(shape) for a in (true_pos, positives, selected))
    n_g = size[:, :, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "selection": np.where(n_g > 0, selected / n_g, np.nan),
            "tpr": np.where(positives > 0, true_pos / positives, np.nan),
            "fpr": np.where(n_g - positives > 0, (selected - true_pos) / (n_g - positives), np.nan),
            "error": np.where(size > 0, 1.0 - true_pos.sum(axis=2) / size, np.nan),
            "size": size, "positives": positives, "negatives": n_g - positives,
        }


def _spread(rate: np.ndarray) -> np.ndarray:
    """max - min over groups (axis 1), NaN groups skipped; NaN if fewer than one defined group."""
    with np.errstate(invalid="ignore"), _NanWarningsSilenced():
        return np.nanmax(rate, axis=1) - np.nanmin(rate, axis=1)


def _ratio(rate: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"), _NanWarningsSilenced():
        high = np.nanmax(rate, axis=1)
        return np.where(high > 0, np.nanmin(rate, axis=1) / high, np.nan)


class _NanWarningsSilenced:
    """Silence numpy's "All-NaN slice" warnings: an undefined rate is reported as NaN on purpose."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._ctx.__exit__(exc_type, exc, tb)


def _class_metrics(r: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The four metrics per class, shape (b, K)."""
    tpr_gap = _spread(r["tpr"])
    with _NanWarningsSilenced():
        eodds = np.fmax(tpr_gap, _spread(r["fpr"]))
    return {
        "demographic_parity_difference": _spread(r["selection"]),
        "demographic_parity_ratio": _ratio(r["selection"]),
        "equalized_odds_difference": eodds,
        "equal_opportunity_difference": tpr_gap,
    }


def _summary_intervals(observed: dict[str, np.ndarray], resampled: dict[str, np.ndarray],
                       report_classes: list[int], confidence: float) -> dict[str, SpreadIntervals]:
    """Intervals of the four summary metrics per reported class (rows) and for the worst class.

    Each is a spread of group rates (TPR and FPR pooled for equalized odds; log selection rates for the
    ratio, whose interval is mapped back through ``exp(-x)``)."""
    k = np.asarray(report_classes)

    def rows(rate: str, trials: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # (classes, groups) observed, (b, classes, groups) resampled, (classes, groups) denominators
        count = observed[trials][0]
        count = count[:, k].T if count.ndim == 2 else np.broadcast_to(count[None, :], (len(k), count.shape[0]))
        return observed[rate][0][:, k].T, resampled[rate][:, :, k].transpose(0, 2, 1), count

    sel, tpr, fpr = rows("selection", "size"), rows("tpr", "positives"), rows("fpr", "negatives")
    pooled = (np.stack([tpr[0], fpr[0]], axis=-2), np.stack([tpr[1], fpr[1]], axis=-2),
              np.stack([tpr[2], fpr[2]], axis=-2))
    log_spread = rate_spread_intervals(*sel, confidence, log=True)
    return {
        "demographic_parity_difference": rate_spread_intervals(*sel, confidence),
        # ratio = exp(-spread of log rates): the bounds swap
        "demographic_parity_ratio": SpreadIntervals(
            low=np.exp(-log_spread.high), high=np.exp(-log_spread.low),
            worst_low=float(np.exp(-log_spread.worst_high)), worst_high=float(np.exp(-log_spread.worst_low))),
        "equalized_odds_difference": rate_spread_intervals(*pooled, confidence),
        "equal_opportunity_difference": rate_spread_intervals(*tpr, confidence),
    }


def fairness_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    sensitive: np.ndarray,
    *,
    seed: int | np.random.SeedSequence = 0,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    pos_label: object | None = None,
    num_classes: int | None = None,
) -> FairnessResult:
    """Demographic parity (difference, ratio), equalized odds and equal opportunity differences,
    per-group selection and error rates, each with a bootstrap CI over rows (see the module docstring).

    ``num_classes`` (the model's class count, labels being 0..C-1) decides binary vs multiclass; without it
    the classes occurring in labels and predictions decide (so a 10-class model whose data shows two classes
    would be scored as binary)."""
    y_true, y_pred, sensitive = (np.asarray(a) for a in (y_true, y_pred, sensitive))
    if not (y_true.ndim == y_pred.ndim == sensitive.ndim == 1 and
            y_true.shape == y_pred.shape == sensitive.shape):
        raise UserError(
            f"labels, predictions and sensitive values differ in shape "
            f"({y_true.shape}, {y_pred.shape}, {sensitive.shape})",
            where="fairness", fix="give one sensitive value per evaluated sample")
    group_names, g = np.unique(sensitive.astype(str), return_inverse=True)
    if len(group_names) < 2:
        found = f"'{group_names[0]}'" if len(group_names) else "none"
        raise UserError(
            f"the sensitive column has a single group ({found}); fairness compares at least two",
            where="fairness (--sensitive)", fix="choose a column with two or more distinct values")
    if num_classes is not None:
        classes = np.arange(num_classes)
        codes = np.concatenate([y_true, y_pred]).astype(np.int64)
    else:
        classes, codes = np.unique(np.concatenate([y_true, y_pred]), return_inverse=True)
    t, p = codes[: len(y_true)], codes[len(y_true):]
    n_groups, n_classes = len(group_names), max(len(classes), 2)
    binary = len(classes) <= 2
    if binary:
        if pos_label is None:
            positive = len(classes) - 1
        else:
            hits = np.flatnonzero(classes == pos_label)
            if hits.size == 0:
                raise UserError(f"pos_label {pos_label!r} is not among the labels {classes.tolist()}",
                                where="fairness", fix="pass one of the labels as pos_label")
            positive = int(hits[0])
        report_classes = [positive]
    else:
        report_classes = list(range(n_classes))

    # Non-empty cells of the (group, true, pred) table and their counts.
    flat = (g * n_classes + t) * n_classes + p
    cell_ids, cell_counts = np.unique(flat, return_counts=True)
    cells = np.stack([cell_ids // (n_classes * n_classes), (cell_ids // n_classes) % n_classes,
                      cell_ids % n_classes], axis=1)
    observed = _rates(cell_counts[None, :].astype(np.float64), cells, n_groups, n_classes)
    resampled = _rates(bootstrap_cell_counts(cell_counts, n_bootstrap, seed).astype(np.float64),
                       cells, n_groups, n_classes)
    point = _class_metrics(observed)
    intervals = _summary_intervals(observed, resampled, report_classes, confidence)

    def estimate(value: float, samples: np.ndarray) -> Estimate:
        # One group's rate, a single proportion: bias-corrected percentile interval.
        lo, hi = bias_corrected_ci(samples, float(value), confidence)
        return Estimate(float(value), lo, hi)

    def spread(value: float, interval: tuple[float, float]) -> Estimate:
        # The ratio's interval floors zero rates at 0.5 / n: widen it to the estimate where that matters.
        lo, hi = interval
        if np.isfinite(value) and np.isfinite(lo):
            lo, hi = min(lo, value), max(hi, value)
        return Estimate(float(value), float(lo), float(hi))

    names = [str(c) for c in classes]
    per_class = {names[k]: {m: spread(point[m][0, k], (intervals[m].low[row], intervals[m].high[row]))
                            for m in SUMMARY_METRICS}
                 for row, k in enumerate(report_classes)}
    if binary:
        summary = per_class[names[report_classes[0]]]
    else:
        summary = {}
        with _NanWarningsSilenced():
            for m in SUMMARY_METRICS:
                worst = np.nanmin if m.endswith("ratio") else np.nanmax
                summary[m] = spread(worst(point[m][0]), (intervals[m].worst_low, intervals[m].worst_high))
    sizes = np.bincount(g, minlength=n_groups)
    per_group: dict[str, dict[str, Estimate | int]] = {}
    for j, name in enumerate(group_names):
        row: dict[str, Estimate | int] = {
            "n": int(sizes[j]),
            "error_rate": estimate(observed["error"][0, j], resampled["error"][:, j]),
        }
        for k in report_classes:
            row[f"selection_rate[{names[k]}]"] = estimate(
                observed["selection"][0, j, k], resampled["selection"][:, j, k])
        per_group[str(name)] = row
    return FairnessResult(groups=[str(x) for x in group_names], classes=[names[k] for k in report_classes],
                          binary=binary, summary=summary, per_class=per_class, per_group=per_group)
