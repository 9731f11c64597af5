"""Compression variants (int8 static/dynamic, fp16, pruning) and the slowdown diagnosis.

Accuracy is measured by running each variant's ONNX file in onnxruntime directly, against the torch
model it came from; the diagnosis is checked on tiny hand-built graphs whose answer is known.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from assay.compress.diagnose import explain_pruning, explain_slowdown, slowdown_reasons
from assay.compress.variants import (
    KNOWN_METHODS,
    calibration_batch_size,
    make_variants,
    static_quantization_types,
)
from assay.data.dataset import Dataset
from assay.data.loader import load_data
from assay.demo import train_digits_cnn
from assay.errors import DataError, OptionError, UserError
from assay.models.loader import load_model

ALL_METHODS = ["int8-static", "int8-dynamic", "int8-dynamic-all", "fp16"]


@pytest.fixture(scope="module")
def digits():
    return load_data("digits:train"), load_data("digits:test")


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    """The demo CNN trained briefly, loaded as a factory model (the form that can also be pruned)."""
    import safetensors.torch

    train, _ = digits
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny net: one thread is fastest and immune to oversubscription
    try:
        net = train_digits_cnn(train.x, train.y, epochs=5)
    finally:
        torch.set_num_threads(threads)
    weights = tmp_path_factory.mktemp("weights") / "digits.safetensors"
    safetensors.torch.save_file(net.state_dict(), str(weights))
    return net, load_model("assay.demo:make_digits_cnn", weights=weights, sample=train.x[:2])


@pytest.fixture(scope="module")
def variants(trained, digits, tmp_path_factory):
    train, _ = digits
    built = make_variants(trained[1], train, ALL_METHODS, out_dir=tmp_path_factory.mktemp("variants"))
    return {v.name: v for v in built}


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _logits(path: Path, x: np.ndarray) -> np.ndarray:
    session = _session(path)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _accuracy(path: Path, data: Dataset) -> float:
    return float((_logits(path, data.x).argmax(1) == data.y).mean())


def _ops(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_variant_names_and_order(variants):
    assert list(variants) == ["fp32", "int8-static-minmax", "int8-static-percentile", "int8-static-entropy",
                              "int8-dynamic", "int8-dynamic-all", "fp16"]
    for variant in variants.values():
        assert variant.path.exists() and variant.path.suffix == ".onnx"
        assert variant.torch_module is None
        meta = {p.key: p.value for p in onnx.load(str(variant.path)).metadata_props}
        assert json.loads(meta["class_names"]) == [str(i) for i in range(10)]
        assert meta["assay_variant"] == variant.name


def test_fp32_reference_matches_torch(trained, variants, digits):
    net, _ = trained
    x = digits[1].x[:64]
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_logits(variants["fp32"].path, x), expected, atol=1e-4)
    assert any("pre-processing" in note and "applied" in note for note in variants["fp32"].notes)


@pytest.mark.parametrize("calibration", ["minmax", "percentile"])
def test_static_int8_keeps_accuracy_within_one_point(variants, digits, calibration):
    test = digits[1]
    variant = variants[f"int8-static-{calibration}"]
    reference = _accuracy(variants["fp32"].path, test)
    assert reference > 0.85  # the trained model is a meaningful baseline
    assert abs(_accuracy(variant.path, test) - reference) <= 0.01
    ops = _ops(variant.path)
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "ConvInteger" not in ops
    assert "512 of 1257" in variant.method  # calibration capped at a bounded subset


def test_entropy_calibration_runs_but_may_clip_harder(variants, digits):
    """KL calibration clips activation tails (ranges narrower than MinMax, checked below); on this small CNN
    that costs a few points, which is what the damage audit exists to show. Here: it works, not broken."""
    test = digits[1]
    reference = _accuracy(variants["fp32"].path, test)
    assert abs(_accuracy(variants["int8-static-entropy"].path, test) - reference) <= 0.05
    assert "1024-bin histogram, 255 quantized bins" in variants["int8-static-entropy"].method


def test_static_int8_weights_are_per_channel_and_the_shallow_first_conv_stays_float(variants):
    variant = variants["int8-static-minmax"]
    model = onnx.load(str(variant.path))
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    first, second = [n for n in model.graph.node if n.op_type == "Conv"]
    # the 1x3x3 first conv (reduction depth 9) is kept in float32: its weight is a plain float initializer
    assert first.input[1] not in producers and initializers[first.input[1]].dtype == np.float32
    assert "depth 9" in variant.method and any("kept in float32" in note for note in variant.notes)
    dq = producers[second.input[1]]  # the second conv's weight comes through a DequantizeLinear
    assert dq.op_type == "DequantizeLinear"
    weight, scale = initializers[dq.input[0]], initializers[dq.input[1]]
    assert weight.dtype == np.int8 and weight.shape == (32, 16, 3, 3)
    assert scale.shape == (32,)  # one scale per output channel


def test_calibration_methods_give_different_activation_ranges(variants):
    def activation_scales(name: str) -> dict[str, float]:
        model = onnx.load(str(variants[name].path))
        return {t.name: float(onnx.numpy_helper.to_array(t)) for t in model.graph.initializer
                if t.name.endswith("_scale") and not t.dims}  # per-tensor scales belong to activations

    minmax = activation_scales("int8-static-minmax")
    assert len(minmax) >= 4
    for other in ("int8-static-percentile", "int8-static-entropy"):
        scales = activation_scales(other)
        assert scales.keys() == minmax.keys()
        # histogram methods clip outliers: never a wider range than min/max, narrower somewhere
        assert all(scales[k] <= minmax[k] * (1 + 1e-6) for k in minmax)
        assert any(scales[k] < 0.99 * minmax[k] for k in minmax)


def test_dynamic_matmul_only_leaves_convolutions_float(variants):
    ops = _ops(variants["int8-dynamic"].path)
    assert "ConvInteger" not in ops and "Conv" in ops
    assert "MatMulInteger" in ops


def test_dynamic_all_emits_convinteger_and_diagnosis_says_so(variants):
    path = variants["int8-dynamic-all"].path
    assert "ConvInteger" in _ops(path)
    assert "ConvInteger" in variants["int8-dynamic-all"].method and "slower" in variants["int8-dynamic-all"].method
    reasons = explain_slowdown(path, isa_flags=["avx2", "avx512f", "avx512_vnni"])
    assert any(r.startswith("2 ConvInteger") for r in reasons)
    assert not any("ConvInteger" in r for r in explain_slowdown(variants["int8-static-minmax"].path,
                                                                isa_flags=["avx2"]))


def test_fp16_keeps_float32_io_and_close_logits(variants, digits):
    path = variants["fp16"].path
    session = _session(path)
    assert [i.type for i in session.get_inputs()] == ["tensor(float)"]
    assert [o.type for o in session.get_outputs()] == ["tensor(float)"]
    model = onnx.load(str(path))
    assert any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer)
    onnx.checker.check_model(model)  # nodes in topological order
    x = digits[1].x[:128]
    np.testing.assert_allclose(_logits(path, x), _logits(variants["fp32"].path, x), atol=1e-2)
    reasons = explain_slowdown(path, isa_flags=["avx2", "f16c"])
    assert any("float16" in r and "Cast" in r for r in reasons)


def test_onnx_input_builds_the_same_variants(variants, digits, tmp_path):
    train, test = digits
    built = make_variants(variants["fp32"].path, train, ["int8-static-minmax", "fp16"], out_dir=tmp_path)
    assert [v.name for v in built] == ["fp32", "int8-static-minmax", "fp16"]
    np.testing.assert_array_equal(_logits(built[0].path, test.x[:32]), _logits(variants["fp32"].path, test.x[:32]))


def test_failed_preprocessing_falls_back_and_says_so(variants, digits, tmp_path, monkeypatch):
    from onnxruntime.quantization import shape_inference

    def broken(*args, **kwargs):
        raise RuntimeError("symbolic shape inference failed\nmore detail")

    monkeypatch.setattr(shape_inference, "quant_pre_process", broken)
    built = make_variants(variants["fp32"].path, digits[0], ["int8-dynamic"], out_dir=tmp_path)
    assert "pre-processing failed (RuntimeError: symbolic shape inference failed)" in " ".join(built[0].notes)
    assert not (tmp_path / "fp32-preprocessed.onnx").exists()
    assert "MatMulInteger" in _ops(built[1].path)  # quantized from the reference as exported


def test_a_converter_failure_names_the_method(variants, digits, tmp_path, monkeypatch):
    from onnxruntime.transformers import float16

    def broken(*args, **kwargs):
        raise ValueError("unsupported op")

    monkeypatch.setattr(float16, "convert_float_to_float16", broken)
    with pytest.raises(UserError) as err:
        make_variants(variants["fp32"].path, digits[0], ["fp16"], out_dir=tmp_path)
    assert err.value.what == "building the fp16 variant failed: ValueError: unsupported op"
    assert "leave fp16 out" in err.value.fix


def test_prune_variant_exports_the_pruned_module(trained, digits, tmp_path):
    train, test = digits
    built = make_variants(trained[1], train, ["prune"], out_dir=tmp_path, prune_ratios=[0.5, 0.25],
                          train_data=train, finetune_epochs=1)
    assert [v.name for v in built] == ["fp32", "pruned-0.5", "pruned-0.25"]
    half = built[1]
    assert half.torch_module is not None and half.torch_module.fc2.out_features == 10
    assert half.torch_module.fc1.out_features == 32
    with torch.no_grad():
        expected = half.torch_module(torch.from_numpy(test.x[:32])).numpy()
    np.testing.assert_allclose(_logits(half.path, test.x[:32]), expected, atol=1e-4)
    assert any("fine-tuned 1 epoch" in note for note in half.notes)
    assert "'fc2' kept" in half.method


def test_keep_going_reports_a_failed_build_and_builds_the_rest(variants, digits, tmp_path, monkeypatch):
    from onnxruntime.transformers import float16

    def broken(*args, **kwargs):
        raise ValueError("unsupported op")

    monkeypatch.setattr(float16, "convert_float_to_float16", broken)
    built = make_variants(variants["fp32"].path, digits[0], ["fp16", "int8-dynamic"], out_dir=tmp_path,
                          keep_going=True)
    assert [(v.name, v.error) for v in built] == [
        ("fp32", None), ("fp16", "building the fp16 variant failed: ValueError: unsupported op"),
        ("int8-dynamic", None)]
    assert built[1].path is None and not (tmp_path / "fp16.onnx").exists()
    assert "MatMulInteger" in _ops(built[2].path)  # built after the failure


# --------------------------------------------------------------------------- calibration sizes


@pytest.mark.parametrize(("n", "up_to_64", "up_to_8"),
                         [(1, 1, 1), (7, 7, 7), (64, 64, 8), (96, 48, 8), (100, 50, 5), (257, 1, 1), (512, 64, 8)])
def test_calibration_batches_are_equal_and_as_large_as_allowed(n, up_to_64, up_to_8):
    """Hand-computed: the largest divisor of n not above the limit."""
    assert calibration_batch_size(n) == up_to_64
    assert calibration_batch_size(n, limit=8) == up_to_8
    assert calibration_batch_size(n, fixed=1) == 1


def test_a_fixed_batch_dimension_must_divide_the_calibration_set():
    assert calibration_batch_size(12, fixed=4) == 4
    with pytest.raises(DataError, match="fixed batch size of 4"):
        calibration_batch_size(10, fixed=4)


@pytest.fixture(scope="module", params=[1, 7, 100, 257])
def calibrated(request, trained, digits, tmp_path_factory):
    """Every static calibration method built on the first ``n`` training samples (n not a multiple of the
    calibration batch: the issue-10 failure of Percentile and Entropy)."""
    n = request.param
    train = digits[0]
    subset = Dataset(x=train.x[:n], y=None, ids=train.ids[:n], modality="image", name=f"first {n}", source="subset")
    built = make_variants(trained[1], subset, ["int8-static"], out_dir=tmp_path_factory.mktemp(f"calib{n}"))
    return n, {v.name: v for v in built}


@pytest.mark.parametrize(("calibration", "tolerance"), [("minmax", 0.02), ("percentile", 0.02), ("entropy", 0.06)])
def test_any_calibration_size_builds_a_sensible_variant(calibrated, digits, calibration, tolerance):
    n, built = calibrated
    variant = built[f"int8-static-{calibration}"]
    assert variant.error is None and {"QuantizeLinear", "DequantizeLinear"} <= _ops(variant.path)
    reference = _accuracy(built["fp32"].path, digits[1])
    assert reference > 0.85
    assert abs(_accuracy(variant.path, digits[1]) - reference) <= tolerance
    batch = calibration_batch_size(n)
    assert f"all {n} calibration samples in {n // batch} batch(es) of {batch}" in variant.notes[0]


def test_equal_batches_give_the_ranges_of_one_batch(variants, digits, tmp_path, monkeypatch):
    """Histogram calibration stacks every batch's activations, so the split cannot change the ranges: 100
    samples in two batches of 50 give exactly the scales ORT computes from one batch of 100 (the path that
    always worked). Percentile only: Entropy stacks the same way and its KL search costs ~10 s a build."""
    from assay.compress import variants as variants_module

    subset = Dataset(x=digits[0].x[:100], y=None, ids=np.arange(100), modality="image", name="100", source="100")
    method = ["int8-static-percentile"]
    split = make_variants(variants["fp32"].path, subset, method, out_dir=tmp_path / "split")[1]
    monkeypatch.setattr(variants_module, "CALIBRATION_BATCH", 128)
    whole = make_variants(variants["fp32"].path, subset, method, out_dir=tmp_path / "whole")[1]
    assert "2 batch(es) of 50" in split.notes[0] and "1 batch(es) of 100" in whole.notes[0]

    def scales(path):
        model = onnx.load(str(path))
        return {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name.endswith("_scale")}

    ours, reference = scales(split.path), scales(whole.path)
    assert ours.keys() == reference.keys() and len(ours) >= 4
    for name in ours:
        np.testing.assert_array_equal(ours[name], reference[name])


def test_calibration_is_needed_only_for_static_int8(variants, digits, tmp_path):
    example = digits[1].x[:2]
    built = make_variants(variants["fp32"].path, None, ["fp16", "int8-dynamic"], out_dir=tmp_path / "a",
                          example=example)
    assert [v.name for v in built] == ["fp32", "fp16", "int8-dynamic"] and all(v.error is None for v in built)
    with pytest.raises(OptionError) as err:
        make_variants(variants["fp32"].path, None, ["fp16", "int8-static-percentile"], out_dir=tmp_path / "b",
                      example=example)
    assert "no calibration data" in err.value.what and "int8-static-percentile" in err.value.what
    assert "int8-dynamic and fp16 need no calibration" in err.value.fix
    assert not (tmp_path / "b").exists()


# --------------------------------------------------------------------------- bad inputs


def test_unknown_method_lists_the_known_ones(trained, digits, tmp_path):
    with pytest.raises(UserError) as err:
        make_variants(trained[1], digits[0], ["int4"], out_dir=tmp_path)
    assert "unknown method 'int4'" in err.value.what and isinstance(err.value, OptionError)
    assert all(name in err.value.fix for name in KNOWN_METHODS)
    assert not any(tmp_path.iterdir())  # nothing built


def test_wrong_shape_calibration_is_refused_before_any_work(variants, tmp_path):
    bad = Dataset(x=np.zeros((8, 1, 9, 9), np.float32), y=None, ids=np.arange(8), modality="image", name="bad",
                  source="bad.npz")
    with pytest.raises(UserError) as err:
        make_variants(variants["fp32"].path, bad, ["int8-static"], out_dir=tmp_path / "out")
    assert "calibration data" in err.value.what
    assert "bad.npz" in err.value.where and "(1, 9, 9)" in err.value.where and "(N, 1, 8, 8)" in err.value.where
    assert "shaped like the model's inputs" in err.value.fix
    assert not (tmp_path / "out").exists()


def test_prune_on_onnx_explains_it_needs_the_torch_model(variants, digits, tmp_path):
    with pytest.raises(UserError) as err:
        make_variants(variants["fp32"].path, digits[0], ["fp16", "prune"], out_dir=tmp_path / "out")
    assert "pruning needs the torch model" in err.value.what
    assert "factory" in err.value.fix and "--weights" in err.value.fix
    assert not (tmp_path / "out").exists()


def test_bad_ratio_and_missing_train_data(trained, digits, tmp_path):
    with pytest.raises(UserError, match="strictly between 0 and 1"):
        make_variants(trained[1], digits[0], ["prune"], out_dir=tmp_path, prune_ratios=[1.0])
    with pytest.raises(UserError, match="needs training data"):
        make_variants(trained[1], digits[0], ["prune"], out_dir=tmp_path, finetune_epochs=2)


def test_static_types_follow_ort_cpu_guidance():
    assert static_quantization_types(["avx2", "avx512_vnni"], "x86_64")[:3] == ("QUInt8", "QInt8", False)
    assert static_quantization_types(["avx2"], "x86_64")[:3] == ("QUInt8", "QInt8", True)
    assert static_quantization_types(["asimd"], "aarch64")[:3] == ("QInt8", "QInt8", False)


# --------------------------------------------------------------------------- diagnosis on tiny graphs


def _model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _float(name, shape=(1, 4)):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def test_convinteger_and_matmulinteger_are_named_with_counts():
    nodes = [helper.make_node("ConvInteger", ["x", "w"], ["a"]), helper.make_node("ConvInteger", ["a", "w"], ["b"]),
             helper.make_node("MatMulInteger", ["b", "m"], ["y"])]
    reasons = slowdown_reasons(_model(nodes, [_float("x")], [_float("y")]), None, isa_flags=["avx512_vnni"])
    assert reasons[0].startswith("2 ConvInteger node(s)") and "int8-static" in reasons[0]
    assert reasons[1].startswith("1 dynamically quantized MatMul")
    assert slowdown_reasons(_model([helper.make_node("Relu", ["x"], ["y"])], [_float("x")], [_float("y")]), None,
                            isa_flags=[]) == []


def _fp16_model(casts: int):
    weight = helper.make_tensor("w", TensorProto.FLOAT16, [4, 4], np.ones(16, np.float16).tobytes(), raw=True)
    nodes = [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
             helper.make_node("MatMul", ["h", "w"], ["m"]),
             helper.make_node("Cast", ["m"], ["y"], to=TensorProto.FLOAT)]
    for i in range(casts):  # what ORT inserts around fp16 ops it has no CPU kernel for
        nodes.append(helper.make_node("Cast", ["x"], [f"extra{i}"], to=TensorProto.FLOAT))
    return _model(nodes, [_float("x")], [_float("y")], [weight])


def test_fp16_without_native_support_counts_casts():
    reasons = slowdown_reasons(_fp16_model(0), _fp16_model(3), isa_flags=["avx2", "f16c", "avx512f"])
    assert len(reasons) == 1
    assert "2 Cast node(s) in the file, 5 in the graph ONNX Runtime runs (3 inserted at load)" in reasons[0]
    # native fp16 arithmetic and no inserted casts: nothing to say
    assert slowdown_reasons(_fp16_model(0), _fp16_model(0), isa_flags=["avx512_fp16"]) == []
    # native fp16 but ORT still inserted casts: said, without blaming the CPU
    native = slowdown_reasons(_fp16_model(0), _fp16_model(2), isa_flags=["avx512_fp16"])
    assert len(native) == 1 and "avx512_fp16" in native[0] and "without native" not in native[0]
    # a float32 graph is not an fp16 graph
    plain = _model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], [_float("x")], [_float("y")])
    assert slowdown_reasons(plain, plain, isa_flags=[]) == []


def test_float_islands_left_after_qdq_fusion():
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    zero = helper.make_tensor("z", TensorProto.UINT8, [], [128])
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             helper.make_node("ReduceMean", ["d"], ["r"], keepdims=1),
             helper.make_node("Softmax", ["d"], ["sm"]),
             helper.make_node("Add", ["r", "sm"], ["a"]),
             helper.make_node("QuantizeLinear", ["a", "s", "z"], ["q2"]),
             helper.make_node("DequantizeLinear", ["q2", "s", "z"], ["y"])]
    runtime = _model(nodes, [_float("x")], [_float("y")], [scale, zero])
    reasons = slowdown_reasons(runtime, runtime, isa_flags=[])
    assert len(reasons) == 1 and reasons[0].startswith("2 op(s) still run in float32")
    assert "ReduceMean x1" in reasons[0] and "Softmax x1" in reasons[0]
    # without the runtime graph this reason is not guessed from the file (every QDQ op looks unfused there)
    assert slowdown_reasons(runtime, None, isa_flags=[]) == []


def test_explain_pruning():
    assert "pruning removed no compute" in explain_pruning(1000, 1000)[0]
    assert "pruning removed no compute" in explain_pruning(1000, 1200)[0]
    assert explain_pruning(1000, 400) == []
    overhead = explain_pruning(1000, 300, latency_before=1.0, latency_after=0.95)
    assert len(overhead) == 1 and "70% of FLOPs but only 5% of latency" in overhead[0]
    assert explain_pruning(1000, 300, latency_before=1.0, latency_after=0.5) == []
