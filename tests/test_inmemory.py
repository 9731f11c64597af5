"""The library with objects in memory: an ``nn.Module`` and arrays passed straight to ``assay.evaluate`` (and
select/compare/profile), ``Dataset.from_arrays``, and the errors for anything else.

References: the same module saved as TorchScript and as a factory with safetensors weights (the file paths
Assay already supports) must give the same evidence; ``Dataset.from_arrays`` must give the dataset that
``load_npz`` reads from the same arrays saved with ``numpy.savez``; predictions are recomputed with torch."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import assay
from assay.api import run_evaluation
from assay.cli import main
from assay.data.dataset import IN_MEMORY_SOURCE, Dataset
from assay.data.loader import load_data
from assay.data.npz import load_npz
from assay.errors import DataError, ModelError, OptionError, UserError
from assay.models.torch_models import module_sha256, wrap_module

ROOT = Path(__file__).parents[1]


class CentroidNet(nn.Module):
    """A nearest-centroid classifier on flattened 8x8 digits, with a batch norm and a dropout that change its
    outputs in training mode (batch statistics, random masks) but are the identity in eval mode."""

    def __init__(self, num_classes: int = 10, dim: int = 64) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.norm = nn.BatchNorm1d(dim)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.norm(self.flatten(x))))


def make_centroid_net() -> CentroidNet:
    """The factory ``test_inmemory:make_centroid_net`` (weights come from a file)."""
    return CentroidNet()


def fit_centroid_net(x: np.ndarray, y: np.ndarray) -> CentroidNet:
    """Closed-form "training": class means as the head (logit_k = x.c_k - |c_k|^2 / 2), identity batch norm."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    centroids = np.stack([flat[y == k].mean(axis=0) for k in range(10)])
    net = CentroidNet()
    with torch.no_grad():
        net.head.weight.copy_(torch.from_numpy(centroids))
        net.head.bias.copy_(torch.from_numpy(-0.5 * (centroids**2).sum(axis=1)))
    return net.eval()


@pytest.fixture(scope="module")
def digits():
    return load_data("digits:train"), load_data("digits:test")


@pytest.fixture(scope="module")
def net(digits):
    train, _ = digits
    return fit_centroid_net(train.x, train.y)


def _eval_mode_logits(module: nn.Module, x: np.ndarray) -> np.ndarray:
    clone = CentroidNet()
    clone.load_state_dict(module.state_dict())
    with torch.no_grad():
        return clone.eval()(torch.from_numpy(x)).numpy()


def _metrics(evidence, section: str) -> dict[str, np.ndarray]:
    """Value and CI of every metric of a section (a missing bound as NaN)."""
    return {k: np.array([np.nan if v is None else v for v in (m.value, m.ci_low, m.ci_high)], dtype=float)
            for k, m in evidence.sections[section].metrics.items()}


SCRIPTING = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # TorchScript is deprecated


# --------------------------------------------------------------------------- the module, like its files


@SCRIPTING
def test_a_module_and_arrays_give_the_evidence_of_the_same_model_saved_as_torchscript_and_factory(
        digits, net, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    _, test = digits
    common = {"n_bootstrap": 200, "cache_dir": None, "seed": 3}
    in_memory = assay.evaluate(net, (test.x, test.y), **common)
    torch.jit.save(torch.jit.script(net), tmp_path / "net.pt")
    save_file(net.state_dict(), tmp_path / "net.safetensors")
    scripted = assay.evaluate(tmp_path / "net.pt", "digits:test", **common)
    monkeypatch.chdir(Path(__file__).parent)  # the factory is this module, imported from the working directory
    factory = assay.evaluate("test_inmemory:make_centroid_net", "digits:test",
                             weights=str(tmp_path / "net.safetensors"), **common)

    expected = _eval_mode_logits(net, test.x).argmax(axis=1)
    accuracy = in_memory.sections["performance"].metrics["accuracy"].value
    assert accuracy == pytest.approx((expected == test.y).mean()) and accuracy > 0.85
    for other in (scripted, factory):
        for section in ("performance", "calibration"):
            ours, theirs = _metrics(in_memory, section), _metrics(other, section)
            assert ours.keys() == theirs.keys()
            for key in ours:
                np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-5, atol=1e-7, err_msg=f"{section} {key}")
    assert in_memory.model.path == "<in-memory CentroidNet>" and in_memory.model.format == "factory"
    assert in_memory.model.num_classes == 10 and in_memory.model.feature_source == "input of Linear 'head'"
    assert in_memory.data.source == IN_MEMORY_SOURCE and in_memory.data.modality == "image"
    assert in_memory.data.fingerprint == Dataset.from_arrays(test.x, test.y).fingerprint  # ids 0..N-1
    assert Dataset.from_arrays(test.x, test.y, ids=test.ids).fingerprint == scripted.data.fingerprint


