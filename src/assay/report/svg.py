"""The small drawing layer under ``assay.report.plots``: scales, ticks, axes, legends and SVG markup.

Report plots are simple (bars, steps, lines, points, cells), so they are written as SVG elements directly
instead of through a plotting library: rendering the demo's 21 plots this way takes milliseconds, where
matplotlib took about two seconds plus a 0.5 s import. What is kept from matplotlib's conventions:
5 % data margins, "nice" tick steps (1, 2, 2.5, 5 x 10^k), decade ticks with unlabelled minor ticks on
log axes, the ``symlog`` (linthresh 1) and ``logit`` transforms, and a legend placed where it covers the
fewest data points ("best"). Text stays text (no glyph paths, no fonts embedded); its width is estimated
from the advance widths of DejaVu Sans (what ``system-ui``/``sans-serif`` resolve to on most Linux
systems, and wider than Segoe UI, San Francisco, Roboto, Helvetica or Arial), so margins, wrapped titles
and point labels fit whichever of those fonts the page gets. Titles are wrapped and kept inside the
figure; point labels are placed around their points where they cover no other label, point or the legend
(:meth:`Axes.label_points`). Text the browser tests check carries a class: ``title`` (plot titles) and
``label`` (point labels, thumbnail captions and headers: no two may overlap).

Coordinates are SVG user units (≈ CSS px before the page scales the figure to its box), rounded to 0.1.
"""

from __future__ import annotations

import base64
import html
import math
import re
import struct
import unicodedata
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Axes", "Canvas", "LegendEntry", "Scale", "Ticks", "blues", "legend_items", "legend_size", "png_data_uri",
           "shorten", "text_width", "wrap"]

FONT_STACK = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
FONT = 13.0  # tick labels, axis labels
TITLE_FONT = 15.0
LEGEND_FONT = 12.0
TEXT = "#1f2328"
AXIS = "#374151"
GRID = "#e5e7eb"
GRID_DARK = "#9ca3af"
TICK = 4.0
PAD = 4.0
WIDE = 700.0  # figures wider than this get the class "wide": the page gives them a whole row

#: Advance widths of DejaVu Sans (Book) for ASCII 32..126, in 1/1000 em (its hmtx table, 2048 units per em).
_ASCII_ADVANCE = (
    318, 401, 460, 838, 636, 950, 780, 275, 390, 390, 500, 838, 318, 361, 318, 337, 636, 636, 636, 636, 636, 636,
    636, 636, 636, 636, 337, 337, 838, 838, 838, 531, 1000, 684, 686, 698, 770, 632, 575, 775, 752, 295, 295, 656,
    557, 863, 748, 787, 603, 787, 695, 635, 611, 732, 684, 989, 685, 611, 685, 390, 337, 390, 838, 500, 500, 613,
    635, 550, 635, 615, 352, 635, 634, 278, 278, 579, 278, 974, 634, 612, 635, 635, 411, 521, 392, 634, 592, 818,
    592, 592, 525, 636, 337, 636, 838)
_OTHER_ADVANCE = 838  # arrows, minus, multiplication sign and most other symbols in DejaVu Sans; letters are less
_WIDE_ADVANCE = 1000  # East Asian wide and full-width characters

_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_WHITESPACE = str.maketrans("\t\n\r", "   ")


def esc(text: object) -> str:
    """Text for XML content or attributes: escaped, characters XML 1.0 forbids replaced (U+FFFD), and tabs
    and line breaks as spaces (what SVG text shows them as, and what XML parsers make of them in attributes)."""
    return html.escape(_XML_INVALID.sub("\ufffd", str(text)).translate(_WHITESPACE), quote=True)


def num(value: float) -> str:
    """A coordinate with at most one decimal (``12``, ``12.5``, never ``-0``), kept within +-1e6 (far
    outside any figure, where it is clipped anyway: absurd data must not write 300-digit numbers)."""
    text = f"{min(max(float(value), -1e6), 1e6):.1f}"
    if text.endswith(".0"):
        text = text[:-2]
    return "0" if text == "-0" else text


def _advance(char: str) -> int:
    code = ord(char)
    if 32 <= code < 127:
        return _ASCII_ADVANCE[code - 32]
    if unicodedata.east_asian_width(char) in ("W", "F"):
        return _WIDE_ADVANCE
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return _OTHER_ADVANCE


