"""Plot data (``Section.plots``) -> small, self-contained SVG markup, drawn with matplotlib.

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
                 e.g. a confusion matrix; cells are annotated up to 20 x 20; above 200 rows or columns
                 the matrix is shrunk by block maxima so the embedded image stays small.
    line         {"series": [{"label", "x", "y", "y_low"?, "y_high"?}], "xlabel", "ylabel", "xscale"?}
    images       see ``assay.report.thumbnails`` (rows of small embedded PNGs with captions)
    scatter      {"series": [{"label", "x", "y", "text"?}], "xlabel", "ylabel", "front"?: [indices]}
                 ``front`` indexes the points of all series concatenated in order (so, with one series,
                 that series' points); the front is drawn as a highlighted step line (Pareto front).

Every kind takes an optional ``title``. The SVG keeps text as text (``svg.fonttype = 'none'``: no embedded
glyphs), has no XML header, DOCTYPE or metadata, uses ids unique to the plot's content (several plots
inline in one HTML page never clash), and rounds path coordinates to 0.1 pt. Figures are built with
``matplotlib.figure.Figure`` directly, never through pyplot, so rendering is headless (no GUI backend is
ever selected) and leaves the caller's global matplotlib state alone.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import math
import re
import textwrap
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["PLOT_KINDS", "PlotDataError", "UnsupportedPlotError", "render_plot"]

#: Okabe & Ito (2008) colour-blind-safe palette.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
GAP_COLOUR = "#D55E00"
MUTED = "#6b7280"
FONT_STACK = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"

MAX_BARS = 120  # beyond this, bars become a sorted step profile (one path per series)
MAX_ANNOTATED_CELLS = 20  # heatmaps up to 20 x 20 get a number in every cell
MAX_HEATMAP_SIDE = 200  # larger heatmaps are shrunk (block maxima) to at most this many rows/columns
MAX_TICK_LABELS = 30
MAX_LINE_POINTS = 2000
MAX_POINT_LABELS = 40


class UnsupportedPlotError(ValueError):
    """The plot's ``kind`` is not one this version can draw (the report skips it with a note)."""


class PlotDataError(ValueError):
    """The plot data does not follow the contract of its kind."""


# ---------------------------------------------------------------------------------------------- helpers


