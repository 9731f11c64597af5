"""Binning of scores in [0, 1] and weighted per-bin sums, vectorized over bootstrap resamples.

Two edge schemes:

* ``equal_width_edges`` — ``np.linspace(0, 1, n_bins + 1)`` (Guo et al. 2017; the edges netcal and
  torchmetrics use).
* ``equal_mass_edges`` — edges placed halfway between consecutive groups of the sorted scores split
  into ``n_bins`` near-equal parts (``np.array_split``), first edge 0, last edge 1. This is the
  ``get_equal_bins`` convention of Kumar, Liang & Ma (2019), ``uncertainty-calibration`` library.

``assign_bins`` maps scores to bins with either closedness; ``stats.bootstrap.GroupSums`` then turns
per-sample values into weighted per-bin (per-group) sums for many resamples at once, the sufficient
statistics of every binned metric (ECE family, reliability diagrams).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["Closed", "assign_bins", "equal_mass_edges", "equal_width_edges"]

Closed = Literal["left", "right"]


def equal_width_edges(n_bins: int) -> np.ndarray:
    """``n_bins + 1`` equally spaced edges on [0, 1] (float64, ``np.linspace``)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    return np.linspace(0.0, 1.0, n_bins + 1)


def equal_mass_edges(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Edges of ``min(n_bins, n)`` bins holding near-equal numbers of ``values`` (Kumar et al. 2019).

    The sorted values are split into near-equal parts (sizes differ by at most one); each inner edge is
    the midpoint between the last value of one part and the first of the next; outer edges are 0 and 1.
    With right-closed bins ``(lo, hi]`` this reproduces ``calibration.get_equal_bins`` exactly; ties
    across a split give zero-width (hence empty) bins instead of being merged away, so the number of
    edges stays fixed.
    """
    values = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if values.size == 0:
        raise ValueError("equal-mass binning needs at least one value")
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    parts = min(n_bins, values.size)
    # Start index of each part of np.array_split(values, parts): the first (n % parts) parts hold one more.
    base, extra = divmod(values.size, parts)
    starts = np.arange(1, parts) * base + np.minimum(np.arange(1, parts), extra)
    inner = (values[starts - 1] + values[starts]) / 2.0
    return np.concatenate([[0.0], inner, [1.0]])


def assign_bins(values: np.ndarray, edges: np.ndarray, closed: Closed = "left") -> np.ndarray:
    """Bin index in ``[0, len(edges) - 2]`` of each value.

    ``closed="left"``: bins ``[lo, hi)`` with the last bin ``[lo, 1]`` (``np.histogram``, netcal).
    ``closed="right"``: bins ``(lo, hi]`` with the first bin ``[0, hi]`` (Guo et al.'s code; Kumar et al.).
    Values outside [0, 1] fall into the first or last bin.
    """
    inner = np.asarray(edges, dtype=np.float64)[1:-1]
    side: Closed = "right" if closed == "left" else "left"
    return np.searchsorted(inner, np.asarray(values, dtype=np.float64), side=side).astype(np.int64, copy=False)