def test_white_box_attacks_and_odin_run_on_the_module_as_on_its_factory(digits, net, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    _, test = digits
    x, y = test.x[:120], test.y[:120]
    noise = np.random.default_rng(0).random((80, 1, 8, 8), dtype=np.float32)
    common = {"n_bootstrap": 100, "cache_dir": None, "adversarial": "quick", "attacks": ["fgsm"],
              "eps": [0.05], "ood": [noise]}
    ours = assay.evaluate(net, (x, y), **common)
    save_file(net.state_dict(), tmp_path / "net.safetensors")
    np.savez(tmp_path / "small.npz", x=x, y=y)
    np.savez(tmp_path / "noise.npz", x=noise)
    monkeypatch.chdir(Path(__file__).parent)
    factory = assay.evaluate("test_inmemory:make_centroid_net", str(tmp_path / "small.npz"),
                             weights=str(tmp_path / "net.safetensors"),
                             **{**common, "ood": [str(tmp_path / "noise.npz")]})
    robust = ours.sections["adversarial"].metrics
    assert any(f.message == "model is in eval mode" for f in ours.sections["adversarial"].findings)
    assert {k: m.value for k, m in robust.items()} == pytest.approx(
        {k: m.value for k, m in factory.sections["adversarial"].metrics.items()})
    detectors = {r["detector"] for r in ours.sections["ood"].tables["detectors"]}
    assert "odin" in detectors  # input gradients through the module
    odin = {k: m.value for k, m in ours.sections["ood"].metrics.items() if k.startswith("auroc[odin")}
    theirs = {k: m.value for k, m in factory.sections["ood"].metrics.items() if k.startswith("auroc[odin")}
    assert list(odin.values()) == pytest.approx(list(theirs.values()))
    assert ours.config["ood"] == ["<in-memory ood[0]>"]


def test_the_callers_module_keeps_its_modes_weights_and_hooks(digits, net):
    _, test = digits
    module = CentroidNet()
    module.load_state_dict(net.state_dict())
    module.train()
    module.head.eval()  # mixed modes must come back as they were, module by module
    modes = {name: m.training for name, m in module.named_modules()}
    state = {k: v.clone() for k, v in module.state_dict().items()}

    evidence = assay.evaluate(module, (test.x, test.y), n_bootstrap=100, cache_dir=None)

    assert {name: m.training for name, m in module.named_modules()} == modes
    for key, value in module.state_dict().items():  # batch-norm statistics did not move
        assert torch.equal(value, state[key]), key
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in module.modules())
    # ... and it was evaluated in eval mode (in training mode batch statistics and dropout change the outputs)
    expected = _eval_mode_logits(module, test.x).argmax(axis=1)
    assert evidence.sections["performance"].metrics["accuracy"].value == pytest.approx((expected == test.y).mean())
    with torch.no_grad():
        train_mode = module(torch.from_numpy(test.x)).numpy().argmax(axis=1)
    assert (train_mode != expected).any()


def test_the_cache_knows_a_module_by_its_content(digits, net, tmp_path):
    _, test = digits
    data = (test.x[:200], test.y[:200])
    first = run_evaluation(net, data, cache_dir=tmp_path).outputs
    again = run_evaluation(net, data, cache_dir=tmp_path).outputs
    assert first.forward_batches > 0 and again.forward_batches == 0 and again.cache_hits == 1
    changed = CentroidNet()
    changed.load_state_dict(net.state_dict())
    with torch.no_grad():
        changed.head.bias[0] += 1.0
    assert run_evaluation(changed, data, cache_dir=tmp_path).outputs.forward_batches > 0


