"""Model loading: ONNX, TorchScript, torch.export and factory+weights into one ``Model`` interface."""

from assay.models.base import Model, ModelInfo, looks_like_probabilities

__all__ = ["Model", "ModelInfo", "looks_like_probabilities"]
