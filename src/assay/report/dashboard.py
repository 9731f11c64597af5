"""Monitor snapshot (``assay.monitor.snapshot/1``, written by ``assay.monitor``) -> one self-contained HTML page.

The page behind ``/dashboard`` on ``assay serve`` and ``assay monitor --html``: traffic and latency per window,
label-free accuracy (ATC, DoC) against realized accuracy with their confidence bands, the OOD rate, every drift
test's statistic against its calibrated threshold over time with its alarms marked, the alarms list, the rollout
state (challenger, fraction, difference with its interval, decision), the alias history and the events.

Like the evaluation report (``assay.report.html``) the page is server-rendered: inline CSS and SVG drawn with
``assay.report.svg``, no script and no external reference (a Content-Security-Policy forbids both), so the data
shows without JavaScript and offline; ``<meta http-equiv="refresh">`` reloads it. Every string of the snapshot
is escaped (the template autoescapes; SVG text goes through ``svg.esc``). Nothing is computed here beyond
layout: the monitor decides alarms, intervals and thresholds. Missing optional fields, null values, empty and
"insufficient data" windows are shown as such, never as errors. The plots show at most the latest
:data:`MAX_WINDOWS` windows and :data:`MAX_TEST_PANELS` drift tests (those with alarms first), so the page stays
a few hundred KB however long the monitor runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from markupsafe import Markup

from assay.errors import OptionError
from assay.report.formatting import MISSING, _real, format_ci, format_number, short_hash, write_text_atomic
from assay.report.html import _environment
from assay.report.plots import PALETTE, _Layout
from assay.report.svg import (
    Axes,
    Canvas,
    LegendEntry,
    Scale,
    Ticks,
    auto_limits,
    esc,
    linear_ticks,
    num,
    polyline_d,
    sample_segments,
    wrap,
)

__all__ = ["MAX_TEST_PANELS", "MAX_WINDOWS", "SNAPSHOT_SCHEMA", "render_dashboard", "write_dashboard"]

SNAPSHOT_SCHEMA = "assay.monitor.snapshot/1"
MAX_WINDOWS = 500  # plotted: the latest windows (the tables say how many there are in all)
MAX_TEST_PANELS = 12  # drift tests drawn over time; the latest window's table lists every test
MAX_ROWS = 100  # alarms, alias history and events listed (newest first)
MARKED_POINTS = 25  # up to this many points a line gets a marker per point (one window is visible)

WIDTH = 640.0
HEIGHT = 260.0
ALARM = "#cf222e"
INSUFFICIENT = "#9ca3af"
REFERENCE = "#374151"

_ROLLOUT_TONES = {"none": "info", "shadow": "info", "canary": "warn", "stopped": "fail", "promoted": "pass",
                  "rolled_back": "fail"}

# --------------------------------------------------------------------------------------- reading the snapshot


def _maps(value: Any) -> list[Mapping[str, Any]]:
    """The mappings of a list (anything else: an empty list; non-mapping items are skipped)."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [v for v in value if type(v) is dict or isinstance(v, Mapping)]  # (the abc check is slow)
    return []


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _num(value: Any) -> float | None:
    """``_real`` with a fast path for plain floats and ints (snapshots hold tens of thousands of numbers)."""
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is int:
        return float(value)
    return _real(value)


def _column(rows: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    """``row[key]`` of each row as floats, NaN where it is missing or not a finite number."""
    return np.array([np.nan if (v := _num(row.get(key))) is None else v for row in rows], dtype=float)


def _text(value: Any) -> str:
    return MISSING if value is None else str(value)


def _interval(value: Any) -> tuple[float | None, float | None]:
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) == 2:
        return _num(value[0]), _num(value[1])
    return None, None


def _estimate(value: Any) -> tuple[float | None, float | None, float | None]:
    """(value, ci low, ci high) of an ``{"value", "ci": [lo, hi]}`` field (all None when it is missing)."""
    field_ = _map(value)
    return (_num(field_.get("value")), *_interval(field_.get("ci")))


