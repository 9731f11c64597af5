"""Library API end to end: evaluate, determinism, caching through the API, bundle round trip, demo."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import assay
from assay.api import run_evaluation
from assay.checks.base import EvaluateConfig
from assay.errors import UserError
from assay.evidence.bundle import read_bundle
from conftest import make_blobs_dataset


def _strip_volatile(evidence) -> dict:
    data = evidence.model_dump()
    data.pop("timings")
    data.pop("created_at")
    data["config"].pop("cache")
    return data


def test_evaluate_in_memory_model_and_dataset(tmp_path):
    ds, model = make_blobs_dataset(n=300)
    evidence = assay.evaluate(model, ds, out=tmp_path / "b", cache_dir=None, n_bootstrap=200)
    perf = evidence.sections["performance"]
    pred = (ds.x @ model.weight + model.bias).argmax(1)
    assert perf.metrics["accuracy"].value == pytest.approx((pred == ds.y).mean())
    assert evidence.data.fingerprint == ds.fingerprint and evidence.data.n == 300
    assert evidence.environment.python and evidence.environment.numpy
    loaded, predictions = read_bundle(tmp_path / "b")
    assert loaded == evidence
    np.testing.assert_array_equal(predictions["labels"], ds.y)
    np.testing.assert_allclose(predictions["logits"], ds.x @ model.weight + model.bias, rtol=1e-5)


def test_same_seed_same_evidence_apart_from_timings():
    ds, model = make_blobs_dataset(n=250, noise=2.0)
    cfg = EvaluateConfig(seed=5, n_bootstrap=300)
    a = run_evaluation(model, ds, config=cfg, cache_dir=None).evidence
    b = run_evaluation(model, ds, config=cfg, cache_dir=None).evidence
    assert _strip_volatile(a) == _strip_volatile(b)
    c = run_evaluation(model, ds, config=EvaluateConfig(seed=6, n_bootstrap=300), cache_dir=None).evidence
    assert (c.sections["performance"].metrics["accuracy"].ci_low != a.sections["performance"].metrics["accuracy"].ci_low
            or c.sections["performance"].metrics["nll"].ci_low != a.sections["performance"].metrics["nll"].ci_low)


def test_second_run_through_api_does_no_forward_pass(tmp_path):
    ds, model = make_blobs_dataset(n=200)
    first = run_evaluation(model, ds, config=EvaluateConfig(n_bootstrap=100), cache_dir=tmp_path)
    calls = model.calls
    second = run_evaluation(model, ds, config=EvaluateConfig(n_bootstrap=100), cache_dir=tmp_path)
    assert calls > 0 and model.calls == calls
    assert second.outputs.forward_batches == 0 and second.outputs.cache_hits == 1
    assert second.evidence.config["cache"]["forward_batches"] == 0
    assert first.evidence.sections == second.evidence.sections


def test_unlabelled_data_and_unknown_check_are_user_errors():
    ds, model = make_blobs_dataset(n=50)
    ds.y = None
    with pytest.raises(UserError, match="no labels"):
        run_evaluation(model, ds, cache_dir=None)
    ds2, model2 = make_blobs_dataset(n=50)
    with pytest.raises(UserError, match="unknown check"):
        run_evaluation(model2, ds2, checks=["performance", "vibes"], cache_dir=None)


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    from assay.demo import run_demo

    run = run_demo(tmp_path / "demo", progress=False, cache_dir=tmp_path / "cache")
    out = tmp_path / "demo"
    for name in ("evidence.json", "predictions.npz", "reference.npz", "report.html", "report.md", "model.onnx"):
        assert (out / name).exists(), name
    evidence = json.loads((out / "evidence.json").read_text())
    acc = evidence["sections"]["performance"]["metrics"]["accuracy"]
    assert acc["value"] > 0.9, acc  # a CNN on digits reaches ~97%
    assert evidence["model"]["format"] == "onnx"
    assert evidence["sections"]["calibration"]["metrics"]["temperature"]["value"] > 0
    assert (out / "report.html").stat().st_size < 3 * 2**20
    assert run.evidence.timings["demo_training"] > 0
    # The default (standard) demo also shows OOD detection (ViM read from the ONNX head) and slices.
    detectors = {r["detector"] for r in evidence["sections"]["ood"]["tables"]["detectors"]}
    assert {"msp", "energy", "mahalanobis", "knn", "vim"} <= detectors
    assert {r["slice"] for r in evidence["sections"]["slices"]["tables"]["ink"]} == {"low", "mid", "high"}
    assert evidence["sections"]["efficiency"]["metrics"]["flops"]["value"] == 2 * 337_536


def test_the_bundle_reference_has_embedding_histograms_without_keeping_all_features(tmp_path):
    """Without OOD the engine keeps only a fixed-seed sample of feature rows; the reference written into the
    bundle builds its embedding bins from it, and read_bundle reads it back."""
    import assay
    from assay.data.loader import load_data
    from assay.demo import train_digits_cnn
    from assay.engine.run import FEATURE_SAMPLE_ROWS
    from assay.models.export import export_onnx

    train, test = load_data("digits:train"), load_data("digits:test")
    net = train_digits_cnn(train.x, train.y, epochs=2)
    model = export_onnx(net, torch.from_numpy(test.x[:2]), tmp_path / "m.onnx", class_names=test.class_names)
    run = assay.run_evaluation(str(model), test, cache_dir=False)
    assert run.outputs.clean.features is None and run.outputs.clean.feature_sample.shape[0] == len(test)
    assert len(test) < FEATURE_SAMPLE_ROWS  # the whole set is the sample here
    assay.evaluate(str(model), test, out=tmp_path / "out", n_bootstrap=100, cache_dir=False)
    reference = assay.read_bundle(tmp_path / "out").reference
    assert reference.features.space == "embeddings" and reference.features.n_features == net.fc2.in_features
    assert reference.n == len(test) and reference.model_sha256 == run.evidence.model.sha256


def test_the_public_facade_validates_its_parameters_by_name(tmp_path):
    """assay.compare/select/compress/profile check their arguments before any work; a bad one is an
    OptionError naming the Python parameter, and assay.compare stays the import path of its package."""
    from assay.errors import OptionError

    assert callable(assay.compare) and callable(assay.compress)
    import importlib

    run = importlib.import_module("assay.compare.run")  # the documented module path keeps working
    assert callable(run.compare) and callable(assay.compare) and assay.compare.run is run
    cases = [
        (lambda: assay.compare("a", "b", n_bootstrap="many"), "n_bootstrap"),
        (lambda: assay.compare("a", "b", n_bootstrap=10), "n_bootstrap"),
        (lambda: assay.select(["a", "b"], "digits", objectiv="accuracy"), "select"),
        (lambda: assay.compress("m.onnx", "digits", max_accuracy_drop="lots"), "max_accuracy_drop"),
        (lambda: assay.evaluate("m.onnx", "digits", n_bootstrap=3), "n_bootstrap"),
        (lambda: assay.evaluate("m.onnx", "digits", severities="all"), "severities"),
        (lambda: assay.evaluate("m.onnx", "digits", severity=[1]), "severity"),
    ]
    for call, where in cases:
        with pytest.raises(OptionError) as info:
            call()
        assert info.value.where == where, (where, info.value)


@pytest.mark.parametrize("call, where", [
    (lambda: assay.evaluate(42, "digits"), "model"),
    (lambda: assay.evaluate("m.onnx", 42), "data"),
    (lambda: assay.evaluate("m.onnx", "digits", calibration_data={"x": 1}), "calibration_data"),
    (lambda: assay.evaluate("m.onnx", "digits", ood=["digits", 7]), "ood[1]"),
    (lambda: assay.select(["a.onnx", 42], "digits", out=None), "models[1]"),
    (lambda: assay.select(["a.onnx", "b.onnx"], 42, out=None), "data"),
    (lambda: assay.compare(42, "b"), "baseline"),
    (lambda: assay.compare("a", "b", data=42, out=None), "data"),
    (lambda: assay.compress(42, "digits", out=None), "model"),
    (lambda: assay.compress("m.onnx", 42, methods=["fp16"], out=None), "data"),
    (lambda: assay.profile(42, np.zeros((2, 3))), "model"),
    (lambda: assay.profile("m.onnx", 42), "sample"),
])
def test_every_public_entry_refuses_an_object_it_cannot_use_by_parameter(call, where, tmp_path, monkeypatch):
    """Neither a path, a model, an nn.Module, arrays nor a Dataset: a UserError naming the parameter (never a
    raw TypeError/OSError/AttributeError), before any work."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as info:
        call()
    assert info.value.where == where, info.value
    assert not list(tmp_path.iterdir())  # nothing written


def test_the_facade_functions_accept_in_memory_models_and_arrays():
    """select/compare from the facade take nn.Modules and (x, y) arrays (the rest is in test_inmemory.py)."""
    from assay.api import compare

    ds, _ = make_blobs_dataset(n=120)
    good, bad = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    centers = np.stack([ds.x[ds.y == k].mean(axis=0) for k in range(3)])
    with torch.no_grad():
        good.weight.copy_(torch.from_numpy(centers))
        good.bias.copy_(torch.from_numpy(-0.5 * (centers**2).sum(axis=1)))
        bad.weight.zero_()
        bad.bias.copy_(torch.tensor([2.0, 0.5, -1.0]))  # always class 0
    selection = assay.select([bad, good], (ds.x, ds.y), out=None, cache_dir=None, n_bootstrap=100)
    assert selection.pick == "<in-memory Linear #2>"
    assert compare(good, bad, data=(ds.x, ds.y), out=None, cache_dir=None, n_bootstrap=100).exit_code == 1
