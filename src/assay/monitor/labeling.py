"""The feedback loop: which logged predictions to label next, labels back into the log, and the labelled slice
of the log as a data set ``assay evaluate --data`` / ``assay compare --data`` read.

**Selection** (:func:`select_for_labeling`). Every logged request row ``(request_id, row)`` not yet labelled gets
three scores in [0, 1], computed by pure functions over arrays:

* *uncertainty* ``u = ((1 - margin) + H / ln C) / 2``: the mean of least-margin sampling (``margin = p_(1) -
  p_(2)``, Scheffer et al. 2001) and normalised predictive entropy (Settles 2009, "Active Learning Literature
  Survey", section 3.1). Near 0 for confident answers, 1 for a uniform one.
* *novelty* ``d``: how far the row lies from the data the model was evaluated on, by the distance to its k-th
  nearest neighbour (Sun et al. 2022, "Out-of-distribution detection with deep nearest neighbors": L2-normalised
  embeddings; standardised columns for tabular inputs) in the reference's seeded sample of rows. The distance is
  turned into a conformal p-value against the sample's own leave-one-out k-th-neighbour distances, ``p = (1 +
  #{reference distances >= distance}) / (m + 1)``, and ``d = log(1/p) / log(m + 1)``: 1 for a row farther away
  than every reference row, about 0.14 on average for rows like the reference (so in-distribution rows add little
  noise). Needs logged features (``assay serve --log-features``) and a reference with an embedding sample, or
  logged tabular inputs and a reference with an input sample. Without a reference, the pool itself (a seeded
  sample of at most 2,000 of the logged rows) plays the reference: low-density rows of the current traffic.
* *disagreement* ``g``: rows of another role (``shadow``, ``canary``) logged for the same ``(request_id, row)``
  as the answer: 1 when a challenger's top-1 class differs from the answer's, else the largest total-variation
  distance between their probability vectors (Settles 2009, query-by-committee: disagreement marks informative
  samples, and a champion/challenger flip is exactly what a promotion decision turns on).

The combined score is ``w_u u + w_d d + w_g g`` (:class:`SelectionWeights`, 1 each by default; a missing
component counts 0). Rows are ranked by it, ties broken by a seeded hash of ``(request_id, row)`` (deterministic
under a seed, and independent of the order rows were read in); one row is kept per ``input_sha256`` (the same
input is labelled once: the row with the largest ``w_u u + w_g g``; ``copies`` counts the logged rows sharing it),
inputs already labelled anywhere in the log are skipped, and the first ``n`` are returned with a ``reason`` naming
the components that count. The nearest-neighbour search runs only for rows whose score could still reach the
``n``-th best (``w_u u + w_g g + w_d`` at least the ``n``-th largest ``w_u u + w_g g``), which leaves the result
unchanged and skips most confident, agreeing traffic.

The queue is not a random sample, by design: accuracy measured on the labels it brought in (the monitor's realized
accuracy, ``assay evaluate`` of the labelled slice) is biased low. Judge a model on a random audit sample of the
traffic instead (``examples/feedback_loop.py`` labels a later week in full for that). Measured in
``bench/bench_labeling.py``: on the loop example's shifted digits the queue's picks hold 1.7x the champion's errors
of random picks, while a candidate fine-tuned on them is as accurate as one fine-tuned on as many random picks.

**Estimation queue** (:func:`select_for_estimate`, ``assay monitor --export-labeling`` by default): for an
unbiased estimate of the logged traffic's accuracy rather than training data, the rows are drawn by importance
sampling on the model's expected errors (:mod:`assay.stats.active_testing`: Sawade et al.'s proposal with a
defensive share of uniform, ``n`` draws with replacement over every logged answer row), and the queue CSV carries
what the estimate needs on every line (:data:`ESTIMATE_QUEUE_COLUMNS`: draws, sampling probability, centre, the
logged answer's class, the population size and seed), so that the filled-in file alone gives the estimate
(:func:`queue_estimate`; ``assay feedback import`` prints it). Rows already labelled in the log come with their
label filled in.

**Labels** (:func:`read_label_csv`, :func:`import_labels`): a CSV with ``request_id``, ``label`` and optionally
``row`` (UTF-8), checked whole before anything is written; labels are class names (when known) or indices.

**Data set** (:func:`labelled_arrays`, :func:`write_dataset_npz`): the logged inputs (``--log-inputs``) of one
row per ``(request_id, row)``, with their labels, as an ``.npz`` of ``x``, ``y``, ``ids`` (``request_id:row``),
``meta_version`` and ``meta_time`` that :func:`assay.data.npz.load_npz` reads.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from assay.errors import DataError, OptionError
from assay.stats.probabilities import log_softmax

if TYPE_CHECKING:
    from assay.reference import Reference

__all__ = [
    "DATASET_MARKER",
    "ESTIMATE_QUEUE_COLUMNS",
    "QUEUE_COLUMNS",
    "ImportResult",
    "LabelRow",
    "LabelledArrays",
    "SelectionWeights",
    "disagreement_scores",
    "import_labels",
    "is_feedback_dataset",
    "is_labeling_queue",
    "knn_distances",
    "labelled_arrays",
    "logged_inputs",
    "novelty_scores",
    "queue_estimate",
    "read_label_csv",
    "select_for_estimate",
    "select_for_labeling",
    "uncertainty_scores",
    "write_dataset_npz",
    "write_queue_csv",
]

#: Role order when several rows share a (request_id, row): the answer is the first present.
_ROLE_ORDER = {"primary": 0, "canary": 1, "shadow": 2}
#: Columns of the labeling queue CSV, in order; ``label`` is left blank for the annotator.
QUEUE_COLUMNS = ("request_id", "row", "label", "score", "reason", "uncertainty", "novelty", "disagreement",
                 "top1", "confidence", "margin", "entropy", "copies", "version", "role", "time", "input_sha256")
#: Columns of the estimation queue CSV (:func:`select_for_estimate`), in order.
ESTIMATE_QUEUE_COLUMNS = ("request_id", "row", "label", "draws", "probability", "centre", "top1", "population",
                          "centre_mean", "seed", "selection")
#: The member that marks an .npz written by `write_dataset_npz` (load_npz ignores it).
DATASET_MARKER = "assay_feedback_dataset"
_DATASET_FORMAT = "assay.feedback.dataset/1"
#: Rows of the pool that stand in for the reference when none is given.
POOL_SAMPLE = 2000
_MAX_LABEL_CHARS = 256


# ------------------------------------------------------------------------------------------- pure scores


def uncertainty_scores(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(u, margin, normalised entropy)`` per row of ``logits`` (n, C): ``u = ((1 - margin) + H / ln C) / 2``
    with ``margin = p_(1) - p_(2)`` and ``H = -sum p ln p`` (see the module docstring)."""
    log_p = log_softmax(np.asarray(logits, dtype=np.float64))
    n, num_classes = log_p.shape
    if num_classes < 2:
        raise DataError(f"logits have {num_classes} column; a classifier has at least 2 classes", where="logits",
                        fix="log the model's raw logits, one column per class")
    p = np.exp(log_p)
    top2 = -np.partition(-p, 1, axis=1)[:, :2]
    margin = top2[:, 0] - top2[:, 1]
    entropy = np.clip(-(p * log_p).sum(axis=1) / math.log(num_classes), 0.0, 1.0)
    return ((1.0 - margin) + entropy) / 2.0, margin, entropy


