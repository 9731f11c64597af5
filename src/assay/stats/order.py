"""Distribution-free confidence intervals for quantiles from order statistics.

For n independent draws from a continuous distribution, the number K of draws below the population
q-quantile is Binomial(n, q), so the order statistics ``[X(l), X(u)]`` (1-based, sorted) cover that
quantile with probability ``F(u-1) - F(l-1)``, F the Binomial(n, q) CDF (Conover 1999, *Practical
Nonparametric Statistics*, 3rd ed., sec. 3.2; Hahn & Meeker 1991, *Statistical Intervals*, sec. 5.2).
:func:`quantile_ci` takes the narrowest equal-tailed choice with each tail <= (1 - confidence) / 2, so the
coverage is at least ``confidence`` (the exact coverage is returned). Point values are the sample
quantiles ``X(ceil(n q))`` (Hyndman & Fan 1996, type 1), which always lie inside those intervals.

Used by the latency harness (:mod:`assay.profiling.latency`) for p50/p95/p99 per-call times.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ORDER_STATISTIC_CI_METHOD", "min_runs_for_upper_bound", "quantile_ci", "sample_quantile"]

ORDER_STATISTIC_CI_METHOD = ("distribution-free order-statistic interval [X(l), X(u)] from the Binomial(n, q) CDF "
                             "(Conover 1999, sec. 3.2), coverage >= confidence")


def quantile_ci(sorted_values: np.ndarray, q: float, confidence: float) -> tuple[float | None, float | None, float]:
    """Order-statistic confidence interval of the q-quantile from sorted values: ``(low, high, coverage)``.

    ``low = X(l)`` with ``l - 1`` the largest k with ``F(k) <= alpha/2`` and ``high = X(u)`` with ``u - 1``
    the smallest k with ``F(k) >= 1 - alpha/2`` (F: Binomial(n, q) CDF, X(i) 1-based); a bound that
    needs an order statistic outside 1..n is None (too few runs) and the coverage counts it as
    unbounded. Coverage of ``[X(l), X(u)]`` is ``F(u-1) - F(l-1)`` for continuous distributions.
    """
    from scipy.stats import binom

    x = np.asarray(sorted_values, dtype=np.float64)
    n = x.size
    if n == 0:
        return None, None, 0.0
    tail = (1.0 - confidence) / 2.0
    cdf = binom.cdf(np.arange(n + 1), n, q)  # cdf[k] = P(K <= k), K = #observations below the quantile
    eps = 1e-12
    below = np.flatnonzero(cdf <= tail + eps)
    above = np.flatnonzero(cdf >= 1.0 - tail - eps)
    lower_k = int(below[-1]) if below.size else -1  # l - 1
    upper_k = int(above[0]) if above.size else n  # u - 1
    low = float(x[lower_k]) if lower_k >= 0 else None  # X(l) is x[l - 1] = x[lower_k]
    high = float(x[upper_k]) if upper_k <= n - 1 else None  # X(u) is x[u - 1] = x[upper_k]
    f_upper = float(cdf[upper_k]) if upper_k <= n - 1 else 1.0
    f_lower = float(cdf[lower_k]) if lower_k >= 0 else 0.0
    return low, high, f_upper - f_lower


def sample_quantile(sorted_values: np.ndarray, q: float) -> float:
    """``X(ceil(n q))``, the inverse of the empirical CDF (Hyndman & Fan 1996, type 1; numpy's
    "inverted_cdf"). Unlike interpolated quantiles it always lies inside :func:`quantile_ci`'s interval
    (the Binomial(n, q) median is floor or ceil of n q)."""
    x = np.asarray(sorted_values, dtype=np.float64)
    return float(x[max(math.ceil(round(x.size * q, 9)), 1) - 1])  # round: 0.07 * 100 is 7.000000000000001


def min_runs_for_upper_bound(q: float, confidence: float) -> int:
    """Fewest draws for which the q-quantile has an upper order-statistic bound: q^n <= (1 - confidence)/2."""
    return math.ceil(math.log((1.0 - confidence) / 2.0) / math.log(q))
