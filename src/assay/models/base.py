"""The one interface every model format is loaded into.

Concrete loaders implement :meth:`Model._forward`; the base class turns raw outputs into logits
(refusing probability-like outputs unless told otherwise) so every format behaves the same.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Literal

import numpy as np

from assay.errors import UserError
from assay.evidence.schema import ModelInfo

if TYPE_CHECKING:
    import torch

__all__ = ["Model", "ModelInfo", "looks_like_probabilities", "probabilities_to_logits"]

OutputKind = Literal["logits", "probabilities"]


def looks_like_probabilities(outputs: np.ndarray, atol: float = 1e-4) -> bool:
    """True when every row is non-negative and sums to 1 (a softmax output, not logits)."""
    outputs = np.asarray(outputs)
    if outputs.ndim != 2 or outputs.shape[0] == 0 or outputs.shape[1] < 2:
        return False
    return bool(np.all(outputs >= 0) and np.allclose(outputs.sum(axis=1), 1.0, atol=atol))


def probabilities_to_logits(probabilities: np.ndarray) -> np.ndarray:
    """Log-probabilities, usable as logits (softmax of log p is p); zeros clipped to the float32 tiny."""
    tiny = np.finfo(np.float32).tiny
    return np.log(np.clip(probabilities, tiny, None)).astype(np.float32)


class Model(ABC):
    """A classifier: ``logits(x) -> (N, C) float32``, optional penultimate ``features``.

    Subclasses set ``info`` and implement ``_forward(x, want_features)`` returning raw outputs and
    the feature batch (or None).
    """

    info: ModelInfo

    @abstractmethod
    def _forward(self, x: np.ndarray, want_features: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw model outputs for a batch, and the penultimate features when asked and available."""

    def torch_module(self) -> torch.nn.Module | None:
        """The underlying ``torch.nn.Module`` for gradient-based checks, or None (e.g. ONNX)."""
        return None

    def last_layer(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(weight (C, D), bias (C,))`` of the final affine layer when the features are its input and
        its output is the logits (``logits = features @ weight.T + bias``; ViM needs it), else None."""
        return None

    @property
    def has_features(self) -> bool:
        return self.info.feature_source is not None

    def release_memory(self) -> None:
        """Give back memory the runtime keeps for the next forward pass (called by the engine after a run
        of batches, before the checks allocate theirs). Nothing to do unless a format overrides it."""

    def forward(self, x: np.ndarray, want_features: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits (float32, shape (N, C)) and features (or None) in one pass."""
        raw, feats = self._forward(x, want_features and self.has_features)
        raw = np.asarray(raw)
        if raw.ndim != 2 or raw.shape[1] != self.info.num_classes:
            raise UserError(
                f"the model returned outputs of shape {tuple(raw.shape)}, expected (N, {self.info.num_classes})",
                where=self.info.path,
                fix="make the model return one row of class scores per input",
            )
        if self.info.outputs == "probabilities":
            logits = probabilities_to_logits(raw)
        else:
            if looks_like_probabilities(raw):
                raise UserError(
                    "the model's outputs look like probabilities (non-negative rows summing to 1), not logits",
                    where=self.info.path,
                    fix="export the model without its final softmax, or pass --outputs probabilities "
                    "(log-probabilities are then used as logits)",
                )
            logits = raw.astype(np.float32, copy=False)
        if feats is not None:
            feats = np.asarray(feats, dtype=np.float32).reshape(len(feats), -1)
        return logits, feats

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Class logits, float32 of shape (N, C)."""
        return self.forward(x, want_features=False)[0]

    def features(self, x: np.ndarray) -> np.ndarray | None:
        """Penultimate embedding (N, D), or None when the model exposes none."""
        return self.forward(x, want_features=True)[1]
