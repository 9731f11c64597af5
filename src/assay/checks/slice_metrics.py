"""Slice analysis: accuracy per slice of the data, underperformance flagged under FDR control.

Pure functions over arrays (the check that reads ``--slice-by`` columns is a thin layer on top):

* ``bin_numeric`` — numeric columns become quantile bins, so that slices have comparable sizes.
* ``slice_table`` — per slice: n, accuracy with a Clopper–Pearson interval (exact, and honest at 0 % or
  100 %), and a slice-vs-rest **two-sided Fisher exact test** on the 2x2 table (slice/rest x
  correct/wrong). P-values are Benjamini–Hochberg adjusted across all slices tested (Benjamini &
  Hochberg 1995); a slice is *flagged* when it is rejected at ``alpha`` and its accuracy is below the
  rest's. Slices smaller than ``min_size`` are marked *insufficient*: reported, never tested or flagged
  (and they do not count towards the BH family).
* ``worst_slice_gap`` — best-minus-worst accuracy over the sufficient slices, with a bootstrap interval
  that resamples rows (exactly: a multinomial draw over the slice x correct table). The gap is a maximum of
  absolute differences, biased upward where slices tie, so the interval is the union of simultaneous max-|t|
  intervals on every pairwise slice difference (``stats.bootstrap.rate_spread_intervals``), not a percentile
  or BC one (which can exclude the truth there).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from assay.errors import UserError
from assay.stats.bootstrap import bootstrap_cell_counts, clopper_pearson, rate_spread_intervals
from assay.stats.multiple_testing import benjamini_hochberg

__all__ = ["GAP_INTERVAL_METHOD", "SliceGap", "SliceRow", "bin_numeric", "slice_table", "worst_slice_gap"]

# How worst_slice_gap's interval is made (for a Section's ``method`` text).
GAP_INTERVAL_METHOD = "union of simultaneous max-|t| bootstrap intervals on the pairwise slice differences"


@dataclass(frozen=True)
class SliceRow:
    """One slice. ``p_value``/``p_adjusted`` are NaN for insufficient slices (not tested)."""

    slice: str
    n: int
    n_correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    rest_accuracy: float
    insufficient: bool
    p_value: float
    p_adjusted: float
    flagged: bool


@dataclass(frozen=True)
class SliceGap:
    """Best-minus-worst slice accuracy (sufficient slices only) with its bootstrap interval."""

    value: float
    ci_low: float
    ci_high: float
    best_slice: str
    worst_slice: str


def bin_numeric(values: np.ndarray, q: int = 4) -> np.ndarray:
    """Quantile bins of a numeric column as string labels ``"Q1 [lo, hi)"`` (ties may merge bins).

    Edges are the empirical quantiles 0, 1/q, ..., 1; each bin is right-open except the last. NaN
    values get the label ``"missing"``.
    """
    if q < 1:
        raise ValueError(f"q must be >= 1, got {q}")
    x = np.asarray(values, dtype=np.float64)
    labels = np.full(x.shape, "missing", dtype=object)
    finite = np.isfinite(x)
    if not finite.any():
        return labels
    edges = np.unique(np.quantile(x[finite], np.linspace(0.0, 1.0, q + 1)))
    if edges.size == 1:
        labels[finite] = f"[{edges[0]:.4g}, {edges[0]:.4g}]"
        return labels
    # Bin index in 0..len(edges)-2; the maximum belongs to the last (closed) bin.
    index = np.clip(np.searchsorted(edges, x[finite], side="right") - 1, 0, edges.size - 2)
    names = np.array(
        [f"Q{i + 1} [{lo:.4g}, {hi:.4g}{']' if i == edges.size - 2 else ')'}"
         for i, (lo, hi) in enumerate(itertools.pairwise(edges))], dtype=object)
    labels[finite] = names[index]
    return labels


def _encode(correct: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    correct = np.asarray(correct)
    groups = np.asarray(groups)
    if correct.ndim != 1 or groups.ndim != 1 or correct.shape != groups.shape:
        raise UserError(
            f"slice labels and predictions differ in shape ({groups.shape} vs {correct.shape})",
            where="slice analysis", fix="give one slice label per evaluated sample")
    if correct.size == 0:
        raise UserError("no samples to slice", where="slice analysis", fix="evaluate on a non-empty dataset")
    names, codes = _factorize_as_str(groups)
    return correct.astype(bool), names, codes


def _factorize_as_str(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values.astype(str), return_inverse=True)``, by hashing instead of sorting every string.

    ``pandas.factorize`` codes the raw values (floats by bit pattern, so that -0.0 and 0.0 stay apart as
    their strings do); only one representative per code is turned into a string, and codes whose strings
    coincide (NaN payloads, mixed object types) are merged. 5-100x faster than the sort at 1M rows.
    """
    kind, size = values.dtype.kind, values.dtype.itemsize
    if kind == "f" and size in (2, 4, 8):
        keys = values.view(f"i{size}")
    elif kind in "biuUS":
        keys = values
    else:  # objects, datetimes, ...: their string form is the key
        values = keys = values.astype(str)
    import pandas as pd

    codes, _ = pd.factorize(keys, use_na_sentinel=False)
    first = np.empty(codes.max() + 1, dtype=np.intp)
    first[codes[::-1]] = np.arange(codes.size - 1, -1, -1)  # first occurrence of each code
    names, merged = np.unique(values[first].astype(str), return_inverse=True)
    return names, merged.ravel()[codes]


