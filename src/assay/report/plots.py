"""Plot data (``Section.plots``) -> small, self-contained SVG markup, written directly (no plotting library).

Checks store *data*, not pictures; this module draws each plot by its ``kind``. The contract per kind:

    reliability  {"series": [{"label", "bins": [{"lower", "upper", "count", "mean_confidence", "accuracy"}]}]}
                 reliability diagram (Guo et al. 2017, Fig. 1): accuracy per confidence bin, the diagonal,
                 the gap to the mean confidence shaded, and bin counts below; one panel per series.
    histogram    {"edges": [...], "series": [{"label", "counts": [...]}], "xlabel", "ylabel", "yscale"?}
                 overlaid step histograms; the y axis turns logarithmic when non-zero counts span more
                 than two decades (unless "yscale" is given: "linear" or "log").
    bars         {"categories": [...], "series": [{"label", "values", "ci_low"?, "ci_high"?}], "ylabel", "xlabel"?,
                  "muted"?: [bool per category] (drawn faint and hatched, e.g. slices too small to test),
                  "center_zero"?: true (deltas: symmetric y axis around a zero line)}
                 grouped bars with CI error bars; beyond 120 bars, a step profile with the categories
                 sorted by the first series (weakest left) and its CI band.
    heatmap      {"rows", "cols", "values": [[...]], "xlabel", "ylabel", "normalize"?: "row" | "col"}
                 e.g. a confusion matrix, in matplotlib's "Blues" colours with a colour bar; up to 20 x 20
                 one rectangle per cell with its number, beyond that one embedded PNG pixel per cell;
                 above 200 rows or columns the matrix is shrunk by block maxima so the page stays small.
    line         {"series": [{"label", "x", "y", "y_low"?, "y_high"?}], "xlabel", "ylabel",
                  "xscale"?: "linear" | "log" | "symlog" | "logit"}
    images       see ``assay.report.thumbnails`` (rows of small embedded PNGs with captions)
    scatter      {"series": [{"label", "x", "y", "text"?}], "xlabel", "ylabel", "front"?: [indices]}
                 ``front`` indexes the points of all series concatenated in order (so, with one series,
                 that series' points); the front is drawn as a highlighted step line (Pareto front).
                 Each ``text`` labels its point, placed where it overlaps no other label, point or the legend
                 (a point whose label finds no such spot keeps it as a tooltip).

Every kind takes an optional ``title``. The SVG has no XML header, DOCTYPE, scripts or external
references; its text is text (escaped here); its ids start with a prefix derived from the plot's content
(several plots inline in one page never clash): ``{gid}-bar-{series}-{category}`` (bars),
``{gid}-err-{series}`` (error bars), ``{gid}-series-{i}`` and ``{gid}-band-{i}`` (lines, histograms,
scatter), ``{gid}-front``, ``{gid}-cells`` / ``{gid}-image`` (heatmaps). The drawing layer is
``assay.report.svg``; matplotlib is not used, so drawing the demo's plots takes milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from assay.report.svg import (
    AXIS,
    FONT,
    LEGEND_FONT,
    PAD,
    SCALES,
    TICK,
    TITLE_FONT,
    Axes,
    Canvas,
    LegendEntry,
    Scale,
    Ticks,
    auto_limits,
    blues,
    esc,
    hex_colour,
    legend_items,
    legend_size,
    linear_ticks,
    num,
    png_data_uri,
    polyline_d,
    sample_rect,
    sample_segments,
    shorten,
    text_width,
    wrap,
)

__all__ = ["PLOT_KINDS", "PlotDataError", "UnsupportedPlotError", "render_plot"]

#: Okabe & Ito (2008) colour-blind-safe palette.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
GAP_COLOUR = "#D55E00"
MUTED = "#6b7280"
COUNT_COLOUR = "#9ca3af"

MAX_BARS = 120  # beyond this, bars become a sorted step profile (one path per series)
MAX_ANNOTATED_CELLS = 20  # heatmaps up to 20 x 20 get a rectangle and a number per cell
MAX_HEATMAP_SIDE = 200  # larger heatmaps are shrunk (block maxima) to at most this many rows/columns
MAX_TICK_LABELS = 30
MAX_LINE_POINTS = 2000
MAX_POINT_LABELS = 40

WIDTH = 640.0  # the figure's width in SVG units; the page scales every figure to its box
HEIGHT = 400.0
MUTED_OPACITY = 0.35


class UnsupportedPlotError(ValueError):
    """The plot's ``kind`` is not one this version can draw (the report skips it with a note)."""


class PlotDataError(ValueError):
    """The plot data does not follow the contract of its kind."""


# ---------------------------------------------------------------------------------------------- helpers


def _floats(values: Any, name: str) -> np.ndarray:
    """A 1-D float array; ``None`` and infinities become NaN (missing: not drawn)."""
    if values is None or isinstance(values, (str, bytes)) or not isinstance(values, Sequence | np.ndarray):
        raise PlotDataError(f"'{name}' must be a list of numbers, got {type(values).__name__}")
    array = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    array[~np.isfinite(array)] = np.nan
    return array


