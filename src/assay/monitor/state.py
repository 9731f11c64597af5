"""Per-window incremental state: what a window must remember so that its tests can be computed when it
closes, without keeping its rows (:class:`WindowState`), and the rows of the log as arrays (:class:`LogBatch`).

Everything a window holds adds up over rows (counts, sums, histograms in the reference's bins) except the
embedding sample, a bottom-k sample by a hash of each row's position in the log (:func:`row_priority`): the
k rows of smallest priority are the same whatever batches the log arrived in, so processing a log in one
chunk or in seven gives identical windows. Labels arrive later than their rows and are kept per window in
:class:`LabelStats` (a count, the number correct and a histogram of label delays).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from assay.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DELAY_EDGES", "LabelStats", "LogBatch", "WindowState", "row_priority"]

#: Label delay histogram: log-spaced edges from 1 ms to about 116 days (seconds), outer bins open.
DELAY_EDGES = np.logspace(-3, 7, 41)


def row_priority(position: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per log position, from the splitmix64 hash of (seed, position): the
    sampling priority of a row, a function of the row alone (Steele, Lea & Flood 2014)."""
    with np.errstate(over="ignore"):
        z = np.asarray(position, dtype=np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15 + 1) % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return np.asarray((z >> np.uint64(11)).astype(np.float64) * 2.0**-53)


@dataclass
class LogBatch:
    """Rows of the prediction log as arrays, in log order: ``time`` (n,), ``logits`` (n, C) float32, ``first``
    (n,) bool (the request's first row: counts requests), ``features`` (n, D) float32 or None (embeddings,
    or tabular inputs when those are monitored; rows without them are NaN), ``label`` (n,) int64 (-1: none
    yet), ``label_time`` (n,) float64 (NaN: none), ``request_id`` and ``row`` (n,) (labels are counted once per
    request row; None: no de-duplication)."""

    time: np.ndarray
    logits: np.ndarray
    first: np.ndarray
    features: np.ndarray | None = None
    label: np.ndarray | None = None
    label_time: np.ndarray | None = None
    request_id: np.ndarray | None = None
    row: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.time.size)

    def take(self, rows: slice | np.ndarray) -> LogBatch:
        def cut(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[rows]

        return LogBatch(time=self.time[rows], logits=self.logits[rows], first=self.first[rows],
                        features=cut(self.features), label=cut(self.label), label_time=cut(self.label_time),
                        request_id=cut(self.request_id), row=cut(self.row))

    def keys(self, rows: np.ndarray) -> np.ndarray | None:
        """``request_id`` US ``row`` of the given rows (a label is counted once per key), or None without ids."""
        if self.request_id is None or self.row is None:
            return None
        return np.array([f"{rid}\x1f{r}" for rid, r in zip(self.request_id[rows], self.row[rows], strict=True)],
                        dtype=str)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, *, num_classes: int, feature_space: str | None,
                   feature_dims: int | None) -> LogBatch:
        """Arrays from a :func:`~assay.serve.log.read_log` frame. ``feature_space`` ``"embeddings"`` reads the
        ``features`` column, ``"inputs"`` decodes ``inputs`` (with ``inputs_dtype``/``inputs_shape``), None
        reads neither. Rows whose logits do not have ``num_classes`` values are a DataError."""
        n = len(frame)
        times = frame["time"].to_numpy(dtype=np.float64)
        if n and not np.isfinite(times).all():
            raise DataError("the prediction log has rows without a finite time", where="time",
                            fix="check the log's writer: time is Unix seconds")
        logits = np.zeros((0, num_classes), dtype=np.float32)
        if n:
            lengths = np.fromiter((np.size(v) for v in frame["logits"]), dtype=np.int64, count=n)
            if (lengths != num_classes).any():
                bad = int(np.flatnonzero(lengths != num_classes)[0])
                raise DataError(f"logged row {bad} has {lengths[bad]} logits; the reference has {num_classes} classes",
                                where="logits", fix="monitor the log of the model the reference was built for "
                                                    "(or pass --reference for this model)")
            logits = np.concatenate([np.asarray(v, dtype=np.float32) for v in frame["logits"]]).reshape(n, num_classes)
            if not np.isfinite(logits).all():
                raise DataError("the prediction log holds NaN or infinite logits", where="logits",
                                fix="check the model's outputs for overflow")
        rows = frame["row"].to_numpy(dtype=np.int64) if "row" in frame else np.zeros(n, dtype=np.int64)
        features = None
        if feature_space is not None and feature_dims is not None and n:
            features = _feature_matrix(frame, feature_space, feature_dims)
        label = label_time = None
        if "label" in frame:
            raw = frame["label"]
            present = raw.notna().to_numpy()
            label = np.full(n, -1, dtype=np.int64)
            label[present] = raw[present].to_numpy(dtype=np.int64)
            if ((label[present] < 0) | (label[present] >= num_classes)).any():
                raise DataError("the prediction log holds feedback labels outside the model's classes",
                                where="label", fix=f"labels are class indices 0..{num_classes - 1}")
            label_time = np.full(n, np.nan)
            if "label_time" in frame:
                label_time[present] = frame["label_time"][present].to_numpy(dtype=np.float64)
        ids = frame["request_id"].to_numpy(dtype=object) if "request_id" in frame else None
        return cls(time=times, logits=logits, first=rows == 0, features=features, label=label, label_time=label_time,
                   request_id=ids, row=rows)


