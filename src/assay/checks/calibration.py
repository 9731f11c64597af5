"""Calibration: does the model's confidence match how often it is right?

Every binned metric here is a function of per-bin sufficient statistics — count, sum of confidence,
sum of correctness (:class:`BinStats`). The statistics come from ``stats.bootstrap.GroupSums``
with per-sample weights: ``weights=None`` (all ones) gives the point estimate, a ``(b, n)`` chunk of
bootstrap multiplicities gives ``b`` resampled values, through the same code. Bin edges are computed
once on the evaluation set and held fixed across resamples.

Conventions (see docs/metrics_calibration.md):

* top-label: confidence = max_k p_k, correct = [argmax_k p_k == y] (Guo et al. 2017);
* equal-width bins are left-closed ``[lo, hi)``, the last ``[lo, 1]`` (``np.histogram``; netcal, and
  torchmetrics except that it puts confidence exactly 1.0 in an extra bin of its own);
* equal-mass bins follow Kumar et al. (2019)'s ``get_equal_bins`` and are right-closed ``(lo, hi]``.

Temperature scaling (Guo et al. 2017) is :class:`TemperatureScaler` (scikit-learn estimator contract).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from assay.checks.base import CheckContext, make_metric
from assay.errors import UserError
from assay.evidence.schema import Finding, Metric, Section, Verdict
from assay.stats.binning import Closed, assign_bins, equal_mass_edges, equal_width_edges
from assay.stats.bootstrap import GroupSums, bootstrap_weights, percentile_ci, spawn_seed
from assay.stats.probabilities import nll_per_sample, softmax

__all__ = [
    "BinStats",
    "ClasswiseBins",
    "TemperatureScaler",
    "TopLabelBins",
    "bin_stats",
    "check_calibration",
    "classwise_bin_stats",
    "classwise_ece",
    "confidence_histogram",
    "debiased_ce_from_stats",
    "ece",
    "ece_adaptive",
    "ece_debiased",
    "ece_from_stats",
    "mce",
    "mce_from_stats",
    "reliability_bins",
    "reliability_from_stats",
    "stratified_split",
    "top_label",
]

DEFAULT_BINS = 15
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

_EQUAL_WIDTH = "equal-width; left-closed [lo, hi), last bin [lo, 1] (np.histogram, netcal)"
_EQUAL_MASS = (
    "equal-mass; inner edges halfway between consecutive parts of the sorted top-label confidences of "
    "the evaluation set (Kumar et al. 2019, get_equal_bins); right-closed (lo, hi], first bin [0, hi]; "
    "edges fixed during the bootstrap"
)


# --------------------------------------------------------------------------------------------------
# Sufficient statistics
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BinStats:
    """Per-bin sufficient statistics, arrays of shape ``(..., n_bins)``; leading axes are resamples
    (and classes, for classwise statistics). ``edges`` has ``n_bins + 1`` entries."""

    edges: np.ndarray
    count: np.ndarray
    sum_confidence: np.ndarray
    sum_correct: np.ndarray

    @property
    def total(self) -> np.ndarray:
        """Number of (weighted) samples, shape ``(...)``."""
        return self.count.sum(axis=-1)


def _ones_if_none(weights: np.ndarray | None, n: int) -> tuple[np.ndarray, bool]:
    if weights is None:
        return np.ones((1, n)), True
    weights = np.asarray(weights)
    if weights.dtype != np.float32:  # float32 multiplicities are kept (exact integers, half the memory)
        weights = weights.astype(np.float64, copy=False)
    if weights.ndim != 2 or weights.shape[1] != n:
        raise ValueError(f"weights must have shape (resamples, {n}), got {weights.shape}")
    return weights, False


class TopLabelBins:
    """Count, sum of confidence and sum of correctness per bin, for any per-sample weights.

    The (sample -> bin) design is built once: the bootstrap then costs one product per array of
    multiplicities. ``TopLabelBins(...)(None)`` counts every sample once (shape ``(n_bins,)``); a
    ``(b, n)`` array of multiplicities gives shape ``(b, n_bins)``.
    """

    def __init__(self, confidence: np.ndarray, correct: np.ndarray, edges: np.ndarray, closed: Closed = "left") -> None:
        confidence = np.asarray(confidence, dtype=np.float64)
        correct = np.asarray(correct, dtype=np.float64)
        n = confidence.shape[0]
        self.n, self.n_bins, self.edges = n, len(edges) - 1, np.asarray(edges, np.float64)
        index = assign_bins(confidence, edges, closed)
        samples = np.tile(np.arange(n), 3)
        groups = np.concatenate([index, index + self.n_bins, index + 2 * self.n_bins])
        values = np.concatenate([np.ones(n), confidence, correct])
        self._sums = GroupSums(samples, groups, 3 * self.n_bins, n, values)

    def __call__(self, weights: np.ndarray | None = None) -> BinStats:
        w, squeeze = _ones_if_none(weights, self.n)
        sums = self._sums(w).reshape(-1, 3, self.n_bins)
        if squeeze:
            sums = sums[0]
        return BinStats(self.edges, sums[..., 0, :], sums[..., 1, :], sums[..., 2, :])


def bin_stats(
    confidence: np.ndarray,
    correct: np.ndarray,
    edges: np.ndarray,
    *,
    closed: Closed = "left",
    weights: np.ndarray | None = None,
) -> BinStats:
    """Count, sum of confidence and sum of correctness per bin (one weighted pass; see :class:`TopLabelBins`,
    which keeps the design for repeated calls)."""
    return TopLabelBins(confidence, correct, edges, closed)(weights)


class ClasswiseBins:
    """Per-class, per-bin statistics of p_k against 1[y = k], shape ``(..., C, n_bins)``; left-closed bins;
    for any per-sample weights, with the design built once (as :class:`TopLabelBins`).

    Most p_k fall in the first bin, so only entries outside it are summed sparsely; the first bin's
    count and confidence sum are the complement of the per-class totals (a dense ``weights @ p``).
    """

    def __init__(self, probabilities: np.ndarray, labels: np.ndarray, edges: np.ndarray) -> None:
        probabilities = np.asarray(probabilities, dtype=np.float64)
        labels = np.asarray(labels, dtype=np.int64)
        n, num_classes = probabilities.shape
        n_bins = len(edges) - 1
        self.n, self.shape, self.edges = n, (num_classes, n_bins), np.asarray(edges, np.float64)
        # Entries outside the first bin [0, edges[1]): found by one comparison, binned by search.
        rows, cols = np.nonzero(probabilities >= edges[1])
        index = assign_bins(probabilities[rows, cols], edges, "left")
        outside = index > 0  # all of them unless there is a single bin
        rows, cols, index = rows[outside], cols[outside], index[outside]
        cell = cols * n_bins + index
        label_cell = labels * n_bins + assign_bins(probabilities[np.arange(n), labels], edges, "left")
        cells = num_classes * n_bins
        samples = np.concatenate([rows, rows, np.arange(n)])
        groups = np.concatenate([cell, cell + cells, label_cell + 2 * cells])
        values = np.concatenate([np.ones(rows.size), probabilities[rows, cols], np.ones(n)])
        self._sums = GroupSums(samples, groups, 3 * cells, n, values)
        self._probabilities = {np.dtype(np.float64): probabilities}

    def _totals(self, w: np.ndarray) -> np.ndarray:
        """``w @ p``: per-class sums of p_k (in the weights' dtype, as the sparse sums)."""
        if w.dtype not in self._probabilities:
            self._probabilities[w.dtype] = self._probabilities[np.dtype(np.float64)].astype(w.dtype)
        return w @ self._probabilities[w.dtype]

    def __call__(self, weights: np.ndarray | None = None) -> BinStats:
        w, squeeze = _ones_if_none(weights, self.n)
        sums = self._sums(w).reshape(-1, 3, *self.shape)
        count, sum_conf, sum_correct = sums[:, 0], sums[:, 1], sums[:, 2]
        count[..., 0] = w.sum(axis=1)[:, None] - count[..., 1:].sum(axis=-1)
        sum_conf[..., 0] = self._totals(w) - sum_conf[..., 1:].sum(axis=-1)
        if squeeze:
            count, sum_conf, sum_correct = count[0], sum_conf[0], sum_correct[0]
        return BinStats(self.edges, count, sum_conf, sum_correct)


def classwise_bin_stats(
    probabilities: np.ndarray, labels: np.ndarray, edges: np.ndarray, *, weights: np.ndarray | None = None
) -> BinStats:
    """Per-class, per-bin statistics of p_k against 1[y = k] (see :class:`ClasswiseBins`)."""
    return ClasswiseBins(probabilities, labels, edges)(weights)


# --------------------------------------------------------------------------------------------------
# Metrics from statistics
# --------------------------------------------------------------------------------------------------


def _bin_means(stats: BinStats) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(non-empty mask, mean confidence, accuracy) per bin; means are 0 in empty bins."""
    filled = stats.count > 0
    safe = np.where(filled, stats.count, 1.0)
    return filled, np.where(filled, stats.sum_confidence / safe, 0.0), np.where(filled, stats.sum_correct / safe, 0.0)


def ece_from_stats(stats: BinStats) -> np.ndarray:
    """L1 calibration error weighted by bin mass: sum_b (n_b / n) |acc_b - conf_b| (Guo et al. 2017).

    Written as sum_b |sum of correctness_b - sum of confidence_b| / n, which needs no division per bin.
    """
    return np.abs(stats.sum_correct - stats.sum_confidence).sum(axis=-1) / stats.total


def mce_from_stats(stats: BinStats) -> np.ndarray:
    """Maximum calibration error: max over non-empty bins of |acc_b - conf_b| (Naeini et al. 2015)."""
    filled, conf, acc = _bin_means(stats)
    return np.where(filled, np.abs(acc - conf), 0.0).max(axis=-1)


def debiased_ce_from_stats(stats: BinStats) -> np.ndarray:
    """Debiased L2 calibration error of Kumar, Liang & Ma (2019), "Verified Uncertainty Calibration".

    sqrt(max(0, sum_b (n_b / n) [(conf_b - acc_b)^2 - acc_b (1 - acc_b) / (n_b - 1)])), where bins with
    n_b < 2 contribute 0 — exactly ``calibration.utils.unbiased_l2_ce`` of their library. The subtracted
    term is the binomial sampling variance of acc_b, which the plug-in (conf_b - acc_b)^2 overstates by.
    """
    filled, conf, acc = _bin_means(stats)
    enough = stats.count >= 2
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = np.where(enough, acc * (1.0 - acc) / np.where(enough, stats.count - 1.0, 1.0), 0.0)
    per_bin = np.where(enough, (conf - acc) ** 2 - variance, 0.0)
    squared = (stats.count / stats.total[..., None] * per_bin).sum(axis=-1)
    return np.sqrt(np.maximum(squared, 0.0))


def reliability_from_stats(stats: BinStats) -> list[dict[str, Any]]:
    """Reliability diagram rows: lower, upper, count, mean_confidence, accuracy (None when the bin is empty)."""
    if stats.count.ndim != 1:
        raise ValueError("reliability_from_stats needs the statistics of one sample (no resample axis)")
    filled, conf, acc = _bin_means(stats)
    return [
        {
            "lower": float(stats.edges[b]),
            "upper": float(stats.edges[b + 1]),
            "count": int(round(stats.count[b])),
            "mean_confidence": float(conf[b]) if filled[b] else None,
            "accuracy": float(acc[b]) if filled[b] else None,
        }
        for b in range(stats.count.shape[0])
    ]


# --------------------------------------------------------------------------------------------------
# Metrics over arrays (probabilities (N, C), labels (N,))
# --------------------------------------------------------------------------------------------------


def _validated_labels(labels: np.ndarray, n: int, num_classes: int, where: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise UserError(f"expected {n} labels, got shape {labels.shape}", where=where,
                        fix="pass one integer label per row")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= num_classes:
        raise UserError(f"labels must be integers in [0, {num_classes - 1}]", where=where,
                        fix="store class indices 0..C-1, not names or one-hot rows")
    return labels.astype(np.int64)


def _validated(probabilities: np.ndarray, labels: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[0] == 0:
        raise UserError(f"expected probabilities of shape (N, C) with N > 0, got {probabilities.shape}", where=where,
                        fix="pass softmax outputs, one row per sample")
    if not np.isfinite(probabilities).all():
        raise UserError("probabilities contain NaN or infinite values", where=where,
                        fix="check the model outputs; pass softmax probabilities")
    return probabilities, _validated_labels(labels, *probabilities.shape, where)


def _scalar(values: np.ndarray, weights: np.ndarray | None) -> float | np.ndarray:
    return float(values) if weights is None else values


def top_label(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-label confidence max_k p_k and correctness [argmax_k p_k == y] as float64 (ties: first class)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(predicted)), predicted]
    return confidence, (predicted == np.asarray(labels)).astype(np.float64)


def ece(
    probabilities: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_BINS, *, weights: np.ndarray | None = None
) -> float | np.ndarray:
    """Expected calibration error (Guo et al. 2017): top-label, ``n_bins`` equal-width bins, L1, bin-mass weights.

    Bins are ``[lo, hi)`` with the last ``[lo, 1]`` — identical to ``netcal.metrics.ECE(bins=n_bins)``.
    ``weights``: optional ``(b, n)`` bootstrap multiplicities; then an array of ``b`` values is returned.
    """
    probabilities, labels = _validated(probabilities, labels, "ece")
    conf, correct = top_label(probabilities, labels)
    return _scalar(ece_from_stats(bin_stats(conf, correct, equal_width_edges(n_bins), weights=weights)), weights)


def ece_adaptive(
    probabilities: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_BINS, *, weights: np.ndarray | None = None
) -> float | np.ndarray:
    """ECE over equal-mass bins (adaptive binning, Nixon et al. 2019): top-label, L1, bin-mass weights.

    Edges come from the (unweighted) confidences passed in — Kumar et al.'s ``get_equal_bins`` — so with
    ``weights`` the bins stay those of the evaluation set. Equals ``calibration.get_ece_em``.
    """
    probabilities, labels = _validated(probabilities, labels, "ece_adaptive")
    conf, correct = top_label(probabilities, labels)
    edges = equal_mass_edges(conf, n_bins)
    return _scalar(ece_from_stats(bin_stats(conf, correct, edges, closed="right", weights=weights)), weights)


def mce(
    probabilities: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_BINS, *, weights: np.ndarray | None = None
) -> float | np.ndarray:
    """Maximum calibration error (Naeini et al. 2015): max over non-empty equal-width bins of |acc - conf|."""
    probabilities, labels = _validated(probabilities, labels, "mce")
    conf, correct = top_label(probabilities, labels)
    return _scalar(mce_from_stats(bin_stats(conf, correct, equal_width_edges(n_bins), weights=weights)), weights)


def classwise_ece(
    probabilities: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_BINS, *, weights: np.ndarray | None = None
) -> float | np.ndarray:
    """Classwise ECE (Kull et al. 2019; "static calibration error", Nixon et al. 2019).

    Mean over all C classes of the equal-width, L1, bin-mass-weighted ECE of p_k against 1[y = k].
    """
    probabilities, labels = _validated(probabilities, labels, "classwise_ece")
    stats = classwise_bin_stats(probabilities, labels, equal_width_edges(n_bins), weights=weights)
    return _scalar(ece_from_stats(stats).mean(axis=-1), weights)


def ece_debiased(
    probabilities: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_BINS, *, weights: np.ndarray | None = None
) -> float | np.ndarray:
    """Debiased top-label L2 calibration error of Kumar, Liang & Ma (2019) over ``n_bins`` equal-mass bins.

    Equals ``calibration.lower_bound_scaling_ce(p, y, p=2, debias=True, num_bins=n_bins, mode='top-label')``
    (their default estimator for continuous confidences); see :func:`debiased_ce_from_stats`.
    """
    probabilities, labels = _validated(probabilities, labels, "ece_debiased")
    conf, correct = top_label(probabilities, labels)
    edges = equal_mass_edges(conf, n_bins)
    return _scalar(debiased_ce_from_stats(bin_stats(conf, correct, edges, closed="right", weights=weights)), weights)


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_BINS) -> list[dict[str, Any]]:
    """Reliability diagram data (DeGroot & Fienberg 1983; Guo et al. 2017) over the equal-width ECE bins."""
    probabilities, labels = _validated(probabilities, labels, "reliability_bins")
    conf, correct = top_label(probabilities, labels)
    return reliability_from_stats(bin_stats(conf, correct, equal_width_edges(n_bins)))


def confidence_histogram(
    confidence: np.ndarray, correct: np.ndarray, edges: np.ndarray
) -> tuple[list[int], list[int]]:
    """Counts of correct and of incorrect predictions per confidence bin (same bins as the ECE)."""
    index = assign_bins(confidence, edges, "left")
    n_bins = len(edges) - 1
    right = np.asarray(correct, dtype=bool)
    return (np.bincount(index[right], minlength=n_bins).tolist(), np.bincount(index[~right], minlength=n_bins).tolist())


# --------------------------------------------------------------------------------------------------
# Temperature scaling
# --------------------------------------------------------------------------------------------------


def _bounded_minimum(func: Callable[[float], float], lower: float, upper: float, xatol: float,
                     max_evaluations: int = 500) -> tuple[float, float]:
    """(x, func(x)) minimizing ``func`` on [lower, upper]: Brent's (1973) bounded method, golden-section
    steps with parabolic interpolation.

    A line-by-line port of scipy's ``minimize_scalar(method="bounded")`` (``_minimize_scalar_bounded``,
    BSD-3; the same operations, so the same iterates and result): it spares every evaluation the import
    of scipy.optimize (~0.2 s and ~28 MiB per process). Tested against scipy.
    """
    sqrt_eps = math.sqrt(2.2e-16)
    golden_mean = 0.5 * (3.0 - math.sqrt(5.0))
    a, b = float(lower), float(upper)
    fulc = a + golden_mean * (b - a)
    nfc, xf = fulc, fulc
    rat = e = 0.0
    fx = float(func(xf))
    evaluations = 1
    ffulc = fnfc = fx
    xm = 0.5 * (a + b)
    tol1 = sqrt_eps * abs(xf) + xatol / 3.0
    tol2 = 2.0 * tol1
    while abs(xf - xm) > (tol2 - 0.5 * (b - a)):
        golden = True
        if abs(e) > tol1:  # try a parabolic fit through the three best points
            golden = False
            r = (xf - nfc) * (fx - ffulc)
            q = (xf - fulc) * (fx - fnfc)
            p = (xf - fulc) * q - (xf - nfc) * r
            q = 2.0 * (q - r)
            if q > 0.0:
                p = -p
            q = abs(q)
            r, e = e, rat
            if abs(p) < abs(0.5 * q * r) and q * (a - xf) < p < q * (b - xf):
                rat = (p + 0.0) / q
                x = xf + rat
                if (x - a) < tol2 or (b - x) < tol2:
                    rat = tol1 * (_sign(xm - xf) + ((xm - xf) == 0))
            else:
                golden = True
        if golden:
            e = (a - xf) if xf >= xm else (b - xf)
            rat = golden_mean * e
        x = xf + (_sign(rat) + (rat == 0)) * max(abs(rat), tol1)
        fu = float(func(x))
        evaluations += 1
        if fu <= fx:
            if x >= xf:
                a = xf
            else:
                b = xf
            fulc, ffulc = nfc, fnfc
            nfc, fnfc = xf, fx
            xf, fx = x, fu
        else:
            if x < xf:
                a = x
            else:
                b = x
            if fu <= fnfc or nfc == xf:
                fulc, ffulc = nfc, fnfc
                nfc, fnfc = x, fu
            elif fu <= ffulc or fulc == xf or fulc == nfc:
                fulc, ffulc = x, fu
        xm = 0.5 * (a + b)
        tol1 = sqrt_eps * abs(xf) + xatol / 3.0
        tol2 = 2.0 * tol1
        if evaluations >= max_evaluations:
            break
    return float(xf), float(fx)


def _sign(value: float) -> float:
    return float(int(value > 0) - int(value < 0))


class TemperatureScaler:
    """Temperature scaling (Guo et al. 2017): p = softmax(z / T) with the one T > 0 that minimizes NLL.

    Follows the scikit-learn estimator contract: ``__init__`` stores the search range; ``fit`` learns
    ``temperature_`` (and ``nll_``, ``n_samples_``, ``at_bound_``) and returns ``self``. The NLL is
    minimized over log T: a coarse grid over the range brackets the minimum, bounded Brent refines it
    (NLL is convex in 1/T, hence unimodal in log T). Scaling never changes the argmax, so accuracy is kept.
    """

    def __init__(self, min_temperature: float = 0.01, max_temperature: float = 100.0, xatol: float = 1e-5) -> None:
        self.min_temperature = min_temperature
        self.max_temperature = max_temperature
        self.xatol = xatol

    def fit(self, logits: np.ndarray, labels: np.ndarray) -> TemperatureScaler:
        """Find the NLL-minimizing temperature on (logits (N, C), labels (N,))."""
        if not 0.0 < self.min_temperature < self.max_temperature:
            raise UserError(
                f"need 0 < min_temperature < max_temperature, got {self.min_temperature} and {self.max_temperature}",
                where="TemperatureScaler", fix="choose a positive range such as (0.01, 100)",
            )
        logits = _validated_logits(logits, labels, "TemperatureScaler.fit")
        labels = np.asarray(labels, dtype=np.int64)
        # NLL_i(T) = log(1 + sum_{k != m} exp(d_ik / T)) - d_iy / T with d = z - max_k z and m the argmax
        # (T > 0 keeps the max in place): no exponent is positive, so nothing overflows, and log1p keeps
        # the NLL of confident correct predictions from rounding to 0 as T shrinks.
        rows = np.arange(len(labels))
        top = logits.argmax(axis=1)
        shifted = logits - logits[rows, top][:, None]
        label_shifted = shifted[rows, labels]

        others = np.empty_like(shifted)  # reused by every evaluation

        def mean_nll(log_t: float) -> float:
            inverse = np.exp(-log_t)
            np.multiply(shifted, inverse, out=others)
            np.exp(others, out=others)
            others[rows, top] = 0.0
            return float(np.mean(np.log1p(others.sum(axis=1)) - label_shifted * inverse))

        lo, hi = np.log(self.min_temperature), np.log(self.max_temperature)
        grid = np.linspace(lo, hi, 13)
        grid_nll = np.array([mean_nll(t) for t in grid])
        j = int(np.argmin(grid_nll))
        x, fx = _bounded_minimum(mean_nll, grid[max(j - 1, 0)], grid[min(j + 1, grid.size - 1)], self.xatol)
        best, best_nll = (x, fx) if fx <= grid_nll[j] else (grid[j], grid_nll[j])
        self.temperature_ = float(np.exp(best))
        self.nll_ = best_nll
        self.n_samples_ = int(len(labels))
        self.at_bound_ = bool(min(best - lo, hi - best) < 1e-3)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "temperature_"):
            from sklearn.exceptions import NotFittedError  # deferred: importing scikit-learn takes ~0.7 s

            raise NotFittedError("this TemperatureScaler is not fitted yet; call fit(logits, labels) first")

    def transform(self, logits: np.ndarray) -> np.ndarray:
        """Scaled logits z / T (float64)."""
        self._check_fitted()
        return np.asarray(logits, dtype=np.float64) / self.temperature_

    def predict_proba(self, logits: np.ndarray) -> np.ndarray:
        """softmax(z / T), computed stably."""
        return softmax(self.transform(logits))


def _validated_logits(logits: np.ndarray, labels: np.ndarray, where: str) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise UserError(f"expected logits of shape (N, C) with N > 0, got {logits.shape}", where=where,
                        fix="pass one row of logits per sample")
    if not np.isfinite(logits).all():
        bad = np.flatnonzero(~np.isfinite(logits).all(axis=1))
        raise UserError(
            f"{bad.size} row(s) of logits contain NaN or infinite values (first at rows {bad[:5].tolist()})",
            where=where, fix="check the model for numerical overflow (e.g. fp16) on these inputs",
        )
    _validated_labels(labels, *logits.shape, where)
    return logits


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int | np.random.SeedSequence
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Seeded split into (held-out part of about ``fraction``, rest, stratified?) index arrays, both sorted.

    Stratified by label when every class present has at least two samples (each class then puts
    round(fraction * n_k), clipped to [1, n_k - 1], in the held-out part); otherwise a plain random split.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.size
    if n < 2:
        raise ValueError("a split needs at least two samples")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() >= 2:
        grouped = order[np.argsort(labels[order], kind="stable")]  # grouped by class, random within class
        starts = np.searchsorted(labels[grouped], classes)
        rank = np.arange(n) - np.repeat(starts, counts)
        quota = np.clip(np.rint(fraction * counts), 1, counts - 1)
        held = rank < np.repeat(quota, counts)
        return np.sort(grouped[held]), np.sort(grouped[~held]), True
    k = int(np.clip(round(fraction * n), 1, n - 1))
    return np.sort(order[:k]), np.sort(order[k:]), False


# --------------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------------


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
    logits = _validated_logits(ctx.logits, ctx.labels, "calibration check (evaluation logits)")
    labels = np.asarray(ctx.labels, dtype=np.int64)
    n, num_classes = logits.shape
    probabilities = softmax(logits)
    confidence, correct = top_label(probabilities, labels)
    width_edges = equal_width_edges(n_bins)
    mass_edges = equal_mass_edges(confidence, n_bins)
    bootstrap_classwise = n * num_classes <= CLASSWISE_BOOTSTRAP_MAX_CELLS

    width_bins = TopLabelBins(confidence, correct, width_edges)
    mass_bins = TopLabelBins(confidence, correct, mass_edges, closed="right")
    classwise_bins = ClasswiseBins(probabilities, labels, width_edges)

    def classwise(weights: np.ndarray) -> np.ndarray:
        return ece_from_stats(classwise_bins(weights)).mean(axis=-1)

    def evaluation_statistics(weights: np.ndarray) -> dict[str, np.ndarray]:
        width = width_bins(weights)
        mass = mass_bins(weights)
        out = {
            "ece": ece_from_stats(width),
            "mce": mce_from_stats(width),
            "ece_adaptive": ece_from_stats(mass),
            "ece_debiased": debiased_ce_from_stats(mass),
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
    correct_counts, incorrect_counts = confidence_histogram(confidence, correct, width_edges)
    reliability_series = [{"label": "uncalibrated", "bins": reliability_from_stats(width_stats)}]

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
        fit_logits = _validated_logits(fit_logits, fit_labels, "calibration data")
        if fit_logits.shape[1] != num_classes:
            raise UserError(
                f"calibration data has {fit_logits.shape[1]} classes but the evaluation data has {num_classes}",
                where="calibration data", fix="give calibration data scored by the same model",
            )
        fit_labels = np.asarray(fit_labels, dtype=np.int64)
        eval_index = np.arange(n)
        config.update({"fit_on": "separate calibration data", "n_fit": int(len(fit_labels)), "n_eval": n})
        where = (f"the {len(fit_labels)} samples of the separate calibration data; before/after on all {n} "
                 "evaluation samples")
    elif n >= MIN_SAMPLES_TO_SPLIT:
        fit_index, eval_index, stratified = stratified_split(labels, cfg.calibration_split,
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

    scaler = TemperatureScaler().fit(fit_logits, fit_labels)
    t = scaler.temperature_
    eval_logits, eval_labels = logits[eval_index], labels[eval_index]
    n_eval = eval_labels.size
    conf_before, correct = top_label(probabilities[eval_index], eval_labels)
    conf_after, _ = top_label(scaler.predict_proba(eval_logits), eval_labels)
    nll = np.stack([nll_per_sample(eval_logits, eval_labels), nll_per_sample(eval_logits, eval_labels, t)], axis=1)

    before_bins, after_bins = TopLabelBins(conf_before, correct, edges), TopLabelBins(conf_after, correct, edges)

    def statistic(weights: np.ndarray) -> dict[str, np.ndarray]:
        mean_nll = weights @ nll.astype(weights.dtype, copy=False) / n_eval
        return {
            "ece_before_temperature": ece_from_stats(before_bins(weights)),
            "ece_after_temperature": ece_from_stats(after_bins(weights)),
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

    reduction = boot["ece_before_temperature"] - boot["ece_after_temperature"]
    before, after = point["ece_before_temperature"], point["ece_after_temperature"]
    red = make_metric(before - after, reduction, n=n_eval, config=cfg)
    direction = ("T > 1 softens the predictions: the model is overconfident" if t > 1
                 else "T < 1 sharpens the predictions: the model is underconfident" if t < 1 else "T = 1")
    verb = "reduces" if after < before else "does not reduce"
    findings = [
        Finding(severity="info", message=f"temperature fitted on {where}",
                evidence="calibration.config.temperature_scaling"),
        Finding(
            severity="info",
            message=(f"temperature scaling {verb} ECE from {before:.4f} to {after:.4f} "
                     f"(paired difference {red.value:.4f}, {int(cfg.confidence * 100)}% CI {_fmt(red.ci_low)}–"
                     f"{_fmt(red.ci_high)}) and NLL from {point['nll_before_temperature']:.4f} to "
                     f"{point['nll_after_temperature']:.4f}, T={t:.3f} ({direction})"),
            evidence="calibration.metrics.ece_after_temperature",
        ),
    ]
    if scaler.at_bound_:
        findings.append(Finding(
            severity="warning",
            message=f"the fitted temperature T={t:.4g} sits at the edge of the search range [0.01, 100]: the NLL "
            "keeps falling (e.g. every fitting prediction is correct, or the logits are constant)",
            evidence="calibration.metrics.temperature",
        ))
    scaled = reliability_from_stats(after_bins())
    return _TemperatureResult(metrics, findings, config, scaled)


def _findings(
    verdict: Verdict,
    metrics: dict[str, Metric],
    width_stats: BinStats,
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