def _time(value: Any) -> str:
    """A unix time as ``YYYY-MM-DD HH:MM:SSZ`` (UTC); anything else as text."""
    seconds = _num(value)
    if seconds is None:
        return _text(value)
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return format_number(seconds)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return MISSING
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if abs(seconds) >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def _estimate_text(value: Any, digits: int = 4) -> str:
    v, lo, hi = _estimate(value)
    if v is None:
        return MISSING
    ci = format_ci(lo, hi, digits)
    return f"{format_number(v, digits)} {ci}".strip()


# ---------------------------------------------------------------------------------------------- time axis


_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
               172800, 604800, 1209600, 2592000, 7776000, 31536000)


def time_ticks(lo: float, hi: float, target: int) -> Ticks:
    """Ticks of a UTC time axis over unix seconds ``lo..hi``: the first step of 1 s .. 1 year (the clock's own
    steps: 15 s, 5 min, 6 h, a week, ...) that gives at most ``target`` intervals, at its multiples; labelled
    ``HH:MM:SS``, ``HH:MM``, ``MM-DD HH:MM`` (when the axis crosses midnight) or ``YYYY-MM-DD`` (steps of a day or
    more)."""
    span = max(hi - lo, 1e-9)
    step = next((float(s) for s in _TIME_STEPS if span / s <= target), span / max(target, 1))
    values = [k * step for k in range(math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9) + 1)]
    if step >= 86400:
        pattern = "%Y-%m-%d"
    elif math.floor(lo / 86400) != math.floor(hi / 86400):  # the axis crosses midnight (UTC)
        pattern = "%m-%d %H:%M"
    else:
        pattern = "%H:%M" if step >= 60 else "%H:%M:%S"
    labels = []
    for v in values:
        try:
            labels.append(datetime.fromtimestamp(v, tz=timezone.utc).strftime(pattern))
        except (OverflowError, OSError, ValueError):
            labels.append(format_number(v))
    return Ticks(values, labels)


@dataclass
class _Axis:
    """The x axis every panel shares: unix time (window midpoints) or, when a window has no times, the index."""

    kind: str  # "time" | "index"
    lo: float
    hi: float
    label: str
    insufficient: list[tuple[float, float]] = field(default_factory=list)  # shaded spans
    alarmed: list[float] = field(default_factory=list)  # x of windows with an alarm (a red mark along the top)

    def scale(self) -> Scale:
        return Scale("linear", self.lo, self.hi)

    def ticks(self, length_px: float) -> Ticks:
        target = int(min(max(length_px / 110, 2), 8))
        return time_ticks(self.lo, self.hi, target) if self.kind == "time" else linear_ticks(self.lo, self.hi, target)


def _window_x(windows: list[Mapping[str, Any]]) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """(axis kind, x, left edge, right edge) of each window: its time span, else its index +- 0.5."""
    starts = [_num(w.get("start")) for w in windows]
    ends = [_num(w.get("end")) for w in windows]
    if windows and all(s is not None and e is not None and e >= s for s, e in zip(starts, ends, strict=True)):
        left, right = np.array(starts, dtype=float), np.array(ends, dtype=float)
        return "time", (left + right) / 2, left, right
    index = np.array([i if (k := _num(w.get("index"))) is None else k for i, w in enumerate(windows)], dtype=float)
    return "index", index, index - 0.5, index + 0.5


def _runs(flags: np.ndarray, left: np.ndarray, right: np.ndarray) -> list[tuple[float, float]]:
    """Spans of consecutive flagged windows, merged (a long "insufficient data" stretch is one rectangle)."""
    spans: list[tuple[float, float]] = []
    for i in np.flatnonzero(flags):
        if spans and i > 0 and flags[i - 1]:
            spans[-1] = (spans[-1][0], float(right[i]))
        else:
            spans.append((float(left[i]), float(right[i])))
    return spans


# ------------------------------------------------------------------------------------------------- panels


@dataclass
class _Line:
    label: str
    x: np.ndarray
    y: np.ndarray
    colour: str
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    dashed: bool = False
    area: bool = False  # filled down to zero (traffic)


@dataclass
class _Marks:
    """Alarm markers: red rings at (x, y), each with a tooltip."""

    label: str
    x: np.ndarray
    y: np.ndarray
    tips: list[str]