def text_width(text: object, size: float = FONT) -> float:
    """Width of ``text`` at ``size`` px in DejaVu Sans (see the module docstring); tabs and line breaks count
    as spaces, as SVG shows them."""
    return sum(_advance(c) for c in str(text).translate(_WHITESPACE)) * size / 1000.0


def shorten(text: object, width_px: float, size: float = FONT) -> str:
    """``text``, or its longest prefix that fits ``width_px`` with an ellipsis after it."""
    text = str(text)
    if text_width(text, size) <= width_px:
        return text
    room = width_px - text_width("\u2026", size)
    used, end = 0.0, 0
    for char in text:
        used += _advance(char) * size / 1000.0
        if used > room:
            break
        end += 1
    return text[:end].rstrip() + "\u2026"


def wrap(text: object, width_px: float, size: float = TITLE_FONT, max_lines: int | None = None) -> list[str]:
    """Lines of ``text`` no wider than ``width_px`` (by :func:`text_width`), broken at spaces, a word longer
    than a line cut inside it; at most ``max_lines`` (the last one ending in an ellipsis when text was left
    out). Empty text gives no lines."""
    if not text:
        return []
    lines: list[str] = []
    current = ""
    for word in str(text).translate(_WHITESPACE).split():
        candidate = f"{current} {word}" if current else word
        if text_width(candidate, size) <= width_px:
            current = candidate
            continue
        if current:
            lines.append(current)
        rest = word
        while len(rest) > 1 and text_width(rest, size) > width_px:  # a word wider than a line: cut it
            head = rest[:max(len(shorten(rest, width_px, size)) - 1, 1)]
            lines.append(head)
            rest = rest[len(head):]
        current = rest
    if current or not lines:
        lines.append(current)
    if max_lines is not None and len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = shorten(lines[-1] + " \u2026", width_px, size)
    return lines


# ------------------------------------------------------------------------------------------ colours

#: ColorBrewer "Blues" (9 classes), the anchors matplotlib's ``Blues`` colormap interpolates linearly.
_BLUES = np.array([
    (247, 251, 255), (222, 235, 247), (198, 219, 239), (158, 202, 225), (107, 174, 214),
    (66, 146, 198), (33, 113, 181), (8, 81, 156), (8, 48, 107)], dtype=float) / 255.0


def blues(fraction: np.ndarray | float) -> np.ndarray:
    """RGB in [0, 1] of the Blues colour map at ``fraction`` in [0, 1] (clipped; NaN as 0), shape (..., 3)."""
    f = np.clip(np.nan_to_num(np.asarray(fraction, dtype=float)), 0.0, 1.0) * (len(_BLUES) - 1)
    lo = np.minimum(np.floor(f).astype(int), len(_BLUES) - 2)
    t = (f - lo)[..., None]
    return _BLUES[lo] * (1 - t) + _BLUES[lo + 1] * t


