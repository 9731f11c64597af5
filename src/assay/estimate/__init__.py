"""Label-efficient accuracy estimation (``assay estimate``): which items of an unlabelled pool to label
(active testing: importance sampling by the model's expected errors), the queue a labeller fills in, and the
pool's accuracy and per-class accuracy from those labels, unbiased, with intervals, as an evidence bundle.

:func:`select_queue` draws the queue and :func:`write_queue` writes it (CSV + design record);
:func:`run_estimate` reads the labels back (or simulates them from a labelled pool) and returns an
:class:`EstimateRun`; :func:`write_estimate` writes the bundle. The statistics live in
:mod:`assay.stats.active_testing`.
"""

from assay.estimate.queue import (
    QUEUE_COLUMNS,
    LabelQueue,
    design_path,
    is_design_record,
    is_estimate_queue,
    read_queue,
    read_queue_labels,
    write_queue,
)
from assay.estimate.run import (
    ESTIMATE_KIND,
    EstimateRun,
    EstimateSettings,
    estimate_inputs,
    pool_fingerprint,
    read_surrogate_probs,
    run_estimate,
    select_queue,
    write_estimate,
)

__all__ = [
    "ESTIMATE_KIND",
    "QUEUE_COLUMNS",
    "EstimateRun",
    "EstimateSettings",
    "LabelQueue",
    "design_path",
    "estimate_inputs",
    "is_design_record",
    "is_estimate_queue",
    "pool_fingerprint",
    "read_queue",
    "read_queue_labels",
    "read_surrogate_probs",
    "run_estimate",
    "select_queue",
    "write_estimate",
    "write_queue",
]
