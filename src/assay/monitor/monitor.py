"""The monitor: the prediction log, window by window, against the reference (:class:`Monitor`).

``Monitor.update(frame)`` takes rows of the log (a :func:`~assay.serve.log.read_log` frame: the whole log
or any suffix that starts at or before the last row already seen), adds only the rows after its cursor to
the open window's state, closes windows as they fill, and evaluates each closed window once
(:func:`~assay.monitor.evaluate.evaluate_window`); history is never recomputed. Feedback labels that arrive
for rows seen earlier are added to their window's label statistics (found by time) when the frame holds
those rows again, so pass a frame reaching back as far as labels may be late; each (request id, row) is
counted once (the keys of counted labels are kept with their windows), so re-reading the log counts nothing
twice, and a corrected label does not replace the first.

State (``state_dir``): ``state.json`` (settings, cursor, closed windows' results, label counts) and
``state-<generation>.npz`` (the open window's histograms and sample, label-delay histograms), plain JSON
and numeric arrays, no pickle. Each save writes a new npz, then replaces ``state.json`` (which names the npz
and its sha256) atomically, then removes the old npz: a crash leaves the previous state or the new one.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import tempfile
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from assay.errors import DataError, OptionError, OutputError
from assay.monitor.evaluate import MonitorContext, WindowResult, accumulate, evaluate_window
from assay.monitor.settings import MonitorSettings
from assay.monitor.state import DELAY_EDGES, LabelStats, LogBatch, WindowState
from assay.stats.bootstrap import clopper_pearson

if TYPE_CHECKING:
    import pandas as pd

    from assay.reference import Reference

__all__ = ["SNAPSHOT_SCHEMA", "STATE_FILE", "Monitor", "reference_id"]

SNAPSHOT_SCHEMA = "assay.monitor.snapshot/1"
STATE_SCHEMA = "assay.monitor.state/1"
STATE_FILE = "state.json"
#: Labelled rows a window needs before its realized accuracy can raise an alarm.
MIN_LABELLED = 30
_MAX_STATE_BYTES = 256 * 2**20


def reference_id(reference: Reference) -> str:
    """sha256 of the reference's JSON header (provenance, sizes, settings): a state belongs to one reference."""
    text = json.dumps(reference.header(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Monitor:
    """Drift, label-free accuracy and alarms of a prediction log, window by window (see the module docstring).

    ``reference``: the bundle's :class:`~assay.reference.Reference`; ``settings``: :class:`MonitorSettings`;
    ``state_dir``: where the state persists (None: in memory only), loaded when it exists;
    ``reference_logits``: the bundle's clean logits (predictions.npz), for the near-margin share test;
    ``info``: snapshot metadata (``model``: name/version/alias, ``source``, ``sha256`` of the reference file,
    ``alias_history``); ``save_every_s``: ``update`` saves the state when a window closed, else at most this
    often (0: after every update, as ``assay monitor`` does; a server feeding the monitor every second would
    pass e.g. 30 and call :meth:`save` when it stops).
    """

    def __init__(self, reference: Reference, settings: MonitorSettings | None = None, *,
                 state_dir: str | os.PathLike[str] | None = None, reference_logits: np.ndarray | None = None,
                 info: dict[str, Any] | None = None, save_every_s: float = 0.0) -> None:
        self.reference = reference
        self.save_every_s = float(save_every_s)
        self._saved_at = -math.inf
        self.settings = settings or MonitorSettings()
        self.info = dict(info or {})
        self.context = MonitorContext.build(reference, self.settings, reference_logits)
        self.state_dir = None if state_dir is None else Path(state_dir)
        self.reference_id = reference_id(reference)
        feats = reference.features
        self._feature_shape = None if feats is None else (feats.n_features, int(feats.counts.shape[1]))
        self._sample_dims = None if feats is None or feats.sample is None else feats.n_features
        self.position = 0
        self.cursor: dict[str, Any] | None = None
        self.label_keys: dict[str, int] = {}  # request_id US row -> window, of every label counted
        self.next_index = 0
        self.open: WindowState | None = None
        self.results: list[WindowResult] = []
        self.labels: dict[int, LabelStats] = {}
        self.events: list[dict[str, Any]] = []
        self._open_result: tuple[int, WindowResult] | None = None
        self._generation = 0
        if self.state_dir is not None and (self.state_dir / STATE_FILE).exists():
            self._load()

    # ------------------------------------------------------------------------------ windows

    def _new_window(self, index: int, position: int, key: int | None) -> WindowState:
        r = self.reference
        return WindowState(index=index, position=position, num_classes=r.num_classes,
                           confidence_bins=r.confidence_histogram.counts.size,
                           entropy_bins=0 if r.entropy_histogram is None else r.entropy_histogram.counts.size,
                           feature_shape=self._feature_shape, sample_dims=self._sample_dims, key=key)

    def _close(self) -> WindowResult:
        assert self.open is not None
        result = evaluate_window(self.open, self.context)
        self.results.append(result)
        for alarm in result.alarms:
            self.events.append({"time": result.end, "kind": "alarm", "message": f"window {result.index}: {alarm}"})
        self.open = None
        self._open_result = None
        excess = len(self.results) - self.settings.keep_windows
        if excess > 0:
            dropped = {old.index for old in self.results[:excess]}
            for index in dropped:
                self.labels.pop(index, None)
            self.label_keys = {k: w for k, w in self.label_keys.items() if w not in dropped}
            del self.results[:excess]
        self.events = self.events[-10 * self.settings.keep_windows:]
        return result

    def update_batch(self, batch: LogBatch) -> list[WindowResult]:
        """Add rows (arrays, in log order, all after the cursor) and return the windows they closed."""
        s = self.settings
        closed: list[WindowResult] = []
        n = len(batch)
        if n == 0:
            return closed
        self._open_result = None
        positions = self.position + np.arange(n, dtype=np.int64)
        window_of = np.empty(n, dtype=np.int64)
        if s.window_kind == "count":
            size = int(s.window_size)
            i = 0
            while i < n:
                if self.open is None:
                    index = int(positions[i] // size)
                    self.open = self._new_window(index, int(positions[i]), None)
                take = min(n - i, size - self.open.n)
                part = slice(i, i + take)
                accumulate(self.open, batch.take(part), positions[part], self.context)
                window_of[part] = self.open.index
                i += take
                if self.open.n >= size:
                    closed.append(self._close())
        else:
            buckets = np.floor(batch.time / s.window_size).astype(np.int64)
            start_key = self.open.key if self.open is not None and self.open.key is not None else buckets[0]
            keys = np.maximum.accumulate(np.maximum(buckets, start_key))  # late rows join the open window
            cuts = np.flatnonzero(np.diff(keys)) + 1
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, n], strict=True):
                key = int(keys[lo])
                if self.open is not None and self.open.key != key:
                    closed.append(self._close())
                if self.open is None:
                    self.open = self._new_window(self.next_index, int(positions[lo]), key)
                    self.next_index += 1
                part = slice(int(lo), int(hi))
                accumulate(self.open, batch.take(part), positions[part], self.context)
                window_of[part] = self.open.index
        if s.window_kind == "count" and self.open is None:
            self.next_index = int((self.position + n) // int(s.window_size))
        self.position += n
        if batch.label is not None:
            labelled = np.flatnonzero(batch.label >= 0)
            self._add_labels(window_of[labelled], batch.logits[labelled], batch.label[labelled],
                             batch.time[labelled], _or_nan(batch.label_time, labelled),
                             batch.keys(labelled))
        return closed

    def flush(self, now: float | None = None) -> WindowResult | None:
        """Close the open window: a time window whose span has ended by ``now`` (Unix s; default: the clock),
        or, with ``now=math.inf``, any open window (the end of a replay)."""
        if self.open is None or self.open.n == 0:
            return None
        now = time.time() if now is None else now
        if self.settings.window_kind == "time" and self.open.key is not None:
            if now < (self.open.key + 1) * self.settings.window_size:
                return None
        elif now != math.inf:
            return None
        return self._close()

    # ------------------------------------------------------------------------------ labels

    def _add_labels(self, windows: np.ndarray, logits: np.ndarray, labels: np.ndarray, times: np.ndarray,
                    label_times: np.ndarray, keys: np.ndarray | None) -> None:
        """Count labels in their windows, each (request id, row) once: a label seen again (the log re-read)
        is not counted twice, and a corrected label does not replace the first one."""
        if keys is not None and labels.size:
            fresh = np.array([k not in self.label_keys for k in keys], dtype=bool)
            windows, logits, labels, times, label_times, keys = (
                windows[fresh], logits[fresh], labels[fresh], times[fresh], label_times[fresh], keys[fresh])
            self.label_keys.update(zip(keys.tolist(), windows.tolist(), strict=True))
        if labels.size == 0:
            return
        correct = logits.argmax(axis=1) == labels
        delay = label_times - times
        for w in np.unique(windows):
            mine = windows == w
            self.labels.setdefault(int(w), LabelStats()).add(correct[mine], delay[mine])

    def _late_labels(self, frame: pd.DataFrame) -> None:
        """Labels that arrived for rows seen in earlier updates (not counted yet): each to the window whose span
        holds the row's time."""
        if "label" not in frame or not len(frame):
            return
        has = frame["label"].notna().to_numpy()
        if not has.any():
            return
        rows = frame[has]
        keys = np.array([f"{rid}\x1f{row}" for rid, row in zip(rows["request_id"], rows["row"], strict=True)],
                        dtype=str)
        fresh = np.array([k not in self.label_keys for k in keys], dtype=bool)
        if not fresh.any():
            return
        rows = rows[fresh]
        known = [(r.start, r.index) for r in self.results if r.start is not None]
        if self.open is not None and math.isfinite(self.open.start):
            known.append((self.open.start, self.open.index))
        if not known:
            return
        known.sort()
        starts = [k[0] for k in known]
        times = rows["time"].to_numpy(dtype=np.float64)
        kept = times >= starts[0]  # earlier rows belong to windows no longer kept (keep_windows)
        rows, times = rows[kept], times[kept]
        if not len(rows):
            return
        windows = np.array([known[bisect.bisect_right(starts, t) - 1][1] for t in times], dtype=np.int64)
        batch = LogBatch.from_frame(rows, num_classes=self.reference.num_classes, feature_space=None, feature_dims=None)
        assert batch.label is not None and batch.label_time is not None
        self._add_labels(windows, batch.logits, batch.label, batch.time, batch.label_time,
                         batch.keys(np.arange(len(batch))))

    # ------------------------------------------------------------------------------ the log

    def _select(self, frame: pd.DataFrame) -> pd.DataFrame:
        if "role" in frame:
            frame = frame[frame["role"].isin(self.settings.roles)]
        return frame

    def update(self, frame: pd.DataFrame) -> list[WindowResult]:
        """Process the rows of ``frame`` (a ``read_log`` frame) after the cursor; return the windows closed.
        Saves the state when the monitor has a ``state_dir``."""
        frame = self._select(frame).reset_index(drop=True)
        start = 0
        if self.cursor is not None and len(frame):
            match = np.flatnonzero((frame["request_id"].to_numpy() == self.cursor["request_id"])
                                   & (frame["row"].to_numpy() == self.cursor["row"]))
            if match.size:
                start = int(match[-1]) + 1
            else:  # the cursor row is not in this frame: rows logged after its time are new
                later = np.flatnonzero(frame["time"].to_numpy(dtype=np.float64) > self.cursor["time"])
                start = int(later[0]) if later.size else len(frame)
        self._late_labels(frame.iloc[:start])
        new = frame.iloc[start:]
        feats = self.reference.features
        batch = LogBatch.from_frame(new, num_classes=self.reference.num_classes,
                                    feature_space=None if feats is None else feats.space,
                                    feature_dims=None if feats is None else feats.n_features)
        closed = self.update_batch(batch)
        if len(new):
            last = new.iloc[-1]
            self.cursor = {"request_id": str(last["request_id"]), "row": int(last["row"]), "time": float(last["time"])}
        if self.state_dir is not None and (closed or time.monotonic() - self._saved_at >= self.save_every_s):
            self.save()
        return closed

    # ------------------------------------------------------------------------------ results

    def open_result(self) -> WindowResult | None:
        """The open window evaluated as it stands (cached until it changes), or None when empty."""
        if self.open is None or self.open.n == 0:
            return None
        if self._open_result is None or self._open_result[0] != self.open.n:
            self._open_result = (self.open.n, evaluate_window(self.open, self.context))
        return self._open_result[1]

    def realized(self, index: int) -> dict[str, Any] | None:
        stats = self.labels.get(index)
        if stats is None or stats.n == 0:
            return None
        lo, hi = clopper_pearson(stats.correct, stats.n, self.settings.confidence)
        return {"value": stats.correct / stats.n, "ci": [lo, hi], "n_labelled": stats.n,
                "label_delay_s_median": stats.median_delay()}

    def _window_dict(self, result: WindowResult, *, is_open: bool) -> dict[str, Any]:
        d = result.to_dict()
        d["open"] = is_open
        realized = self.realized(result.index)
        d["realized_accuracy"] = realized
        accuracy = self.reference.accuracy
        if realized is not None and accuracy is not None and realized["n_labelled"] >= MIN_LABELLED \
                and realized["ci"][1] < accuracy:
            d["alarms"] = [*d["alarms"], f"realized_accuracy: {realized['value']:.3f} (CI up to "
                           f"{realized['ci'][1]:.3f}) below the reference's {accuracy:.3f}"]
        return d

    def snapshot(self) -> dict[str, Any]:
        """The monitor as plain JSON (schema ``assay.monitor.snapshot/1``: see docs/monitoring.md)."""
        windows = [self._window_dict(r, is_open=False) for r in self.results]
        current = self.open_result()
        if current is not None:
            windows.append(self._window_dict(current, is_open=True))
        model = self.info.get("model") or {}
        s = self.settings
        return {
            "schema": SNAPSHOT_SCHEMA,
            "generated_at": time.time(),
            "model": {"name": model.get("name"), "version": model.get("version"), "alias": model.get("alias")},
            "reference": {"source": self.info.get("source", "<memory>"), "sha256": self.info.get("sha256"),
                          "accuracy": self.reference.accuracy, "n": self.reference.n,
                          "model_sha256": self.reference.model_sha256},
            "window": {"kind": s.window_kind, "size": s.window_size, "min": s.min_window},
            "threshold_method": s.threshold_method,
            "fdr": s.fdr,
            "settings": s.to_dict(),
            "rows_processed": self.position,
            "traffic": [{"start": w["start"], "end": w["end"], "requests": w["requests"], "rows": w["n"],
                         "latency_p50_ms": None, "latency_p99_ms": None} for w in windows],
            "windows": windows,
            "rollout": self.info.get("rollout"),
            "alias_history": self.info.get("alias_history", []),
            "events": list(self.events),
        }

    # ------------------------------------------------------------------------------ persistence

    def save(self) -> Path:
        """Write the state to ``state_dir`` (atomically; see the module docstring)."""
        if self.state_dir is None:
            raise OptionError("this monitor has no state folder", where="state_dir", fix="pass state_dir=...")
        folder = self.state_dir
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the state folder ({exc.strerror})", where=str(folder),
                              fix="give a writable --state folder") from None
        arrays: dict[str, np.ndarray] = {}
        if self.open is not None:
            arrays.update(self.open.arrays("open_"))
        label_index = np.array(sorted(self.labels), dtype=np.int64)
        arrays["label_index"] = label_index
        arrays["label_counts"] = np.array([[self.labels[i].n, self.labels[i].correct] for i in label_index],
                                          dtype=np.int64).reshape(-1, 2)
        arrays["label_delays"] = np.array([self.labels[i].delays for i in label_index], dtype=np.int64).reshape(
            len(label_index), DELAY_EDGES.size + 1)
        arrays["label_keys"] = np.array(list(self.label_keys), dtype=str)
        arrays["label_key_windows"] = np.array(list(self.label_keys.values()), dtype=np.int64)
        self._generation += 1
        npz_name = f"state-{self._generation}-{os.getpid()}.npz"
        previous = _named_npz(folder)
        try:
            npz_sha = _atomic_write(folder / npz_name, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]
            header = {
                "schema": STATE_SCHEMA, "saved_at": time.time(), "reference_id": self.reference_id,
                "settings": self.settings.to_dict(), "position": self.position, "cursor": self.cursor,
                "next_index": self.next_index, "generation": self._generation,
                "open": None if self.open is None else self.open.header(),
                "results": [r.to_dict() for r in self.results], "events": self.events,
                "npz": npz_name, "npz_sha256": npz_sha,
            }
            text = json.dumps(header, allow_nan=False, separators=(",", ":")).encode("utf-8")
            _atomic_write(folder / STATE_FILE, lambda f: f.write(text))
        except OSError as exc:
            raise OutputError(f"cannot write the monitor state ({exc.strerror})", where=str(folder),
                              fix="free disk space or give another --state folder") from None
        if previous and previous != npz_name:
            (folder / previous).unlink(missing_ok=True)
        self._saved_at = time.monotonic()
        return folder / STATE_FILE

    def _load(self) -> None:
        assert self.state_dir is not None
        folder = self.state_dir
        file = folder / STATE_FILE
        fix = f"remove {folder} to start monitoring afresh, or give another --state folder"
        try:
            if file.stat().st_size > _MAX_STATE_BYTES:
                raise DataError("the monitor state is too large to be one", where=str(file), fix=fix)
            header = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise DataError(f"the monitor state cannot be read ({str(exc)[:200]})", where=str(file), fix=fix) from None
        if not isinstance(header, dict) or header.get("schema") != STATE_SCHEMA:
            raise DataError("this is not a monitor state written by Assay", where=str(file), fix=fix)
        if header.get("reference_id") != self.reference_id:
            raise OptionError("the monitor state in this folder was built against another reference", where=str(folder),
                              fix=fix)
        try:
            stored = MonitorSettings.from_dict(header["settings"])
        except (OptionError, TypeError, KeyError):
            raise DataError("the monitor state holds invalid settings", where=str(file), fix=fix) from None
        if stored != self.settings:
            changed = sorted(k for k, v in stored.to_dict().items() if self.settings.to_dict()[k] != v)
            raise OptionError(f"the monitor state in this folder was built with other settings ({', '.join(changed)})",
                              where=str(folder), fix=f"use the same settings, or {fix}")
        npz = folder / str(header.get("npz", ""))
        try:
            if hashlib.sha256(npz.read_bytes()).hexdigest() != header.get("npz_sha256"):
                raise DataError("the monitor state's arrays do not match its header", where=str(npz), fix=fix)
            with np.load(npz, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            self.position = int(header["position"])
            self.cursor = header["cursor"]
            self.label_keys = dict(zip(arrays["label_keys"].astype(str).tolist(),
                                       arrays["label_key_windows"].astype(np.int64).tolist(), strict=True))
            self.next_index = int(header["next_index"])
            self._generation = int(header.get("generation", 0))
            self.results = [WindowResult.from_dict(r) for r in header["results"]]
            self.events = list(header.get("events", []))
            self.open = None
            if header["open"] is not None:
                self.open = self._new_window(0, 0, None)
                self.open.restore(header["open"], arrays, "open_")
            self.labels = {}
            for i, (count, correct), delays in zip(arrays["label_index"], arrays["label_counts"],
                                                   arrays["label_delays"], strict=True):
                self.labels[int(i)] = LabelStats(n=int(count), correct=int(correct), delays=delays.astype(np.int64))
        except DataError:
            raise
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            raise DataError(f"the monitor state is damaged ({type(exc).__name__}: {str(exc)[:200]})",
                            where=str(folder), fix=fix) from None


def _or_nan(values: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
    return np.full(rows.size, np.nan) if values is None else values[rows]


def _named_npz(folder: Path) -> str | None:
    try:
        header = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        name = header.get("npz") if isinstance(header, dict) else None
        return name if isinstance(name, str) else None
    except (OSError, ValueError):
        return None


def _atomic_write(target: Path, write: Any) -> str:
    """Write through ``write(file)`` to a temporary sibling, fsync, rename over ``target``; the sha256."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return hashlib.sha256(target.read_bytes()).hexdigest()
