"""Estimates from a sample of a finite set of rows, and where the next rows should go.

A budgeted evaluation (``assay evaluate --budget``) cannot run every view on every row. It samples rows of each
view without replacement and reports, per view, the value the full run would have given *on this data*: the
population is the evaluation set itself (N rows), so the intervals carry the finite-population correction and
shrink to a point when every row was sampled. Pure functions over counts and arrays; no model, no engine.

* :func:`proportion_intervals_wor` -- a share of 0/1 values (accuracy, robust accuracy): the exact interval of
  K/N from x successes in n draws without replacement, by inverting the hypergeometric test with alpha/2 in
  each tail (the finite-population analogue of Clopper & Pearson 1934; Wright 1991, "Exact confidence bounds
  when sampling from small finite universes", JASA 86). Its coverage is at least the nominal level for every K.
* :func:`mean_interval_wor` -- the mean of bounded real values (an AUROC placement): Student-t interval with
  the finite-population correction ``(1 - n/N)`` (Cochran 1977, "Sampling Techniques", 2.15), clipped.
* :class:`Stratum` -- one view's sampling state (n, N, sum, sum of squares, cost of a row), its interval,
  and the *planning* width (normal approximation with FPC, variance smoothed by one pseudo-success and one
  pseudo-failure so that a view whose pilot rows were all right is not treated as settled).
* :func:`next_stratum` -- the allocation rule of the planner: ``widest`` gives the next rows to the view whose
  interval is widest (greedy minimax: the widest reported interval can only shrink by sampling that view),
  ``total`` to the largest decrease of the summed variance per unit cost (the greedy form of Neyman's 1934
  allocation with costs), ``uniform`` to the least-sampled share (the baseline the bench compares with).
* :func:`stratified_interval` -- a weighted mean over views (mean corruption accuracy), variance
  ``sum_h W_h^2 (1 - n_h/N_h) s_h^2 / n_h`` (Cochran 1977, eq. 5.6), normal interval.

Validity under adaptive allocation: how many rows a view gets depends on its own pilot estimate, so the
sample size is a random stopping time, not fixed in advance. ``tests/test_sampling.py`` measures the coverage
of the per-view intervals by simulation under the ``widest`` planner (at least 93 % at nominal 95 %, the issue's
acceptance line; the exact interval's conservatism absorbs the stopping effect). A stratified mean over views
must not be taken over adaptively stopped samples (their small biases add up over views): the planner
(:mod:`assay.engine.budget`) feeds :func:`stratified_interval` its uniform-phase rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from assay.errors import OptionError

__all__ = [
    "OBJECTIVES",
    "Objective",
    "Stratum",
    "mean_interval_wor",
    "next_stratum",
    "normal_quantile",
    "proportion_interval_wor",
    "proportion_intervals_wor",
    "stratified_interval",
]

Objective = Literal["widest", "total", "uniform"]
OBJECTIVES: tuple[str, ...] = ("widest", "total", "uniform")


def _check_confidence(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise OptionError(f"confidence must lie in (0, 1), got {confidence!r}", where="confidence",
                          fix="use e.g. 0.95")
    return float(confidence)


def normal_quantile(confidence: float) -> float:
    """The two-sided standard-normal critical value of ``confidence`` (1.96 for 0.95)."""
    from scipy.special import ndtri

    return float(ndtri(0.5 + _check_confidence(confidence) / 2))


def _hypergeom_tail(x: np.ndarray, n: np.ndarray, population: np.ndarray, k: np.ndarray, upper: bool) -> np.ndarray:
    """P(X >= x) (``upper``) or P(X <= x) for X ~ Hypergeometric(population, k successes, n draws), vectorised."""
    from scipy.stats import hypergeom

    with np.errstate(all="ignore"):
        if upper:
            return np.asarray(hypergeom.sf(x - 1, population, k, n), dtype=np.float64)
        return np.asarray(hypergeom.cdf(x, population, k, n), dtype=np.float64)


def proportion_intervals_wor(successes: np.ndarray, n: np.ndarray, population: np.ndarray,
                             confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact intervals of K/N for many (x, n, N) at once: the lower end is the smallest K with
    ``P(X >= x | K) > alpha/2``, the upper end the largest K with ``P(X <= x | K) > alpha/2``, X hypergeometric
    (Wright 1991). Both tails are monotone in K, so each end is an integer bisection (about log2 N steps)."""
    alpha = 1.0 - _check_confidence(confidence)
    x, m, big_n = (np.atleast_1d(np.asarray(a, dtype=np.int64)) for a in (successes, n, population))
    x, m, big_n = np.broadcast_arrays(x, m, big_n)
    if np.any(m < 0) or np.any(big_n < 1) or np.any(m > big_n) or np.any(x < 0) or np.any(x > m):
        raise OptionError("need 0 <= successes <= n <= population and population >= 1", where="sampling",
                          fix="pass counts of a sample drawn from the population")
    # Feasible K: at least the successes seen, at most N minus the failures seen.
    k_min, k_max = x.astype(np.int64), (big_n - (m - x)).astype(np.int64)

    def bisect(upper: bool) -> np.ndarray:
        # Lower end: the smallest K in [k_min, k_max] with P(X >= x | K) > alpha/2, a tail increasing in K and 1 at
        # k_max (the population then holds exactly the n - x failures seen). Upper end: the largest K with
        # P(X <= x | K) > alpha/2, decreasing in K and 1 at k_min.
        lo, hi = k_min.copy(), k_max.copy()
        while np.any(lo < hi):
            if upper:  # search the smallest K where the upper tail exceeds alpha/2
                mid = (lo + hi) // 2
                ok = _hypergeom_tail(x, m, big_n, mid, upper=True) > alpha / 2
                hi = np.where(ok, mid, hi)
                lo = np.where(ok, lo, mid + 1)
            else:  # search the largest K where the lower tail exceeds alpha/2
                mid = (lo + hi + 1) // 2
                ok = _hypergeom_tail(x, m, big_n, mid, upper=False) > alpha / 2
                lo = np.where(ok, mid, lo)
                hi = np.where(ok, hi, mid - 1)
        return lo

    k_low = np.where(x == 0, 0, bisect(upper=True))
    k_high = np.where(x == m, k_max, bisect(upper=False))
    return k_low / big_n, k_high / big_n


