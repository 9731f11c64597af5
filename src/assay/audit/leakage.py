"""How much train→test leakage inflates accuracy: accuracy on leaked vs clean test items, with intervals.

Barz & Denzler (2020, "Do we train on test data?", ciFAIR) found 3.3 % of CIFAR-10's test images duplicated in
training and accuracy dropping once they were replaced. Here the two groups' accuracies get exact binomial
(Clopper-Pearson) intervals, and their difference Newcombe's hybrid score interval (Newcombe 1998, "Interval
estimation for the difference between independent proportions", method 10: Wilson score limits of each proportion
combined by the square-and-add rule), which keeps its coverage for small groups and proportions near 0 or 1 where
the Wald interval fails — leaked groups are small and their accuracy is often near 1.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from assay.errors import DataError

__all__ = ["leakage_inflation", "newcombe_difference", "wilson_interval"]


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson (1927) score interval of a binomial proportion (``n`` > 0)."""
    from scipy.special import ndtri

    z = float(ndtri(0.5 + confidence / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_difference(successes_a: int, n_a: int, successes_b: int, n_b: int,
                        confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's hybrid score interval (method 10) for p_a − p_b of two independent proportions."""
    p_a, p_b = successes_a / n_a, successes_b / n_b
    lo_a, hi_a = wilson_interval(successes_a, n_a, confidence)
    lo_b, hi_b = wilson_interval(successes_b, n_b, confidence)
    d = p_a - p_b
    return (d - math.sqrt((p_a - lo_a) ** 2 + (hi_b - p_b) ** 2),
            d + math.sqrt((hi_a - p_a) ** 2 + (p_b - lo_b) ** 2))


def leakage_inflation(correct: np.ndarray, leaked: np.ndarray, confidence: float = 0.95) -> dict[str, Any]:
    """Accuracy on leaked and on clean test items, and leaked − clean (the inflation leakage causes).

    ``correct``: per test item, whether the model got it right; ``leaked``: whether it has a duplicate in train.
    Returns ``{"accuracy_leaked": {value, ci, n}, "accuracy_clean": {value, ci, n}, "difference": {value, ci},
    "notes": [...]}``; a group with no items has value and ci None (and so has the difference), with a note —
    an accuracy of nothing is not 0 or 1.
    """
    from assay.stats.bootstrap import clopper_pearson

    hit = np.asarray(correct)
    mask = np.asarray(leaked)
    if hit.ndim != 1 or mask.shape != hit.shape:
        raise DataError(f"correct has shape {hit.shape} and leaked {mask.shape}", where="leaked",
                        fix="give one correct flag and one leaked flag per test item")
    if hit.dtype != bool or mask.dtype != bool:
        raise DataError(f"correct ({hit.dtype}) and leaked ({mask.dtype}) must be boolean", where="leaked",
                        fix="pass boolean arrays (e.g. predictions == labels)")
    if not 0 < confidence < 1:
        raise DataError(f"confidence {confidence} is not between 0 and 1", where="confidence", fix="use e.g. 0.95")
    out: dict[str, Any] = {}
    notes: list[str] = []
    counts = {}
    for name, group in (("accuracy_leaked", mask), ("accuracy_clean", ~mask)):
        n = int(group.sum())
        k = int(hit[group].sum())
        counts[name] = (k, n)
        if n == 0:
            out[name] = {"value": None, "ci": None, "n": 0}
            notes.append(f"no {'leaked' if name == 'accuracy_leaked' else 'clean'} test items: that accuracy and "
                         "the difference are undefined")
        else:
            out[name] = {"value": k / n, "ci": clopper_pearson(k, n, confidence), "n": n}
    (k_l, n_l), (k_c, n_c) = counts["accuracy_leaked"], counts["accuracy_clean"]
    if n_l and n_c:
        out["difference"] = {"value": k_l / n_l - k_c / n_c,
                             "ci": newcombe_difference(k_l, n_l, k_c, n_c, confidence)}
    else:
        out["difference"] = {"value": None, "ci": None}
    out["notes"] = notes
    return out