def test_module_sha256_follows_weights_buffers_layers_and_forward_code(net):
    same = CentroidNet()
    same.load_state_dict(net.state_dict())
    assert module_sha256(same) == module_sha256(net)

    class OtherForward(CentroidNet):  # same parameters, another computation
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.flatten(x)) * 2

    other = OtherForward()
    other.load_state_dict(net.state_dict())
    buffers = CentroidNet()
    buffers.load_state_dict(net.state_dict())
    buffers.norm.running_mean += 0.1
    layers = CentroidNet()
    layers.load_state_dict(net.state_dict())
    layers.drop = nn.Dropout(0.1)
    digests = {module_sha256(m) for m in (net, other, buffers, layers)}
    assert len(digests) == 4


@SCRIPTING
def test_a_scripted_module_in_memory_reads_its_features_through_the_graph(digits, net):
    _, test = digits
    scripted = torch.jit.script(net)
    model = wrap_module(scripted, sample=test.x[:2])
    logits, features = model.forward(test.x[:20], want_features=True)
    np.testing.assert_allclose(logits, _eval_mode_logits(net, test.x[:20]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(features, test.x[:20].reshape(20, -1), rtol=1e-5, atol=1e-5)  # the head's input
    assert model.info.path == "<in-memory CentroidNet>" and model.eager_module() is None and model.spec() is None


def test_a_module_without_values_or_that_cannot_be_copied_is_a_model_error():
    import threading

    sample = np.zeros((2, 3), np.float32)
    with pytest.raises(ModelError, match="'meta' device"):
        wrap_module(nn.Linear(3, 2).to("meta"), sample=sample)
    locked = nn.Linear(3, 2)
    locked.lock = threading.Lock()  # deepcopy cannot copy a lock
    with pytest.raises(ModelError, match="cannot be copied") as info:
        assay.evaluate(locked, (sample, [0, 1]), cache_dir=None)
    assert "torch.jit.save" in info.value.fix


def test_a_module_in_memory_cannot_go_to_worker_processes(digits, net):
    _, test = digits
    with pytest.raises(ModelError, match="built in memory cannot be reloaded"):
        run_evaluation(net, (test.x[:50], test.y[:50]), cache_dir=None, backend="processes")


def test_module_options_that_need_a_file_are_refused(digits, net):
    _, test = digits
    for option, value in (("weights", "w.safetensors"), ("untrained", True), ("feature_output", "h")):
        with pytest.raises(OptionError) as info:
            assay.evaluate(net, (test.x[:50], test.y[:50]), cache_dir=None, **{option: value})
        assert info.value.where == option


def test_a_tabular_and_a_text_module(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    linear = nn.Linear(3, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[-1.0, 0, 0], [1.0, 0, 0]]))
        linear.bias.zero_()
    evidence = assay.evaluate(linear, (torch.from_numpy(x), torch.from_numpy(y)), n_bootstrap=100, cache_dir=None)
    assert evidence.data.modality == "tabular" and evidence.sections["performance"].metrics["accuracy"].value == 1.0

    class LengthClassifier(nn.Module):  # text in (a list of str), logits out: long texts are class 1
        def forward(self, texts: list[str]) -> torch.Tensor:
            lengths = torch.tensor([float(len(t)) for t in texts])
            return torch.stack([10.0 - lengths, lengths - 10.0], dim=1)

    texts = ["short", "tiny", "a much longer sentence", "another long sentence here"]
    evidence = assay.evaluate(LengthClassifier(), (texts, [0, 0, 1, 1]), n_bootstrap=100, cache_dir=None,
                              checks=["performance"])
    assert evidence.data.modality == "text" and evidence.sections["performance"].metrics["accuracy"].value == 1.0


# --------------------------------------------------------------------------- select, compare, profile


def test_select_compare_and_profile_take_modules(digits, net):
    _, test = digits
    weak = CentroidNet()
    weak.load_state_dict(net.state_dict())
    with torch.no_grad():
        weak.head.weight[:, :32] = 0  # half the pixels ignored
    data = (test.x, test.y)
    selection = assay.select([weak, net], data, out=None, cache_dir=None, n_bootstrap=200)
    assert selection.pick == "<in-memory CentroidNet #2>"  # the full centroid model
    from assay.api import compare

    comparison = compare(net, weak, data=data, out=None, cache_dir=None, n_bootstrap=200)
    assert comparison.exit_code == 1  # the weak candidate regresses
    # The package is callable too (``assay.compare`` is both the function and the package) and takes modules.
    same = assay.compare(net, weak, data=data, out=None, cache_dir=None, n_bootstrap=200)
    assert (same.verdict, same.rules, same.per_class) == (comparison.verdict, comparison.rules, comparison.per_class)
    cost = assay.profile(net, torch.from_numpy(test.x[:8]), batch_sizes=(1,), budget_s=0.05, measure_rss=False)
    assert cost.parameters == sum(p.numel() for p in net.parameters())


def test_compress_refuses_a_module_and_says_how_to_save_it(digits, net):
    from assay.api import compress

    _, test = digits
    for call in (compress, assay.compress):  # the library function and the callable package
        with pytest.raises(OptionError, match="file or factory spec") as info:
            call(net, (test.x, test.y), out=None)
        assert info.value.where == "model" and "torch.jit.save" in info.value.fix


# --------------------------------------------------------------------------- Dataset.from_arrays


def test_from_arrays_defaults_and_modality():
    rng = np.random.default_rng(0)
    images = Dataset.from_arrays(rng.random((6, 3, 4, 4), dtype=np.float32), np.arange(6) % 2)
    assert images.modality == "image" and images.ids.tolist() == list(range(6)) and images.name == "arrays"
    assert images.source == IN_MEMORY_SOURCE and images.class_names is None and images.metadata_columns == []
    assert len(images.fingerprint) == 64 and images.notes == []
    assert Dataset.from_arrays(rng.random((6, 4, 4))).modality == "image"  # (N, H, W): one channel
    assert Dataset.from_arrays(rng.normal(size=(6, 5))).modality == "tabular"
    text = Dataset.from_arrays(["a", "bb", "ccc"], ["pos", "neg", "pos"])
    assert text.modality == "text" and text.x.dtype == object and text.y.tolist() == [1, 0, 1]
    assert text.class_names == ["neg", "pos"] and "sorted label values" in text.notes[0]
    named = Dataset.from_arrays(["a", "b"], ["pos", "neg"], class_names=["pos", "neg"])
    assert named.y.tolist() == [0, 1] and named.notes == []
    scaled = Dataset.from_arrays(np.full((2, 1, 2, 2), 255, np.uint8))
    assert scaled.x.max() == 1.0 and scaled.notes[0].severity == "info" and scaled.y is None
    meta = Dataset.from_arrays(rng.normal(size=(3, 2)), [0, 1, 1], ids=["a", "b", "c"], name="val",
                               meta={"region": np.array(["n", "s", "n"]), "age": [30, 40, 50]})
    assert meta.ids.tolist() == ["a", "b", "c"] and meta.name == "val"
    assert meta.meta["region"].tolist() == ["n", "s", "n"] and meta.meta["age"].tolist() == [30, 40, 50]
    import pandas as pd

    frame = pd.DataFrame({"g": list("xyz")}, index=[10, 11, 12])
    assert Dataset.from_arrays(rng.normal(size=(3, 2)), meta=frame).meta["g"].tolist() == ["x", "y", "z"]


def test_from_arrays_reads_torch_tensors_like_numpy():
    x = torch.rand(5, 1, 3, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1, 0])
    a = Dataset.from_arrays(x, y)
    b = Dataset.from_arrays(x.numpy(), y.numpy())
    assert a.fingerprint == b.fingerprint and a.x.dtype == np.float32
    half = Dataset.from_arrays(x.to(torch.bfloat16), y)  # numpy has no bfloat16: read as float32
    assert half.x.dtype == np.float32


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 12), shape=st.sampled_from([(3,), (1, 2, 2), (2, 3, 3)]),
       dtype=st.sampled_from(["float32", "float64", "uint8", "int32"]), labelled=st.booleans(),
       seed=st.integers(0, 2**16))