def proportion_interval_wor(successes: int, n: int, population: int, confidence: float = 0.95
                            ) -> tuple[float, float]:
    """Exact interval of the population share K/N from ``successes`` of ``n`` rows drawn without replacement
    from ``population`` rows (Wright 1991); a point when ``n == population``; (0, 1) when ``n == 0``."""
    if n == 0:
        return 0.0, 1.0
    lo, hi = proportion_intervals_wor(np.array([successes]), np.array([n]), np.array([population]), confidence)
    return float(lo[0]), float(hi[0])


def _t_quantile(confidence: float, dof: int) -> float:
    from scipy.special import stdtrit

    return float(stdtrit(dof, 0.5 + confidence / 2))


def mean_interval_wor(total: float, total_sq: float, n: int, population: int, confidence: float = 0.95,
                      low: float = 0.0, high: float = 1.0) -> tuple[float, float]:
    """Interval of the population mean of values in [low, high] from a sample of ``n`` of ``population`` rows
    drawn without replacement (sum ``total``, sum of squares ``total_sq``): Student-t with n - 1 degrees of
    freedom and standard error ``sqrt((1 - n/N) s^2 / n)`` (Cochran 1977, 2.15), clipped to [low, high].
    A point at ``n == population``; [low, high] below two rows."""
    _check_confidence(confidence)
    if not 0 <= n <= population:
        raise OptionError(f"sampled {n} of {population} rows", where="sampling", fix="need 0 <= n <= population")
    if n < 2:
        return (low, high) if n < population else (total, total)
    mean = total / n
    if n == population:
        return mean, mean
    s2 = max(total_sq - n * mean * mean, 0.0) / (n - 1)
    half = _t_quantile(confidence, n - 1) * math.sqrt((1.0 - n / population) * s2 / n)
    return max(low, mean - half), min(high, mean + half)


