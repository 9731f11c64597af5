"""The monitor inside ``assay serve`` (issue 15): drift windows, the rollout tracker, and what they decide.

``LiveMonitor`` is fed on the request path with plain appends (the rows the server answered, the labels that
came back through ``/v1/feedback``) and stepped off it (``step``, in a worker thread every ``interval_s``):

* the drift monitor (:class:`assay.monitor.Monitor`, the same code as ``assay monitor`` on a log) over the
  primary model's rows, against the reference of the version that answers (a new version after a hot swap
  gets a fresh monitor: its reference is another bundle);
* the rollout tracker (:class:`assay.monitor.decisions.RolloutTracker`): challenger vs champion (shadow:
  paired, canary: two arms) and the production accuracy floor, from always-valid confidence sequences.

What the decisions do is the app's part (``create_app``): a challenger worse with confidence stops the canary
routing / shadow scoring (the alias is not moved) and is recorded in the registry's audit log with the sha256
of the monitor report stored beside it; a floor breach with ``auto_rollback`` rolls the alias back and the
server hot-swaps; a challenger non-inferior with confidence is promoted through the registry gate only with
``auto_promote``.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assay.errors import OptionError
from assay.monitor import Monitor, MonitorSettings, load_monitor_reference, parse_window
from assay.monitor.decisions import RolloutSettings, RolloutTracker

__all__ = ["LiveMonitor", "LiveMonitorSettings", "store_report"]

#: rows remembered for labels that come back later (per server); the oldest are forgotten first.
MAX_REMEMBERED = 100_000


@dataclass(frozen=True)
class LiveMonitorSettings:
    """What ``assay serve --monitor`` watches and may do. ``window``: rows (``1000``) or time (``"10m"``) per
    drift window; ``alpha``/``margin``/``worse_by``/``max_negative_flip_rate``/``accuracy_floor``/
    ``floor_epoch``: :class:`~assay.monitor.decisions.RolloutSettings`; ``auto_stop`` (on): stop a challenger
    worse with confidence; ``auto_promote`` (off): promote a non-inferior challenger through the registry
    gate; ``auto_rollback`` (off): roll the alias back when the floor is breached; ``interval_s``: how often
    the monitor steps."""

    window: str | int = 1000
    min_window: int = 100
    fdr: float = 0.05
    interval_s: float = 1.0
    alpha: float = 0.05
    margin: float = 0.02
    worse_by: float = 0.0
    max_negative_flip_rate: float | None = None
    accuracy_floor: float | None = None
    floor_epoch: int = 500
    auto_stop: bool = True
    auto_promote: bool = False
    auto_rollback: bool = False
    state_dir: str | None = None

    def __post_init__(self) -> None:
        if not 0.01 <= self.interval_s <= 3600:
            raise OptionError(f"monitor interval {self.interval_s} s is out of range", where="interval_s",
                              fix="use 0.5 to 60 seconds")
        if self.auto_rollback and self.accuracy_floor is None:
            raise OptionError("automatic rollback needs an accuracy floor", where="auto_rollback",
                              fix="give --accuracy-floor, e.g. 0.9 (the accuracy the production model must keep)")
        self.monitor_settings()
        self.rollout_settings()

    def monitor_settings(self) -> MonitorSettings:
        kind, size = parse_window(self.window)
        return MonitorSettings(window_kind=kind, window_size=size, min_window=self.min_window, fdr=self.fdr)

    def rollout_settings(self) -> RolloutSettings:
        return RolloutSettings(alpha=self.alpha, margin=self.margin, worse_by=self.worse_by,
                               max_negative_flip_rate=self.max_negative_flip_rate, floor=self.accuracy_floor,
                               epoch=self.floor_epoch)

    @classmethod
    def coerce(cls, value: LiveMonitorSettings | dict[str, Any] | bool) -> LiveMonitorSettings:
        if isinstance(value, LiveMonitorSettings):
            return value
        if value is True:
            return cls()
        if isinstance(value, dict):
            unknown = set(value) - set(cls.__dataclass_fields__)
            if unknown:
                raise OptionError(f"unknown monitor settings: {', '.join(sorted(unknown))}", where="monitor",
                                  fix=f"use: {', '.join(cls.__dataclass_fields__)}")
            return cls(**value)
        raise OptionError(f"monitor must be settings, a dict or True, not {value!r}", where="monitor",
                          fix="pass LiveMonitorSettings(...)")


def _atc_threshold(evidence_dir: str | None) -> float | None:
    if evidence_dir is None:
        return None
    try:
        return load_monitor_reference(evidence_dir).reference.atc_threshold_maxconf
    except Exception:  # a bundle without a usable reference: no label-free estimate for this model
        return None


@dataclass
class _Remembered:
    time: float
    logits: np.ndarray


@dataclass
class LiveMonitor:
    """See the module docstring. ``observe``/``label`` on the request path; ``attach`` when the serving models
    change; ``step`` off the request path; ``snapshot`` for ``/dashboard`` and ``/v1/monitor``."""

    settings: LiveMonitorSettings
    monitor: Monitor | None = None
    version: str | None = None
    tracker: RolloutTracker | None = None
    challenger: str | None = None
    mode: str = "none"
    note: str | None = None
    rollback_blocked: bool = False  # a rollback was refused (no earlier holder): not retried
    events: list[dict[str, Any]] = field(default_factory=list)
    alias_history: list[dict[str, Any]] = field(default_factory=list)
    _rows: list[dict[str, Any]] = field(default_factory=list)
    _labels: list[tuple[str, int, int, float]] = field(default_factory=list)
    _remembered: OrderedDict[tuple[str, int], _Remembered] = field(default_factory=OrderedDict)
    _last_fed: dict[str, Any] | None = None

    # ------------------------------------------------------------------ request path (appends only)
    def observe(self, rows: list[dict[str, Any]]) -> None:
        """Rows the server just answered (the dicts it sends to the prediction log)."""
        if not rows:
            return
        tracker = self.tracker
        if tracker is not None:
            tracker.observe(rows[0]["role"], rows[0]["request_id"], np.array([r["top1"] for r in rows]),
                            np.array([r["confidence"] for r in rows]))
        if rows[0]["role"] == "primary" and rows[0]["model_version"] == self.version:
            self._rows.extend(rows)

    def label(self, request_id: str, row: int, label: int) -> None:
        """A label that came back through ``/v1/feedback``."""
        if self.tracker is not None:
            self.tracker.label(request_id, row, label)
        self._labels.append((request_id, row, label, time.time()))

    def event(self, kind: str, message: str) -> None:
        self.events.append({"time": time.time(), "kind": kind, "message": message})
        del self.events[:-1000]

    # ------------------------------------------------------------------ the models being watched
    def attach(self, primary: Any, challenger: Any | None, mode: str) -> None:
        """(Re)start what depends on the serving models: a drift monitor per primary version, a tracker per
        (primary, challenger) pair. ``primary``/``challenger``: the app's ``LoadedModel``s."""
        if primary.version != self.version:
            self.version = primary.version
            self._rows, self._remembered, self._last_fed = [], OrderedDict(), None
            self.monitor, self.note = None, None
            if primary.evidence_dir is None:
                self.note = (f"no evaluation bundle for {primary.version}: drift is not monitored (give --reference, "
                             "or serve a registry version registered with its evidence)")
            else:
                try:
                    ref = load_monitor_reference(primary.evidence_dir)
                except Exception as exc:  # a bundle without a usable reference: the server still serves
                    self.note = f"the monitoring reference of {primary.version} could not be read: {exc}"
                else:
                    state = None
                    if self.settings.state_dir is not None:
                        state = Path(self.settings.state_dir) / primary.version.replace("/", "_").replace("@", "_")
                    self.monitor = Monitor(ref.reference, self.settings.monitor_settings(), state_dir=state,
                                           reference_logits=ref.logits, info=ref.info)
            if self.tracker is not None:
                self.tracker.restart_floor()
        challenger_version = None if challenger is None else challenger.version
        if self.tracker is None or challenger_version != self.challenger or mode != self.mode:
            self.challenger, self.mode = challenger_version, mode if challenger is not None else "none"
            self.tracker = RolloutTracker(
                mode=self.mode,  # type: ignore[arg-type]
                settings=self.settings.rollout_settings(),
                champion_threshold=_atc_threshold(primary.evidence_dir),
                challenger_threshold=None if challenger is None else _atc_threshold(challenger.evidence_dir),
                challenger=challenger_version)

    # ------------------------------------------------------------------ off the request path
    def step(self) -> None:
        """Feed the drift monitor and the tracker what the request path collected."""
        if self.tracker is not None:
            self.tracker.flush()
        rows, self._rows = self._rows, []
        labels, self._labels = self._labels, []
        monitor = self.monitor
        if monitor is None:
            return
        import pandas as pd

        new = {(r["request_id"], r["row"]): {"request_id": r["request_id"], "row": r["row"], "time": r["time"],
                                             "role": "primary", "logits": r["logits"], "features": r.get("features"),
                                             "label": None, "label_time": None} for r in rows}
        late = []
        for rid, row, label, when in labels:
            if (rid, row) in new:  # labelled before the monitor saw the row: it arrives with its label
                new[(rid, row)].update(label=label, label_time=when)
                continue
            seen = self._remembered.get((rid, row))
            if seen is not None:
                late.append({"request_id": rid, "row": row, "time": seen.time, "role": "primary",
                             "logits": seen.logits, "features": None, "label": label, "label_time": when})
        for r in rows:
            self._remembered[(r["request_id"], r["row"])] = _Remembered(r["time"], r["logits"])
        while len(self._remembered) > MAX_REMEMBERED:
            self._remembered.popitem(last=False)
        if not new and not late:
            return
        # The monitor's frame contract: rows up to its cursor are old (their labels, if any, are late labels),
        # rows after it are new. The row it saw last leads the new ones, so the cursor is found exactly.
        records = late
        if self._last_fed is not None:
            records.append(self._last_fed)
        records += list(new.values())
        if new:
            self._last_fed = {**records[-1], "label": None, "label_time": None}
        frame = pd.DataFrame.from_records(records)
        frame["label"] = frame["label"].astype("Int64")
        monitor.update(frame)

    def snapshot(self) -> dict[str, Any]:
        """The snapshot JSON (``assay.monitor.snapshot/1``, see docs/monitoring.md) with the rollout state."""
        if self.monitor is not None:
            snap = self.monitor.snapshot()
        else:
            snap = {"schema": "assay.monitor.snapshot/1", "generated_at": time.time(),
                    "model": {"name": None, "version": self.version, "alias": None}, "windows": [], "traffic": []}
        model = dict(snap.get("model") or {})
        if self.version is not None and "@" in self.version:  # a registry version answers: name it as such
            model["name"], _, model["version"] = self.version.partition("@")
        snap["model"] = {**model, "serving": self.version}
        snap["rollout"] = None if self.tracker is None else {**self.tracker.summary(), "mode": self.mode}
        snap["alias_history"] = self.alias_history or snap.get("alias_history", [])
        snap["events"] = sorted([*snap.get("events", []), *self.events], key=lambda e: e.get("time") or 0)
        snap["live"] = {"settings": asdict(self.settings), "note": self.note}
        return snap


def store_report(registry: Any, snapshot: dict[str, Any]) -> str:
    """The snapshot as a JSON artifact in the registry's store; its sha256 (what the audit row carries)."""
    with tempfile.TemporaryDirectory(prefix="assay-monitor-") as tmp:
        path = Path(tmp) / "monitor-report.json"
        path.write_text(json.dumps(snapshot, indent=1, sort_keys=True, default=str), encoding="utf-8")
        return str(registry.put_artifact(path))
