"""The one interface every model format is loaded into.

Concrete loaders implement :meth:`Model._forward`; the base class turns raw outputs into logits
(refusing probability-like outputs unless told otherwise) so every format behaves the same.

Capabilities: what code above the model layer may ask of any model instead of branching on its format
-- ``spec()`` (reload it in another process), ``torch_module()``/``eager_module()`` (gradients, pruning),
``last_layer()`` (ViM), ``set_threads()``, ``flop_count()``, ``parameter_count()``, ``model_files()``
(size on disk) and ``to_onnx()`` (export for compression). The defaults here describe a model with none
of them; each format overrides what it can do.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np

from assay.errors import ModelError, OptionError, UserError
from assay.evidence.schema import ModelInfo
from assay.models.flops import NOT_COUNTED, TORCH_PARAMETER_CONVENTION, FlopCount, ParameterCount
from assay.models.formats import ModelFiles

if TYPE_CHECKING:
    import torch

    from assay.models.spec import ModelSpec

__all__ = ["Model", "ModelInfo", "OnnxExport", "ThreadSetting", "looks_like_probabilities",
           "probabilities_to_logits"]

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


def _keep() -> None:
    return None


@dataclass
class ThreadSetting:
    """What :meth:`Model.set_threads` put in effect: the model to run (the same one, or a copy reloaded with
    the threads for runtimes that fix them at load), the thread count in effect and where it comes from,
    notes for the reader, and ``restore()`` to undo a process-wide change."""

    model: Model
    threads: int | None
    source: str
    notes: list[str] = field(default_factory=list)
    restore: Callable[[], None] = _keep


class OnnxExport(NamedTuple):
    """How :meth:`Model.to_onnx` produced its file; ``copied``: the file *is* the model (an ONNX original)."""

    how: str
    copied: bool


class Model(ABC):
    """A classifier: ``logits(x) -> (N, C) float32``, optional penultimate ``features``.

    Subclasses set ``info`` and implement ``_forward(x, want_features)`` returning raw outputs and
    the feature batch (or None). Models from :func:`~assay.models.loader.load_model` carry their
    :class:`~assay.models.spec.ModelSpec`; a model built in memory has none (``spec()`` is None) and
    cannot be reloaded in another process.
    """

    info: ModelInfo
    _spec: ModelSpec | None = None

    def spec(self) -> ModelSpec | None:
        """The serialisable description that reloads this model in another process (``spec.load()``), or
        None for a model built in memory."""
        return self._spec

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

    def eager_module(self) -> torch.nn.Module | None:
        """The editable eager ``torch.nn.Module`` (a factory's), for structured pruning; None when the layers
        are compiled away (TorchScript, ``torch.export``) or there is no torch module."""
        return None

    def set_threads(self, threads: int | None) -> ThreadSetting:
        """Run with ``threads`` intra-op threads (None: keep the current setting); says what is in effect.

        Time ``setting.model`` and call ``setting.restore()`` afterwards. The default (a runtime Assay does
        not know) only records the number."""
        if threads is not None and threads < 1:
            raise OptionError(f"threads must be at least 1, got {threads}", where="threads",
                              fix="pass a positive count")
        return self._set_threads(threads)

    def _set_threads(self, threads: int | None) -> ThreadSetting:
        return ThreadSetting(self, threads, "the threads argument (unknown runtime: recorded, not enforced)")

    def flop_count(self, sample: np.ndarray | None = None) -> FlopCount:
        """FLOPs per input sample (:mod:`assay.models.flops` convention): torch ``FlopCounterMode`` on one row
        of ``sample`` (or zeros of a static input shape) when there is a torch module, else not counted."""
        module = self.torch_module()
        if module is None:
            return FlopCount(flops=None, macs=None, method=f"not counted: no torch module or ONNX file behind "
                                                           f"this {type(self).__name__}")
        from assay.models.flops import example_row, torch_flops
        from assay.models.torch_models import to_torch_inputs

        row = example_row(self.info, sample)
        if row is None:
            return FlopCount(flops=None, macs=None, method="torch model with a free input shape: pass a sample")
        return torch_flops(module, to_torch_inputs(row))

    def parameter_count(self) -> ParameterCount:
        """Number of parameters and the convention counted (None and "not counted" when unknown)."""
        module = self.torch_module()
        if module is None:
            return ParameterCount(None, NOT_COUNTED)
        from assay.models.flops import torch_parameter_count

        return ParameterCount(torch_parameter_count(module), TORCH_PARAMETER_CONVENTION)

    def model_files(self) -> ModelFiles:
        """The files that make up the model (for its size on disk): from its spec, else none."""
        spec = self.spec()
        if spec is None:
            return ModelFiles([], "no model file (in-memory model)")
        return spec.files()

    def to_onnx(self, path: str | os.PathLike[str], example: np.ndarray) -> OnnxExport:
        """Write the model as a single ONNX file at ``path`` (``example``: an input batch to export with);
        the default exports the torch module with :func:`~assay.models.export.export_onnx`."""
        module = self.torch_module()
        if module is None:
            raise ModelError(f"this {type(self).__name__} cannot be written as ONNX: it has no torch module and no "
                             "ONNX file", where=self.info.path, fix="compress an ONNX, TorchScript, torch.export or "
                             "factory model loaded with assay.models.load_model")
        from assay.models.export import export_onnx
        from assay.models.torch_models import to_torch_inputs

        export_onnx(module, to_torch_inputs(example), Path(path), class_names=self.info.class_names)
        return OnnxExport(f"the {self.info.format} model exported to ONNX with torch.onnx", copied=False)

    def release_memory(self) -> None:
        """Give back memory the runtime keeps for the next forward pass (called by the engine after a run
        of batches, before the checks allocate theirs). Nothing to do unless a format overrides it."""

    def forward(self, x: np.ndarray, want_features: bool = False, *,
                check_outputs: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits (float32, shape (N, C)) and features (or None) in one pass. ``check_outputs=False`` skips the
        "looks like probabilities" refusal: a server whose model passed it at load must not refuse a request
        whose few rows happen to be non-negative and sum to 1."""
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
            if check_outputs and looks_like_probabilities(raw):
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
