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

Intervals are percentile intervals (Efron & Tibshirani 1993, ch. 13).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = [
    "BootstrapResult",
    "bias_corrected_ci",
    "SharedWeights",
    "bootstrap_cell_counts",
    "bootstrap_weights",
    "clopper_pearson",
    "group_sums",
    "percentile_ci",
    "spawn_seed",
]

# Number of (resample x sample) weights materialized at once by bootstrap_weights.
_WEIGHTS_PER_CHUNK = 20_000_000
# Row blocks per chunk, each with its own seed: fixed, so results do not depend on the thread count.
_SUB_BLOCKS = 8


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
    estimate)``. For statistics whose resamples are biased (maxima and absolute differences such as a
    demographic-parity difference or a worst-slice gap, pushed up by resampling noise), the plain percentile
    interval can miss the estimate altogether; BC shifts it back. When the estimate lies outside the central
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
    then touches an n-sized array that stays in cache: 3x faster than one bincount over b*n bins)."""
    n = out.shape[1]
    rng = np.random.default_rng(seed)
    index_dtype = np.int32 if n < 2**31 else np.int64
    for r in range(out.shape[0]):
        out[r] = np.bincount(rng.integers(0, n, size=n, dtype=index_dtype), minlength=n)


def bootstrap_weights(
    n: int, n_resamples: int, seed: int | np.random.SeedSequence
) -> Iterator[np.ndarray]:
    """Yield chunks of per-sample resample multiplicities, float32 of shape ``(b, n)``.

    Row r counts how often each sample was drawn in resample r (rows sum to n). Chunks together hold
    ``n_resamples`` rows. Each chunk is filled in ``_SUB_BLOCKS`` row blocks with seeds derived from
    (seed, chunk, block), on a thread pool: the result depends on the seed and n only, never on the
    number of threads (numpy releases the GIL while drawing).
    """
    if n <= 0:
        raise ValueError("bootstrap needs at least one sample")
    per_chunk = max(1, min(n_resamples, _WEIGHTS_PER_CHUNK // n))
    workers = min(_SUB_BLOCKS, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for chunk, start in enumerate(range(0, n_resamples, per_chunk)):
            weights = np.empty((min(per_chunk, n_resamples - start), n), dtype=np.float32)
            bounds = np.linspace(0, len(weights), _SUB_BLOCKS + 1).astype(int)
            jobs = [
                pool.submit(_fill_multiplicities, weights[lo:hi], _child_seed(seed, chunk, block))
                for block, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]))
                if hi > lo
            ]
            for job in jobs:
                job.result()
            yield weights


class SharedWeights:
    """The resample weights of one run, shared by every check so that all metrics use the same
    resamples (and the draws are paid for once). Kept in memory when they fit ``max_bytes``.

    Chunks are column-major (b, n) float32: sparse products over samples (``design @ weights.T``)
    then read them contiguously, without a copy per statistic.
    """

    def __init__(self, n: int, n_resamples: int, seed: int | np.random.SeedSequence,
                 max_bytes: int = 256 * 2**20) -> None:
        self.n, self.n_resamples, self.seed = n, n_resamples, seed
        self._keep = n * n_resamples * 4 <= max_bytes
        self._chunks: list[np.ndarray] | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._chunks is not None:
            return iter(self._chunks)
        chunks = (np.asfortranarray(c) for c in bootstrap_weights(self.n, self.n_resamples, self._seed()))
        if not self._keep:
            return chunks
        self._chunks = list(chunks)
        return iter(self._chunks)

    def _seed(self) -> np.random.SeedSequence:
        # A fresh SeedSequence each pass, so regenerated chunks equal the first ones.
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


def clopper_pearson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval (Clopper & Pearson 1934), via Beta quantiles.

    Used where the percentile bootstrap degenerates: a proportion of exactly 0 or 1 makes every
    resample identical, so the bootstrap interval collapses to a point and claims certainty it lacks.
    """
    from scipy.stats import beta

    alpha = 1.0 - confidence
    lo = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, n - successes + 1))
    hi = 1.0 if successes == n else float(beta.ppf(1 - alpha / 2, successes + 1, n - successes))
    return lo, hi
