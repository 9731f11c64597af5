"""Label issues: out-of-sample probabilities from a linear probe, then cleanlab's Datalab on them.

* :func:`out_of_sample_probs` — k-fold cross-validated predicted probabilities of a logistic-regression probe
  on features (standardised; stratified folds, seeded). Every item's row comes from the model of the one fold
  that held it out, so its own label never entered that model: the "out-of-sample ``pred_probs``" confident
  learning needs (Northcutt, Jiang & Chuang 2021, "Confident learning: estimating uncertainty in dataset
  labels", JAIR 70; cleanlab's ``estimate_cv_predicted_probabilities`` does the same with any classifier).
* :func:`label_issues` — cleanlab ``Datalab`` (>= 2.8, Apache-2.0) issue types ``label``, ``outlier``,
  ``near_duplicate``, ``non_iid``, ``class_imbalance`` and ``underperforming_group`` with cleanlab's defaults
  and thresholds unchanged: its ``is_label_issue`` equals ``cleanlab.filter.find_label_issues(labels,
  pred_probs)`` and its ``label_quality`` equals ``cleanlab.rank.get_label_quality_scores`` (self-confidence),
  both tested. The feature-based types run on a sparse k-nearest-neighbour graph we build ourselves
  (:func:`build_knn_graph`, or :func:`knn_graph_from_neighbours` from an ANN index's answers) so that Datalab never
  builds or holds a dense (N, N) matrix. Datalab needs cleanlab's ``datalab`` extra (Hugging Face ``datasets``).

Memory and time (measured 2026-12-03 on a shared, loaded 2-core CPU machine): ``label_issues`` on 100,000 items
x 100 classes (synthetic Gaussian classes in 128-d, float32 ``pred_probs`` of 40 MB, 5 % flipped labels), with
the k = 10 cosine graph built here through the HNSW index (beam 256), peaked at 1.23 GB resident for the whole
process (``/usr/bin/time -v``; 0.37 GB of it the data and imports before the call) and took 146 s (117 s CPU);
it found the flips with recall 0.995 at precision 1.0 and 407 outliers (382 on the exact graph). By stage (beam
64): graph 73 s (to 0.56 GB), Datalab's label, class_imbalance, outlier and near_duplicate under 4 s each
(0.60 GB), non_iid 3.7 s (raises the peak to 1.14 GB), underperforming_group 2.2 s. The exact all-pairs graph
instead took 585 s at the same peak. No dense (N, N) matrix is ever built: memory grows as N (k + K) plus
cleanlab's per-item frames.
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from assay.errors import DataError, OptionError

if TYPE_CHECKING:
    import pandas as pd
    from scipy.sparse import csr_matrix

__all__ = ["ANN_ABOVE", "DATALAB_ISSUE_TYPES", "LabelFindings", "build_knn_graph", "knn_graph_from_neighbours",
           "label_issues", "out_of_sample_probs", "stratified_folds"]

#: The Datalab issue types this audit asks for, in report order.
DATALAB_ISSUE_TYPES = ("label", "outlier", "near_duplicate", "non_iid", "class_imbalance", "underperforming_group")
#: Issue types that need a neighbour graph (features or ``knn_graph``).
_GRAPH_TYPES = frozenset({"outlier", "near_duplicate", "non_iid", "underperforming_group"})
#: Neighbours per item in the graph we build (cleanlab's default ``k`` for these issue managers).
DEFAULT_K = 10
#: scikit-learn ``working_memory`` (MB) of the brute-force neighbour search: the distance chunk held at once.
_KNN_WORKING_MEMORY_MB = 128
#: From this many items on, cosine neighbour graphs come from the HNSW index (assay.audit.ann), not exact search.
ANN_ABOVE = 20_000
#: HNSW search beam for the graph. Datalab's outlier verdicts are sensitive to missed neighbours: on 100,000
#: synthetic 128-d items the exact graph gave 382 outliers, HNSW with a beam of 64 gave 2,934 (recall@10 0.97),
#: with 256 gave 410 (recall@10 0.996) at about twice the query time (measured).
ANN_EXPANSION = 256
#: Probe problems (items x features x classes) below this fit with one BLAS thread (see out_of_sample_probs).
_SMALL_PROBE_CELLS = 100_000_000


@dataclass
class LabelFindings:
    """What :func:`label_issues` found.

    ``items``: one row per item — ``index``, ``given_label``, ``suggested_label`` (argmax of ``pred_probs``),
    ``label_quality`` (cleanlab's self-confidence, low = suspicious), ``is_label_issue``, then Datalab's
    ``is_<type>_issue`` / ``<type>_score`` columns for every other issue type that ran.
    ``issue_summary``: Datalab's summary, one row per issue type that ran (``issue_type``, ``score``,
    ``num_issues``). ``notes``: sentences a reader must know (types skipped and why, classes absent, ...).
    """

    items: pd.DataFrame
    issue_summary: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def _labels(labels: Any, where: str) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise DataError(f"labels must be a non-empty 1-D array, got shape {y.shape}", where=where,
                        fix="pass one integer class index per item")
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu" or (y.size and y.min() < 0):
        raise DataError(f"labels must be class indices 0..K-1, got dtype {y.dtype}", where=where,
                        fix="map class names to integer indices first")
    return y.astype(np.int64)


def _features(features: Any, n: int, where: str) -> np.ndarray:
    x = np.asarray(features, dtype=np.float32)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or len(x) != n:
        raise DataError(f"features must be an (N, D) matrix with N = {n} rows, got shape {x.shape}", where=where,
                        fix="pass one feature row per item (flatten images or use a model's embeddings)")
    if not np.all(np.isfinite(x)):
        raise DataError("features contain NaN or infinity", where=where, fix="impute or drop those items first")
    return x


def stratified_folds(labels: Any, *, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Fold number (0..folds-1) of every item: ``sklearn.model_selection.StratifiedKFold(folds, shuffle=True,
    random_state=seed)``, so each fold keeps the class mix. Classes with fewer items than folds are allowed
    (scikit-learn's warning about them is silenced; those classes are missing from some training folds)."""
    from sklearn.model_selection import StratifiedKFold

    y = _labels(labels, "stratified_folds(labels)")
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or not 2 <= folds <= len(y):
        raise OptionError(f"folds must be an integer in 2..{len(y)} (the number of items), got {folds!r}",
                          where="folds", fix="pass e.g. folds=5")
    fold_of = np.empty(len(y), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=int(folds), shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for number, (_, held_out) in enumerate(splitter.split(np.zeros((len(y), 1)), y)):
            fold_of[held_out] = number
    return fold_of


def out_of_sample_probs(features: Any, labels: Any, *, folds: int | np.ndarray = 5, seed: int = 0,
                        n_classes: int | None = None, max_iter: int = 1000) -> np.ndarray:
    """Out-of-sample predicted probabilities ``(N, K)`` float32 of a linear probe, by k-fold cross-validation.

    For each fold, ``StandardScaler`` + multinomial ``LogisticRegression`` (L2, C = 1, lbfgs, ``max_iter``) is
    fitted on the other folds and predicts the held-out fold, so no item's own label is used for its row.
    ``folds``: a number of stratified folds (:func:`stratified_folds` with ``seed``) or an explicit fold number
    per item. ``n_classes``: K (default ``max(labels) + 1``). A class missing from a training fold gets
    probability 0 in that fold's rows (it cannot be predicted by a model that never saw it). Below
    ``_SMALL_PROBE_CELLS`` (items x features x classes) BLAS runs on one thread: on a loaded 2-core machine
    multi-threaded BLAS made a digits-sized fit 50x slower (3.1 s vs 0.06 s, measured).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    y = _labels(labels, "out_of_sample_probs(labels)")
    x = _features(features, len(y), "out_of_sample_probs(features)")
    k = int(y.max()) + 1 if n_classes is None else int(n_classes)
    if k <= int(y.max()):
        raise OptionError(f"n_classes = {k} but labels reach {int(y.max())}", where="n_classes",
                          fix="pass the number of classes (largest label + 1) or leave it out")
    if isinstance(folds, np.ndarray):
        fold_of = np.asarray(folds)
        if fold_of.shape != y.shape or fold_of.dtype.kind not in "iu":
            raise OptionError(f"explicit folds must be one integer per item ({len(y)}), got shape {fold_of.shape}",
                              where="folds", fix="pass a fold number per item, or a number of folds")
    else:
        fold_of = stratified_folds(y, folds=folds, seed=seed)
    probs = np.zeros((len(y), k), dtype=np.float32)
    threads = 1 if x.size * k < _SMALL_PROBE_CELLS else None
    for number in np.unique(fold_of):
        held_out = fold_of == number
        train = ~held_out
        if not train.any():
            raise OptionError("one fold holds every item: nothing is left to train on", where="folds",
                              fix="use at least two folds")
        classes = np.unique(y[train])
        if len(classes) == 1:  # a one-class training fold: the probe can only predict that class
            probs[np.ix_(held_out, classes)] = 1.0
            continue
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
        with warnings.catch_warnings(), threadpool_limits(limits=threads, user_api="blas"):
            warnings.simplefilter("ignore", category=ConvergenceWarning)  # a probe need not converge fully
            probe.fit(x[train], y[train])
            probs[np.ix_(held_out, classes)] = probe.predict_proba(x[held_out]).astype(np.float32)
    return probs


def build_knn_graph(features: Any, *, k: int = DEFAULT_K, metric: str = "cosine",
                    exact_below: int = ANN_ABOVE) -> csr_matrix:
    """Sparse ``(N, N)`` CSR k-nearest-neighbour distance graph as Datalab wants it: ``k`` stored distances per
    row sorted ascending, self excluded, exact zeros stored for duplicates.

    Below ``exact_below`` items (or when :mod:`assay.audit.ann` is unavailable, or for ``"euclidean"``) exact
    search: ``sklearn.neighbors.NearestNeighbors(...).kneighbors(mode="distance")`` brute force in chunks, so
    memory is O(N k) plus one ``_KNN_WORKING_MEMORY_MB`` chunk of distances (scikit-learn's default is 1 GB).
    From ``exact_below`` items on, cosine graphs come from the HNSW index of
    :class:`assay.audit.ann.NeighbourIndex` (approximate, search beam ``ANN_EXPANSION``; distance = 1 - cosine
    similarity), which avoids the O(N^2) all-pairs work; rows it leaves short are completed by exact search.
    ``metric``: ``"cosine"`` (cleanlab's default above 3 dimensions) or ``"euclidean"``."""
    x = _features(features, len(np.asarray(features)), "build_knn_graph(features)")
    if metric not in ("cosine", "euclidean"):
        raise OptionError(f"metric must be 'cosine' or 'euclidean', got {metric!r}", where="metric",
                          fix="pass metric='cosine'")
    k = min(int(k), len(x) - 1)
    if k < 1:
        raise DataError("a neighbour graph needs at least 2 items", where="build_knn_graph(features)",
                        fix="pass more items")
    if metric == "cosine" and len(x) >= exact_below:
        try:  # imported by name: the ANN module (H1's) may land after this one
            ann = importlib.import_module("assay.audit.ann")
        except ImportError:  # pragma: no cover - the ANN module ships with the audit package
            pass
        else:
            index = ann.NeighbourIndex(x, metric="cos", exact_below=exact_below, expansion_search=ANN_EXPANSION)
            indices, similarities = index.self_neighbours(k)
            distances = np.maximum(1.0 - similarities.astype(np.float64), 0.0)
            short = np.flatnonzero((indices < 0).any(axis=1))
            if len(short):
                indices[short], distances[short] = _exact_neighbours(x, k, metric, rows=short)
            return knn_graph_from_neighbours(indices, distances)
    indices, distances = _exact_neighbours(x, k, metric)
    return knn_graph_from_neighbours(indices, distances)


def _exact_neighbours(x: np.ndarray, k: int, metric: str, rows: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``k`` nearest other items (indices, distances) of every item, or of ``rows`` only."""
    import sklearn
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=k, metric=metric, algorithm="brute").fit(x)
    with sklearn.config_context(working_memory=_KNN_WORKING_MEMORY_MB):
        if rows is None:  # querying the fitted data itself: scikit-learn leaves each item out of its own list
            distances, indices = index.kneighbors(n_neighbors=k, return_distance=True)
            return indices, np.maximum(distances, 0.0)
        distances, indices = index.kneighbors(x[rows], n_neighbors=k + 1, return_distance=True)
    own = indices == rows[:, None]
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k)  # the item itself, else the farthest
    keep = np.ones_like(own)
    keep[np.arange(len(rows)), drop] = False
    return indices[keep].reshape(len(rows), k), np.maximum(distances[keep].reshape(len(rows), k), 0.0)


def knn_graph_from_neighbours(indices: Any, distances: Any) -> csr_matrix:
    """CSR graph from neighbour lists ``indices``/``distances`` of shape ``(N, k)`` (self already removed), e.g.
    an ANN index's answers turned into distances (cosine distance = 1 - similarity). Each row is sorted by
    distance; zero distances are stored explicitly (Datalab reads them as exact duplicates)."""
    from scipy.sparse import csr_matrix

    idx = np.asarray(indices, dtype=np.int64)
    dist = np.asarray(distances, dtype=np.float64)
    if idx.ndim != 2 or idx.shape != dist.shape:
        raise DataError(f"indices and distances must both be (N, k), got {idx.shape} and {dist.shape}",
                        where="knn_graph_from_neighbours", fix="pass the neighbour lists of every item")
    n, k = idx.shape
    if idx.size and (idx.min() < 0 or idx.max() >= n or np.any(idx == np.arange(n)[:, None])):
        raise DataError("neighbour indices must lie in 0..N-1 and exclude the item itself",
                        where="knn_graph_from_neighbours", fix="drop each item from its own neighbour list")
    order = np.argsort(dist, axis=1, kind="stable")
    dist = np.take_along_axis(dist, order, axis=1)
    idx = np.take_along_axis(idx, order, axis=1)
    graph = csr_matrix((dist.ravel(), idx.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))
    return graph  # built from (data, indices, indptr): explicit zeros are kept


def _issue_types(has_graph: bool) -> tuple[dict[str, dict[str, Any]], list[str]]:
    wanted: dict[str, dict[str, Any]] = {}
    notes = []
    for name in DATALAB_ISSUE_TYPES:
        if name in _GRAPH_TYPES and not has_graph:
            continue
        wanted[name] = {}
    if not has_graph:
        notes.append("outlier, near_duplicate, non_iid and underperforming_group were not checked: they need "
                     "features or a neighbour graph")
    return wanted, notes


def label_issues(labels: Any, pred_probs: Any, *, features: Any = None, knn_graph: csr_matrix | None = None,
                 k: int = DEFAULT_K) -> LabelFindings:
    """Datalab's issue types on out-of-sample ``pred_probs`` ``(N, K)`` (rows summing to 1; column j = class j).

    With ``features`` (and no ``knn_graph``) a cosine ``k``-NN graph is built here (:func:`build_knn_graph`); a given
    ``knn_graph`` (CSR, ``k`` sorted distances per row) is used as it is. Without either, only ``label`` and
    ``class_imbalance`` run (noted). Classes absent from ``labels`` are dropped from ``pred_probs`` and the
    rows renormalised, because Datalab indexes classes by the labels it sees (noted).
    """
    import pandas as pd
    from cleanlab import Datalab  # type: ignore[import-untyped]

    y = _labels(labels, "label_issues(labels)")
    probs = np.asarray(pred_probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) != len(y) or probs.shape[1] <= int(y.max()):
        raise DataError(f"pred_probs must be (N, K) with N = {len(y)} items and K > the largest label "
                        f"{int(y.max())}, got shape {probs.shape}", where="label_issues(pred_probs)",
                        fix="pass one row of class probabilities per item, columns in class-index order")
    if not np.all(np.isfinite(probs)) or probs.min() < 0 or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise DataError("pred_probs rows must be finite, non-negative and sum to 1", where="label_issues(pred_probs)",
                        fix="pass softmax probabilities, not logits")
    notes: list[str] = []
    present = np.unique(y)
    if len(present) < 2:
        raise DataError("labels hold a single class: label issues need at least two",
                        where="label_issues(labels)", fix="audit a dataset with at least two classes")
    if len(present) < probs.shape[1]:
        missing = sorted(set(range(probs.shape[1])) - set(present.tolist()))
        notes.append(f"{len(missing)} class(es) have no items ({missing[:10]}{' ...' if len(missing) > 10 else ''});"
                     " their pred_probs columns were dropped and the rows renormalised")
        probs = probs[:, present]
        probs = probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-12)
    dense = np.searchsorted(present, y)  # Datalab's own label map: sorted unique labels -> 0..K'-1

    graph = knn_graph
    if graph is None and features is not None:
        graph = build_knn_graph(features, k=k)
    if graph is not None and graph.shape != (len(y), len(y)):
        raise DataError(f"knn_graph must be ({len(y)}, {len(y)}), got {graph.shape}", where="label_issues(knn_graph)",
                        fix="build the graph over the same items as the labels")
    issue_types, skipped = _issue_types(graph is not None)
    notes += skipped
    lab = Datalab(data={"label": dense}, label_name="label", verbosity=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lab.find_issues(pred_probs=probs, knn_graph=graph, issue_types=issue_types)
    found = lab.get_issues()
    summary = lab.get_issue_summary().reset_index(drop=True)
    ran = set(summary["issue_type"])
    not_run = [t for t in issue_types if t not in ran]
    if not_run:
        notes.append(f"Datalab did not report {not_run} (it skips a type it cannot compute on these inputs)")

    items = pd.DataFrame({
        "index": np.arange(len(y)),
        "given_label": y,
        "suggested_label": present[np.argmax(probs, axis=1)],
        "label_quality": found["label_score"].to_numpy(),
        "is_label_issue": found["is_label_issue"].to_numpy(dtype=bool),
    })
    for name in DATALAB_ISSUE_TYPES[1:]:
        flag, score = f"is_{name}_issue", f"{name}_score"
        if flag in found.columns:
            items[flag] = found[flag].to_numpy(dtype=bool)
            items[score] = found[score].to_numpy()
    return LabelFindings(items=items, issue_summary=summary, notes=notes)
