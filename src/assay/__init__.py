"""Assay: is this classifier fit to ship? Metrics with confidence intervals, in one evidence bundle.

Public API::

    import assay
    evidence = assay.evaluate("model.onnx", "digits", out="assay-out")
    evidence.sections["performance"].metrics["accuracy"]   # value, ci_low, ci_high, n, method
"""

__version__ = "0.1.0"

from assay.api import evaluate, run_evaluation
from assay.errors import AssayError, UserError
from assay.evidence.bundle import read_bundle, read_evidence
from assay.evidence.schema import Evidence, Metric, Section

__all__ = [
    "AssayError",
    "Evidence",
    "Metric",
    "Section",
    "UserError",
    "__version__",
    "evaluate",
    "read_bundle",
    "read_evidence",
    "run_evaluation",
]