def _feature_matrix(frame: pd.DataFrame, space: str, dims: int) -> np.ndarray | None:
    """(n, dims) float32 of the monitored features, NaN rows where a row has none; None when no row has any."""
    n = len(frame)
    out = np.full((n, dims), np.nan, dtype=np.float32)
    found = False
    if space == "embeddings":
        if "features" not in frame:
            return None
        column = frame["features"]
        for i, value in enumerate(column):
            if value is not None and np.size(value) == dims:
                out[i] = np.asarray(value, dtype=np.float32)
                found = True
    else:
        if "inputs" not in frame:
            return None
        dtypes = frame["inputs_dtype"] if "inputs_dtype" in frame else [None] * n
        for i, (value, dtype) in enumerate(zip(frame["inputs"], dtypes, strict=True)):
            if value is None or dtype is None:
                continue
            try:
                row = np.frombuffer(value, dtype=np.dtype(dtype))
            except (TypeError, ValueError):
                continue
            if row.size == dims and row.dtype.kind in "biuf":
                out[i] = row.astype(np.float32)
                found = True
    return out if found else None


@dataclass
class LabelStats:
    """Feedback of one window: labelled rows, how many the model got right, label delays (histogram on
    :data:`DELAY_EDGES`)."""

    n: int = 0
    correct: int = 0
    delays: np.ndarray = field(default_factory=lambda: np.zeros(DELAY_EDGES.size + 1, dtype=np.int64))

    def add(self, correct: np.ndarray, delay: np.ndarray) -> None:
        self.n += int(correct.size)
        self.correct += int(correct.sum())
        finite = delay[np.isfinite(delay)]
        self.delays += np.bincount(np.searchsorted(DELAY_EDGES, np.maximum(finite, 0.0), side="right"),
                                   minlength=self.delays.size)

    def median_delay(self) -> float | None:
        """Median label delay in seconds (the geometric middle of the histogram bin holding it), or None."""
        total = int(self.delays.sum())
        if total == 0:
            return None
        k = int(np.searchsorted(np.cumsum(self.delays), (total + 1) / 2))
        if k == 0:
            return float(DELAY_EDGES[0])
        if k >= DELAY_EDGES.size:
            return float(DELAY_EDGES[-1])
        return float(np.sqrt(DELAY_EDGES[k - 1] * DELAY_EDGES[k]))


@dataclass
class WindowState:
    """What one window accumulates (see the module docstring). ``position`` is the log position of its first
    row; ``key`` the time bucket of a time window (None for count windows)."""

    index: int
    position: int
    num_classes: int
    confidence_bins: int
    entropy_bins: int
    feature_shape: tuple[int, int] | None
    sample_dims: int | None
    key: int | None = None
    n: int = 0
    requests: int = 0
    start: float = float("inf")
    end: float = float("-inf")
    confidence_sum: int = 0  # fixed point, units of 2^-32 (exact sums)
    confidence_sq_sum: int = 0
    atc_above: int = 0
    near_margin: int = 0
    ood: int = 0
    n_features: int = 0
    class_counts: np.ndarray = field(init=False)
    confidence_counts: np.ndarray = field(init=False)
    entropy_counts: np.ndarray = field(init=False)
    feature_counts: np.ndarray | None = field(init=False)
    feature_unseen: np.ndarray | None = field(init=False)
    sample: np.ndarray = field(init=False)
    sample_priority: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.class_counts = np.zeros(self.num_classes, dtype=np.int64)
        self.confidence_counts = np.zeros(self.confidence_bins, dtype=np.int64)
        self.entropy_counts = np.zeros(self.entropy_bins, dtype=np.int64)
        self.feature_counts = None if self.feature_shape is None else np.zeros(self.feature_shape, dtype=np.int64)
        self.feature_unseen = None if self.feature_shape is None else np.zeros(self.feature_shape[0], dtype=np.int64)
        self.sample = np.zeros((0, self.sample_dims or 0), dtype=np.float32)
        self.sample_priority = np.zeros(0, dtype=np.float64)

    # ------------------------------------------------------------------------------ persistence

    SCALARS = ("index", "position", "key", "n", "requests", "start", "end", "confidence_sum", "confidence_sq_sum",
               "atc_above", "near_margin", "ood", "n_features")
    ARRAYS = ("class_counts", "confidence_counts", "entropy_counts", "feature_counts", "feature_unseen", "sample",
              "sample_priority")

    def header(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in self.SCALARS}
        values["start"] = None if not np.isfinite(self.start) else self.start
        values["end"] = None if not np.isfinite(self.end) else self.end
        return values

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}{name}": getattr(self, name) for name in self.ARRAYS if getattr(self, name) is not None}

    def restore(self, header: dict[str, Any], arrays: Any, prefix: str) -> None:
        """Fill from :meth:`header` and :meth:`arrays` output (shapes checked: the state is read as input)."""
        for name in self.SCALARS:
            value: Any = header.get(name)
            if name in ("start", "end"):
                value = (float("inf") if name == "start" else float("-inf")) if value is None else float(value)
            elif name == "key":
                value = None if value is None else int(value)
            else:
                value = int(value)
            setattr(self, name, value)
        for name in self.ARRAYS:
            current = getattr(self, name)
            if current is None:
                continue
            stored = np.asarray(arrays[f"{prefix}{name}"])
            fixed = name not in ("sample", "sample_priority")
            if stored.ndim != current.ndim or (fixed and stored.shape != current.shape):
                raise DataError(f"monitor state array {name} has shape {stored.shape}, expected {current.shape}",
                                where=f"{prefix}{name}", fix="start a new state folder (--state)")
            setattr(self, name, stored.astype(current.dtype))
