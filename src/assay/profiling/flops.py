"""FLOPs and parameter counts per input sample, of an Assay model, a ``torch.nn.Module``, an ONNX file or a
``ModelProto``.

The counting itself is format knowledge and lives with the models (:mod:`assay.models.flops`, whose
docstring states the convention: FLOPs = 2 x MACs per sample, convolutions and matrix products only); an
Assay :class:`~assay.models.base.Model` counts itself (``flop_count``, ``parameter_count``). This module
is the entry point that accepts any of the four.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from assay.models.base import Model
from assay.models.flops import (
    FLOP_CONVENTION,
    ONNX_PARAMETER_CONVENTION,
    TORCH_PARAMETER_CONVENTION,
    FlopCount,
    onnx_flops,
    onnx_parameter_count,
    torch_flops,
    torch_parameter_count,
)

__all__ = [
    "FLOP_CONVENTION",
    "ONNX_PARAMETER_CONVENTION",
    "TORCH_PARAMETER_CONVENTION",
    "FlopCount",
    "count_flops",
    "count_parameters",
    "onnx_flops",
    "onnx_parameter_count",
    "parameter_convention",
    "torch_flops",
    "torch_parameter_count",
]


def _is_torch_module(value: Any) -> bool:
    import sys

    torch = sys.modules.get("torch")  # a torch module implies torch is imported already
    return torch is not None and isinstance(value, torch.nn.Module)


def count_flops(model: Any, sample: np.ndarray | None = None) -> FlopCount:
    """FLOPs per input sample of an Assay ``Model`` (``model.flop_count``), a ``torch.nn.Module``, an ONNX
    ``ModelProto`` or an ``.onnx`` path. ``sample`` (rows of real inputs; the first is used) is needed for
    torch models whose input shape is not static, and fixes free non-batch dims of ONNX graphs."""
    if isinstance(model, Model):
        return model.flop_count(sample)
    if _is_torch_module(model):
        if sample is None:
            raise ValueError("count_flops on a torch.nn.Module needs a sample (one input row)")
        from assay.models.torch_models import to_torch_inputs

        return torch_flops(model, to_torch_inputs(np.asarray(sample)[:1]))
    if isinstance(model, (str, os.PathLike)):
        model = os.fspath(model)
    return onnx_flops(model, None if sample is None else np.asarray(sample).shape[1:])


def count_parameters(model: Any) -> int | None:
    """Parameter count: an Assay ``Model`` counts itself (``model.parameter_count``; None when it cannot),
    a torch module -> :data:`TORCH_PARAMETER_CONVENTION`, ONNX -> :data:`ONNX_PARAMETER_CONVENTION`."""
    if isinstance(model, Model):
        return model.parameter_count().count
    if _is_torch_module(model):
        return torch_parameter_count(model)
    if isinstance(model, (str, os.PathLike)):
        model = os.fspath(model)
    return onnx_parameter_count(model)


def parameter_convention(model: Any) -> str:
    """The convention :func:`count_parameters` applies to ``model``."""
    if isinstance(model, Model):
        return model.parameter_count().convention
    if _is_torch_module(model):
        return TORCH_PARAMETER_CONVENTION
    return ONNX_PARAMETER_CONVENTION
