"""Membership inference: per-sample attack scores from a model's outputs, and the ROC statistics of an attack
with stratified bootstrap intervals. Pure functions over arrays.

Every score is **higher = more likely a member** (of the training set). Attacks:

* ``loss`` (Yeom et al. 2018, "Privacy risk in machine learning", the loss-threshold attack): ``-CE(x, y)``
  with one global threshold. The true-class confidence ``p_y = exp(-CE)`` is a monotone function of it,
  so a *global* confidence threshold has exactly the same ROC and is not reported separately.
* ``confidence`` (Song & Mittal 2021, "Systematic evaluation of privacy risks of machine learning models",
  the class-dependent confidence attack): the logit-scaled true-class confidence
  ``phi = log(p_y / (1 - p_y))`` (Carlini et al. 2022: close to Gaussian, unlike ``p_y``) with
  **class-conditional thresholds** (:func:`class_conditional`).
* ``modified_entropy`` (Song & Mittal 2021, eq. 4): ``Mentr = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i)``,
  low for confident correct predictions *and* high for confident wrong ones; score ``-log Mentr`` with
  class-conditional thresholds.
* ``lira_offline`` (Carlini et al. 2022, "Membership inference attacks from first principles", offline
  variant): a Gaussian fitted per sample to ``phi`` under OUT reference models (trained without the sample);
  score ``(phi_target - mu_out) / sigma_out``. The paper's one-sided test reports ``Phi`` of this z-score,
  a monotone map, so the ROC is the same. The variance is pooled over samples ("fixed variance") below
  :data:`LIRA_PER_SAMPLE_VARIANCE_MIN` reference models, as the paper recommends for few models.
* ``rmia_offline`` (Zarifzadeh et al. 2024, "Low-cost high-power membership inference attacks", offline):
  the likelihood ratio ``p_y(target) / Pr(x)`` with ``Pr(x) = ((1 + a) mean_OUT p_y + (1 - a)) / 2`` estimated
  from OUT reference models (``a`` = :data:`RMIA_OFFLINE_A`, ML Privacy Meter's default). The paper's score, the
  share of population samples ``z`` with ``LR(x) / LR(z) >= gamma``, is a non-decreasing function of ``LR(x)``
  for a fixed population, so its ROC is at best that of ``LR(x)``, which is what is scored (as its log).

Class-conditional thresholds (:func:`class_conditional`): each score is standardized by the mean and standard
deviation of the **non-member** scores of its class, so one threshold ``t`` on the result is the per-class
threshold ``mu_c + t sigma_c``; sweeping ``t`` gives the ROC. Those class statistics are *cross-fitted*: the
samples are split in folds and a sample's class statistics come from the non-members of the other folds, so
no reported score was calibrated on itself (members are never used to fit anything).

ROC statistics (:func:`membership_roc`): AUROC (a tied member/non-member pair counts 1/2, as
``sklearn.metrics.roc_auc_score``) and TPR at a fixed FPR ``f``, defined as the largest TPR over thresholds
whose FPR is at most ``f`` (``max(tpr[fpr <= f])`` over ``sklearn.metrics.roc_curve``'s points; Carlini et al.
2022 report the same quantity). Intervals: percentile bootstrap with members and non-members resampled
separately (stratified; Efron & Tibshirani 1993, ch. 13); where the interval of a TPR collapses to a point
(e.g. no member above the threshold in any resample), the exact Clopper-Pearson interval of ``k`` of ``n``
members above the point estimate's threshold, which treats that threshold as fixed.

What the sample size supports: an FPR of ``f`` is an estimate of how many of ``N`` non-members the
threshold lets through. With fewer than ``min_false_positives / f`` non-members (default 10 / f, so 1,000 for
1% and 10,000 for 0.1%) the threshold rests on fewer than ten non-members and the TPR there is noise:
:func:`membership_roc` then reports no number, only the count it would need (:func:`required_nonmembers`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from assay.errors import DataError, OptionError
from assay.stats.bootstrap import BootstrapResult, clopper_pearson, percentile_ci, spawn_seed

__all__ = [
    "DEFAULT_FPRS",
    "LIRA_PER_SAMPLE_VARIANCE_MIN",
    "MIN_FALSE_POSITIVES",
    "RMIA_OFFLINE_A",
    "MembershipROC",
    "TprAtFpr",
    "balanced_indices",
    "class_conditional",
    "lira_offline",
    "logit_confidence",
    "loss_score",
    "membership_roc",
    "modified_entropy",
    "overlapping_rows",
    "required_nonmembers",
    "rmia_offline",
    "roc_curve_points",
    "row_fingerprints",
    "true_class_log_probs",
]

#: The FPRs at which TPR is reported (Carlini et al. 2022 report 1% and 0.1%).
DEFAULT_FPRS = (0.01, 0.001)
#: TPR at FPR f is reported only with at least this many expected false positives (non-members x f).
MIN_FALSE_POSITIVES = 10
#: From this many reference models on, LiRA's variance is estimated per sample (Carlini et al. 2022, sec. VI-B:
#: a fixed, pooled variance is better with few models).
LIRA_PER_SAMPLE_VARIANCE_MIN = 64
#: RMIA's offline scaling of the OUT models' mean probability (Zarifzadeh et al. 2024; ML Privacy Meter's default).
RMIA_OFFLINE_A = 0.3
# Bootstrap weights materialized at once (rows x samples), to bound memory (80 MB of float64).
_WEIGHTS_PER_CHUNK = 10_000_000


def _logits_labels(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if z.ndim != 2 or y.shape != (z.shape[0],):
        raise DataError(f"expected (N, K) logits and N labels, got {z.shape} and {y.shape}", where="logits",
                        fix="pass one row of logits and one integer label per sample")
    if y.size and (y.min() < 0 or y.max() >= z.shape[1]):
        raise DataError(f"labels must lie in 0..{z.shape[1] - 1}", where="labels",
                        fix="give labels in the model's class order")
    return z, y.astype(np.int64)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    """Log-softmax with ``log1p`` of the non-maximal terms, so a confident class keeps ``log p ~ -sum(others)``
    instead of rounding to 0 (a loss of exactly 0 would tie every confident sample at the top of the ranking)."""
    top = z.argmax(axis=1)
    rows = np.arange(len(z))
    shifted = z - z[rows, top][:, None]
    terms = np.exp(shifted)
    terms[rows, top] = 0.0
    return shifted - np.log1p(terms.sum(axis=1, keepdims=True))


def true_class_log_probs(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``log p_y`` under the softmax of ``logits`` (= minus the cross-entropy loss)."""
    z, y = _logits_labels(logits, labels)
    return _log_softmax(z)[np.arange(len(y)), y]


