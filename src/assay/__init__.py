"""Assay: is this classifier fit to ship? Metrics with confidence intervals, in one evidence bundle."""

__version__ = "0.1.0"
