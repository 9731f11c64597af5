"""Paired statistics for comparing a baseline model A with a candidate B on the same evaluation set.

Everything here is paired: each bootstrap resample draws the same sample indices for A and B, so the
sampling noise both models share (easy and hard samples) cancels from their difference and the interval
of a delta is far narrower than from two independent bootstraps.

Resampling schemes, all equivalent to (or, where stated, a close approximation of) drawing n samples
with replacement (Efron 1979); intervals are percentile intervals (Efron & Tibshirani 1993, ch. 13):

* count statistics (accuracy, flip rates, macro-F1) depend only on the counts of the joint cells
  (label, pred_A, pred_B): a resample is an exact Multinomial(n, cell counts / n) draw over the observed
  cells (``bootstrap_cell_counts``), so any n costs O(resamples x cells);
* per-group accuracy deltas resample within each group (stratified), exactly, over the group's 2x2
  table of (correct_A, correct_B) -- but their intervals are exact, not bootstrap (below);
* means and ECE of continuous per-sample values use exact per-sample multiplicities up to
  ``EXACT_MAX_N`` samples; above, a stratified scheme — exact multinomial counts over strata, the
  within-stratum sums of the continuous part drawn from their normal approximation — whose bootstrap
  variance equals the exact one (law of total variance) and whose cost does not grow with n.

When every replicate is identical (no discordant pair; a flip count of 0), the percentile interval
collapses to a point and would claim certainty; the interval and ``p_beyond`` then come from the exact
binomial instead (Clopper & Pearson 1934), see :class:`BinomialFallback`.

McNemar's test (McNemar 1947) is the exact conditional binomial test on the discordant pairs.

A group (class, slice) is often small and its models often agree almost everywhere, where a bootstrap
interval of its accuracy delta collapses (no discordant pair) or understates (one right -> wrong flip of
70: -0.043, where 1 / 70 alone allows -0.077). Its interval (:func:`paired_delta_interval`) and one-sided
p-values against a drop limit (:func:`paired_delta_p_below`) are therefore exact unconditional: outcomes
(N01, N10) are ordered by their own asymptotic Tango (1998) score limits, and the probability of one at
least as extreme is maximized over the nuisance parameter (the discordance rate) within a Berger & Boos
(1994) confidence box; the interval's ends are Buehler (1957) limits. Coverage is at least nominal for every
(p01, p10) (exactly computed on grids in the tests), and nothing is floored at 1 / (1 + B).
(:func:`group_delta_p_below`, the paired bootstrap's p-value computed exactly, remains for comparison.)
Flip rates follow Yan et al. (2021), "Positive-Congruent Training: Towards Regression-Free Model Updates".
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import scipy.sparse as sp

from assay.errors import UserError
from assay.stats.binning import assign_bins, equal_width_edges
from assay.stats.bootstrap import (
    GroupSums,
    bootstrap_cell_counts,
    bootstrap_weights,
    clopper_pearson,
    percentile_ci,
    spawn_seed,
)
from assay.stats.multiple_testing import benjamini_hochberg, holm

__all__ = [
    "BERGER_BOOS_GAMMA",
    "EXACT_MAX_N",
    "BinomialFallback",
    "GroupDelta",
    "PairedClassification",
    "PairedEstimate",
    "Scheme",
    "adjust_group_pvalues",
    "group_delta_p_below",
    "mcnemar_exact",
    "mcnemar_one_sided",
    "paired_classification",
    "paired_delta_interval",
    "paired_delta_p_above",
    "paired_delta_p_below",
    "paired_ece_delta",
    "paired_group_deltas",
    "paired_mean_delta",
    "required_sample_size",
]

Side = Literal["below", "above"]
Scheme = Literal["auto", "exact", "stratified"]

# Up to this many samples, continuous statistics resample exact per-sample multiplicities (cost ~ n x B
# random draws: ~1.6 s at 200,000 x 1,000 on 2 cores); above, the stratified scheme.
EXACT_MAX_N = 200_000
# Quantile strata of the per-sample difference used by the stratified scheme for means.
MEAN_STRATA = 1000
# Resampled cell counts materialized at once (resamples x cells), as in bootstrap_weights.
_COUNTS_PER_CHUNK = 20_000_000
# Joint-cell codes use a dense bincount up to this many possible cells, np.unique above.
_DENSE_CELLS = 1 << 22


# --------------------------------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BinomialFallback:
    """Exact binomial reasoning for an estimate whose bootstrap replicates are all identical.

    ``kind="proportion"``: the estimate is ``successes / trials`` (a flip rate with 0 or ``trials``
    flips); interval Clopper–Pearson, one-sided p-values from the binomial tail at the threshold.
    ``kind="zero_discordant"``: the estimate is a paired accuracy delta with no discordant pair among
    ``trials``; |delta| <= discordance rate r, so the interval is ±(Clopper–Pearson upper bound of
    0 / trials) and "delta < t" for t > 0 has p-value (1 - t)^trials, the chance of no discordant pair
    when r = t.
    """

    kind: Literal["proportion", "zero_discordant"]
    successes: int
    trials: int

    def interval(self, confidence: float) -> tuple[float, float]:
        lo, hi = clopper_pearson(self.successes, self.trials, confidence)
        return (-hi, hi) if self.kind == "zero_discordant" else (lo, hi)

    def p_beyond(self, threshold: float, side: Side) -> float:
        """Exact one-sided p-value of "the true value lies on ``side`` of ``threshold``"."""
        t = float(threshold)
        if self.kind == "zero_discordant":
            distance = t if side == "below" else -t
            return 1.0 if distance <= 0 else float((1.0 - min(distance, 1.0)) ** self.trials)
        from scipy.stats import binom  # imported on use: scipy.stats costs ~70 MiB of memory

        k, n = self.successes, self.trials
        if side == "below":  # H0: rate >= t
            return 1.0 if t <= 0 else 0.0 if t > 1 else float(binom.cdf(k, n, t))
        return 1.0 if t >= 1 else 0.0 if t < 0 else float(binom.sf(k - 1, n, t))  # H0: rate <= t


@dataclass(frozen=True)
class PairedEstimate:
    """A paired statistic: point estimate (deltas are B minus A), percentile interval, replicates."""

    value: float
    ci_low: float
    ci_high: float
    # Bootstrap replicates, shape (n_resamples,); the same resamples within one call.
    samples: np.ndarray = field(repr=False, compare=False)
    method: str
    fallback: BinomialFallback | None = None  # set when the replicates collapsed to one value

    def p_beyond(self, threshold: float, side: Side) -> float:
        """One-sided bootstrap p-value that the true value lies on the *other* side of ``threshold``.

        ``side="below"``: (1 + #replicates >= threshold) / (1 + B) — small means the data show
        value < threshold; ``side="above"`` mirrors it. Never 0. NaN replicates are left out. For a
        collapsed bootstrap the exact binomial p-value is used (floored at the same 1 / (1 + B)).
        """
        if side not in ("below", "above"):
            raise ValueError(f"side must be 'below' or 'above', got {side!r}")
        finite = self.samples[np.isfinite(self.samples)]
        floor = 1.0 / (1.0 + finite.size)
        if self.fallback is not None:
            return max(self.fallback.p_beyond(threshold, side), floor)
        beyond = finite >= threshold if side == "below" else finite <= threshold
        return float((1.0 + np.count_nonzero(beyond)) / (1.0 + finite.size))

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2.0


@dataclass(frozen=True)
class PairedClassification:
    """Paired comparison of two classifiers' predictions on the same labelled samples."""

    n: int
    accuracy_a: float
    accuracy_b: float
    accuracy_delta: PairedEstimate  # acc_B - acc_A
    negative_flip_rate: PairedEstimate  # fraction with A right, B wrong (Yan et al. 2021)
    positive_flip_rate: PairedEstimate  # fraction with A wrong, B right
    macro_f1_a: float
    macro_f1_b: float
    macro_f1_delta: PairedEstimate
    mcnemar_p: float
    n01: int  # A wrong, B right
    n10: int  # A right, B wrong


@dataclass(frozen=True)
class GroupDelta:
    """Accuracy delta of one group (a class, a slice): an exact interval from its discordant counts (bootstrap
    replicates, resampled within the group, in ``delta.samples``)."""

    group: str
    n: int
    accuracy_a: float
    accuracy_b: float
    delta: PairedEstimate
    negative_flip_rate: float
    positive_flip_rate: float
    mcnemar_p: float  # NaN when the group is below min_size (not tested)
    p_adjusted: float | None  # filled by the caller-chosen correction (adjust_group_pvalues)
    n01: int = 0  # A wrong, B right
    n10: int = 0  # A right, B wrong

    def p_below(self, threshold: float, confidence: float = 0.95) -> float:
        """Exact one-sided p-value of "the group's delta lies below ``threshold``" (:func:`paired_delta_p_below`)."""
        return paired_delta_p_below(self.n01, self.n10, self.n, threshold, confidence)

    def p_above(self, threshold: float, confidence: float = 0.95) -> float:
        """Exact one-sided p-value of "the group's delta lies above ``threshold``" (:func:`paired_delta_p_above`)."""
        return paired_delta_p_above(self.n01, self.n10, self.n, threshold, confidence)


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _method(confidence: float, n_resamples: int, seed: int, scheme: str) -> str:
    return f"paired bootstrap percentile, {confidence * 100:g}% (B={n_resamples}, seed={seed}), {scheme}"


def _estimate(value: float, samples: np.ndarray, method: str, confidence: float,
              fallback: BinomialFallback | None = None) -> PairedEstimate:
    """Percentile interval of the replicates; the exact binomial one when they collapsed and a
    fallback applies."""
    samples = np.asarray(samples, dtype=np.float64)
    collapsed = samples.size > 0 and bool(np.all(samples == samples[0]))
    if fallback is not None and collapsed:
        lo, hi = fallback.interval(confidence)
        tag = ("exact Clopper-Pearson interval" if fallback.kind == "proportion" else
               "no discordant pair: exact interval ±(Clopper-Pearson upper bound of the discordance rate)")
        return PairedEstimate(float(value), lo, hi, samples, f"{method}; all replicates equal, {tag}", fallback)
    lo, hi = percentile_ci(samples, confidence)
    return PairedEstimate(float(value), lo, hi, samples, method)


def _check_common(n_resamples: int, confidence: float) -> None:
    if n_resamples < 1:
        raise UserError(f"n_resamples must be at least 1, got {n_resamples}", where="paired statistics",
                        fix="use e.g. 1000 bootstrap resamples")
    if not 0.0 < confidence < 1.0:
        raise UserError(f"confidence must lie in (0, 1), got {confidence}", where="paired statistics",
                        fix="pass e.g. 0.95")


def _vector(x: np.ndarray, name: str, where: str, n: int | None = None) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1 or x.shape[0] == 0:
        raise UserError(f"{name} must be a non-empty 1-D array, got shape {x.shape}", where=where,
                        fix="pass one value per evaluation sample")
    if n is not None and x.shape[0] != n:
        raise UserError(f"{name} has {x.shape[0]} entries, expected {n} (one per sample)", where=where,
                        fix="pass arrays of both models over the same samples, in the same order")
    return x


def _finite(x: np.ndarray, name: str, where: str, n: int | None = None) -> np.ndarray:
    x = _vector(x, name, where, n).astype(np.float64)
    if not np.isfinite(x).all():
        raise UserError(f"{name} contains NaN or infinite values", where=where,
                        fix="check the model outputs for overflow before comparing")
    return x


def _child(seed: np.random.SeedSequence, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, index))