def knn_distances(queries: np.ndarray, reference: np.ndarray, k: int, *, exclude_self: bool = False,
                  chunk: int = 2048, dtype: Any = np.float32) -> np.ndarray:
    """Euclidean distance from each row of ``queries`` (n, D) to its ``k``-th nearest row of ``reference``
    (m, D), in chunks of ``chunk`` queries (memory O(chunk * m)), by ``|a|^2 + |b|^2 - 2 a.b`` in ``dtype``
    (float32 by default: twice as fast, and its rounding, ~1e-3 on the distance of unit vectors, does not
    change a ranking that matters). ``exclude_self``: ``queries`` is ``reference`` and each row's zero distance
    to itself is skipped (leave-one-out)."""
    q = np.asarray(queries, dtype=dtype)
    r = np.asarray(reference, dtype=dtype)
    m = len(r) - (1 if exclude_self else 0)
    if m < 1:
        raise DataError("the reference sample has too few rows for nearest-neighbour distances", where="reference",
                        fix="use a reference with an embedding sample of several rows")
    k = max(1, min(int(k), m))
    r_sq = (r * r).sum(axis=1)
    out = np.empty(len(q))
    for start in range(0, len(q), chunk):
        block = q[start:start + chunk]
        d2 = (block * block).sum(axis=1)[:, None] + r_sq[None, :] - 2.0 * block @ r.T
        np.maximum(d2, 0.0, out=d2)
        if exclude_self:
            rows = np.arange(len(block))
            d2[rows, start + rows] = np.inf
        out[start:start + len(block)] = np.sqrt(np.partition(d2, k - 1, axis=1)[:, k - 1].astype(np.float64))
    return out


