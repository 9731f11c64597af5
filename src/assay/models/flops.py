"""FLOP and parameter counts of a classifier, per input sample: what each model format counts with.

Convention: FLOPs = 2 x MACs (one multiply-accumulate is a multiply and an add), counted for one input
sample (batch 1), over the dense linear algebra only -- convolutions and matrix products. Element-wise
ops (activations, normalization, bias adds, pooling, softmax) are not counted: they are a few percent of
a CNN's or MLP's arithmetic and their cost is dominated by memory traffic, not FLOPs. The same
convention is used by ``torch.utils.flop_counter`` and by most papers' "FLOPs" columns (fvcore,
ptflops report MACs and call them FLOPs -- ours are twice theirs).

* torch: ``torch.utils.flop_counter.FlopCounterMode`` on a batch of 1. It counts ``2 * M * N * K`` for
  (add)mm/bmm and ``2 * out_elems * Cin/groups * prod(kernel)`` for convolutions (already 2 x MACs).
* ONNX: a graph count after ``onnx.shape_inference.infer_shapes`` with the batch dimension set to 1:
  Conv/ConvInteger/QLinearConv (a QDQ ``DequantizeLinear -> Conv`` is a Conv): MACs = out_elems x
  (Cin/groups) x prod(kernel) = out_elems x prod(W.shape[1:]), whatever the strides, padding and
  dilation; ConvTranspose: in_elems x prod(W.shape[1:]); Gemm/QGemm: M x N x K from the input
  shapes (transA/transB honoured); MatMul/MatMulInteger/QLinearMatMul: MACs = out_elems x K. Integer ops
  count like their float op. Nodes whose shapes stay unknown are
  skipped and named in ``method``; ops inside subgraphs (If/Loop/Scan) are not visited.

Each :class:`~assay.models.base.Model` counts itself (``Model.flop_count``, ``Model.parameter_count``)
with the functions here; :mod:`assay.profiling.flops` is the entry point that also takes bare modules,
ONNX files and ``ModelProto`` objects.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import torch

    from assay.evidence.schema import ModelInfo

__all__ = [
    "FLOP_CONVENTION",
    "NOT_COUNTED",
    "ONNX_PARAMETER_CONVENTION",
    "TORCH_PARAMETER_CONVENTION",
    "FlopCount",
    "ParameterCount",
    "example_row",
    "onnx_flops",
    "onnx_parameter_count",
    "torch_flops",
    "torch_parameter_count",
]

FLOP_CONVENTION = ("FLOPs = 2 x MACs per input sample (batch 1); convolutions and matrix products only, "
                   "element-wise ops not counted")
TORCH_PARAMETER_CONVENTION = "sum of numel over module.parameters() (buffers such as batch-norm statistics excluded)"
ONNX_PARAMETER_CONVENTION = ("elements of float and 4/8-bit integer initializers (and int32 quantized biases) with "
                             "at least 2 elements, excluding quantization scales/zero points; batch-norm statistics "
                             "count if not folded")
NOT_COUNTED = "not counted"

_CONV_WEIGHT_INDEX = {"Conv": 1, "ConvInteger": 1, "FusedConv": 1, "QLinearConv": 3}
_MATMUL_B_INDEX = {"MatMul": 1, "MatMulInteger": 1, "QLinearMatMul": 3}
_GEMM_B_INDEX = {"Gemm": 1, "QGemm": 3}  # QGemm: onnxruntime's com.microsoft quantized Gemm
_UNCOUNTED_HEAVY = ("Einsum", "LSTM", "GRU", "RNN", "Attention", "MultiHeadAttention", "FusedMatMul")
_SUBGRAPH_OPS = ("If", "Loop", "Scan")
_FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
_LOW_BIT_INT_TYPES = {2, 3, 21, 22}  # UINT8, INT8, UINT4, INT4
_INT32 = 6
# int32 inputs that are quantized biases (weights), by op and input position.
_QUANT_BIAS_INPUTS = {"DequantizeLinear": (0,), "QLinearConv": (8,), "QGemm": (6,)}
# Inputs that are quantization parameters, not weights (by op, input positions).
_QUANT_PARAM_INPUTS = {
    "QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2), "QLinearConv": (1, 2, 4, 5, 6, 7),
    "QLinearMatMul": (1, 2, 4, 5, 6, 7), "ConvInteger": (2, 3), "MatMulInteger": (2, 3),
}


class FlopCount(BaseModel):
    """FLOPs (= 2 x MACs) per input sample, how they were counted, and the split by operator."""

    model_config = ConfigDict(extra="forbid")

    flops: int | None
    macs: int | None
    method: str
    by_op: dict[str, int] = Field(default_factory=dict, description="FLOPs per operator type.")
    convention: str = FLOP_CONVENTION


# ------------------------------------------------------------------------------------------------ torch


def torch_flops(module: torch.nn.Module, example: Any) -> FlopCount:
    """FLOPs of one forward pass of ``module`` on ``example`` (a batch of 1) with FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        module(example)
    by_op = {str(op): int(v) for op, v in counter.get_flop_counts().get("Global", {}).items() if v}
    total = int(counter.get_total_flops())
    return FlopCount(flops=total, macs=total // 2, by_op=by_op,
                     method="torch.utils.flop_counter.FlopCounterMode on a batch of 1 (counts 2 x MACs for "
                            "matmul/conv; element-wise ops not counted)")