def test_from_arrays_is_the_dataset_load_npz_reads_from_the_same_arrays(tmp_path_factory, n, shape, dtype,
                                                                        labelled, seed):
    rng = np.random.default_rng(seed)
    x = (rng.random((n, *shape)) * (255 if dtype in ("uint8", "int32") else 1)).astype(dtype)
    y = rng.integers(0, 3, size=n) if labelled else None
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    np.savez(path, **({"x": x, "y": y} if labelled else {"x": x}))
    ours, theirs = Dataset.from_arrays(x, y), load_npz(path)
    assert ours.modality == theirs.modality and ours.fingerprint == theirs.fingerprint
    np.testing.assert_array_equal(ours.x, theirs.x)
    assert [str(n) for n in ours.notes] == [str(n) for n in theirs.notes]


@pytest.mark.parametrize("args, kwargs, where, fragment", [
    ((np.zeros((3, 2)), [0, 1]), {}, "y", "3 inputs (x) but 2 labels"),
    ((np.array([[np.nan, 1.0], [1.0, 1.0]]), [0, 1]), {}, "x", "NaN or infinite"),
    ((np.array([[np.inf, 1.0], [1.0, 1.0]]),), {}, "x", "NaN or infinite"),
    ((np.zeros((2, 2)), [0.5, 1.0]), {}, "y", "whole class indices"),
    ((np.zeros((2, 2)), np.eye(2)), {}, "y", "one-hot"),
    ((np.zeros((2, 2)), [0, 3]), {"class_names": ["a", "b"]}, "class_names", "only 2 class names"),
    ((np.zeros((2, 2)), [0, 1]), {"class_names": "ab"}, "class_names", "one string"),
    ((np.zeros(3),), {}, "x", "expected (N, F) features"),
    ((np.zeros((0, 2)),), {}, "x", "no samples"),
    (([[1.0, 2.0], [3.0]],), {}, "x", "not an array"),
    ((np.zeros((2, 2)),), {"ids": [1, 1]}, "ids", "more than once"),
    ((np.zeros((2, 2)),), {"ids": [1, 2, 3]}, "ids", "expected (2,)"),
    ((np.zeros((2, 2)),), {"meta": {"a": [1]}}, "meta['a']", "expected (2,)"),
    ((np.zeros((2, 2)),), {"meta": [1, 2]}, "meta", "dict of columns"),
    ((np.zeros((2, 2)),), {"modality": "image"}, "modality", "is tabular data, not image"),
    ((np.zeros((2, 2)), ["a", None]), {}, "y", "missing"),
])
def test_from_arrays_errors_name_the_parameter(args, kwargs, where, fragment):
    with pytest.raises(DataError) as info:
        Dataset.from_arrays(*args, **kwargs)
    assert info.value.where == where and fragment in str(info.value) and info.value.fix


