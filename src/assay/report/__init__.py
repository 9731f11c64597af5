"""Renderers: results -> reports. Nothing is computed here; every renderer reads finished results.

* one evaluation (:class:`assay.evidence.Evidence`): ``html`` (one self-contained page: inline CSS and SVG,
  no scripts, no network), ``markdown`` (short enough for a pull-request comment, no plots), ``console``
  (Rich tables); all three are generic over sections, so a new check needs no renderer change;
* ``comparison``: comparison.md, junit.xml and comparison.html of ``assay compare``, selection.md/.html of
  ``assay select``; ``compression``: compression.md and the report page of ``assay compress``.

Plots are data in ``Section.plots``; ``plots`` draws each by its ``kind`` as SVG markup written directly by
``svg`` (scales, ticks, axes, legends, colour maps). No plotting library is imported (matplotlib is a
test/bench dependency only, used to check the geometry). ``thumbnails`` embeds example images as PNG data
URIs; ``formatting`` holds the number formatting and atomic file writes the renderers share.
"""

from assay.report.console import print_console
from assay.report.formatting import format_ci, format_estimate, format_metric, format_number, format_value
from assay.report.html import render_html, write_html
from assay.report.markdown import render_markdown, write_markdown
from assay.report.plots import PLOT_KINDS, PlotDataError, UnsupportedPlotError, render_plot

__all__ = [
    "PLOT_KINDS",
    "PlotDataError",
    "UnsupportedPlotError",
    "format_ci",
    "format_estimate",
    "format_metric",
    "format_number",
    "format_value",
    "print_console",
    "render_html",
    "render_markdown",
    "render_plot",
    "write_html",
    "write_markdown",
]