def _chunked_cell_counts(cell_counts: np.ndarray, n_resamples: int, seed: np.random.SeedSequence
                         ) -> Iterator[np.ndarray]:
    """Yield resampled cell counts (b, cells) in chunks that bound memory; chunk seeds derive from
    (seed, chunk), so results depend on the seed and the cells only."""
    per_chunk = max(1, min(n_resamples, _COUNTS_PER_CHUNK // max(1, cell_counts.size)))
    for chunk, start in enumerate(range(0, n_resamples, per_chunk)):
        yield bootstrap_cell_counts(cell_counts, min(per_chunk, n_resamples - start), _child(seed, chunk))


# --------------------------------------------------------------------------------------------------
# McNemar
# --------------------------------------------------------------------------------------------------


def _mcnemar(n01: np.ndarray, n10: np.ndarray) -> np.ndarray:
    """Vectorized two-sided exact McNemar p-values: P(X <= min) + P(X >= n - min), X ~ Bin(n01 + n10, 1/2),
    the same sum scipy.stats.binomtest forms for p = 1/2; 1 without discordant pairs."""
    n01 = np.asarray(n01, dtype=np.int64)
    n10 = np.asarray(n10, dtype=np.int64)
    total = n01 + n10
    low = np.minimum(n01, n10)
    with np.errstate(invalid="ignore"):
        from scipy.stats import binom

        p = binom.cdf(low, total, 0.5) + binom.sf(total - low - 1, total, 0.5)
    return np.where((total == 0) | (n01 == n10), 1.0, np.minimum(p, 1.0))


def mcnemar_exact(n01: int, n10: int) -> float:
    """Two-sided exact McNemar p-value (McNemar 1947): binomial test of n01 against n10 discordant pairs
    at p = 1/2, conditional on their total; equals ``scipy.stats.binomtest(n01, n01 + n10).pvalue``."""
    if int(n01) != n01 or int(n10) != n10 or n01 < 0 or n10 < 0:
        raise UserError(f"discordant counts must be non-negative integers, got {n01} and {n10}",
                        where="mcnemar_exact", fix="pass the counts of (A wrong, B right) and (A right, B wrong)")
    return float(_mcnemar(np.int64(n01), np.int64(n10)))


def mcnemar_one_sided(n01: int, n10: int) -> float:
    """One-sided exact McNemar p-value of "B is worse than A": P(X >= n10), X ~ Bin(n01 + n10, 1/2), the
    chance of at least ``n10`` of the discordant pairs going A's way if neither model were better; equals
    ``scipy.stats.binomtest(n10, n01 + n10, 0.5, alternative="greater").pvalue``; 1 without discordant pairs."""
    if int(n01) != n01 or int(n10) != n10 or n01 < 0 or n10 < 0:
        raise UserError(f"discordant counts must be non-negative integers, got {n01} and {n10}",
                        where="mcnemar_one_sided", fix="pass the counts of (A wrong, B right) and (A right, B wrong)")
    if n01 + n10 == 0:
        return 1.0
    from scipy.stats import binom

    return float(min(binom.sf(int(n10) - 1, int(n01) + int(n10), 0.5), 1.0))


def group_delta_p_below(n01: int, n10: int, n: int, threshold: float) -> float:
    """One-sided p-value that a group's accuracy delta (B - A) lies below ``threshold``: the paired
    bootstrap's ``p_beyond(threshold, "below")`` computed exactly, without resampling.

    The group's delta is (n01 - n10) / n, and its bootstrap resample draws (N01, N10, rest) from
    Multinomial(n; n01/n, n10/n, rest/n), exactly as :func:`paired_group_deltas` does by simulation. The
    p-value is P*(delta* >= threshold) = sum_j P(N10 = j) P(N01 >= k + j | N10 = j), with
    N01 | N10 = j ~ Bin(n - j, p01 / (1 - p10)) and k the smallest integer with k / n >= threshold: what B
    resamples estimate as (1 + #{delta* >= threshold}) / (1 + B), without that estimate's floor of
    1 / (1 + B), which Holm's correction over many groups would otherwise never get below.
    """
    if min(n01, n10) < 0 or n01 + n10 > n or n < 1 or any(int(v) != v for v in (n01, n10, n)):
        raise UserError(f"need integer counts with 0 <= n01 + n10 <= n and n >= 1, got n01={n01}, n10={n10}, n={n}",
                        where="group_delta_p_below", fix="pass the group's discordant counts and its size")
    from scipy.stats import binom

    n01, n10, n = int(n01), int(n10), int(n)
    t = float(threshold)
    k = math.ceil(n * t)  # the smallest integer difference whose delta (as a float) reaches the threshold
    while (k - 1) / n >= t:
        k -= 1
    while k / n < t:
        k += 1
    if n10 == 0 and k <= 0:
        return 1.0  # no resample can lose a sample: every delta* >= 0 >= threshold
    p01, p10 = n01 / n, n10 / n
    j = np.arange(n + 1) if n10 else np.zeros(1, dtype=np.int64)
    weight = binom.pmf(j, n, p10) if n10 else np.ones(1)
    q = p01 / (1.0 - p10) if p10 < 1.0 else 0.0
    tail = binom.sf(k + j - 1, n - j, q)
    return float(min(max(float(np.dot(weight, tail)), 0.0), 1.0))


# --------------------------------------------------------------------------------------------------
# Exact per-group accuracy deltas (exact unconditional tests on the group's paired 2x2 table)
# --------------------------------------------------------------------------------------------------

#: Berger & Boos (1994): the maximization over the nuisance parameter runs over a 1 - BERGER_BOOS_GAMMA
#: confidence box for (p01, p10) (two Clopper-Pearson intervals), and gamma is added to the p-value, which
#: keeps it exact while the search stays near the data. p-values are therefore never below gamma.
BERGER_BOOS_GAMMA = 1e-8
#: Confidence limits are found to within this, on the conservative (outer) side.
_LIMIT_TOLERANCE = 1e-5
#: Half-width, in binomial standard deviations, of the window of N01 values summed explicitly; the
#: probability outside it is added whole (counted as "at least as extreme"), so nothing is dropped.
_WINDOW_SD = 10.0
#: Outcomes whose score is within this of the observed one count as ties (conservative).
_TIE = 1e-9
_COARSE_GRID = 33
_ZOOM_GRID = 17
_ZOOM_SEEDS = 3
_ZOOM_WIDTH = 1e-5


def _check_counts(n01: int, n10: int, n: int, where: str) -> tuple[int, int, int]:
    if min(n01, n10) < 0 or n01 + n10 > n or n < 1 or any(int(v) != v for v in (n01, n10, n)):
        raise UserError(f"need integer counts with 0 <= n01 + n10 <= n and n >= 1, got n01={n01}, n10={n10}, n={n}",
                        where=where, fix="pass the group's discordant counts and its size")
    return int(n01), int(n10), int(n)


def _score(b: np.ndarray, c: np.ndarray, n: int, delta: float) -> np.ndarray:
    """Tango's (1998) score statistic of H0 "p01 - p10 = delta" for b = N01, c = N10 of n pairs:
    (b - c - n delta) / sqrt(n (2 p10~ + delta (1 - delta))), p10~ the maximum-likelihood p10 under H0 (the
    root of a quadratic, Nam 1997). It rises with b and falls with c (checked on full grids in the tests),
    which puts the maximum over the nuisance parameter on the boundary of H0. 0 where the variance is 0
    (b = c = 0 at delta = 0)."""
    b = np.asarray(b, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    a2 = 2.0 * n
    b1 = -b - c + (2.0 * n - b + c) * delta
    c0 = -c * delta * (1.0 - delta)
    p10 = (-b1 + np.sqrt(np.maximum(b1 * b1 - 4.0 * a2 * c0, 0.0))) / (2.0 * a2)
    variance = n * (2.0 * p10 + delta * (1.0 - delta))
    numerator = b - c - n * delta
    degenerate = variance <= 0
    with np.errstate(divide="ignore", invalid="ignore"):
        z = numerator / np.sqrt(np.where(degenerate, 1.0, variance))
    return np.where(degenerate, np.where(numerator > 0, np.inf, np.where(numerator < 0, -np.inf, 0.0)), z)


def _staircase(n: int, b_obs: int, c_obs: int, delta: float) -> np.ndarray:
    """For every b in 0..n, the largest c <= n - b whose outcome (b, c) scores at least the observed one at
    ``delta`` (ties included), -1 when none: the outcomes at least as favourable to "p01 - p10 > delta" are
    {c <= staircase[b]}. Bisection over c (the score falls with c), all b at once."""
    t = float(_score(np.array(b_obs), np.array(c_obs), n, delta)) - _TIE
    b = np.arange(n + 1)
    lo, hi = np.full(n + 1, -1), n - b  # lo: known to qualify (or -1: none), hi: the largest candidate
    ok_hi = _score(b, hi, n, delta) >= t
    lo = np.where(ok_hi, hi, lo)
    hi = np.where(ok_hi, hi, hi - 1)  # from here on: candidates in (lo, hi], hi not yet known
    while np.any(hi > lo):
        mid = (lo + hi + 1) // 2
        ok = (hi > lo) & (_score(b, np.maximum(mid, 0), n, delta) >= t)
        lo = np.where(ok, mid, lo)
        hi = np.where((hi > lo) & ~ok, mid - 1, hi)
    return lo


def _favourable_probability(n: int, staircase: np.ndarray, p01: np.ndarray, p10: np.ndarray) -> np.ndarray:
    """P(outcome at least as favourable as the observed one) under Multinomial(n; p01, p10, 1 - p01 - p10),
    for each pair (p01, p10): sum over b of P(N01 = b) P(N10 <= staircase[b] | N01 = b), with
    N10 | N01 = b ~ Bin(n - b, p10 / (1 - p01)). Summed over a window of b values; the probability of N01
    outside it is added whole (as is that of N10 above its window), so the result errs, by less than 1e-20,
    towards larger p-values and wider limits."""
    from scipy.special import bdtr, bdtrc, gammaln, xlog1py, xlogy

    p01 = np.clip(np.asarray(p01, dtype=np.float64), 0.0, 1.0)
    p10 = np.clip(np.asarray(p10, dtype=np.float64), 0.0, 1.0 - p01)
    spread = _WINDOW_SD * np.sqrt(n * p01 * (1.0 - p01)) + 10.0
    lo = np.clip(np.floor(n * p01 - spread), 0, n).astype(np.int64)
    hi = np.clip(np.ceil(n * p01 + spread), 0, n).astype(np.int64)
    b = lo[:, None] + np.arange(int((hi - lo).max()) + 1)[None, :]
    inside = b <= hi[:, None]
    b = np.minimum(b, n)
    log_pmf = (gammaln(n + 1.0) - gammaln(b + 1.0) - gammaln(n - b + 1.0) + xlogy(b, p01[:, None])
               + xlog1py(n - b, -p01[:, None]))
    share = np.broadcast_to(np.divide(p10, 1.0 - p01, out=np.zeros_like(p10), where=p01 < 1.0)[:, None], b.shape)
    k = staircase[b]
    rest = n - b
    # P(N10 <= k | b) is 1 where k is past the top of the window (counted as 1: an upper bound) or of the range.
    past = (k >= rest) | (k >= rest * share + _WINDOW_SD * np.sqrt(rest * share * (1.0 - share)) + 10.0)
    conditional = np.where(past, 1.0, 0.0)
    needed = inside & ~past & (k >= 0)
    with np.errstate(invalid="ignore"):
        conditional[needed] = bdtr(k[needed], rest[needed], share[needed])
        outside = (np.where(lo > 0, bdtr(np.maximum(lo - 1, 0), n, p01), 0.0)
                   + np.where(hi < n, bdtrc(hi, n, p01), 0.0))
    total = np.sum(np.where(inside, np.exp(log_pmf) * conditional, 0.0), axis=1)
    return np.minimum(total + outside, 1.0)


def _box(k: int, n: int) -> tuple[float, float]:
    """The Clopper-Pearson interval of k / n with total error BERGER_BOOS_GAMMA / 2: one side of the box."""
    from assay.stats.bootstrap import clopper_pearson

    return clopper_pearson(k, n, 1.0 - BERGER_BOOS_GAMMA / 2)


def _zoom_max(evaluate: Callable[[np.ndarray], np.ndarray], lo: float, hi: float) -> float:
    """The maximum over [lo, hi] of a smooth function of the nuisance parameter: a grid, then finer grids
    around its best few local maxima until they are narrower than _ZOOM_WIDTH (the numerical maximization
    over the nuisance of exact unconditional tests, as in scipy.stats.barnard_exact)."""
    grid = np.linspace(lo, hi, _COARSE_GRID)
    values = evaluate(grid)
    found = float(values.max())
    padded = np.concatenate([[-np.inf], values, [-np.inf]])
    local = np.flatnonzero((values >= padded[:-2]) & (values >= padded[2:]))
    local = local[np.argsort(-values[local], kind="stable")][:_ZOOM_SEEDS]
    last = grid.size - 1
    brackets = [(grid[max(i - 1, 0)], grid[min(i + 1, last)]) for i in local]
    while brackets and max(b - a for a, b in brackets) > _ZOOM_WIDTH:
        grids = [np.linspace(a, b, _ZOOM_GRID) for a, b in brackets]
        values = evaluate(np.concatenate(grids))
        found = max(found, float(values.max()))
        brackets = []
        for k, g in enumerate(grids):
            j = int(np.argmax(values[k * _ZOOM_GRID:(k + 1) * _ZOOM_GRID]))
            brackets.append((g[max(j - 1, 0)], g[min(j + 1, _ZOOM_GRID - 1)]))
    return found


@functools.lru_cache(maxsize=8192)
def _tango_limit(b: int, c: int, n: int, alpha: float) -> float:
    """Tango's (1998) asymptotic lower confidence limit for p01 - p10 at one-sided level ``alpha``: the delta
    at which the score statistic equals z_alpha (it falls with delta)."""
    from scipy.optimize import brentq
    from scipy.special import ndtri

    z = float(ndtri(1.0 - alpha))
    estimate = (b - c) / n

    def excess(delta: float) -> float:
        return float(_score(np.array(b), np.array(c), n, delta)) - z

    low = -1.0 + 1e-12
    if excess(low) <= 0:
        return -1.0
    if excess(estimate) > 0:  # only at the top of the range (b = n): the limit is 1
        return estimate
    return float(brentq(excess, low, estimate, xtol=1e-13))


@functools.lru_cache(maxsize=8192)
def _ordering(b_obs: int, c_obs: int, n: int, alpha: float) -> np.ndarray:
    """The outcomes at least as favourable as (b_obs, c_obs) to "p01 - p10 is large", ordering every outcome by
    its own asymptotic Tango limit at ``alpha`` (Buehler's designated statistic; Lloyd & Kabaila 2003): as the
    score falls with delta, limit(b, c) >= limit(obs) = l exactly when score_l(b, c) >= z_alpha, so they are
    {c <= staircase[b]} with the staircase of the score at l. A fixed ordering makes the exact p-value grow with
    the threshold, so the interval is an interval and is found by root-finding."""
    return _staircase(n, b_obs, c_obs, _tango_limit(b_obs, c_obs, n, alpha))


@functools.lru_cache(maxsize=8192)
def _p_at_most(b_obs: int, c_obs: int, n: int, threshold: float, alpha: float) -> float:
    """Exact unconditional p-value of H0 "p01 - p10 <= threshold" (small: the data show the delta above it)
    from one group's counts b = N01, c = N10: the largest probability, over H0 within the Berger-Boos box, of an
    outcome at least as favourable as the observed one (:func:`_ordering` at ``alpha``), plus gamma (Berger &
    Boos 1994). The ordering rises with b and falls with c, so that probability grows with p01 and falls with
    p10 and its maximum lies on delta = threshold: a segment in p01, maximized numerically."""
    if threshold >= 1.0:
        return 1.0
    threshold = max(threshold, -1.0)
    (a0, a1), (c0, c1) = _box(b_obs, n), _box(c_obs, n)
    if threshold < a0 - c1:
        return BERGER_BOOS_GAMMA  # no point of the box is in H0
    stairs = _ordering(b_obs, c_obs, n, alpha)
    if threshold > a1 - c0:  # the whole box is in H0: the probability is largest at its corner
        corner = _favourable_probability(n, stairs, np.array([a1]), np.array([c0]))[0]
        return float(min(corner + BERGER_BOOS_GAMMA, 1.0))
    start = max(a0, c0 + threshold, threshold, 0.0)
    stop = min(a1, c1 + threshold, (1.0 + threshold) / 2.0)
    if start > stop:
        return 1.0  # the segment leaves the simplex inside the box (extreme counts): the trivial p-value

    def probability(p01: np.ndarray) -> np.ndarray:
        return _favourable_probability(n, stairs, p01, np.maximum(p01 - threshold, 0.0))

    return min(_zoom_max(probability, start, stop) + BERGER_BOOS_GAMMA, 1.0)


@functools.lru_cache(maxsize=8192)
def _lower_limit(b_obs: int, c_obs: int, n: int, alpha: float) -> float:
    """Exact lower confidence limit (one-sided level ``alpha``) for p01 - p10: the Buehler (1957) limit, the
    smallest threshold whose H0 "delta <= threshold" :func:`_p_at_most` does not reject at ``alpha``. The
    p-value grows with the threshold; regula falsi with the Illinois step on its probit (near-linear), keeping
    a bracket [rejected, not rejected], returns the rejected end: within _LIMIT_TOLERANCE, never inside."""
    from scipy.special import ndtri

    def gap(threshold: float) -> float:
        p = _p_at_most(b_obs, c_obs, n, threshold, alpha)
        return float(ndtri(min(max(p, 1e-300), 1.0 - 1e-16)) - ndtri(alpha))

    hi = _tango_limit(b_obs, c_obs, n, alpha)  # the asymptotic limit: the exact one is close by
    f_hi = gap(hi)
    step = 2.0 * math.sqrt(b_obs + c_obs + 4.0) / n
    while f_hi <= 0 and hi < 1.0:
        hi = min(1.0, hi + step)
        f_hi = gap(hi)
    if f_hi <= 0:
        return hi
    lo = max(-1.0, hi - step)
    f_lo = gap(lo)
    while f_lo > 0 and lo > -1.0:
        hi, f_hi = lo, f_lo
        lo = max(-1.0, lo - step)
        f_lo = gap(lo)
    if f_lo > 0:
        return -1.0
    previous = 0
    while hi - lo > _LIMIT_TOLERANCE:
        x = hi - f_hi * (hi - lo) / (f_hi - f_lo)
        x = min(max(x, lo + _LIMIT_TOLERANCE / 4), hi - _LIMIT_TOLERANCE / 4)
        f_x = gap(x)
        if f_x > 0:
            hi, f_hi = x, f_x
            f_lo = f_lo / 2 if previous > 0 else f_lo  # Illinois (Dowell & Jarratt 1971): halve the end that stays
            previous = 1
        else:
            lo, f_lo = x, f_x
            f_hi = f_hi / 2 if previous < 0 else f_hi
            previous = -1
    return lo


def paired_delta_interval(n01: int, n10: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact confidence interval for a group's paired accuracy delta p01 - p10 (B - A) from its counts: n01
    samples wrong in A and right in B, n10 the reverse, n in all. Each end has one-sided error at most
    (1 - confidence) / 2 whatever the discordance rate: coverage >= confidence also with no or one discordant
    pair, where a bootstrap interval collapses (0 of 71: a point) or understates (1 right -> wrong flip of 70:
    the bootstrap's lower end -0.043; this interval's -0.077, as Clopper-Pearson's bound on 1 / 70 says).

    The interval inverts exact unconditional tests: Tango's (1998) score statistic, whose asymptotic interval
    Fagerland, Lydersen & Laake (2014) recommend for paired proportions, with its p-value computed exactly,
    maximized over the nuisance parameter (the discordance rate) within a Berger-Boos box (Berger & Boos 1994;
    the exact unconditional non-inferiority test of Hsueh, Liu & Chen 2001 and Sidik 2003). Each end is
    returned within 1e-5 of the limit, on its outer side.
    """
    b, c, size = _check_counts(n01, n10, n, "paired_delta_interval")
    alpha = _one_sided(confidence, "paired_delta_interval")
    return _lower_limit(b, c, size, alpha), -_lower_limit(c, b, size, alpha)


def paired_delta_p_below(n01: int, n10: int, n: int, threshold: float, confidence: float = 0.95) -> float:
    """Exact one-sided p-value that a group's accuracy delta (B - A) lies below ``threshold`` (H0: delta >=
    threshold; small means "B dropped beyond the threshold"): the test whose inversion is the upper end of
    :func:`paired_delta_interval` at ``confidence`` (which fixes the ordering of outcomes), so p <=
    (1 - confidence) / 2 when, and only when, that end lies below the threshold (up to its 1e-5 tolerance). The
    p-value is valid at any level. Never below BERGER_BOOS_GAMMA."""
    b, c, size = _check_counts(n01, n10, n, "paired_delta_p_below")
    return _p_at_most(c, b, size, -float(threshold), _one_sided(confidence, "paired_delta_p_below"))


def paired_delta_p_above(n01: int, n10: int, n: int, threshold: float, confidence: float = 0.95) -> float:
    """Exact one-sided p-value that a group's accuracy delta lies above ``threshold`` (H0: delta <= threshold;
    small means "B is shown within a drop limit of -threshold"): the mirror image of
    :func:`paired_delta_p_below`, inverted by the interval's lower end."""
    b, c, size = _check_counts(n01, n10, n, "paired_delta_p_above")
    return _p_at_most(b, c, size, float(threshold), _one_sided(confidence, "paired_delta_p_above"))


def _one_sided(confidence: float, where: str) -> float:
    if not 0.0 < confidence < 1.0:
        raise UserError(f"confidence must lie in (0, 1), got {confidence}", where=where, fix="pass e.g. 0.95")
    return (1.0 - confidence) / 2.0


# --------------------------------------------------------------------------------------------------
# Classification: accuracy, flips, macro-F1
# --------------------------------------------------------------------------------------------------


def _class_indices(x: np.ndarray, name: str, n: int | None, num_classes: int) -> np.ndarray:
    where = "paired_classification"
    x = _vector(x, name, where, n)
    if not np.issubdtype(x.dtype, np.integer) or x.min() < 0 or x.max() >= num_classes:
        raise UserError(f"{name} must be integers in [0, {num_classes - 1}]", where=where,
                        fix="pass class indices (argmax of the logits), not names, one-hot rows or logits")
    return x.astype(np.int64, copy=False)


def _observed_cells(code: np.ndarray, n_codes: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct codes and their counts."""
    if n_codes <= _DENSE_CELLS:
        counts = np.bincount(code, minlength=n_codes)
        cells = np.flatnonzero(counts)
        return cells, counts[cells]
    return np.unique(code, return_counts=True)


def _macro_f1(tp: np.ndarray, predicted: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Macro-F1 over classes present in labels or predictions, 0/0 -> 0 (scikit-learn's f1_score
    average="macro", zero_division=0; assay.checks.performance.macro_f1_from_confusion)."""
    denominator = predicted + true
    present = denominator > 0
    f1 = np.divide(2.0 * tp, denominator, out=np.zeros_like(denominator, dtype=np.float64), where=present)
    return f1.sum(axis=-1) / present.sum(axis=-1)


def paired_classification(
    labels: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    num_classes: int,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedClassification:
    """Accuracy delta, negative/positive flip rates, macro-F1 delta with paired bootstrap CIs, and McNemar.

    Every statistic is a function of the counts of the joint cells (label, pred_A, pred_B). A resample
    of the n samples is exactly Multinomial(n, counts / n) over the observed cells; per resample, a
    sparse (cells x features) design turns the cell counts into per-class true positives, predicted and
    true counts of both models and the discordant counts. Cost O(B x observed cells), independent of n.
    """
    _check_common(n_resamples, confidence)
    if num_classes < 1:
        raise UserError(f"num_classes must be at least 1, got {num_classes}", where="paired_classification",
                        fix="pass the number of classes of the models")
    c = int(num_classes)
    labels = _class_indices(labels, "labels", None, c)
    n = labels.shape[0]
    pred_a = _class_indices(pred_a, "pred_a", n, c)
    pred_b = _class_indices(pred_b, "pred_b", n, c)

    cells, cell_counts = _observed_cells((labels * c + pred_a) * c + pred_b, c**3)
    lab, pa, pb = cells // (c * c), (cells // c) % c, cells % c
    right_a, right_b = lab == pa, lab == pb
    k = cells.size
    # Feature columns: TP_A (c) | predicted_A (c) | TP_B (c) | predicted_B (c) | true (c) | n10 | n01.
    index = np.arange(k)
    rows = np.concatenate([index[right_a], index, index[right_b], index, index,
                           index[right_a & ~right_b], index[~right_a & right_b]])
    cols = np.concatenate([lab[right_a], c + pa, 2 * c + lab[right_b], 3 * c + pb, 4 * c + lab,
                           np.full(np.count_nonzero(right_a & ~right_b), 5 * c),
                           np.full(np.count_nonzero(~right_a & right_b), 5 * c + 1)])
    n_features = 5 * c + 2
    design = sp.csr_matrix((np.ones(rows.size), (cols, rows)), shape=(n_features, k))

    def statistics(features: np.ndarray) -> dict[str, np.ndarray]:
        tp_a, pred_count_a, tp_b, pred_count_b, true = (features[:, i * c:(i + 1) * c] for i in range(5))
        acc_a, acc_b = tp_a.sum(axis=1) / n, tp_b.sum(axis=1) / n
        f1_a, f1_b = _macro_f1(tp_a, pred_count_a, true), _macro_f1(tp_b, pred_count_b, true)
        return {"acc_a": acc_a, "acc_b": acc_b, "delta": acc_b - acc_a, "nfr": features[:, 5 * c] / n,
                "pfr": features[:, 5 * c + 1] / n, "f1_a": f1_a, "f1_b": f1_b, "f1_delta": f1_b - f1_a}

    point_features = np.asarray(design @ cell_counts.astype(np.float64))[None, :]
    point = {name: float(v[0]) for name, v in statistics(point_features).items()}
    parts = []
    for counts in _chunked_cell_counts(cell_counts, n_resamples, spawn_seed(seed, "paired/classification")):
        features = np.asarray(design @ counts.T.astype(np.float64)).T
        parts.append(statistics(features))
    boot = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    n10, n01 = int(point_features[0, 5 * c]), int(point_features[0, 5 * c + 1])
    method = _method(confidence, n_resamples, seed,
                     f"exact multinomial over the {k} observed (label, pred_A, pred_B) cells")
    zero_discordant = BinomialFallback("zero_discordant", 0, n) if n01 + n10 == 0 else None
    return PairedClassification(
        n=n,
        accuracy_a=point["acc_a"],
        accuracy_b=point["acc_b"],
        accuracy_delta=_estimate(point["delta"], boot["delta"], method, confidence, zero_discordant),
        negative_flip_rate=_estimate(point["nfr"], boot["nfr"], method, confidence,
                                     BinomialFallback("proportion", n10, n)),
        positive_flip_rate=_estimate(point["pfr"], boot["pfr"], method, confidence,
                                     BinomialFallback("proportion", n01, n)),
        macro_f1_a=point["f1_a"],
        macro_f1_b=point["f1_b"],
        macro_f1_delta=_estimate(point["f1_delta"], boot["f1_delta"], method, confidence),
        mcnemar_p=mcnemar_exact(n01, n10),
        n01=n01,
        n10=n10,
    )


# --------------------------------------------------------------------------------------------------
# Per-group accuracy deltas
# --------------------------------------------------------------------------------------------------


def paired_group_deltas(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    groups: np.ndarray,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    min_size: int = 1,
) -> list[GroupDelta]:
    """Per-group accuracy deltas (B - A) with exact intervals and exact McNemar p-values.

    ``groups``: labels for per-class deltas, a metadata column for per-slice deltas (any values; groups
    are named ``str(value)`` and returned in ``np.unique`` order). A group's interval is
    :func:`paired_delta_interval` of its discordant counts: exact, so it covers also where a bootstrap
    interval would not (no discordant pair; one flip of 70, whose bootstrap lower end -0.043 understates the
    exact -0.077). ``delta.samples`` are still the stratified paired bootstrap's replicates (an exact
    multinomial over the group's 2x2 table, seeded from (seed, group name)), kept for plots and
    diagnostics; the exact one-sided p-values are :meth:`GroupDelta.p_below` / :meth:`GroupDelta.p_above`.
    Groups with fewer than ``min_size`` samples get an interval but a NaN McNemar p-value (not tested).
    ``p_adjusted`` is left None: see :func:`adjust_group_pvalues`.
    """
    _check_common(n_resamples, confidence)
    where = "paired_group_deltas"
    ca = _vector(correct_a, "correct_a", where).astype(bool)
    n = ca.shape[0]
    cb = _vector(correct_b, "correct_b", where, n).astype(bool)
    names, group_index = np.unique(_vector(groups, "groups", where, n), return_inverse=True)
    group_index = group_index.reshape(-1)
    tables = np.bincount(group_index * 4 + ca * 2 + cb, minlength=names.size * 4).reshape(-1, 4)
    # Table columns: 0 = both wrong, 1 = A wrong B right (n01), 2 = A right B wrong (n10), 3 = both right.
    sizes = tables.sum(axis=1)
    p_values = _mcnemar(tables[:, 1], tables[:, 2])
    method = (f"exact unconditional interval, {confidence * 100:g}% (Tango's score test on the group's discordant "
              "counts, p-values maximized over the discordance rate, Berger-Boos gamma "
              f"{BERGER_BOOS_GAMMA:g}); replicates: paired bootstrap (B={n_resamples}, seed={seed}), an exact "
              "multinomial over the group's 2x2 (correct_A, correct_B) table, resampled within the group")
    out = []
    for g, name in enumerate(names):
        group, size, (_, n01, n10, both) = str(name), int(sizes[g]), (int(v) for v in tables[g])
        boot = bootstrap_cell_counts(tables[g], n_resamples, spawn_seed(seed, f"paired/group/{group}"))
        lo, hi = paired_delta_interval(n01, n10, size, confidence)
        out.append(GroupDelta(
            group=group,
            n=size,
            accuracy_a=(n10 + both) / size,
            accuracy_b=(n01 + both) / size,
            delta=PairedEstimate((n01 - n10) / size, lo, hi, ((boot[:, 1] - boot[:, 2]) / size).astype(np.float64),
                                 method),
            negative_flip_rate=n10 / size,
            positive_flip_rate=n01 / size,
            mcnemar_p=float(p_values[g]) if size >= min_size else float("nan"),
            p_adjusted=None,
            n01=n01,
            n10=n10,
        ))
    return out


def adjust_group_pvalues(deltas: list[GroupDelta], method: Literal["holm", "bh"] = "holm") -> list[GroupDelta]:
    """Copies of ``deltas`` with ``p_adjusted`` filled from their McNemar p-values: Holm (family-wise
    error) or Benjamini–Hochberg (false discovery rate). Untested groups (NaN p) stay NaN."""
    if not deltas:
        return []
    correction = {"holm": holm, "bh": benjamini_hochberg}.get(method)
    if correction is None:
        raise UserError(f"unknown correction {method!r}", where="adjust_group_pvalues", fix="use 'holm' or 'bh'")
    _, adjusted = correction(np.array([d.mcnemar_p for d in deltas]))
    return [replace(d, p_adjusted=float(p)) for d, p in zip(deltas, adjusted)]


# --------------------------------------------------------------------------------------------------
# Continuous statistics: mean delta, ECE delta
# --------------------------------------------------------------------------------------------------


def _use_exact(scheme: Scheme, n: int, where: str) -> bool:
    if scheme not in ("auto", "exact", "stratified"):
        raise UserError(f"unknown scheme {scheme!r}", where=where, fix="use 'auto', 'exact' or 'stratified'")
    return scheme == "exact" or (scheme == "auto" and n <= EXACT_MAX_N)


def _strata_normal_sums(counts: np.ndarray, mean: np.ndarray, chol: np.ndarray, rng: np.random.Generator
                        ) -> np.ndarray:
    """Within-stratum sums of m resampled values: m mean + sqrt(m) L Z, Z standard normal.

    ``mean`` (S, d), ``chol`` (S, d, d) lower Cholesky factors of the within-stratum covariance;
    returns (b, S, d). Exact when a stratum's values are constant (L = 0)."""
    m = counts.astype(np.float64)
    z = rng.standard_normal((*m.shape, mean.shape[1]))
    noise = np.einsum("sij,bsj->bsi", chol, z)
    return m[..., None] * mean[None] + np.sqrt(m)[..., None] * noise


def paired_mean_delta(
    values_a: np.ndarray,
    values_b: np.ndarray,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    scheme: Scheme = "auto",
) -> PairedEstimate:
    """Delta of means, mean(values_b) - mean(values_a), of per-sample values (e.g. NLL), paired bootstrap.

    The delta of means is the mean of the per-sample differences d. ``scheme="exact"`` (the default up
    to ``EXACT_MAX_N`` samples): per-sample multiplicities. ``"stratified"``: ``MEAN_STRATA`` quantile
    strata of d, exact multinomial counts over strata, each stratum's resampled sum drawn as
    m mean + sqrt(m) sd Z (sd with ddof=0, as the bootstrap draws from the empirical distribution).
    """
    _check_common(n_resamples, confidence)
    where = "paired_mean_delta"
    a = _finite(values_a, "values_a", where)
    d = _finite(values_b, "values_b", where, a.shape[0]) - a
    n = d.shape[0]
    value = float(d.mean())
    if _use_exact(scheme, n, where):
        centred = (d - value).astype(np.float32)
        parts = [(w @ centred).astype(np.float64) / n for w in bootstrap_weights(n, n_resamples,
                                                                                   spawn_seed(seed, "paired/mean"))]
        samples = value + np.concatenate(parts)
        detail = "exact per-sample multiplicities (Multinomial(n, 1/n))"
    else:
        strata = min(MEAN_STRATA, n)
        ordered = np.sort(d)
        base, extra = divmod(n, strata)
        sizes = np.full(strata, base, dtype=np.int64)
        sizes[:extra] += 1
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        mean = np.add.reduceat(ordered, starts) / sizes
        sd = np.sqrt(np.add.reduceat((ordered - np.repeat(mean, sizes)) ** 2, starts) / sizes)
        rng = np.random.default_rng(spawn_seed(seed, "paired/mean/noise"))
        parts = []
        for counts in _chunked_cell_counts(sizes, n_resamples, spawn_seed(seed, "paired/mean/strata")):
            sums = _strata_normal_sums(counts, mean[:, None], sd[:, None, None], rng)[..., 0]
            parts.append(sums.sum(axis=1) / n)
        samples = np.concatenate(parts)
        detail = (f"stratified: exact multinomial counts over {strata} quantile strata of the per-sample "
                  "difference, within-stratum sums drawn from their normal approximation (m mean + sqrt(m) sd Z)")
    return _estimate(value, samples, _method(confidence, n_resamples, seed, detail), confidence)


def paired_ece_delta(
    confidence_a: np.ndarray,
    correct_a: np.ndarray,
    confidence_b: np.ndarray,
    correct_b: np.ndarray,
    *,
    n_bins: int = 15,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    scheme: Scheme = "auto",
) -> PairedEstimate:
    """ECE_B - ECE_A: top-label, ``n_bins`` equal-width bins ``[lo, hi)`` (last ``[lo, 1]``), L1,
    bin-mass weights (Guo et al. 2017) — the ECE of ``assay.stats.calibration`` — same resamples for both.

    ECE = sum_b |sum over bin b of (correct - confidence)| / n, so each resample needs one weighted sum
    per (model, bin). ``"exact"`` (default up to ``EXACT_MAX_N``): per-sample multiplicities.
    ``"stratified"``: strata (bin_A, bin_B, correct_A, correct_B), exact multinomial counts over them,
    each stratum's sums of (confidence_A, confidence_B) drawn from their bivariate normal approximation
    with the within-stratum covariance.
    """
    _check_common(n_resamples, confidence)
    where = "paired_ece_delta"
    conf_a = _finite(confidence_a, "confidence_a", where)
    n = conf_a.shape[0]
    conf_b = _finite(confidence_b, "confidence_b", where, n)
    right_a = _vector(correct_a, "correct_a", where, n).astype(bool)
    right_b = _vector(correct_b, "correct_b", where, n).astype(bool)
    edges = equal_width_edges(n_bins)
    bin_a, bin_b = assign_bins(conf_a, edges, "left"), assign_bins(conf_b, edges, "left")
    groups = np.concatenate([bin_a, bin_b + n_bins])
    residual = np.concatenate([right_a - conf_a, right_b - conf_b])
    point_sums = np.bincount(groups, residual, minlength=2 * n_bins)

    def ece_delta(sums: np.ndarray) -> np.ndarray:
        ece = np.abs(sums).reshape(*sums.shape[:-1], 2, n_bins).sum(axis=-1) / n
        return ece[..., 1] - ece[..., 0]

    value = float(ece_delta(point_sums))
    if _use_exact(scheme, n, where):
        # Per-bin residual sums under each resample: float64 totals plus float32 sums of (w - 1) x residual.
        sums = GroupSums(np.tile(np.arange(n), 2), groups, 2 * n_bins, n, residual)
        samples = np.concatenate([ece_delta(sums(w)) for w in bootstrap_weights(
            n, n_resamples, spawn_seed(seed, "paired/ece"), order="F")])
        detail = f"exact per-sample multiplicities (Multinomial(n, 1/n)); {n_bins} equal-width bins"
    else:
        samples, strata = _ece_delta_stratified(conf_a, right_a, bin_a, conf_b, right_b, bin_b, n_bins,
                                                n_resamples, seed, ece_delta)
        detail = (f"stratified: exact multinomial counts over the {strata} observed (bin_A, bin_B, correct_A, "
                  f"correct_B) strata ({n_bins} equal-width bins), within-stratum confidence sums drawn from "
                  "their bivariate normal approximation")
    return _estimate(value, samples, _method(confidence, n_resamples, seed, detail), confidence)


def _ece_delta_stratified(
    conf_a: np.ndarray, right_a: np.ndarray, bin_a: np.ndarray,
    conf_b: np.ndarray, right_b: np.ndarray, bin_b: np.ndarray,
    n_bins: int, n_resamples: int, seed: int, ece_delta: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, int]:
    """Replicates of the ECE delta under the stratified scheme, and the number of observed strata."""
    n_codes = n_bins * n_bins * 4
    code = ((bin_a * n_bins + bin_b) * 2 + right_a) * 2 + right_b
    cells, m = _observed_cells(code, n_codes)
    lookup = np.zeros(n_codes, dtype=np.int64)
    lookup[cells] = np.arange(cells.size)
    stratum = lookup[code]
    s = cells.size
    stratum_right = np.stack([(cells // 2) % 2, cells % 2], axis=1).astype(np.float64)  # (S, 2)
    stratum_bin = np.stack([cells // (4 * n_bins), (cells // 4) % n_bins + n_bins], axis=1)
    values = np.stack([conf_a, conf_b], axis=1)
    mean = np.stack([np.bincount(stratum, values[:, j], minlength=s) for j in range(2)], axis=1) / m[:, None]
    centred = values - mean[stratum]
    cov = np.empty((s, 2, 2))
    for i, j in ((0, 0), (1, 1), (0, 1)):
        cov[:, i, j] = cov[:, j, i] = np.bincount(stratum, centred[:, i] * centred[:, j], minlength=s) / m
    # 2x2 Cholesky, tolerant of singular covariances (constant or perfectly correlated values).
    chol = np.zeros((s, 2, 2))
    chol[:, 0, 0] = np.sqrt(cov[:, 0, 0])
    chol[:, 1, 0] = np.divide(cov[:, 0, 1], chol[:, 0, 0], out=np.zeros(s), where=chol[:, 0, 0] > 0)
    chol[:, 1, 1] = np.sqrt(np.maximum(cov[:, 1, 1] - chol[:, 1, 0] ** 2, 0.0))
    # (S x 2 models) -> (2 n_bins) indicator: which bin sum each stratum's residual adds to.
    to_bins = np.zeros((s, 2, 2 * n_bins))
    to_bins[np.arange(s), 0, stratum_bin[:, 0]] = 1.0
    to_bins[np.arange(s), 1, stratum_bin[:, 1]] = 1.0
    rng = np.random.default_rng(spawn_seed(seed, "paired/ece/noise"))
    parts = []
    for counts in _chunked_cell_counts(m, n_resamples, spawn_seed(seed, "paired/ece/strata")):
        conf_sums = _strata_normal_sums(counts, mean, chol, rng)  # (b, S, 2)
        residual = counts[..., None] * stratum_right[None] - conf_sums
        parts.append(ece_delta(np.einsum("bsk,skg->bg", residual, to_bins)))
    return np.concatenate(parts), s


# --------------------------------------------------------------------------------------------------
# Sample size
# --------------------------------------------------------------------------------------------------


def required_sample_size(estimate: PairedEstimate, n: int, threshold: float) -> int | None:
    """Samples at which the interval would exclude ``threshold`` if the point estimate stayed put and the
    half-width shrank like 1 / sqrt(n): ceil(n (half_width / |value - threshold|)^2).

    The half-width is the one facing the threshold (the interval may be asymmetric). None when value
    equals the threshold (no n suffices) or the interval is undefined.
    """
    distance = abs(estimate.value - threshold)
    half = estimate.ci_high - estimate.value if threshold > estimate.value else estimate.value - estimate.ci_low
    if distance == 0 or not math.isfinite(half) or not math.isfinite(distance):
        return None
    needed = n * (half / distance) ** 2
    return max(1, math.ceil(needed * (1.0 - 1e-12)))  # tolerance: (0.02 / 0.01)^2 must give 4, not 4 + eps
