"""Bootstrap confidence intervals, vectorized over resamples.

Two exact resampling schemes, both equivalent to drawing n samples with replacement (Efron 1979):

* ``bootstrap_cell_counts`` — for statistics that depend only on a contingency table (accuracy, F1,
  balanced accuracy, per-class precision/recall): resampling n labelled predictions with replacement
  is exactly a Multinomial(n, cell_counts / n) draw over the table's cells, so 1,000 resamples of
  any n cost O(1,000 x cells).
* ``bootstrap_weights`` — for statistics of continuous per-sample values (NLL, Brier, ECE): each
  resample is a vector of per-sample multiplicities (Multinomial(n, 1/n)), yielded in chunks so that
  memory stays bounded; a statistic is then a weighted sum (``weights @ values``) or a weighted
  group sum (``group_sums``).

Intervals are percentile intervals (Efron & Tibshirani 1993, ch. 13), except for maxima of absolute
differences (a demographic-parity difference, a worst-slice gap), whose bootstrap is inconsistent where
differences tie or vanish: those get a union of simultaneous max-|t| intervals (``max_abs_ci``,
``rate_spread_intervals``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

__all__ = [
    "BootstrapResult",
    "GroupSums",
    "SharedWeights",
    "SpreadIntervals",
    "bias_corrected_ci",
    "bootstrap_cell_counts",
    "bootstrap_weights",
    "clopper_pearson",
    "group_sums",
    "max_abs_ci",
    "percentile_ci",
    "rate_spread_intervals",
    "spawn_seed",
]

# Seed layout of bootstrap_weights: resamples are drawn in chunks of _WEIGHTS_PER_CHUNK // n rows, each cut
# into _SUB_BLOCKS row blocks whose seeds derive from (seed, chunk, block). Both constants define the random
# stream (changing them changes every interval); how many rows are handed out at once does not.
_WEIGHTS_PER_CHUNK = 20_000_000
_SUB_BLOCKS = 8
# SharedWeights: kept in memory as uint8 up to this many weights, handed out in arrays of at most
# _SHARED_WEIGHTS_PER_ARRAY (4M float32 = 16 MB) so that no check holds a (B, n) float matrix at once
# (16 MB arrays measured as fast as 32 MB ones, and 30 MiB lower peak memory for the whole run).
_SHARED_MAX_BYTES = 128 * 2**20
_SHARED_WEIGHTS_PER_ARRAY = 4_000_000
# GroupSums, float64 weights: up to this many groups a dense (n, groups) design and one BLAS product beat
# the sparse kernel (measured at n = 50,000).
_DENSE_MAX_GROUPS = 128
# GroupSums: deviations (weights - 1) materialized per step (4M float32 = 16 MB: the sparse kernel is
# twice as fast on 80 rows as on 20, and SharedWeights hands out arrays of at most 4M weights).
_DEVIATIONS_PER_STEP = 4_000_000


@dataclass(frozen=True)
class BootstrapResult:
    """Point estimate, percentile interval and the resampled values behind it."""

    value: float
    ci_low: float
    ci_high: float
    samples: np.ndarray


def spawn_seed(seed: int, name: str) -> np.random.SeedSequence:
    """A seed sequence for one named statistic: independent streams, reproducible from (seed, name)."""
    key = [int(b) for b in name.encode("utf-8")]
    return np.random.SeedSequence([int(seed), *key])


def percentile_ci(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap samples along axis 0 (NaN resamples ignored)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    samples = np.asarray(samples, dtype=np.float64)
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bias_corrected_ci(samples: np.ndarray, estimate: float, confidence: float = 0.95) -> tuple[float, float]:
    """Bias-corrected (BC) percentile interval (Efron 1981; Efron & Tibshirani 1993, sec. 14.3, BCa with
    acceleration 0): percentiles ``Phi(2 z0 + z_alpha)`` with ``z0 = Phi^-1(share of replicates below the
    estimate)``. For statistics whose resamples are biased, the plain percentile interval can miss the
    estimate altogether; BC shifts it back. Not for maxima of absolute differences (a demographic-parity
    difference, a worst-slice gap): where differences tie or vanish BC collapses below the truth (issue 20);
    use :func:`max_abs_ci` / :func:`rate_spread_intervals` there. When the estimate lies outside the central
    ``confidence`` share of the replicates, the percentile interval widened to include the estimate is
    returned instead (BC would collapse onto the extreme replicates there)."""
    from scipy.stats import norm

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    values = np.asarray(samples, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0 or not np.isfinite(estimate):
        return float("nan"), float("nan")
    below = (np.count_nonzero(values < estimate) + 0.5 * np.count_nonzero(values == estimate)) / values.size
    alpha = (1.0 - confidence) / 2.0
    if below < alpha or below > 1.0 - alpha:
        # The estimate lies outside the central replicates (e.g. a max of noisy differences near 0, where
        # every replicate is larger): no shift of percentiles is trustworthy there. Report the percentile
        # interval widened to include the estimate -- conservative, never empty.
        lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
        return float(min(lo, estimate)), float(max(hi, estimate))
    z0 = norm.ppf(below)
    lo_q, hi_q = norm.cdf(2 * z0 + norm.ppf(alpha)), norm.cdf(2 * z0 + norm.ppf(1.0 - alpha))
    lo, hi = np.quantile(values, [lo_q, hi_q])
    return float(lo), float(hi)


def bootstrap_cell_counts(
    cell_counts: np.ndarray, n_resamples: int, seed: int | np.random.SeedSequence
) -> np.ndarray:
    """Resampled cell counts of a contingency table, shape ``(n_resamples, *cell_counts.shape)``.

    Exact: drawing n items with replacement from a table with counts c is Multinomial(n, c / n).
    """
    counts = np.asarray(cell_counts, dtype=np.int64)
    flat = counts.ravel()
    n = int(flat.sum())
    if n == 0:
        return np.zeros((n_resamples, *counts.shape), dtype=np.int64)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, flat / n, size=n_resamples)
    return draws.reshape((n_resamples, *counts.shape))


def _child_seed(seed: int | np.random.SeedSequence, *path: int) -> np.random.SeedSequence:
    """The seed of sub-stream ``path``, derived without mutating ``seed`` (as SeedSequence.spawn would)."""
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, *path))


def _fill_multiplicities(out: np.ndarray, seed: np.random.SeedSequence) -> None:
    """Fill each row of ``out`` (b, n) with Multinomial(n, 1/n) counts, row by row (each bincount
    then touches an n-sized array that stays in cache: 3x faster than one bincount over b*n bins).

    ``out`` may be uint8: a count above 255 has probability below 1e-500 for any n (a count is
    Binomial(n, 1/n), about Poisson(1)), but it is checked rather than silently wrapped."""
    n = out.shape[1]
    rng = np.random.default_rng(seed)
    index_dtype = np.int32 if n < 2**31 else np.int64
    limit = np.iinfo(out.dtype).max if out.dtype.kind == "u" else None
    # A column-major ``out`` is filled through a row-major block, then transposed here, in the worker.
    rows = out if out.flags.c_contiguous or out.shape[0] == 1 else np.empty(out.shape, out.dtype)
    for r in range(out.shape[0]):
        counts = np.bincount(rng.integers(0, n, size=n, dtype=index_dtype), minlength=n)
        if limit is not None and n > limit and counts.max() > limit:
            raise OverflowError(f"a bootstrap multiplicity exceeds {limit}; use a wider dtype")
        rows[r] = counts
    if rows is not out:
        out[...] = rows


def _blocks(n: int, n_resamples: int) -> list[tuple[int, int, tuple[int, int]]]:
    """(first row, end row, (chunk, block)) of every seeded row block, in row order (the seed layout)."""
    per_chunk = max(1, min(n_resamples, _WEIGHTS_PER_CHUNK // n))
    blocks = []
    for chunk, start in enumerate(range(0, n_resamples, per_chunk)):
        rows = min(per_chunk, n_resamples - start)
        bounds = np.linspace(0, rows, _SUB_BLOCKS + 1).astype(int)
        blocks += [(start + lo, start + hi, (chunk, block))
                   for block, (lo, hi) in enumerate(itertools.pairwise(bounds)) if hi > lo]
    return blocks


def bootstrap_weights(
    n: int,
    n_resamples: int,
    seed: int | np.random.SeedSequence,
    *,
    max_weights: int = _WEIGHTS_PER_CHUNK,
    dtype: type[np.generic] = np.float32,
    order: Literal["C", "F"] = "C",
) -> Iterator[np.ndarray]:
    """Yield arrays of per-sample resample multiplicities, shape ``(b, n)``, of ``dtype``.

    Row r counts how often each sample was drawn in resample r (rows sum to n). The arrays together
    hold ``n_resamples`` rows; each holds at most ``max_weights`` weights (but at least one seeded
    block). Blocks are filled on a thread pool with seeds derived from (seed, chunk, block), and the
    next ones are drawn while the caller works on the current array: the values depend on the seed
    and n only, never on the thread count, ``max_weights`` or ``order`` (numpy releases the GIL while
    drawing). ``order="F"`` hands out column-major arrays, what products over samples read fastest
    (:class:`GroupSums`); they are drawn as uint8 and transposed by the workers, then converted.
    """
    if n <= 0:
        raise ValueError("bootstrap needs at least one sample")
    groups: list[list[tuple[int, int, tuple[int, int]]]] = []
    for block in _blocks(n, n_resamples):
        if groups and (block[1] - groups[-1][0][0]) * n <= max_weights:
            groups[-1].append(block)
        else:
            groups.append([block])
    fill_dtype = np.uint8 if order == "F" else dtype
    workers = min(_SUB_BLOCKS, os.cpu_count() or 1)
    todo = deque((g, block) for g, group in enumerate(groups) for block in group)
    arrays: dict[int, np.ndarray] = {}
    pending: deque[tuple[int, Future[None]]] = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for g in range(len(groups)):
            # Submit every block of array g and `workers` blocks beyond it: those are drawn while the
            # caller works on array g.
            while todo and (todo[0][0] <= g or sum(h > g for h, _ in pending) < workers):
                h, (lo, hi, path) = todo.popleft()
                first = groups[h][0][0]
                if h not in arrays:
                    arrays[h] = np.empty((groups[h][-1][1] - first, n), dtype=fill_dtype, order=order)
                rows = arrays[h][lo - first:hi - first]
                pending.append((h, pool.submit(_fill_multiplicities, rows, _child_seed(seed, *path))))
            while pending and pending[0][0] == g:
                pending.popleft()[1].result()
            array = arrays.pop(g)
            yield array.astype(dtype, copy=False)  # column-major stays column-major


class SharedWeights:
    """The resample weights of one run, shared by every check so that all metrics use the same
    resamples (and the draws are paid for once).

    Kept in memory as uint8 multiplicities when ``n x n_resamples <= max_bytes`` (50 MB for 1,000
    resamples of 50,000 samples; float32 would take 200 MB), else drawn again on each pass (same
    seed, same values). Iteration yields float32 arrays of at most 8M weights, column-major (b, n):
    sparse products over samples (``design @ weights.T``) then read them contiguously.
    """

    def __init__(self, n: int, n_resamples: int, seed: int | np.random.SeedSequence,
                 max_bytes: int = _SHARED_MAX_BYTES) -> None:
        self.n, self.n_resamples, self.seed = n, n_resamples, seed
        self._keep = n * n_resamples <= max_bytes  # one byte per weight
        self._kept: list[np.ndarray] | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._kept is not None:
            return (block.astype(np.float32) for block in self._kept)  # astype keeps the column-major order
        return self._draw()

    def _draw(self) -> Iterator[np.ndarray]:
        kept = []
        for block in bootstrap_weights(self.n, self.n_resamples, self._seed(), dtype=np.uint8, order="F",
                                       max_weights=_SHARED_WEIGHTS_PER_ARRAY):
            if self._keep:
                kept.append(block)
            yield block.astype(np.float32)
        if self._keep:
            self._kept = kept  # only once complete: a pass abandoned half-way keeps nothing

    def _seed(self) -> np.random.SeedSequence:
        # A fresh SeedSequence each pass, so regenerated arrays equal the first ones.
        if isinstance(self.seed, np.random.SeedSequence):
            return np.random.SeedSequence(self.seed.entropy, spawn_key=self.seed.spawn_key)
        return np.random.SeedSequence(self.seed)

    def means(self, values: np.ndarray) -> np.ndarray:
        """Resampled means of per-sample values: shape (n_resamples,) or (n_resamples, m) for (n, m).

        Computed as ``mean + weights @ (values - mean) / n`` in float32 BLAS: centring keeps the
        float32 sums small, so the rounding error stays far below the bootstrap spread.
        """
        values = np.asarray(values, dtype=np.float64)
        centre = values.mean(axis=0)
        centred = (values - centre).astype(np.float32)
        parts = [(w @ centred).astype(np.float64) / self.n for w in self]
        return centre + np.concatenate(parts, axis=0)


def group_sums(
    weights: np.ndarray, groups: np.ndarray, n_groups: int, values: np.ndarray | None = None
) -> np.ndarray:
    """Per-group weighted sums for each resample: ``out[r, g] = sum_i weights[r, i] * values[i] [groups[i] == g]``.

    ``values`` defaults to ones (then the result is the resampled group sizes). Uses a sparse
    (n_groups x n) indicator so the cost is O(resamples x n).
    """
    groups = np.asarray(groups, dtype=np.int64)
    n = groups.shape[0]
    data = np.ones(n, dtype=np.float64) if values is None else np.asarray(values, dtype=np.float64)
    indicator = sp.csr_matrix((data, (groups, np.arange(n))), shape=(n_groups, n))
    return np.asarray((indicator @ np.asarray(weights, dtype=np.float64).T).T)


class GroupSums:
    """``out[r, g] = sum_j weights[r, samples[j]] * values[j] [groups[j] == g]`` over entries j, for many
    weight arrays over the same entries (the bootstrap's arrays of multiplicities).

    The design is built once and reused for every array of weights. float64 weights (point estimates) are
    summed directly (a dense design and BLAS up to _DENSE_MAX_GROUPS groups). float32 weights (bootstrap
    multiplicities) are summed as ``sum_j values[j] + sum_j (weights - 1) values[j]``: the
    first term exact (float64, once), the second (the resample's small deviation) in float32, sample by
    sample — accurate to ~1e-7 of the total (a float32 product of the raw weights is ~10x less
    accurate) and several times faster than a dense one-hot product. Results are float64. Stack several
    statistics by offsetting their group indices: the weights are then read once for all.
    """

    def __init__(self, samples: np.ndarray, groups: np.ndarray, n_groups: int, n: int,
                 values: np.ndarray | None = None) -> None:
        samples = np.asarray(samples, dtype=np.int64)
        data = np.ones(samples.shape[0]) if values is None else np.asarray(values, dtype=np.float64)
        self.n, self.n_groups = n, n_groups
        # The entries as a (groups x samples) float64 matrix: the point estimate's design, and the source
        # of the bootstrap's float32 one (built on first use, then kept).
        self._matrix = sp.csr_matrix((data, (np.asarray(groups, dtype=np.int64), samples)), shape=(n_groups, n))
        self._deviation_design: Any = None
        self._totals = np.asarray(self._matrix.sum(axis=1), dtype=np.float64).ravel()

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        weights = np.asarray(weights)
        if weights.ndim != 2 or weights.shape[1] != self.n:
            raise ValueError(f"weights must have shape (resamples, {self.n}), got {weights.shape}")
        if weights.dtype != np.float32:
            weights = weights.astype(np.float64, copy=False)
            if self.n_groups <= _DENSE_MAX_GROUPS:  # few groups: a dense (n, groups) design and BLAS
                return weights @ self._matrix.toarray().T
            return np.asarray((self._matrix @ weights.T).T)
        if self._deviation_design is None:
            # Compressed by sample (CSC): the product walks the samples once, each reading its b
            # (column-major) weights once for all its entries.
            self._deviation_design = self._matrix.astype(np.float32).tocsc()
        out = np.empty((weights.shape[0], self.n_groups))
        step = max(1, _DEVIATIONS_PER_STEP // self.n)
        for start in range(0, weights.shape[0], step):
            # weights - 1, step rows at a time; column-major stays column-major (what the kernel reads)
            deviation = np.subtract(weights[start:start + step], np.float32(1.0), dtype=np.float32)
            out[start:start + step] = (self._deviation_design @ deviation.T).T
        out += self._totals
        return out


def clopper_pearson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval (Clopper & Pearson 1934), via Beta quantiles.

    Used where the percentile bootstrap degenerates: a proportion of exactly 0 or 1 makes every
    resample identical, so the bootstrap interval collapses to a point and claims certainty it lacks.
    """
    from scipy.special import betaincinv  # the Beta quantile without importing scipy.stats (~70 MiB)

    alpha = 1.0 - confidence
    lo = 0.0 if successes == 0 else float(betaincinv(successes, n - successes + 1, alpha / 2))
    hi = 1.0 if successes == n else float(betaincinv(successes + 1, n - successes, 1 - alpha / 2))
    return lo, hi


# max_abs_ci / rate_spread_intervals: differences materialized at once, at most this many (32 MB of float64).
_MAX_T_ELEMENTS = 4_000_000


@contextlib.contextmanager
def _quiet_nan_warnings() -> Iterator[None]:
    """Silence numpy's all-NaN / empty-slice warnings: an undefined statistic is NaN on purpose."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _max_t(estimates: np.ndarray, samples: np.ndarray, min_scale: np.ndarray | None,
           ) -> tuple[np.ndarray, np.ndarray]:
    """Scales (R, m) and per-resample max |t| (B, R) of R families of m statistics; ``samples`` is (B, R, m).

    A statistic's scale is its bootstrap standard deviation, raised to ``min_scale`` where given. NaN
    estimates drop their statistic; NaN replicates drop it from that resample (a resample where a whole
    family is NaN gives NaN)."""
    with _quiet_nan_warnings():
        scale = np.nanstd(samples, axis=0, ddof=1)
    if min_scale is not None:
        scale = np.fmax(scale, min_scale)
    deviation = np.abs(samples - estimates)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(deviation == 0, 0.0, deviation / scale)  # scale 0 and a deviation: inf
    t[:, ~np.isfinite(estimates) | np.isnan(scale)] = np.nan
    return scale, np.fmax.reduce(t, axis=2)


def _critical(t_max: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Critical values (lower, upper) per column of max |t| (B, R), NaN resamples ignored.

    Two valid choices, the one with the smaller sum is taken (it depends on the number and correlation of
    the statistics, not on where the estimates lie): (a) both the ``confidence`` quantile c of max |t|, the
    simultaneous two-sided intervals; (b) the ``1 - alpha/2`` quantile of max |t| for the lower end and the
    normal ``z_(1 - alpha/2)`` for the upper end. (b) is valid because the upper end only has to reach the
    one statistic that attains the true maximum, a fixed one: a one-sided marginal bound at level alpha/2
    does, whatever the number of statistics; the lower end must stay under the maximum for all of them,
    simultaneously, at level alpha/2. (a) wins for one or two statistics, (b) for more. Neither quantile is
    taken below its normal value for one statistic (``z_(1 - alpha/2)``, ``z_(1 - alpha/4)``): a family whose
    replicates never move (rates of 0 or 1) keeps the width its ``min_scale`` gives."""
    from scipy.special import ndtri  # the normal quantile without importing scipy.stats

    alpha = 1.0 - confidence
    joint, lower = _column_quantiles(t_max, (confidence, 1.0 - alpha / 2))
    z_half, z_quarter = float(ndtri(1.0 - alpha / 2)), float(ndtri(1.0 - alpha / 4))
    joint, lower = np.maximum(joint, z_half), np.maximum(lower, z_quarter)  # NaN (no usable resample) stays
    upper = np.full_like(lower, z_half)
    split = lower + upper < 2 * joint
    return np.where(split, lower, joint), np.where(split, upper, joint)


def _column_quantiles(values: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    """``np.nanquantile(values, levels, axis=0)`` (linear interpolation) for (B, R) values, vectorized over
    columns (numpy's nanquantile loops over them in Python); +inf values allowed."""
    ordered = np.sort(values, axis=0)  # NaN last
    finite_count = np.count_nonzero(~np.isnan(values), axis=0)
    columns = np.arange(values.shape[1])
    out = np.full((len(levels), values.shape[1]), np.nan)
    for i, level in enumerate(levels):
        position = level * np.maximum(finite_count - 1, 0)
        below = np.floor(position).astype(np.intp)
        above = np.minimum(below + 1, np.maximum(finite_count - 1, 0))
        low, high = ordered[below, columns], ordered[above, columns]
        fraction = position - below
        with np.errstate(invalid="ignore"):
            value = np.where(fraction == 0, low, low + (high - low) * fraction)
        out[i] = np.where(finite_count > 0, value, np.nan)
    return out


def _union(estimates: np.ndarray, scale: np.ndarray, critical: tuple[np.ndarray, np.ndarray],
           ) -> tuple[np.ndarray, np.ndarray]:
    """``[max_j max(|est_j| - c_low s_j, 0), max_j |est_j| + c_high s_j]`` over the last axis, NaN statistics
    skipped. Where each ``est_j -+ c s_j`` holds (see ``_critical``), the largest |statistic| lies in it."""
    c_low, c_high = critical
    size = np.abs(estimates)
    with _quiet_nan_warnings():
        return (np.nanmax(np.maximum(size - c_low[..., None] * scale, 0.0), axis=-1),
                np.nanmax(size + c_high[..., None] * scale, axis=-1))


def max_abs_ci(
    estimates: np.ndarray, samples: np.ndarray, confidence: float = 0.95, *, min_scale: np.ndarray | None = None,
) -> tuple[float, float]:
    """Interval for ``max_j |theta_j|`` from estimates (m,) and joint bootstrap replicates (B, m) of the theta_j.

    Percentile and bias-corrected bootstrap intervals of a maximum (of absolute differences) fail where
    the differences tie or vanish: the plug-in maximum is biased upward there and its bootstrap is
    inconsistent (Andrews 2000; Hirano & Porter 2012), so BC can collapse below the truth. Instead: the
    simultaneous max-|t| bootstrap intervals ``theta_j +- c s_j`` (Beran 1988; Westfall & Young 1993, sec.
    2.6), ``s_j`` the bootstrap SD (at least ``min_scale``, e.g. a plus-one binomial SE where a rate of 0 or 1
    makes every replicate equal) and ``c`` a quantile of ``max_j |theta*_j - theta_j| / s_j``; whenever they
    all cover, so does their union ``[max_j dist(0, I_j), max_j max|I_j|]``. Coverage is at least the
    simultaneous one for every configuration (a truth of 0, ties, one dominant difference). The upper end
    needs no multiplicity correction (see ``_critical``), so the price in width is mostly at the lower end,
    whose c grows slowly with m (2.24 for one statistic, about 2.9 for 6)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    est = np.asarray(estimates, dtype=np.float64).reshape(1, -1)
    reps = np.asarray(samples, dtype=np.float64).reshape(-1, 1, est.shape[1])
    floor = None if min_scale is None else np.broadcast_to(np.asarray(min_scale, dtype=np.float64), est.shape)
    if not np.isfinite(est).any() or reps.shape[0] == 0:
        return float("nan"), float("nan")
    scale, t_max = _max_t(est, reps, floor)
    lo, hi = _union(est, scale, _critical(t_max, confidence))
    return float(lo[0]), float(hi[0])


@dataclass(frozen=True)
class SpreadIntervals:
    """Intervals of the spread (max minus min over groups) of rates: per row (``low``, ``high``) and for
    the largest spread over all rows (``worst_low``, ``worst_high``)."""

    low: np.ndarray
    high: np.ndarray
    worst_low: float
    worst_high: float


def rate_spread_intervals(
    rates: np.ndarray, resampled: np.ndarray, trials: np.ndarray, confidence: float = 0.95, *, log: bool = False,
) -> SpreadIntervals:
    """Intervals for the spread of proportions over groups (the last axis), per row (the first axis) and
    for the largest over rows; any axes between pool rates into one row (an equalized-odds difference: the
    larger of the TPR and FPR spreads).

    ``rates`` (R, ..., G) are the observed proportions (NaN: undefined, skipped), ``trials`` their
    denominators, ``resampled`` (B, R, ..., G) their bootstrap replicates. The spread is the largest
    |r_g - r_h| over pairs of groups, so the interval is :func:`max_abs_ci` over the pairwise differences,
    with a plus-one binomial SE as the scale's floor (Agresti & Caffo 2000: (x + 1) / (n + 2), so a rate
    of 0 or 1 is not taken as certain). ``log=True``: the spread of log rates, ``-log`` of the ratio
    min / max (rates of 0 count as 0.5 / n, and pairs of two zero rates, ratio 0/0, are skipped; delta-method
    SE of the log as the floor). Rows are processed in chunks of bounded memory."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    rates = np.asarray(rates, dtype=np.float64)
    resampled = np.asarray(resampled, dtype=np.float64)
    trials = np.broadcast_to(np.asarray(trials, dtype=np.float64), rates.shape)
    n_rows, n_groups, n_boot = rates.shape[0], rates.shape[-1], resampled.shape[0]
    first, second = np.triu_indices(n_groups, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        smoothed = (rates * trials + 1.0) / (trials + 2.0)
        variance = (1.0 - smoothed) / ((trials + 2.0) * smoothed) if log else \
            smoothed * (1.0 - smoothed) / (trials + 2.0)
    variance = np.where(trials > 0, variance, np.nan)

    def pairs(values: np.ndarray, n: np.ndarray) -> np.ndarray:
        """Pairwise differences (..., rows, m) of rates (..., rows, ..., G) with denominators n (rows, ..., G)."""
        if log:
            with np.errstate(divide="ignore"):
                logs = np.log(np.fmax(values, 0.5 / n))
            both_zero = (values[..., first] == 0) & (values[..., second] == 0)
            diff = np.where(both_zero, np.nan, logs[..., first] - logs[..., second])
        else:
            diff = values[..., first] - values[..., second]
        return diff.reshape(*values.shape[:-len(rates.shape) + 1], -1)

    est_all = pairs(rates, trials)  # (R, m)
    if n_rows == 0 or est_all.shape[1] == 0 or n_boot == 0:
        empty = np.full(n_rows, np.nan)
        return SpreadIntervals(empty, empty.copy(), float("nan"), float("nan"))
    floor_all = np.sqrt(variance[..., first] + variance[..., second]).reshape(n_rows, -1)
    width = est_all.shape[1]
    step = max(1, _MAX_T_ELEMENTS // (max(1, n_boot) * width))
    scales, t_maxes = [], []
    for start in range(0, n_rows, step):
        rows = slice(start, start + step)
        reps = pairs(resampled[:, rows], trials[rows])
        scale, t_max = _max_t(est_all[rows], reps, floor_all[rows])
        scales.append(scale)
        t_maxes.append(t_max)
    scale, t_max = np.concatenate(scales), np.concatenate(t_maxes, axis=1)
    low, high = _union(est_all, scale, _critical(t_max, confidence))
    worst = np.fmax.reduce(t_max, axis=1)[:, None]
    worst_low, worst_high = _union(est_all.reshape(1, -1), scale.reshape(1, -1), _critical(worst, confidence))
    return SpreadIntervals(low=low, high=high, worst_low=float(worst_low[0]), worst_high=float(worst_high[0]))
