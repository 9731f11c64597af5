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
shift at hand, which is the dominant error of every label-free estimator. :func:`estimator_errors`
measures that bias on shifts whose labels are known (e.g. corruption views with labels hidden).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from assay.checks.ood_scores import msp, neg_entropy
from assay.errors import UserError
from assay.stats.atc import ThresholdCandidates, atc_threshold
from assay.stats.bootstrap import BootstrapResult, percentile_ci, spawn_seed

__all__ = [
    "ESTIMATOR_NAMES",
    "ATCEstimator",
    "atc_scores",
    "atc_threshold",
    "average_confidence",
    "doc_estimate",
    "estimator_errors",
    "label_free_estimates",
    "max_confidence",
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