def test_from_arrays_refuses_an_unknown_modality():
    with pytest.raises(OptionError, match="modality must be"):
        Dataset.from_arrays(np.zeros((2, 2)), modality="video")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- what is not accepted


@pytest.mark.parametrize("model", [42, 3.5, {"weights": 1}, ["a.onnx", "b.onnx"], object(), b"model.onnx", None])
def test_a_model_of_another_type_is_an_option_error_naming_the_accepted_types(model):
    with pytest.raises(OptionError) as info:
        assay.evaluate(model, "digits", cache_dir=None)
    assert info.value.where == "model" and "torch.nn.Module" in info.value.fix and "model file" in info.value.fix


@pytest.mark.parametrize("data", [42, {"x": np.zeros((2, 2))}, ["not-a-path", "nor-this"], object(),
                                  (np.zeros((2, 2)), [0, 1], [0, 1])])
def test_data_of_another_type_is_an_option_error_naming_the_accepted_types(net, data):
    with pytest.raises(OptionError) as info:
        assay.evaluate(net, data, cache_dir=None)
    assert info.value.where == "data" and ("Dataset.from_arrays" in info.value.fix)


def test_missing_paths_and_bad_settings_are_user_errors_that_say_where(net, tmp_path, digits):
    _, test = digits
    with pytest.raises(UserError, match="not found") as info:
        assay.evaluate(str(tmp_path / "nope.onnx"), "digits", cache_dir=None)
    assert info.value.where == str(tmp_path / "nope.onnx")
    with pytest.raises(DataError, match="no such file") as info:
        assay.evaluate(net, str(tmp_path / "nope.npz"), cache_dir=None)
    assert info.value.where == str(tmp_path / "nope.npz")
    bad = test.x[:10].copy()
    bad[3, 0, 0, 0] = np.nan
    with pytest.raises(DataError) as info:
        assay.evaluate(net, (test.x, test.y), ood=[bad], cache_dir=None)
    assert info.value.where == "ood[0] (x)"
    with pytest.raises(DataError) as info:
        assay.evaluate(net, (test.x, test.y[:-1]), cache_dir=None)
    assert info.value.where == "data (y)"
    with pytest.raises(OptionError) as info:
        assay.evaluate(net, (test.x, test.y), label_col="y", cache_dir=None)
    assert info.value.where == "label_col"
    with pytest.raises(OptionError) as info:
        assay.evaluate(net, (test.x, test.y), unlabeled=[42], cache_dir=None)
    assert info.value.where == "unlabeled[0]"
    with pytest.raises(OptionError) as info:
        assay.select([net, 42], (test.x, test.y), out=None)
    assert info.value.where == "models[1]" and "evidence bundle" in info.value.fix
    with pytest.raises(OptionError):
        assay.profile(42, test.x[:4])


