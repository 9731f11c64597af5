"""The monitoring reference: what live traffic is compared with (``reference.npz``, schema 1.x).

A :class:`Reference` is built once per evaluation from the clean evaluation outputs (``from_run``, or the
pure ``from_arrays``) and holds, versioned and typed:

* per-sample outputs: top-label confidence ``max_k p_k``, predictive entropy ``-sum_k p_k ln p_k`` (nats),
  the predicted class and, with labels, whether it was right;
* class and prediction counts (frequencies for older readers), accuracy and the ATC thresholds (Garg et
  al. 2022; fitted by :mod:`assay.stats.atc`, the same search as the label-free check);
* fixed-bin histograms of confidence (on [0, 1]) and entropy (on [0, ln C]);
* the *monitored features*: the input columns of tabular data, or the penultimate-layer embedding
  dimensions of image and text models, each with equal-mass bin edges (:func:`quantile_edges`), the
  reference histogram in those bins, mean and standard deviation, and a seeded sample of embedding rows
  (for multivariate tests such as MMD or a domain classifier; raw input rows only when asked for);
* chunk statistics: the reference split at random into K chunks, each compared with the rest of the
  reference by the statistics a monitor computes per window, so that drift thresholds can be set as
  quantiles (or mean + k sigma) of their no-drift variation (:class:`ChunkStatistics`);
* provenance: schema version, creation time, Assay version, model sha256, data fingerprint, n, class
  names, seed and settings.

File format: one ``.npz`` archive of plain numeric arrays plus ``header``, the UTF-8 JSON header as a
uint8 array; nothing is pickled, and :meth:`Reference.load` reads it as untrusted input (every array's
``.npy`` header is checked against the shapes the JSON header implies before any data is read, and the
total against the memory limit). Readers refuse another major ``schema_version``. The keys older bundles
hold (``val_confidence``, ``prediction_frequency``, ``class_frequency``, ``atc_threshold_*``,
``feature_mean``, ``feature_std``) are still written, and such older files still load: what they lack is
recomputed when it can be (histogram, confidence chunk statistics) and otherwise absent, as ``notes`` say.

Why chunk *versus the rest* rather than versus the whole reference: a live window is independent of the
reference, and a chunk compared with a whole that contains it looks closer than it is. For the CDF
distances the two differ only by the factor n / (n - m) (``F_chunk - F_rest = n / (n - m) * (F_chunk -
F_all)``); the rest is the exact two-sample analogue.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from assay.errors import DataError, OptionError, OutputError
from assay.stats.atc import atc_threshold
from assay.stats.bootstrap import spawn_seed
from assay.stats.drift import MIN_SCALE, binned_ks, chi2_homogeneity, js_distance, ks_wasserstein
from assay.stats.probabilities import log_softmax

if TYPE_CHECKING:
    from assay.evidence.schema import Evidence

__all__ = [
    "REFERENCE_FILE",
    "SCHEMA_VERSION",
    "STATISTICS",
    "ChunkStatistics",
    "FeatureBins",
    "Histogram",
    "Reference",
    "ReferenceSettings",
    "bin_counts",
    "binned_ks",
    "chi2_homogeneity",
    "confidence_and_entropy",
    "js_distance",
    "ks_wasserstein",
    "quantile_edges",
]

SCHEMA_VERSION = "1.0"
REFERENCE_FILE = "reference.npz"
#: The JSON header is a few kB (class names dominate); anything far larger is not a reference.
MAX_HEADER_BYTES = 4 * 2**20
#: Most chunks derived from ``chunk_size`` alone (the exact 1-D distances cost O(n) per chunk).
MAX_DERIVED_CHUNKS = 100
DEFAULT_CHUNKS = 10
_REGENERATE = "re-run `assay evaluate` with this version of Assay to regenerate the bundle"
#: Chunk statistic -> what it is (every one compares a chunk with the rest of the reference).
STATISTICS: dict[str, str] = {
    "prediction_js": "Jensen-Shannon distance (base 2) of the predicted-class mix, chunk vs rest",
    "prediction_chi2": "Pearson chi-squared statistic of homogeneity, chunk vs rest predicted-class counts",
    "confidence_ks": "two-sample Kolmogorov-Smirnov statistic of top-label confidence, chunk vs rest",
    "confidence_wasserstein": "Wasserstein-1 distance of confidence, chunk vs rest, / max(std, 0.001)",
    "entropy_ks": "two-sample Kolmogorov-Smirnov statistic of predictive entropy, chunk vs rest",
    "entropy_wasserstein": "Wasserstein-1 distance of entropy, chunk vs rest, / max(std, 0.001)",
    "mean_confidence": "mean top-label confidence of the chunk",
    "accuracy": "accuracy of the chunk (labelled references)",
    "atc_mc": "ATC estimate of the chunk's accuracy with the reference's max-confidence threshold",
    "atc_ne": "ATC estimate of the chunk's accuracy with the reference's negative-entropy threshold",
    "feature_js": "per monitored feature: Jensen-Shannon distance (base 2) in the reference bins, chunk vs rest",
    "feature_ks": "per monitored feature: KS statistic on the reference bins' cumulative counts, chunk vs rest",
}
#: Statistics with one value per chunk and monitored feature (K, D); every other one is (K,).
_PER_FEATURE = ("feature_js", "feature_ks")


# ------------------------------------------------------------------------------------------ pure parts


def confidence_and_entropy(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-label confidence ``max_k p_k`` and predictive entropy ``-sum_k p_k ln p_k`` (nats) per row, in
    float64 from one log-softmax (the same expressions as the OOD scores ``msp`` and ``-neg_entropy``)."""
    log_p = log_softmax(logits)
    return np.exp(log_p.max(axis=1)), -(np.exp(log_p) * log_p).sum(axis=1)