@dataclass(frozen=True)
class Stratum:
    """One budgeted metric so far: ``n`` of ``population`` rows sampled, the sum and sum of squares of their
    values (in [0, 1]), what one more row costs (passes, or measured seconds), and whether values are 0/1."""

    n: int
    population: int
    total: float = 0.0
    total_sq: float = 0.0
    cost: float = 1.0
    binary: bool = True

    def __post_init__(self) -> None:
        if self.population < 1 or not 0 <= self.n <= self.population:
            raise OptionError(f"a stratum of {self.n} sampled out of {self.population} rows", where="sampling",
                              fix="need population >= 1 and 0 <= n <= population")

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    @property
    def finished(self) -> bool:
        return self.n >= self.population

    @property
    def planning_variance(self) -> float:
        """Per-row variance for planning: the sample variance (ddof=1) after adding one 0 and one 1 value,
        so a stratum whose rows so far were all equal still counts as uncertain (for 0/1 values:
        ``p~ (1 - p~) (n + 2) / (n + 1)`` with ``p~ = (x + 1) / (n + 2)``, Agresti & Coull's smoothing)."""
        n, total, total_sq = self.n + 2, self.total + 1.0, self.total_sq + 1.0
        return max(total_sq - total * total / n, 0.0) / (n - 1)

    def add(self, values: np.ndarray) -> Stratum:
        """The state after sampling more rows with these values."""
        v = np.asarray(values, dtype=np.float64)
        return replace(self, n=self.n + int(v.size), total=self.total + float(v.sum()),
                       total_sq=self.total_sq + float(np.square(v).sum()))

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """The reported interval of the population mean: exact hypergeometric for 0/1 values, Student-t with
        finite-population correction otherwise."""
        if self.binary:
            return proportion_interval_wor(int(round(self.total)), self.n, self.population, confidence)
        return mean_interval_wor(self.total, self.total_sq, self.n, self.population, confidence)

    def width(self, confidence: float = 0.95) -> float:
        lo, hi = self.interval(confidence)
        return hi - lo

    def projected_width(self, n_new: int | float, confidence: float = 0.95) -> float:
        """Planning width at ``n_new`` rows (normal approximation, finite-population correction, the smoothed
        variance of the rows so far): 0 once every row is sampled. Cheap: used at every planner step."""
        n_new = min(float(n_new), float(self.population))
        if n_new <= 0:
            return 1.0
        variance = self.planning_variance * (1.0 - n_new / self.population) / n_new
        return min(1.0, 2.0 * normal_quantile(confidence) * math.sqrt(max(variance, 0.0)))


def _mean_variance(stratum: Stratum, n: float) -> float:
    """Planning variance of the stratum mean at n rows (0 when complete)."""
    if n >= stratum.population:
        return 0.0
    return stratum.planning_variance * (1.0 - n / stratum.population) / max(n, 1.0)


def next_stratum(strata: Sequence[Stratum], *, objective: str = "widest", step: int = 1,
                 confidence: float = 0.95) -> int | None:
    """Index of the stratum that gets the next ``step`` rows, or None when every stratum is complete.

    ``widest``: the unfinished stratum with the largest planning width now (ties: the lower index) -- greedy
    minimax, since the widest interval shrinks only by sampling it. ``total``: the largest decrease of the
    stratum-mean variance per unit cost from ``step`` more rows (greedy Neyman allocation with costs; Neyman
    1934, Cochran 1977 5.5). ``uniform``: the smallest sampled share n/N (the baseline)."""
    if objective not in OBJECTIVES:
        raise OptionError(f"unknown budget objective {objective!r}", where="budget-objective",
                          fix=f"choose from {', '.join(OBJECTIVES)}")
    open_ = [i for i, s in enumerate(strata) if not s.finished]
    if not open_:
        return None
    if objective == "uniform":
        return min(open_, key=lambda i: (strata[i].n / strata[i].population, i))
    if objective == "widest":
        z = normal_quantile(confidence)
        return max(open_, key=lambda i: (2 * z * math.sqrt(_mean_variance(strata[i], strata[i].n)), -i))

    def gain(i: int) -> float:
        s = strata[i]
        return (_mean_variance(s, s.n) - _mean_variance(s, s.n + step)) / max(s.cost, 1e-12)

    return max(open_, key=lambda i: (gain(i), -i))


def stratified_interval(strata: Sequence[Stratum], weights: Sequence[float], confidence: float = 0.95
                        ) -> tuple[float, float, float]:
    """(estimate, lo, hi) of ``sum_h W_h mean_h`` from independent samples per stratum: variance
    ``sum_h W_h^2 (1 - n_h/N_h) s_h^2 / n_h`` (Cochran 1977, eq. 5.6), with each s_h^2 smoothed as in
    :attr:`Stratum.planning_variance` (a stratum whose rows all agree still adds variance), normal interval,
    clipped to the range of the weighted values. Every stratum needs at least one row."""
    w = np.asarray(weights, dtype=np.float64)
    if len(strata) == 0 or w.shape != (len(strata),) or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise OptionError("need one non-negative weight per stratum", where="sampling",
                          fix="pass as many weights as strata")
    if any(s.n == 0 for s in strata):
        raise OptionError("a stratum has no sampled rows", where="sampling", fix="sample every stratum first")
    means = np.array([s.mean for s in strata])
    variance = float(sum(wh * wh * _mean_variance(s, s.n) for wh, s in zip(w, strata)))
    estimate = float(w @ means)
    half = normal_quantile(confidence) * math.sqrt(variance)
    return estimate, max(0.0, estimate - half), min(float(w.sum()), estimate + half)
