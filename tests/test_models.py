"""Model loading: every format against the eager torch model it came from, and every refusal.

References are independent of the loader: logits and penultimate activations are computed by calling
the eager module (and its submodules) by hand; hand-built ONNX graphs are checked against numpy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import pickle
import shutil
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh
from safetensors.torch import save_file

from assay.data.dataset import Dataset
from assay.engine.run import run_views
from assay.errors import ModelError, OptionError, UnsafeModelError, UserError
from assay.models import check_input_compatible, export_onnx, load_model

NETS_MODULE = "assay_test_nets"
NETS_SOURCE = '''
"""Factories for Assay's model-loading tests (written into a temporary directory)."""
import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.head = nn.Sequential(nn.Linear(4 * 6 * 6, 16), nn.ReLU())
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = torch.relu(self.conv(x)).flatten(1)
        return self.fc(self.head(x))


class SoftmaxCNN(SmallCNN):
    def forward(self, x):
        return torch.softmax(super().forward(x), dim=1)


class CharCounter(nn.Module):
    """Text model: features are (length, number of 'a') of each string."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward(self, texts):
        feats = torch.tensor([[float(len(t)), float(t.count("a"))] for t in texts])
        return self.fc(feats)


def make_net():
    torch.manual_seed(0)
    return SmallCNN()


def make_softmax_net():
    torch.manual_seed(0)
    return SoftmaxCNN()


def make_text_net():
    torch.manual_seed(0)
    return CharCounter()


def make_five_class_net():
    return SmallCNN(num_classes=5)


def not_a_module():
    return 42
'''


@dataclass
class Artifacts:
    dir: Path
    net: torch.nn.Module  # eager reference, eval mode
    nets: object  # the reference import of NETS_SOURCE
    x: np.ndarray  # (7, 1, 8, 8) evaluation batch
    sample: np.ndarray  # (3, 1, 8, 8) load-time sample
    onnx: Path
    scripted: Path
    traced: Path
    exported: Path
    safetensors: Path
    state_dict_pt: Path
    pickled_module: Path

    def reference(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Logits and intermediate activations computed by calling the eager submodules by hand."""
        net = self.net
        with torch.no_grad():
            t = torch.from_numpy(x)
            conv = torch.relu(net.conv(t)).flatten(1)
            pre = net.head[0](conv)
            hidden = torch.relu(pre)
            logits = net.fc(hidden)
        return {"logits": logits.numpy(), "conv": net.conv(t).detach().flatten(1).numpy(), "pre": pre.numpy(),
                "hidden": hidden.numpy()}


@pytest.fixture(scope="module")
def art(tmp_path_factory) -> Artifacts:
    d = tmp_path_factory.mktemp("models")
    (d / f"{NETS_MODULE}.py").write_text(NETS_SOURCE)
    ref_name = NETS_MODULE + "_ref"
    spec = importlib.util.spec_from_file_location(ref_name, d / f"{NETS_MODULE}.py")
    nets = importlib.util.module_from_spec(spec)
    sys.modules[ref_name] = nets  # torch.save(module) pickles by module name
    spec.loader.exec_module(nets)
    net = nets.make_net().eval()
    rng = np.random.default_rng(0)
    x = rng.random((7, 1, 8, 8), dtype=np.float32)
    sample = rng.random((3, 1, 8, 8), dtype=np.float32)
    example = torch.from_numpy(sample)

    export_onnx(net, example[:1], d / "net.onnx", class_names=["cat", "dog", "emu"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated, still supported
        torch.jit.save(torch.jit.script(net), d / "scripted.pt")
        torch.jit.save(torch.jit.trace(net, example), d / "traced.pt")
    program = torch.export.export(net, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, d / "net.pt2")
    save_file(net.state_dict(), d / "net.safetensors")
    torch.save(net.state_dict(), d / "state_dict.pt")
    torch.save(net, d / "pickled_module.pt")
    yield Artifacts(d, net, nets, x, sample, d / "net.onnx", d / "scripted.pt", d / "traced.pt", d / "net.pt2",
                    d / "net.safetensors", d / "state_dict.pt", d / "pickled_module.pt")
    sys.modules.pop(ref_name, None)


@pytest.fixture
def in_nets_dir(art, monkeypatch):
    """cwd = the directory holding the factory module, which is not yet importable or imported."""
    monkeypatch.chdir(art.dir)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(art.dir))])
    sys.modules.pop(NETS_MODULE, None)
    yield art
    sys.modules.pop(NETS_MODULE, None)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


