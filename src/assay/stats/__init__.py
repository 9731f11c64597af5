"""Shared statistics: bootstrap resampling and confidence intervals."""

from assay.stats.bootstrap import (
    BootstrapResult,
    SharedWeights,
    bootstrap_cell_counts,
    bootstrap_weights,
    group_sums,
    percentile_ci,
    spawn_seed,
)

__all__ = [
    "BootstrapResult",
    "SharedWeights",
    "bootstrap_cell_counts",
    "bootstrap_weights",
    "group_sums",
    "percentile_ci",
    "spawn_seed",
]
