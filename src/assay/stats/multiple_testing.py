"""Multiple-testing corrections, vectorized over independent families of tests.

Both functions take p-values of shape ``(..., m)``: the last axis is one family (e.g. all slices tested
in one run), leading axes are independent families (e.g. simulated runs). NaN p-values mean "not
tested" (a slice below the minimum size): they are left out of the family size m, are never rejected,
and get a NaN adjusted p-value.

* ``benjamini_hochberg`` — step-up FDR control (Benjamini & Hochberg 1995); adjusted p-values as in
  R's ``p.adjust(method="BH")`` and ``scipy.stats.false_discovery_control``.
* ``holm`` — step-down family-wise error control (Holm 1979); as ``p.adjust(method="holm")``.

Rejecting where the adjusted p-value is <= alpha is equivalent to running each procedure at level alpha.
"""

from __future__ import annotations

import numpy as np

__all__ = ["benjamini_hochberg", "holm"]


def _prepare(pvalues: np.ndarray | list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate, sort along the last axis (NaNs last); return p, order, sorted p, family sizes."""
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim == 0:
        p = p[None]
    finite = ~np.isnan(p)
    if np.any((p[finite] < 0.0) | (p[finite] > 1.0)):
        raise ValueError("p-values must lie in [0, 1] (NaN marks an untested hypothesis)")
    order = np.argsort(p, axis=-1, kind="stable")  # NaN sorts last
    p_sorted = np.take_along_axis(p, order, axis=-1)
    m = finite.sum(axis=-1, keepdims=True)
    return p, order, p_sorted, m


def _unsort(adjusted_sorted: np.ndarray, order: np.ndarray, p: np.ndarray, alpha: float
            ) -> tuple[np.ndarray, np.ndarray]:
    adjusted = np.empty_like(adjusted_sorted)
    np.put_along_axis(adjusted, order, adjusted_sorted, axis=-1)
    adjusted[np.isnan(p)] = np.nan
    reject = np.zeros(adjusted.shape, dtype=bool)
    np.less_equal(adjusted, alpha, out=reject, where=~np.isnan(adjusted))
    return reject, adjusted


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")


def benjamini_hochberg(pvalues: np.ndarray | list[float], alpha: float = 0.05
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini–Hochberg: ``(reject mask, adjusted p-values)``, both shaped like ``pvalues``.

    Adjusted p of the i-th smallest of m is ``min_{j >= i} min(1, m p_(j) / j)``; rejecting where it is
    <= alpha controls the false discovery rate at alpha for independent or positively dependent tests.
    """
    _check_alpha(alpha)
    p, order, p_sorted, m = _prepare(pvalues)
    rank = np.arange(1, p_sorted.shape[-1] + 1, dtype=np.float64)
    scaled = np.where(np.isnan(p_sorted), np.inf, p_sorted * m / rank)
    # Running minimum from the largest p-value down (the step-up).
    adjusted_sorted = np.minimum.accumulate(scaled[..., ::-1], axis=-1)[..., ::-1]
    adjusted_sorted = np.minimum(adjusted_sorted, 1.0)
    return _unsort(adjusted_sorted, order, p, alpha)


def holm(pvalues: np.ndarray | list[float], alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm step-down: ``(reject mask, adjusted p-values)``, both shaped like ``pvalues``.

    Adjusted p of the i-th smallest of m is ``max_{j <= i} min(1, (m - j + 1) p_(j))``; controls the
    family-wise error rate at alpha under any dependence.
    """
    _check_alpha(alpha)
    p, order, p_sorted, m = _prepare(pvalues)
    rank = np.arange(1, p_sorted.shape[-1] + 1, dtype=np.float64)
    scaled = np.minimum((m - rank + 1) * p_sorted, 1.0)
    scaled = np.where(np.isnan(p_sorted), -np.inf, scaled)
    adjusted_sorted = np.maximum.accumulate(scaled, axis=-1)
    return _unsort(adjusted_sorted, order, p, alpha)