def _counts(correct: np.ndarray, codes: np.ndarray, n_slices: int) -> np.ndarray:
    """Contingency table, shape (n_slices, 2): column 0 wrong, column 1 correct."""
    return np.bincount(codes * 2 + correct, minlength=2 * n_slices).reshape(n_slices, 2)


def slice_table(
    correct: np.ndarray,
    groups: np.ndarray,
    *,
    min_size: int = 30,
    alpha: float = 0.05,
    confidence: float = 0.95,
) -> list[SliceRow]:
    """Per-slice accuracy, slice-vs-rest Fisher exact test, BH-adjusted, flags (see module docstring).

    ``correct`` is a boolean per sample (prediction == label); ``groups`` a slice label per sample
    (bin numeric columns first with ``bin_numeric``). Rows come sorted by slice name.
    """
    from scipy.stats import fisher_exact  # deferred: importing scipy.stats costs ~0.3 s; only slicing needs it

    correct, names, codes = _encode(correct, groups)
    table = _counts(correct, codes, len(names))
    n = table.sum(axis=1)
    total_correct, total = int(table[:, 1].sum()), int(n.sum())
    sufficient = n >= min_size
    p_values = np.full(len(names), np.nan)
    for i in np.flatnonzero(sufficient):
        rest_n, rest_correct = total - n[i], total_correct - table[i, 1]
        if rest_n == 0:
            continue  # a single slice has no rest to compare against
        _, p = fisher_exact(np.array([[table[i, 1], table[i, 0]], [rest_correct, rest_n - rest_correct]]))
        p_values[i] = min(float(p), 1.0)
    reject, adjusted = benjamini_hochberg(p_values, alpha)
    rows = []
    for s, name in enumerate(names):
        acc = table[s, 1] / n[s]
        rest_n = total - n[s]
        rest_acc = (total_correct - table[s, 1]) / rest_n if rest_n else float("nan")
        lo, hi = clopper_pearson(int(table[s, 1]), int(n[s]), confidence)
        rows.append(SliceRow(
            slice=str(name), n=int(n[s]), n_correct=int(table[s, 1]), accuracy=float(acc),
            ci_low=lo, ci_high=hi, rest_accuracy=float(rest_acc), insufficient=not sufficient[s],
            p_value=float(p_values[s]), p_adjusted=float(adjusted[s]),
            flagged=bool(reject[s] and acc < rest_acc)))
    return rows


def worst_slice_gap(
    correct: np.ndarray,
    groups: np.ndarray,
    *,
    min_size: int = 30,
    seed: int | np.random.SeedSequence = 0,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
) -> SliceGap:
    """Best-minus-worst slice accuracy over slices with at least ``min_size`` samples, with a CI.

    The interval resamples rows and covers the gap whichever slices are truly best and worst (see the
    module docstring); slices empty in a resample are skipped in it. Needs at least two sufficient slices.
    """
    correct, names, codes = _encode(correct, groups)
    table = _counts(correct, codes, len(names))
    n = table.sum(axis=1)
    keep = np.flatnonzero(n >= min_size)
    if keep.size < 2:
        raise UserError(
            f"worst-slice gap needs two slices of at least {min_size} samples, found {keep.size}",
            where="slice analysis", fix="use a coarser slice column or lower the minimum slice size")
    acc = table[keep, 1] / n[keep]
    resampled = bootstrap_cell_counts(table, n_bootstrap, seed)[:, keep, :]
    sizes = resampled.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc_b = np.where(sizes > 0, resampled[:, :, 1] / sizes, np.nan)
    spread = rate_spread_intervals(acc[None, :], acc_b[:, None, :], n[keep][None, :], confidence)
    lo, hi = spread.worst_low, spread.worst_high
    return SliceGap(value=float(acc.max() - acc.min()), ci_low=lo, ci_high=hi,
                    best_slice=str(names[keep[np.argmax(acc)]]), worst_slice=str(names[keep[np.argmin(acc)]]))