def _panel(gid: str, title: str, ylabel: str, axis: _Axis, lines: Sequence[_Line], *,
           marks: _Marks | None = None, ylim: tuple[float, float] | None = None) -> str:
    """One time-series figure on the shared x axis: lines (CI bands shaded), insufficient windows shaded grey,
    windows with an alarm marked along the top, and ``marks`` (alarm rings) on the data."""
    series_y: list[np.ndarray] = [line.y for line in lines]
    series_y += [b for line in lines for b in (line.low, line.high) if b is not None]
    if marks is not None:
        series_y.append(marks.y)
    if any(line.area for line in lines):
        series_y.append(np.zeros(1))
    yscale = Scale("linear", *(ylim or auto_limits(series_y)))
    xscale = axis.scale()
    title_lines = wrap(title, WIDTH - 40, max_lines=2)
    xticks, yticks = axis.ticks(WIDTH - 100), yscale.ticks(HEIGHT - 90)
    layout = _Layout(title=title_lines, yticks=yticks, ylabel=ylabel, xticks=xticks, xrotate=False,
                     xlabel=axis.label)
    canvas = Canvas(WIDTH, HEIGHT, gid)
    ax = Axes(canvas, layout.box(WIDTH, HEIGHT), xscale, yscale)
    ax.grid(xticks, yticks)
    parts: list[str] = []
    for i, (a, b) in enumerate(axis.insufficient):
        x0, x1 = (float(v) for v in ax.x([a, b]))
        parts.append(f'<rect id="{gid}-insufficient-{i}" class="insufficient" x="{num(x0)}" y="{num(ax.top)}" '
                     f'width="{num(max(x1 - x0, 1.0))}" height="{num(ax.h)}" fill="{INSUFFICIENT}" '
                     'fill-opacity="0.18"/>')
    if axis.insufficient:
        ax.legend_entries.append(LegendEntry("insufficient data", INSUFFICIENT, opacity=0.3))
    if axis.alarmed:
        ticks = "".join(f"M{num(float(px))} {num(ax.top)}v6" for px in ax.x(axis.alarmed))
        parts.append(f'<path class="alarm-rug" d="{ticks}" stroke="{ALARM}" stroke-width="2"/>')
    for i, line in enumerate(lines):
        px, py = ax.x(line.x), ax.y(line.y)
        if line.low is not None and line.high is not None:
            up, down = ax.y(line.high), ax.y(line.low)
            ok = np.isfinite(px) & np.isfinite(up) & np.isfinite(down)
            band = polyline_d(np.concatenate([px[ok], px[ok][::-1]]), np.concatenate([up[ok], down[ok][::-1]]),
                              close=True)
            if ok.sum() <= MARKED_POINTS:  # one window's band is a line: whiskers show it
                band += "".join(f"M{num(a)} {num(u)}V{num(d)}" for a, u, d in zip(px[ok], up[ok], down[ok],
                                                                                   strict=True))
            parts.append(f'<path id="{gid}-band-{i}" class="band" d="{band}" fill="{line.colour}" '
                         f'fill-opacity="0.2" stroke="{line.colour}" stroke-opacity="0.45" stroke-width="0.8"/>')
            ax.obstacles += [sample_segments(px[ok], up[ok]), sample_segments(px[ok], down[ok])]
        if line.area:
            ok = np.isfinite(px) & np.isfinite(py)
            if ok.any():
                base = float(ax.y(0.0))
                d = polyline_d(np.r_[px[ok][0], px[ok], px[ok][-1]], np.r_[base, py[ok], base], close=True)
                parts.append(f'<path d="{d}" fill="{line.colour}" fill-opacity="0.25"/>')
        dash = ' stroke-dasharray="6 4"' if line.dashed else ""
        parts.append(f'<path id="{gid}-series-{i}" d="{polyline_d(px, py)}" stroke="{line.colour}" '
                     f'stroke-width="1.6" fill="none"{dash}/>')
        ok = np.isfinite(px) & np.isfinite(py)
        marked = not line.dashed and not line.area and ok.sum() <= MARKED_POINTS
        if marked:
            parts.append(f'<g fill="{line.colour}">' + "".join(
                f'<circle cx="{num(a)}" cy="{num(b)}" r="3"/>' for a, b in zip(px[ok], py[ok], strict=True)) + "</g>")
        ax.obstacles.append(sample_segments(px, py))
        ax.legend_entries.append(LegendEntry(line.label, line.colour, kind="line", dashed=line.dashed, marker=marked))
    if marks is not None and marks.x.size:
        px, py = ax.x(marks.x), ax.y(marks.y)
        rings = "".join(f'<circle cx="{num(a)}" cy="{num(b)}" r="5"><title>{esc(t)}</title></circle>'
                        for a, b, t in zip(px, py, marks.tips, strict=True) if np.isfinite(a) and np.isfinite(b))
        parts.append(f'<g id="{gid}-alarms" class="alarms" fill="none" stroke="{ALARM}" stroke-width="2">{rings}</g>')
        ax.obstacles.append(np.column_stack([px, py]))
        ax.legend_entries.append(LegendEntry(marks.label, ALARM, kind="marker", marker=True, hollow=True))
    ax.clipped("".join(parts))
    ax.spines()
    ax.xticks(xticks)
    ax.yticks(yticks)
    layout.finish(ax, title=title_lines, xlabel=axis.label, ylabel=ylabel)
    ax.legend("best", font=11.0)
    return canvas.render(title)


