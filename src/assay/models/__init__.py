"""Model loading: ONNX, TorchScript, torch.export and factory+weights into one ``Model`` interface."""

from assay.models.base import Model, ModelInfo, looks_like_probabilities, probabilities_to_logits
from assay.models.export import export_onnx
from assay.models.loader import SUPPORTED_FORMATS, check_input_compatible, load_model

__all__ = [
    "SUPPORTED_FORMATS",
    "Model",
    "ModelInfo",
    "check_input_compatible",
    "export_onnx",
    "load_model",
    "looks_like_probabilities",
    "probabilities_to_logits",
]
