"""Corruptions: deterministic, batch-invariant perturbations of evaluation inputs, five severities each
(see :mod:`assay.corruptions.base` for the determinism contract).

One module per modality; each exports a ``<MODALITY>_CORRUPTIONS`` registry (name -> CorruptionInfo) and
a ``corrupt_*`` function.
"""

from assay.corruptions.base import SEVERITIES, CorruptionInfo, check_severity, sample_rng
from assay.corruptions.image import IMAGE_CORRUPTIONS, corrupt_images
from assay.corruptions.tabular import TABULAR_CORRUPTIONS, TABULAR_IMPUTATION, corrupt_table
from assay.corruptions.text import TEXT_CORRUPTIONS, corrupt_text, corrupt_texts

__all__ = [
    "IMAGE_CORRUPTIONS",
    "SEVERITIES",
    "TABULAR_CORRUPTIONS",
    "TABULAR_IMPUTATION",
    "TEXT_CORRUPTIONS",
    "CorruptionInfo",
    "check_severity",
    "corrupt_images",
    "corrupt_table",
    "corrupt_text",
    "corrupt_texts",
    "sample_rng",
]