FORMATS = ["onnx", "torchscript-script", "torchscript-trace", "torch-export", "factory"]


def spec_for(art: Artifacts, fmt: str) -> tuple[str, dict]:
    return {
        "onnx": (str(art.onnx), {}),
        "torchscript-script": (str(art.scripted), {}),
        "torchscript-trace": (str(art.traced), {}),
        "torch-export": (str(art.exported), {}),
        "factory": (f"{NETS_MODULE}:make_net", {"weights": str(art.safetensors)}),
    }[fmt]


# ------------------------------------------------------------------------------------------ all formats


@pytest.mark.parametrize("fmt", FORMATS)
def test_logits_and_features_match_the_eager_model(in_nets_dir, fmt):
    art = in_nets_dir
    spec, kw = spec_for(art, fmt)
    model = load_model(spec, sample=art.sample, **kw)
    ref = art.reference(art.x)

    logits, feats = model.forward(art.x, want_features=True)  # batch 7 != export batch: dynamic batch works
    np.testing.assert_allclose(logits, ref["logits"], atol=1e-4)
    np.testing.assert_allclose(feats, ref["hidden"], atol=1e-4)  # the input of the last Linear, 'fc'
    np.testing.assert_allclose(model.logits(art.x[:1]), ref["logits"][:1], atol=1e-4)
    assert logits.dtype == np.float32 and feats.shape == (7, 16)

    info = model.info
    assert info.format == fmt.split("-")[0] if fmt.startswith("torchscript") else info.format == fmt
    assert info.num_classes == 3
    assert info.input_shape == [None, 1, 8, 8]
    assert info.input_dtype == "float32"
    assert info.outputs == "logits"
    if fmt == "onnx":
        assert info.class_names == ["cat", "dog", "emu"]  # from metadata_props written by export_onnx
        assert info.feature_source.startswith("input of Gemm")
        assert info.sha256 == sha256_of(art.onnx)
        assert model.torch_module() is None
    else:
        assert info.class_names == ["0", "1", "2"]
        assert info.feature_source == "input of Linear 'fc'"
        assert isinstance(model.torch_module(), torch.nn.Module)
        if fmt == "factory":
            expected = hashlib.sha256(spec.encode() + b"\0" + art.safetensors.read_bytes()).hexdigest()
            assert info.sha256 == expected
        else:
            assert info.sha256 == sha256_of(Path(spec))


@pytest.mark.parametrize("fmt", ["onnx", "torch-export"])
def test_loaded_models_feed_the_engine(art, tmp_path, fmt):
    spec, kw = spec_for(art, fmt)
    model = load_model(spec, sample=art.sample, **kw)
    x = np.concatenate([art.x, art.sample])
    dataset = Dataset(x=x, y=np.zeros(len(x), dtype=np.int64), ids=np.arange(len(x)), modality="image",
                      name="tiny", source="<memory>")
    outputs = run_views(model, dataset, cache_dir=tmp_path, batch_size=4, progress=False)
    ref = art.reference(x)
    np.testing.assert_allclose(outputs.clean.logits, ref["logits"], atol=1e-4)
    np.testing.assert_allclose(outputs.clean.features, ref["hidden"], atol=1e-4)
    assert outputs.forward_batches == 3


def test_onnx_export_has_a_free_batch_dimension_and_class_names(art):
    proto = onnx.load(str(art.onnx))
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert not batch_dim.HasField("dim_value")
    assert {p.key: p.value for p in proto.metadata_props}["class_names"] == '["cat", "dog", "emu"]'
    assert not list(art.dir.glob("net.onnx.data"))  # a single self-contained file


@pytest.mark.parametrize("fmt", ["torchscript-script", "torchscript-trace", "torch-export", "factory"])
@pytest.mark.parametrize(("layer", "ref_key", "kind"), [
    ("head.0", "pre", "Linear"), ("head", "hidden", "Sequential"), ("conv", "conv", "Conv2d"),
])
def test_feature_layer_is_the_output_of_that_module(in_nets_dir, fmt, layer, ref_key, kind):
    art = in_nets_dir
    spec, kw = spec_for(art, fmt)
    model = load_model(spec, sample=art.sample, feature_layer=layer, **kw)
    np.testing.assert_allclose(model.features(art.x), art.reference(art.x)[ref_key], atol=1e-4)
    assert model.info.feature_source == f"output of {kind} '{layer}'"
    # logits are unchanged by the feature tap
    np.testing.assert_allclose(model.logits(art.x), art.reference(art.x)["logits"], atol=1e-4)


