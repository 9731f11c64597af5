"""Why a compressed variant may run *slower* than float32 on this CPU, read from its ONNX graph.

Each reason is a fact of the graph (an operator present, a count) tied to a known property of ONNX
Runtime's CPU kernels, so a report can say "int8 was slower *because* ..." instead of only "slower":

- ``ConvInteger`` (``quantize_dynamic`` on convolutions) has no fast x86 kernel in ONNX Runtime; it
  re-quantizes activations on every call and runs a generic integer GEMM, typically several times
  slower than float32 ``Conv`` (the ORT quantization guide recommends static QDQ for CNNs).
- fp16 weights on a CPU without native fp16 arithmetic: ORT has few fp16 CPU kernels and runs the rest
  in float32 behind ``Cast`` nodes it inserts at session start (visible in the optimized graph).
- QuantizeLinear/DequantizeLinear left after ORT's QDQ fusion: the ops between them run in float32 and
  every round trip converts the whole activation tensor twice.

:func:`slowdown_reasons` is a pure function of the graphs; :func:`explain_slowdown` loads a file and asks
ONNX Runtime for the graph it actually runs (:func:`runtime_graph`).
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

__all__ = [
    "NATIVE_FP16_FLAGS",
    "explain_pruning",
    "explain_slowdown",
    "runtime_graph",
    "slowdown_reasons",
]

NATIVE_FP16_FLAGS = ("avx512_fp16", "amx_fp16", "fphp", "asimdhp")
"""CPU flags for fp16 *arithmetic* (x86 AVX512-FP16/AMX-FP16, ARM FP16); ``f16c`` only converts."""

_FLOAT16 = 10  # onnx.TensorProto.FLOAT16


def runtime_graph(onnx_path: str | os.PathLike[str]) -> onnx.ModelProto | None:
    """The graph ONNX Runtime's CPU provider runs after its (hardware-independent) optimizations —
    QDQ fusion into QLinearConv/QGemm, inserted fp16 Casts — or None when the model does not load."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        try:
            ort.InferenceSession(os.fspath(onnx_path), options, providers=["CPUExecutionProvider"])
            return onnx.load(options.optimized_model_filepath)
        except Exception:
            return None


def explain_slowdown(onnx_path: str | os.PathLike[str], *, isa_flags: Sequence[str]) -> list[str]:
    """Reasons the variant at ``onnx_path`` may be slow on a CPU with ``isa_flags`` (as
    :func:`assay.environment.cpu_model_and_flags` reports them); empty when none is found."""
    import onnx

    return slowdown_reasons(onnx.load(os.fspath(onnx_path)), runtime_graph(onnx_path), isa_flags=isa_flags)


