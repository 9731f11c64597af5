"""Shared statistics: pure functions over arrays, used by the checks, compare and compress.

One module per topic (``bootstrap``, ``binning``, ``calibration``, ``paired``, ``ranking``, ...); import
from the module. Only the bootstrap names are re-exported here, so ``import assay.stats`` stays cheap.
"""

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