def _figure(fid: str, svg: str, caption: str = "") -> dict[str, Any]:
    return {"id": fid, "svg": Markup(svg), "caption": caption}


# --------------------------------------------------------------------------------------------- the views


def _traffic_figure(snapshot: Mapping[str, Any], windows: list[Mapping[str, Any]], axis: _Axis
                    ) -> list[dict[str, Any]]:
    """Requests per traffic bucket (rows per window when the snapshot has no traffic), and latency p50/p99."""
    traffic = _maps(snapshot.get("traffic"))
    figures = []
    if axis.kind == "time" and traffic:
        start, end = _column(traffic, "start"), _column(traffic, "end")
        keep = np.isfinite(start) & np.isfinite(end) & (end >= axis.lo) & (start <= axis.hi)
        rows = [t for t, k in zip(traffic, keep, strict=True) if k]
        start, end = start[keep], end[keep]
        requests = _column(rows, "requests")
        if rows:
            x = np.column_stack([start, end]).ravel()  # a step line: each bucket flat over its span
            y = np.repeat(requests, 2)
            figures.append(_figure("f-traffic", _panel("d-traffic", "Traffic", "requests per bucket", axis,
                                                       [_Line("requests", x, y, PALETTE[0], area=True)])))
            lat = {k: _column(rows, k) for k in ("latency_p50_ms", "latency_p99_ms")}
            if any(np.isfinite(v).any() for v in lat.values()):
                mid = (start + end) / 2
                lines = [_Line(name, mid, lat[key], colour) for name, key, colour in
                         (("p50", "latency_p50_ms", PALETTE[2]), ("p99", "latency_p99_ms", PALETTE[3]))
                         if np.isfinite(lat[key]).any()]
                figures.append(_figure("f-latency", _panel("d-latency", "Latency", "ms", axis, lines)))
            return figures
    if windows:
        _, x, _, _ = _window_x(windows)
        n = _column(windows, "n")
        figures.append(_figure("f-traffic", _panel("d-traffic", "Rows per window", "rows", axis,
                                                   [_Line("rows", x, n, PALETTE[0])]),
                               "The snapshot has no traffic buckets: rows each window holds."))
    return figures


