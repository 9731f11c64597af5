"""FLOP and parameter counts against hand-computed values (torch, exported ONNX, quantized ONNX, hand-built graphs)."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from assay.models.export import export_onnx
from assay.models.loader import load_model
from assay.profiling.flops import (
    FLOP_CONVENTION,
    count_flops,
    count_parameters,
    onnx_flops,
    onnx_parameter_count,
)
from conftest import LinearModel


class SmallNet(nn.Module):
    """A plain conv, a grouped strided conv, a dilated depthwise conv and a linear layer on 3x8x8 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.plain = nn.Conv2d(3, 4, 3, padding=1)                           # 3x8x8 -> 4x8x8
        self.grouped = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2)     # -> 8x4x4
        self.dilated = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)   # -> 8x4x4
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.plain(x))
        x = torch.relu(self.grouped(x))
        x = torch.relu(self.dilated(x))
        return self.fc(x.flatten(1))


# Hand counts: MACs = output elements x (Cin / groups) x kernel area; linear = in x out.
PLAIN_MACS = (4 * 8 * 8) * 3 * 9          # 6912
GROUPED_MACS = (8 * 4 * 4) * (4 // 2) * 9  # 2304
DILATED_MACS = (8 * 4 * 4) * 1 * 9         # 1152
FC_MACS = 128 * 5                          # 640
TOTAL_MACS = PLAIN_MACS + GROUPED_MACS + DILATED_MACS + FC_MACS
PARAMS = (4 * 3 * 9 + 4) + (8 * 2 * 9 + 8) + (8 * 1 * 9 + 8) + (128 * 5 + 5)


@pytest.fixture(scope="module")
def net() -> SmallNet:
    torch.manual_seed(0)
    return SmallNet().eval()


@pytest.fixture(scope="module")
def onnx_path(net, tmp_path_factory):
    path = tmp_path_factory.mktemp("flops") / "small.onnx"
    export_onnx(net, torch.zeros(2, 3, 8, 8), path)
    return path


def test_torch_flops_match_hand_count(net):
    fc = count_flops(net, np.zeros((1, 3, 8, 8), np.float32))
    assert fc.macs == TOTAL_MACS
    assert fc.flops == 2 * TOTAL_MACS  # FlopCounterMode already counts 2 x MACs
    assert fc.by_op["aten.convolution"] == 2 * (PLAIN_MACS + GROUPED_MACS + DILATED_MACS)
    assert fc.by_op["aten.addmm"] == 2 * FC_MACS
    assert fc.convention == FLOP_CONVENTION


def test_flops_are_per_sample_whatever_the_sample_batch(net):
    assert count_flops(net, np.zeros((7, 3, 8, 8), np.float32)).flops == 2 * TOTAL_MACS


def test_onnx_flops_match_the_torch_model(onnx_path):
    fc = onnx_flops(onnx_path)
    assert fc.flops == 2 * TOTAL_MACS
    assert fc.by_op == {"Conv": 2 * (PLAIN_MACS + GROUPED_MACS + DILATED_MACS), "Gemm": 2 * FC_MACS}
    assert "PARTIAL" not in fc.method


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script
def test_loaded_models_count_through_their_runtime(net, onnx_path, tmp_path):
    sample = np.zeros((2, 3, 8, 8), np.float32)
    onnx_model = load_model(onnx_path, sample=sample)
    assert count_flops(onnx_model).flops == 2 * TOTAL_MACS
    assert count_parameters(onnx_model) == PARAMS
    script = tmp_path / "small.pt"
    torch.jit.script(net).save(str(script))
    torch_model = load_model(script, sample=sample)
    assert count_flops(torch_model, sample).flops == 2 * TOTAL_MACS
    assert count_parameters(torch_model) == PARAMS


def test_parameter_counts_match_hand_count(net, onnx_path):
    assert count_parameters(net) == PARAMS
    assert onnx_parameter_count(onnx_path) == PARAMS


def _calibration_reader():
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self._batches = iter([{"input": rng.random((2, 3, 8, 8), dtype=np.float32)} for _ in range(2)])

        def get_next(self):
            return next(self._batches, None)

    return Reader()


@pytest.mark.parametrize("kind", ["dynamic", "qdq", "qoperator"])
def test_quantized_graphs_count_like_their_float_ops(onnx_path, tmp_path, kind, caplog):
    from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static

    out = tmp_path / f"{kind}.onnx"
    caplog.set_level(logging.ERROR)  # ORT's "consider pre-processing" advice
    if kind == "dynamic":
        quantize_dynamic(str(onnx_path), str(out))
    else:
        fmt = QuantFormat.QDQ if kind == "qdq" else QuantFormat.QOperator
        quantize_static(str(onnx_path), str(out), _calibration_reader(), quant_format=fmt)
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    expected_ops = {"dynamic": {"ConvInteger", "MatMulInteger"}, "qdq": {"DequantizeLinear", "Conv"},
                    "qoperator": {"QLinearConv", "QGemm"}}[kind]
    assert expected_ops <= ops
    fc = onnx_flops(out)
    assert fc.flops == 2 * TOTAL_MACS
    # int8 weights and int32 biases count; scales and zero points do not.
    assert onnx_parameter_count(out) == PARAMS


# ------------------------------------------------------------------------------- hand-built graphs


def _graph_model(nodes, inputs, outputs, initializers, opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _weight(name, shape):
    return numpy_helper.from_array(np.ones(shape, np.float32), name)


def test_conv_with_groups_strides_padding_dilation_in_a_hand_built_graph():
    # 6x11x11 input, 9 output channels, groups 3, 3x3 kernel, stride 2, pads 1, dilation 2:
    # out = floor((11 + 2 - 2*(3-1) - 1) / 2) + 1 = 5 -> 9x5x5 outputs, each 6/3 x 9 MACs.
    conv = helper.make_node("Conv", ["x", "w"], ["y"], group=3, strides=[2, 2], pads=[1, 1, 1, 1],
                            dilations=[2, 2], kernel_shape=[3, 3])
    model = _graph_model([conv], [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6, 11, 11])],
                         [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [_weight("w", (9, 2, 3, 3))])
    fc = onnx_flops(model)
    assert fc.macs == 9 * 5 * 5 * 2 * 9
    assert fc.flops == 2 * fc.macs


def test_gemm_transposes_and_batched_matmul():
    # Gemm with transA: A given as (K=6, M=1), B stored transposed (N=4, K=6) -> 1 x 4 x 6 MACs.
    transpose = helper.make_node("Transpose", ["x"], ["a"], perm=[1, 0])
    gemm = helper.make_node("Gemm", ["a", "b"], ["g"], transA=1, transB=1)
    # Batched MatMul (1, 3, 4) x (4, 2) -> (1, 3, 2), K = 4 -> 24 MACs.
    reshape = helper.make_node("Reshape", ["g", "shape"], ["r"])
    tile = helper.make_node("Concat", ["r", "r", "r"], ["t"], axis=1)
    mm = helper.make_node("MatMul", ["t", "m"], ["y"])
    inits = [_weight("b", (4, 6)), _weight("m", (4, 2)), numpy_helper.from_array(np.array([1, 1, 4]), "shape")]
    model = _graph_model([transpose, gemm, reshape, tile, mm],
                         [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])],
                         [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    fc = onnx_flops(model)
    assert fc.by_op == {"Gemm": 2 * 1 * 4 * 6, "MatMul": 2 * 3 * 2 * 4}
    # Parameter convention: float weights count; the int64 shape tensor does not.
    assert onnx_parameter_count(model) == 4 * 6 + 4 * 2


def test_unknown_shapes_are_skipped_and_said():
    # The sequence length is free: without a sample the MatMul's output size is unknown.
    mm = helper.make_node("MatMul", ["x", "w"], ["y"])
    model = _graph_model([mm], [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "seq", 8])],
                         [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [_weight("w", (8, 3))])
    fc = onnx_flops(model)
    assert fc.flops is None and "skipped 1 node" in fc.method
    fixed = onnx_flops(model, sample_shape=(5, 8))  # a sample fixes the free dims
    assert fixed.flops == 2 * 5 * 3 * 8


def test_fixed_batch_graph_is_counted_per_sample():
    mm = helper.make_node("MatMul", ["x", "w"], ["y"])
    model = _graph_model([mm], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
                         [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [_weight("w", (8, 3))])
    fc = onnx_flops(model)
    assert fc.flops == 2 * 8 * 3 and "fixed batch of 4" in fc.method


def test_models_without_torch_or_onnx_are_not_counted():
    model = LinearModel(np.ones((4, 3)), np.zeros(3), (4,))
    fc = count_flops(model)
    assert fc.flops is None and "not counted" in fc.method
    assert count_parameters(model) is None
