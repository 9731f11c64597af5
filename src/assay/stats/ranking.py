"""Ranking metrics for OOD detection and selective prediction, with stratified bootstrap intervals.

Conventions (OpenOOD, Zhang et al. 2023):

* Detector scores are **higher = more in-distribution** (MSP, energy, -Mahalanobis, ...).
* **OOD is the positive class**: AUROC and AUPR-Out rank OOD samples by ``-score``; AUPR-In is the
  same curve with ID as positive and ``score`` as the ranking.
* **FPR@95TPR** is the fraction of OOD samples accepted as ID (``score >= t``) at the largest
  threshold ``t`` that still accepts at least 95% of ID samples (Hendrycks & Gimpel 2017; OpenOOD's
  ``fpr_recall``). Equal to ``sklearn.metrics.roc_curve(is_id, score)``'s FPR at the first TPR >= 0.95.
* Ties are handled as scikit-learn does: AUROC counts a tied (ID, OOD) pair as 1/2; average precision
  is evaluated at distinct thresholds only (``average_precision_score``, no interpolation).

All four metrics are functions of per-threshold cumulative counts of ID and OOD samples, so they are
computed from per-sample *weights* over one sort: all-ones weights give the point estimate, and a
``(b, n)`` matrix of bootstrap multiplicities gives ``b`` resampled values through the same code.
ID and OOD are resampled separately (stratified), so every resample keeps both set sizes.

Selective prediction (Geifman & El-Yaniv 2017): the risk-coverage curve accepts the most confident
samples first; AURC is the area under it (Geifman et al. 2019's definition), evaluated at distinct
confidence values so that the result does not depend on how ties are ordered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from assay.errors import UserError
from assay.stats.bootstrap import BootstrapResult, percentile_ci, spawn_seed

__all__ = [
    "OOD_METRICS",
    "RiskCoverage",
    "aupr_in",
    "aupr_out",
    "aurc",
    "aurc_weighted",
    "auroc",
    "fpr_at_tpr",
    "ood_metrics",
    "risk_coverage_curve",
    "selective_risk_at_coverage",
]

OOD_METRICS = ("auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr")

# Resample weights materialized at once (rows x samples), to bound memory.
_WEIGHTS_PER_CHUNK = 10_000_000


def _as_scores(values: np.ndarray, name: str) -> np.ndarray:
    scores = np.asarray(values, dtype=np.float64)
    if scores.ndim != 1 or scores.size == 0:
        raise UserError(f"{name} must be a non-empty 1-D array of scores, got shape {scores.shape}",
                        where=name, fix="pass one score per sample")
    if not np.all(np.isfinite(scores)):
        raise UserError(f"{name} contains NaN or infinite scores", where=name,
                        fix="check the detector's inputs (logits/features) for NaN or overflow")
    return scores


@dataclass(frozen=True)
class _Sorted:
    """Pooled scores sorted descending, with tie groups and the ID/OOD membership of each position."""

    is_id: np.ndarray      # (n,) bool, in sorted order
    group_end: np.ndarray  # (g,) index of the last position of each tie group (descending score)
    order: np.ndarray      # (n,) permutation from pooled [id, ood] order to sorted order
    n_id: int
    n_ood: int


def _sort(id_scores: np.ndarray, ood_scores: np.ndarray) -> _Sorted:
    pooled = np.concatenate([id_scores, ood_scores])
    order = np.argsort(-pooled, kind="stable")
    ranked = pooled[order]
    group_end = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])
    is_id = order < id_scores.size
    return _Sorted(is_id, group_end, order, id_scores.size, ood_scores.size)


def _metrics_from_weights(s: _Sorted, w_id: np.ndarray, w_ood: np.ndarray, tpr: float) -> dict[str, np.ndarray]:
    """The four metrics for each row of weights; ``w_id``/``w_ood`` are (b, n) in sorted order
    (zero where the position belongs to the other set)."""
    cum_id = np.cumsum(w_id, axis=1)[:, s.group_end]    # ID with score >= t, per distinct t (descending)
    cum_ood = np.cumsum(w_ood, axis=1)[:, s.group_end]
    n_id = cum_id[:, -1:]
    n_ood = cum_ood[:, -1:]
    zeros = np.zeros_like(n_id)

    id_in_group = np.diff(cum_id, axis=1, prepend=zeros)
    ood_in_group = np.diff(cum_ood, axis=1, prepend=zeros)
    # OOD positive, ranked by -score: an (ID, OOD) pair is correctly ordered when s_ood < s_id.
    ood_below = n_ood - cum_ood
    auroc = (id_in_group * (ood_below + 0.5 * ood_in_group)).sum(axis=1) / (n_id * n_ood)[:, 0]

    # AUPR-In: ID positive, thresholds descending in score.
    # Resamples can leave the top tie groups empty (0 / 0): those groups carry no recall step.
    precision_in = np.divide(cum_id, cum_id + cum_ood, out=np.zeros_like(cum_id), where=cum_id > 0)
    aupr_in = (id_in_group / n_id * precision_in).sum(axis=1)

    # AUPR-Out: OOD positive, thresholds descending in -score (ascending score): counts from the end.
    rev_ood = np.cumsum(ood_in_group[:, ::-1], axis=1)
    rev_id = np.cumsum(id_in_group[:, ::-1], axis=1)
    precision_out = np.divide(rev_ood, rev_ood + rev_id, out=np.zeros_like(rev_ood), where=rev_ood > 0)
    aupr_out = (ood_in_group[:, ::-1] / n_ood * precision_out).sum(axis=1)

    # FPR@TPR: first (largest) threshold accepting >= tpr of ID; fraction of OOD accepted there.
    reached = cum_id >= tpr * n_id - 1e-9 * n_id
    first = np.argmax(reached, axis=1)
    fpr = cum_ood[np.arange(len(first)), first] / n_ood[:, 0]
    return {"auroc": auroc, "aupr_in": aupr_in, "aupr_out": aupr_out, "fpr_at_95_tpr": fpr}


def _point(id_scores: np.ndarray, ood_scores: np.ndarray, tpr: float = 0.95) -> dict[str, float]:
    id_scores = _as_scores(id_scores, "id_scores")
    ood_scores = _as_scores(ood_scores, "ood_scores")
    s = _sort(id_scores, ood_scores)
    w_id = s.is_id.astype(np.float64)[None, :]
    values = _metrics_from_weights(s, w_id, 1.0 - w_id, tpr)
    return {k: float(v[0]) for k, v in values.items()}


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Area under the ROC curve with OOD as positive (ranked by ``-score``); ties count 1/2."""
    return _point(id_scores, ood_scores)["auroc"]


