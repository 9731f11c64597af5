"""Where the prediction log's rows go: Parquet segments (the embedded default) or SQL tables (SQLite, PostgreSQL).

A store writes one batch in one step (`write`: one Parquet file renamed into place, or one SQL transaction), so a
batch is either entirely in the log or absent, and reads everything back as a pandas DataFrame (`read`). Arrays
are stored compactly: logits/features as float32 (Parquet ``list<float32>`` columns, so DuckDB reads them as
``FLOAT[]``; SQL as little-endian float32 bytes), inputs as raw bytes.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import json
import math
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from assay.serve.log_migrations import upgrade_log_schema

if TYPE_CHECKING:
    from assay.serve.log import FeedbackRow, PredictionRow

__all__ = ["PREDICTION_COLUMNS", "ParquetStore", "SqlStore", "Store"]

PREDICTION_COLUMNS = ("request_id", "row", "time", "version", "model_sha256", "role", "input_sha256", "inputs",
                      "inputs_dtype", "inputs_shape", "logits", "top1", "confidence", "features")


class Store:
    """The interface: `write(predictions, feedback)` in one atomic step, `read()`, `close()`; ``pruned_rows`` and
    ``pruned_segments`` count what retention deleted (the Parquet and SQL stores have a ``prune``)."""

    pruned_rows = 0
    pruned_segments = 0

    def write(self, predictions: Sequence[PredictionRow], feedback: Sequence[FeedbackRow]) -> None:
        raise NotImplementedError

    def read(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(predictions, feedback) with arrays decoded to float32 numpy arrays."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""


@dataclass(frozen=True)
class _Segment:
    """A committed Parquet segment: path, rows, bytes, and the oldest and newest row ``time``."""

    name: str
    rows: int
    size: int
    oldest: float
    newest: float


def _f32(values: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(values, dtype=np.float32).reshape(-1))


def _from_f32(blob: Any) -> np.ndarray:
    return np.frombuffer(bytes(blob), dtype="<f4").astype(np.float32)


def _empty_predictions() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=object) for name in PREDICTION_COLUMNS})


def _empty_feedback() -> pd.DataFrame:
    return pd.DataFrame({"request_id": pd.Series(dtype=object), "row": pd.Series(dtype="int64"),
                         "label": pd.Series(dtype="int64"), "time": pd.Series(dtype="float64")})


class ParquetStore(Store):
    """One Parquet file per committed batch: ``predictions-<ns>-<pid>-<uuid>-<n>.parquet`` (and ``feedback-...``).

    A batch is written to a hidden temp file in the same folder and renamed into place, so a reader (DuckDB's
    ``read_parquet('<dir>/predictions-*.parquet')``) never sees half a file, and several processes can write to
    one folder. ``fsync`` (strict durability) also syncs the file and the folder, so a commit survives power loss.
    """

    def __init__(self, folder: str | Path, *, fsync: bool = False) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._prefix = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._seq = itertools.count()
        self._segments: dict[str, _Segment] = {}
        self.pruned_rows = 0
        self.pruned_segments = 0

    @staticmethod
    def _schemas() -> tuple[Any, Any]:
        import pyarrow as pa

        predictions = pa.schema([("request_id", pa.string()), ("row", pa.int64()), ("time", pa.float64()),
                                 ("version", pa.string()), ("model_sha256", pa.string()), ("role", pa.string()),
                                 ("input_sha256", pa.string()), ("inputs", pa.binary()),
                                 ("inputs_dtype", pa.string()), ("inputs_shape", pa.list_(pa.int64())),
                                 ("logits", pa.list_(pa.float32())), ("top1", pa.int64()),
                                 ("confidence", pa.float64()), ("features", pa.list_(pa.float32()))])
        feedback = pa.schema([("request_id", pa.string()), ("row", pa.int64()), ("label", pa.int64()),
                              ("time", pa.float64())])
        return predictions, feedback

    def _put(self, kind: str, table: Any) -> None:
        import pyarrow.parquet as pq

        name = f"{kind}-{time.time_ns():020d}-{self._prefix}-{next(self._seq):08d}.parquet"
        temp = self.folder / f".tmp-{name}"
        pq.write_table(table, temp, compression="zstd")
        if self.fsync:
            with open(temp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(temp, self.folder / name)
        if self.fsync:
            fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def write(self, predictions: Sequence[PredictionRow], feedback: Sequence[FeedbackRow]) -> None:
        import pyarrow as pa

        pred_schema, fb_schema = self._schemas()
        if predictions:
            columns = {
                "request_id": [r.request_id for r in predictions], "row": [r.row for r in predictions],
                "time": [r.time for r in predictions], "version": [r.version for r in predictions],
                "model_sha256": [r.model_sha256 for r in predictions], "role": [r.role for r in predictions],
                "input_sha256": [r.input_sha256 for r in predictions],
                "inputs": [r.inputs_bytes() for r in predictions],
                "inputs_dtype": [r.inputs_layout()[0] for r in predictions],
                "inputs_shape": [r.inputs_layout()[1] for r in predictions],
                "logits": _list_column([r.logits for r in predictions]),
                "top1": [r.top1 for r in predictions], "confidence": [r.confidence for r in predictions],
                "features": _list_column([r.features for r in predictions]),
            }
            self._put("predictions", pa.Table.from_pydict(columns, schema=pred_schema))
        if feedback:
            self._put("feedback", pa.Table.from_pydict(
                {"request_id": [f.request_id for f in feedback], "row": [f.row for f in feedback],
                 "label": [f.label for f in feedback],
                 "time": [f.time for f in feedback]}, schema=fb_schema))

    def files(self, kind: str) -> list[str]:
        """Committed segments in commit order, without sources a compaction already merged (a crash between
        a compaction's rename and its deletes leaves them behind; they are skipped here and removed by the
        next `compact`)."""
        names = sorted(glob.glob(str(self.folder / f"{kind}-*.parquet")))
        merged = self._merged_sources(names)
        return [n for n in names if os.path.basename(n) not in merged]

    @staticmethod
    def _merged_sources(names: Sequence[str]) -> set[str]:
        import pyarrow.parquet as pq

        merged: set[str] = set()
        for name in names:
            if "-c-" in os.path.basename(name):
                meta = pq.read_schema(name).metadata or {}
                merged.update(json.loads(meta.get(b"assay.sources", b"[]")))
        return merged

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One compaction or prune at a time per folder, across processes (an exclusive ``flock``)."""
        import fcntl

        with open(self.folder / ".compact.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _segment(self, name: str) -> _Segment:
        """Rows, size and time range of a committed segment, from its Parquet footer (cached: segments never
        change once renamed into place)."""
        import pyarrow.parquet as pq

        base = os.path.basename(name)
        cached = self._segments.get(base)
        if cached is None:
            meta = pq.ParquetFile(name).metadata
            column = meta.schema.names.index("time")
            lows, highs = [], []
            for group in range(meta.num_row_groups):
                stats = meta.row_group(group).column(column).statistics
                if meta.row_group(group).num_rows and (stats is None or not stats.has_min_max):
                    times = pq.read_table(name, columns=["time"]).column("time").to_numpy()
                    lows, highs = [float(times.min())], [float(times.max())]
                    break
                if meta.row_group(group).num_rows:
                    lows.append(float(stats.min))
                    highs.append(float(stats.max))
            cached = _Segment(name, meta.num_rows, os.path.getsize(name), min(lows, default=-math.inf),
                              max(highs, default=-math.inf))
            self._segments[base] = cached
        return cached

    def _drop(self, names: Sequence[str]) -> None:
        for name in names:
            os.unlink(name)
            self._segments.pop(os.path.basename(name), None)

    def _live(self, kind: str) -> tuple[list[str], int]:
        """The committed segments of ``kind`` in commit order, and how many sources a crashed compaction had
        already merged were deleted first (call under `_exclusive`)."""
        names = sorted(glob.glob(str(self.folder / f"{kind}-*.parquet")))
        merged = self._merged_sources(names)
        leftovers = [n for n in names if os.path.basename(n) in merged]
        self._drop(leftovers)
        return [n for n in names if os.path.basename(n) not in merged], len(leftovers)

    def compact(self, *, min_files: int = 2, small_bytes: int = 16 * 2**20, older_than: float | None = None) -> int:
        """Merge runs of consecutive committed segments smaller than ``small_bytes`` into files of about
        ``small_bytes`` (``<kind>-<first ns>-c-<uuid>-0.parquet``, listing its sources in its metadata), then
        delete the sources; one compaction at a time per folder (an exclusive lock). Rows keep their commit
        order. With ``older_than`` (Unix seconds; the retention cutoff) the merged files leave out the rows older
        than it (counted in ``pruned_rows``), and a small segment holding such rows is rewritten even alone, so a
        quiet log's expired rows do not live on inside its newest segment. Returns the number of files removed."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        removed = 0
        with self._exclusive():
            for kind, schema in zip(("predictions", "feedback"), self._schemas()):
                live, leftovers = self._live(kind)
                removed += leftovers
                for chunk in self._chunks(live, small_bytes):
                    expired = older_than is not None and any(self._segment(n).oldest < older_than for n in chunk)
                    if len(chunk) < min_files and not expired:
                        continue
                    table = pa.concat_tables([pq.read_table(n, schema=schema) for n in chunk])
                    if older_than is not None:
                        kept = table.filter(pc.greater_equal(table.column("time"), older_than))
                        self.pruned_rows += table.num_rows - kept.num_rows
                        table = kept
                    if table.num_rows:
                        sources = [os.path.basename(n) for n in chunk]
                        first_ns = sources[0].split("-")[1]
                        name = f"{kind}-{first_ns}-c-{uuid.uuid4().hex[:8]}-00000000.parquet"
                        table = table.replace_schema_metadata({"assay.sources": json.dumps(sources)})
                        temp = self.folder / f".tmp-{name}"
                        pq.write_table(table, temp, compression="zstd")
                        with open(temp, "rb") as handle:
                            os.fsync(handle.fileno())
                        os.replace(temp, self.folder / name)
                    self._drop(chunk)  # all rows expired: no merged file, the sources simply go
                    removed += len(chunk)
        return removed

    def _chunks(self, names: Sequence[str], small_bytes: int) -> list[list[str]]:
        """Runs of consecutive segments under ``small_bytes``, cut where a run reaches ``small_bytes`` (merging
        only neighbours keeps the commit order; the cut bounds a merged file's size and a compaction's work)."""
        chunks: list[list[str]] = [[]]
        size = 0
        for name in names:
            nbytes = self._segment(name).size
            if nbytes >= small_bytes or size >= small_bytes:
                chunks.append([])
                size = 0
            if nbytes < small_bytes:
                chunks[-1].append(name)
                size += nbytes
        return [c for c in chunks if c]

    def prune(self, *, older_than: float | None = None, max_bytes: int | None = None,
              max_segments: int = 1000) -> bool:
        """Delete whole committed segments: those whose newest row is older than ``older_than`` (Unix seconds),
        then, while the committed segments of both kinds hold more than ``max_bytes``, the one whose newest row is
        oldest (so the size cap acts as the age rule with a later cutoff). Predictions and feedback segments
        follow the same rule on their own rows' times (a label is logged after its prediction, so it outlives
        it). Never touches a segment being written (a writer's hidden temp file, renamed in only when complete);
        a writer's temp file older than an hour is a crashed writer's and is removed. At most ``max_segments``
        deletions per call; returns whether it got through everything due (False: call again). Counted in
        ``pruned_rows`` (predictions + labels) and ``pruned_segments``."""
        with self._exclusive():
            stale = time.time() - 3600
            for temp in glob.glob(str(self.folder / ".tmp-*.parquet")):
                with contextlib.suppress(FileNotFoundError):
                    if os.path.getmtime(temp) < stale:
                        os.unlink(temp)
            segments = sorted((self._segment(n) for kind in ("predictions", "feedback") for n in self._live(kind)[0]),
                              key=lambda s: (s.newest, os.path.basename(s.name).split("-")[1]))
            doomed = [s for s in segments if older_than is not None and s.newest < older_than]
            if max_bytes is not None:
                left = sum(s.size for s in segments[len(doomed):])
                for segment in segments[len(doomed):]:
                    if left <= max_bytes:
                        break
                    doomed.append(segment)
                    left -= segment.size
            for segment in doomed[:max_segments]:
                self._drop([segment.name])
                self.pruned_rows += segment.rows
                self.pruned_segments += 1
            return len(doomed) <= max_segments

    def size(self) -> int:
        """Bytes in the committed segments (what ``max_bytes`` caps; temp files of writes in progress aside)."""
        return sum(os.path.getsize(n) for kind in ("predictions", "feedback") for n in self.files(kind))

    def read(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        for attempt in range(5):  # a compaction may delete a listed segment (its rows are in the merged file)
            try:
                return self._read_once()
            except FileNotFoundError:
                if attempt == 4:
                    raise
                time.sleep(0.05)
        raise AssertionError("unreachable")

    def _read_once(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pred_schema, fb_schema = self._schemas()
        files = self.files("predictions")
        if files:
            table = pa.concat_tables([pq.read_table(f, schema=pred_schema) for f in files])
            frame = table.drop_columns(["logits", "features"]).to_pandas()
            frame["logits"] = _decode_list(table.column("logits"))
            frame["features"] = _decode_list(table.column("features"))
            frame["inputs_shape"] = [None if v is None else tuple(int(d) for d in v) for v in frame["inputs_shape"]]
            for name in ("model_sha256", "inputs_dtype"):  # None, not NaN, when absent (as the SQL stores give)
                frame[name] = pd.Series(table.column(name).to_pylist(), dtype=object, index=frame.index)
            frame = frame[list(PREDICTION_COLUMNS)]
        else:
            frame = _empty_predictions()
        fb_files = self.files("feedback")
        feedback = (pa.concat_tables([pq.read_table(f, schema=fb_schema) for f in fb_files]).to_pandas()
                    if fb_files else _empty_feedback())
        return frame, feedback


def _list_column(arrays: Sequence[np.ndarray | None]) -> Any:
    """A ``list<float32>`` Arrow array built from flat float32 buffers (no per-element Python objects)."""
    import pyarrow as pa

    lengths = np.array([0 if a is None else a.size for a in arrays], dtype=np.int32)
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    present = [a for a in arrays if a is not None]
    values = np.concatenate(present).astype(np.float32, copy=False) if present else np.zeros(0, np.float32)
    mask = pa.array([a is None for a in arrays], type=pa.bool_())
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.float32()), mask=mask)


def _decode_list(column: Any) -> list[np.ndarray | None]:
    out: list[np.ndarray | None] = []
    for chunk in column.chunks:
        offsets = chunk.offsets.to_numpy()
        values = chunk.values.to_numpy(zero_copy_only=False)
        valid = chunk.is_valid().to_numpy(zero_copy_only=False)
        out.extend(values[offsets[i]:offsets[i + 1]].copy() if valid[i] else None for i in range(len(chunk)))
    return out


class SqlStore(Store):
    """Two tables (``assay_predictions``, ``assay_feedback``) in a SQLAlchemy database; one transaction per batch.

    SQLite runs in WAL mode (``synchronous=NORMAL``, ``FULL`` under strict durability); PostgreSQL takes several
    writer processes on one table (plain INSERTs, no locks beyond the row's).
    """

    def __init__(self, url: str, *, fsync: bool = False) -> None:
        import sqlalchemy as sa

        self.url = url
        metadata = sa.MetaData()
        self.predictions = sa.Table(
            "assay_predictions", metadata,
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                      autoincrement=True),
            sa.Column("request_id", sa.String(128), nullable=False, index=True),
            sa.Column("row", sa.BigInteger(), nullable=False),
            sa.Column("time", sa.Float(precision=53), nullable=False, index=True),
            sa.Column("version", sa.String(256), nullable=False),
            sa.Column("model_sha256", sa.String(64), nullable=True),
            sa.Column("role", sa.String(16), nullable=False),
            sa.Column("input_sha256", sa.String(64), nullable=False),
            sa.Column("inputs", sa.LargeBinary(), nullable=True),
            sa.Column("inputs_dtype", sa.String(32), nullable=True),
            sa.Column("inputs_shape", sa.String(256), nullable=True),  # JSON list
            sa.Column("logits", sa.LargeBinary(), nullable=False),
            sa.Column("top1", sa.BigInteger(), nullable=False),
            sa.Column("confidence", sa.Float(precision=53), nullable=False),
            sa.Column("features", sa.LargeBinary(), nullable=True))
        self.feedback = sa.Table(
            "assay_feedback", metadata,
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                      autoincrement=True),
            sa.Column("request_id", sa.String(128), nullable=False, index=True),
            sa.Column("row", sa.BigInteger(), nullable=False),
            sa.Column("label", sa.BigInteger(), nullable=False),
            sa.Column("time", sa.Float(precision=53), nullable=False))
        sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"connect_args": {"timeout": 30}} if sqlite else {"pool_pre_ping": True}
        self.engine = sa.create_engine(url, **kwargs)
        self.where = sa.engine.make_url(url).render_as_string(hide_password=True)
        self.pruned_rows = 0
        self.pruned_segments = 0  # always 0: rows are deleted, not segments
        if sqlite:
            synchronous = "FULL" if fsync else "NORMAL"

            @sa.event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.isolation_level = None  # transactions are begun explicitly (below), DDL included
                cursor = dbapi_conn.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute(f"PRAGMA synchronous={synchronous}")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.close()

            @sa.event.listens_for(self.engine, "begin")
            def _begin(conn: Any) -> None:
                conn.exec_driver_sql(conn.get_execution_options().get("assay_begin", "BEGIN"))
        try:
            upgrade_log_schema(self.engine, self.where)
        except BaseException:
            self.engine.dispose()
            raise

    def write(self, predictions: Sequence[PredictionRow], feedback: Sequence[FeedbackRow]) -> None:
        with self.engine.begin() as conn:
            if predictions:
                conn.execute(self.predictions.insert(), [
                    {"request_id": r.request_id, "row": r.row, "time": r.time, "version": r.version,
                     "model_sha256": r.model_sha256, "role": r.role,
                     "input_sha256": r.input_sha256, "inputs": r.inputs_bytes(),
                     "inputs_dtype": r.inputs_layout()[0],
                     "inputs_shape": None if r.inputs_layout()[1] is None else json.dumps(r.inputs_layout()[1]),
                     "logits": _f32(r.logits).astype("<f4").tobytes(), "top1": r.top1, "confidence": r.confidence,
                     "features": None if r.features is None else _f32(r.features).astype("<f4").tobytes()}
                    for r in predictions])
            if feedback:
                conn.execute(self.feedback.insert(), [
                    {"request_id": f.request_id, "row": f.row, "label": f.label, "time": f.time} for f in feedback])

    def read(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(*[self.predictions.c[n] for n in PREDICTION_COLUMNS])
                                .order_by(self.predictions.c.id)).all()
            fb = conn.execute(sa.select(self.feedback.c.request_id, self.feedback.c.row, self.feedback.c.label,
                                        self.feedback.c.time)
                              .order_by(self.feedback.c.id)).all()
        if rows:
            columns = dict(zip(PREDICTION_COLUMNS, zip(*rows)))  # column tuples straight from the driver
            columns["inputs"] = tuple(None if b is None else bytes(b) for b in columns["inputs"])
            columns["inputs_shape"] = tuple(None if v is None else tuple(json.loads(v))
                                            for v in columns["inputs_shape"])
            columns["logits"] = tuple(_from_f32(b) for b in columns["logits"])
            columns["features"] = tuple(None if b is None else _from_f32(b) for b in columns["features"])
            frame = pd.DataFrame({name: pd.Series(list(values), dtype=object) for name, values in columns.items()})
            for name in ("row", "top1"):
                frame[name] = frame[name].astype("int64")
            for name in ("time", "confidence"):
                frame[name] = frame[name].astype("float64")
        else:
            frame = _empty_predictions()
        feedback = (pd.DataFrame([tuple(r) for r in fb], columns=["request_id", "row", "label", "time"]) if fb
                    else _empty_feedback())
        return frame, feedback

    def prune(self, *, older_than: float | None = None, max_rows: int = 100_000, batch_rows: int = 2_000) -> bool:
        """DELETE the rows (predictions, and labels by their own time) older than ``older_than`` (Unix seconds), at
        most ``batch_rows`` per transaction (writers wait for one short transaction at a time, never for the whole
        pass) and ``max_rows`` per call; returns whether nothing due is left (False: call again). Counted in
        ``pruned_rows``. Row-exact: a row at or after the cutoff is never deleted. The database keeps the freed
        pages for new rows (PostgreSQL's autovacuum, SQLite's free list): files do not shrink, which is why the
        SQL stores take no size cap."""
        import sqlalchemy as sa

        if older_than is None:
            return True
        deleted = 0
        for table in (self.predictions, self.feedback):
            while deleted < max_rows:
                limit = min(batch_rows, max_rows - deleted)
                due = sa.select(table.c.id).where(table.c.time < older_than).limit(limit)
                with self.engine.begin() as conn:
                    count = conn.execute(table.delete().where(table.c.id.in_(due))).rowcount
                deleted += count
                self.pruned_rows += count
                if count < limit:
                    break
        return deleted < max_rows

    def close(self) -> None:
        self.engine.dispose()