def torch_parameter_count(module: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


# ------------------------------------------------------------------------------------------------- onnx


def _load_onnx(source: Any) -> Any:
    import onnx

    if isinstance(source, onnx.ModelProto):
        return source
    return onnx.load(os.fspath(source), load_external_data=False)  # shapes are in the dims, not the data


def _set_static_dims(value_infos: Sequence[Any], shape: Sequence[int] | None) -> int | None:
    """Batch dim -> 1 (or the whole shape -> ``shape``); returns a fixed batch size > 1 left in place."""
    fixed = None
    for vi in value_infos:
        tt = vi.type.tensor_type
        if not tt.HasField("shape") or len(tt.shape.dim) == 0:
            continue
        dims = tt.shape.dim
        if shape is not None and len(shape) == len(dims):
            for d, size in zip(dims, shape, strict=True):
                d.Clear()
                d.dim_value = int(size)
            continue
        first = dims[0]
        if first.HasField("dim_value") and first.dim_value > 1:
            fixed = int(first.dim_value)
        elif not (first.HasField("dim_value") and first.dim_value == 1):
            first.Clear()
            first.dim_value = 1
    return fixed


def _shape_table(model: Any) -> dict[str, list[int] | None]:
    """name -> static shape (None when some dim is unknown) for every value and initializer."""
    table: dict[str, list[int] | None] = {}
    graph = model.graph
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            table.setdefault(vi.name, None)
            continue
        dims = [int(d.dim_value) for d in tt.shape.dim if d.HasField("dim_value") and d.dim_value > 0]
        table[vi.name] = dims if len(dims) == len(tt.shape.dim) else None
    for t in graph.initializer:
        table[t.name] = [int(d) for d in t.dims]
    return table


def _attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _node_macs(node: Any, shapes: dict[str, list[int] | None]) -> int | None:
    """MACs of one node, or None when a needed shape is unknown."""
    def shape(i: int, outputs: bool = False) -> list[int] | None:
        names = node.output if outputs else node.input
        return shapes.get(names[i]) if i < len(names) and names[i] else None

    op = node.op_type
    if op in _CONV_WEIGHT_INDEX:
        w, y = shape(_CONV_WEIGHT_INDEX[op]), shape(0, outputs=True)
        return None if w is None or y is None else math.prod(y) * math.prod(w[1:])
    if op == "ConvTranspose":
        x, w = shape(0), shape(1)
        return None if x is None or w is None else math.prod(x) * math.prod(w[1:])
    if op in _GEMM_B_INDEX:
        a, b = shape(0), shape(_GEMM_B_INDEX[op])
        if a is None or b is None or len(a) != 2 or len(b) != 2:
            return None
        m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
        n = b[0] if _attr(node, "transB", 0) else b[1]
        return m * n * k
    if op in _MATMUL_B_INDEX:
        a, y = shape(0), shape(0, outputs=True)
        return None if a is None or y is None or not a else math.prod(y) * a[-1]
    return None


def _is_counted(op: str) -> bool:
    return op in _CONV_WEIGHT_INDEX or op in _MATMUL_B_INDEX or op in _GEMM_B_INDEX or op == "ConvTranspose"


def onnx_flops(source: Any, sample_shape: Sequence[int] | None = None) -> FlopCount:
    """FLOPs per sample of an ONNX model (``ModelProto`` or path), by a graph count after shape inference.

    ``sample_shape``: the shape of one input sample without the batch dim, to fix other free dims.
    """
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(_load_onnx(source))
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [vi for vi in graph.input if vi.name not in initializers]
    full_shape = [1, *sample_shape] if sample_shape is not None and len(inputs) == 1 else None
    fixed = _set_static_dims(inputs, full_shape)
    _set_static_dims(graph.output, None)
    del graph.value_info[:]
    notes: list[str] = []
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except (onnx.shape_inference.InferenceError, ValueError, RuntimeError) as exc:  # e.g. a custom op's schema
        notes.append(f"shape inference failed ({type(exc).__name__}); stored shapes only")
    shapes = _shape_table(model)
    by_op: dict[str, int] = {}
    skipped: list[str] = []
    uncounted: dict[str, int] = {}
    for node in model.graph.node:
        if _is_counted(node.op_type):
            macs = _node_macs(node, shapes)
            if macs is None:
                skipped.append(node.name or f"{node.op_type}->{node.output[0]}")
            else:
                by_op[node.op_type] = by_op.get(node.op_type, 0) + 2 * macs
        elif node.op_type in _UNCOUNTED_HEAVY or node.op_type in _SUBGRAPH_OPS:
            uncounted[node.op_type] = uncounted.get(node.op_type, 0) + 1
    divisor = fixed or 1
    if fixed:
        notes.append(f"the graph has a fixed batch of {fixed}: counted per batch, divided by {fixed}")
        by_op = {k: v // divisor for k, v in by_op.items()}
    if skipped:
        notes.append(f"PARTIAL: skipped {len(skipped)} node(s) with unknown shapes ({', '.join(skipped[:5])}"
                     f"{', ...' if len(skipped) > 5 else ''})")
    if uncounted:
        notes.append("not counted: " + ", ".join(f"{op} x{k}" for op, k in sorted(uncounted.items())))
    if not by_op and not skipped:
        notes.append("no Conv/Gemm/MatMul nodes: the model's arithmetic is not in ops this count covers")
    total = sum(by_op.values())
    if skipped and not by_op:
        return FlopCount(flops=None, macs=None, by_op={}, method="onnx graph count: " + "; ".join(notes))
    method = ("onnx graph count after shape inference at batch 1 (Conv: out x Cin/groups x kernel; "
              "Gemm/MatMul: M x N x K; 2 FLOPs per MAC)")
    return FlopCount(flops=total, macs=total // 2, by_op=by_op,
                     method=method + ("; " + "; ".join(notes) if notes else ""))


def onnx_parameter_count(source: Any) -> int:
    """Parameters of an ONNX model under :data:`ONNX_PARAMETER_CONVENTION`."""
    model = _load_onnx(source)
    graph = model.graph
    quant_params: set[str] = set()
    quant_biases: set[str] = set()
    for node in graph.node:
        for i in _QUANT_PARAM_INPUTS.get(node.op_type, ()):
            if i < len(node.input) and node.input[i]:
                quant_params.add(node.input[i])
        for i in _QUANT_BIAS_INPUTS.get(node.op_type, ()):
            if i < len(node.input) and node.input[i]:
                quant_biases.add(node.input[i])
    total = 0
    for t in graph.initializer:
        size = math.prod(int(d) for d in t.dims) if len(t.dims) else 1
        if t.name in quant_params or size < 2:
            continue
        if t.data_type in _FLOAT_TYPES or t.data_type in _LOW_BIT_INT_TYPES or \
                (t.data_type == _INT32 and t.name in quant_biases):
            total += size
    return int(total)


class ParameterCount(NamedTuple):
    """A parameter count (None when nothing can be counted) and the convention it follows."""

    # The public field name shadows tuple.count on purpose (callers read ``.count``); typeshed types
    # tuple.count as a method, so mypy flags the override.
    count: int | None  # type: ignore[assignment]
    convention: str


def example_row(info: ModelInfo, sample: np.ndarray | None) -> np.ndarray | None:
    """One input row to count with: the first row of ``sample``, else zeros of the model's static input
    shape; None when neither is known (a free dimension, or text inputs)."""
    if sample is not None:
        return np.asarray(sample)[:1]
    shape = info.input_shape
    dims = [int(d) for d in shape[1:] if d is not None]
    if len(shape) < 1 or len(dims) != len(shape) - 1 or info.input_dtype == "string":
        return None
    return np.zeros((1, *dims), dtype=np.dtype(info.input_dtype))
