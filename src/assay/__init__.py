"""Assay: is this classifier fit to ship? Metrics with confidence intervals, in one evidence bundle.

Public API::

    import assay
    evidence = assay.evaluate("model.onnx", "digits", out="assay-out")
    evidence = assay.evaluate(torch_module, (x, y))          # in memory: an nn.Module and arrays
    data = assay.Dataset.from_arrays(x, y, class_names=["cat", "dog"], meta={"region": region})
    evidence.sections["performance"].metrics["accuracy"]   # value, ci_low, ci_high, n, method
    result = assay.compare("old-bundle", "new-bundle")       # the paired regression gate
    pick = assay.select(["a.onnx", "b.onnx"], "test.npz", constraints=["latency_p95_ms<=5"])
    variants = assay.compress("model.onnx", "test.npz", calibration="calib.npz", methods=["int8-static"])
    cost = assay.profile("model.onnx", sample)               # latency with CIs, memory, FLOPs, energy
    report = assay.scan("model.pt", expect_sha256=pin)       # would loading this file run code?
    evidence, predictions = assay.read_bundle("assay-out")

Everything else is internal or documented per module (``assay.evaluation``, ``assay.checks``, ...). The
public names are loaded on first use (PEP 562 module ``__getattr__``): ``import assay`` costs almost nothing,
so ``assay --help`` and small commands do not pay for pandas, scipy, onnxruntime or torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from assay._version import __version__

if TYPE_CHECKING:  # the eager imports, for type checkers and IDEs
    from assay.api import card, compare, compress, evaluate, profile, run_evaluation, select
    from assay.data.dataset import Dataset
    from assay.errors import AssayError, UserError
    from assay.evidence.bundle import read_bundle, read_evidence
    from assay.evidence.schema import Evidence, Metric, Section
    from assay.security.scan import scan_model as scan

#: public name -> (module, attribute); attribute None: the module itself (``assay.compare`` and
#: ``assay.compress`` are callable packages, the function and the import path at once).
_LAZY: dict[str, tuple[str, str | None]] = {
    "AssayError": ("assay.errors", "AssayError"),
    "UserError": ("assay.errors", "UserError"),
    "Evidence": ("assay.evidence.schema", "Evidence"),
    "Metric": ("assay.evidence.schema", "Metric"),
    "Section": ("assay.evidence.schema", "Section"),
    "Dataset": ("assay.data.dataset", "Dataset"),
    "evaluate": ("assay.api", "evaluate"),
    "card": ("assay.api", "card"),
    "run_evaluation": ("assay.api", "run_evaluation"),
    "compare": ("assay.compare", None),
    "select": ("assay.api", "select"),
    "compress": ("assay.compress", None),
    "profile": ("assay.api", "profile"),
    "read_bundle": ("assay.evidence.bundle", "read_bundle"),
    "read_evidence": ("assay.evidence.bundle", "read_evidence"),
    "Reference": ("assay.reference", "Reference"),
    "scan": ("assay.security.scan", "scan_model"),
}

__all__ = [
    "AssayError",
    "Dataset",
    "Evidence",
    "Metric",
    "Reference",
    "Section",
    "UserError",
    "__version__",
    "card",
    "compare",
    "compress",
    "evaluate",
    "profile",
    "read_bundle",
    "read_evidence",
    "run_evaluation",
    "scan",
    "select",
]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'assay' has no attribute {name!r}")
    module = import_module(target[0])
    value = module if target[1] is None else getattr(module, target[1])
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
