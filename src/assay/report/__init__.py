"""Renderers: evidence -> self-contained HTML, Markdown (PR comments), Rich console, and SVG plots.

Computation never happens here: every renderer reads an :class:`assay.evidence.Evidence` and is generic
over its sections. Plots are written as SVG directly (``assay.report.svg``), without a plotting library.
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
