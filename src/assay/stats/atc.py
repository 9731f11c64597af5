"""Fitting the ATC threshold: the pure part of Average Thresholded Confidence (Garg et al. 2022).

On labelled validation data, ATC learns the threshold ``t`` such that the fraction of validation scores
strictly above ``t`` equals the validation accuracy; a target set's accuracy is then estimated as the
fraction of its scores above ``t``. This module holds only the threshold search over arrays, shared by the
label-free check (``assay.checks.label_free``, which adds the scores, validation and bootstrap) and by the
monitoring reference (``assay.reference``), which stores the thresholds.

Convention: the candidate thresholds are the value just below the smallest score (``nextafter``) and every
distinct score; the one whose count of scores strictly above it is closest to the number correct is kept
(the lowest candidate on a tie). Without tied scores this is exactly the threshold of Garg et al.'s
reference code (``find_ATC_threshold``, github.com/saurabhgarg1996/ATC_code).
"""

from __future__ import annotations

import numpy as np

from assay.errors import UserError

__all__ = ["ThresholdCandidates", "atc_threshold"]


class ThresholdCandidates:
    """Sorted scores and candidate thresholds, shared by the point fit and every bootstrap resample
    (each resample re-fits with its own per-sample weights, without sorting again)."""

    def __init__(self, scores: np.ndarray) -> None:
        self.order = np.argsort(scores, kind="stable")
        sorted_scores = scores[self.order]
        distinct = np.unique(sorted_scores)
        below_min = np.nextafter(distinct[0], -np.inf)
        self.thresholds = np.concatenate([[below_min], distinct])
        # Index (in sorted order) of the first score strictly above each candidate threshold.
        self.first_above = np.concatenate([[0], np.searchsorted(sorted_scores, distinct, side="right")])

    def fit(self, correct: np.ndarray, weights: np.ndarray | None = None) -> float:
        """Threshold whose (weighted) count above is closest to the (weighted) number correct."""
        w = np.ones(len(self.order)) if weights is None else np.asarray(weights, dtype=np.float64)
        w_sorted = w[self.order]
        target_count = float(w @ correct)
        # above[j] = total weight of sorted positions >= j; above[n] = 0.
        above = np.concatenate([np.cumsum(w_sorted[::-1])[::-1], [0.0]])
        gap = np.abs(above[self.first_above] - target_count)
        return float(self.thresholds[int(np.argmin(gap))])


def atc_threshold(scores: np.ndarray, correct: np.ndarray) -> float:
    """ATC threshold t: the fraction of ``scores`` strictly above t matches the fraction ``correct``
    (as closely as tied scores allow; see the module docstring)."""
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if scores.ndim != 1 or scores.shape != correct.shape or scores.size == 0:
        raise UserError("scores and correct must be non-empty 1-D arrays of equal length",
                        where="atc_threshold", fix="pass one score and one 0/1 correctness per sample")
    return ThresholdCandidates(scores).fit(correct)