def quantile_edges(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-mass bin edges of ``values`` that never split a value: at most ``n_bins`` bins.

    Let u_1 < ... < u_m be the distinct values. If m <= ``n_bins`` (a discrete feature) every distinct
    value gets a bin of its own. Otherwise the k-th cut (k = 1 .. n_bins - 1) falls after the distinct
    value holding the ``k/n_bins`` quantile (``numpy.quantile(..., method="inverted_cdf")``: the smallest
    value whose cumulative share reaches k/n_bins), and repeated cuts are merged. Each inner edge lies
    halfway between the value before the cut and the next distinct value; the outer edges are u_1 and u_m
    (``[u, u]`` for a constant feature). With :func:`bin_counts` (left-closed bins, the ``numpy.histogram``
    rule) the reference values then fall into near-equal bins: sizes differ by at most one when all
    values are distinct.
    """
    ordered = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if ordered.size == 0:
        raise DataError("quantile bins need at least one value", where="values", fix="pass a non-empty array")
    return _edges_from_sorted(ordered, _check_bins(n_bins))


def _check_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise OptionError(f"n_bins must be a positive integer, got {n_bins!r}", where="n_bins", fix="use e.g. 10")
    return int(n_bins)


def _edges_from_sorted(ordered: np.ndarray, n_bins: int) -> np.ndarray:
    """:func:`quantile_edges` of an already sorted float64 array (the matrix path sorts all columns at once)."""
    n = ordered.size
    last = np.flatnonzero(np.r_[ordered[1:] != ordered[:-1], True])  # last position of each distinct value
    if last.size <= n_bins:
        cut = last[:-1]
    else:
        k = np.arange(1, n_bins, dtype=np.int64)
        target = -((-k * n) // n_bins) - 1  # ceil(k n / B) - 1: the position holding the k/B quantile
        cut = np.unique(last[np.searchsorted(last, target, side="left")])
        cut = cut[cut < n - 1]
    lower, upper = ordered[cut], ordered[cut + 1]
    inner = lower / 2 + upper / 2  # halves first: no overflow for huge values of either sign
    inner = np.where(inner > lower, inner, upper)  # adjacent floats: the midpoint rounds onto the lower one
    return np.concatenate([ordered[:1], inner, ordered[-1:]])


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value in ``edges``: left-closed bins ``[e_k, e_k+1)``, the last one closed (the
    ``numpy.histogram`` rule), and values outside ``[e_0, e_B]`` counted in the first or last bin (live
    data may leave the reference range; a monitor still needs them counted)."""
    inner = np.asarray(edges, dtype=np.float64)[1:-1]
    return np.searchsorted(inner, np.asarray(values, dtype=np.float64), side="right")


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of ``values`` per bin of ``edges`` (:func:`bin_index`): ``numpy.histogram(values, edges)``
    for values inside the edges, with values outside them in the outer bins. int64."""
    return np.bincount(bin_index(values, edges), minlength=len(edges) - 1).astype(np.int64)


def _chunk_ks_wasserstein(values: np.ndarray, chunks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Exact KS statistic and Wasserstein-1 distance of each chunk (row indices) against the rest of
    ``values``, from one sort: F_chunk - F_rest = n / (n - m) (F_chunk - F_all), evaluated at the last
    position of every distinct value: O(n) work per chunk and no (n, K) array."""
    n = values.size
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    last = np.flatnonzero(np.r_[ordered[1:] != ordered[:-1], True])
    gaps = np.diff(ordered[last])
    f_all = (last + 1) / n
    ks, w1 = np.empty(len(chunks)), np.empty(len(chunks))
    member = np.zeros(n, dtype=np.int32)
    for k, rows in enumerate(chunks):
        m = len(rows)
        member[:] = 0
        member[rank[rows]] = 1  # the chunk's positions in sorted order
        f_chunk = np.cumsum(member)[last] / m
        diff = np.abs(f_chunk - f_all) * (n / (n - m))
        ks[k], w1[k] = diff.max(), (diff[:-1] * gaps).sum()
    return ks, w1


def _scale(values: np.ndarray) -> float:
    """Normaliser of Wasserstein distances: the reference's standard deviation, at least :data:`MIN_SCALE`
    (Evidently's "normed Wasserstein distance")."""
    return max(float(np.std(np.asarray(values, dtype=np.float64))), MIN_SCALE)


# ------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class ReferenceSettings:
    """How a reference is binned, chunked and sampled (stored in its header).

    ``feature_bins``: equal-mass bins per monitored feature (at most; discrete features get one per value).
    ``confidence_bins``, ``entropy_bins``: equal-width bins on [0, 1] and [0, ln C].
    ``n_chunks`` / ``chunk_size``: chunk statistics over K random chunks of m rows; neither given: 10
    chunks of n // 10; only ``chunk_size``: as many as fit, at most 100; both: at most ``n_chunks``
    (<= 1000: each chunk costs O(n)).
    ``sample_size``: rows of monitored features kept as a seeded sample (0: none). Embedding rows only,
    unless ``sample_inputs``: a bundle never carries raw input rows (tabular data) unless asked to.
    """

    feature_bins: int = 10
    confidence_bins: int = 20
    entropy_bins: int = 20
    n_chunks: int | None = None
    chunk_size: int | None = None
    sample_size: int = 1000
    sample_inputs: bool = False

    def __post_init__(self) -> None:
        limits = {"feature_bins": (2, 255), "confidence_bins": (1, 10_000), "entropy_bins": (1, 10_000),
                  "n_chunks": (2, 1000), "chunk_size": (1, 2**40), "sample_size": (0, 10_000_000)}
        if not isinstance(self.sample_inputs, bool):
            raise OptionError(f"sample_inputs must be True or False, got {self.sample_inputs!r}",
                              where="sample_inputs", fix="use sample_inputs=True to keep raw input rows")
        for name, (lo, hi) in limits.items():
            value = getattr(self, name)
            if value is None and name in ("n_chunks", "chunk_size"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
                example = {"n_chunks": "10", "chunk_size": "500 (rows per monitoring window)"}.get(
                    name, str(getattr(ReferenceSettings, name, "")))
                raise OptionError(f"{name} must be an integer in [{lo}, {hi:,}], got {value!r}", where=name,
                                  fix=f"use e.g. {example}")

    def to_dict(self) -> dict[str, int | bool | None]:
        """Plain JSON values (numpy integers become ints)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v if v is None or isinstance(v, bool) else int(v) for k, v in values.items()}

    def chunk_plan(self, n: int) -> tuple[int, int]:
        """(number of chunks, rows per chunk) for a reference of ``n`` rows; (0, 0) when fewer than two
        chunks of at least one row fit (a chunk needs a non-empty rest to be compared with)."""
        if self.chunk_size is None:
            count = self.n_chunks or DEFAULT_CHUNKS
            size = n // count
        else:
            size = int(self.chunk_size)
            count = min(n // size, self.n_chunks or MAX_DERIVED_CHUNKS)
        if count < 2 or size < 1 or count * size > n:
            return 0, 0
        return int(count), int(size)


# ------------------------------------------------------------------------------------------ parts


@dataclass(frozen=True, eq=False)
class Histogram:
    """Counts of reference values in fixed bins (``edges``: B + 1 non-decreasing values; :func:`bin_index`)."""

    edges: np.ndarray
    counts: np.ndarray

    def count(self, values: np.ndarray) -> np.ndarray:
        """Counts of other values (a monitoring window) in the same bins."""
        return bin_counts(values, self.edges)


@dataclass(frozen=True, eq=False)
class FeatureBins:
    """The monitored features: input columns (``space="inputs"``, tabular) or embedding dimensions
    (``"embeddings"``), D of them, binned by :func:`quantile_edges` from ``rows`` reference rows.

    ``edges`` (D, B + 1) and ``counts`` (D, B) are padded with NaN and 0 past each feature's own
    ``n_bins[d]`` bins; ``levels`` (D, B) holds each discrete feature's distinct values (one per bin;
    NaN for continuous features) so that a monitor can recognise unseen categories; ``sample`` is a
    seeded sample of rows (float32) for multivariate tests, or None.
    """

    space: Literal["inputs", "embeddings"]
    edges: np.ndarray
    counts: np.ndarray
    discrete: np.ndarray
    levels: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    rows: int
    sample: np.ndarray | None = None

    @property
    def n_features(self) -> int:
        return int(self.edges.shape[0])

    @property
    def n_bins(self) -> np.ndarray:
        """Bins of each feature (D,)."""
        return np.asarray(np.isfinite(self.edges).sum(axis=1) - 1)

    def feature_edges(self, d: int) -> np.ndarray:
        """Edges of feature ``d`` without padding."""
        return self.edges[d, : int(self.n_bins[d]) + 1]

    def assign(self, x: np.ndarray) -> np.ndarray:
        """Bin of every value of ``x`` (n, D) in its feature's reference bins (:func:`bin_index`), (n, D)."""
        x = _as_rows(x, "x", dims=self.n_features)
        out = np.empty(x.shape, dtype=np.int64)
        for d in range(self.n_features):
            out[:, d] = bin_index(x[:, d], self.feature_edges(d))
        return out

    def histogram(self, x: np.ndarray) -> np.ndarray:
        """Counts of the rows of ``x`` (n, D) in the reference bins, (D, B) like ``counts``: the state a
        monitor keeps per window (histograms of windows add up)."""
        return _per_feature_counts(self.assign(x), self.edges.shape[1] - 1)


def _per_feature_counts(bins: np.ndarray, width: int) -> np.ndarray:
    """(n, D) bin indices -> (D, width) counts."""
    n_features = bins.shape[1]
    offsets = np.arange(n_features, dtype=np.int64) * width
    flat = (bins.astype(np.int64) + offsets).ravel()
    return np.bincount(flat, minlength=n_features * width).reshape(n_features, width).astype(np.int64)


@dataclass(frozen=True, eq=False)
class ChunkStatistics:
    """Statistics of ``count`` random reference chunks of ``size`` rows, each against the rest of the
    reference: their empirical no-drift distribution, from which a monitor sets alarm thresholds for
    windows of about ``size`` rows. ``values[name]`` is (count,) or, for ``feature_*``, (count, D); the
    names are in :data:`STATISTICS`. Chunks are drawn by a permutation seeded with (seed, "reference_chunks")."""

    count: int
    size: int
    values: dict[str, np.ndarray] = field(default_factory=dict)

    def threshold(self, name: str, *, quantile: float | None = None, n_sigma: float | None = None) -> Any:
        """An alarm threshold from the no-drift variation of statistic ``name`` (a float, or (D,) for
        per-feature statistics), by one of two rules:

        * ``quantile=q``: the ceil(q (K + 1))-th smallest of the K chunk values (the order-statistic rule
          of split-conformal prediction): for a window statistic exchangeable with the chunks', the false
          alarm rate P(window > threshold) is at most 1 - q. (A plain empirical quantile of K values is
          exceeded about 1 - k / (K + 1) of the time, e.g. 17% for the 0.9 quantile of 10 chunks.) Levels
          above K / (K + 1) need more chunks and are refused;
        * ``n_sigma=k``: mean + k standard deviations (ddof=1) across chunks, no coverage guarantee.
        """
        if name not in self.values:
            raise OptionError(f"no chunk statistic {name!r} in this reference (it has {sorted(self.values)})",
                              where="name", fix="pick one of the statistics the reference holds")
        if (quantile is None) == (n_sigma is None):
            raise OptionError("give exactly one of quantile and n_sigma", where="quantile",
                              fix="e.g. threshold(name, quantile=0.99) or threshold(name, n_sigma=3)")
        values = self.values[name]
        if quantile is not None:
            if not 0.0 < quantile < 1.0:
                raise OptionError(f"quantile must lie in (0, 1), got {quantile}", where="quantile", fix="use e.g. 0.95")
            rank = math.ceil(quantile * (self.count + 1) - 1e-9)  # tolerance: 0.9 * 11 is 9.900000000000002
            if rank > self.count:
                needed = math.ceil(quantile / (1 - quantile) - 1e-9)
                raise OptionError(
                    f"a false-alarm rate of {1 - quantile:.3g} needs at least {needed} chunks; this reference has "
                    f"{self.count}", where="quantile",
                    fix="recompute the chunks with more of them (Reference.recompute_chunks with a smaller "
                        f"chunk_size or larger n_chunks), or use quantile <= {self.count / (self.count + 1):.3g}")
            result = np.sort(values, axis=0)[rank - 1]
        else:
            result = values.mean(axis=0) + float(n_sigma) * values.std(axis=0, ddof=1)  # type: ignore[arg-type]
        return float(result) if np.ndim(result) == 0 else result


    def p_value(self, name: str, observed: Any) -> Any:
        """Empirical (conformal) p-value of a window's statistic ``observed`` against the chunks' no-drift
        values: (1 + #{chunks >= observed}) / (K + 1), valid when the window's statistic is exchangeable with
        the chunks' (larger = more drift for every statistic but ``mean_confidence``, ``accuracy`` and the
        ATC estimates, which drift both ways). ``observed`` is a float, or (D,) for per-feature statistics,
        so p-values across features can go to Benjamini-Hochberg. The smallest possible is 1 / (K + 1)."""
        if name not in self.values:
            raise OptionError(f"no chunk statistic {name!r} in this reference (it has {sorted(self.values)})",
                              where="name", fix="pick one of the statistics the reference holds")
        values = self.values[name]
        observed = np.asarray(observed, dtype=np.float64)
        if observed.shape != values.shape[1:]:
            raise OptionError(f"observed has shape {observed.shape}; {name} needs {values.shape[1:]}",
                              where="observed", fix="pass one value (per feature, for feature_* statistics)")
        result = (1 + (values >= observed).sum(axis=0)) / (self.count + 1)
        return float(result) if np.ndim(result) == 0 else result


def _chunk_rows(n: int, count: int, size: int, seed: int) -> list[np.ndarray]:
    """Row indices of each chunk: consecutive slices of a permutation seeded by (seed, "reference_chunks")
    (random, because datasets are often stored sorted by class)."""
    order = np.random.default_rng(spawn_seed(seed, "reference_chunks")).permutation(n)
    return [order[k * size : (k + 1) * size] for k in range(count)]


def _chunk_statistics(chunks: Sequence[np.ndarray], *, confidence: np.ndarray, entropy: np.ndarray | None,
                      prediction: np.ndarray | None, num_classes: int, correct: np.ndarray | None,
                      thresholds: tuple[float, float] | None,
                      feature_bins: np.ndarray | None, width: int) -> dict[str, np.ndarray]:
    """Every chunk-vs-rest statistic the inputs allow (see :data:`STATISTICS`)."""
    confidence = confidence.astype(np.float64)
    out: dict[str, np.ndarray] = {}
    if prediction is not None:
        total = np.bincount(prediction, minlength=num_classes)
        per_chunk = np.stack([np.bincount(prediction[rows], minlength=num_classes) for rows in chunks])
        out["prediction_js"] = js_distance(per_chunk, total - per_chunk)
        out["prediction_chi2"] = chi2_homogeneity(per_chunk, total - per_chunk)
    ks, w1 = _chunk_ks_wasserstein(confidence, chunks)
    out["confidence_ks"], out["confidence_wasserstein"] = ks, w1 / _scale(confidence)
    if entropy is not None:
        entropy = entropy.astype(np.float64)
        ks, w1 = _chunk_ks_wasserstein(entropy, chunks)
        out["entropy_ks"], out["entropy_wasserstein"] = ks, w1 / _scale(entropy)
    out["mean_confidence"] = np.array([confidence[rows].mean() for rows in chunks])
    if correct is not None:
        out["accuracy"] = np.array([correct[rows].mean() for rows in chunks])
    if thresholds is not None and entropy is not None:
        out["atc_mc"] = np.array([np.mean(confidence[rows] > thresholds[0]) for rows in chunks])
        out["atc_ne"] = np.array([np.mean(-entropy[rows] > thresholds[1]) for rows in chunks])
    if feature_bins is not None:
        total = _per_feature_counts(feature_bins, width)
        per_chunk = np.stack([_per_feature_counts(feature_bins[rows], width) for rows in chunks])
        out["feature_js"] = js_distance(per_chunk, total - per_chunk)
        out["feature_ks"] = binned_ks(per_chunk, total - per_chunk)
    return {name: out[name] for name in STATISTICS if name in out}


# ------------------------------------------------------------------------------------------ validation


def _as_rows(values: Any, name: str, *, n: int | None = None, dims: int | None = None) -> np.ndarray:
    """A finite numeric (n, D) array, or a DataError naming the parameter."""
    array = np.asarray(values)
    numeric = array.dtype.kind in "biuf"
    if not numeric or array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        got = f"shape {array.shape}" if numeric else f"dtype {array.dtype}"
        raise DataError(f"{name} must be a non-empty 2-D numeric array (rows x columns), got {got}", where=name,
                        fix="pass one row of numbers per sample")
    if n is not None and array.shape[0] != n:
        raise DataError(f"{name} has {array.shape[0]} rows but the logits have {n}", where=name,
                        fix="pass one row per evaluated sample, in the same order")
    if dims is not None and array.shape[1] != dims:
        raise DataError(f"{name} has {array.shape[1]} columns; the reference has {dims}", where=name,
                        fix="pass the same features the reference was built from")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise DataError(f"{name} contains NaN or infinite values", where=name,
                        fix="check the model's outputs (or the inputs) for overflow or missing values")
    return array


def _as_vector(values: Any, name: str, size: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (size,) or not np.isfinite(array).all():
        raise DataError(f"{name} must be {size} finite numbers, got shape {array.shape}", where=name,
                        fix="pass one value per feature dimension")
    return array


def _labels(labels: Any, n: int, num_classes: int) -> np.ndarray:
    array = np.asarray(labels)
    if array.shape != (n,) or array.dtype.kind not in "iub":
        raise DataError(f"labels must be {n} integer class indices, got dtype {array.dtype} and shape {array.shape}",
                        where="labels", fix="pass one class index per row of the logits")
    array = array.astype(np.int64)
    if array.min() < 0 or array.max() >= num_classes:
        raise DataError(f"labels range over [{array.min()}, {array.max()}]; the logits have {num_classes} classes",
                        where="labels", fix=f"labels must be class indices 0..{num_classes - 1}")
    return array


def _assay_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("assay")
    except PackageNotFoundError:
        return "unknown"


# ------------------------------------------------------------------------------------------ reference


@dataclass(frozen=True, eq=False)
class Reference:
    """What monitoring compares live traffic with; see the module docstring. Build with
    :meth:`from_arrays` or :meth:`from_run`, write with :meth:`save` (or :meth:`to_arrays` for a bundle
    writer), read with :meth:`load`. Fields that need labels or features are None without them, and
    ``notes`` says what is missing and why."""

    n: int
    num_classes: int
    class_names: list[str]
    confidence: np.ndarray  # (n,) float32
    prediction_counts: np.ndarray  # (C,) int64
    confidence_histogram: Histogram
    settings: ReferenceSettings = field(default_factory=ReferenceSettings)
    entropy: np.ndarray | None = None  # (n,) float32, nats
    prediction: np.ndarray | None = None  # (n,) int32
    correct: np.ndarray | None = None  # (n,) bool
    class_counts: np.ndarray | None = None  # (C,) int64
    atc_threshold_maxconf: float | None = None
    atc_threshold_negentropy: float | None = None
    entropy_histogram: Histogram | None = None
    embedding_mean: np.ndarray | None = None  # written as feature_mean (older readers)
    embedding_std: np.ndarray | None = None
    features: FeatureBins | None = None
    chunks: ChunkStatistics | None = None
    seed: int = 0
    model_sha256: str | None = None
    data_fingerprint: str | None = None
    modality: str | None = None
    created_at: str = ""
    assay_version: str = ""
    schema_version: str = SCHEMA_VERSION
    notes: tuple[str, ...] = ()

    # -------------------------------------------------------------------------------- derived

    @property
    def labelled(self) -> bool:
        return self.class_counts is not None

    @property
    def accuracy(self) -> float | None:
        return None if self.correct is None else float(self.correct.mean())

    @property
    def mean_confidence(self) -> float:
        return float(self.confidence.astype(np.float64).mean())

    @property
    def prediction_frequency(self) -> np.ndarray:
        return self.prediction_counts / self.n

    @property
    def class_frequency(self) -> np.ndarray | None:
        return None if self.class_counts is None else self.class_counts / self.n

    # -------------------------------------------------------------------------------- building

    @classmethod
    def from_arrays(
        cls,
        logits: np.ndarray,
        labels: np.ndarray | None = None,
        features: np.ndarray | None = None,
        inputs: np.ndarray | None = None,
        *,
        class_names: Sequence[str],
        feature_mean: np.ndarray | None = None,
        feature_std: np.ndarray | None = None,
        feature_sample: np.ndarray | None = None,
        settings: ReferenceSettings | None = None,
        seed: int = 0,
        model_sha256: str | None = None,
        data_fingerprint: str | None = None,
        modality: str | None = None,
        created_at: str | None = None,
    ) -> Reference:
        """A reference from the clean evaluation outputs (pure: no I/O, no model).

        ``logits`` (n, C); ``labels`` (n,) class indices or None; ``features`` the (n, D) penultimate
        embeddings or None; ``inputs`` the (n, F) tabular inputs or None. The monitored features are the
        inputs when given (tabular data), else the embeddings, else ``feature_sample`` (a seeded sample of
        embedding rows, when the engine kept no more: histograms from the sample, no per-feature chunk
        statistics), else none. ``feature_mean``/``feature_std`` describe the embeddings when
        ``features`` is None (the engine's running moments).
        """
        settings = settings or ReferenceSettings()
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise OptionError(f"seed must be a non-negative integer, got {seed!r}", where="seed", fix="use e.g. 0")
        logits = _as_rows(logits, "logits")
        n, num_classes = logits.shape
        if num_classes < 2:
            raise DataError(f"logits have {num_classes} column; a classifier has at least 2 classes", where="logits",
                            fix="pass the model's raw logits, one column per class")
        names = [str(c) for c in class_names]
        if len(names) != num_classes:
            raise DataError(f"{len(names)} class names for {num_classes} classes", where="class_names",
                            fix="give one name per column of the logits")
        notes: list[str] = []
        conf64, entropy64 = confidence_and_entropy(logits)
        # The stored float32 values are what every statistic below is computed from, so a loaded
        # reference recomputes exactly what was stored.
        confidence, entropy = conf64.astype(np.float32), entropy64.astype(np.float32)
        prediction = logits.argmax(axis=1).astype(np.int32)
        y = correct = class_counts = thresholds = None
        if labels is not None:
            y = _labels(labels, n, num_classes)
            correct = prediction == y
            class_counts = np.bincount(y, minlength=num_classes).astype(np.int64)
            thresholds = (atc_threshold(conf64, correct), atc_threshold(-entropy64, correct))
        else:
            notes.append("no labels: class frequencies, accuracy, ATC thresholds and the chunks' accuracy "
                         "statistics are absent")

        embedding_mean = embedding_std = None
        if features is not None:
            features = _as_rows(features, "features", n=n)
            embedding_mean = features.mean(axis=0, dtype=np.float64)
            embedding_std = features.std(axis=0, dtype=np.float64)
        elif feature_mean is not None and feature_std is not None:
            embedding_mean = _as_vector(feature_mean, "feature_mean", np.size(feature_mean))
            embedding_std = _as_vector(feature_std, "feature_std", embedding_mean.size)

        monitored: np.ndarray | None = None
        space: Literal["inputs", "embeddings"] = "inputs"
        aligned = True
        if inputs is not None:
            monitored = _as_rows(inputs, "inputs", n=n)
        elif features is not None:
            monitored, space = features, "embeddings"
        elif feature_sample is not None:
            dims = None if embedding_mean is None else embedding_mean.size
            monitored, space, aligned = _as_rows(feature_sample, "feature_sample", dims=dims), "embeddings", False
            notes.append(f"embedding histograms come from a sample of {len(monitored)} rows (the engine kept no "
                         "more), and there are no per-feature chunk statistics")
        elif embedding_mean is not None:
            notes.append("features=None: only the mean and standard deviation of each embedding dimension, no "
                         "embedding histograms, sample or per-feature chunk statistics")
        else:
            notes.append("the model exposes no features: no monitored features")

        bins = None
        feature_bins = None
        if monitored is not None:
            feature_bins, bins = _feature_bins(monitored, space, settings, seed)

        count, size = settings.chunk_plan(n)
        chunks = None
        if count:
            rows = _chunk_rows(n, count, size, seed)
            chunks = ChunkStatistics(count, size, _chunk_statistics(
                rows, confidence=confidence, entropy=entropy, prediction=prediction, num_classes=num_classes,
                correct=correct, thresholds=thresholds, feature_bins=bins if aligned else None,
                width=settings.feature_bins))
        else:
            notes.append(f"no chunk statistics: {n} samples do not make two chunks with these settings")

        return cls(
            n=n, num_classes=num_classes, class_names=names, confidence=confidence,
            prediction_counts=np.bincount(prediction, minlength=num_classes).astype(np.int64),
            confidence_histogram=_histogram(confidence, np.linspace(0.0, 1.0, settings.confidence_bins + 1)),
            settings=settings, entropy=entropy, prediction=prediction, correct=correct, class_counts=class_counts,
            atc_threshold_maxconf=None if thresholds is None else thresholds[0],
            atc_threshold_negentropy=None if thresholds is None else thresholds[1],
            entropy_histogram=_histogram(entropy, np.linspace(0.0, math.log(num_classes), settings.entropy_bins + 1)),
            embedding_mean=embedding_mean, embedding_std=embedding_std, features=feature_bins, chunks=chunks,
            seed=int(seed), model_sha256=model_sha256, data_fingerprint=data_fingerprint, modality=modality,
            created_at=created_at or datetime.now(timezone.utc).isoformat(timespec="seconds"),
            assay_version=_assay_version(), notes=tuple(notes),
        )

    @classmethod
    def from_run(cls, run: Any, settings: ReferenceSettings | None = None) -> Reference:
        """The reference of an evaluation run (duck-typed: ``run.outputs.clean`` with ``logits``,
        ``features``, ``feature_mean``, ``feature_std`` and optionally ``feature_sample``; ``run.dataset``
        with ``y``, ``x``, ``modality``, ``class_names``, ``fingerprint``; ``run.evidence`` with
        ``model.sha256``, ``seed`` and ``created_at``)."""
        clean, dataset, evidence = run.outputs.clean, run.dataset, run.evidence
        num_classes = np.shape(clean.logits)[1]
        names = (dataset.class_names or getattr(getattr(evidence, "data", None), "class_names", None)
                 or [str(c) for c in range(num_classes)])
        return cls.from_arrays(
            clean.logits, dataset.y, clean.features,
            dataset.x if dataset.modality == "tabular" else None,
            class_names=names, feature_mean=clean.feature_mean, feature_std=clean.feature_std,
            feature_sample=getattr(clean, "feature_sample", None), settings=settings, seed=evidence.seed,
            model_sha256=evidence.model.sha256, data_fingerprint=dataset.fingerprint, modality=dataset.modality,
            created_at=getattr(evidence, "created_at", None),
        )

    def recompute_chunks(self, *, chunk_size: int | None = None, n_chunks: int | None = None,
                         seed: int | None = None) -> ChunkStatistics | None:
        """Chunk statistics for another window size (a monitor calibrating its own windows), from the
        per-sample outputs this reference stores; per-feature statistics need the full features, which a
        reference does not keep, so they are left out. None when two chunks do not fit."""
        plan = ReferenceSettings(n_chunks=n_chunks, chunk_size=chunk_size).chunk_plan(self.n)
        if not plan[0]:
            return None
        thresholds = None
        if self.atc_threshold_maxconf is not None and self.atc_threshold_negentropy is not None:
            thresholds = (self.atc_threshold_maxconf, self.atc_threshold_negentropy)
        rows = _chunk_rows(self.n, *plan, self.seed if seed is None else seed)
        return ChunkStatistics(*plan, _chunk_statistics(
            rows, confidence=self.confidence, entropy=self.entropy, prediction=self.prediction,
            num_classes=self.num_classes, correct=self.correct, thresholds=thresholds, feature_bins=None, width=0))

    # -------------------------------------------------------------------------------- writing

    def header(self) -> dict[str, Any]:
        """The JSON header: provenance, settings and the dimensions every array's shape follows from."""
        chunks = self.chunks
        feats = self.features
        return {
            "format": "assay.reference",
            "schema_version": self.schema_version,
            "created_at": self.created_at,
            "assay_version": self.assay_version,
            "model_sha256": self.model_sha256,
            "data_fingerprint": self.data_fingerprint,
            "modality": self.modality,
            "n": self.n,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "seed": self.seed,
            "settings": self.settings.to_dict(),
            "embedding_dims": None if self.embedding_mean is None else int(self.embedding_mean.size),
            "features": None if feats is None else {
                "space": feats.space, "dims": feats.n_features, "width": int(feats.counts.shape[1]),
                "rows": feats.rows, "sample_rows": None if feats.sample is None else int(feats.sample.shape[0])},
            "chunks": None if chunks is None else {
                "count": chunks.count, "size": chunks.size, "statistics": list(chunks.values)},
            "notes": list(self.notes),
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Every array of ``reference.npz`` (plain numeric arrays and ``header``, the JSON header as
        UTF-8 bytes in a uint8 array), e.g. for ``write_bundle(extra_arrays={"reference.npz": ...})``."""
        text = json.dumps(self.header(), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        arrays: dict[str, np.ndarray] = {
            "header": np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy(),
            "val_confidence": self.confidence.astype(np.float32),
            "prediction_counts": self.prediction_counts.astype(np.int64),
            "prediction_frequency": self.prediction_frequency,
            "confidence_edges": self.confidence_histogram.edges,
            "confidence_counts": self.confidence_histogram.counts,
        }
        optional: dict[str, np.ndarray | float | None] = {
            "val_entropy": self.entropy, "val_prediction": self.prediction, "val_correct": self.correct,
            "class_counts": self.class_counts, "class_frequency": self.class_frequency,
            "atc_threshold_maxconf": self.atc_threshold_maxconf,
            "atc_threshold_negentropy": self.atc_threshold_negentropy,
            "feature_mean": self.embedding_mean, "feature_std": self.embedding_std,
        }
        if self.entropy_histogram is not None:
            optional.update(entropy_edges=self.entropy_histogram.edges, entropy_counts=self.entropy_histogram.counts)
        if self.features is not None:
            f = self.features
            optional.update(drift_edges=f.edges, drift_counts=f.counts, drift_discrete=f.discrete,
                            drift_levels=f.levels, drift_mean=f.mean, drift_std=f.std, drift_sample=f.sample)
        if self.chunks is not None:
            optional.update({f"chunk_{name}": values for name, values in self.chunks.values.items()})
        arrays.update({k: np.asarray(v) for k, v in optional.items() if v is not None})
        return arrays

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``reference.npz`` at ``path`` (a file; written to a temporary sibling and renamed, so a
        failure never leaves half a file). Returns the path."""
        target = Path(path)
        if target.is_dir():
            raise OutputError(f"{target} is a folder", where=str(target),
                              fix=f"give a file path, e.g. {target / REFERENCE_FILE}")
        if not target.parent.is_dir():
            raise OutputError(f"the folder {target.parent} does not exist", where=str(target),
                              fix="create the folder first or choose another path")
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as file:
                np.savez_compressed(file, **self.to_arrays())  # type: ignore[arg-type]  # numpy's stub: allow_pickle
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    # -------------------------------------------------------------------------------- reading

    @classmethod
    def load(cls, path: str | os.PathLike[str], evidence: Evidence | None = None) -> Reference:
        """Read ``reference.npz`` (the file, or a bundle folder holding it) as untrusted input.

        Never unpickles; the JSON header is at most :data:`MAX_HEADER_BYTES`, of this major schema version,
        and every array must have the dtype and the shape the header implies, checked before its data is
        read (the total against the memory limit). Files written before schema 1.0 (no header) load with
        what they hold; provenance missing from them comes from ``evidence`` when given (which is also
        checked to describe the same n, classes and model). Every failure is a DataError.
        """
        from assay.data.npz import read_npz_member

        given = Path(path)
        file = given / REFERENCE_FILE if given.is_dir() else given
        where = str(file)
        try:
            st = file.stat()
        except OSError:
            raise DataError(f"no reference file at {file}", where=where,
                            fix="point to reference.npz or a bundle folder written by `assay evaluate`") from None
        if not stat.S_ISREG(st.st_mode):
            raise DataError(f"{file} is not a regular file", where=where, fix=_REGENERATE)
        key = ""
        try:
            with zipfile.ZipFile(file) as zf:
                members = {info.filename[:-4]: info for info in zf.infolist() if info.filename.endswith(".npy")}

                def read(name: str, shape: tuple[int, ...], kinds: str, implied_by: str = "the header") -> np.ndarray:
                    nonlocal key
                    key = name
                    return read_npz_member(zf, members[name], shape, kinds, f"{file} [{name!r}]",
                                           implied_by=implied_by, fix=_REGENERATE)

                if "header" not in members:
                    reference = _load_legacy(zf, members, read, where, evidence)
                else:
                    header = _read_header(zf, members["header"], read, where)
                    reference = _load_current(header, members, read, where)
        except DataError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError, KeyError,
                NotImplementedError, RuntimeError, TypeError) as exc:
            member = f" (array {key!r})" if key else ""
            raise DataError(f"{file.name} is not a readable reference archive{member}: "
                            f"{str(exc)[:200] or type(exc).__name__}", where=where, fix=_REGENERATE) from None
        if evidence is not None:
            _check_against(reference, evidence, where)
        return reference


# ------------------------------------------------------------------------------------------ building helpers


def _histogram(values: np.ndarray, edges: np.ndarray) -> Histogram:
    return Histogram(edges=edges, counts=bin_counts(values, edges))


def _feature_bins(matrix: np.ndarray, space: Literal["inputs", "embeddings"], settings: ReferenceSettings,
                  seed: int) -> tuple[FeatureBins, np.ndarray]:
    """Bins, counts, moments and sample of the monitored features, and every row's bin per feature
    (uint8, (rows, D)) for the chunk statistics."""
    rows, dims = matrix.shape
    width = settings.feature_bins
    ordered = np.sort(matrix, axis=0)  # in the features' own dtype (float32: half the memory and time)
    edges = np.full((dims, width + 1), np.nan)
    counts = np.zeros((dims, width), dtype=np.int64)
    levels = np.full((dims, width), np.nan)
    discrete = np.zeros(dims, dtype=bool)
    bins = np.empty((rows, dims), dtype=np.uint8)
    for d in range(dims):
        column = ordered[:, d].astype(np.float64)
        e = _edges_from_sorted(column, width)
        inner = e[1:-1]
        edges[d, : e.size] = e
        positions = np.searchsorted(column, inner, side="left")
        counts[d, : e.size - 1] = np.diff(np.concatenate([[0], positions, [rows]]))
        distinct = column[np.r_[True, column[1:] != column[:-1]]]
        if distinct.size <= width:
            discrete[d] = True
            levels[d, : distinct.size] = distinct
        bins[:, d] = np.searchsorted(inner, matrix[:, d].astype(np.float64), side="right")
    sample = None
    if settings.sample_size and (space == "embeddings" or settings.sample_inputs):
        keep = min(settings.sample_size, rows)
        chosen = np.sort(np.random.default_rng(spawn_seed(seed, "reference_sample")).choice(rows, keep, replace=False))
        sample = matrix[chosen].astype(np.float32)
    return FeatureBins(space=space, edges=edges, counts=counts, discrete=discrete, levels=levels,
                       mean=matrix.mean(axis=0, dtype=np.float64), std=matrix.std(axis=0, dtype=np.float64),
                       rows=rows, sample=sample), bins


# ------------------------------------------------------------------------------------------ loading helpers


def _read_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, read: Any, where: str) -> dict[str, Any]:
    declared = _declared(zf, info, where)
    if len(declared.shape) != 1 or declared.nbytes > MAX_HEADER_BYTES:
        raise DataError(f"the reference header declares shape {declared.shape} of {declared.dtype}; a header is a "
                        f"1-D byte array of at most {MAX_HEADER_BYTES:,} bytes", where=where, fix=_REGENERATE)
    raw = read("header", declared.shape, "u", implied_by="a reference header")
    if raw.dtype != np.uint8:
        raise DataError(f"the reference header has dtype {raw.dtype}, expected uint8", where=where, fix=_REGENERATE)
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise DataError("the reference header is not UTF-8 text", where=where, fix=_REGENERATE) from None
    except RecursionError:
        raise DataError("the reference header is nested too deeply", where=where, fix=_REGENERATE) from None
    except ValueError as exc:
        raise DataError(f"the reference header is not valid JSON: {str(exc)[:200]}", where=where,
                        fix=_REGENERATE) from None
    if not isinstance(header, dict):
        raise DataError(f"the reference header must be a JSON object, got a {type(header).__name__}", where=where,
                        fix=_REGENERATE)
    version = header.get("schema_version")
    if not isinstance(version, str) or version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        shown = repr(version)[:40] if version is not None else "none"
        raise DataError(f"reference.npz has schema version {shown}; this Assay reads version {SCHEMA_VERSION}",
                        where=where, fix=_REGENERATE + " (or read it with the Assay version that wrote it)")
    return header


class _Header:
    """Typed access to the JSON header: each getter validates one field or raises a DataError."""

    def __init__(self, raw: Mapping[str, Any], where: str) -> None:
        self.raw, self.where = raw, where

    def fail(self, what: str) -> DataError:
        return DataError(f"the reference header is invalid: {what}", where=self.where, fix=_REGENERATE)

    def integer(self, value: Any, name: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(f"{name} must be an integer in [{lo}, {hi:,}], got {str(value)[:40]!r}")
        return value

    def text(self, name: str, *, optional: bool = True) -> str | None:
        value = self.raw.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, str) or len(value) > 10_000:
            raise self.fail(f"{name} must be a string")
        return value

    def section(self, name: str) -> Mapping[str, Any] | None:
        value = self.raw.get(name)
        if value is not None and not isinstance(value, dict):
            raise self.fail(f"{name} must be an object or null")
        return value


def _load_current(raw: Mapping[str, Any], members: Mapping[str, Any], read: Any, where: str) -> Reference:
    from assay.data.limits import require_fits

    h = _Header(raw, where)
    n = h.integer(raw.get("n"), "n", 1, 2**40)
    num_classes = h.integer(raw.get("num_classes"), "num_classes", 2, 10**7)
    names = raw.get("class_names")
    if not isinstance(names, list) or len(names) != num_classes or not all(isinstance(c, str) for c in names):
        raise h.fail(f"class_names must be a list of {num_classes} strings")
    seed = h.integer(raw.get("seed"), "seed", 0, 2**64 - 1)
    stored = raw.get("settings")
    if not isinstance(stored, dict) or set(stored) - {f.name for f in fields(ReferenceSettings)}:
        raise h.fail("settings must be an object of the reference settings")
    try:
        settings = ReferenceSettings(**stored)
    except OptionError as exc:
        raise h.fail(f"settings: {exc.what}") from None
    notes = raw.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(s, str) for s in notes):
        raise h.fail("notes must be a list of strings")
    embedding_dims = raw.get("embedding_dims")
    if embedding_dims is not None:
        embedding_dims = h.integer(embedding_dims, "embedding_dims", 1, 10**7)
    feats = h.section("features")
    chunks = h.section("chunks")

    # Every array this header implies: name -> (shape, kinds, required).
    expected: dict[str, tuple[tuple[int, ...], str, bool]] = {
        "val_confidence": ((n,), "f", True), "prediction_counts": ((num_classes,), "iu", True),
        "confidence_edges": ((settings.confidence_bins + 1,), "f", True),
        "confidence_counts": ((settings.confidence_bins,), "iu", True),
        "val_entropy": ((n,), "f", False), "val_prediction": ((n,), "iu", False), "val_correct": ((n,), "b", False),
        "class_counts": ((num_classes,), "iu", False),
        "atc_threshold_maxconf": ((), "f", False), "atc_threshold_negentropy": ((), "f", False),
        "entropy_edges": ((settings.entropy_bins + 1,), "f", False),
        "entropy_counts": ((settings.entropy_bins,), "iu", False),
    }
    if embedding_dims is not None:
        expected.update(feature_mean=((embedding_dims,), "f", True), feature_std=((embedding_dims,), "f", True))
    dims = 0
    if feats is not None:
        dims = h.integer(feats.get("dims"), "features.dims", 1, 10**7)
        width = h.integer(feats.get("width"), "features.width", 1, 255)
        h.integer(feats.get("rows"), "features.rows", 1, 2**40)
        if feats.get("space") not in ("inputs", "embeddings"):
            raise h.fail("features.space must be 'inputs' or 'embeddings'")
        expected.update(drift_edges=((dims, width + 1), "f", True), drift_counts=((dims, width), "iu", True),
                        drift_discrete=((dims,), "b", True), drift_levels=((dims, width), "f", True),
                        drift_mean=((dims,), "f", True), drift_std=((dims,), "f", True))
        if feats.get("sample_rows") is not None:
            rows = h.integer(feats.get("sample_rows"), "features.sample_rows", 1, 10_000_000)
            expected["drift_sample"] = ((rows, dims), "f", True)
    if chunks is not None:
        count = h.integer(chunks.get("count"), "chunks.count", 2, 10_000)
        h.integer(chunks.get("size"), "chunks.size", 1, 2**40)
        statistics = chunks.get("statistics")
        if not isinstance(statistics, list) or not set(statistics) <= set(STATISTICS):
            raise h.fail(f"chunks.statistics must be a list of names among {list(STATISTICS)}")
        for name in statistics:
            if name in _PER_FEATURE and not dims:
                raise h.fail(f"chunk statistic {name} needs monitored features, which the header does not declare")
            expected[f"chunk_{name}"] = ((count, dims) if name in _PER_FEATURE else (count,), "f", True)

    missing = sorted(k for k, (_, _, required) in expected.items() if required and k not in members)
    if missing:
        raise DataError(f"reference.npz lacks {', '.join(missing)}, which its header implies", where=where,
                        fix=_REGENERATE)
    present = {k: v for k, v in expected.items() if k in members}
    require_fits(sum(math.prod(shape) * 8 for shape, _, _ in present.values()),
                 what=f"reading reference.npz (n = {n:,}, {dims:,} monitored features)", where=where, fix=_REGENERATE)
    a = {name: read(name, shape, kinds) for name, (shape, kinds, _) in present.items()}
    _check_values(a, n, where)

    def histogram(prefix: str) -> Histogram | None:
        if f"{prefix}_edges" not in a or f"{prefix}_counts" not in a:
            return None
        return Histogram(edges=a[f"{prefix}_edges"].astype(np.float64), counts=a[f"{prefix}_counts"].astype(np.int64))

    feature_bins = None
    if feats is not None:
        feature_bins = FeatureBins(
            space=feats["space"], edges=a["drift_edges"].astype(np.float64),
            counts=a["drift_counts"].astype(np.int64), discrete=a["drift_discrete"],
            levels=a["drift_levels"].astype(np.float64), mean=a["drift_mean"].astype(np.float64),
            std=a["drift_std"].astype(np.float64), rows=int(feats["rows"]),
            sample=a["drift_sample"].astype(np.float32) if "drift_sample" in a else None)
    chunk_statistics = None
    if chunks is not None:
        chunk_statistics = ChunkStatistics(int(chunks["count"]), int(chunks["size"]),
                                           {s: a[f"chunk_{s}"].astype(np.float64) for s in chunks["statistics"]})

    def scalar(name: str) -> float | None:
        return float(a[name]) if name in a else None

    confidence_histogram = histogram("confidence")
    assert confidence_histogram is not None  # required above
    return Reference(
        n=n, num_classes=num_classes, class_names=list(names), confidence=a["val_confidence"].astype(np.float32),
        prediction_counts=a["prediction_counts"].astype(np.int64), confidence_histogram=confidence_histogram,
        settings=settings, entropy=a["val_entropy"].astype(np.float32) if "val_entropy" in a else None,
        prediction=a["val_prediction"].astype(np.int32) if "val_prediction" in a else None,
        correct=a.get("val_correct"),
        class_counts=a["class_counts"].astype(np.int64) if "class_counts" in a else None,
        atc_threshold_maxconf=scalar("atc_threshold_maxconf"),
        atc_threshold_negentropy=scalar("atc_threshold_negentropy"), entropy_histogram=histogram("entropy"),
        embedding_mean=a["feature_mean"].astype(np.float64) if "feature_mean" in a else None,
        embedding_std=a["feature_std"].astype(np.float64) if "feature_std" in a else None,
        features=feature_bins, chunks=chunk_statistics, seed=seed, model_sha256=h.text("model_sha256"),
        data_fingerprint=h.text("data_fingerprint"), modality=h.text("modality"),
        created_at=h.text("created_at") or "", assay_version=h.text("assay_version") or "",
        schema_version=str(raw["schema_version"]), notes=tuple(notes),
    )


