"""Two-sample drift tests: a reference sample against a current window, from counts or from rows.

Each test returns a :class:`DriftTest` (statistic, p-value or None, the method in words, both sample
sizes), so a monitor can correct p-values across features (Benjamini-Hochberg,
:mod:`assay.stats.multiple_testing`) and judge p-value-free distances against thresholds calibrated on
reference chunks. The choice of tests follows Rabanser et al. 2019, "Failing loudly: an empirical study
of methods for detecting dataset shift" (NeurIPS): univariate tests per feature with a multiple-testing
correction, and multivariate tests (MMD, a domain classifier) for embeddings.

* Count tests (:func:`class_mix_test`, :func:`categorical_test`): Pearson chi-squared test of homogeneity
  of the 2 x C table (``scipy.stats.chi2_contingency(..., correction=False)``; categories empty on both
  sides dropped) below ``small_window`` current rows; above it the Jensen-Shannon distance (base 2) with
  no p-value, since with thousands of rows every negligible difference is "significant".
* :func:`binned_ks_test`: the two-sample Kolmogorov-Smirnov statistic on the CDFs of two histograms over
  the same bins, with the asymptotic p-value ``scipy.stats.ks_2samp(..., method="asymp")`` uses. Binning
  can only lower the statistic, so the test is conservative relative to the exact KS test of the raw values.
* :func:`binned_wasserstein`: Wasserstein-1 distance between the histograms (mass at the bin midpoints)
  divided by the reference standard deviation (Evidently's "normed Wasserstein", at least
  :data:`MIN_SCALE`).
* :func:`mmd_permutation_test`: unbiased MMD^2 with a Gaussian kernel, bandwidth by the median heuristic,
  permutation p-value ``(b + 1) / (m + 1)`` (Gretton et al. 2012, "A kernel two-sample test", JMLR 13).
* :func:`domain_classifier_test`: held-out AUROC of a logistic regression that tells the current window
  from the reference, with a DeLong interval (classifier two-sample tests: Lopez-Paz & Oquab 2017,
  "Revisiting classifier two-sample tests", ICLR; Lipton et al. 2018 and Rabanser et al. 2019 use the same
  "domain classifier" for shift detection).

The array helpers :func:`js_distance`, :func:`binned_ks`, :func:`chi2_homogeneity` and
:func:`ks_wasserstein` are vectorised over leading axes (the reference's chunk statistics use them too).
scipy and scikit-learn are imported inside the functions that need them (``import assay`` stays light).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from assay.errors import DataError, OptionError

__all__ = [
    "MIN_SCALE",
    "UNSEEN",
    "DriftTest",
    "binned_ks",
    "binned_ks_test",
    "binned_wasserstein",
    "categorical_test",
    "chi2_homogeneity",
    "class_mix_test",
    "delong_auroc_ci",
    "domain_classifier_test",
    "js_distance",
    "ks_wasserstein",
    "mmd_permutation_test",
    "unseen_share",
]

#: Floor of the scale that normalises Wasserstein distances (Evidently's ``max(std, 0.001)``).
MIN_SCALE = 1e-3
#: Name of the extra category that collects current values the reference never saw.
UNSEEN = "<unseen>"
#: Pooled rows above which the (N, N) kernel matrix of the MMD test is refused (200 MB in float64).
MAX_MMD_ROWS = 5000
#: Pooled rows whose pairwise distances give the median-heuristic bandwidth (a random subset beyond).
_BANDWIDTH_ROWS = 1000
#: Permutation indicator rows materialised at once (rows x N float64).
_PERMUTATION_CELLS = 4_000_000


@dataclass(frozen=True)
class DriftTest:
    """One two-sample test: ``statistic`` (what ``method`` says), its p-value (None for a distance judged
    against a calibrated threshold), the two sample sizes and, for the domain classifier, the confidence
    interval of its AUROC (``ci_low``, ``ci_high``)."""

    name: str
    statistic: float
    p_value: float | None
    method: str
    n_reference: int
    n_current: int
    ci_low: float | None = None
    ci_high: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of the fields."""
        return asdict(self)


# ------------------------------------------------------------------------------------------ array helpers