def _require(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise PlotDataError(f"{where} needs '{key}'")
    return mapping[key]


def _series(plot: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    series = _require(plot, "series", f"a {plot.get('kind')} plot")
    if not isinstance(series, Sequence) or isinstance(series, str) or not series:
        raise PlotDataError("'series' must be a non-empty list")
    return list(series)


def _label(s: Mapping[str, Any], i: int) -> str:
    return str(s.get("label", f"series {i + 1}"))


def _short(label: Any, limit: int = 18) -> str:
    text = str(label)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _decimate(n: int, limit: int) -> np.ndarray:
    """Indices of at most ``limit`` evenly spaced points, first and last included."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(int))


def _category_ticks(labels: Sequence[Any]) -> tuple[Ticks, bool]:
    """Category ticks at 0..n-1: every label up to MAX_TICK_LABELS, else an evenly spaced dozen; and
    whether they must be turned 45 degrees to fit."""
    n = len(labels)
    positions = np.arange(n) if n <= MAX_TICK_LABELS else _decimate(n, 12)
    texts = [_short(labels[int(i)]) for i in positions]
    rotate = sum(len(t) for t in texts) > 60 or any(len(t) > 12 for t in texts)
    return Ticks([float(p) for p in positions], texts), rotate


def _uses_log(counts: np.ndarray, requested: Any) -> bool:
    """Log y scale when asked, or when non-zero counts span more than two decades (else the rare bins vanish)."""
    positive = counts[np.isfinite(counts) & (counts > 0)]
    return requested == "log" or (requested is None and positive.size > 0 and positive.max() / positive.min() > 100)


class _Layout:
    """Margins of one axes in a figure, from the text around it (title, tick labels, axis labels)."""

    def __init__(self, *, title: list[str], yticks: Ticks, ylabel: str, xticks: Ticks, xrotate: bool,
                 xlabel: str, right: float = 16.0, title_size: float = TITLE_FONT) -> None:
        widest_y = max((text_width(t) for t in yticks.labels), default=0.0)
        self.left = 10 + (FONT * 1.3 if ylabel else 0) + widest_y + TICK + PAD
        if xrotate and xticks.labels:  # the first label, turned 45 degrees, reaches left of its tick
            self.left = max(self.left, text_width(xticks.labels[0]) * 0.71 + 8)
        self.top = (10 + len(title) * title_size * 1.2 + 4) if title else 14
        if xrotate:
            tick_h = max((text_width(t) for t in xticks.labels), default=0.0) * 0.72 + FONT
        else:
            tick_h = FONT * 1.1 if xticks.labels else 0.0
        self.tick_h = tick_h
        self.bottom = TICK + PAD + tick_h + (FONT * 1.5 if xlabel else 0) + 10
        last = text_width(xticks.labels[-1]) / 2 if xticks.labels and not xrotate else 0.0
        self.right = max(right, last + 6)

    def box(self, width: float, height: float) -> tuple[float, float, float, float]:
        return (self.left, self.top, width - self.left - self.right, height - self.top - self.bottom)

    def finish(self, ax: Axes, *, title: list[str], xlabel: str, ylabel: str) -> None:
        ax.title(title)
        ax.xlabel(xlabel, TICK + PAD + self.tick_h + FONT * 1.3)
        ax.ylabel(ylabel, 10 + FONT * 0.9)


def _xy_axes(plot: Mapping[str, Any], gid: str, xscale: Scale, yscale: Scale
             ) -> tuple[Canvas, Axes, Callable[[], None]]:
    """Canvas and gridded axes of an x-y plot (line, scatter), and the call that draws its ticks, title and
    axis labels (from ``plot``) once the data is drawn."""
    title = wrap(plot.get("title"), WIDTH - 80)
    xlabel, ylabel = str(plot.get("xlabel", "")), str(plot.get("ylabel", ""))
    xticks, yticks = xscale.ticks(WIDTH - 100, 80), yscale.ticks(HEIGHT - 100)
    layout = _Layout(title=title, yticks=yticks, ylabel=ylabel, xticks=xticks, xrotate=False, xlabel=xlabel)
    canvas = Canvas(WIDTH, HEIGHT, gid)
    ax = Axes(canvas, layout.box(WIDTH, HEIGHT), xscale, yscale)
    ax.grid(xticks, yticks)

    def finish() -> None:
        ax.xticks(xticks)
        ax.yticks(yticks)
        layout.finish(ax, title=title, xlabel=xlabel, ylabel=ylabel)

    return canvas, ax, finish

def _rect(x0: float, x1: float, y0: float, y1: float, attrs: str) -> str:
    x, w = min(x0, x1), abs(x1 - x0)
    y, h = min(y0, y1), abs(y1 - y0)
    return f'<rect x="{num(x)}" y="{num(y)}" width="{num(w)}" height="{num(h)}" {attrs}/>'


# ------------------------------------------------------------------------------------------ renderers


def _draw_reliability(plot: Mapping[str, Any], gid: str) -> Canvas:
    series = _series(plot)
    parsed = []
    for s in series:
        bins = _require(s, "bins", "a reliability series")
        if not isinstance(bins, Sequence) or not bins:
            raise PlotDataError("a reliability series needs a non-empty 'bins' list")
        parsed.append({key: _floats([_require(b, key, "a reliability bin") for b in bins], key)
                       for key in ("lower", "upper", "count", "mean_confidence", "accuracy")})
    ncols = min(len(series), 2)
    nrows = math.ceil(len(series) / ncols)
    panel_w, main_h, count_h = 310.0, 230.0, 70.0
    width = ncols * panel_w + 12
    title = wrap(plot.get("title"), width - 40)
    canvas = Canvas(width, 0, gid)
    gap_hatch = canvas.hatch("gap-hatch", GAP_COLOUR, 0.9)
    # One legend for all panels, in a row under the title: inside a panel it would cover bins.
    legend = [LegendEntry("perfect calibration", MUTED, kind="line", dashed=True),
              LegendEntry("accuracy", PALETTE[0]),
              LegendEntry("gap to mean confidence", GAP_COLOUR, opacity=0.3, hatch=gap_hatch)]
    legend_w, legend_h = legend_size(legend, LEGEND_FONT, horizontal=True)
    legend_top = canvas.centred_lines(title, 4) + 2
    items = legend_items(legend, (width - legend_w) / 2, legend_top, horizontal=True)
    canvas.add(f'<g class="legend">{"".join(items)}</g>')
    top0 = legend_top + legend_h
    row_h = 26 + main_h + 8 + count_h + TICK + PAD + FONT * 1.1 + FONT * 1.5 + 14
    canvas.height = top0 + nrows * row_h
    for k, (s, cols) in enumerate(zip(series, parsed, strict=True)):
        lower, upper, count = cols["lower"], cols["upper"], cols["count"]
        conf, acc = cols["mean_confidence"], cols["accuracy"]
        filled = (np.nan_to_num(count) > 0) & np.isfinite(acc) & np.isfinite(conf) & np.isfinite(lower) \
            & np.isfinite(upper)
        lo = float(np.nanmin(lower)) if np.isfinite(lower).any() else 0.0
        hi = float(np.nanmax(upper)) if np.isfinite(upper).any() else 1.0
        row, col = divmod(k, ncols)
        counts = np.nan_to_num(count)
        log = _uses_log(counts, None)
        shown = (counts > 0) & np.isfinite(lower) & np.isfinite(upper)
        count_top = float(counts.max()) if counts.size and counts.max() > 0 else 1.0
        count_scale = Scale("log", 0.5, 10 ** (math.log10(count_top) + 0.05 * (math.log10(count_top) + 0.302))) \
            if log else Scale("linear", 0.0, count_top * 1.05)
        count_ticks = count_scale.ticks(count_h, 28)
        if log:
            count_ticks = Ticks([v for v in count_ticks.major if v >= 1], [t for v, t in
                                zip(count_ticks.major, count_ticks.labels, strict=True) if v >= 1], count_ticks.minor)
        acc_ticks = linear_ticks(0.0, 1.0, 5)
        widest = max(text_width(t) for t in acc_ticks.labels + count_ticks.labels)
        left = col * panel_w + 10 + FONT * 1.3 + widest + TICK + PAD
        right = (col + 1) * panel_w - 14
        top = top0 + row * row_h + 26
        xs = Scale("linear", min(lo, 0.0), max(hi, 1.0))
        ax = Axes(canvas, (left, top, right - left, main_h), xs, Scale("linear", 0.0, 1.0), name=f"rel{k}")
        x_ticks = xs.ticks(right - left, 55)
        ax.grid(x_ticks, acc_ticks)
        x0, x1 = ax.x(lower[filled]), ax.x(upper[filled])
        y_acc, y_conf, y_zero = ax.y(acc[filled]), ax.y(conf[filled]), float(ax.y(0.0))
        bars, gaps = [], []
        for j in range(int(filled.sum())):
            bars.append(_rect(x0[j], x1[j], y_zero, y_acc[j], f'id="{gid}-bar-{k}-{j}"'))
            gaps.append(_rect(x0[j], x1[j], y_acc[j], y_conf[j], ""))
        diagonal = f'<path d="M{num(float(ax.x(0)))} {num(float(ax.y(0)))}L{num(float(ax.x(1)))} ' \
                   f'{num(float(ax.y(1)))}" stroke="{MUTED}" ' \
                   f'stroke-width="1.2" stroke-dasharray="5 3" fill="none"/>'
        ax.clipped(f'<g fill="{PALETTE[0]}" stroke="#ffffff" stroke-width="0.6">{"".join(bars)}</g>'
                   f'<g fill="{GAP_COLOUR}" fill-opacity="0.3" stroke="{GAP_COLOUR}" stroke-width="0.6">'
                   f'{"".join(gaps)}</g>'
                   f'<g fill="url(#{gap_hatch})">{"".join(gaps)}</g>{diagonal}')
        ax.spines()
        ax.xticks(x_ticks, labels=False)
        ax.yticks(acc_ticks)
        ax.ylabel("accuracy", col * panel_w + 10 + FONT * 0.9)
        ax.title([shorten(_label(s, k), panel_w - 16, FONT + 1)], size=FONT + 1)
        # counts below, sharing the x axis
        cax = Axes(canvas, (left, top + main_h + 8, right - left, count_h), Scale("linear", xs.lo, xs.hi),
                   count_scale, name=f"cnt{k}")
        cax.grid(x_ticks, count_ticks)
        base = float(cax.y(count_scale.lo if log else 0.0))
        c0, c1, cy = cax.x(lower[shown]), cax.x(upper[shown]), cax.y(counts[shown])
        cax.clipped(f'<g fill="{COUNT_COLOUR}" stroke="#ffffff" stroke-width="0.6">'
                    + "".join(_rect(c0[j], c1[j], base, cy[j], "") for j in range(int(shown.sum()))) + "</g>")
        cax.spines()
        cax.xticks(x_ticks)
        cax.yticks(count_ticks)
        cax.xlabel("confidence", TICK + PAD + FONT * 1.1 + FONT * 1.3)
        cax.ylabel("count (log)" if log else "count", col * panel_w + 10 + FONT * 0.9)
    return canvas


def _draw_histogram(plot: Mapping[str, Any], gid: str) -> Canvas:
    edges = _floats(_require(plot, "edges", "a histogram"), "edges")
    series = _series(plot)
    overlaid = len(series) > 1
    all_counts = []
    for s in series:
        counts = np.nan_to_num(_floats(_require(s, "counts", "a histogram series"), "counts"))
        if len(counts) != len(edges) - 1:
            raise PlotDataError(f"histogram series has {len(counts)} counts for {len(edges)} edges "
                                "(need one count fewer than edges)")
        all_counts.append(counts)
    if len(edges) < 2 or not np.isfinite(edges).all():
        raise PlotDataError("histogram 'edges' must be at least two finite numbers")
    stacked = np.concatenate(all_counts)
    log = _uses_log(stacked, plot.get("yscale"))
    floor = 0.5 if log else 0.0  # a log axis has no zero: bars start just below a count of 1
    top = float(stacked.max()) if stacked.size and stacked.max() > floor else 1.0
    yscale = Scale("log", floor, 10 ** (math.log10(top) + 0.05 * (math.log10(top) - math.log10(floor)))) if log \
        else Scale("linear", 0.0, top * 1.05)
    xscale = Scale("linear", *auto_limits([edges]))
    ylabel = str(plot.get("ylabel", "count"))
    ylabel = f"{ylabel} (log scale)" if log else ylabel
    xlabel = str(plot.get("xlabel", ""))
    title = wrap(plot.get("title"), WIDTH - 80)
    yticks = yscale.ticks(HEIGHT - 100)
    xticks = xscale.ticks(WIDTH - 100, 80)
    layout = _Layout(title=title, yticks=yticks, ylabel=ylabel, xticks=xticks, xrotate=False, xlabel=xlabel)
    canvas = Canvas(WIDTH, HEIGHT, gid)
    ax = Axes(canvas, layout.box(WIDTH, HEIGHT), xscale, yscale)
    ax.grid(xticks, yticks)
    px_edges = ax.x(edges)
    y_base = float(ax.y(floor))
    paths = []
    for i, (s, counts) in enumerate(zip(series, all_counts, strict=True)):
        colour = _colour(i)
        shown = np.where(counts > 0, counts, floor) if log else counts
        py = ax.y(shown)
        xs = np.repeat(px_edges, 2)
        ys = np.concatenate([[y_base], np.repeat(py, 2), [y_base]])
        opacity = 0.35 if overlaid else 0.8
        stroke = f' stroke="{colour}" stroke-width="1.2"' if overlaid else ""
        paths.append(f'<path id="{gid}-series-{i}" d="{polyline_d(xs, ys, close=True)}" fill="{colour}" '
                     f'fill-opacity="{opacity:g}"{stroke}/>')
        for j in range(len(counts)):
            ax.obstacles.append(sample_rect(px_edges[j], min(py[j], y_base), px_edges[j + 1] - px_edges[j],
                                            abs(y_base - py[j])))
        ax.legend_entries.append(LegendEntry(_label(s, i), colour, opacity=opacity))
    ax.clipped("".join(paths))
    ax.spines()
    ax.xticks(xticks)
    ax.yticks(yticks)
    layout.finish(ax, title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend("best")
    return canvas


def _bar_limits(plot: Mapping[str, Any], values: list[np.ndarray], bounds: list[tuple[np.ndarray, np.ndarray]]
                ) -> tuple[float, float]:
    stacked = np.concatenate(values)
    finite = stacked[np.isfinite(stacked)]
    reach = np.concatenate([np.concatenate([lo, hi]) for lo, hi in bounds] + [finite])
    reach = reach[np.isfinite(reach)]
    if plot.get("center_zero"):
        # Deltas: a symmetric axis around 0 that shows every bar and error bar.
        extent = max(float(np.abs(reach).max()) if reach.size else 0.0, 0.01)
        return -1.15 * extent, 1.15 * extent
    if finite.size and finite.min() >= 0:
        top = float(reach.max()) if reach.size else 1.0
        return 0.0, 1.05 if finite.max() <= 1 else (top * 1.05 if top > 0 else 1.0)
    return auto_limits([reach, [0.0]])


def _draw_bars(plot: Mapping[str, Any], gid: str) -> Canvas:
    categories = list(_require(plot, "categories", "a bars plot"))
    if not categories:
        raise PlotDataError("a bars plot needs at least one category")
    series = _series(plot)
    n_cat, n_series = len(categories), len(series)
    values, bounds, has_ci = [], [], []
    for s in series:
        v = _floats(_require(s, "values", "a bars series"), "values")
        if len(v) != n_cat:
            raise PlotDataError(f"bars series '{s.get('label')}' has {len(v)} values for {n_cat} categories")
        values.append(v)
        if s.get("ci_low") is not None and s.get("ci_high") is not None:
            low, high = _floats(s["ci_low"], "ci_low"), _floats(s["ci_high"], "ci_high")
            if len(low) != n_cat or len(high) != n_cat:
                raise PlotDataError("'ci_low' and 'ci_high' must have one entry per category")
            # A percentile interval may (rarely) exclude the point estimate; clip so error bars stay drawable.
            bounds.append((np.fmin(low, v), np.fmax(high, v)))
            has_ci.append(True)
        else:
            bounds.append((np.full(n_cat, np.nan), np.full(n_cat, np.nan)))
            has_ci.append(False)
    muted = [bool(m) for m in plot.get("muted") or [False] * n_cat]
    if len(muted) != n_cat:
        raise PlotDataError(f"bars 'muted' has {len(muted)} entries for {n_cat} categories")
    grouped = n_cat * n_series <= MAX_BARS
    labels = [_label(s, i) for i, s in enumerate(series)]
    xlabel = str(plot.get("xlabel", ""))
    ylabel = str(plot.get("ylabel", ""))
    order = np.arange(n_cat)
    if not grouped:
        # Too many bars to read (or to store): categories sorted by the first series, one step line per
        # series with its CI band -- the shape of the distribution, with the weakest categories on the left.
        order = np.argsort(np.where(np.isfinite(values[0]), values[0], np.inf), kind="stable")
        xlabel = f"{xlabel or 'category'} ({n_cat}, sorted by {labels[0]})"
    entries = [LegendEntry(label, _colour(i), kind="patch" if grouped else "line") for i, label in enumerate(labels)]
    legend_w = legend_size(entries)[0] + 14 if n_series > 1 else 0.0
    width = min(max(WIDTH, 18 * n_cat * n_series + 200 + legend_w), 960.0) if grouped else 800.0
    y_lo, y_hi = _bar_limits(plot, values, bounds)
    yscale = Scale("linear", y_lo, y_hi)
    half = 0.4 if grouped else 0.5
    span = (n_cat - 1) + 2 * half
    xscale = Scale("linear", -half - 0.05 * span, n_cat - 1 + half + 0.05 * span)
    xticks, rotate = _category_ticks([categories[int(k)] for k in order])
    yticks = yscale.ticks(HEIGHT - 110)
    title = wrap(plot.get("title"), width - 60 - legend_w)
    layout = _Layout(title=title, yticks=yticks, ylabel=ylabel, xticks=xticks, xrotate=rotate, xlabel=xlabel,
                     right=16 + legend_w)
    height = HEIGHT + (layout.tick_h - FONT * 1.1 if rotate else 0)
    canvas = Canvas(width, height, gid)
    ax = Axes(canvas, layout.box(width, height), xscale, yscale)
    ax.grid(None, yticks)
    y_zero = float(ax.y(0.0))
    parts = []
    if grouped:
        bar_w = 0.8 / n_series
        hatch = canvas.hatch("hatch", AXIS, 0.7) if any(muted) else None
        for i in range(n_series):
            offset = (i - (n_series - 1) / 2) * bar_w
            x0 = ax.x(np.arange(n_cat) + offset - bar_w / 2)
            x1 = ax.x(np.arange(n_cat) + offset + bar_w / 2)
            y_val = ax.y(np.nan_to_num(values[i]))
            rects, overlays = [], []
            for j in range(n_cat):
                faint = f' opacity="{MUTED_OPACITY:g}"' if muted[j] else ""
                rects.append(_rect(x0[j], x1[j], y_zero, y_val[j], f'id="{gid}-bar-{i}-{j}"{faint}'))
                if muted[j]:
                    overlays.append(_rect(x0[j], x1[j], y_zero, y_val[j], f'fill="url(#{hatch})"'))
            parts.append(f'<g fill="{_colour(i)}">{"".join(rects)}</g>{"".join(overlays)}')
            if has_ci[i]:
                low, high = bounds[i]
                centre = (x0 + x1) / 2
                ok = np.isfinite(low) & np.isfinite(high) & np.isfinite(values[i])
                y_low, y_high = ax.y(low), ax.y(high)
                whiskers = "".join(f"M{num(centre[j])} {num(y_low[j])}V{num(y_high[j])}" for j in np.flatnonzero(ok))
                cap = min(4.0, (x1[0] - x0[0]) * 0.3) if n_cat <= 30 else 0.0
                caps = "".join(f"M{num(centre[j] - cap)} {num(y)}h{num(2 * cap)}" for j in np.flatnonzero(ok)
                               for y in (y_low[j], y_high[j])) if cap else ""
                parts.append(f'<g id="{gid}-err-{i}" stroke="{AXIS}" stroke-width="1.1" fill="none">'
                             f'<path d="{whiskers}"/>' + (f'<path d="{caps}"/>' if caps else "") + "</g>")
    else:
        x = np.arange(n_cat, dtype=float)
        step_x = np.column_stack([x - 0.5, x + 0.5]).ravel()
        low0, high0 = bounds[0]
        if has_ci[0]:
            up = ax.y(np.repeat(high0[order], 2))
            down = ax.y(np.repeat(low0[order], 2))
            px = ax.x(step_x)
            band = polyline_d(np.concatenate([px, px[::-1]]), np.concatenate([up, down[::-1]]), close=True)
            parts.append(f'<path id="{gid}-band-0" d="{band}" fill="{_colour(0)}" fill-opacity="0.2"/>')
        for i in range(n_series):
            py = ax.y(np.repeat(values[i][order], 2))
            style = 'stroke-width="1.6"' if i == 0 else 'stroke-width="1" stroke-opacity="0.7"'
            parts.append(f'<path id="{gid}-series-{i}" d="{polyline_d(ax.x(step_x), py)}" stroke="{_colour(i)}" '
                         f'{style} fill="none"/>')
    if plot.get("center_zero"):
        parts.append(f'<path d="M{num(ax.left)} {num(y_zero)}H{num(ax.right)}" stroke="{AXIS}" stroke-width="0.8"/>')
    ax.clipped("".join(parts))
    ax.spines()
    ax.xticks(xticks, rotate=rotate)
    ax.yticks(yticks)
    layout.finish(ax, title=title, xlabel=xlabel, ylabel=ylabel)
    if n_series > 1:
        ax.legend_entries = entries
        ax.legend("outside")
    return canvas


def _block_max(matrix: np.ndarray, factor: int) -> np.ndarray:
    """Maximum over ``factor x factor`` blocks (NaN-padded at the ragged edge).

    The maximum, not the mean, so that one strong cell (a diagonal entry, a heavy confusion) stays visible
    after shrinking a 1000 x 1000 confusion matrix.
    """
    rows, cols = matrix.shape
    padded = np.pad(matrix, ((0, -rows % factor), (0, -cols % factor)), constant_values=np.nan)
    blocks = padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks
        return np.nanmax(blocks, axis=(1, 3))


def _draw_heatmap(plot: Mapping[str, Any], gid: str) -> Canvas:
    rows = list(_require(plot, "rows", "a heatmap"))
    cols = list(_require(plot, "cols", "a heatmap"))
    raw = _require(plot, "values", "a heatmap")
    values = np.array([[np.nan if v is None else float(v) for v in row] for row in raw], dtype=float)
    if values.size == 0 and len(rows) * len(cols) == 0:
        values = values.reshape(len(rows), len(cols))
    if values.shape != (len(rows), len(cols)):
        raise PlotDataError(f"heatmap values have shape {values.shape}, expected ({len(rows)}, {len(cols)}) "
                            "from 'rows' and 'cols'")
    if not rows or not cols:
        raise PlotDataError("a heatmap needs at least one row and one column")
    normalize = plot.get("normalize")
    shown = values
    if normalize in ("row", "col"):
        axis = 1 if normalize == "row" else 0
        totals = np.nansum(values, axis=axis, keepdims=True)
        shown = np.where(totals > 0, values / np.where(totals > 0, totals, 1), 0.0)
    elif normalize is not None:
        raise PlotDataError(f"heatmap 'normalize' must be 'row', 'col' or absent, got {normalize!r}")
    n_rows, n_cols = shown.shape
    side = max(n_rows, n_cols, 1)
    factor = math.ceil(side / MAX_HEATMAP_SIDE)
    image = _block_max(shown, factor) if factor > 1 else shown
    finite = image[np.isfinite(image)]
    vmax = 1.0 if normalize else (float(finite.max()) if finite.size else 1.0)
    vmin = 0.0 if normalize or not finite.size or finite.min() >= 0 else float(finite.min())
    if vmax <= vmin:
        vmax = vmin + 1.0
    bar_label = {"row": "fraction of row", "col": "fraction of column"}.get(str(normalize), "")
    bar_ticks = linear_ticks(vmin, vmax, 5)
    xlabel, ylabel = str(plot.get("xlabel", "")), str(plot.get("ylabel", ""))
    title = wrap(plot.get("title"), WIDTH - 160)
    if factor > 1:
        title.append(f"(maximum over blocks of {factor}\u00d7{factor} cells)")
    xticks, rotate = _category_ticks(cols)
    yticks, _ = _category_ticks(rows)
    bar_right = 14 + 6 + TICK + PAD + max(text_width(t) for t in bar_ticks.labels) + (FONT * 1.6 if bar_label else 0)
    layout = _Layout(title=title, yticks=yticks, ylabel=ylabel, xticks=xticks, xrotate=rotate, xlabel=xlabel,
                     right=bar_right + 12)
    area_w = WIDTH - layout.left - layout.right
    area_h = min(max(area_w * n_rows / n_cols, 200.0), 560.0)
    height = layout.top + area_h + layout.bottom
    canvas = Canvas(WIDTH, height, gid)
    ax = Axes(canvas, (layout.left, layout.top, area_w, area_h), Scale("linear", -0.5, n_cols - 0.5),
              Scale("linear", n_rows - 0.5, -0.5))
    colours = blues((image - vmin) / (vmax - vmin))
    if n_rows <= MAX_ANNOTATED_CELLS and n_cols <= MAX_ANNOTATED_CELLS:
        integral = normalize is None and bool(np.all(np.isnan(values) | (values == np.round(values))))
        size = 12.0 if side <= 10 else 9.0
        cells, texts = [], []
        xs, ys = ax.x(np.arange(n_cols + 1) - 0.5), ax.y(np.arange(n_rows + 1) - 0.5)
        for r in range(n_rows):
            for c in range(n_cols):
                v = shown[r, c]
                if not np.isfinite(v):
                    continue  # missing: left blank, as matplotlib leaves NaN cells transparent
                cells.append(_rect(xs[c], xs[c + 1], ys[r], ys[r + 1], f'fill="{hex_colour(colours[r, c])}"'))
                if values[r, c] == 0:  # blank zeros keep the eye on the errors
                    continue
                text = f"{int(v)}" if integral else (f"{v:.2f}" if normalize else f"{v:.3g}")
                dark = (v - vmin) / (vmax - vmin) > 0.6
                fill = ' fill="#ffffff"' if dark else ""
                cx, cy = (xs[c] + xs[c + 1]) / 2, (ys[r] + ys[r + 1]) / 2 + size * 0.35
                texts.append(f'<text x="{num(cx)}" y="{num(cy)}"{fill}>{esc(text)}</text>')
        canvas.add(f'<g id="{gid}-cells">{"".join(cells)}</g>'
                   f'<g text-anchor="middle" font-size="{num(size)}" fill="#111827">{"".join(texts)}</g>')
    else:
        rgba = np.zeros(image.shape + (4,), dtype=np.uint8)
        rgba[..., :3] = np.round(colours * 255).astype(np.uint8)
        rgba[..., 3] = np.where(np.isfinite(image), 255, 0)
        canvas.add(f'<image id="{gid}-image" x="{num(ax.left)}" y="{num(ax.top)}" width="{num(area_w)}" '
                   f'height="{num(area_h)}" preserveAspectRatio="none" style="image-rendering: pixelated" '
                   f'href="{png_data_uri(rgba)}"/>')
    ax.xticks(xticks, rotate=rotate)
    ax.yticks(yticks)
    layout.finish(ax, title=title, xlabel=xlabel, ylabel=ylabel)
    # colour bar: the Blues anchors as gradient stops (the colour map is linear between them)
    bx = ax.right + 14
    stops = "".join(f'<stop offset="{k / 8:g}" stop-color="{hex_colour(blues(k / 8))}"/>' for k in range(9))
    canvas.defs[f"{gid}-cmap"] = (f'<linearGradient id="{gid}-cmap" x1="0" y1="1" x2="0" y2="0">{stops}'
                                  "</linearGradient>")
    canvas.add(f'<rect x="{num(bx)}" y="{num(ax.top)}" width="14" height="{num(area_h)}" fill="url(#{gid}-cmap)" '
               f'stroke="{AXIS}" stroke-width="0.6"/>')
    bar_axis = Scale("linear", vmin, vmax).place(ax.bottom, ax.top)
    marks = []
    for value, label in zip(bar_ticks.major, bar_ticks.labels, strict=True):
        py = float(bar_axis(value))
        marks.append(f"M{num(bx + 14)} {num(py)}h{num(TICK)}")
        canvas.text(bx + 14 + TICK + PAD, py + FONT * 0.35, label)
    canvas.add(f'<path d="{"".join(marks)}" stroke="{AXIS}" stroke-width="0.8"/>')
    if bar_label:
        canvas.text(WIDTH - 10, (ax.top + ax.bottom) / 2, bar_label, anchor="middle", rotate=-90)
    return canvas


def _axis_scale(plot: Mapping[str, Any], key: str, kind: str) -> str:
    scale = plot.get(key) or "linear"
    if scale not in SCALES:
        raise PlotDataError(f"{kind} '{key}' must be linear, log, symlog or logit, got {scale!r}")
    return str(scale)


def _draw_line(plot: Mapping[str, Any], gid: str) -> Canvas:
    series = _series(plot)
    xscale_kind = _axis_scale(plot, "xscale", "line")
    parsed = []
    for s in series:
        x = _floats(_require(s, "x", "a line series"), "x")
        y = _floats(_require(s, "y", "a line series"), "y")
        if len(x) != len(y):
            raise PlotDataError(f"line series '{s.get('label')}' has {len(x)} x and {len(y)} y values")
        band = None
        if s.get("y_low") is not None and s.get("y_high") is not None:
            low, high = _floats(s["y_low"], "y_low"), _floats(s["y_high"], "y_high")
            if len(low) != len(x) or len(high) != len(x):
                raise PlotDataError("'y_low' and 'y_high' must have one entry per x")
            band = (low, high)
        keep = _decimate(len(x), MAX_LINE_POINTS)
        parsed.append((x[keep], y[keep], None if band is None else (band[0][keep], band[1][keep]), len(x) <= 25))
    xscale = Scale(xscale_kind, *auto_limits([p[0] for p in parsed], xscale_kind))
    yscale = Scale("linear", *auto_limits([p[1] for p in parsed] + [b for p in parsed if p[2] for b in p[2]]))
    canvas, ax, finish_axes = _xy_axes(plot, gid, xscale, yscale)
    bands, lines, markers = [], [], []
    for i, (x, y, band, marked) in enumerate(parsed):
        colour = _colour(i)
        px, py = ax.x(x), ax.y(y)
        if band is not None:
            up, down = ax.y(band[1]), ax.y(band[0])
            ok = np.isfinite(px) & np.isfinite(up) & np.isfinite(down)
            d = polyline_d(np.concatenate([px[ok], px[ok][::-1]]), np.concatenate([up[ok], down[ok][::-1]]), close=True)
            bands.append(f'<path id="{gid}-band-{i}" d="{d}" fill="{colour}" fill-opacity="0.2"/>')
            ax.obstacles.append(sample_segments(px[ok], up[ok]))
            ax.obstacles.append(sample_segments(px[ok], down[ok]))
        lines.append(f'<path id="{gid}-series-{i}" d="{polyline_d(px, py)}" stroke="{colour}" stroke-width="1.8" '
                     'fill="none"/>')
        if marked:
            ok = np.isfinite(px) & np.isfinite(py)
            markers.append(f'<g id="{gid}-markers-{i}" fill="{colour}">' + "".join(
                f'<circle cx="{num(a)}" cy="{num(b)}" r="3.5"/>' for a, b in zip(px[ok], py[ok], strict=True)) + "</g>")
        ax.obstacles.append(sample_segments(px, py))
        ax.legend_entries.append(LegendEntry(_label(series[i], i), colour, kind="line", marker=marked))
    ax.clipped("".join(bands) + "".join(lines) + "".join(markers))
    ax.spines()
    finish_axes()
    ax.legend("best")
    return canvas


def _draw_scatter(plot: Mapping[str, Any], gid: str) -> Canvas:
    series = _series(plot)
    xs, ys = [], []
    for s in series:
        x = _floats(_require(s, "x", "a scatter series"), "x")
        y = _floats(_require(s, "y", "a scatter series"), "y")
        if len(x) != len(y):
            raise PlotDataError(f"scatter series '{s.get('label')}' has {len(x)} x and {len(y)} y values")
        xs.append(x)
        ys.append(y)
    all_x, all_y = np.concatenate(xs), np.concatenate(ys)
    front = plot.get("front")
    order = None
    if front:
        idx = np.asarray(front, dtype=int)
        if idx.min() < 0 or idx.max() >= len(all_x):
            raise PlotDataError(f"scatter 'front' indexes {len(all_x)} points but contains {idx.max()}")
        order = idx[np.argsort(all_x[idx], kind="stable")]
    xscale = Scale("linear", *auto_limits([all_x]))
    yscale = Scale("linear", *auto_limits([all_y]))
    canvas, ax, finish_axes = _xy_axes(plot, gid, xscale, yscale)
    labelled = sum(len(s.get("text") or []) for s in series) <= MAX_POINT_LABELS
    points: list[str] = []
    label_x: list[float] = []
    label_y: list[float] = []
    label_text: list[str] = []
    for i, (s, x, y) in enumerate(zip(series, xs, ys, strict=True)):
        px, py = ax.x(x), ax.y(y)
        ok = np.isfinite(px) & np.isfinite(py)
        texts = list(s.get("text") or [])
        tips = [f"<title>{esc(texts[j])}</title>" if j < len(texts) else "" for j in range(len(px))]
        points.append(f'<g id="{gid}-series-{i}" fill="{_colour(i)}" fill-opacity="0.85">' + "".join(
            f'<circle cx="{num(px[j])}" cy="{num(py[j])}" r="4">{tips[j]}</circle>' if tips[j] else
            f'<circle cx="{num(px[j])}" cy="{num(py[j])}" r="4"/>' for j in np.flatnonzero(ok)) + "</g>")
        ax.obstacles.append(np.column_stack([px[ok], py[ok]]))
        ax.legend_entries.append(LegendEntry(_label(s, i), _colour(i), kind="marker", opacity=0.85))
        if texts and labelled:
            for a, b, t in zip(px, py, texts, strict=False):
                label_x.append(float(a))
                label_y.append(float(b))
                label_text.append(_short(t, 24))
    front_markup = ""
    if order is not None:
        fx, fy = ax.x(all_x[order]), ax.y(all_y[order])
        step_x = np.repeat(fx, 2)[1:]
        step_y = np.repeat(fy, 2)[:-1]
        circles = "".join(f'<circle cx="{num(a)}" cy="{num(b)}" r="6"/>' for a, b in zip(fx, fy, strict=True)
                          if np.isfinite(a) and np.isfinite(b))
        front_markup = (f'<g id="{gid}-front" stroke="#111827" stroke-width="1.2" fill="none">'
                        f'<path d="{polyline_d(step_x, step_y)}"/>{circles}</g>')
        ax.obstacles.append(sample_segments(step_x, step_y))
        ax.legend_entries.append(LegendEntry("front", "#111827", kind="line", marker=True, hollow=True))
    ax.clipped("".join(points) + front_markup)
    ax.spines()
    finish_axes()
    legend = ax.legend("best")
    if label_text:  # after the legend, so that labels keep clear of it
        canvas.add(ax.label_points(np.array(label_x), np.array(label_y), label_text, size=10.0,
                                   clearance=8.0 if order is not None else 6.0,
                                   avoid=[legend] if legend is not None else []))
    return canvas


_RENDERERS: dict[str, Callable[[Mapping[str, Any], str], Canvas]] = {
    "reliability": _draw_reliability,
    "histogram": _draw_histogram,
    "bars": _draw_bars,
    "heatmap": _draw_heatmap,
    "line": _draw_line,
    "scatter": _draw_scatter,
}

PLOT_KINDS: tuple[str, ...] = (*_RENDERERS, "images")


def _jsonable(value: Any) -> Any:
    """Arrays in full (``str`` would elide the middle of a big array, and two plots could share ids)."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def render_plot(plot: Mapping[str, Any]) -> str:
    """SVG markup (no XML header) drawing ``plot`` according to its ``kind``.

    Raises :class:`UnsupportedPlotError` for an unknown kind and :class:`PlotDataError` when the data does
    not follow the kind's contract (see the module docstring); renderers catch both and show a note.
    """
    if not isinstance(plot, Mapping):
        raise PlotDataError(f"plot data must be a mapping, got {type(plot).__name__}")
    kind = plot.get("kind")
    if kind == "images":  # thumbnails are embedded PNGs
        from assay.report.thumbnails import render_images

        return render_images(plot)
    draw = _RENDERERS.get(kind) if isinstance(kind, str) else None
    if draw is None:
        raise UnsupportedPlotError(f"unknown plot kind {kind!r}; this version draws {', '.join(PLOT_KINDS)}")
    digest = hashlib.sha256(json.dumps(plot, sort_keys=True, default=_jsonable).encode()).hexdigest()
    gid = f"p{digest[:10]}"
    try:
        with np.errstate(all="ignore"):  # NaN and overflow are handled where drawn (not drawn, or refused)
            canvas = draw(plot, gid)
    except (PlotDataError, UnsupportedPlotError):
        raise
    except (KeyError, TypeError, ValueError, IndexError, ArithmeticError) as exc:
        raise PlotDataError(f"{kind} plot data is malformed: {exc}") from exc
    return canvas.render(str(plot.get("title") or kind))
