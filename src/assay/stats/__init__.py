"""Shared statistics: bootstrap resampling and confidence intervals."""

from assay.stats.bootstrap import (
    BootstrapResult,
    bootstrap_cell_counts,
    bootstrap_weights,
    group_sums,
    percentile_ci,
)

__all__ = [
    "BootstrapResult",
    "bootstrap_cell_counts",
    "bootstrap_weights",
    "group_sums",
    "percentile_ci",
]