def _shares(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(counts / counts.sum(axis=-1, keepdims=True))


def js_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon distance, base 2 (in [0, 1]), between the distributions along the last axis of two
    count (or probability) arrays, each normalised to sum to one; ``scipy.spatial.distance.jensenshannon``
    with ``base=2``. NaN where either side is empty."""
    a, b = _shares(p), _shares(q)
    mid = (a + b) / 2

    def kl(x: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            terms = np.where(x > 0, x * np.log2(x / np.where(mid > 0, mid, 1.0)), 0.0)
        return np.asarray(terms.sum(axis=-1))

    divergence = (kl(a) + kl(b)) / 2
    return np.asarray(np.sqrt(np.maximum(divergence, 0.0)))


def binned_ks(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Largest gap between the cumulative shares of two histograms over the same bins (last axis): the
    two-sample KS statistic evaluated at the bin edges only (exact when every distinct value has its own
    bin, a lower bound otherwise)."""
    return np.asarray(np.abs(np.cumsum(_shares(p), axis=-1) - np.cumsum(_shares(q), axis=-1)).max(axis=-1))


def chi2_homogeneity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson chi-squared statistic of homogeneity of two count vectors (last axis), the 2 x C table
    without categories empty on both sides (``scipy.stats.chi2_contingency(..., correction=False)``)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    column = a + b
    n_a, n_b = a.sum(axis=-1, keepdims=True), b.sum(axis=-1, keepdims=True)
    total = n_a + n_b
    with np.errstate(invalid="ignore", divide="ignore"):
        exp_a, exp_b = column * n_a / total, column * n_b / total
        terms = np.where(column > 0, (a - exp_a) ** 2 / np.where(exp_a > 0, exp_a, 1.0)
                         + (b - exp_b) ** 2 / np.where(exp_b > 0, exp_b, 1.0), 0.0)
    return np.asarray(terms.sum(axis=-1))


def ks_wasserstein(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Exact two-sample KS statistic and Wasserstein-1 distance of two 1-D samples (what a monitor
    computes for a window against the reference's per-sample values; ``scipy.stats.ks_2samp`` and
    ``scipy.stats.wasserstein_distance``)."""
    a = np.sort(np.asarray(a, dtype=np.float64).ravel())
    b = np.sort(np.asarray(b, dtype=np.float64).ravel())
    if a.size == 0 or b.size == 0:
        raise DataError("two non-empty samples are needed", where="ks_wasserstein", fix="pass values on both sides")
    points = np.union1d(a, b)
    diff = (np.searchsorted(a, points, side="right") / a.size - np.searchsorted(b, points, side="right") / b.size)
    return float(np.abs(diff).max()), float((np.abs(diff[:-1]) * np.diff(points)).sum())


# ------------------------------------------------------------------------------------------ validation


def _counts(values: Any, where: str) -> np.ndarray:
    """A 1-D vector of non-negative finite counts with a positive total."""
    counts = np.asarray(values, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise DataError(f"counts must be a non-empty 1-D vector, got shape {counts.shape}", where=where,
                        fix="pass one count per bin or category")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise DataError("counts must be finite and non-negative", where=where, fix="pass histogram counts")
    if counts.sum() <= 0:
        raise DataError("counts sum to zero: no observations", where=where,
                        fix="test only windows with at least one observation on both sides")
    return counts


def _count_pair(reference_counts: Any, current_counts: Any, test: str) -> tuple[np.ndarray, np.ndarray]:
    ref = _counts(reference_counts, f"{test}(reference_counts)")
    cur = _counts(current_counts, f"{test}(current_counts)")
    if ref.shape != cur.shape:
        raise DataError(f"reference and current counts cover different bins ({ref.size} vs {cur.size})",
                        where=test, fix="count both samples in the same bins (the reference's edges or classes)")
    return ref, cur


def _size(counts: np.ndarray) -> int:
    return int(round(float(counts.sum())))


def _rows(values: Any, where: str) -> np.ndarray:
    rows = np.asarray(values, dtype=np.float64)
    if rows.ndim == 1:
        rows = rows[:, None]
    if rows.ndim != 2 or rows.shape[0] < 2 or rows.shape[1] == 0:
        raise DataError(f"need a (rows, features) matrix with at least 2 rows, got shape {rows.shape}", where=where,
                        fix="pass one row per sample")
    if not np.all(np.isfinite(rows)):
        raise DataError("values contain NaN or infinity", where=where, fix="drop or impute non-finite rows first")
    return rows


def _row_pair(x: Any, y: Any, test: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = _rows(x, f"{test}(reference rows)"), _rows(y, f"{test}(current rows)")
    if a.shape[1] != b.shape[1]:
        raise DataError(f"the two samples have different widths ({a.shape[1]} vs {b.shape[1]} features)",
                        where=test, fix="pass rows of the same features (the same embedding layer) on both sides")
    return a, b


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise OptionError(f"{name} must be an integer >= {minimum}, got {value!r}", where=name,
                          fix=f"pass an integer of at least {minimum}")
    return int(value)


# ------------------------------------------------------------------------------------------ count tests


def _homogeneity(ref: np.ndarray, cur: np.ndarray, *, name: str, small_window: int, what: str) -> DriftTest:
    n_ref, n_cur = _size(ref), _size(cur)
    if n_cur < small_window:
        from scipy.special import chdtrc  # chi-squared survival function without importing scipy.stats

        statistic = float(chi2_homogeneity(ref, cur))
        dof = int(np.count_nonzero(ref + cur)) - 1
        p_value = float(chdtrc(dof, statistic)) if dof > 0 else 1.0
        method = f"Pearson chi-squared homogeneity of {what} (dof {dof}; < {small_window} current rows)"
        return DriftTest(name, statistic, p_value, method, n_ref, n_cur)
    method = f"Jensen-Shannon distance (base 2) of {what} (>= {small_window} current rows; no p-value)"
    return DriftTest(name, float(js_distance(ref, cur)), None, method, n_ref, n_cur)


def class_mix_test(reference_counts: Any, current_counts: Any, *, small_window: int = 2000,
                   name: str = "class_mix") -> DriftTest:
    """Has the predicted-class mix moved? Chi-squared test of homogeneity of the two count vectors (one
    count per class, same order) while the current window has fewer than ``small_window`` rows, else the
    Jensen-Shannon distance (base 2), p-value None, to be judged against a threshold calibrated on
    reference chunks (a large window makes every tiny difference significant)."""
    small_window = _positive_int(small_window, "small_window")
    ref, cur = _count_pair(reference_counts, current_counts, "class_mix_test")
    return _homogeneity(ref, cur, name=name, small_window=small_window, what="class counts")


def _category_counts(counts: Any, where: str) -> dict[str, float]:
    if not isinstance(counts, Mapping):
        raise DataError(f"category counts must be a mapping category -> count, got {type(counts).__name__}",
                        where=where, fix="pass e.g. {'red': 10, 'blue': 3}")
    out: dict[str, float] = {}
    for key, value in counts.items():
        number = float(value)
        if not math.isfinite(number) or number < 0:
            raise DataError(f"category {key!r} has count {value!r}", where=where,
                            fix="counts must be finite and non-negative")
        out[str(key)] = out.get(str(key), 0.0) + number
    return out


def _categorical_vectors(reference_counts: Any, current_counts: Any) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Counts over the reference's categories plus :data:`UNSEEN` (current categories the reference lacks)."""
    ref = _category_counts(reference_counts, "categorical_test(reference_counts)")
    cur = _category_counts(current_counts, "categorical_test(current_counts)")
    categories = sorted(k for k in ref if k != UNSEEN)
    unseen = sum(v for k, v in cur.items() if k not in ref or k == UNSEEN)
    ref_vector = np.array([ref[k] for k in categories] + [ref.get(UNSEEN, 0.0)], dtype=np.float64)
    cur_vector = np.array([cur.get(k, 0.0) for k in categories] + [unseen], dtype=np.float64)
    return [*categories, UNSEEN], ref_vector, cur_vector


def categorical_test(reference_counts: Mapping[str, int], current_counts: Mapping[str, int], *,
                     small_window: int = 2000, name: str = "categorical") -> DriftTest:
    """Drift of a categorical feature: :func:`class_mix_test`'s chi-squared / Jensen-Shannon rule over the
    reference's categories plus one :data:`UNSEEN` bin that collects every current category the reference
    never saw (its reference count is zero, so a new category weighs heavily in both statistics)."""
    small_window = _positive_int(small_window, "small_window")
    _, ref, cur = _categorical_vectors(reference_counts, current_counts)
    ref = _counts(ref, "categorical_test(reference_counts)")
    cur = _counts(cur, "categorical_test(current_counts)")
    return _homogeneity(ref, cur, name=name, small_window=small_window, what="category counts (+ unseen bin)")


def unseen_share(reference_counts: Mapping[str, int], current_counts: Mapping[str, int]) -> float:
    """Share of the current window in categories the reference never saw (0.0 for an empty window)."""
    _, _, cur = _categorical_vectors(reference_counts, current_counts)
    total = float(cur.sum())
    return float(cur[-1] / total) if total > 0 else 0.0


#: Largest effective size whose KS p-value is computed as scipy's ks_2samp does (kstwo.sf); above it, the limit.
KS_EXACT_MAX = 1000


def binned_ks_test(reference_counts: Any, current_counts: Any, *, name: str = "binned_ks") -> DriftTest:
    """Two-sample KS test on two histograms over the same bins: the largest gap between their cumulative
    shares (:func:`binned_ks`), p-value with the effective size ``n_eff = round(n m / (n + m))``: up to
    ``KS_EXACT_MAX`` as ``scipy.stats.ks_2samp(method="asymp")`` (``kstwo.sf(D, n_eff)``), above it the limiting
    Kolmogorov distribution ``kolmogorov(sqrt(n_eff) D)`` -- ``kstwo.sf`` costs 18 ms at n_eff 5,000 and 150 ms
    at 50,000 per call (measured), the limit microseconds, and it is conservative there: its p-value is at most
    ~3 % above the exact one for n_eff > 1,000 and p >= 1e-6 (measured against kstwo). Conservative for
    continuous data too: binning can only lower the statistic."""
    ref, cur = _count_pair(reference_counts, current_counts, "binned_ks_test")
    from scipy.special import kolmogorov
    from scipy.stats import kstwo

    n_ref, n_cur = _size(ref), _size(cur)
    statistic = float(binned_ks(ref, cur))
    effective = round(n_ref * n_cur / (n_ref + n_cur))
    exact = effective <= KS_EXACT_MAX
    if effective == 0:  # one observation on each side (n_eff 0.5): they differ or not, the permutation p-value is 1
        raw = 1.0
    else:
        raw = kstwo.sf(statistic, effective) if exact else kolmogorov(math.sqrt(effective) * statistic)
    p_value = float(np.clip(raw, 0.0, 1.0))
    method = (f"two-sample Kolmogorov-Smirnov on {ref.size} bins, asymptotic p-value (n_eff {effective}"
              + ("" if exact else ", limiting distribution") + ")")
    return DriftTest(name, statistic, p_value, method, n_ref, n_cur)


def binned_wasserstein(reference_counts: Any, current_counts: Any, edges: Any, reference_std: float) -> float:
    """Normalised Wasserstein-1 distance of two histograms over ``edges``: each bin's mass at its midpoint,
    ``W1 = sum_k |F_ref(k) - F_cur(k)| (mid_k+1 - mid_k)``, divided by ``max(reference_std, MIN_SCALE)``
    (Evidently's "normed Wasserstein distance"; ``scipy.stats.wasserstein_distance`` of the midpoints
    weighted by the counts, divided by the scale)."""
    ref, cur = _count_pair(reference_counts, current_counts, "binned_wasserstein")
    bounds = np.asarray(edges, dtype=np.float64)
    if bounds.shape != (ref.size + 1,) or not np.all(np.isfinite(bounds)) or np.any(np.diff(bounds) < 0):
        raise DataError(f"edges must be {ref.size + 1} finite non-decreasing values for {ref.size} bins, got shape "
                        f"{bounds.shape}", where="binned_wasserstein(edges)", fix="pass the reference's bin edges")
    scale = float(reference_std)
    if not math.isfinite(scale) or scale < 0:
        raise DataError(f"reference_std must be finite and >= 0, got {reference_std!r}",
                        where="binned_wasserstein(reference_std)", fix="pass the reference feature's std")
    mids = (bounds[:-1] + bounds[1:]) / 2
    gap = np.abs(np.cumsum(_shares(ref)) - np.cumsum(_shares(cur)))[:-1]
    return float((gap * np.diff(mids)).sum() / max(scale, MIN_SCALE))


# ------------------------------------------------------------------------------------------ MMD


def _squared_distances(z: np.ndarray) -> np.ndarray:
    norms = np.einsum("ij,ij->i", z, z)
    d2 = norms[:, None] + norms[None, :] - 2.0 * (z @ z.T)
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    return d2


def _mmd2_from_sums(within_x: np.ndarray, within_y: np.ndarray, between: np.ndarray, n: int, m: int) -> np.ndarray:
    """Unbiased MMD^2 from kernel sums over off-diagonal pairs (Gretton et al. 2012, eq. 3)."""
    return np.asarray(within_x / (n * (n - 1)) + within_y / (m * (m - 1)) - 2.0 * between / (n * m))


def mmd_permutation_test(x: Any, y: Any, *, n_permutations: int = 200, seed: int = 0,
                         bandwidth: float | None = None, name: str = "mmd") -> DriftTest:
    """Kernel two-sample test (Gretton et al. 2012): unbiased MMD^2 with the Gaussian kernel
    ``exp(-|a - b|^2 / (2 sigma^2))``, sigma the median pairwise distance of the pooled sample (the median
    heuristic; over a random 1,000 of the pooled rows when there are more) unless ``bandwidth`` is given,
    and the permutation p-value ``(b + 1) / (m + 1)``: b of m random relabellings of the pooled rows reach
    the observed statistic (valid at any sample size).

    The (N, N) kernel matrix is built once; each permutation only re-sums it through a 0/1 indicator
    (``s' K s`` and ``s' K 1``), so m permutations cost one (m, N) x (N, N) product. N <= MAX_MMD_ROWS.
    """
    n_permutations = _positive_int(n_permutations, "n_permutations")
    a, b = _row_pair(x, y, "mmd_permutation_test")
    n, m = a.shape[0], b.shape[0]
    total_rows = n + m
    if total_rows > MAX_MMD_ROWS:
        raise DataError(f"{total_rows} pooled rows exceed the MMD test's limit of {MAX_MMD_ROWS}",
                        where="mmd_permutation_test", fix="subsample both sides (e.g. 1,000 rows each)")
    pooled = np.concatenate([a, b])
    d2 = _squared_distances(pooled)
    rng = np.random.default_rng(seed)
    if bandwidth is None:
        # Median over all pairs, or over the pairs of a uniformly random subset of the pooled rows: either
        # way a function of the pooled sample whose law ignores the labels, so the test stays exact.
        subset = np.arange(total_rows)
        if total_rows > _BANDWIDTH_ROWS:
            subset = np.sort(rng.choice(total_rows, _BANDWIDTH_ROWS, replace=False))
        first, second = np.triu_indices(subset.size, k=1)
        sigma = float(np.sqrt(np.median(d2[subset[first], subset[second]])))
        sigma = sigma if sigma > 0 else 1.0  # over half the pairs identical: any positive scale will do
    else:
        sigma = float(bandwidth)
        if not math.isfinite(sigma) or sigma <= 0:
            raise OptionError(f"bandwidth must be a positive number, got {bandwidth!r}",
                              where="mmd_permutation_test(bandwidth)", fix="omit it for the median heuristic")
    kernel = d2  # in place: one (N, N) matrix
    kernel *= -1.0 / (2.0 * sigma * sigma)
    np.exp(kernel, out=kernel)
    np.fill_diagonal(kernel, 0.0)  # only off-diagonal pairs enter the unbiased statistic
    row_sums = kernel.sum(axis=1)
    grand = float(row_sums.sum())

    def statistic(indicator: np.ndarray) -> np.ndarray:
        """MMD^2 for each row of a (k, N) 0/1 matrix marking the rows taken as the first sample."""
        within_x = np.einsum("ij,ij->i", indicator @ kernel, indicator)
        x_total = indicator @ row_sums
        between = x_total - within_x
        within_y = grand - 2.0 * x_total + within_x
        return _mmd2_from_sums(within_x, within_y, between, n, m)

    observed_indicator = np.zeros((1, total_rows))
    observed_indicator[0, :n] = 1.0
    observed = float(statistic(observed_indicator)[0])
    exceed = 0
    per_block = max(1, _PERMUTATION_CELLS // total_rows)
    for start in range(0, n_permutations, per_block):
        rows = min(per_block, n_permutations - start)
        chosen = np.argsort(rng.random((rows, total_rows)), axis=1)[:, :n]
        indicator = np.zeros((rows, total_rows))
        np.put_along_axis(indicator, chosen, 1.0, axis=1)
        # A small tolerance: relabellings equal to the observed split must count as reaching it.
        exceed += int(np.count_nonzero(statistic(indicator) >= observed - 1e-12 * max(1.0, abs(observed))))
    p_value = (exceed + 1) / (n_permutations + 1)
    method = (f"unbiased MMD^2, Gaussian kernel (sigma {sigma:.4g}, "
              f"{'median heuristic' if bandwidth is None else 'given'}), {n_permutations} permutations")
    return DriftTest(name, observed, p_value, method, n, m)


# ------------------------------------------------------------------------------------------ domain classifier


def delong_auroc_ci(negative_scores: Any, positive_scores: Any, *, confidence: float = 0.95
                    ) -> tuple[float, float, float]:
    """AUROC ``P(positive > negative) + P(tie) / 2`` with the DeLong et al. (1988) normal interval:
    variance ``var(V10) / n1 + var(V01) / n0`` from the placement values (each positive's share of
    negatives below it, each negative's share of positives above it). Returns ``(auroc, low, high)``,
    the interval clipped to [0, 1]."""
    if not 0.0 < confidence < 1.0:
        raise OptionError(f"confidence must lie in (0, 1), got {confidence!r}", where="confidence", fix="use 0.95")
    neg = np.sort(np.asarray(negative_scores, dtype=np.float64).ravel())
    pos = np.sort(np.asarray(positive_scores, dtype=np.float64).ravel())
    if neg.size < 2 or pos.size < 2 or not (np.all(np.isfinite(neg)) and np.all(np.isfinite(pos))):
        raise DataError("AUROC needs at least two finite scores per class", where="delong_auroc_ci",
                        fix="pass more samples")
    below = (np.searchsorted(neg, pos, side="left") + np.searchsorted(neg, pos, side="right")) / (2.0 * neg.size)
    above = 1.0 - (np.searchsorted(pos, neg, side="left") + np.searchsorted(pos, neg, side="right")) / (2.0 * pos.size)
    value = float(below.mean())
    se = math.sqrt(float(below.var(ddof=1)) / pos.size + float(above.var(ddof=1)) / neg.size)
    from scipy.special import ndtri

    z = float(ndtri(0.5 + confidence / 2))
    return value, max(0.0, value - z * se), min(1.0, value + z * se)


def domain_classifier_test(x_reference: Any, x_current: Any, *, test_share: float = 0.5, seed: int = 0,
                           confidence: float = 0.95, name: str = "domain_classifier") -> DriftTest:
    """Can a classifier tell the current window from the reference? A classifier two-sample test
    (Lopez-Paz & Oquab 2017; the "domain classifier" of Lipton et al. 2018 and Rabanser et al. 2019): an
    L2-regularised logistic regression (features standardised on its training rows) is fitted on a
    stratified ``1 - test_share`` of both samples and scores the held-out rest. The statistic is the
    held-out AUROC (0.5 when the samples are exchangeable), ``ci_low``/``ci_high`` its DeLong interval at
    ``confidence``, and the p-value the one-sided Mann-Whitney test of the held-out scores (normal
    approximation, tie-corrected).

    Why a held-out split rather than out-of-fold scores from K-fold cross-fitting: pooled out-of-fold
    scores come from K different models, whose training sets hold each other's test rows, and the
    AUROC's null variance exceeds the Mann-Whitney/DeLong one; in our simulation (120 rows a side, 4
    features, 5 folds) the cross-fitted p-value fell below 0.05 in 15% of no-shift runs and its 95%
    interval covered 0.5 in 80%. With a held-out split the classifier is independent of the rows it
    scores, so both are valid (tests/test_drift_stats.py checks the rates)."""
    share = float(test_share)
    if not 0.0 < share < 1.0:
        raise OptionError(f"test_share must lie in (0, 1), got {test_share!r}", where="test_share",
                          fix="use e.g. 0.5 (half of each sample trains, half is scored)")
    a, b = _row_pair(x_reference, x_current, "domain_classifier_test")
    smallest = min(a.shape[0], b.shape[0])
    if min(math.floor(smallest * share), smallest - math.ceil(smallest * share)) < 2:
        raise DataError(f"too few rows to split ({a.shape[0]} and {b.shape[0]}) at test_share={share}",
                        where="domain_classifier_test", fix="use a larger window (at least 10 rows a side)")
    from scipy.stats import mannwhitneyu
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    rows = np.concatenate([a, b])
    target = np.r_[np.zeros(a.shape[0], dtype=np.int64), np.ones(b.shape[0], dtype=np.int64)]
    train, test = train_test_split(np.arange(rows.shape[0]), test_size=share, stratify=target, random_state=seed)
    mean = rows[train].mean(axis=0)
    scale = rows[train].std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=1.0, max_iter=1000)
    model.fit((rows[train] - mean) / scale, target[train])
    scores = model.decision_function((rows[test] - mean) / scale)
    ref_scores, cur_scores = scores[target[test] == 0], scores[target[test] == 1]
    value, low, high = delong_auroc_ci(ref_scores, cur_scores, confidence=confidence)
    p_value = float(mannwhitneyu(cur_scores, ref_scores, alternative="greater", method="asymptotic").pvalue)
    method = (f"held-out AUROC of logistic regression ({share:.0%} of rows scored), DeLong {confidence:.0%} "
              "interval, one-sided Mann-Whitney p-value")
    return DriftTest(name, value, p_value, method, a.shape[0], b.shape[0], low, high)
