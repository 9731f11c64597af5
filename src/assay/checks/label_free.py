"""Label-free accuracy estimation: how accurate is the model on data whose labels we do not have?

Estimators (all take logits; confidences are top-label softmax probabilities):

* **ATC** — Average Thresholded Confidence (Garg et al. 2022, "Leveraging Unlabeled Data to Predict
  Out-of-Distribution Performance", ICLR). On labelled validation data, learn the threshold ``t`` such
  that the fraction of samples whose score is strictly above ``t`` equals validation accuracy; the
  target estimate is the fraction of target scores above ``t``. Two scores: ``maxconf`` (ATC-MC,
  max_k p_k) and ``negentropy`` (ATC-NE, sum_k p_k log p_k).
* **DoC** — Difference of Confidences (Guillory et al. 2021, "Predicting with Confidence on Unseen
  Distributions", ICCV): validation accuracy minus the drop in mean confidence,
  ``acc_val - (conf_val - conf_target)``.
* **Average confidence** — mean max-softmax on the target; equals accuracy for a calibrated model.

Threshold convention (the search itself lives in :mod:`assay.stats.atc`): the validation scores are
sorted, and among the candidate thresholds (just below the smallest score, and every distinct score) the
one whose fraction-above is closest to validation accuracy is kept (the lowest such candidate on a tie).
Without tied scores this is the k-th largest score's lower neighbour, exactly the threshold of Garg et
al.'s reference code (``find_ATC_threshold``); we count target scores strictly above it (their
``get_ATC_acc`` counts ``>=``, which differs only on target scores equal to ``t``).

Uncertainty (:func:`label_free_estimates`): percentile bootstrap over the target set and, by default,
independently over the validation set (which re-fits the threshold per resample). The interval covers
the sampling variability of the two finite sets only; it does NOT cover the estimator's bias under the
shift at hand, which is the dominant error of every label-free estimator.

Error under shift (:func:`shift_errors`): on shifts whose labels are known (corruption views with labels
hidden) each estimator's signed errors are summarised by their tail (median, 90th percentile, worst) and
direction (share too high, mean signed error). Their split-conformal quantile (Lei et al. 2018), locally
weighted by :func:`error_scale` (a floor plus the accuracy drop the estimate itself predicts), is the band
:func:`shift_aware_interval` adds to each side of the sampling interval; it covers a new shift's error at
:data:`SHIFT_BAND_LEVEL` if that shift is exchangeable with the validation shifts, and
:func:`leave_one_group_out_coverage` measures how it transfers to a kind of shift it was not calibrated on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from assay.checks.ood_scores import msp, neg_entropy
from assay.errors import UserError
from assay.stats.atc import ThresholdCandidates, atc_threshold
from assay.stats.bootstrap import BootstrapResult, percentile_ci, spawn_seed

__all__ = [
    "ESTIMATOR_NAMES",
    "SHIFT_BAND_LEVEL",
    "SHIFT_SCALE_FLOOR",
    "ATCEstimator",
    "GroupOutCoverage",
    "ShiftErrors",
    "atc_scores",
    "atc_threshold",
    "average_confidence",
    "conformal_half_width",
    "conformal_rank",
    "doc_estimate",
    "error_scale",
    "estimator_errors",
    "label_free_estimates",
    "leave_one_group_out_coverage",
    "max_confidence",
    "min_scores_for_level",
    "shift_aware_interval",
    "shift_errors",
]

Score = Literal["maxconf", "negentropy"]
SCORES: tuple[str, ...] = ("maxconf", "negentropy")
ESTIMATOR_NAMES: tuple[str, ...] = ("atc_mc", "atc_ne", "doc", "average_confidence")


# ---------------------------------------------------------------------------------------- validation


def _check_logits(logits: np.ndarray, name: str, n_classes: int | None = None) -> np.ndarray:
    arr = np.asarray(logits, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] < 2:
        raise UserError(
            f"{name} must be a non-empty (n_samples, n_classes >= 2) array of logits, got shape {arr.shape}",
            where=name, fix="pass the model's raw logits, one row per sample")
    if not np.all(np.isfinite(arr)):
        raise UserError(f"{name} contains NaN or infinite values", where=name,
                        fix="check the model's outputs for overflow or missing values")
    if n_classes is not None and arr.shape[1] != n_classes:
        raise UserError(
            f"{name} has {arr.shape[1]} classes but the validation logits have {n_classes}",
            where=name, fix="use outputs of the same model on both sets")
    return arr


def _check_labels(labels: np.ndarray, n_samples: int, n_classes: int, name: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n_samples:
        raise UserError(f"{name} must be 1-D with one label per logit row ({n_samples}), got shape {arr.shape}",
                        where=name, fix="pass integer class indices aligned with the logits")
    if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and np.all(arr == np.round(arr))):
        raise UserError(f"{name} must hold integer class indices, got dtype {arr.dtype}", where=name,
                        fix="convert labels to class indices 0..n_classes-1")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() >= n_classes:
        raise UserError(f"{name} has values outside 0..{n_classes - 1}", where=name,
                        fix="labels must index the model's classes")
    return arr


# ---------------------------------------------------------------------------------------- scores


#: Top-label confidence max_k softmax(logits)_k per sample: the OOD module's MSP score (one implementation).
max_confidence = msp


def atc_scores(logits: np.ndarray, score: Score = "maxconf") -> np.ndarray:
    """Per-sample ATC score: ``maxconf`` = max_k p_k, ``negentropy`` = sum_k p_k log p_k (<= 0)."""
    if score == "maxconf":
        return max_confidence(logits)
    if score == "negentropy":
        return neg_entropy(logits)
    raise UserError(f"unknown ATC score {score!r}", where="score", fix=f"use one of {', '.join(SCORES)}")


# ---------------------------------------------------------------------------------------- estimators


class ATCEstimator:
    """Average Thresholded Confidence (Garg et al. 2022), scikit-learn style.

    ``fit(val_logits, val_labels)`` learns ``threshold_``; ``estimate(target_logits)`` returns the
    fraction of target scores strictly above it, the predicted target accuracy in [0, 1].
    """

    def __init__(self, score: Score = "maxconf") -> None:
        self.score = score

    def fit(self, val_logits: np.ndarray, val_labels: np.ndarray) -> ATCEstimator:
        if self.score not in SCORES:
            raise UserError(f"unknown ATC score {self.score!r}", where="ATCEstimator(score=...)",
                            fix=f"use one of {', '.join(SCORES)}")
        logits = _check_logits(val_logits, "val_logits")
        labels = _check_labels(val_labels, logits.shape[0], logits.shape[1], "val_labels")
        correct = (logits.argmax(axis=1) == labels).astype(np.float64)
        self.n_classes_ = logits.shape[1]
        self.val_accuracy_ = float(correct.mean())
        self.threshold_ = atc_threshold(atc_scores(logits, self.score), correct)
        return self

    def estimate(self, target_logits: np.ndarray) -> float:
        if not hasattr(self, "threshold_"):
            raise UserError("ATCEstimator is not fitted", where="ATCEstimator.estimate",
                            fix="call fit(val_logits, val_labels) first")
        logits = _check_logits(target_logits, "target_logits", self.n_classes_)
        return float(np.mean(atc_scores(logits, self.score) > self.threshold_))


def average_confidence(target_logits: np.ndarray) -> float:
    """Mean top-label confidence on the target: its accuracy if the model is calibrated there."""
    return float(max_confidence(_check_logits(target_logits, "target_logits")).mean())


def doc_estimate(val_logits: np.ndarray, val_labels: np.ndarray, target_logits: np.ndarray) -> float:
    """Difference of Confidences (Guillory et al. 2021): acc_val - (mean conf_val - mean conf_target)."""
    val = _check_logits(val_logits, "val_logits")
    labels = _check_labels(val_labels, val.shape[0], val.shape[1], "val_labels")
    target = _check_logits(target_logits, "target_logits", val.shape[1])
    val_accuracy = float(np.mean(val.argmax(axis=1) == labels))
    return val_accuracy - (float(max_confidence(val).mean()) - float(max_confidence(target).mean()))


# ---------------------------------------------------------------------------------------- bootstrap


def label_free_estimates(
    val_logits: np.ndarray,
    val_labels: np.ndarray,
    target_logits: np.ndarray,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    resample_validation: bool = True,
) -> dict[str, BootstrapResult]:
    """ATC-MC, ATC-NE, DoC and average confidence on the target, each with a percentile bootstrap CI.

    Each resample draws the target set with replacement and, when ``resample_validation`` (default),
    the validation set too, independently, re-fitting the ATC thresholds and validation accuracy and
    confidence. The CI covers finite-sample variability of these sets, not the estimator's bias under
    shift (see :func:`estimator_errors`). Keys are :data:`ESTIMATOR_NAMES`. Resamples come from one
    stream seeded by ``(seed, "label_free")``: the same inputs and seed give the same intervals.
    """
    if n_resamples < 1:
        raise UserError(f"n_resamples must be >= 1, got {n_resamples}", where="n_resamples",
                        fix="use e.g. 1000")
    val = _check_logits(val_logits, "val_logits")
    labels = _check_labels(val_labels, val.shape[0], val.shape[1], "val_labels")
    target = _check_logits(target_logits, "target_logits", val.shape[1])
    n_val, n_target = val.shape[0], target.shape[0]

    correct = (val.argmax(axis=1) == labels).astype(np.float64)
    val_conf = max_confidence(val)
    target_conf = max_confidence(target)
    val_scores = {"maxconf": val_conf, "negentropy": atc_scores(val, "negentropy")}
    target_scores = {"maxconf": target_conf, "negentropy": atc_scores(target, "negentropy")}
    candidates = {s: ThresholdCandidates(val_scores[s]) for s in SCORES}
    atc_keys = {"maxconf": "atc_mc", "negentropy": "atc_ne"}

    def estimates(w_val: np.ndarray | None, w_target: np.ndarray | None) -> dict[str, float]:
        wt = np.ones(n_target) if w_target is None else w_target
        wv = np.ones(n_val) if w_val is None else w_val
        out = {}
        for s in SCORES:
            t = candidates[s].fit(correct, w_val)
            out[atc_keys[s]] = float(wt @ (target_scores[s] > t)) / n_target
        mean_target_conf = float(wt @ target_conf) / n_target
        out["doc"] = float(wv @ correct) / n_val - (float(wv @ val_conf) / n_val - mean_target_conf)
        out["average_confidence"] = mean_target_conf
        return out

    point = estimates(None, None)
    rng = np.random.default_rng(spawn_seed(seed, "label_free"))
    samples = np.empty((n_resamples, len(ESTIMATOR_NAMES)))
    for r in range(n_resamples):
        w_target = np.bincount(rng.integers(0, n_target, n_target), minlength=n_target).astype(np.float64)
        w_val = None
        if resample_validation:
            w_val = np.bincount(rng.integers(0, n_val, n_val), minlength=n_val).astype(np.float64)
        row = estimates(w_val, w_target)
        samples[r] = [row[k] for k in ESTIMATOR_NAMES]

    results = {}
    for j, key in enumerate(ESTIMATOR_NAMES):
        lo, hi = percentile_ci(samples[:, j], confidence)
        results[key] = BootstrapResult(value=point[key], ci_low=lo, ci_high=hi, samples=samples[:, j])
    return results


# ---------------------------------------------------------------------------------------- trust


def estimator_errors(
    estimates: Mapping[str, Mapping[str, float] | Sequence[float] | np.ndarray],
    true_accuracy: Mapping[str, float] | Sequence[float] | np.ndarray,
) -> dict[str, float]:
    """Mean absolute error of each estimator against the true accuracy, across shifts.

    ``estimates`` maps estimator name to its estimate per shift, either keyed by shift name (then
    ``true_accuracy`` must be keyed by the same shifts) or as a sequence aligned with ``true_accuracy``.
    Returns estimator name -> MAE (same units as the inputs).
    """
    out = {}
    for name, per_shift in estimates.items():
        if isinstance(per_shift, Mapping):
            if not isinstance(true_accuracy, Mapping):
                raise UserError(f"estimates of {name!r} are keyed by shift but true_accuracy is not",
                                where="estimator_errors", fix="key both by shift name, or pass both as sequences")
            missing = sorted(set(per_shift) - set(true_accuracy))
            if missing:
                raise UserError(f"no true accuracy for shifts {missing} of estimator {name!r}",
                                where="estimator_errors", fix="give a true accuracy for every shift estimated")
            keys = list(per_shift)
            est = np.array([per_shift[k] for k in keys], dtype=np.float64)
            truth = np.array([true_accuracy[k] for k in keys], dtype=np.float64)
        else:
            est = np.asarray(per_shift, dtype=np.float64)
            truth = (np.asarray(list(true_accuracy.values()), dtype=np.float64)
                     if isinstance(true_accuracy, Mapping) else np.asarray(true_accuracy, dtype=np.float64))
            if est.shape != truth.shape:
                raise UserError(f"estimator {name!r} has {est.size} estimates for {truth.size} shifts",
                                where="estimator_errors", fix="give one estimate per shift")
        if est.size == 0:
            raise UserError(f"estimator {name!r} has no estimates", where="estimator_errors",
                            fix="estimate at least one shift")
        out[name] = float(np.mean(np.abs(est - truth)))
    return out


#: Coverage level of the band that widens label-free intervals for estimator error under shift.
SHIFT_BAND_LEVEL = 0.90
#: The error scale of a label-free estimate is this floor plus the accuracy drop it predicts (see
#: :func:`error_scale`); picked from 0.01-0.1 on the demo's corruption views, where every value gave
#: about the same leave-one-corruption-out coverage.
SHIFT_SCALE_FLOOR = 0.03


def error_scale(estimate: np.ndarray | float, val_accuracy: float) -> np.ndarray:
    """How large an estimator's error is expected to be, from unlabeled information only:
    ``SHIFT_SCALE_FLOOR + max(0, val_accuracy - estimate)``. Label-free estimates are close when they
    predict little change and err most when they predict a large drop (measured on corruption views:
    median error 0.007, worst 0.57, the large errors all at large predicted drops), so errors divided by
    this scale are closer to identically distributed than raw errors: the normalized score of locally
    weighted split-conformal prediction (Lei et al. 2018, sec. 5.2)."""
    return SHIFT_SCALE_FLOOR + np.maximum(0.0, val_accuracy - np.asarray(estimate, dtype=np.float64))


@dataclass(frozen=True)
class ShiftErrors:
    """How far one estimator was from the true accuracy on shifts whose labels are known (hidden from it).

    ``signed = estimate - true accuracy`` per shift (positive: too high); ``scale`` is each shift's
    :func:`error_scale`. Median and 90th percentile of ``|signed|`` are numpy's default (linear)
    quantiles; ``worst`` indexes the shift with the largest error. ``band`` is the split-conformal
    quantile at ``level`` of the normalized scores ``|signed| / scale`` (:func:`conformal_half_width`):
    a new shift's error lies within ``band * scale`` with probability >= ``level`` if it is exchangeable
    with these; None when the shifts are too few to support that level.
    """

    signed: np.ndarray
    scale: np.ndarray
    level: float

    @property
    def n(self) -> int:
        return int(self.signed.size)

    @property
    def absolute(self) -> np.ndarray:
        return np.abs(self.signed)

    @property
    def scores(self) -> np.ndarray:
        """Normalized conformity scores ``|signed| / scale``."""
        return self.absolute / self.scale

    @property
    def band(self) -> float | None:
        return conformal_half_width(self.scores, self.level)

    @property
    def band_rank(self) -> int:
        return conformal_rank(self.n, self.level)

    def widening(self, estimate: float, val_accuracy: float) -> float:
        """Half-width to add on each side of a new estimate: ``band * error_scale(estimate)``, or the
        largest normalized score times the scale when the shifts are too few for a band (no coverage
        promised then)."""
        multiplier = self.band if self.band is not None else float(self.scores.max())
        return float(multiplier * error_scale(estimate, val_accuracy))

    @property
    def mean_abs(self) -> float:
        return float(self.absolute.mean())

    @property
    def median_abs(self) -> float:
        return float(np.median(self.absolute))

    @property
    def p90_abs(self) -> float:
        return float(np.quantile(self.absolute, 0.9))

    @property
    def worst(self) -> int:
        return int(np.argmax(self.absolute))

    @property
    def max_abs(self) -> float:
        return float(self.absolute.max())

    @property
    def share_too_high(self) -> float:
        return float(np.mean(self.signed > 0))

    @property
    def share_too_low(self) -> float:
        return float(np.mean(self.signed < 0))

    @property
    def mean_signed(self) -> float:
        return float(self.signed.mean())

    @property
    def lean(self) -> str:
        """``high`` when at least two thirds of the shifts are overestimated, ``low`` for underestimated,
        else ``none``: the direction of the bias, in words a finding can use."""
        if self.share_too_high >= 2 / 3:
            return "high"
        if self.share_too_low >= 2 / 3:
            return "low"
        return "none"


def conformal_rank(n: int, level: float = SHIFT_BAND_LEVEL) -> int:
    """The split-conformal order statistic ``ceil(level (n + 1))`` (1-based; may exceed ``n``)."""
    if not 0.0 < level < 1.0:
        raise UserError(f"level must lie in (0, 1), got {level}", where="level", fix="use e.g. 0.9")
    return math.ceil(level * (n + 1) - 1e-9)  # tolerance: 0.9 * 11 is 9.900000000000002


def min_scores_for_level(level: float = SHIFT_BAND_LEVEL) -> int:
    """The fewest scores whose split-conformal quantile is finite at ``level``: ``ceil(level / (1 - level))``."""
    return math.ceil(level / (1.0 - level) - 1e-9)  # tolerance: 0.9 / 0.1 is 9.000000000000002


def conformal_half_width(scores: np.ndarray, level: float = SHIFT_BAND_LEVEL) -> float | None:
    """Split-conformal quantile: the ``ceil(level (n + 1))``-th smallest of ``n`` conformity scores.

    For a new score exchangeable with these (Vovk, Gammerman & Shafer 2005; Lei, G'Sell, Rinaldo,
    Tibshirani & Wasserman 2018, "Distribution-Free Predictive Inference for Regression", JASA),
    ``P(new score <= quantile) >= level``, and at most ``level + 1 / (n + 1)`` for continuous scores.
    None when that rank exceeds ``n`` (fewer than ``level / (1 - level)`` scores, 9 at 90%): no finite
    band promises the level.
    """
    values = np.sort(np.asarray(scores, dtype=np.float64))
    rank = conformal_rank(values.size, level)
    return None if rank > values.size else float(values[rank - 1])


def shift_errors(estimates: np.ndarray, true_accuracy: np.ndarray, val_accuracy: float,
                 level: float = SHIFT_BAND_LEVEL) -> ShiftErrors:
    """:class:`ShiftErrors` of one estimator's ``estimates`` against ``true_accuracy`` (aligned, per shift),
    its error scale computed from ``val_accuracy`` (the validation set's accuracy)."""
    est = np.asarray(estimates, dtype=np.float64)
    truth = np.asarray(true_accuracy, dtype=np.float64)
    if est.shape != truth.shape or est.ndim != 1 or est.size == 0:
        raise UserError(f"{est.size} estimates for {truth.size} shifts", where="shift_errors",
                        fix="give one estimate per shift, at least one shift")
    return ShiftErrors(signed=est - truth, scale=error_scale(est, val_accuracy), level=level)


@dataclass(frozen=True)
class GroupOutCoverage:
    """Leave-one-group-out check of the conformal band: for each group (e.g. a corruption type), the band
    is calibrated on the other groups' shifts and tried on this group's. ``covered[i]`` says whether shift
    i's score was within the band built without its group (an unbounded band covers)."""

    covered: np.ndarray
    per_group: dict[str, float]
    unbounded_groups: list[str]

    @property
    def coverage(self) -> float:
        return float(self.covered.mean())

    @property
    def worst_group(self) -> str:
        return min(self.per_group, key=self.per_group.__getitem__)


def leave_one_group_out_coverage(scores: np.ndarray, groups: Sequence[str],
                                 level: float = SHIFT_BAND_LEVEL) -> GroupOutCoverage | None:
    """How often the conformal band covers shifts of a kind it was not calibrated on; None with fewer than
    two groups. Exchangeability fails across kinds of shift, so this can fall below ``level``: it measures
    how the band transfers to an unfamiliar shift, which is what an unlabeled target may be."""
    values = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(list(groups), dtype=object)
    if labels.shape != values.shape:
        raise UserError(f"{labels.size} groups for {values.size} scores", where="leave_one_group_out_coverage",
                        fix="give one group per shift")
    names = list(dict.fromkeys(labels.tolist()))
    if len(names) < 2:
        return None
    covered = np.zeros(values.size, dtype=bool)
    per_group, unbounded = {}, []
    for name in names:
        held = labels == name
        band = conformal_half_width(values[~held], level)
        if band is None:
            unbounded.append(name)
        covered[held] = True if band is None else values[held] <= band
        per_group[name] = float(covered[held].mean())
    return GroupOutCoverage(covered=covered, per_group=per_group, unbounded_groups=unbounded)


def shift_aware_interval(value: float, ci_low: float, ci_high: float, half_width: float) -> tuple[float, float]:
    """The sampling interval widened by the estimator's error band on each side, clipped to [0, 1]:
    ``[min(ci_low, value) - half_width, max(ci_high, value) + half_width]``. Adding the widths (rather than
    their root sum of squares) is conservative: the band's errors already contain some sampling noise."""
    return max(0.0, min(ci_low, value) - half_width), min(1.0, max(ci_high, value) + half_width)