def _check_values(a: Mapping[str, np.ndarray], n: int, where: str) -> None:
    """Values a monitor relies on: finite numbers, counts that add up to n, non-decreasing edges, labels
    and predictions in range."""

    def fail(name: str, what: str) -> DataError:
        return DataError(f"{name} {what}", where=f"{where} [{name!r}]", fix=_REGENERATE)

    for name, values in a.items():
        if name == "header" or name == "drift_edges" or name == "drift_levels":
            continue
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise fail(name, "contains NaN or infinite values")
        if values.dtype.kind in "iu" and values.size and values.min() < 0:
            raise fail(name, "holds negative counts or classes")
    for name in ("prediction_counts", "class_counts", "confidence_counts", "entropy_counts"):
        if name in a and int(a[name].sum()) != n:
            raise fail(name, f"adds up to {int(a[name].sum()):,}, not n = {n:,}")
    for name in ("confidence_edges", "entropy_edges"):
        if name in a and (np.diff(a[name]) < 0).any():
            raise fail(name, "is not non-decreasing")
    if "val_prediction" in a:
        prediction = a["val_prediction"].astype(np.int64)
        if prediction.max() >= a["prediction_counts"].size:
            raise fail("val_prediction", "holds classes beyond num_classes")
        if (np.bincount(prediction, minlength=a["prediction_counts"].size) != a["prediction_counts"]).any():
            raise fail("val_prediction", "disagrees with prediction_counts")
    if a["val_confidence"].min() < 0 or a["val_confidence"].max() > 1:
        raise fail("val_confidence", "holds values outside [0, 1]")
    if "val_entropy" in a and a["val_entropy"].min() < 0:
        raise fail("val_entropy", "holds negative entropies")
    if "drift_edges" in a:
        edges = a["drift_edges"]
        finite = np.isfinite(edges)
        used = finite.sum(axis=1)
        # Each row: 2 or more finite edges, then only NaN padding.
        if (used < 2).any() or (finite != (np.arange(edges.shape[1]) < used[:, None])).any():
            raise fail("drift_edges", "is not, per feature, two or more finite edges followed by NaN padding")
        if (edges[:, 1:] < edges[:, :-1]).any():  # NaN padding compares False
            raise fail("drift_edges", "is not non-decreasing")
        if "drift_counts" in a:
            counts = a["drift_counts"]
            padded = np.arange(counts.shape[1]) >= (used - 1)[:, None]
            if (counts[padded] != 0).any():
                raise fail("drift_counts", "has counts beyond a feature's bins")


