"""Assay: is this classifier fit to ship? Metrics with confidence intervals, in one evidence bundle.

Public API::

    import assay
    evidence = assay.evaluate("model.onnx", "digits", out="assay-out")
    evidence.sections["performance"].metrics["accuracy"]   # value, ci_low, ci_high, n, method

The public names are loaded on first use (PEP 562 module ``__getattr__``): ``import assay`` costs almost
nothing, so ``assay --help`` and small commands do not pay for pandas, scipy, onnxruntime or torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # the eager imports, for type checkers and IDEs
    from assay.api import evaluate, run_evaluation
    from assay.errors import AssayError, UserError
    from assay.evidence.bundle import read_bundle, read_evidence
    from assay.evidence.schema import Evidence, Metric, Section

#: public name -> the module that defines it
_LAZY = {
    "AssayError": "assay.errors",
    "UserError": "assay.errors",
    "Evidence": "assay.evidence.schema",
    "Metric": "assay.evidence.schema",
    "Section": "assay.evidence.schema",
    "evaluate": "assay.api",
    "run_evaluation": "assay.api",
    "read_bundle": "assay.evidence.bundle",
    "read_evidence": "assay.evidence.bundle",
}

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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'assay' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
