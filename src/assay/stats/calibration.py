"""Calibration metrics over arrays: the ECE family, reliability data and temperature scaling.

Pure functions of probabilities (or logits) and labels; the ``calibration`` check
(:mod:`assay.checks.calibration`) builds its section from them, and ``corruption``, ``slices`` and
``stats.paired`` reuse them.

Every binned metric here is a function of per-bin sufficient statistics — count, sum of confidence,
sum of correctness (:class:`BinStats`). The statistics come from ``stats.bootstrap.GroupSums``
with per-sample weights: ``weights=None`` (all ones) gives the point estimate, a ``(b, n)`` chunk of
bootstrap multiplicities gives ``b`` resampled values, through the same code. Bin edges are computed
once on the evaluation set and held fixed across resamples.

Conventions (docs/metrics.md, section "Calibration"):

* top-label: confidence = max_k p_k, correct = [argmax_k p_k == y] (Guo et al. 2017);
* equal-width bins are left-closed ``[lo, hi)``, the last ``[lo, 1]`` (``np.histogram``; netcal, and
  torchmetrics except that it puts confidence exactly 1.0 in an extra bin of its own);
* equal-mass bins follow Kumar et al. (2019)'s ``get_equal_bins`` and are right-closed ``(lo, hi]``.

Temperature scaling (Guo et al. 2017) is :class:`TemperatureScaler` (scikit-learn estimator contract).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from assay.errors import DataError, OptionError
from assay.stats.binning import Closed, assign_bins, equal_mass_edges, equal_width_edges
from assay.stats.bootstrap import GroupSums
from assay.stats.probabilities import softmax

__all__ = [
    "DEFAULT_BINS",
    "BinStats",
    "ClasswiseBins",
    "TemperatureScaler",
    "TopLabelBins",
    "bin_stats",
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
    "validated_logits",
]

#: Number of equal-width / equal-mass bins of the ECE family unless told otherwise (Guo et al. 2017 use 15).
DEFAULT_BINS = 15

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
        raise DataError(f"expected {n} labels, got shape {labels.shape}", where=where,
                        fix="pass one integer label per row")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(f"labels must be integers in [0, {num_classes - 1}]", where=where,
                        fix="store class indices 0..C-1, not names or one-hot rows")
    return labels.astype(np.int64)


def _validated(probabilities: np.ndarray, labels: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[0] == 0:
        raise DataError(f"expected probabilities of shape (N, C) with N > 0, got {probabilities.shape}", where=where,
                        fix="pass softmax outputs, one row per sample")
    if not np.isfinite(probabilities).all():
        raise DataError("probabilities contain NaN or infinite values", where=where,
                        fix="check the model outputs; pass softmax probabilities")
    n, num_classes = probabilities.shape
    return probabilities, _validated_labels(labels, n, num_classes, where)


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
            elif fu <= ffulc or fulc in (xf, nfc):
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
            raise OptionError(
                f"need 0 < min_temperature < max_temperature, got {self.min_temperature} and {self.max_temperature}",
                where="min_temperature, max_temperature", fix="choose a positive range such as (0.01, 100)",
            )
        logits = validated_logits(logits, labels, "TemperatureScaler.fit")
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
        self.n_samples_ = len(labels)
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


def validated_logits(logits: np.ndarray, labels: np.ndarray, where: str) -> np.ndarray:
    """Logits as float64 ``(N, C)``, N > 0, all finite, with one integer label in [0, C) per row, or a
    :class:`~assay.errors.DataError` naming ``where``."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise DataError(f"expected logits of shape (N, C) with N > 0, got {logits.shape}", where=where,
                        fix="pass one row of logits per sample")
    if not np.isfinite(logits).all():
        bad = np.flatnonzero(~np.isfinite(logits).all(axis=1))
        raise DataError(
            f"{bad.size} row(s) of logits contain NaN or infinite values (first at rows {bad[:5].tolist()})",
            where=where, fix="check the model for numerical overflow (e.g. fp16) on these inputs",
        )
    n, num_classes = logits.shape
    _validated_labels(labels, n, num_classes, where)
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