def aupr_in(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Average precision with ID as positive, ranked by ``score`` (sklearn ``average_precision_score``)."""
    return _point(id_scores, ood_scores)["aupr_in"]


def aupr_out(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Average precision with OOD as positive, ranked by ``-score``."""
    return _point(id_scores, ood_scores)["aupr_out"]


def fpr_at_tpr(id_scores: np.ndarray, ood_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of OOD accepted as ID at the largest threshold accepting at least ``tpr`` of ID."""
    if not 0.0 < tpr <= 1.0:
        raise UserError(f"tpr must lie in (0, 1], got {tpr}", where="fpr_at_tpr(tpr=...)",
                        fix="pass e.g. tpr=0.95")
    return _point(id_scores, ood_scores, tpr)["fpr_at_95_tpr"]


def _multiplicities(rng: np.random.Generator, n: int, rows: int) -> np.ndarray:
    """(rows, n) counts of how often each of n samples is drawn in n draws with replacement."""
    out = np.empty((rows, n), dtype=np.float64)
    for r in range(rows):
        out[r] = np.bincount(rng.integers(0, n, size=n), minlength=n)
    return out


def ood_metrics(
    id_scores: np.ndarray,
    ood_scores: np.ndarray,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    name: str = "ood",
) -> dict[str, BootstrapResult]:
    """AUROC, AUPR-In, AUPR-Out and FPR@95TPR with percentile bootstrap intervals.

    ID and OOD scores are resampled separately (stratified bootstrap), each with its own seed stream
    derived from ``(seed, name)``. ``n_resamples=0`` gives point estimates with NaN intervals.
    """
    id_scores = _as_scores(id_scores, "id_scores")
    ood_scores = _as_scores(ood_scores, "ood_scores")
    if n_resamples < 0:
        raise UserError(f"n_resamples must be >= 0, got {n_resamples}", where="ood_metrics(n_resamples=...)")
    s = _sort(id_scores, ood_scores)
    ones_id = s.is_id.astype(np.float64)[None, :]
    point = _metrics_from_weights(s, ones_id, 1.0 - ones_id, 0.95)

    rng_id = np.random.default_rng(spawn_seed(seed, f"{name}/id"))
    rng_ood = np.random.default_rng(spawn_seed(seed, f"{name}/ood"))
    # Map each pooled-order sample to its sorted position, so resampled counts land in sorted order.
    rank = np.empty_like(s.order)
    rank[s.order] = np.arange(s.order.size)
    id_positions = rank[: s.n_id]
    ood_positions = rank[s.n_id:]

    n = s.n_id + s.n_ood
    per_chunk = max(1, _WEIGHTS_PER_CHUNK // n)
    samples: dict[str, list[np.ndarray]] = {k: [] for k in OOD_METRICS}
    for start in range(0, n_resamples, per_chunk):
        rows = min(per_chunk, n_resamples - start)
        w_id = np.zeros((rows, n))
        w_ood = np.zeros((rows, n))
        w_id[:, id_positions] = _multiplicities(rng_id, s.n_id, rows)
        w_ood[:, ood_positions] = _multiplicities(rng_ood, s.n_ood, rows)
        for key, values in _metrics_from_weights(s, w_id, w_ood, 0.95).items():
            samples[key].append(values)

    results = {}
    for key in OOD_METRICS:
        resampled = np.concatenate(samples[key]) if samples[key] else np.empty(0)
        lo, hi = percentile_ci(resampled, confidence) if resampled.size else (float("nan"), float("nan"))
        results[key] = BootstrapResult(float(point[key][0]), lo, hi, resampled)
    return results


@dataclass(frozen=True)
class RiskCoverage:
    """Risk-coverage curve at distinct confidence thresholds (descending): accepting every sample with
    confidence >= threshold[i] covers coverage[i] of the data with error rate risk[i]."""

    threshold: np.ndarray
    coverage: np.ndarray
    risk: np.ndarray


def _selective_inputs(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    conf = _as_scores(confidence, "confidence")
    corr = np.asarray(correct)
    if corr.shape != conf.shape:
        raise UserError(f"correct has shape {corr.shape} but confidence has shape {conf.shape}",
                        where="risk_coverage_curve", fix="pass one correctness flag per confidence")
    if corr.dtype != bool and not np.isin(corr, (0, 1)).all():
        raise UserError("correct must be boolean (or 0/1)", where="risk_coverage_curve",
                        fix="pass predictions == labels")
    return conf, corr.astype(np.float64)


def risk_coverage_curve(confidence: np.ndarray, correct: np.ndarray) -> RiskCoverage:
    """Selective risk (error rate among accepted) against coverage, most confident accepted first
    (Geifman & El-Yaniv 2017). Tied confidences are accepted or rejected together."""
    conf, corr = _selective_inputs(confidence, correct)
    order = np.argsort(-conf, kind="stable")
    ranked = conf[order]
    ends = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])
    accepted = ends + 1
    errors = np.cumsum(1.0 - corr[order])[ends]
    return RiskCoverage(ranked[ends], accepted / conf.size, errors / accepted)


def aurc(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve (Geifman et al. 2019), as a step function over distinct
    thresholds: ``sum_i (coverage_i - coverage_{i-1}) * risk_i``. Without ties this is the usual
    ``mean_k risk(top k)``; lower is better."""
    curve = risk_coverage_curve(confidence, correct)
    widths = np.diff(curve.coverage, prepend=0.0)
    return float((widths * curve.risk).sum())


def aurc_weighted(confidence: np.ndarray, correct: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:func:`aurc` of each weighted copy of the data, one per row of ``weights`` (shape (b, n), e.g.
    bootstrap multiplicities): equal to ``aurc`` on the data with sample ``i`` repeated ``weights[r, i]``
    times, computed with one sort for all rows (the bootstrap CI of AURC)."""
    conf, corr = _selective_inputs(confidence, correct)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if w.shape[1] != conf.size:
        raise UserError(f"weights have {w.shape[1]} columns for {conf.size} samples", where="aurc_weighted",
                        fix="pass one weight per sample in each row")
    order = np.argsort(-conf, kind="stable")
    ranked = conf[order]
    ends = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])
    w = w[:, order]
    accepted = np.cumsum(w, axis=1)[:, ends]
    errors = np.cumsum(w * (1.0 - corr[order]), axis=1)[:, ends]
    total = accepted[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        risk = np.where(accepted > 0, errors / accepted, 0.0)
        widths = np.diff(accepted, axis=1, prepend=0.0) / total
    return (widths * risk).sum(axis=1)


def selective_risk_at_coverage(confidence: np.ndarray, correct: np.ndarray, coverage: float) -> tuple[float, float]:
    """(achieved coverage, risk) at the largest threshold whose coverage does not exceed ``coverage``:
    "abstain on the least-confident 1 - coverage and the error rate becomes risk". Where the first
    tie group alone exceeds ``coverage``, that group is returned."""
    if not 0.0 < coverage <= 1.0:
        raise UserError(f"coverage must lie in (0, 1], got {coverage}", where="selective_risk_at_coverage")
    curve = risk_coverage_curve(confidence, correct)
    i = max(int(np.searchsorted(curve.coverage, coverage + 1e-12, side="right")) - 1, 0)
    return float(curve.coverage[i]), float(curve.risk[i])