def _floats(values: Any, name: str) -> np.ndarray:
    """A 1-D float array; ``None`` becomes NaN."""
    if values is None or isinstance(values, (str, bytes)) or not isinstance(values, Sequence | np.ndarray):
        raise PlotDataError(f"'{name}' must be a list of numbers, got {type(values).__name__}")
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def _require(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise PlotDataError(f"{where} needs '{key}'")
    return mapping[key]


def _series(plot: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    series = _require(plot, "series", f"a {plot.get('kind')} plot")
    if not isinstance(series, Sequence) or isinstance(series, str) or not series:
        raise PlotDataError("'series' must be a non-empty list")
    return list(series)


def _short(label: Any, limit: int = 18) -> str:
    text = str(label)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _wrap(title: Any, width: int = 70) -> str:
    return textwrap.fill(str(title), width) if title else ""


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _label_ticks(ax: Axes, axis: str, labels: Sequence[Any]) -> None:
    """Category tick labels: all of them up to MAX_TICK_LABELS, otherwise an evenly spaced subset."""
    n = len(labels)
    positions = np.arange(n) if n <= MAX_TICK_LABELS else _decimate(n, 12)
    texts = [_short(labels[int(i)]) for i in positions]
    if axis == "x":
        long = sum(len(t) for t in texts) > 60 or any(len(t) > 12 for t in texts)
        ax.set_xticks(positions, texts, rotation=45 if long else 0, ha="right" if long else "center",
                      rotation_mode="anchor")
    else:
        ax.set_yticks(positions, texts)


def _decimate(n: int, limit: int) -> np.ndarray:
    """Indices of at most ``limit`` evenly spaced points, first and last included."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(int))


def _legend(ax: Axes, n_series: int, outside: bool = False) -> None:
    if n_series > 1 or len(ax.get_legend_handles_labels()[1]) > 1:
        if outside:  # beside the axes: bars fill the whole plot area
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        else:
            ax.legend(loc="best")


def _maybe_log(ax: Axes, counts: np.ndarray, requested: Any) -> bool:
    """Log y scale when asked, or when non-zero counts span more than two decades (else the rare bins vanish)."""
    positive = counts[np.isfinite(counts) & (counts > 0)]
    use_log = requested == "log" or (
        requested is None and positive.size > 0 and positive.max() / positive.min() > 100)
    if use_log:
        _set_scale(ax, "y", "log")
    return use_log


def _plain_number(value: float, _pos: object = None) -> str:
    return f"{value:g}"


def _set_scale(ax: Axes, axis: str, scale: str) -> None:
    """Set a non-linear scale with plain tick labels: matplotlib's own log/logit labels are mathtext,
    which stays off here (``text.parse_math = False``) so that user text with '$' prints literally."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)(scale)
    if scale != "linear":
        target.set_major_formatter(FuncFormatter(_plain_number))
        target.set_minor_formatter(NullFormatter())


# ------------------------------------------------------------------------------------------ renderers


def _draw_reliability(fig: Figure, plot: Mapping[str, Any], gid: str) -> None:
    series = _series(plot)
    ncols = min(len(series), 2)
    nrows = math.ceil(len(series) / ncols)
    fig.set_size_inches(3.4 * ncols + 0.4, 3.9 * nrows)
    grid = fig.add_gridspec(2 * nrows, ncols, height_ratios=[3, 1] * nrows)
    for k, s in enumerate(series):
        bins = _require(s, "bins", "a reliability series")
        if not isinstance(bins, Sequence) or not bins:
            raise PlotDataError("a reliability series needs a non-empty 'bins' list")
        cols = {key: _floats([_require(b, key, "a reliability bin") for b in bins], key)
                for key in ("lower", "upper", "count", "mean_confidence", "accuracy")}
        lower, upper, count = cols["lower"], cols["upper"], cols["count"]
        conf, acc = cols["mean_confidence"], cols["accuracy"]
        width = upper - lower
        filled = (np.nan_to_num(count) > 0) & np.isfinite(acc) & np.isfinite(conf)
        row, col = divmod(k, ncols)
        ax = fig.add_subplot(grid[2 * row, col])
        ax_count = fig.add_subplot(grid[2 * row + 1, col], sharex=ax)
        bars = ax.bar(lower[filled], acc[filled], width=width[filled], align="edge", color=PALETTE[0],
                      edgecolor="white", linewidth=0.5, label="accuracy")
        for j, rect in enumerate(bars):
            rect.set_gid(f"{gid}-bar-{k}-{j}")
        # The gap runs from accuracy to mean confidence: above the bar when overconfident, inside it (hatched,
        # so it stays visible on blue) when underconfident.
        ax.bar(lower[filled], (conf - acc)[filled], bottom=acc[filled], width=width[filled], align="edge",
               facecolor=(0.835, 0.369, 0.0, 0.3), edgecolor=GAP_COLOUR, hatch="////", linewidth=0.5,
               label="gap to mean confidence")
        lo = float(np.nanmin(lower)) if np.isfinite(lower).any() else 0.0
        hi = float(np.nanmax(upper)) if np.isfinite(upper).any() else 1.0
        ax.plot([0, 1], [0, 1], linestyle="--", color=MUTED, linewidth=1, label="perfect calibration")
        ax.set_xlim(min(lo, 0.0), max(hi, 1.0))
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.set_title(_short(s.get("label", f"series {k + 1}"), 40))
        ax.tick_params(labelbottom=False)
        counts = np.nan_to_num(count)
        log = _maybe_log(ax_count, counts, None)
        shown = counts > 0
        ax_count.bar(lower[shown], counts[shown], width=width[shown], align="edge", color="#9ca3af",
                     edgecolor="white", linewidth=0.5)
        if log:
            ax_count.set_ylim(bottom=0.5)  # a count of 1 still shows as a bar
        ax_count.set_ylabel("count (log)" if log else "count")
        ax_count.set_xlabel("confidence")
        ax_count.grid(axis="x", visible=False)
        if k == 0:
            ax.legend(loc="upper left", fontsize=7)
    if plot.get("title"):
        fig.suptitle(_wrap(plot["title"]), fontsize=10)


def _draw_histogram(fig: Figure, plot: Mapping[str, Any], gid: str) -> None:
    edges = _floats(_require(plot, "edges", "a histogram"), "edges")
    series = _series(plot)
    ax = fig.add_subplot()
    overlaid = len(series) > 1
    all_counts = []
    for s in series:
        counts = np.nan_to_num(_floats(_require(s, "counts", "a histogram series"), "counts"))
        if len(counts) != len(edges) - 1:
            raise PlotDataError(f"histogram series has {len(counts)} counts for {len(edges)} edges "
                                "(need one count fewer than edges)")
        all_counts.append(counts)
    log = _maybe_log(ax, np.concatenate(all_counts), plot.get("yscale"))
    floor = 0.5 if log else 0.0  # a log axis has no zero: bars start just below a count of 1
    for i, (s, counts) in enumerate(zip(series, all_counts, strict=True)):
        colour = _colour(i)
        shown = np.where(counts > 0, counts, floor) if log else counts
        art = ax.stairs(shown, edges, baseline=floor, fill=True, alpha=0.35 if overlaid else 0.8,
                        color=colour, label=str(s.get("label", f"series {i + 1}")))
        art.set_gid(f"{gid}-series-{i}")
        if overlaid:
            ax.stairs(shown, edges, baseline=floor, color=colour, linewidth=1.2)
    ax.set_xlabel(str(plot.get("xlabel", "")))
    ylabel = str(plot.get("ylabel", "count"))
    ax.set_ylabel(f"{ylabel} (log scale)" if log else ylabel)
    ax.set_title(_wrap(plot.get("title")))
    ax.set_ylim(bottom=floor if log else 0)
    _legend(ax, len(series))


def _errors(values: np.ndarray, s: Mapping[str, Any]) -> np.ndarray | None:
    if s.get("ci_low") is None or s.get("ci_high") is None:
        return None
    low, high = _floats(s["ci_low"], "ci_low"), _floats(s["ci_high"], "ci_high")
    if len(low) != len(values) or len(high) != len(values):
        raise PlotDataError("'ci_low' and 'ci_high' must have one entry per category")
    # A percentile interval may (rarely) exclude the point estimate; clip so error bars stay drawable.
    return np.nan_to_num(np.vstack([np.maximum(values - low, 0), np.maximum(high - values, 0)]))


def _draw_bars(fig: Figure, plot: Mapping[str, Any], gid: str) -> None:
    categories = list(_require(plot, "categories", "a bars plot"))
    series = _series(plot)
    n_cat, n_series = len(categories), len(series)
    values = []
    for s in series:
        v = _floats(_require(s, "values", "a bars series"), "values")
        if len(v) != n_cat:
            raise PlotDataError(f"bars series '{s.get('label')}' has {len(v)} values for {n_cat} categories")
        values.append(v)
    errors = [_errors(v, s) for v, s in zip(values, series, strict=True)]
    muted = [bool(m) for m in plot.get("muted") or [False] * n_cat]
    if len(muted) != n_cat:
        raise PlotDataError(f"bars 'muted' has {len(muted)} entries for {n_cat} categories")
    grouped = n_cat * n_series <= MAX_BARS
    fig.set_size_inches(min(max(4.8, 0.28 * n_cat * n_series + 2.0), 9.0) if grouped else 7.5, 3.8)
    ax = fig.add_subplot()
    x = np.arange(n_cat)
    xlabel = str(plot.get("xlabel", ""))
    if grouped:
        width = 0.8 / n_series
        for i, s in enumerate(series):
            offset = (i - (n_series - 1) / 2) * width
            bars = ax.bar(x + offset, np.nan_to_num(values[i]), width=width, color=_colour(i),
                          label=str(s.get("label", f"series {i + 1}")), yerr=errors[i],
                          error_kw={"ecolor": "#374151", "elinewidth": 0.8, "capsize": 2 if n_cat <= 30 else 0})
            for j, rect in enumerate(bars.patches):
                rect.set_gid(f"{gid}-bar-{i}-{j}")
                if muted[j]:
                    rect.set_alpha(0.35)
                    rect.set_hatch("//")
            if bars.errorbar is not None:
                for collection in bars.errorbar.lines[2]:
                    collection.set_gid(f"{gid}-err-{i}")
        _label_ticks(ax, "x", categories)
    else:
        # Too many bars to read (or to store): categories sorted by the first series, one step line per
        # series with its CI band -- the shape of the distribution, with the weakest categories on the left.
        order = np.argsort(np.where(np.isfinite(values[0]), values[0], np.inf), kind="stable")
        # Muted categories are drawn only in the grouped form; here they stay in the profile.
        for i, s in enumerate(series):
            v, colour = values[i][order], _colour(i)
            line, = ax.plot(x, v, drawstyle="steps-mid", color=colour, linewidth=1.2 if i == 0 else 0.7,
                            alpha=1.0 if i == 0 else 0.7, label=str(s.get("label", f"series {i + 1}")))
            line.set_gid(f"{gid}-series-{i}")
            first_errors = errors[0]
            if i == 0 and first_errors is not None:
                err = first_errors[:, order]
                ax.fill_between(x, v - err[0], v + err[1], step="mid", color=colour, alpha=0.2, linewidth=0)
        _label_ticks(ax, "x", [categories[k] for k in order])
        first = series[0].get("label", "the first series")
        xlabel = f"{xlabel or 'category'} ({n_cat}, sorted by {first})"
    ax.grid(axis="x", visible=False)
    stacked = np.concatenate(values)
    finite = stacked[np.isfinite(stacked)]
    if plot.get("center_zero"):
        # Deltas: a symmetric axis around 0 that shows every bar and error bar.
        spread = [np.abs(finite)] + [np.abs(np.asarray(s.get(k) or [], float)) for s in series
                                     for k in ("ci_low", "ci_high")]
        extent = max([float(np.nanmax(a)) for a in spread if np.isfinite(a).any()] + [0.01])
        ax.set_ylim(-1.15 * extent, 1.15 * extent)
        ax.axhline(0, color="#374151", linewidth=0.8)
    elif finite.size and finite.min() >= 0:
        ax.set_ylim(0, 1.05 if finite.max() <= 1 else None)
    ax.set_ylabel(str(plot.get("ylabel", "")))
    ax.set_xlabel(xlabel)
    ax.set_title(_wrap(plot.get("title")))
    _legend(ax, n_series, outside=True)


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


def _draw_heatmap(fig: Figure, plot: Mapping[str, Any], gid: str) -> None:
    rows = list(_require(plot, "rows", "a heatmap"))
    cols = list(_require(plot, "cols", "a heatmap"))
    raw = _require(plot, "values", "a heatmap")
    values = np.array([[np.nan if v is None else float(v) for v in row] for row in raw], dtype=float)
    if values.shape != (len(rows), len(cols)):
        raise PlotDataError(f"heatmap values have shape {values.shape}, expected ({len(rows)}, {len(cols)}) "
                            "from 'rows' and 'cols'")
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
    size = min(max(3.8, 0.32 * side + 2.2), 7.5)
    fig.set_size_inches(size + 1.0, size)
    ax = fig.add_subplot()
    factor = math.ceil(side / MAX_HEATMAP_SIDE)
    image = _block_max(shown, factor) if factor > 1 else shown
    finite = image[np.isfinite(image)]
    vmax = 1.0 if normalize else (float(finite.max()) if finite.size else 1.0)
    vmin = 0.0 if normalize or (finite.size and finite.min() >= 0) else float(finite.min())
    im = ax.imshow(image, cmap="Blues", vmin=vmin, vmax=vmax or 1.0, aspect="auto", interpolation="none",
                   extent=(-0.5, n_cols - 0.5, n_rows - 0.5, -0.5))
    im.set_gid(f"{gid}-image")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03,
                 label={"row": "fraction of row", "col": "fraction of column"}.get(str(normalize), ""))
    if n_rows <= MAX_ANNOTATED_CELLS and n_cols <= MAX_ANNOTATED_CELLS:
        integral = normalize is None and np.all(np.isnan(values) | (values == np.round(values)))
        fontsize = 8 if side <= 10 else 6
        for r in range(n_rows):
            for c in range(n_cols):
                v = shown[r, c]
                if not np.isfinite(v) or values[r, c] == 0:  # blank zeros keep the eye on the errors
                    continue
                text = f"{int(v)}" if integral else (f"{v:.2f}" if normalize else f"{v:.3g}")
                dark = vmax > vmin and (v - vmin) / (vmax - vmin) > 0.6
                ax.text(c, r, text, ha="center", va="center", fontsize=fontsize,
                        color="white" if dark else "#111827")
    _label_ticks(ax, "x", cols)
    _label_ticks(ax, "y", rows)
    ax.grid(False)
    ax.set_xlabel(str(plot.get("xlabel", "")))
    ax.set_ylabel(str(plot.get("ylabel", "")))
    title = _wrap(plot.get("title"), 60)
    if factor > 1:
        title = f"{title}\n(maximum over blocks of {factor}\u00d7{factor} cells)".strip()
    ax.set_title(title)


def _draw_line(fig: Figure, plot: Mapping[str, Any], gid: str) -> None:
    series = _series(plot)
    ax = fig.add_subplot()
    for i, s in enumerate(series):
        x = _floats(_require(s, "x", "a line series"), "x")
        y = _floats(_require(s, "y", "a line series"), "y")
        if len(x) != len(y):
            raise PlotDataError(f"line series '{s.get('label')}' has {len(x)} x and {len(y)} y values")
        keep = _decimate(len(x), MAX_LINE_POINTS)
        colour = _colour(i)
        line, = ax.plot(x[keep], y[keep], color=colour, linewidth=1.5, label=str(s.get("label", f"series {i + 1}")),
                        marker="o" if len(x) <= 25 else None, markersize=3.5)
        line.set_gid(f"{gid}-series-{i}")
        if s.get("y_low") is not None and s.get("y_high") is not None:
            low, high = _floats(s["y_low"], "y_low"), _floats(s["y_high"], "y_high")
            if len(low) != len(x) or len(high) != len(x):
                raise PlotDataError("'y_low' and 'y_high' must have one entry per x")
            band = ax.fill_between(x[keep], low[keep], high[keep], color=colour, alpha=0.2, linewidth=0)
            band.set_gid(f"{gid}-band-{i}")
    xscale = plot.get("xscale")
    if xscale:
        if xscale not in ("linear", "log", "symlog", "logit"):
            raise PlotDataError(f"line 'xscale' must be linear, log, symlog or logit, got {xscale!r}")
        _set_scale(ax, "x", xscale)
    ax.set_xlabel(str(plot.get("xlabel", "")))
    ax.set_ylabel(str(plot.get("ylabel", "")))
    ax.set_title(_wrap(plot.get("title")))
    _legend(ax, len(series))


def _draw_scatter(fig: Figure, plot: Mapping[str, Any], gid: str) -> None:
    series = _series(plot)
    ax = fig.add_subplot()
    xs, ys = [], []
    labelled = sum(len(s.get("text") or []) for s in series) <= MAX_POINT_LABELS
    for i, s in enumerate(series):
        x = _floats(_require(s, "x", "a scatter series"), "x")
        y = _floats(_require(s, "y", "a scatter series"), "y")
        if len(x) != len(y):
            raise PlotDataError(f"scatter series '{s.get('label')}' has {len(x)} x and {len(y)} y values")
        xs.append(x)
        ys.append(y)
        points = ax.scatter(x, y, s=22, color=_colour(i), alpha=0.85, label=str(s.get("label", f"series {i + 1}")),
                            linewidths=0)
        points.set_gid(f"{gid}-series-{i}")
        texts = s.get("text")
        if texts and labelled:
            for xi, yi, t in zip(x, y, texts, strict=False):
                if np.isfinite(xi) and np.isfinite(yi):
                    ax.annotate(_short(t, 24), (xi, yi), xytext=(4, 3), textcoords="offset points", fontsize=7,
                                color="#374151")
    front = plot.get("front")
    if front:
        all_x, all_y = np.concatenate(xs), np.concatenate(ys)
        idx = np.asarray(front, dtype=int)
        if idx.min() < 0 or idx.max() >= len(all_x):
            raise PlotDataError(f"scatter 'front' indexes {len(all_x)} points but contains {idx.max()}")
        order = idx[np.argsort(all_x[idx], kind="stable")]
        line, = ax.plot(all_x[order], all_y[order], drawstyle="steps-post", color="#111827", linewidth=1,
                        marker="o", markersize=7, markerfacecolor="none", label="front")
        line.set_gid(f"{gid}-front")
    ax.set_xlabel(str(plot.get("xlabel", "")))
    ax.set_ylabel(str(plot.get("ylabel", "")))
    ax.set_title(_wrap(plot.get("title")))
    _legend(ax, len(series))


_RENDERERS: dict[str, Callable[[Figure, Mapping[str, Any], str], None]] = {
    "reliability": _draw_reliability,
    "histogram": _draw_histogram,
    "bars": _draw_bars,
    "heatmap": _draw_heatmap,
    "line": _draw_line,
    "scatter": _draw_scatter,
}

PLOT_KINDS: tuple[str, ...] = (*_RENDERERS, "images")


# -------------------------------------------------------------------------------------- SVG clean-up

_GEOMETRY_ATTR = re.compile(r'\b(d|x|y|width|height)="([^"]*)"')
_LONG_FLOAT = re.compile(r"-?\d+\.\d{2,}")
_ID_ATTR = re.compile(r'\sid="([^"]*)"')
_REFERENCE = re.compile(r'url\(#([^)]+)\)|href="#([^"]+)"')
_NO_ROTATION = re.compile(r' transform="rotate\(-?0 [^)"]*\)"')
_FONT_FAMILY = re.compile(r"font-family: [^;\"]*;? ?")


def _rounder(decimals: int) -> Callable[[re.Match[str]], str]:
    def shorten(m: re.Match[str]) -> str:
        text = f"{float(m.group()):.{decimals}f}".rstrip("0").rstrip(".")
        return "0" if text == "-0" else text
    return shorten


def _round_geometry(match: re.Match[str]) -> str:
    """Paths to 0.1 pt, positions and sizes to 0.01 pt (1 pt = 1/72 inch: invisible either way)."""
    name, value = match.group(1), match.group(2)
    if name == "d":
        value = _LONG_FLOAT.sub(_rounder(1), value)
        value = re.sub(r"\s*([MLCQZz])\s*", r"\1", re.sub(r"\s+", " ", value)).strip()
    else:
        value = _LONG_FLOAT.sub(_rounder(2), value)
    return f'{name}="{value}"'


def _clean_svg(svg: str, gid: str, title: str) -> str:
    """Drop header/DOCTYPE/style block and unreferenced ids, round coordinates, set one font stack."""
    svg = svg[svg.index("<svg"):]
    svg = svg.replace('<style type="text/css">*{stroke-linejoin: round; stroke-linecap: butt}</style>', "")
    svg = re.sub(r"<defs>\s*</defs>", "", svg)
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = _GEOMETRY_ATTR.sub(_round_geometry, svg)
    svg = _NO_ROTATION.sub("", svg)
    svg = _FONT_FAMILY.sub("", svg)
    referenced = {a or b for a, b in _REFERENCE.findall(svg)}
    svg = _ID_ATTR.sub(lambda m: m.group(0) if m.group(1) in referenced or m.group(1).startswith(gid) else "", svg)
    root_style = f"stroke-linejoin: round; stroke-linecap: butt; font-family: {FONT_STACK}"
    label = html.escape(title or "plot", quote=True)
    svg = svg.replace("<svg ", f'<svg class="assay-plot" role="img" aria-label="{label}" style="{root_style}" ', 1)
    return re.sub(r">\s+<", "><", svg).strip()


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
    if kind == "images":  # thumbnails are embedded PNGs, not a matplotlib figure
        from assay.report.thumbnails import render_images

        return render_images(plot)
    draw = _RENDERERS.get(kind) if isinstance(kind, str) else None
    if draw is None:
        raise UnsupportedPlotError(f"unknown plot kind {kind!r}; this version draws {', '.join(PLOT_KINDS)}")

    import matplotlib
    from cycler import cycler
    from matplotlib.figure import Figure

    digest = hashlib.sha256(json.dumps(plot, sort_keys=True, default=_jsonable).encode()).hexdigest()
    gid = f"p{digest[:10]}"
    rc: dict[str, Any] = {
        "svg.fonttype": "none",  # text stays <text>: no embedded glyph paths
        "svg.hashsalt": gid,  # deterministic ids, distinct between plots
        "svg.image_inline": True,
        "text.parse_math": False,  # a class named "$5 bill" must not become mathtext
        "text.usetex": False,
        "font.size": 9,
        "axes.titlesize": 10,
        "axes.labelsize": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "axes.axisbelow": True,
        "grid.color": "#e5e7eb",
        "grid.linewidth": 0.6,
        "axes.prop_cycle": cycler(color=list(PALETTE)),
        "legend.frameon": False,
        "legend.fontsize": 8,
        "path.simplify": True,
    }
    with matplotlib.rc_context(rc):  # type: ignore[arg-type]  # keys are valid rcParams
        fig = Figure(figsize=(6.0, 3.8), layout="constrained")
        try:
            draw(fig, plot, gid)
        except (PlotDataError, UnsupportedPlotError):
            raise
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise PlotDataError(f"{kind} plot data is malformed: {exc}") from exc
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    return _clean_svg(buffer.getvalue(), gid, str(plot.get("title") or kind))