def loss_score(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Yeom et al. (2018)'s loss attack score: ``-CE(x, y)`` (higher = lower loss = more likely a member)."""
    return true_class_log_probs(logits, labels)


def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``phi = log(p_y / (1 - p_y)) = z_y - logsumexp_{j != y} z_j`` (Carlini et al. 2022), computed without
    forming ``1 - p_y`` (no cancellation for confident predictions)."""
    z, y = _logits_labels(logits, labels)
    rows = np.arange(len(y))
    others = z.copy()
    others[rows, y] = -np.inf
    top = others.max(axis=1)
    return z[rows, y] - (top + np.log(np.exp(others - top[:, None]).sum(axis=1)))


def _log1m_probs(log_p: np.ndarray) -> np.ndarray:
    """``log(1 - p_i)`` for every entry: ``log1p(-p)`` where ``p <= 1/2``, and for the (at most one per row)
    larger entry the log of the other probabilities' sum, so a probability near 1 loses no precision."""
    p = np.exp(log_p)
    out = np.log1p(-np.minimum(p, 0.5))
    rows, cols = np.nonzero(p > 0.5)
    for r, c in zip(rows, cols, strict=True):
        rest = np.delete(log_p[r], c)
        top = rest.max()
        out[r, c] = top + np.log(np.exp(rest - top).sum())
    return out


def modified_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Song & Mittal (2021)'s modified prediction entropy (eq. 4), >= 0; *lower* for members.

    ``Mentr(F(x), y) = -(1 - F_y) log F_y - sum_{i != y} F_i log(1 - F_i)``, with logs computed from the
    log-softmax (no ``log 0`` for saturated predictions)."""
    z, y = _logits_labels(logits, labels)
    log_p = _log_softmax(z)
    p = np.exp(log_p)
    log1m = _log1m_probs(log_p)
    rows = np.arange(len(y))
    wrong = -(p * log1m)
    wrong[rows, y] = 0.0
    return -(1.0 - p[rows, y]) * log_p[rows, y] + wrong.sum(axis=1)


def class_conditional(scores: np.ndarray, labels: np.ndarray, is_member: np.ndarray, *, folds: int = 2,
                      seed: int = 0) -> np.ndarray:
    """Scores standardized per class by the non-members of that class, cross-fitted (see the module docstring).

    Samples are split in ``folds`` seeded folds (members and non-members each spread evenly); a sample's
    score becomes ``(s - mu_c) / sigma_c`` with ``mu_c``, ``sigma_c`` the mean and standard deviation of the
    non-member scores of class ``c`` in the other folds. A class with fewer than two such non-members (or
    no spread) uses the other folds' non-members of all classes instead."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    member = np.asarray(is_member, dtype=bool)
    if folds < 2:
        raise OptionError(f"cross-fitting needs at least 2 folds, got {folds}", where="folds", fix="use folds=2")
    rng = np.random.default_rng(spawn_seed(seed, "membership/folds"))
    fold = np.empty(s.size, dtype=np.int64)
    for group in (member, ~member):
        idx = np.flatnonzero(group)
        fold[idx] = rng.permutation(np.arange(idx.size) % folds)
    out = np.empty_like(s)
    for k in range(folds):
        fit = ~member & (fold != k)
        target = fold == k
        fit_scores = s[fit]
        pooled_mu = float(fit_scores.mean()) if fit_scores.size else 0.0
        pooled_sd = float(fit_scores.std(ddof=1)) if fit_scores.size > 1 else 0.0
        pooled_sd = pooled_sd if pooled_sd > 0 else 1.0
        for c in np.unique(y[target]):
            cls = fit & (y == c)
            mu, sd = pooled_mu, pooled_sd
            if cls.sum() >= 2 and s[cls].std(ddof=1) > 0:
                mu, sd = float(s[cls].mean()), float(s[cls].std(ddof=1))
            rows = target & (y == c)
            out[rows] = (s[rows] - mu) / sd
    return out


def lira_offline(target_phi: np.ndarray, reference_phi: np.ndarray, *, fixed_variance: bool | None = None
                 ) -> np.ndarray:
    """Offline LiRA scores (Carlini et al. 2022, Algorithm 1 without IN models): ``(phi - mu_out) / sigma_out``.

    ``target_phi``: (N,) :func:`logit_confidence` under the audited model; ``reference_phi``: (R, N) the same
    under R >= 2 reference models trained WITHOUT these samples (OUT models). ``fixed_variance`` (default:
    below :data:`LIRA_PER_SAMPLE_VARIANCE_MIN` models) pools the variance over samples."""
    t = np.asarray(target_phi, dtype=np.float64)
    ref = np.asarray(reference_phi, dtype=np.float64)
    if ref.ndim != 2 or ref.shape[1] != t.size:
        raise DataError(f"reference scores must be (R, {t.size}), got {ref.shape}", where="reference_phi",
                        fix="pass one row of phi per reference model, one column per sample")
    if ref.shape[0] < 2:
        raise OptionError(f"offline LiRA needs at least 2 reference models, got {ref.shape[0]}",
                          where="reference_models", fix="train two or more reference models without the "
                          "training data (different seeds or data halves)")
    if not (np.isfinite(t).all() and np.isfinite(ref).all()):
        raise DataError("non-finite logit-scaled confidence", where="lira_offline",
                        fix="check the models' logits for NaN or overflow")
    mu = ref.mean(axis=0)
    var = ref.var(axis=0, ddof=1)
    fixed = ref.shape[0] < LIRA_PER_SAMPLE_VARIANCE_MIN if fixed_variance is None else fixed_variance
    sd = np.sqrt(np.full_like(var, var.mean()) if fixed else var)
    sd = np.maximum(sd, 1e-12)
    return (t - mu) / sd


def rmia_offline(target_log_py: np.ndarray, reference_log_py: np.ndarray, *, offline_a: float = RMIA_OFFLINE_A
                 ) -> np.ndarray:
    """Offline RMIA scores (see the module docstring): ``log p_y - log(((1 + a) mean_OUT p_y + (1 - a)) / 2)``.

    ``target_log_py``: (N,) :func:`true_class_log_probs` under the audited model; ``reference_log_py``: (R, N)
    the same under R >= 1 reference models trained WITHOUT these samples."""
    t = np.asarray(target_log_py, dtype=np.float64)
    ref = np.asarray(reference_log_py, dtype=np.float64)
    if ref.ndim != 2 or ref.shape[1] != t.size or ref.shape[0] < 1:
        raise DataError(f"reference scores must be (R, {t.size}) with R >= 1, got {ref.shape}",
                        where="reference_log_py", fix="pass one row per reference model, one column per sample")
    if not 0.0 <= offline_a <= 1.0:
        raise OptionError(f"offline_a must lie in [0, 1], got {offline_a}", where="offline_a", fix="use e.g. 0.3")
    population = 0.5 * ((1.0 + offline_a) * np.exp(ref).mean(axis=0) + (1.0 - offline_a))
    return t - np.log(np.maximum(population, 1e-300))


def required_nonmembers(fpr: float, min_false_positives: int = MIN_FALSE_POSITIVES) -> int:
    """Non-members needed before TPR at ``fpr`` is reported: ``ceil(min_false_positives / fpr)``."""
    if not 0.0 < fpr <= 1.0:
        raise OptionError(f"an FPR must lie in (0, 1], got {fpr}", where="fprs", fix="use e.g. 0.01 or 0.001")
    return math.ceil(min_false_positives / fpr - 1e-9)


def _as_scores(values: np.ndarray, name: str) -> np.ndarray:
    s = np.asarray(values, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise DataError(f"{name} must be a non-empty 1-D array of scores, got shape {s.shape}", where=name,
                        fix="pass one score per sample")
    if not np.isfinite(s).all():
        raise DataError(f"{name} contains NaN or infinite scores", where=name,
                        fix="check the model's logits for NaN or overflow")
    return s


@dataclass(frozen=True)
class _Sorted:
    """Pooled scores sorted descending: member flags, tie-group ends, the position of every input sample."""

    is_member: np.ndarray
    group_end: np.ndarray
    member_pos: np.ndarray
    nonmember_pos: np.ndarray
    thresholds: np.ndarray  # the score of each tie group (descending)


def _sort(members: np.ndarray, nonmembers: np.ndarray) -> _Sorted:
    pooled = np.concatenate([members, nonmembers])
    order = np.argsort(-pooled, kind="stable")
    ranked = pooled[order]
    group_end = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return _Sorted(order < members.size, group_end, rank[: members.size], rank[members.size:], ranked[group_end])


def _cumulative(s: _Sorted, w_mem: np.ndarray, w_non: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TPR and FPR at every distinct threshold (descending), one row per row of weights (sorted order)."""
    cum_m = np.cumsum(w_mem, axis=1)[:, s.group_end]
    cum_n = np.cumsum(w_non, axis=1)[:, s.group_end]
    return cum_m / cum_m[:, -1:], cum_n / cum_n[:, -1:]


def _auroc(tpr: np.ndarray, fpr: np.ndarray) -> np.ndarray:
    """Trapezoid area under (fpr, tpr) from (0, 0): a tie group's step counts its pairs 1/2."""
    zeros = np.zeros((tpr.shape[0], 1))
    t = np.hstack([zeros, tpr])
    f = np.hstack([zeros, fpr])
    return (np.diff(f, axis=1) * (t[:, 1:] + t[:, :-1]) / 2).sum(axis=1)


def _tpr_at(tpr: np.ndarray, fpr: np.ndarray, f: float) -> tuple[np.ndarray, np.ndarray]:
    """Largest TPR with FPR <= f per row, and the index of that threshold (-1: none, TPR 0)."""
    last = (fpr <= f + 1e-12).sum(axis=1) - 1  # fpr is non-decreasing, so the admissible points are a prefix
    value = np.where(last >= 0, tpr[np.arange(len(last)), np.maximum(last, 0)], 0.0)
    return value, last


def roc_curve_points(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, from (0, 0) (as ``sklearn.metrics.roc_curve`` without dropping)."""
    m, n = _as_scores(member_scores, "member_scores"), _as_scores(nonmember_scores, "nonmember_scores")
    s = _sort(m, n)
    w = s.is_member.astype(np.float64)[None, :]
    tpr, fpr = _cumulative(s, w, 1.0 - w)
    return np.r_[0.0, fpr[0]], np.r_[0.0, tpr[0]]


@dataclass(frozen=True)
class TprAtFpr:
    """TPR at FPR ``fpr``, or why it is not reported (``value`` None: too few non-members, ``needed`` of them)."""

    fpr: float
    value: float | None
    ci_low: float | None
    ci_high: float | None
    method: str
    needed: int
    threshold: float | None = None


@dataclass(frozen=True)
class MembershipROC:
    """An attack's ROC statistics: AUROC with its interval and bootstrap samples, TPR at each FPR, the curve."""

    auroc: BootstrapResult
    tpr_at: dict[float, TprAtFpr]
    fpr: np.ndarray
    tpr: np.ndarray
    n_members: int
    n_nonmembers: int
    method: str
    extra: dict[str, float] = field(default_factory=dict)


def _multiplicities(rng: np.random.Generator, n: int, rows: int) -> np.ndarray:
    """(rows, n) counts of each sample in n draws with replacement."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=rows).astype(np.float64)


def membership_roc(
    member_scores: np.ndarray,
    nonmember_scores: np.ndarray,
    *,
    fprs: tuple[float, ...] = DEFAULT_FPRS,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    min_false_positives: int = MIN_FALSE_POSITIVES,
    name: str = "membership",
) -> MembershipROC:
    """AUROC and TPR at each FPR in ``fprs`` of an attack (members positive, higher score = member), with
    stratified percentile bootstrap intervals (``n_resamples=0``: point estimates, no intervals).

    TPR at ``f`` is reported only with at least ``required_nonmembers(f, min_false_positives)`` non-members;
    otherwise its ``value`` is None. Seeds derive from ``(seed, name)``: the same name gives the same resamples,
    so attacks scored on the same samples with the same name are compared on paired resamples."""
    m = _as_scores(member_scores, "member_scores")
    n = _as_scores(nonmember_scores, "nonmember_scores")
    if n_resamples < 0:
        raise OptionError(f"n_resamples must be >= 0, got {n_resamples}", where="n_resamples", fix="use e.g. 1000")
    s = _sort(m, n)
    ones = s.is_member.astype(np.float64)[None, :]
    tpr0, fpr0 = _cumulative(s, ones, 1.0 - ones)
    auroc_point = float(_auroc(tpr0, fpr0)[0])
    tpr_points = {f: _tpr_at(tpr0, fpr0, f) for f in fprs}

    rng_m = np.random.default_rng(spawn_seed(seed, f"{name}/members"))
    rng_n = np.random.default_rng(spawn_seed(seed, f"{name}/nonmembers"))
    total = m.size + n.size
    per_chunk = max(1, _WEIGHTS_PER_CHUNK // total)
    auroc_samples: list[np.ndarray] = []
    tpr_samples: dict[float, list[np.ndarray]] = {f: [] for f in fprs}
    for start in range(0, n_resamples, per_chunk):
        rows = min(per_chunk, n_resamples - start)
        w_m = np.zeros((rows, total))
        w_n = np.zeros((rows, total))
        w_m[:, s.member_pos] = _multiplicities(rng_m, m.size, rows)
        w_n[:, s.nonmember_pos] = _multiplicities(rng_n, n.size, rows)
        tpr, fpr = _cumulative(s, w_m, w_n)
        auroc_samples.append(_auroc(tpr, fpr))
        for f in fprs:
            tpr_samples[f].append(_tpr_at(tpr, fpr, f)[0])
    level = int(round(confidence * 100))
    boot = f"stratified bootstrap percentile, {level}% (members and non-members resampled separately, " \
           f"B={n_resamples}, seed={seed})"
    auroc_all = np.concatenate(auroc_samples) if auroc_samples else np.empty(0)
    lo, hi = percentile_ci(auroc_all, confidence) if auroc_all.size else (float("nan"), float("nan"))
    tpr_at: dict[float, TprAtFpr] = {}
    needed = {f: required_nonmembers(f, min_false_positives) for f in fprs}
    for f in fprs:
        if n.size < needed[f]:
            tpr_at[f] = TprAtFpr(f, None, None, None, f"not reported: {n.size} non-members, FPR {f:g} needs "
                                 f"at least {needed[f]} ({min_false_positives} / FPR)", needed[f])
            continue
        value, last = float(tpr_points[f][0][0]), int(tpr_points[f][1][0])
        threshold = float(s.thresholds[last]) if last >= 0 else None
        samples = np.concatenate(tpr_samples[f]) if tpr_samples[f] else np.empty(0)
        t_lo, t_hi = percentile_ci(samples, confidence) if samples.size else (float("nan"), float("nan"))
        method = boot
        if samples.size and t_lo == t_hi:
            k = int(round(value * m.size))
            t_lo, t_hi = clopper_pearson(k, m.size, confidence)
            method = (f"Clopper-Pearson exact, {level}%, of {k} of {m.size} members above the threshold (the "
                      f"bootstrap interval collapses; the threshold is treated as fixed)")
        tpr_at[f] = TprAtFpr(f, value, _finite(t_lo), _finite(t_hi), method, needed[f], threshold)
    return MembershipROC(BootstrapResult(auroc_point, lo, hi, auroc_all), tpr_at, np.r_[0.0, fpr0[0]],
                         np.r_[0.0, tpr0[0]], int(m.size), int(n.size), boot)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def row_fingerprints(x: np.ndarray) -> np.ndarray:
    """One 16-byte BLAKE2b digest per row of ``x`` (its dtype-normalized bytes: numbers as float64, text as
    UTF-8), so equal inputs stored as float32 and float64 match."""
    arr = np.asarray(x)
    digests = np.empty(len(arr), dtype="S16")
    if arr.dtype == object or arr.dtype.kind in "US":
        for i, row in enumerate(arr):
            digests[i] = hashlib.blake2b(str(row).encode("utf-8"), digest_size=16).digest()
        return digests
    flat = arr.reshape(len(arr), -1)
    for i, row in enumerate(flat):  # one row at a time: no float64 copy of the whole set
        canonical = np.asarray(row, dtype=np.float64) + 0.0  # -0.0 -> 0.0: the same number, the same bytes
        digests[i] = hashlib.blake2b(canonical.tobytes(), digest_size=16).digest()
    return digests


def overlapping_rows(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the rows of ``a`` whose content equals some row of ``b``, and of those rows of ``b``."""
    fa, fb = row_fingerprints(a), row_fingerprints(b)
    common = np.intersect1d(fa, fb)
    return np.flatnonzero(np.isin(fa, common)), np.flatnonzero(np.isin(fb, common))


def balanced_indices(n_members: int, n_nonmembers: int, *, seed: int = 0, cap: int | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Equal-size seeded samples (sorted indices) of members and non-members: ``min(n_members, n_nonmembers,
    cap)`` of each, the larger side subsampled without replacement."""
    k = min(n_members, n_nonmembers, cap if cap is not None else n_members)
    rng = np.random.default_rng(spawn_seed(seed, "membership/balance"))
    pick_m = np.sort(rng.choice(n_members, size=k, replace=False)) if k < n_members else np.arange(n_members)
    pick_n = np.sort(rng.choice(n_nonmembers, size=k, replace=False)) if k < n_nonmembers else np.arange(n_nonmembers)
    return pick_m, pick_n