def hex_colour(rgb: Sequence[float] | np.ndarray) -> str:
    r, g, b = (int(round(float(c) * 255)) for c in rgb[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def png_data_uri(rgba: np.ndarray) -> str:
    """An (H, W, 4) uint8 array as a ``data:image/png;base64`` URI (PNG written with zlib: no imaging library)."""
    height, width = rgba.shape[:2]
    raw = b"".join(b"\x00" + rgba[row].tobytes() for row in range(height))  # filter type 0 per scanline

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# ------------------------------------------------------------------------------------------- scales


def _log10(v: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v > 0, np.log10(np.where(v > 0, v, 1.0)), np.nan)


_SYMLOG_LINSCALE = 1.0 / (1.0 - 1.0 / 10.0)  # matplotlib's symlog: linthresh 1, linscale 1, base 10


def _symlog(v: np.ndarray) -> np.ndarray:
    a = np.abs(v)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a <= 1.0, v * _SYMLOG_LINSCALE, np.sign(v) * (_SYMLOG_LINSCALE + np.log10(np.maximum(a, 1.0))))


def _symlog_inverse(t: np.ndarray) -> np.ndarray:
    a = np.abs(t)
    return np.where(a <= _SYMLOG_LINSCALE, t / _SYMLOG_LINSCALE, np.sign(t) * 10.0 ** (a - _SYMLOG_LINSCALE))


def _logit(v: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((v > 0) & (v < 1), np.log10(v / (1 - v)), np.nan)


_TRANSFORMS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "linear": (lambda v: v, lambda t: t),
    "log": (_log10, lambda t: 10.0 ** t),
    "symlog": (_symlog, _symlog_inverse),
    "logit": (_logit, lambda t: 1.0 / (1.0 + 10.0 ** -t)),
}
SCALES = tuple(_TRANSFORMS)


@dataclass
class Ticks:
    """Major tick positions (data units) with their labels, and unlabelled minor positions."""

    major: list[float]
    labels: list[str]
    minor: list[float] = field(default_factory=list)


def nice_step(span: float, target: int) -> float:
    """Smallest of 1, 2, 2.5, 5, 10 x 10^k that cuts ``span`` into at most ``target`` intervals."""
    raw = span / max(target, 1)
    if not math.isfinite(raw) or raw <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for multiple in (1.0, 2.0, 2.5, 5.0, 10.0):
        if multiple * magnitude >= raw * (1 - 1e-9):
            return multiple * magnitude
    return 10.0 * magnitude


def format_ticks(values: Sequence[float], step: float) -> list[str]:
    """Tick labels with one number of decimals, enough for ``step``; unicode minus, as matplotlib prints."""
    finite = [abs(v) for v in values if math.isfinite(v) and v != 0]
    biggest = max(finite, default=0.0)
    if biggest >= 1e6 or (0 < biggest < 1e-4):
        texts = [f"{v:.3g}" for v in values]
    else:
        decimals = 0
        while decimals < 10 and abs(round(step * 10**decimals) - step * 10**decimals) > 1e-6 * 10**decimals:
            decimals += 1
        texts = [f"{0.0 if abs(v) < step * 1e-9 else v:.{decimals}f}" for v in values]
    return [t.replace("-", "\u2212") for t in texts]


def linear_ticks(lo: float, hi: float, target: int) -> Ticks:
    step = nice_step(hi - lo, target)
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    values = [k * step for k in range(first, last + 1)]
    return Ticks(values, format_ticks(values, step))


def _plain(value: float) -> str:
    return f"{value:g}".replace("-", "\u2212")


def log_ticks(lo: float, hi: float) -> Ticks:
    """Decades labelled, 2..9 x 10^k as minor ticks; a range within one decade labels 1-2-5 too."""
    k_lo, k_hi = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
    stride = max(1, math.ceil((k_hi - k_lo + 1) / 8))
    decades = [10.0**k for k in range(k_lo, k_hi + 1) if lo * (1 - 1e-9) <= 10.0**k <= hi * (1 + 1e-9)
               and (k - k_lo) % stride == 0]
    minor = [m * 10.0**k for k in range(k_lo, k_hi + 1) for m in range(2, 10) if lo <= m * 10.0**k <= hi]
    if stride > 1:
        minor = []
    major = decades
    if len(decades) < 2:  # too few decades to read values: label the 1-2-5 ticks as well
        one_two_five = {v for v in minor if round(v / 10.0 ** math.floor(math.log10(v) + 1e-9)) in (2, 5)}
        major = sorted(set(decades) | one_two_five)
        minor = [v for v in minor if v not in major]
    return Ticks(major, [_plain(v) for v in major], minor)


def symlog_ticks(lo: float, hi: float) -> Ticks:
    values = [0.0] if lo <= 0 <= hi else []
    for k in range(16):
        for sign in (1.0, -1.0):
            v = sign * 10.0**k
            if lo <= v <= hi:
                values.append(v)
    values.sort()
    return Ticks(values, [_plain(v) for v in values])


def logit_ticks(lo: float, hi: float) -> Ticks:
    candidates = [10.0**-k for k in range(6, 0, -1)] + [0.5] + [1 - 10.0**-k for k in range(1, 7)]
    values = [v for v in candidates if lo <= v <= hi]
    return Ticks(values, [f"{v:.6g}" for v in values])


class Scale:
    """Data -> pixel along one axis, through a transform (linear, log, symlog or logit)."""

    def __init__(self, kind: str, lo: float, hi: float) -> None:
        if kind not in _TRANSFORMS:
            raise ValueError(f"unknown scale {kind!r}")
        self.kind = kind
        self.lo, self.hi = float(lo), float(hi)
        self._fwd, self._inv = _TRANSFORMS[kind]
        self.t_lo, self.t_hi = (float(t) for t in self._fwd(np.array([self.lo, self.hi])))
        if not (math.isfinite(self.t_lo) and math.isfinite(self.t_hi)) or self.t_hi == self.t_lo:
            raise ValueError(f"degenerate {kind} scale over [{lo}, {hi}]")
        self.p0, self.p1 = 0.0, 1.0

    def place(self, p0: float, p1: float) -> Scale:
        """Map the data range to pixels ``p0`` (at ``lo``) .. ``p1`` (at ``hi``; smaller than p0 for y)."""
        self.p0, self.p1 = float(p0), float(p1)
        return self

    def __call__(self, values: object) -> np.ndarray:
        t = self._fwd(np.asarray(values, dtype=float))
        return self.p0 + (t - self.t_lo) / (self.t_hi - self.t_lo) * (self.p1 - self.p0)

    def ticks(self, length_px: float, spacing_px: float = 45.0) -> Ticks:
        lo, hi = min(self.lo, self.hi), max(self.lo, self.hi)
        if self.kind == "log":
            return log_ticks(lo, hi)
        if self.kind == "symlog":
            return symlog_ticks(lo, hi)
        if self.kind == "logit":
            return logit_ticks(lo, hi)
        return linear_ticks(lo, hi, int(min(max(length_px / spacing_px, 3), 10)))


def auto_limits(arrays: Sequence[object], kind: str = "linear", margin: float = 0.05) -> tuple[float, float]:
    """Data limits of every finite value (valid for the scale), widened by ``margin`` of the span on each
    side in transformed space (matplotlib's ``axes.xmargin``/``ymargin``)."""
    fwd, inv = _TRANSFORMS[kind]
    values = [np.asarray(a, dtype=float).ravel() for a in arrays]
    t = fwd(np.concatenate(values)) if values else np.array([])
    t = t[np.isfinite(t)]
    if t.size == 0:
        t_lo, t_hi = {"log": (0.0, 1.0), "logit": (-1.0, 1.0)}.get(kind, (0.0, 1.0))
    else:
        t_lo, t_hi = float(t.min()), float(t.max())
    if t_hi == t_lo:
        pad = abs(t_lo) * 0.05 or 0.5
        t_lo, t_hi = t_lo - pad, t_hi + pad
    span = t_hi - t_lo
    lo, hi = (float(v) for v in inv(np.array([t_lo - margin * span, t_hi + margin * span])))
    return lo, hi


# -------------------------------------------------------------------------------------------- canvas


@dataclass
class LegendEntry:
    label: str
    colour: str
    kind: str = "patch"  # patch | line | marker
    opacity: float = 1.0
    hatch: str | None = None  # a pattern id
    dashed: bool = False
    marker: bool = False
    hollow: bool = False


class Canvas:
    """One SVG document: a body of elements and the ``<defs>`` (patterns, clip paths) they use."""

    def __init__(self, width: float, height: float, gid: str) -> None:
        self.width, self.height, self.gid = float(width), float(height), gid
        self.defs: dict[str, str] = {}
        self.body: list[str] = []

    def add(self, element: str) -> None:
        self.body.append(element)

    def text(self, x: float, y: float, content: object, *, size: float = FONT, anchor: str = "start",
             colour: str | None = None, rotate: float | None = None, weight: str | None = None,
             cls: str | None = None) -> None:
        """Text with its baseline at ``y``; ``rotate`` (degrees) turns it about (x, y); ``cls``: its class."""
        attrs = [f'class="{cls}" x="{num(x)}" y="{num(y)}"' if cls else f'x="{num(x)}" y="{num(y)}"']
        if size != FONT:
            attrs.append(f'font-size="{num(size)}"')
        if anchor != "start":
            attrs.append(f'text-anchor="{anchor}"')
        if colour:
            attrs.append(f'fill="{colour}"')
        if weight:
            attrs.append(f'font-weight="{weight}"')
        if rotate:
            attrs.append(f'transform="rotate({num(rotate)} {num(x)} {num(y)})"')
        self.body.append(f"<text {' '.join(attrs)}>{esc(content)}</text>")

    def centred_lines(self, lines: Sequence[str], top: float, *, size: float = TITLE_FONT,
                      x: float | None = None) -> float:
        """Centred lines from ``top``; returns the y below them."""
        y = top
        for line in lines:
            y += size * 1.2
            self.text(self.width / 2 if x is None else x, y - size * 0.25, line, size=size, anchor="middle",
                      cls="title")
        return y

    def hatch(self, name: str, colour: str, opacity: float = 1.0, spacing: float = 6.0) -> str:
        """Id of a diagonal-line pattern (defined once per canvas), for ``fill="url(#id)"``."""
        pattern_id = f"{self.gid}-{name}"
        if pattern_id not in self.defs:
            self.defs[pattern_id] = (
                f'<pattern id="{pattern_id}" patternUnits="userSpaceOnUse" width="{num(spacing)}" '
                f'height="{num(spacing)}" patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" '
                f'y2="{num(spacing)}" stroke="{colour}" stroke-width="1.2" stroke-opacity="{opacity:g}"/></pattern>')
        return pattern_id

    def clip(self, name: str, x: float, y: float, w: float, h: float) -> str:
        clip_id = f"{self.gid}-{name}"
        self.defs[clip_id] = (f'<clipPath id="{clip_id}"><rect x="{num(x)}" y="{num(y)}" width="{num(w)}" '
                              f'height="{num(h)}"/></clipPath>')
        return clip_id

    def render(self, label: str) -> str:
        style = f"font-family: {FONT_STACK}; font-size: {num(FONT)}px; stroke-linejoin: round; stroke-linecap: butt"
        kind = "assay-plot wide" if self.width > WIDE else "assay-plot"
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="{kind}" role="img" aria-label="{esc(label)}" '
                f'width="{num(self.width)}" height="{num(self.height)}" '
                f'viewBox="0 0 {num(self.width)} {num(self.height)}" style="{style}" fill="{TEXT}">')
        defs = f"<defs>{''.join(self.defs.values())}</defs>" if self.defs else ""
        return head + defs + "".join(self.body) + "</svg>"