@pytest.mark.parametrize("fmt", ["torchscript-script", "torch-export", "factory"])
def test_unknown_feature_layer_lists_the_modules(in_nets_dir, fmt):
    spec, kw = spec_for(in_nets_dir, fmt)
    with pytest.raises(UserError, match="no module named 'blocks.9'") as err:
        load_model(spec, sample=in_nets_dir.sample, feature_layer="blocks.9", **kw)
    assert "'head.0'" in str(err.value) and "'fc'" in str(err.value)


@pytest.mark.parametrize("fmt", ["onnx", "torch-export", "torchscript-trace", "factory"])
def test_input_shape_mismatch_names_both_shapes(in_nets_dir, fmt):
    spec, kw = spec_for(in_nets_dir, fmt)
    wrong = np.zeros((2, 1, 9, 9), dtype=np.float32)
    with pytest.raises(UserError) as err:
        load_model(spec, sample=wrong, **kw)
    message = str(err.value)
    if fmt in ("onnx", "torch-export"):  # static input shape known from the graph
        assert "the model expects inputs of shape (1, 8, 8) but the data has (1, 9, 9)" in message
    else:  # known only by running it: the torch message is kept
        assert "fails on inputs of shape (1, 9, 9)" in message
        assert "mat1 and mat2 shapes cannot be multiplied" in message


def test_check_input_compatible_on_a_loaded_model(art):
    model = load_model(str(art.onnx))
    check_input_compatible(model, art.sample)
    with pytest.raises(UserError, match=r"expects inputs of shape \(1, 8, 8\) but the data has \(8, 8\)"):
        check_input_compatible(model, np.zeros((2, 8, 8), dtype=np.float32))


def test_export_archive_under_a_pt_name_is_recognised(art, tmp_path):
    path = tmp_path / "exported.pt"
    shutil.copy(art.exported, path)
    model = load_model(str(path), sample=art.sample)
    assert model.info.format == "torch-export"
    np.testing.assert_allclose(model.logits(art.x), art.reference(art.x)["logits"], atol=1e-4)