def _load_legacy(zf: zipfile.ZipFile, members: Mapping[str, Any], read: Any, where: str,
                 evidence: Evidence | None) -> Reference:
    """A reference.npz written before schema 1.0: ``val_confidence`` and ``prediction_frequency``, plus
    ``class_frequency``, ``atc_threshold_*`` and ``feature_mean``/``feature_std`` when present. Counts are
    recovered from frequencies (frequency x n, which must be whole numbers); the confidence histogram and
    confidence chunk statistics are recomputed; the rest is absent, as ``notes`` says."""
    for name in ("val_confidence", "prediction_frequency"):
        if name not in members:
            raise DataError(f"reference.npz has neither a header nor {name!r}: it is not a reference written by Assay",
                            where=where, fix=_REGENERATE)
    # The old format stores no dimensions: they come from the two required arrays' own .npy headers.
    shapes = {name: _declared(zf, members[name], where).shape for name in ("val_confidence", "prediction_frequency")}
    if len(shapes["val_confidence"]) != 1 or len(shapes["prediction_frequency"]) != 1:
        raise DataError("val_confidence and prediction_frequency must be 1-D", where=where, fix=_REGENERATE)
    n, num_classes = shapes["val_confidence"][0], shapes["prediction_frequency"][0]
    if evidence is not None and (n, num_classes) != (evidence.data.n, evidence.model.num_classes):
        raise DataError(f"reference.npz holds {n} samples and {num_classes} classes; evidence.json records "
                        f"{evidence.data.n} and {evidence.model.num_classes}", where=where, fix=_REGENERATE)
    if n < 1 or num_classes < 2:
        raise DataError(f"reference.npz holds {n} samples and {num_classes} classes", where=where, fix=_REGENERATE)
    from assay.data.limits import require_fits

    require_fits(n * 8, what=f"reading reference.npz (n = {n:,})", where=where, fix=_REGENERATE)
    confidence = read("val_confidence", (n,), "f", "its own header").astype(np.float32)
    if not np.isfinite(confidence).all() or confidence.min() < 0 or confidence.max() > 1:
        raise DataError("val_confidence must hold confidences in [0, 1]", where=where, fix=_REGENERATE)

    def counts(name: str) -> np.ndarray:
        frequency = read(name, (num_classes,), "f", "prediction_frequency")
        scaled = frequency.astype(np.float64) * n
        whole = np.rint(scaled)
        if not np.isfinite(scaled).all() or (np.abs(scaled - whole) > 1e-6 * max(n, 1)).any() or whole.min() < 0 \
                or int(whole.sum()) != n:
            raise DataError(f"{name} is not a frequency vector of {n} samples", where=where, fix=_REGENERATE)
        return np.asarray(whole, dtype=np.int64)

    prediction_counts = counts("prediction_frequency")
    class_counts = counts("class_frequency") if "class_frequency" in members else None

    def scalar(name: str) -> float | None:
        if name not in members:
            return None
        value = float(read(name, (), "f", "the old reference format"))
        if not math.isfinite(value):
            raise DataError(f"{name} is not finite", where=where, fix=_REGENERATE)
        return value

    mean = std = None
    if "feature_mean" in members and "feature_std" in members:
        dims = math.prod(_declared(zf, members["feature_mean"], where).shape)
        require_fits(dims * 16, what="reading reference.npz's feature moments", where=where, fix=_REGENERATE)
        mean = read("feature_mean", (dims,), "f", "feature_mean").astype(np.float64)
        std = read("feature_std", (dims,), "f", "feature_mean").astype(np.float64)
    settings = ReferenceSettings()
    seed = int(evidence.seed) if evidence is not None else 0
    plan = settings.chunk_plan(n)
    chunks = None
    if plan[0]:
        chunks = ChunkStatistics(*plan, _chunk_statistics(
            _chunk_rows(n, *plan, seed), confidence=confidence, entropy=None, prediction=None,
            num_classes=num_classes, correct=None, thresholds=None, feature_bins=None, width=0))
    names = [str(c) for c in range(num_classes)]
    if evidence is not None and len(evidence.data.class_names) == num_classes:
        names = list(evidence.data.class_names)
    return Reference(
        n=n, num_classes=num_classes, class_names=names, confidence=confidence, prediction_counts=prediction_counts,
        confidence_histogram=_histogram(confidence, np.linspace(0.0, 1.0, settings.confidence_bins + 1)),
        settings=settings, class_counts=class_counts, atc_threshold_maxconf=scalar("atc_threshold_maxconf"),
        atc_threshold_negentropy=scalar("atc_threshold_negentropy"), embedding_mean=mean, embedding_std=std,
        chunks=chunks, seed=seed,
        model_sha256=None if evidence is None else evidence.model.sha256,
        data_fingerprint=None if evidence is None else evidence.data.fingerprint,
        modality=None if evidence is None else evidence.data.modality,
        created_at="" if evidence is None else evidence.created_at,
        notes=("read from a reference.npz written before schema 1.0: no per-sample entropy, predictions or "
               "correctness, no entropy histogram, no monitored-feature bins; the confidence histogram and "
               "confidence chunk statistics were recomputed",),
    )


def _declared(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> Any:
    """The ``.npy`` header of one member (shape, dtype), read without its data."""
    from assay.data.npz import read_npy_header

    with zf.open(info) as f:
        return read_npy_header(f, info.filename.removesuffix(".npy"), where, fix=_REGENERATE)


def _check_against(reference: Reference, evidence: Evidence, where: str) -> None:
    """A bundle's reference must describe the same evaluation as its evidence.json."""
    expected = (evidence.data.n, evidence.model.num_classes)
    if (reference.n, reference.num_classes) != expected:
        raise DataError(f"reference.npz describes {reference.n} samples and {reference.num_classes} classes; "
                        f"evidence.json records {expected[0]} and {expected[1]}", where=where, fix=_REGENERATE)
    if reference.model_sha256 and reference.model_sha256 != evidence.model.sha256:
        raise DataError("reference.npz was written for another model than evidence.json describes (sha256 "
                        f"{reference.model_sha256[:12]}... vs {evidence.model.sha256[:12]}...)", where=where,
                        fix=_REGENERATE)
