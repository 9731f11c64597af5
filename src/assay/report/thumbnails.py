"""Small example images in reports: encode arrays as PNG data, draw a grid of them as inline SVG.

Plot contract (kind ``images``)::

    {"kind": "images", "title": str, "columns": [str, ...] (optional header),
     "rows": [{"label": str, "images": [base64 PNG, ...], "captions": [str, ...] (optional)}]}

Images are embedded as ``data:image/png;base64`` URIs: the report stays one offline file. Thumbnails are
small (default 48 px, nearest-neighbour upscaling keeps tiny inputs such as 8x8 digits crisp).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from typing import Any

import numpy as np

from assay.report.svg import FONT_STACK, esc, text_width, wrap

__all__ = ["png_thumbnail", "render_images"]

MAX_WIDTH = 680.0  # a row of thumbnails wraps beyond this (unless columns are given): no scaling at 800 px
HALF_ROW = 540.0  # about half the report's plot area at 1400 px (two columns of ~556 px)
MAX_CELL = 132.0  # widest cell; longer captions wrap
MAX_LABEL = 170.0  # widest row-label column; longer labels wrap
TITLE, LABEL_FONT, HEADER_FONT, CAPTION_FONT = 12.0, 11.0, 10.0, 9.0


def png_thumbnail(image: np.ndarray, size: int = 48) -> str:
    """Base64 PNG of one image, (C, H, W) or (H, W) float in [0, 1], longest side scaled to ``size``."""
    from PIL import Image

    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr[:3], 0, -1)
    pixels = (np.clip(arr, 0.0, 1.0) * 255).round().astype(np.uint8)
    img = Image.fromarray(pixels)
    h, w = pixels.shape[:2]
    scale = size / max(h, w)
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BILINEAR
    img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def render_images(plot: Mapping[str, Any], thumb: int = 52) -> str:
    """SVG grid: one entry per row (its label at left), one thumbnail per column, optional captions.

    Cells are as wide as the longest caption needs (56 to 132 px; longer captions wrap, at most three
    lines), headers and labels wrap within their cell or column, and without ``columns`` a long row wraps
    onto further lines so the figure stays within ``MAX_WIDTH``; every caption, header and row label
    (``class="label"``) has its own box, so none overlaps another.
    """
    rows = plot.get("rows") or []
    columns = [str(c) for c in plot.get("columns") or []]
    n_cols = max([len(r.get("images", [])) for r in rows] + [len(columns), 1])
    captions = [[str(c) for c in r.get("captions") or []] for r in rows]
    widest = max([text_width(c, CAPTION_FONT) for cs in captions for c in cs]
                 + [text_width(c, HEADER_FONT) for c in columns], default=0.0)
    cell = float(min(max(thumb + 4, widest + 10), MAX_CELL))
    label_w = min(max((text_width(r.get("label", ""), LABEL_FONT) for r in rows), default=0.0) + 14, MAX_LABEL)
    per_line = n_cols if columns else max(1, int((MAX_WIDTH - label_w) // cell))
    width = label_w + min(n_cols, per_line) * cell
    title_lines = wrap(plot.get("title"), max(width, min(text_width(plot.get("title") or "", TITLE) + 4, MAX_WIDTH))
                       - 4, TITLE)
    width = max(width, max((text_width(t, TITLE) for t in title_lines), default=0.0) + 4)
    parts = []
    y = 0.0
    for line in title_lines:
        y += TITLE * 1.25
        parts.append(f'<text class="title" x="0" y="{y - TITLE * 0.3:.1f}" font-size="{TITLE:g}">{esc(line)}</text>')
    if columns:
        header_lines = [wrap(name, cell - 4, HEADER_FONT, max_lines=2) for name in columns]
        depth = max(len(h) for h in header_lines)
        for j, header in enumerate(header_lines):
            x = label_w + j * cell + cell / 2
            for k, line in enumerate(header):
                parts.append(f'<text class="label" x="{x:.1f}" y="{y + (k + 1) * HEADER_FONT * 1.2 - 2:.1f}" '
                             f'text-anchor="middle" font-size="{HEADER_FONT:g}">{esc(line)}</text>')
        y += depth * HEADER_FONT * 1.2 + 4
    for row, row_captions in zip(rows, captions, strict=True):
        lines = [wrap(c, cell - 6, CAPTION_FONT, max_lines=3) for c in row_captions]
        caption_h = max((len(c) for c in lines), default=0) * CAPTION_FONT * 1.2
        cell_h = thumb + 4 + caption_h + (6 if caption_h else 4)
        images = row.get("images", [])
        n_lines = max(1, -(-len(images) // per_line))
        label = wrap(row.get("label", ""), label_w - 10, LABEL_FONT, max_lines=3)
        top = y
        for k, line in enumerate(label):
            parts.append(f'<text class="label" x="0" y="{top + thumb / 2 + 4 + (k - (len(label) - 1) / 2) * 13:.1f}" '
                         f'font-size="{LABEL_FONT:g}">{esc(line)}</text>')
        for j, data in enumerate(images):
            x = label_w + (j % per_line) * cell
            cy = top + (j // per_line) * cell_h
            parts.append(f'<image x="{x + (cell - thumb) / 2:.1f}" y="{cy + 2:.1f}" width="{thumb}" height="{thumb}" '
                         f'preserveAspectRatio="xMidYMid meet" style="image-rendering: pixelated" '
                         f'href="data:image/png;base64,{data}"/>')
            for k, line in enumerate(lines[j] if j < len(lines) else []):
                parts.append(f'<text class="label" x="{x + cell / 2:.1f}" '
                             f'y="{cy + thumb + 4 + (k + 1) * CAPTION_FONT * 1.2 - 2:.1f}" text-anchor="middle" '
                             f'font-size="{CAPTION_FONT:g}">{esc(line)}</text>')
        y = top + max(n_lines * cell_h, len(label) * 13 + 6)
    height = max(y, 1.0)
    # Thumbnails are not scaled down to share a row with another plot (their captions would shrink
    # below reading size): beyond a half row they take a whole one.
    kind = "assay-plot assay-images" + (" wide" if width > HALF_ROW else "")
    head = (f'<svg class="{kind}" role="img" aria-label="{esc(plot.get("title", "images"))}" '
            f'xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" style="font-family: {FONT_STACK}; font-size: 10px">')
    return head + "".join(parts) + "</svg>"