def _accuracy_figure(snapshot: Mapping[str, Any], windows: list[Mapping[str, Any]], axis: _Axis
                     ) -> dict[str, Any] | None:
    _, x, _, _ = _window_x(windows)
    lines = []
    for i, (label, key) in enumerate((("estimated (ATC)", "estimated_accuracy"), ("estimated (DoC)", "doc_accuracy"),
                                      ("realized (labelled)", "realized_accuracy"))):
        parsed = [_estimate(w.get(key)) for w in windows]
        if not any(p[0] is not None for p in parsed):
            continue
        value, low, high = (np.array([np.nan if v is None else v for v in column], dtype=float)
                            for column in zip(*parsed, strict=True))
        has_ci = bool(np.isfinite(low).any() and np.isfinite(high).any())
        known = np.isfinite(value)  # joined across windows without an estimate (labels arrive for some only)
        lines.append(_Line(label, x[known], value[known], PALETTE[i], low[known] if has_ci else None,
                           high[known] if has_ci else None))
    if not lines:
        return None
    reference = _num(_map(snapshot.get("reference")).get("accuracy"))
    if reference is not None:
        lines.append(_Line("reference accuracy", np.array([axis.lo, axis.hi]), np.array([reference] * 2), REFERENCE,
                           dashed=True))
    svg = _panel("d-accuracy", "Accuracy: estimated without labels vs realized", "accuracy", axis, lines)
    return _figure("f-accuracy", svg, "Bands: confidence intervals the monitor computed for each window.")


def _ood_figure(windows: list[Mapping[str, Any]], axis: _Axis) -> dict[str, Any] | None:
    _, x, _, _ = _window_x(windows)
    parsed = [_estimate(w.get("ood_rate")) for w in windows]
    if not any(p[0] is not None for p in parsed):
        return None
    value, low, high = (np.array([np.nan if v is None else v for v in column], dtype=float)
                        for column in zip(*parsed, strict=True))
    has_ci = bool(np.isfinite(low).any() and np.isfinite(high).any())
    thresholds = {t for w in windows if (t := _num(_map(w.get("ood_rate")).get("threshold"))) is not None}
    caption = ("Share of rows the evaluated OOD detector flags at its threshold "
               + ", ".join(format_number(t) for t in sorted(thresholds)) + "." if thresholds else "")
    svg = _panel("d-ood", "OOD rate", "share of rows", axis,
                 [_Line("OOD rate", x, value, PALETTE[4], low if has_ci else None, high if has_ci else None)])
    return _figure("f-ood", svg, caption)


@dataclass
class _TestSeries:
    """One drift test over the plotted windows: statistic, threshold and BH-adjusted p-value (NaN where a
    window lacks them), alarm flags, the latest method and the tooltips of its alarms."""

    name: str
    statistic: np.ndarray
    threshold: np.ndarray
    p_adjusted: np.ndarray
    alarm: np.ndarray
    method: str = ""
    tips: dict[int, str] = field(default_factory=dict)

    def plotted(self, fdr: float | None) -> tuple[str, np.ndarray, np.ndarray | None]:
        """(y label, values, threshold) to draw: the statistic against its calibrated threshold; for a test
        judged by its p-value (no threshold), -log10 of the adjusted p-value against -log10(FDR), where the
        Benjamini-Hochberg decision is made (above the line: an alarm)."""
        if np.isfinite(self.threshold).any():
            return "statistic", self.statistic, self.threshold
        if fdr is not None and 0 < fdr < 1 and np.isfinite(self.p_adjusted).any():
            with np.errstate(all="ignore"):
                logp = -np.log10(np.clip(self.p_adjusted, 1e-300, 1.0))
            return "−log10 adjusted p", logp, np.full(self.statistic.shape, -math.log10(fdr))
        return "statistic", self.statistic, None

    def worst_ratio(self, fdr: float | None) -> float:
        _, values, threshold = self.plotted(fdr)
        if threshold is None:
            return -math.inf
        with np.errstate(all="ignore"):
            ratio = values / threshold
        ratio = ratio[np.isfinite(ratio)]
        return float(ratio.max()) if ratio.size else -math.inf