@pytest.mark.parametrize("which", ["model", "data"])
def test_the_cli_still_reports_a_missing_path_without_a_traceback(which, tmp_path, capsys):
    missing = str(tmp_path / ("nope.onnx" if which == "model" else "nope.npz"))
    args = (["evaluate", missing, "--data", "digits"] if which == "model"
            else ["evaluate", str(tmp_path / "m.onnx"), "--data", missing])
    if which == "data":
        from assay.models.export import export_onnx

        export_onnx(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), torch.zeros(2, 1, 8, 8), tmp_path / "m.onnx")
    code = main([*args, "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("Error:") and "Fix:" in err and "Traceback" not in err
    assert Path(missing).name in err and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- unlabeled sets and the top level


def test_unlabeled_and_training_sets_as_arrays(digits, net):
    train, test = digits
    evidence = assay.evaluate(net, (test.x, test.y), unlabeled=test.x[:100], train_data=(train.x, train.y),
                              ood=[(test.x[:50] * 0.0 + 0.5,)], n_bootstrap=100, cache_dir=None)
    assert evidence.config["unlabeled"] == ["<in-memory unlabeled[0]>"]
    assert evidence.config["train_data"] == "<in-memory train_data>"
    assert {"label_free", "ood"} <= set(evidence.sections)
    detectors = {r["detector"] for r in evidence.sections["ood"].tables["detectors"]}
    assert "mahalanobis" in detectors  # fitted on the in-memory training set's features


def test_dataset_is_exported_at_the_top_level():
    assert assay.Dataset is Dataset and "Dataset" in assay.__all__ and "Dataset" in dir(assay)


def test_the_readme_library_snippets_run(tmp_path, monkeypatch):
    """Every ```python block of the README's library section, executed in order in one namespace."""
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"\n## Library API\n(.*?)\n## ", readme, re.S).group(1)
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) >= 2 and any("Dataset.from_arrays" in b for b in blocks)
    assert any("assay.evaluate(net, (x, y)" in b for b in blocks)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ASSAY_CACHE_DIR", str(tmp_path / "cache"))
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert (tmp_path / "assay-out" / "report.html").exists()  # the first block: the ONNX file's bundle
    evidence = namespace["evidence"]
    assert evidence.model.path.startswith("<in-memory")
    assert {"slices", "ood"} <= set(evidence.sections)
    assert evidence.sections["performance"].metrics["accuracy"].value > 0.7
    assert not namespace["net"].training  # the demo's training returns it in eval mode; Assay left it so
