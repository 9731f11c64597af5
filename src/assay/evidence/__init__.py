"""Evidence bundle: schema plus reading and writing (atomic)."""

from assay.evidence.schema import (
    SCHEMA_VERSION,
    DataInfo,
    EnvironmentInfo,
    Evidence,
    Finding,
    Metric,
    ModelInfo,
    Section,
)

__all__ = [
    "SCHEMA_VERSION",
    "DataInfo",
    "EnvironmentInfo",
    "Evidence",
    "Finding",
    "Metric",
    "ModelInfo",
    "Section",
]