class _MakesADirectory:
    """Unpickling this runs os.mkdir: the canary for code execution while loading."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _rewrite_archive(src: Path, dst: Path, replace: dict[str, bytes], add: dict[str, bytes]) -> None:
    with zipfile.ZipFile(src) as archive, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as out:
        prefix = archive.namelist()[0].split("/")[0]
        for item in archive.infolist():
            data = archive.read(item.filename)
            for suffix, new in replace.items():
                if item.filename.endswith(suffix):
                    data = new
            out.writestr(item, data)
        for name, data in add.items():
            out.writestr(f"{prefix}/{name}", data)


def test_export_archive_with_pickled_objects_is_refused_without_running_them(art, tmp_path):
    canary = tmp_path / "code-ran"
    payload = io.BytesIO()
    torch.save(((_MakesADirectory(str(canary)),), {}), payload)
    evil = tmp_path / "evil.pt2"
    _rewrite_archive(art.exported, evil, {"sample_inputs/model.pt": payload.getvalue()}, {})
    with pytest.raises(UnsafeModelError, match="holds pickled Python objects.*never unpickles"):
        load_model(str(evil))
    assert not canary.exists()
    assert torch.load.__module__ == "torch.serialization"  # the guard put torch.load back


def test_the_unpickling_guard_refuses_every_unpickler_torch_export_uses():
    from torch.export.pt2_archive import _package

    from assay.models.torch_models import _NoUnpickling

    real = (torch.load, _package.pickle, torch._C._pickle_load_obj)
    payload = io.BytesIO()
    torch.save(_MakesADirectory("never"), payload)
    for unpickle in (lambda: _package.pickle.loads(payload.getvalue()),
                     lambda: torch._C._pickle_load_obj(b"\x80\x02}q\x00."),
                     lambda: torch.load(io.BytesIO(payload.getvalue()), weights_only=False)):
        guard = _NoUnpickling()
        with guard, pytest.raises(pickle.UnpicklingError):
            unpickle()
        assert guard.refused
    assert (torch.load, _package.pickle, torch._C._pickle_load_obj) == real


def test_export_archive_with_compiled_code_is_refused(art, tmp_path):
    compiled = tmp_path / "aoti.pt2"
    _rewrite_archive(art.exported, compiled, {}, {"data/aotinductor/model/model.so": b"\x7fELF"})
    with pytest.raises(UnsafeModelError, match="AOTInductor-compiled code"):
        load_model(str(compiled))


# ------------------------------------------------------------------------------------------ torch specifics


def test_torch_models_need_a_sample_or_num_classes(art):
    with pytest.raises(UserError, match="cannot tell how many classes") as err:
        load_model(str(art.scripted))
    assert "num_classes" in err.value.fix
    model = load_model(str(art.scripted), num_classes=3, class_names=["a", "b", "c"])
    assert model.info.input_shape == [None] and model.info.class_names == ["a", "b", "c"]
    np.testing.assert_allclose(model.logits(art.x), art.reference(art.x)["logits"], atol=1e-4)
    with pytest.raises(UserError, match="3 outputs per input but num_classes=4"):
        load_model(str(art.scripted), num_classes=4, sample=art.sample)


def test_export_knows_its_classes_without_a_sample(art):
    model = load_model(str(art.exported))
    assert model.info.num_classes == 3 and model.info.input_shape == [None, 1, 8, 8]


def test_pickled_module_is_refused_with_instructions(in_nets_dir):
    art = in_nets_dir
    for kwargs in ({"path_or_factory": str(art.pickled_module)},
                   {"path_or_factory": f"{NETS_MODULE}:make_net", "weights": str(art.pickled_module)}):
        with pytest.raises(UserError) as err:
            load_model(**kwargs)
        message = str(err.value)
        assert "pickled Python object" in message and "never unpickles" in message
        assert "safetensors.torch.save_file(model.state_dict()" in message
        assert "torch.jit.script" in message and "torch.export" in message
        assert err.value.where == str(art.pickled_module)


def test_state_dict_given_as_a_model_file_says_what_it_is(art):
    with pytest.raises(UserError, match="holds a state dict") as err:
        load_model(str(art.state_dict_pt))
    assert "--weights" in err.value.fix


def test_factory_accepts_a_torch_state_dict(in_nets_dir):
    art = in_nets_dir
    model = load_model(f"{NETS_MODULE}:make_net", weights=str(art.state_dict_pt), sample=art.sample)
    np.testing.assert_allclose(model.logits(art.x), art.reference(art.x)["logits"], atol=1e-4)


def test_factory_weight_mismatches_list_the_keys(in_nets_dir, tmp_path):
    art = in_nets_dir
    state = dict(art.net.state_dict())
    state.pop("fc.bias")
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "bad.safetensors"
    save_file(state, path)
    with pytest.raises(UserError, match="1 missing key") as err:
        load_model(f"{NETS_MODULE}:make_net", weights=str(path), sample=art.sample)
    assert "'fc.bias'" in str(err.value) and "1 unexpected key(s): 'extra.weight'" in str(err.value)
    with pytest.raises(UserError, match="do not fit the model") as err:
        load_model(f"{NETS_MODULE}:make_five_class_net", weights=str(art.safetensors), sample=art.sample)
    assert "fc.weight: file (3, 16) vs model (5, 16)" in str(err.value)


@pytest.mark.parametrize(("spec", "match"), [
    ("assay_test_nets:", "is not a model file or a factory spec"),
    ("no_such_module_xyz:make", "cannot import module 'no_such_module_xyz'"),
    (f"{NETS_MODULE}:missing", f"module '{NETS_MODULE}' has no attribute 'missing'"),
    (f"{NETS_MODULE}:not_a_module", "returned int, not a torch.nn.Module"),
])
def test_bad_factories(in_nets_dir, spec, match):
    with pytest.raises(UserError, match=match):
        load_model(spec, weights=str(in_nets_dir.safetensors), sample=in_nets_dir.sample)


def test_factory_without_weights_is_refused_unless_untrained(in_nets_dir):
    """Random initial weights scored as if trained (accuracy 0.24 on a 4-class task, exit 0) must not
    happen by accident: no weights needs ``untrained=True``, which the model info records."""
    with pytest.raises(ModelError, match="random initial weights") as err:
        load_model(f"{NETS_MODULE}:make_net", num_classes=3)
    assert "--weights" in err.value.fix and "--untrained" in err.value.fix
    with pytest.raises(OptionError, match="untrained"):
        load_model(f"{NETS_MODULE}:make_net", weights=str(in_nets_dir.safetensors), num_classes=3, untrained=True)
    with pytest.raises(OptionError, match="untrained"):
        load_model(str(in_nets_dir.onnx), untrained=True)
    assert load_model(f"{NETS_MODULE}:make_net", num_classes=3, untrained=True).info.untrained
    trained = load_model(f"{NETS_MODULE}:make_net", weights=str(in_nets_dir.safetensors), num_classes=3)
    assert not trained.info.untrained


def test_factory_without_weights_hashes_its_tensors(in_nets_dir):
    art = in_nets_dir
    model = load_model(f"{NETS_MODULE}:make_net", num_classes=3, untrained=True)
    h = hashlib.sha256(f"{NETS_MODULE}:make_net".encode() + b"\0")
    for name, tensor in sorted(art.net.state_dict().items()):
        h.update(name.encode() + b"\0" + tensor.numpy().tobytes())
    assert model.info.sha256 == h.hexdigest()


def test_torch_probabilities_are_refused_unless_declared(in_nets_dir):
    art = in_nets_dir
    spec = f"{NETS_MODULE}:make_softmax_net"
    with pytest.raises(UserError, match="look like probabilities") as err:
        load_model(spec, weights=str(art.safetensors), sample=art.sample)
    assert "--outputs probabilities" in err.value.fix
    model = load_model(spec, weights=str(art.safetensors), sample=art.sample, outputs="probabilities")
    expected = torch.log_softmax(torch.from_numpy(art.reference(art.x)["logits"]), dim=1).numpy()
    np.testing.assert_allclose(model.logits(art.x), expected, atol=1e-4)
    assert model.info.outputs == "probabilities"


def test_torch_text_model_receives_a_list_of_strings(in_nets_dir):
    art = in_nets_dir
    texts = np.array(["banana", "kiwi", "a", ""], dtype=object)
    model = load_model(f"{NETS_MODULE}:make_text_net", sample=texts, untrained=True)
    fc = art.nets.make_text_net().fc
    counts = torch.tensor([[6.0, 3.0], [4.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    with torch.no_grad():
        expected = fc(counts).numpy()
    logits, feats = model.forward(texts, want_features=True)
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    np.testing.assert_allclose(feats, counts.numpy())
    assert model.info.input_dtype == "string" and model.info.input_shape == [None]


# ------------------------------------------------------------------------------------------ hand-built ONNX

RNG = np.random.default_rng(1)
W1 = RNG.normal(size=(4, 5)).astype(np.float32)
B1 = RNG.normal(size=5).astype(np.float32)
W2 = RNG.normal(size=(5, 3)).astype(np.float32)
B2 = RNG.normal(size=3).astype(np.float32)


def mlp_reference(x: np.ndarray) -> dict[str, np.ndarray]:
    pre = x @ W1
    hidden = np.maximum(pre + B1, 0)
    logits = hidden @ W2 + B2
    e = np.exp(logits - logits.max(1, keepdims=True))
    return {"pre": pre, "hidden": hidden, "logits": logits, "probs": e / e.sum(1, keepdims=True)}


def write_mlp(path: Path, *, batch: int | None = None, classes: int | None = 3, softmax: bool = False,
              metadata: dict[str, str] | None = None) -> Path:
    """x -MatMul-> pre -Add-> pre_bias -Relu-> hidden -Gemm-> logits [-Softmax-> probs]."""
    nodes = [
        oh.make_node("MatMul", ["x", "W1"], ["pre"], name="mm1"),
        oh.make_node("Add", ["pre", "B1"], ["pre_bias"]),
        oh.make_node("Relu", ["pre_bias"], ["hidden"]),
        oh.make_node("Gemm", ["hidden", "W2", "B2"], ["logits"], name="head"),
    ]
    out = "logits"
    if softmax:
        nodes.append(oh.make_node("Softmax", ["logits"], ["probs"], axis=1))
        out = "probs"
    graph = oh.make_graph(
        nodes, "mlp",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [oh.make_tensor_value_info(out, TensorProto.FLOAT, [batch, classes])],
        [nh.from_array(W1, "W1"), nh.from_array(B1, "B1"), nh.from_array(W2, "W2"), nh.from_array(B2, "B2")],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


X_TAB = np.random.default_rng(2).normal(size=(6, 4)).astype(np.float32)


def test_onnx_default_features_are_the_input_of_the_last_gemm(tmp_path):
    model = load_model(str(write_mlp(tmp_path / "mlp.onnx")))
    logits, feats = model.forward(X_TAB, want_features=True)
    ref = mlp_reference(X_TAB)
    np.testing.assert_allclose(logits, ref["logits"], atol=1e-5)
    np.testing.assert_allclose(feats, ref["hidden"], atol=1e-5)
    assert model.info.feature_source == "input of Gemm node 'head' (onnx value 'hidden')"
    assert model.info.input_shape == [None, 4] and model.info.class_names == ["0", "1", "2"]


def test_onnx_named_feature_output(tmp_path):
    path = write_mlp(tmp_path / "mlp.onnx")
    model = load_model(str(path), feature_output="pre")
    np.testing.assert_allclose(model.features(X_TAB), mlp_reference(X_TAB)["pre"], atol=1e-5)
    assert model.info.feature_source == "onnx value 'pre'"
    with pytest.raises(UserError, match="no value named 'penultimate'") as err:
        load_model(str(path), feature_output="penultimate")
    assert "'hidden'" in err.value.fix
    assert onnx.load(str(path)).graph.output[0].name == "logits" and len(onnx.load(str(path)).graph.output) == 1


def test_onnx_without_matmul_has_no_features(tmp_path):
    graph = oh.make_graph(
        [oh.make_node("Mul", ["x", "k"], ["logits"])], "scale",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [oh.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 3])],
        [nh.from_array(np.array([1.0, -2.0, 3.0], np.float32), "k")],
    )
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.save(proto, str(tmp_path / "scale.onnx"))
    model = load_model(str(tmp_path / "scale.onnx"))
    x = X_TAB[:, :3]
    logits, feats = model.forward(x, want_features=True)
    assert feats is None and model.info.feature_source is None and not model.has_features
    np.testing.assert_allclose(logits, x * np.array([1.0, -2.0, 3.0]), atol=1e-6)


def test_onnx_class_names(tmp_path):
    path = write_mlp(tmp_path / "mlp.onnx", metadata={"class_names": '["a", "b", "c"]'})
    assert load_model(str(path)).info.class_names == ["a", "b", "c"]
    assert load_model(str(path), class_names=["x", "y", "z"]).info.class_names == ["x", "y", "z"]
    with pytest.raises(UserError, match="class_names has 2 names but the model has 3 classes"):
        load_model(str(path), class_names=["x", "y"])
    bad = write_mlp(tmp_path / "bad.onnx", metadata={"class_names": "a,b,c"})
    with pytest.raises(UserError, match="not a JSON list"):
        load_model(str(bad))


def test_onnx_probabilities_are_refused_unless_declared(tmp_path):
    path = write_mlp(tmp_path / "probs.onnx", softmax=True)
    with pytest.raises(UserError, match="look like probabilities"):
        load_model(str(path), sample=X_TAB)
    lazy = load_model(str(path))  # no sample: refused at the first forward pass instead
    with pytest.raises(UserError, match="look like probabilities"):
        lazy.logits(X_TAB)
    model = load_model(str(path), outputs="probabilities", sample=X_TAB)
    logits = model.logits(X_TAB)
    ref = mlp_reference(X_TAB)
    np.testing.assert_allclose(logits, np.log(ref["probs"]), atol=1e-5)
    # log p differs from the logits by a per-row constant: same softmax
    np.testing.assert_allclose(logits - ref["logits"], (logits - ref["logits"])[:, :1].repeat(3, 1), atol=1e-4)


def test_onnx_free_class_dimension_needs_a_dry_run(tmp_path):
    path = write_mlp(tmp_path / "free.onnx", classes=None)
    with pytest.raises(UserError, match="cannot tell how many classes"):
        load_model(str(path))
    assert load_model(str(path), sample=X_TAB).info.num_classes == 3
    assert load_model(str(path), num_classes=3).info.num_classes == 3


@settings(max_examples=15, deadline=None)
@given(n=st.integers(min_value=1, max_value=9))
def test_onnx_fixed_batch_models_run_any_batch_size(tmp_path_factory, n):
    path = tmp_path_factory.getbasetemp() / "fixed_batch_4.onnx"
    if not path.exists():
        write_mlp(path, batch=4)
    model = load_model(str(path))
    assert model.info.input_shape == [4, 4]
    x = np.random.default_rng(n).normal(size=(n, 4)).astype(np.float32)
    logits, feats = model.forward(x, want_features=True)
    np.testing.assert_allclose(logits, mlp_reference(x)["logits"], atol=1e-5)
    np.testing.assert_allclose(feats, mlp_reference(x)["hidden"], atol=1e-5)


def test_onnx_threads_are_explicit(tmp_path):
    path = write_mlp(tmp_path / "mlp.onnx")
    options = load_model(str(path), threads=1).session.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert load_model(str(path)).session.get_session_options().intra_op_num_threads == os.cpu_count()


def test_onnx_string_input(tmp_path):
    graph = oh.make_graph(
        [oh.make_node("Cast", ["text"], ["number"], to=TensorProto.FLOAT),
         oh.make_node("MatMul", ["number", "W"], ["logits"])],
        "parse",
        [oh.make_tensor_value_info("text", TensorProto.STRING, [None, 1])],
        [oh.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 2])],
        [nh.from_array(np.array([[1.0, -1.0]], np.float32), "W")],
    )
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.save(proto, str(tmp_path / "text.onnx"))
    texts = np.array(["0.5", "2", "-3"], dtype=object)  # a text data set is (N,)
    model = load_model(str(tmp_path / "text.onnx"), sample=texts)
    assert model.info.input_dtype == "string"
    np.testing.assert_allclose(model.logits(texts), [[0.5, -0.5], [2, -2], [-3, 3]])


# ------------------------------------------------------------------------------------------ refusals


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="model file not found") as err:
        load_model(str(tmp_path / "nope.onnx"))
    assert err.value.where == str(tmp_path / "nope.onnx") and err.value.fix


def test_random_bytes_are_not_onnx(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(512))
    with pytest.raises(UserError, match="not a valid ONNX model") as err:
        load_model(str(path))
    assert err.value.where == str(path) and "exporter" in err.value.fix


def test_unknown_extension_lists_supported_formats(tmp_path):
    path = tmp_path / "model.h5"
    path.write_bytes(b"\x89HDF")
    with pytest.raises(UserError, match="unsupported model format '.h5'") as err:
        load_model(str(path))
    for fmt in (".onnx", ".pt2", "TorchScript", "package.module:callable"):
        assert fmt in err.value.fix


def test_directory_is_not_a_model(tmp_path):
    with pytest.raises(UserError, match="is a directory"):
        load_model(str(tmp_path))


def test_options_that_do_not_apply(art, tmp_path):
    with pytest.raises(UserError, match="feature_layer does not apply to ONNX"):
        load_model(str(art.onnx), feature_layer="fc")
    with pytest.raises(UserError, match="feature_output does not apply to torch"):
        load_model(str(art.scripted), feature_output="fc", num_classes=3)
    with pytest.raises(UserError, match="--weights applies only to a factory"):
        load_model(str(art.scripted), weights=str(art.safetensors))
    with pytest.raises(UserError, match="outputs must be 'logits' or 'probabilities'"):
        load_model(str(art.onnx), outputs="softmax")


def test_export_onnx_is_reproducible_and_path_free(tmp_path):
    """No source paths in the file: the same module gives the same bytes (and sha256) anywhere."""
    import torch

    import assay
    from assay.demo import DigitsCNN
    from assay.models.export import export_onnx

    torch.manual_seed(0)
    net = DigitsCNN().eval()
    x = torch.rand(2, 1, 8, 8)
    a = export_onnx(net, x, tmp_path / "a.onnx").read_bytes()
    b = export_onnx(net, x, tmp_path / "b.onnx").read_bytes()
    assert a == b
    assert str(Path(assay.__file__).parent).encode() not in a