# ------------------------------------------------------------------------------------------ geometry


def _simplify(px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop repeated points and the middle of straight runs (after rounding to 0.1): ROC curves and
    step profiles shrink to their corners, and the drawing is unchanged."""
    x, y = np.round(px, 1), np.round(py, 1)
    if x.size > 1:
        keep = np.ones(x.size, dtype=bool)
        keep[1:] = (x[1:] != x[:-1]) | (y[1:] != y[:-1])
        x, y = x[keep], y[keep]
    if x.size > 2:
        cross = (x[1:-1] - x[:-2]) * (y[2:] - y[:-2]) - (y[1:-1] - y[:-2]) * (x[2:] - x[:-2])
        keep = np.ones(x.size, dtype=bool)
        keep[1:-1] = np.abs(cross) > 1e-9
        x, y = x[keep], y[keep]
    return x, y


def finite_runs(px: np.ndarray, py: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Maximal runs of consecutive points with finite coordinates (a NaN breaks a line, as in matplotlib)."""
    ok = np.isfinite(px) & np.isfinite(py)
    runs, start = [], None
    for i, good in enumerate([*ok.tolist(), False]):
        if good and start is None:
            start = i
        elif not good and start is not None:
            runs.append((px[start:i], py[start:i]))
            start = None
    return runs


def polyline_d(px: np.ndarray, py: np.ndarray, close: bool = False) -> str:
    """Path data for a polyline (``Mx,y x,y ...``), broken at non-finite points."""
    parts = []
    for rx, ry in finite_runs(px, py):
        x, y = _simplify(rx, ry)
        # after the first pair, further pairs are implicit line-tos (SVG path grammar)
        parts.append("M" + " ".join(map("{:g},{:g}".format, x.tolist(), y.tolist())) + ("Z" if close else ""))
    return "".join(parts)


def sample_segments(px: np.ndarray, py: np.ndarray, per_segment: int = 8) -> np.ndarray:
    """Points along a polyline (for legend placement): vertices plus evenly spaced points between them."""
    chunks = []
    for x, y in finite_runs(px, py):
        if x.size == 1:
            chunks.append(np.column_stack([x, y]))
            continue
        t = np.linspace(0.0, 1.0, per_segment, endpoint=False)[None, :]
        sx = x[:-1, None] + (x[1:] - x[:-1])[:, None] * t
        sy = y[:-1, None] + (y[1:] - y[:-1])[:, None] * t
        chunks.append(np.column_stack([np.append(sx.ravel(), x[-1]), np.append(sy.ravel(), y[-1])]))
    return np.concatenate(chunks) if chunks else np.empty((0, 2))


def sample_rect(x: float, y: float, w: float, h: float) -> np.ndarray:
    """A grid of points over a rectangle, edges included, about 8 units apart (for legend placement)."""
    nx, ny = (int(min(max(abs(float(d)) / 8 + 2, 2), 24)) for d in (w, h))
    gx, gy = np.meshgrid(np.linspace(x, x + w, nx), np.linspace(y, y + h, ny))
    return np.column_stack([gx.ravel(), gy.ravel()])


# ---------------------------------------------------------------------------------------------- axes


class Axes:
    """A rectangle of the canvas with an x and a y scale: grid, spines, ticks, labels, clipped data, legend."""

    def __init__(self, canvas: Canvas, box: tuple[float, float, float, float], xscale: Scale, yscale: Scale,
                 name: str = "ax") -> None:
        self.canvas = canvas
        self.left, self.top, self.w, self.h = box
        self.right, self.bottom = self.left + self.w, self.top + self.h
        self.x = xscale.place(self.left, self.right)
        self.y = yscale.place(self.bottom, self.top)
        self.clip_id = canvas.clip(f"{name}-clip", self.left, self.top, self.w, self.h)
        self.obstacles: list[np.ndarray] = []  # data in pixels, kept clear of the legend
        self.legend_entries: list[LegendEntry] = []

    # -- frame

    def grid(self, xticks: Ticks | None, yticks: Ticks | None) -> None:
        segments = []
        if xticks is not None:
            for px in self.x(xticks.major):
                if self.left - 0.5 <= px <= self.right + 0.5:
                    segments.append(f"M{num(px)} {num(self.top)}V{num(self.bottom)}")
        if yticks is not None:
            for py in self.y(yticks.major):
                if self.top - 0.5 <= py <= self.bottom + 0.5:
                    segments.append(f"M{num(self.left)} {num(py)}H{num(self.right)}")
        if segments:
            self.canvas.add(f'<path d="{"".join(segments)}" stroke="{GRID}" stroke-width="0.8" fill="none"/>')

    def spines(self) -> None:
        self.canvas.add(f'<path d="M{num(self.left)} {num(self.top)}V{num(self.bottom)}H{num(self.right)}" '
                        f'stroke="{AXIS}" stroke-width="1" fill="none"/>')

    def xticks(self, ticks: Ticks, *, rotate: bool = False, labels: bool = True) -> None:
        marks, y0 = [], self.bottom
        for value, label in zip(ticks.major, ticks.labels, strict=True):
            px = float(self.x(value))
            if not (self.left - 0.5 <= px <= self.right + 0.5):
                continue
            marks.append(f"M{num(px)} {num(y0)}v{num(TICK)}")
            if not labels:
                continue
            if rotate:
                self.canvas.text(px + 3, y0 + TICK + PAD + FONT * 0.6, label, anchor="end", rotate=-45)
            else:
                self.canvas.text(px, y0 + TICK + PAD + FONT * 0.8, label, anchor="middle")
        for px in self.x(ticks.minor):
            if self.left <= px <= self.right:
                marks.append(f"M{num(px)} {num(y0)}v{num(TICK / 2)}")
        if marks:
            self.canvas.add(f'<path d="{"".join(marks)}" stroke="{AXIS}" stroke-width="0.8"/>')

    def yticks(self, ticks: Ticks) -> None:
        marks, x0 = [], self.left
        for value, label in zip(ticks.major, ticks.labels, strict=True):
            py = float(self.y(value))
            if not (self.top - 0.5 <= py <= self.bottom + 0.5):
                continue
            marks.append(f"M{num(x0)} {num(py)}h{num(-TICK)}")
            self.canvas.text(x0 - TICK - PAD, py + FONT * 0.35, label, anchor="end")
        for py in self.y(ticks.minor):
            if self.top <= py <= self.bottom:
                marks.append(f"M{num(x0)} {num(py)}h{num(-TICK / 2)}")
        if marks:
            self.canvas.add(f'<path d="{"".join(marks)}" stroke="{AXIS}" stroke-width="0.8"/>')

    def xlabel(self, text: str, below: float) -> None:
        if text:
            self.canvas.text((self.left + self.right) / 2, self.bottom + below, text, anchor="middle")

    def ylabel(self, text: str, x: float) -> None:
        if text:
            cy = (self.top + self.bottom) / 2
            self.canvas.text(x, cy, text, anchor="middle", rotate=-90)

    def title(self, lines: Sequence[str], size: float = TITLE_FONT) -> None:
        """Title lines above the axes, centred on them (as matplotlib does) but moved sideways where a line
        would otherwise stick out of the figure."""
        y = self.top - 6 - size * 1.2 * (len(lines) - 1)
        for line in lines:
            half = text_width(line, size) / 2
            lo, hi = half + PAD, self.canvas.width - half - PAD
            centre = (self.left + self.right) / 2
            x = min(max(centre, lo), hi) if lo <= hi else self.canvas.width / 2
            self.canvas.text(x, y, line, size=size, anchor="middle", cls="title")
            y += size * 1.2

    # -- data

    def clipped(self, content: str) -> None:
        self.canvas.add(f'<g clip-path="url(#{self.clip_id})">{content}</g>')

    def legend(self, where: str = "best", font: float = LEGEND_FONT) -> tuple[float, float, float, float] | None:
        """Draw the legend entries: ``best`` (inside, over the fewest data points) or ``outside`` (to the
        right of the axes; the layout must have left room: :func:`legend_size`). Returns its box (x, y, w, h),
        None when there is no legend (fewer than two entries inside)."""
        entries = self.legend_entries
        if len(entries) < 2 and not (entries and where == "outside"):
            return None
        width, height = legend_size(entries, font)
        if where == "outside":
            x, y = self.right + 10, self.top
        else:
            x, y = self._best_spot(width, height)
        parts = []
        if where != "outside":
            parts.append(f'<rect x="{num(x)}" y="{num(y)}" width="{num(width)}" height="{num(height)}" '
                         f'fill="#ffffff" fill-opacity="0.8"/>')
        parts.extend(legend_items(entries, x, y, font))
        self.canvas.add(f'<g class="legend">{"".join(parts)}</g>')
        return x, y, width, height

    def label_points(self, px: np.ndarray, py: np.ndarray, texts: Sequence[str], *, size: float = 10.0,
                     clearance: float = 6.0, avoid: Sequence[tuple[float, float, float, float]] = ()) -> str:
        """Markup of one label per point (``class="label"``), none overlapping another.

        Each label goes to the first of a set of candidate spots around its point -- right, left, the four
        diagonals, above, below (Imhof's order of preference for point labels), on rings of growing distance --
        that lies inside the axes, overlaps no label placed before it and no box in ``avoid`` (the legend),
        and covers the fewest data points (``obstacles``); nearer rings win ties. Beyond the first ring a thin
        leader line joins label and point. A label with no free spot is left out rather than drawn over
        another (the point's tooltip still names it). ``clearance``: the marker radius plus a gap.
        """
        height = size * 1.2  # ascent + descent of DejaVu Sans (0.93 + 0.24 em)
        obstacles = np.concatenate(self.obstacles) if self.obstacles else np.empty((0, 2))
        placed: list[tuple[float, float, float, float]] = list(avoid)
        marks, leaders = [], []
        rings = (clearance, clearance + 12, clearance + 26, clearance + 44, clearance + 68)
        for x, y, text in zip(np.asarray(px, float), np.asarray(py, float), texts, strict=True):
            if not (np.isfinite(x) and np.isfinite(y)) or not str(text):
                continue
            w = text_width(text, size)
            best: tuple[float, float, float, float] | None = None
            best_cost = math.inf
            for ring, d in enumerate(rings):
                diag = d * 0.7
                spots = ((x + d, y - height / 2), (x - d - w, y - height / 2), (x + diag, y - diag - height),
                         (x - diag - w, y - diag - height), (x + diag, y + diag), (x - diag - w, y + diag),
                         (x - w / 2, y - d - height), (x - w / 2, y + d))
                for order, (bx, by) in enumerate(spots):
                    inside = self.left + 1 <= bx and bx + w <= self.right - 1 and self.top + 1 <= by \
                        and by + height <= self.bottom - 1
                    if not inside:
                        continue
                    if any(bx < ox + ow + 2 and ox < bx + w + 2 and by < oy + oh + 1 and oy < by + height + 1
                           for ox, oy, ow, oh in placed):
                        continue
                    covered = ((obstacles[:, 0] > bx - 4) & (obstacles[:, 0] < bx + w + 4)
                               & (obstacles[:, 1] > by - 4) & (obstacles[:, 1] < by + height + 4))
                    cost = 100.0 * int(covered.sum()) + 20.0 * ring + order
                    if cost < best_cost:
                        best, best_cost = (bx, by, w, height), cost
                if best is not None and best_cost < 20.0 * (ring + 1):  # free spot on this ring: no farther
                    break
            if best is None:
                continue
            bx, by, _, _ = best
            placed.append(best)
            self.obstacles.append(sample_rect(bx, by, w, height))
            marks.append(f'<text class="label" x="{num(bx)}" y="{num(by + size * 0.93)}">{esc(text)}</text>')
            nx, ny = min(max(x, bx), bx + w), min(max(y, by), by + height)  # nearest point of the label's box
            gap = math.hypot(nx - x, ny - y)
            if gap > clearance + 6:
                sx, sy = x + (nx - x) * (clearance - 2) / gap, y + (ny - y) * (clearance - 2) / gap
                leaders.append(f"M{num(sx)} {num(sy)}L{num(nx)} {num(ny)}")
        out = f'<path d="{"".join(leaders)}" stroke="{GRID_DARK}" stroke-width="0.8" fill="none"/>' if leaders else ""
        if marks:
            out += f'<g font-size="{num(size)}" fill="{AXIS}">{"".join(marks)}</g>'
        return out

    def _best_spot(self, width: float, height: float) -> tuple[float, float]:
        """matplotlib's ``loc="best"``: of nine places inside the axes, the one covering the fewest data
        points (ties go to the earlier place: upper right first)."""
        margin = 6.0
        xs = {"l": self.left + margin, "c": (self.left + self.right - width) / 2, "r": self.right - margin - width}
        ys = {"u": self.top + margin, "c": (self.top + self.bottom - height) / 2, "l": self.bottom - margin - height}
        order = ["ur", "ul", "ll", "lr", "cr", "cl", "lc", "uc", "cc"]  # matplotlib codes 1-10 (5 and 7 coincide)
        points = np.concatenate(self.obstacles) if self.obstacles else np.empty((0, 2))
        best, best_cost = (xs["r"], ys["u"]), math.inf
        for code in order:
            x, y = xs[code[1]], ys[code[0]]
            inside = ((points[:, 0] >= x) & (points[:, 0] <= x + width) & (points[:, 1] >= y)
                      & (points[:, 1] <= y + height))
            cost = int(inside.sum())
            if cost < best_cost:
                best, best_cost = (x, y), cost
                if cost == 0:
                    break
        return best


def legend_size(entries: Sequence[LegendEntry], font: float = LEGEND_FONT,
                horizontal: bool = False) -> tuple[float, float]:
    if not entries:
        return 0.0, 0.0
    widths = [30 + text_width(e.label, font) for e in entries]
    if horizontal:
        return sum(widths) + 4, 8 + font * 1.45
    return 4 + max(widths), 8 + font * 1.45 * len(entries)


def legend_items(entries: Sequence[LegendEntry], x: float, y: float, font: float = LEGEND_FONT,
                 horizontal: bool = False) -> list[str]:
    """Markup of legend entries (swatch and label) from the top-left corner (x, y): a column, or one row."""
    row = font * 1.45
    parts = []
    sx, cy = x + 4, y + 4 + row / 2
    for entry in entries:
        if entry.kind == "patch":
            opacity = f' fill-opacity="{entry.opacity:g}"' if entry.opacity < 1 else ""
            outline = f' stroke="{entry.colour}" stroke-width="0.8"' if entry.hatch else ""
            parts.append(f'<rect x="{num(sx)}" y="{num(cy - 5)}" width="20" height="10" fill="{entry.colour}"'
                         f"{opacity}{outline}/>")
            if entry.hatch:
                parts.append(f'<rect x="{num(sx)}" y="{num(cy - 5)}" width="20" height="10" '
                             f'fill="url(#{entry.hatch})"/>')
        else:
            if entry.kind == "line":
                dash = ' stroke-dasharray="5 3"' if entry.dashed else ""
                parts.append(f'<path d="M{num(sx)} {num(cy)}h20" stroke="{entry.colour}" stroke-width="1.6"{dash}/>')
            if entry.marker or entry.kind == "marker":
                fill = "none" if entry.hollow else entry.colour
                opacity = f' fill-opacity="{entry.opacity:g}"' if entry.opacity < 1 else ""
                parts.append(f'<circle cx="{num(sx + 10)}" cy="{num(cy)}" r="{5 if entry.hollow else 3.5:g}" '
                             f'fill="{fill}" stroke="{entry.colour}"{opacity}/>')
        parts.append(f'<text x="{num(sx + 26)}" y="{num(cy + font * 0.35)}" font-size="{num(font)}">'
                     f"{esc(entry.label)}</text>")
        if horizontal:
            sx += 30 + text_width(entry.label, font)
        else:
            cy += row
    return parts
