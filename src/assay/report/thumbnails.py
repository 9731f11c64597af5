"""Small example images in reports: encode arrays as PNG data, draw a grid of them as inline SVG.

Plot contract (kind ``images``)::

    {"kind": "images", "title": str, "columns": [str, ...] (optional header),
     "rows": [{"label": str, "images": [base64 PNG, ...], "captions": [str, ...] (optional)}]}

Images are embedded as ``data:image/png;base64`` URIs: the report stays one offline file. Thumbnails are
small (default 48 px, nearest-neighbour upscaling keeps tiny inputs such as 8x8 digits crisp).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["png_thumbnail", "render_images"]


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


def render_images(plot: Mapping[str, Any], cell: int = 56, label_width: int = 150) -> str:
    """SVG grid: one row per entry (label at left), one thumbnail per column, optional captions."""
    rows = plot.get("rows") or []
    columns = plot.get("columns") or []
    n_cols = max([len(r.get("images", [])) for r in rows] + [len(columns), 1])
    caption_h = 12 if any(r.get("captions") for r in rows) else 0
    header_h = 16 if columns else 0
    title_h = 18 if plot.get("title") else 0
    row_h = cell + caption_h + 4
    width = label_width + n_cols * cell
    height = title_h + header_h + len(rows) * row_h
    esc = lambda s: html.escape(str(s), quote=True)  # noqa: E731
    parts = [f'<svg class="assay-plot" role="img" aria-label="{esc(plot.get("title", "images"))}" '
             f'xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'style="font-family: system-ui, sans-serif; font-size: 10px">']
    if title_h:
        parts.append(f'<text x="0" y="12" font-size="12">{esc(plot["title"])}</text>')
    for j, name in enumerate(columns):
        x = label_width + j * cell + cell / 2
        parts.append(f'<text x="{x:.0f}" y="{title_h + 11}" text-anchor="middle">{esc(name)}</text>')
    for i, row in enumerate(rows):
        y = title_h + header_h + i * row_h
        parts.append(f'<text x="0" y="{y + cell / 2 + 4:.0f}">{esc(row.get("label", ""))}</text>')
        captions = row.get("captions") or []
        for j, data in enumerate(row.get("images", [])):
            x = label_width + j * cell
            parts.append(f'<image x="{x + 2}" y="{y + 2}" width="{cell - 4}" height="{cell - 4}" '
                         f'preserveAspectRatio="xMidYMid meet" style="image-rendering: pixelated" '
                         f'href="data:image/png;base64,{data}"/>')
            if j < len(captions):
                parts.append(f'<text x="{x + cell / 2:.0f}" y="{y + cell + 9}" text-anchor="middle" '
                             f'font-size="9">{esc(captions[j])}</text>')
    parts.append("</svg>")
    return "".join(parts)