def slowdown_reasons(model: onnx.ModelProto, runtime: onnx.ModelProto | None, *,
                     isa_flags: Sequence[str]) -> list[str]:
    """Reasons read from the model file's graph (``model``) and ORT's optimized graph (``runtime``,
    None when unknown: the reasons that need it are skipped)."""
    ops = Counter(node.op_type for node in model.graph.node)
    reasons: list[str] = []
    if ops["ConvInteger"]:
        reasons.append(
            f"{ops['ConvInteger']} ConvInteger node(s): convolutions quantized dynamically (quantize_dynamic). "
            "ONNX Runtime has no fast x86 kernel for ConvInteger — activations are re-quantized on every call "
            "and run through a generic integer GEMM, typically several times slower than float32 Conv. "
            "Use static QDQ quantization (int8-static) for convolutional models"
        )
    dynamic_matmuls = ops["MatMulInteger"] + ops["DynamicQuantizeMatMul"]
    if dynamic_matmuls:
        reasons.append(
            f"{dynamic_matmuls} dynamically quantized MatMul(s) (MatMulInteger): activations are quantized at "
            "run time on every call (DynamicQuantizeLinear); this pays off for large matrix products "
            "(transformer layers) and can cost more than it saves on small ones (a classifier head)"
        )
    if _computes_in_fp16(model):
        native = sorted(set(isa_flags) & set(NATIVE_FP16_FLAGS))
        file_casts = ops["Cast"]
        runtime_casts = None if runtime is None else sum(n.op_type == "Cast" for n in runtime.graph.node)
        cast_text = f"{file_casts} Cast node(s) in the file"
        if runtime_casts is not None:
            inserted = max(runtime_casts - file_casts, 0)
            cast_text += f", {runtime_casts} in the graph ONNX Runtime runs ({inserted} inserted at load)"
        if not native:
            reasons.append(
                "float16 weights on a CPU without native fp16 arithmetic (no avx512_fp16/amx_fp16 in the CPU "
                f"flags; f16c only converts): ONNX Runtime runs fp16 ops it has no CPU kernel for in float32 "
                f"behind Cast nodes — {cast_text}. fp16 saves memory, not time, here"
            )
        elif runtime_casts is not None and runtime_casts > file_casts:
            reasons.append(
                f"float16 ops without an fp16 CPU kernel in ONNX Runtime run in float32 behind casts "
                f"({cast_text}), although the CPU has native fp16 ({', '.join(native)})"
            )
    if runtime is not None:
        float_ops = _float_ops_between_qdq(runtime)
        if float_ops:
            listed = ", ".join(f"{op} x{n}" for op, n in float_ops.most_common())
            reasons.append(
                f"{sum(float_ops.values())} op(s) still run in float32 between DequantizeLinear and QuantizeLinear "
                f"after ONNX Runtime's QDQ fusion ({listed}): each is a dequantize/requantize round trip over "
                "its activations, with no int8 kernel in between"
            )
    return reasons


def explain_pruning(flops_before: float, flops_after: float, *, latency_before: float | None = None,
                    latency_after: float | None = None, min_drop: float = 0.01) -> list[str]:
    """Reasons a pruned variant did not get cheaper: no FLOPs removed (less than ``min_drop``, a
    fraction), or FLOPs removed without a matching latency drop (overhead-bound model)."""
    reasons: list[str] = []
    if flops_before <= 0:
        return reasons
    flops_drop = 1.0 - flops_after / flops_before
    if flops_drop < min_drop:
        reasons.append(
            f"pruning removed no compute: FLOPs {flops_before:,.0f} -> {flops_after:,.0f} "
            f"({-100 * flops_drop:+.1f}%). Only the output layer or ignored layers may be prunable, or the "
            "ratio rounds to zero channels per layer"
        )
    elif latency_before and latency_after is not None and latency_before > 0:
        latency_drop = 1.0 - latency_after / latency_before
        if latency_drop < flops_drop / 2:
            reasons.append(
                f"pruning removed {100 * flops_drop:.0f}% of FLOPs but only {100 * latency_drop:.0f}% of "
                "latency: at this model/batch size the run time is dominated by per-operator overhead and "
                "memory traffic, not arithmetic"
            )
    return reasons


def _computes_in_fp16(model: onnx.ModelProto) -> bool:
    graph = model.graph
    if any(t.data_type == _FLOAT16 for t in graph.initializer):
        return True
    if any(v.type.tensor_type.elem_type == _FLOAT16 for v in graph.value_info):
        return True
    for node in graph.node:
        if node.op_type == "Cast" and any(a.name == "to" and a.i == _FLOAT16 for a in node.attribute):
            return True
        if node.op_type == "Constant" and any(a.name == "value" and a.t.data_type == _FLOAT16
                                              for a in node.attribute):
            return True
    return False


def _float_ops_between_qdq(runtime: onnx.ModelProto) -> Counter[str]:
    """Op types fed by a DequantizeLinear in ORT's optimized graph, other than a QuantizeLinear:
    float islands inside the quantized region (a DQ feeding only a graph output is the normal exit)."""
    graph = runtime.graph
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    found: Counter[str] = Counter()
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        for op in consumers.get(node.output[0], []):
            if op not in ("QuantizeLinear", "DequantizeLinear"):
                found[op] += 1
    return found
