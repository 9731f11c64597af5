"""Deprecated: FLOP and parameter counts moved to :mod:`assay.profiling.flops` (this path works for one
release and warns)."""

from __future__ import annotations

from typing import Any

from assay.compress._moved import moved_attribute

_MOVED = {
    "assay.profiling.flops": ("FLOP_CONVENTION", "ONNX_PARAMETER_CONVENTION", "TORCH_PARAMETER_CONVENTION",
                              "FlopCount", "count_flops", "count_parameters", "onnx_flops", "onnx_parameter_count",
                              "parameter_convention", "torch_flops", "torch_parameter_count"),
}


def __getattr__(name: str) -> Any:
    return moved_attribute(__name__, name, _MOVED)
