"""Model loading: ONNX, TorchScript, torch.export and factory+weights into one ``Model`` interface.

``load_model`` resolves a path through the format registry (:mod:`assay.models.formats`); every model it
returns carries a :class:`ModelSpec` that reloads it in another process.
"""

from assay.models.base import (
    Model,
    ModelInfo,
    OnnxExport,
    ThreadSetting,
    looks_like_probabilities,
    probabilities_to_logits,
)
from assay.models.export import export_onnx
from assay.models.formats import FORMATS, ModelFiles, ModelFormat, register_format
from assay.models.loader import SUPPORTED_FORMATS, check_input_compatible, load_model, load_spec
from assay.models.spec import ModelSpec

__all__ = [
    "FORMATS",
    "SUPPORTED_FORMATS",
    "Model",
    "ModelFiles",
    "ModelFormat",
    "ModelInfo",
    "ModelSpec",
    "OnnxExport",
    "ThreadSetting",
    "check_input_compatible",
    "export_onnx",
    "load_model",
    "load_spec",
    "looks_like_probabilities",
    "probabilities_to_logits",
    "register_format",
]
