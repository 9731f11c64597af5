"""Model specs, the format registry and the model capabilities that replace format branches.

A spec is checked by what it is for: a fresh Python process loads the model from the spec's JSON and must
produce the same logits and sha256 as the parent's model (every format); old evidence bundles still read.
"""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import save_file

from assay.errors import ModelError, OptionError, UserError
from assay.evidence.schema import ModelInfo
from assay.models import FORMATS, ModelFormat, ModelSpec, load_model, register_format
from assay.models.export import export_onnx
from assay.models.formats import extension_map, format_for_file, supported_text
from conftest import LinearModel

SRC = Path(__file__).resolve().parents[1] / "src" / "assay"
NETS = "assay_spec_nets"
NETS_SOURCE = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.fc = nn.Linear(3 * 4 * 4, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def make_net():
    torch.manual_seed(0)
    return Net()
'''
CHILD = """
import sys
import numpy as np
from assay.models.spec import ModelSpec
model = ModelSpec.model_validate_json(sys.argv[1]).load()
np.save(sys.argv[3], model.logits(np.load(sys.argv[2])))
print(model.info.sha256)
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The same net as ONNX, TorchScript, torch.export and factory + safetensors, plus an input batch."""
    d = tmp_path_factory.mktemp("spec")
    (d / f"{NETS}.py").write_text(NETS_SOURCE)
    sys.path.insert(0, str(d))
    try:
        import importlib

        net = importlib.import_module(NETS).make_net().eval()
    finally:
        sys.path.remove(str(d))
        sys.modules.pop(NETS, None)
    x = np.random.default_rng(0).random((5, 1, 6, 6), dtype=np.float32)
    example = torch.from_numpy(x[:2])
    export_onnx(net, example, d / "net.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(net), d / "net.pt")
    torch.export.save(torch.export.export(net, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)),
                      d / "net.pt2")
    save_file(net.state_dict(), d / "net.safetensors")
    np.save(d / "x.npy", x)
    return {"dir": d, "net": net, "x": x}


def _load(files, fmt: str, **options):
    d = files["dir"]
    if fmt == "factory":
        return load_model(f"{NETS}:make_net", weights=str(d / "net.safetensors"), num_classes=4, **options)
    return load_model(str(d / {"onnx": "net.onnx", "torchscript": "net.pt", "torch-export": "net.pt2"}[fmt]),
                      num_classes=4, **options)


@pytest.fixture
def in_dir(files, monkeypatch):
    """cwd = the folder of the factory module (load_model imports factories from the working directory)."""
    monkeypatch.chdir(files["dir"])
    yield files
    sys.modules.pop(NETS, None)


# ------------------------------------------------------------------------------------------ specs


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "torch-export", "factory"])
def test_a_fresh_process_loads_the_same_model_from_the_spec(in_dir, fmt, tmp_path):
    model = _load(in_dir, fmt)
    spec = model.spec()
    assert spec is not None and spec.format == fmt and spec.sha256 == model.info.sha256
    assert spec.num_classes == 4 and ModelSpec.model_validate_json(spec.model_dump_json()) == spec
    out = tmp_path / "logits.npy"
    # Files are found from anywhere (absolute paths); a factory's module from where it was imported.
    cwd = in_dir["dir"] if fmt == "factory" else tmp_path
    proc = subprocess.run([sys.executable, "-c", CHILD, spec.model_dump_json(), str(in_dir["dir"] / "x.npy"),
                           str(out)], capture_output=True, text=True, cwd=cwd, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == model.info.sha256
    with torch.no_grad():
        reference = in_dir["net"](torch.from_numpy(in_dir["x"])).numpy()  # the eager net, not our loader
    np.testing.assert_allclose(np.load(out), reference, atol=1e-5)
    np.testing.assert_allclose(np.load(out), model.logits(in_dir["x"]), atol=1e-6)


def test_spec_paths_are_absolute_and_weights_are_kept_apart(in_dir):
    model = _load(in_dir, "factory", feature_layer="conv")
    spec = model.spec()
    assert spec.path == f"{NETS}:make_net" and spec.weights == str(in_dir["dir"] / "net.safetensors")
    assert spec.feature_layer == "conv"
    assert model.info.path == f"{NETS}:make_net" and model.info.weights == str(in_dir["dir"] / "net.safetensors")
    onnx_model = load_model("net.onnx", num_classes=4)
    assert onnx_model.spec().path == str(in_dir["dir"] / "net.onnx") and onnx_model.info.path == "net.onnx"
    assert load_model(onnx_model.spec()).info.sha256 == onnx_model.info.sha256


def test_a_spec_refuses_a_file_that_changed(files, tmp_path):
    path = tmp_path / "net.onnx"
    path.write_bytes((files["dir"] / "net.onnx").read_bytes())
    spec = load_model(str(path), num_classes=4).spec()
    proto = onnx.load(str(path))
    proto.doc_string = "changed"
    onnx.save(proto, str(path))
    with pytest.raises(ModelError, match="not the one its spec describes"):
        spec.load()
    assert spec.load(verify=False).info.sha256 != spec.sha256


def test_load_model_with_a_spec_takes_no_other_options(files):
    spec = _load(files, "onnx").spec()
    with pytest.raises(OptionError, match="threads cannot be given with a ModelSpec"):
        load_model(spec, threads=2)
    assert load_model(spec.model_copy(update={"threads": 1})).spec().threads == 1


def test_untrained_factory_spec_reloads_untrained_without_pinning_random_weights(in_dir):
    model = load_model(f"{NETS}:make_net", untrained=True, num_classes=4)
    spec = model.spec()
    assert spec.untrained and model.info.untrained and spec.weights is None
    again = spec.load()
    assert again.info.untrained
    assert model.model_files().paths == [] and "without weights" in model.model_files().note


def test_in_memory_models_have_no_spec():
    model = LinearModel(np.ones((4, 3)), np.zeros(3), (4,))
    assert model.spec() is None
    assert model.model_files().paths == [] and "in-memory" in model.model_files().note


def test_a_spec_names_a_registered_format():
    with pytest.raises(ValidationError, match="unknown model format 'keras'"):
        ModelSpec(format="keras", path="m.h5")
    with pytest.raises(ValidationError):
        ModelSpec.model_validate_json('{"format": "onnx", "path": "m.onnx", "code": "print(1)"}')


# ------------------------------------------------------------------------------------------ ModelInfo


def _info(**fields) -> dict:
    return {"sha256": "0" * 64, "input_shape": [None, 4], "input_dtype": "float32", "num_classes": 2,
            "class_names": ["a", "b"], **fields}


def test_old_bundles_with_weights_joined_to_the_path_read_split():
    old = ModelInfo.model_validate(_info(path="pkg.nets:make --weights /w/net.safetensors", format="factory"))
    assert (old.path, old.weights) == ("pkg.nets:make", "/w/net.safetensors")
    assert ModelInfo.model_validate_json(old.model_dump_json()) == old
    kept = ModelInfo.model_validate(_info(path="odd --weights name.onnx", format="onnx"))  # not a factory
    assert kept.path == "odd --weights name.onnx" and kept.weights is None


def test_model_info_format_is_a_registry_key_not_a_closed_list():
    for name in FORMATS:
        assert ModelInfo.model_validate(_info(path="m", format=name)).format == name
    assert ModelInfo.model_validate(_info(path="m", format="hf-transformers")).format == "hf-transformers"
    with pytest.raises(ValidationError):
        ModelInfo.model_validate(_info(path="m", format="Not A Key!"))


# ------------------------------------------------------------------------------------------ registry


def test_registry_maps_extensions_and_recognises_export_archives_named_pt(files, tmp_path):
    assert extension_map() == {".onnx": "onnx", ".pt": "torchscript", ".pth": "torchscript", ".ts": "torchscript",
                               ".pt2": "torch-export"}
    renamed = tmp_path / "exported.pt"
    renamed.write_bytes((files["dir"] / "net.pt2").read_bytes())
    assert format_for_file(renamed).name == "torch-export"
    assert format_for_file(files["dir"] / "net.pt").name == "torchscript"
    assert format_for_file(tmp_path / "model.h5") is None
    assert load_model(str(renamed), num_classes=4).info.format == "torch-export"
    # the message text the loader used before the registry existed
    assert supported_text() == ("ONNX (.onnx), TorchScript (.pt, .pth, .ts), torch.export (.pt2), or a factory "
                                "'package.module:callable' with --weights (.safetensors or a state dict)")


def test_register_format_refuses_a_taken_name_or_extension():
    onnx_format = FORMATS["onnx"]
    with pytest.raises(ValueError, match="already registered"):
        register_format(onnx_format)
    with pytest.raises(ValueError, match="already belongs"):
        register_format(ModelFormat(name="other", title="x", noun="x", runtime="x", load=onnx_format.load,
                                    files=onnx_format.files, extensions=(".onnx",)))
    assert "other" not in FORMATS


def test_no_format_branches_outside_models():
    """Code above the model layer asks the model (capabilities), it does not branch on its format."""
    branch = re.compile(r"\.format\s*(==|!=)|\.format\s+(not\s+)?in\b|format\s*==\s*['\"](onnx|factory|torch)")
    found = []
    for path in SRC.rglob("*.py"):
        if path.is_relative_to(SRC / "models"):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if branch.search(line):
                found.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


# ------------------------------------------------------------------------------------------ capabilities


def test_parameter_and_flop_counts_agree_across_formats(in_dir):
    files = in_dir  # the factory's module is imported from the working directory
    n_params = sum(p.numel() for p in files["net"].parameters())
    macs = (3 * 4 * 4) * 1 * 9 + 48 * 4  # conv: out elements x Cin x kernel; linear: in x out
    for fmt in ("onnx", "torchscript", "factory"):
        model = _load(files, fmt)
        count = model.parameter_count()
        assert count.count == n_params, fmt
        assert model.flop_count(files["x"]).flops == 2 * macs, fmt


def test_set_threads_on_torch_is_restored_and_onnx_reloads(files):
    before = torch.get_num_threads()
    setting = _load(files, "torchscript").set_threads(1)
    assert torch.get_num_threads() == 1 and setting.threads == 1
    setting.restore()
    assert torch.get_num_threads() == before
    onnx_model = _load(files, "onnx", threads=2)
    reloaded = onnx_model.set_threads(1)
    assert reloaded.model is not onnx_model and reloaded.threads == 1 and "reloaded" in reloaded.source
    assert reloaded.model.session.get_session_options().intra_op_num_threads == 1
    assert onnx_model.set_threads(2).model is onnx_model
    with pytest.raises(UserError, match="at least 1"):
        onnx_model.set_threads(0)


def test_to_onnx_copies_onnx_and_exports_torch(in_dir, tmp_path):
    files = in_dir  # the factory's module is imported from the working directory
    onnx_model = _load(files, "onnx")
    export = onnx_model.to_onnx(tmp_path / "copy.onnx", files["x"][:2])
    assert export.copied and onnx.load(str(tmp_path / "copy.onnx")) == onnx.load(str(files["dir"] / "net.onnx"))
    factory = _load(files, "factory")
    export = factory.to_onnx(tmp_path / "exported.onnx", files["x"][:2])
    assert not export.copied and "factory" in export.how
    np.testing.assert_allclose(load_model(str(tmp_path / "exported.onnx")).logits(files["x"]),
                               factory.logits(files["x"]), atol=1e-5)
    with pytest.raises(ModelError, match="no torch module and no ONNX file"):
        LinearModel(np.ones((4, 3)), np.zeros(3), (4,)).to_onnx(tmp_path / "x.onnx", np.zeros((2, 4)))


def test_only_factories_offer_an_eager_module(in_dir):
    files = in_dir  # the factory's module is imported from the working directory
    assert _load(files, "factory").eager_module() is not None
    for fmt in ("onnx", "torchscript", "torch-export"):
        assert _load(files, fmt).eager_module() is None


def test_model_files_count_onnx_external_data(files, tmp_path):
    proto = onnx.load(str(files["dir"] / "net.onnx"))
    onnx.save(proto, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.onnx.data",
              size_threshold=0)
    model = load_model(str(tmp_path / "ext.onnx"), num_classes=4)
    found = model.model_files()
    assert [p.name for p in found.paths] == ["ext.onnx", "ext.onnx.data"] and "1 external" in found.note
    factory = _load(files, "factory")
    assert factory.model_files().paths == [files["dir"] / "net.safetensors"]
    assert "weights file only" in factory.model_files().note