def novelty_scores(distances: np.ndarray, reference_distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(d, p)``: the conformal p-value ``p = (1 + #{reference_distances >= distance}) / (m + 1)`` of each
    distance among the reference's leave-one-out distances, and ``d = log(1/p) / log(m + 1)`` in [0, 1]."""
    ref = np.sort(np.asarray(reference_distances, dtype=np.float64))
    m = len(ref)
    at_least = m - np.searchsorted(ref, np.asarray(distances, dtype=np.float64), side="left")
    p = (1.0 + at_least) / (m + 1.0)
    return np.clip(np.log(1.0 / p) / math.log(m + 1.0), 0.0, 1.0), p


def disagreement_scores(answer_probs: np.ndarray, challenger_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(g, flipped)`` for paired rows: 1 where the top-1 classes differ, else the total-variation distance
    ``0.5 * sum |p - q|`` of the two probability vectors (rows of (n, C) arrays)."""
    a = np.asarray(answer_probs, dtype=np.float64)
    b = np.asarray(challenger_probs, dtype=np.float64)
    flipped = a.argmax(axis=1) != b.argmax(axis=1)
    tv = 0.5 * np.abs(a - b).sum(axis=1)
    return np.where(flipped, 1.0, tv), flipped


# ------------------------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class SelectionWeights:
    """Weights of the three components of the combined score (see the module docstring)."""

    uncertainty: float = 1.0
    novelty: float = 1.0
    disagreement: float = 1.0

    def __post_init__(self) -> None:
        for name in ("uncertainty", "novelty", "disagreement"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise OptionError(f"the {name} weight must be a finite number >= 0, got {value!r}", where=name,
                                  fix="use e.g. 1.0 (0 turns the component off)")


def _stack(column: pd.Series, what: str) -> np.ndarray:
    """A column of equal-length arrays as an (n, D) float64 matrix; a DataError when lengths differ."""
    arrays = column.tolist()
    if not arrays:
        return np.empty((0, 0))
    try:
        return np.stack(arrays).astype(np.float64, copy=False).reshape(len(arrays), -1)
    except ValueError:
        sizes = sorted({np.size(a) for a in arrays})
        if len(sizes) == 1:
            raise
        raise DataError(f"the logged {what} have different lengths {sizes[:5]}", where=what,
                        fix="select one model's rows (e.g. --version) so that every row has the same classes") from None


def _tie_break(frame: pd.DataFrame, seed: int) -> np.ndarray:
    """A seeded pseudo-random uint64 per (request_id, row): ties rank the same whatever order rows came in."""
    key = f"assay{int(seed):011d}"[-16:]
    return pd.util.hash_pandas_object(frame[["request_id", "row"]].astype({"request_id": str, "row": "int64"}),
                                      index=False, hash_key=key).to_numpy()


def _monitored_rows(frame: pd.DataFrame, reference: Reference | None) -> tuple[np.ndarray | None, np.ndarray, str]:
    """The vectors novelty is measured on (n, D) or None, which rows have one, and their space."""
    space = "embeddings"
    if reference is not None and reference.features is not None and reference.features.space == "inputs":
        space = "inputs"
    if space == "inputs":
        have = frame["inputs_dtype"].notna().to_numpy() if "inputs_dtype" in frame else np.zeros(len(frame), bool)
        if not have.any():
            return None, have, space
        return logged_inputs(frame[have]).reshape(int(have.sum()), -1).astype(np.float64), have, space
    have = frame["features"].map(lambda v: v is not None and np.size(v) > 0).to_numpy(dtype=bool)
    if not have.any():
        return None, have, space
    return _stack(frame["features"][have], "features"), have, space


def _normalise(x: np.ndarray, space: str, reference: Reference | None) -> np.ndarray:
    """L2-normalised embeddings (Sun et al. 2022); tabular inputs standardised by the reference's columns."""
    if space == "embeddings":
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if reference is not None and reference.features is not None:
        from assay.reference import MIN_SCALE

        return (x - reference.features.mean) / np.maximum(reference.features.std, MIN_SCALE)
    return x


def _novelty(frame: pd.DataFrame, reference: Reference | None, k: int, seed: int, notes: list[str],
             only: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(d, p)`` per row (0 and NaN where unknown or not in ``only``, a boolean mask of the rows worth the
    nearest-neighbour search), and notes on what novelty was measured against."""
    d = np.zeros(len(frame))
    p = np.full(len(frame), np.nan)
    vectors, have, space = _monitored_rows(frame, reference)
    if vectors is None:
        notes.append("novelty not scored: no row has logged features (assay serve --log-features)"
                     if space == "embeddings" else "novelty not scored: no row has logged inputs (--log-inputs)")
        return d, p
    sample = None
    if reference is not None and reference.features is not None and reference.features.sample is not None:
        ref_sample = np.asarray(reference.features.sample, dtype=np.float64)
        if ref_sample.shape[1] != vectors.shape[1]:
            notes.append(f"novelty against the pool, not the reference: the logged {space} have "
                         f"{vectors.shape[1]} dimensions, the reference sample {ref_sample.shape[1]}")
        else:
            models = set(frame.loc[have, "model_sha256"].dropna()) if "model_sha256" in frame else set()
            if reference.model_sha256 and models and models != {reference.model_sha256} and space == "embeddings":
                notes.append("the logged embeddings come from a model other than the reference's: novelty is "
                             "measured against the pool instead")
            else:
                sample = ref_sample
                notes.append(f"novelty: k-th nearest-neighbour distance to the reference's {len(sample)} sampled "
                             f"{'embedding' if space == 'embeddings' else 'input'} rows")
    elif reference is not None:
        notes.append("the reference holds no sample of rows: novelty is measured against the pool instead")
    pooled: np.ndarray | None = None
    if sample is None:
        rng = np.random.default_rng(seed)
        pooled = np.sort(rng.choice(len(vectors), size=min(POOL_SAMPLE, len(vectors)), replace=False))
        sample = vectors[pooled]
        notes.append(f"novelty: k-th nearest-neighbour distance to a seeded sample of {len(sample)} logged rows "
                     "(low-density rows of the traffic itself)")
    if len(sample) < 3:
        notes.append("novelty not scored: fewer than 3 rows to compare with")
        return d, p
    wanted = np.ones(len(vectors), bool) if only is None else np.asarray(only, bool)[have]
    base = _normalise(sample, space, reference)
    ref_distances = knn_distances(base, base, k, exclude_self=True)
    distances = np.full(len(vectors), np.nan)
    distances[wanted] = knn_distances(_normalise(vectors[wanted], space, reference), base, k)
    if pooled is not None:  # a sampled row is not its own neighbour: its leave-one-out distance
        distances[pooled] = ref_distances
    computed = np.flatnonzero(have)[wanted]
    d[computed], p[computed] = novelty_scores(distances[wanted], ref_distances)
    return d, p


def select_for_labeling(frame: pd.DataFrame, n: int, *, reference: Reference | None = None, seed: int = 0,
                        weights: SelectionWeights | None = None, k: int = 5) -> pd.DataFrame:
    """The ``n`` most useful logged rows to label next, best first (see the module docstring).

    ``frame`` is :func:`assay.serve.log.read_log`'s frame (request_id, row, role, input_sha256, logits, top1,
    label, and features / inputs when logged). Returns one row per selected sample with the columns of
    :data:`QUEUE_COLUMNS` plus ``p_novelty``; ``result.attrs["notes"]`` says what novelty was measured against
    and what was skipped, ``result.attrs["candidates"]`` how many unlabelled distinct inputs there were."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise OptionError(f"the number of samples to label must be a positive integer, got {n!r}", where="n",
                          fix="ask for e.g. 100")
    weights = weights or SelectionWeights()
    missing = [c for c in ("request_id", "row", "role", "input_sha256", "logits", "top1", "label") if c not in frame]
    if missing:
        raise DataError(f"the prediction log frame lacks the columns {missing}", where="frame",
                        fix="pass the frame assay.serve.log.read_log returns")
    notes: list[str] = []
    columns = list(QUEUE_COLUMNS) + ["p_novelty"]
    if frame.empty:
        empty = pd.DataFrame({c: [] for c in columns})
        empty.attrs.update(notes=["the log holds no predictions"], candidates=0)
        return empty
    frame = frame.reset_index(drop=True)
    order = frame["role"].map(_ROLE_ORDER).fillna(len(_ROLE_ORDER)).to_numpy()
    frame = frame.assign(_order=order).sort_values(["request_id", "row", "_order"], kind="stable")
    is_answer = ~frame.duplicated(["request_id", "row"], keep="first").to_numpy()
    probs = np.exp(log_softmax(_stack(frame["logits"], "logits")))
    top = probs.argmax(axis=1)
    # Challenger rows, paired with the answer row of their (request_id, row); the largest disagreement counts.
    answer_pos = np.maximum.accumulate(np.where(is_answer, np.arange(len(frame)), 0))
    g = np.zeros(len(frame))
    challenger = np.full(len(frame), -1)
    challengers = np.flatnonzero(~is_answer)
    if challengers.size:
        g_pair, _ = disagreement_scores(probs[answer_pos[challengers]], probs[challengers])
        order = np.lexsort((-g_pair, answer_pos[challengers]))
        owners = answer_pos[challengers][order]
        first = order[np.r_[True, owners[1:] != owners[:-1]]]
        g[answer_pos[challengers[first]]] = g_pair[first]
        challenger[answer_pos[challengers[first]]] = challengers[first]
    roles = frame["role"].to_numpy()
    has_challenger = challenger >= 0
    answers = frame.assign(
        confidence=probs.max(axis=1), top1=top, disagreement=g,
        challenger_role=np.where(has_challenger, roles[np.maximum(challenger, 0)], ""),
        challenger_top1=np.where(has_challenger, top[np.maximum(challenger, 0)], -1))[is_answer]
    answers["copies"] = answers.groupby("input_sha256")["request_id"].transform("size").to_numpy()
    labelled_inputs = set(frame.loc[frame["label"].notna(), "input_sha256"])
    keep = answers["label"].isna().to_numpy() & ~answers["input_sha256"].isin(labelled_inputs).to_numpy()
    skipped = int((~keep).sum())
    answers = answers[keep]
    if skipped:
        notes.append(f"{skipped} logged samples skipped: already labelled (or their input is)")
    if answers.empty:
        empty = pd.DataFrame({c: [] for c in columns})
        empty.attrs.update(notes=[*notes, "every logged sample is labelled already"], candidates=0)
        return empty
    u, margin, entropy = uncertainty_scores(_stack(answers["logits"], "logits"))
    answers = answers.assign(uncertainty=u, margin=margin, entropy=entropy,
                             _base=weights.uncertainty * u + weights.disagreement * answers["disagreement"])
    answers["_tie"] = _tie_break(answers, seed)
    # One row per input (novelty depends on the input alone): the one with the highest other components.
    answers = (answers.sort_values(["_base", "_tie"], ascending=[False, True], kind="stable")
               .drop_duplicates("input_sha256", keep="first"))
    candidates = len(answers)
    d = np.zeros(candidates)
    p = np.full(candidates, np.nan)
    if weights.novelty > 0:
        base = answers["_base"].to_numpy()
        # Exact pruning: a row whose score cannot reach the n-th best lower bound needs no neighbour search.
        floor = np.partition(base, candidates - n)[candidates - n] if candidates > n else -np.inf
        d, p = _novelty(answers, reference, k, seed, notes, only=base + weights.novelty >= floor)
    answers = answers.assign(novelty=d, p_novelty=p, score=answers["_base"].to_numpy() + weights.novelty * d)
    ranked = answers.sort_values(["score", "_tie"], ascending=[False, True], kind="stable")
    chosen = ranked.head(int(n)).copy()
    chosen["reason"] = [_reason(r) for r in chosen.itertuples(index=False)]
    chosen["label"] = ""
    result = chosen[columns].reset_index(drop=True)
    result.attrs.update(notes=notes, candidates=candidates)
    return result


def _reason(row: Any) -> str:
    """The components that count (0.5 or more, else the largest), strongest first, in words."""
    parts = {
        "uncertainty": (row.uncertainty, f"uncertain (margin {row.margin:.2f}, normalised entropy {row.entropy:.2f})"),
        "novelty": (row.novelty, f"unlike the reference (nearest-neighbour p = {row.p_novelty:.3g})"),
        "disagreement": (row.disagreement, f"{row.challenger_role} predicts {row.challenger_top1}, {row.role} "
                         f"{row.top1}" if row.challenger_top1 != row.top1 else
                         f"{row.challenger_role} differs by total variation {row.disagreement:.2f}"),
    }
    strong = sorted((v for v in parts.values() if v[0] >= 0.5), key=lambda v: -v[0])
    if not strong:
        strong = [max(parts.values(), key=lambda v: v[0])]
    return "; ".join(text for _, text in strong)


def select_for_estimate(frame: pd.DataFrame, n: int, *, seed: int = 0, rule: str = "sawade") -> pd.DataFrame:
    """An importance-sampled queue of ``n`` draws over every logged answer row (one per ``(request_id, row)``,
    primary first), whose labels give an unbiased estimate of the traffic's accuracy (see the module docstring and
    :mod:`assay.stats.active_testing`). One row per distinct drawn request row with the columns of
    :data:`ESTIMATE_QUEUE_COLUMNS` (``label`` filled where the log has one); ``attrs["candidates"]`` is the
    population size and ``attrs["notes"]`` what was done."""
    from assay.stats.active_testing import expected_error, select_items

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise OptionError(f"the number of samples to label must be a positive integer, got {n!r}", where="n",
                          fix="ask for e.g. 100")
    missing = [c for c in ("request_id", "row", "role", "logits", "label") if c not in frame]
    if missing:
        raise DataError(f"the prediction log frame lacks the columns {missing}", where="frame",
                        fix="pass the frame assay.serve.log.read_log returns")
    if frame.empty:
        empty = pd.DataFrame({c: [] for c in ESTIMATE_QUEUE_COLUMNS})
        empty.attrs.update(notes=["the log holds no predictions"], candidates=0)
        return empty
    order = frame["role"].map(_ROLE_ORDER).fillna(len(_ROLE_ORDER)).to_numpy()
    answers = (frame.reset_index(drop=True).assign(_order=order)
               .sort_values(["request_id", "row", "_order"], kind="stable")
               .drop_duplicates(["request_id", "row"], keep="first").reset_index(drop=True))
    probs = np.exp(log_softmax(_stack(answers["logits"], "logits")))
    population = len(answers)
    selection = select_items(expected_error(probs), int(n), rule=rule, seed=np.random.SeedSequence([int(seed), 19]))
    rows = selection.draws.items
    chosen = answers.iloc[rows]
    labels = chosen["label"]
    result = pd.DataFrame({
        "request_id": chosen["request_id"].astype(str).to_numpy(), "row": chosen["row"].astype(int).to_numpy(),
        "label": [("" if pd.isna(v) else str(int(v))) for v in labels],
        "draws": selection.draws.counts, "probability": selection.q[rows], "centre": selection.centre[rows],
        "top1": probs[rows].argmax(axis=1), "population": population,
        "centre_mean": float(selection.centre.mean()), "seed": int(seed), "selection": rule})
    known = int(labels.notna().sum())
    result.attrs.update(candidates=population, notes=[
        f"importance-sampled for an unbiased accuracy estimate ({rule} proposal, {int(n)} draws over the "
        f"{population:,} logged answers: {len(rows)} distinct rows"
        + (f", {known} already labelled in the log" if known else "") + ")"])
    return result


def queue_estimate(path: str | os.PathLike[str], *, num_classes: int,
                   class_names: Sequence[str] | None = None, confidence: float = 0.95) -> Any:
    """The traffic's accuracy (:class:`assay.stats.active_testing.AccuracyEstimate`) from a filled-in queue that
    :func:`select_for_estimate` wrote; None when the file is not one or not every row is labelled."""
    from assay.estimate.queue import class_index
    from assay.stats.active_testing import accuracy_estimate

    try:
        frame = pd.read_csv(path, keep_default_na=False, dtype={"label": str, "request_id": str})
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    if list(frame.columns) != list(ESTIMATE_QUEUE_COLUMNS) or frame.empty or (frame["label"].str.strip() == "").any():
        return None
    labels = np.array([class_index(str(t).strip(), num_classes, class_names, str(path)) for t in frame["label"]])
    centre = frame["centre"].to_numpy(dtype=np.float64)
    constant = bool(np.ptp(centre) == 0)
    correct = (labels == frame["top1"].to_numpy(dtype=np.int64)).astype(np.float64)
    return accuracy_estimate(correct, frame["probability"].to_numpy(dtype=np.float64),
                             int(frame["population"].iloc[0]), counts=frame["draws"].to_numpy(dtype=np.int64),
                             centre=float(centre[0]) if constant else centre,
                             centre_mean=None if constant else float(frame["centre_mean"].iloc[0]),
                             confidence=confidence)


def write_queue_csv(queue: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """The queue as UTF-8 CSV (:data:`QUEUE_COLUMNS`, or :data:`ESTIMATE_QUEUE_COLUMNS` for a queue of
    :func:`select_for_estimate`; ``label`` blank for the annotator: fill it in and give the file to ``assay feedback
    import``), written to a temporary sibling and renamed into place."""
    from assay.report.formatting import write_text_atomic

    estimate = "probability" in queue.columns
    buffer = io.StringIO()
    queue[list(ESTIMATE_QUEUE_COLUMNS if estimate else QUEUE_COLUMNS)].to_csv(
        buffer, index=False, float_format="%.10g" if estimate else "%.6g", lineterminator="\n")
    return write_text_atomic(path, buffer.getvalue())


def is_labeling_queue(path: Path) -> bool:
    """True for a CSV :func:`write_queue_csv` wrote (its header line is :data:`QUEUE_COLUMNS` or
    :data:`ESTIMATE_QUEUE_COLUMNS`)."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            first = handle.readline(4096)
    except (OSError, UnicodeDecodeError):
        return False
    return first.rstrip("\r\n") in (",".join(QUEUE_COLUMNS), ",".join(ESTIMATE_QUEUE_COLUMNS))


# ------------------------------------------------------------------------------------------- labels in


@dataclass(frozen=True)
class LabelRow:
    """One label read from a CSV: ``line`` is its line number (for messages)."""

    request_id: str
    row: int
    label: int
    line: int


def read_label_csv(path: str | os.PathLike[str], *, num_classes: int | None = None,
                   class_names: Sequence[str] | None = None,
                   max_bytes: int = 256 * 2**20) -> tuple[list[LabelRow], int]:
    """``(labels, blank)``: every labelled line of a UTF-8 CSV with columns ``request_id``, ``label`` and
    optionally ``row`` (other columns, such as a labeling queue's, are ignored), and the number of lines whose
    label is blank (skipped: a queue not labelled in full). Everything is checked before anything is returned:
    columns, encoding, labels (names or indices in [0, num_classes)), rows, and no (request_id, row) labelled
    twice with different labels. Any problem is a DataError naming the line."""
    from assay.estimate.queue import class_index, read_csv_text  # the estimate queue's reader (layer 7)

    path = Path(path)
    where = str(path)
    text = read_csv_text(path, what="the labels CSV", columns="request_id,label[,row]", max_bytes=max_bytes,
                         too_big_fix="split it into smaller files and import each")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise DataError("the file is empty", where=where, fix="give a CSV with a header line request_id,label")
        columns = [h.strip() for h in header]
        missing = [c for c in ("request_id", "label") if c not in columns]
        if missing:
            raise DataError(f"the CSV has no column {' or '.join(repr(c) for c in missing)} (columns: "
                            f"{[c[:40] for c in columns[:12]]})", where=where,
                            fix="name the columns request_id,label (and optionally row) in the first line")
        at = {c: columns.index(c) for c in ("request_id", "label", "row") if c in columns}
        labels: list[LabelRow] = []
        seen: dict[tuple[str, int], LabelRow] = {}
        blank = 0
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue
            if len(values) < len(columns):
                raise DataError(f"line {line} has {len(values)} fields, the header {len(columns)}",
                                where=f"{where}:{line}", fix="give every line the header's columns")
            rid = values[at["request_id"]].strip()
            label_text = values[at["label"]].strip()
            if not label_text:
                blank += 1
                continue
            if not rid or len(rid) > 256 or not rid.isprintable():
                raise DataError(f"line {line}: request_id {rid[:80]!r} is empty or not a printable id",
                                where=f"{where}:{line}", fix="copy the request_id a /v1/predict answer gave")
            if len(label_text) > _MAX_LABEL_CHARS:
                raise DataError(f"line {line}: the label is {len(label_text)} characters long", where=f"{where}:{line}",
                                fix="write a class name or index")
            row = 0
            if "row" in at and values[at["row"]].strip():
                try:
                    row = int(values[at["row"]].strip())
                except ValueError:
                    raise DataError(f"line {line}: row {values[at['row']][:40]!r} is not an integer",
                                    where=f"{where}:{line}", fix="give the index of the row in its request (0 for a "
                                    "one-row request)") from None
                if row < 0:
                    raise DataError(f"line {line}: row {row} is negative", where=f"{where}:{line}",
                                    fix="give the index of the row in its request (0 for a one-row request)")
            label = class_index(label_text, num_classes, class_names, f"{where}:{line}")
            item = LabelRow(rid, row, label, line)
            earlier = seen.get((rid, row))
            if earlier is not None and earlier.label != label:
                raise DataError(f"request {rid!r} row {row} is labelled {earlier.label} on line {earlier.line} and "
                                f"{label} on line {line}", where=f"{where}:{line}",
                                fix="keep one label per request row")
            if earlier is None:
                seen[(rid, row)] = item
                labels.append(item)
    except csv.Error as exc:
        raise DataError(f"not a readable CSV file ({exc}, line {reader.line_num})", where=where,
                        fix="give a comma-separated file with a header line request_id,label[,row]") from None
    return labels, blank


@dataclass
class ImportResult:
    """What :func:`import_labels` did: labels written, and those naming no logged (request_id, row)."""

    written: list[LabelRow] = field(default_factory=list)
    unknown: list[LabelRow] = field(default_factory=list)


def import_labels(labels: Sequence[LabelRow], logged: pd.DataFrame, log: Any, *, at: float | None = None,
                  strict: bool = False, timeout_s: float = 60.0) -> ImportResult:
    """Write the labels whose ``(request_id, row)`` is in ``logged`` (a :func:`read_log` frame) as feedback rows
    through ``log`` (an open :class:`assay.serve.log.PredictionLog`; strict durability waits for the commit), and
    return them with the unknown ones (not written; with ``strict`` a DataError before anything is written)."""
    known = set(zip(logged["request_id"].astype(str), logged["row"].astype(int), strict=True))
    result = ImportResult()
    for item in labels:
        (result.written if (item.request_id, item.row) in known else result.unknown).append(item)
    if strict and result.unknown:
        first = result.unknown[0]
        raise DataError(f"{len(result.unknown)} labels name request rows that are not in the prediction log (e.g. "
                        f"{first.request_id!r} row {first.row}, line {first.line}); nothing was imported",
                        where=f"line {first.line}", fix="check the request ids (and the --log store), or leave "
                        "out --strict to import the known ones and list the others")
    when = time.time() if at is None else float(at)
    if result.written:
        ticket = log.submit([{"kind": "feedback", "request_id": item.request_id, "label": item.label, "time": when,
                              "row": item.row} for item in result.written])
        if ticket is not None:
            ticket.result(timeout_s)
    return result


# ------------------------------------------------------------------------------------------- data set out


def logged_inputs(frame: pd.DataFrame) -> np.ndarray:
    """The logged array inputs of every row of ``frame`` as one (n, ...) array, rebuilt from their bytes, dtype
    (``inputs_dtype``) and shape (``inputs_shape``). A DataError when a row has none, raw bytes only, or a
    dtype/shape unlike the others."""
    if "inputs" not in frame or frame["inputs"].isna().all():
        raise DataError("the log holds no inputs", where="prediction log",
                        fix="serve with `assay serve --log-inputs` so that each request's inputs are logged")
    if "inputs_dtype" not in frame or frame["inputs_dtype"].isna().any():
        raise DataError("some logged inputs are raw bytes without a dtype and shape, or absent", where="prediction log",
                        fix="serve with `assay serve --log-inputs` (array inputs are logged with dtype and shape)")
    layouts = {(str(dt), tuple(int(s) for s in shape)) for dt, shape in zip(frame["inputs_dtype"],
                                                                             frame["inputs_shape"], strict=True)}
    if len(layouts) != 1:
        shown = sorted(layouts)[:3]
        raise DataError(f"the logged inputs have {len(layouts)} different dtypes/shapes (e.g. {shown})",
                        where="prediction log", fix="select one model's rows with --version")
    ((dtype_text, shape),) = layouts
    try:
        dtype = np.dtype(dtype_text)
    except TypeError:
        raise DataError(f"the logged input dtype {dtype_text!r} is not a numpy dtype", where="prediction log",
                        fix="log inputs with `assay serve --log-inputs`") from None
    if dtype.hasobject:
        raise DataError("logged inputs of dtype object are refused", where="prediction log",
                        fix="log numeric inputs")
    expected = int(np.prod(shape)) * dtype.itemsize
    blobs = list(frame["inputs"])
    bad = [i for i, b in enumerate(blobs) if not isinstance(b, (bytes, bytearray)) or len(b) != expected]
    if bad:
        raise DataError(f"{len(bad)} logged inputs do not hold {expected} bytes ({dtype}, shape {shape})",
                        where="prediction log", fix="the log is damaged; select other rows with --since/--until")
    return np.frombuffer(b"".join(blobs), dtype=dtype).reshape(len(blobs), *shape).astype(dtype.newbyteorder("="))


@dataclass(frozen=True)
class LabelledArrays:
    """A data set taken from the log: ``x``, ``y`` (None when some rows are unlabelled), ``ids``
    (``request_id:row``), ``version`` and ``time`` per row, and ``notes`` on what was left out."""

    x: np.ndarray
    y: np.ndarray | None
    ids: np.ndarray
    version: np.ndarray
    time: np.ndarray
    notes: tuple[str, ...] = ()


def labelled_arrays(frame: pd.DataFrame, *, labelled_only: bool = True) -> LabelledArrays:
    """The logged inputs of one row per ``(request_id, row)`` (the answer: primary first, see :data:`_ROLE_ORDER`;
    a shadow's copy of the same input adds nothing) in time order, with labels. ``labelled_only``: only labelled
    rows (``y`` set); otherwise every row, with ``y`` only when all are labelled. Rows logged without inputs are
    left out (counted in ``notes``); a DataError when none is left."""
    if frame.empty:
        raise DataError("the prediction log holds no predictions", where="prediction log",
                        fix="send traffic to `assay serve --log-inputs` first")
    order = frame["role"].map(_ROLE_ORDER).fillna(len(_ROLE_ORDER)).to_numpy()
    rows = (frame.assign(_order=order).sort_values(["request_id", "row", "_order"], kind="stable")
            .drop_duplicates(["request_id", "row"], keep="first").sort_values("time", kind="stable"))
    notes: list[str] = []
    has_inputs = rows["inputs"].notna() if "inputs" in rows else pd.Series(False, index=rows.index)
    if not has_inputs.any():
        raise DataError(f"none of the {len(rows)} logged predictions has its inputs: the server ran without "
                        "--log-inputs", where="prediction log",
                        fix="serve with `assay serve --log-inputs` and label that traffic; a data set needs inputs")
    if labelled_only:
        labelled = rows["label"].notna()
        if not labelled.any():
            raise DataError(f"none of the {len(rows)} logged predictions has a label", where="prediction log",
                            fix="import labels first: `assay feedback import LABELS.csv --log STORE` (or POST "
                                "/v1/feedback)")
        rows = rows[labelled]
        has_inputs = has_inputs[labelled.to_numpy()]
    if not has_inputs.all():
        notes.append(f"{int((~has_inputs).sum())} rows left out: logged without inputs")
        rows = rows[has_inputs.to_numpy()]
        if rows.empty:
            raise DataError("none of the labelled predictions has its inputs logged", where="prediction log",
                            fix="label traffic served with `assay serve --log-inputs`")
    x = logged_inputs(rows)
    y = None
    if rows["label"].notna().all():
        y = rows["label"].astype("int64").to_numpy()
    else:
        notes.append(f"no labels written: {int(rows['label'].isna().sum())} of {len(rows)} rows are unlabelled "
                     "(--labelled-only keeps the labelled ones)")
    ids = (rows["request_id"].astype(str) + ":" + rows["row"].astype(int).astype(str)).to_numpy().astype(str)
    return LabelledArrays(x=x, y=y, ids=ids, version=rows["version"].astype(str).to_numpy().astype(str),
                          time=rows["time"].astype(float).to_numpy(), notes=tuple(notes))


def write_dataset_npz(data: LabelledArrays, path: str | os.PathLike[str], *,
                      class_names: Sequence[str] | None = None, source: Mapping[str, str] | None = None) -> Path:
    """``x``, ``y``, ``ids``, ``meta_version``, ``meta_time`` (and ``class_names``) as an uncompressed ``.npz``
    that :func:`assay.data.npz.load_npz` reads, written to a temporary sibling and renamed into place; it carries
    the :data:`DATASET_MARKER` member (ignored by the loader) so that a later run may replace it."""
    import json

    target = Path(path)
    arrays: dict[str, np.ndarray] = {"x": data.x, "ids": data.ids, "meta_version": data.version,
                                     "meta_time": data.time}
    if data.y is not None:
        arrays["y"] = data.y
    if class_names is not None:
        arrays["class_names"] = np.asarray([str(c) for c in class_names])
    marker = json.dumps({"format": _DATASET_FORMAT, **(source or {})}).encode("utf-8")
    arrays[DATASET_MARKER] = np.frombuffer(marker, dtype=np.uint8)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds loosely
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def is_feedback_dataset(path: Path) -> bool:
    """True for an ``.npz`` :func:`write_dataset_npz` wrote (it holds the :data:`DATASET_MARKER` member)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return f"{DATASET_MARKER}.npy" in archive.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