def _test_series(windows: list[Mapping[str, Any]]) -> dict[str, _TestSeries]:
    """Each drift test's statistic, threshold, adjusted p-value and alarm per window (one pass over the tests,
    in lists: numpy item assignment would cost more than the rest of the page)."""
    n = len(windows)
    columns: dict[str, tuple[list[list[float]], list[bool], _TestSeries]] = {}
    keys = ("statistic", "threshold", "p_adjusted")
    for i, w in enumerate(windows):
        for test in _maps(w.get("tests")):
            name = _text(test.get("name"))
            column = columns.get(name)
            if column is None:
                column = columns[name] = ([[math.nan] * n for _ in keys], [False] * n,
                                          _TestSeries(name, np.empty(0), np.empty(0), np.empty(0), np.empty(0, bool)))
            values, alarms, s = column
            if values[0][i] == values[0][i] or alarms[i]:  # the same name twice in one window: the first counts
                continue
            numbers = [_num(test.get(key)) for key in keys]
            for row, number in zip(values, numbers, strict=True):
                row[i] = math.nan if number is None else number
            if test.get("method") is not None:
                s.method = str(test.get("method"))  # the latest (its wording may carry per-window details)
            if test.get("alarm") is True:  # a tooltip on alarm rings only (formatting every value is slow)
                alarms[i] = True
                statistic, threshold, p_adjusted = numbers
                s.tips[i] = (f"window {_text(w.get('index'))}: {name} = {format_number(statistic)}"
                             + (f" (threshold {format_number(threshold)})" if threshold is not None else "")
                             + (f", adjusted p {format_number(p_adjusted)}" if p_adjusted is not None else ""))
    for values, alarms, s in columns.values():
        s.statistic, s.threshold, s.p_adjusted = (np.array(v) for v in values)
        s.alarm = np.array(alarms, dtype=bool)
    return {name: column[2] for name, column in columns.items()}


def _test_figures(windows: list[Mapping[str, Any]], axis: _Axis, fdr: float | None
                  ) -> tuple[list[dict[str, Any]], int]:
    """One figure per drift test (those with alarms first, then the closest to their thresholds), at most
    :data:`MAX_TEST_PANELS`; and how many tests were left out."""
    _, x, _, _ = _window_x(windows)
    series = _test_series(windows)
    order = sorted(series.values(), key=lambda s: (-int(s.alarm.sum()), -s.worst_ratio(fdr), s.name))
    figures = []
    for k, s in enumerate(order[:MAX_TEST_PANELS]):
        ylabel, values, threshold = s.plotted(fdr)
        lines = [_Line("statistic" if ylabel == "statistic" else "adjusted p", x, values, PALETTE[0])]
        if threshold is not None:
            lines.append(_Line("threshold" if ylabel == "statistic" else "FDR level", x, threshold, REFERENCE,
                               dashed=True))
        marks = _Marks("alarm", x[s.alarm], values[s.alarm], [s.tips[int(i)] for i in np.flatnonzero(s.alarm)])
        title = f"{s.name} ({s.method})" if s.method else s.name
        svg = _panel(f"d-test-{k}", title, ylabel, axis, lines, marks=marks)
        figures.append({**_figure(f"f-test-{k}", svg), "name": s.name, "alarms": int(s.alarm.sum())})
    return figures, max(len(order) - MAX_TEST_PANELS, 0)


def _test_rows(window: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for test in _maps(window.get("tests")):
        numbers = {key: format_number(_num(test.get(key))) for key in ("statistic", "threshold", "p_value",
                                                                           "p_adjusted")}
        rows.append({"name": _text(test.get("name")), "method": _text(test.get("method")), **numbers,
                     "alarm": test.get("alarm") is True})
    return sorted(rows, key=lambda r: not r["alarm"])


def _alarms_of(window: Mapping[str, Any]) -> list[str]:
    """The window's alarm messages, plus any test marked ``alarm`` that no message names."""
    raw = window.get("alarms")
    alarms = [_text(a) for a in raw if a is not None] if isinstance(raw, list) else []
    alarms += [f"{_text(t.get('name'))}: {format_number(_num(t.get('statistic')))}" for t in _maps(window.get("tests"))
               if t.get("alarm") is True and not any(_text(t.get("name")) in a for a in alarms)]
    return alarms


def _alarm_rows(windows: list[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Windows with alarms, newest first, at most :data:`MAX_ROWS`; and how many more there are."""
    rows = [{"index": _text(w.get("index")), "start": _time(w.get("start")), "end": _time(w.get("end")),
             "alarms": alarms} for w in reversed(windows) if (alarms := _alarms_of(w))]
    return rows[:MAX_ROWS], max(len(rows) - MAX_ROWS, 0)


def _rollout_view(rollout: Any) -> dict[str, Any] | None:
    if not isinstance(rollout, Mapping):
        return None
    state = _text(rollout.get("state"))
    difference = _map(rollout.get("difference"))
    fraction = _num(rollout.get("fraction"))
    return {"state": state, "tone": _ROLLOUT_TONES.get(state, "info"), "challenger": _text(rollout.get("challenger")),
            "fraction": MISSING if fraction is None else f"{fraction:.1%}",
            "difference": _estimate_text(difference) if difference else MISSING,
            "difference_kind": _text(difference.get("kind")) if difference else "",
            "difference_n": format_number(difference.get("n")) if difference else MISSING,
            "decision": _text(rollout.get("decision"))}


def _window_name(window: Mapping[str, Any]) -> str:
    """``12``, or ``12, still open`` for the window being filled (the monitor evaluates it as it stands)."""
    return _text(window.get("index")) + (", still open" if window.get("open") is True else "")


def _status(windows: list[Mapping[str, Any]]) -> tuple[str, str]:
    """(tone, sentence) of the banner: the latest window decides, earlier alarms are mentioned."""
    if not windows:
        return "info", "No monitoring window yet: the monitor has not seen enough traffic."
    latest = windows[-1]
    index = _window_name(latest)
    alarms = _alarms_of(latest)
    if alarms:
        return "fail", f"ALARM: {len(alarms)} alarm{'s' if len(alarms) != 1 else ''} in the latest window ({index})."
    alarmed = sum(bool(_alarms_of(w)) for w in windows[:-1])
    before = f"; {alarmed} earlier window{'s' if alarmed != 1 else ''} had alarms" if alarmed else ""
    if latest.get("insufficient") is True:
        return "info", f"The latest window ({index}) has too little data to test{before}."
    return ("warn" if alarmed else "pass"), f"No alarm in the latest window ({index}){before}."


def _axis(snapshot: Mapping[str, Any], windows: list[Mapping[str, Any]]) -> _Axis:
    """The shared x axis: the windows' span (with the traffic buckets of the same period), or the traffic's
    span when there is no window yet."""
    kind, x, left, right = _window_x(windows)
    spans = [(_num(t.get("start")), _num(t.get("end"))) for t in _maps(snapshot.get("traffic"))]
    times = [v for pair in spans for v in pair if v is not None]
    if windows:
        lo, hi = float(np.nanmin(left)), float(np.nanmax(right))
        if kind == "time":
            lo, hi = min([lo, *(t for t in times if t >= lo - (hi - lo))]), max([hi, *(t for t in times
                                                                                       if t <= hi + (hi - lo))])
    elif times:
        kind, lo, hi = "time", min(times), max(times)
    else:
        lo, hi = 0.0, 1.0
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    insufficient = np.array([w.get("insufficient") is True for w in windows], dtype=bool)
    alarmed = [float(v) for v, w in zip(x, windows, strict=True) if _alarms_of(w)]
    return _Axis(kind, lo, hi, "time (UTC)" if kind == "time" else "window", _runs(insufficient, left, right),
                 alarmed)


def _context(snapshot: Mapping[str, Any], refresh_s: int | None) -> dict[str, Any]:
    every = _maps(snapshot.get("windows"))
    windows = every[-MAX_WINDOWS:]
    model, reference, window = (_map(snapshot.get(k)) for k in ("model", "reference", "window"))
    alarm_rows, alarm_more = _alarm_rows(every)
    axis = _axis(snapshot, windows)
    figures = _traffic_figure(snapshot, windows, axis)
    figures += [f for f in (_accuracy_figure(snapshot, windows, axis), _ood_figure(windows, axis)) if f is not None]
    test_figures, tests_left_out = _test_figures(windows, axis, _num(snapshot.get("fdr")))
    latest_tested = next((w for w in reversed(windows) if _maps(w.get("tests"))), None)
    tone, sentence = _status(every)
    schema = snapshot.get("schema")
    size = _num(window.get("size"))
    history = _maps(snapshot.get("alias_history"))
    events = _maps(snapshot.get("events"))
    latest = windows[-1] if windows else {}
    return {
        "refresh_s": refresh_s,
        "title": "Assay monitor",
        "model": {"name": _text(model.get("name")), "version": _text(model.get("version")),
                  "alias": _text(model.get("alias"))},
        "generated_at": _time(snapshot.get("generated_at")),
        "schema_note": None if schema == SNAPSHOT_SCHEMA else
        f"This page was drawn for {SNAPSHOT_SCHEMA}; the snapshot says {_text(schema)}: some fields may be missing.",
        "reference": {"source": _text(reference.get("source")), "sha256": short_hash(reference.get("sha256")),
                      "sha256_full": _text(reference.get("sha256")),
                      "accuracy": format_number(reference.get("accuracy")), "n": format_number(reference.get("n"))},
        "window": {"kind": _text(window.get("kind")),
                   "size": MISSING if size is None else (_duration(size) if window.get("kind") == "time"
                                                         else f"{size:g} rows")},
        "threshold_method": _text(snapshot.get("threshold_method")),
        "fdr": None if _num(snapshot.get("fdr")) is None else f"{_num(snapshot.get('fdr')):g}",
        "min_rows": None if _num(window.get("min")) is None else format_number(_num(window.get("min"))),
        "n_windows": len(every), "n_shown": len(windows),
        "n_insufficient": int(sum(w.get("insufficient") is True for w in every)),
        "tone": tone, "sentence": sentence,
        "latest": {"index": _window_name(latest), "n": format_number(_num(latest.get("n"))),
                   "estimated": _estimate_text(latest.get("estimated_accuracy")),
                   "doc": _estimate_text(latest.get("doc_accuracy")),
                   "realized": _estimate_text(latest.get("realized_accuracy")),
                   "n_labelled": format_number(_map(latest.get("realized_accuracy")).get("n_labelled")),
                   "label_delay": _duration(_num(_map(latest.get("realized_accuracy")).get("label_delay_s_median"))),
                   "ood": _estimate_text(latest.get("ood_rate"))} if windows else None,
        "alarms": alarm_rows, "alarms_more": alarm_more,
        "figures": figures,
        "test_figures": test_figures, "tests_left_out": tests_left_out,
        "tests": _test_rows(latest_tested) if latest_tested is not None else [],
        "tests_window": _text(latest_tested.get("index")) if latest_tested is not None else None,
        "rollout": _rollout_view(snapshot.get("rollout")),
        "alias_history": [{"time": _time(h.get("time")), "alias": _text(h.get("alias")),
                           "version": _text(h.get("version")), "action": _text(h.get("action")),
                           "actor": _text(h.get("actor"))} for h in reversed(history[-MAX_ROWS:])],
        "alias_more": max(len(history) - MAX_ROWS, 0),
        "events": [{"time": _time(e.get("time")), "kind": _text(e.get("kind")), "message": _text(e.get("message"))}
                   for e in reversed(events[-MAX_ROWS:])],
        "events_more": max(len(events) - MAX_ROWS, 0),
    }


def render_dashboard(snapshot: Mapping[str, Any], *, refresh_s: int | None = 10) -> str:
    """The monitoring dashboard of ``snapshot`` as one self-contained HTML page (see the module docstring);
    ``refresh_s``: the browser reloads the page every that many seconds (None: never)."""
    if not isinstance(snapshot, Mapping):
        raise TypeError(f"a monitor snapshot is a mapping, got {type(snapshot).__name__}")
    if refresh_s is not None and (isinstance(refresh_s, bool) or not isinstance(refresh_s, int) or refresh_s < 1):
        raise OptionError(f"refresh interval {refresh_s!r} is not a whole number of seconds >= 1",
                          where="refresh_s", fix="give e.g. 10, or None for a page that does not reload")
    with np.errstate(all="ignore"):
        context = _context(snapshot, refresh_s)
    return _environment().get_template("dashboard.html.j2").render(**context)


def write_dashboard(snapshot: Mapping[str, Any], path: str | Path, *, refresh_s: int | None = None) -> Path:
    """Write :func:`render_dashboard` to ``path`` atomically (``assay monitor --html``); the path."""
    return write_text_atomic(path, render_dashboard(snapshot, refresh_s=refresh_s))
