"""The engine's backend contract: a unit of work (model spec, view spec, shard) depends on nothing shared.

Every view kind the checks make is run twice -- in process on the live model and view, and through a pool
of spawned worker processes that reload the model from its spec and rebuild the view from its spec -- and
the outputs must agree (same logits, features and kept examples)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from assay.checks.base import EvaluateConfig
from assay.checks.label_free_check import UnlabeledView
from assay.checks.ood import ODINView, OODView, synthetic_ood_sets
from assay.data.loader import load_data
from assay.demo import train_digits_cnn
from assay.engine import run_views
from assay.engine.backends import LocalBackend, ProcessPoolBackend, get_backend
from assay.engine.planning import adversarial_views, attack_specs
from assay.engine.robust_views import CorruptionView, logit_module
from assay.engine.run import shards_of
from assay.engine.views import CleanView, View, ViewSpec, register_view_kind
from assay.engine.work import Shard, WorkUnit, run_shard, run_unit
from assay.errors import ModelError, OptionError
from assay.evaluation.pipeline import run_evaluation
from assay.models.loader import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits():
    return load_data("digits:train"), load_data("digits:test")


@pytest.fixture(scope="module")
def weights_file(digits, tmp_path_factory):
    train, _ = digits
    net = train_digits_cnn(train.x, train.y, epochs=3, seed=0)
    path = tmp_path_factory.mktemp("model") / "digits.pt"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def model(weights_file, digits):
    return load_model("assay.demo:make_digits_cnn", weights=weights_file, threads=1, sample=digits[1].x[:2])


def every_view_kind(model, test):
    """One view of each kind the checks make on image data (attacks need the clean outputs first)."""
    clean = run_views(model, test, [CleanView()], progress=False).clean
    ood = [OODView(name, ds, synthetic=True) for name, ds in synthetic_ood_sets(test, n=120).items()]
    module = logit_module(model)
    specs = attack_specs(["fgsm", "pgd"], [8 / 255], "linf", steps=5, restarts=1, queries=50, seed=0)
    return [
        CleanView(),
        CorruptionView(test, "gaussian_noise", 3),
        CorruptionView(test, "motion_blur", 2, seed=4),
        *adversarial_views(model, test, clean, specs, batch_size=64),
        *ood,
        ODINView(CleanView(), module),
        ODINView(ood[0], module),
        UnlabeledView("target", test),
    ]


def test_process_pool_gives_the_outputs_of_the_local_backend(model, digits):
    _, test = digits
    views = every_view_kind(model, test)
    local = run_views(model, test, views, batch_size=64, backend=LocalBackend(), progress=False)
    with ProcessPoolBackend(workers=2) as pool:
        remote = run_views(model, test, views, batch_size=64, backend=pool, progress=False)
    assert set(local.views) == set(remote.views) == {v.spec.name for v in views}
    assert remote.forward_batches == local.forward_batches > 0
    for name, out in local.views.items():
        other = remote.views[name]
        np.testing.assert_allclose(other.logits, out.logits, rtol=1e-5, atol=1e-5, err_msg=name)
        np.testing.assert_array_equal(other.logits.argmax(axis=1), out.logits.argmax(axis=1), err_msg=name)
        np.testing.assert_allclose(other.features, out.features, rtol=1e-5, atol=1e-5, err_msg=name)
        if out.examples is None:
            assert other.examples is None, name
        else:
            np.testing.assert_array_equal(other.example_index, out.example_index, err_msg=name)
            np.testing.assert_allclose(other.examples, out.examples, atol=1e-6, err_msg=name)
    # The attacks really attacked: the adversarial views differ from the clean outputs.
    adversarial = [n for n in local.views if n.startswith("adversarial")]
    assert adversarial and all(not np.array_equal(local[n].logits, local.clean.logits) for n in adversarial)


def test_evaluate_on_the_process_backend_matches_local(weights_file, digits, tmp_path):
    _, test = digits
    cfg = EvaluateConfig(corruptions=["gaussian_noise"], severities=[2], n_bootstrap=200)
    runs = {}
    for backend in ("local", "processes"):
        runs[backend] = run_evaluation("assay.demo:make_digits_cnn", test, checks=["performance", "corruption"],
                                       config=cfg, cache_dir=False, backend=backend,
                                       model_options={"weights": str(weights_file), "threads": 1})
    local, remote = runs["local"].evidence, runs["processes"].evidence
    assert remote.config["backend"] == "processes" and local.config["backend"] == "local"
    for section in ("performance", "corruption"):
        a = {k: m.value for k, m in local.sections[section].metrics.items()}
        b = {k: m.value for k, m in remote.sections[section].metrics.items()}
        assert a.keys() == b.keys() and a
        for name in a:
            assert b[name] == pytest.approx(a[name], abs=1e-9), (section, name)


def test_a_unit_of_work_runs_from_its_description_alone(model, digits):
    """run_unit (what a worker runs) equals run_shard on the live objects, and the unit survives JSON."""
    _, test = digits
    view = CorruptionView(test, "gaussian_noise", 5, seed=7)
    shard = next(iter(shards_of(view, test, 50)))
    described = ViewSpec.from_json(view.spec.to_json())
    assert described == view.spec and described.state == view.spec.state
    unit = WorkUnit(model.spec(), described, shard)
    a, b = run_shard(model, view, shard), run_unit(unit)
    assert (a.start, a.stop) == (b.start, b.stop) == (0, 50)
    np.testing.assert_allclose(b.logits, a.logits, rtol=1e-6, atol=1e-6)
    assert a.examples.keys() == b.examples.keys() == {0, 1, 2}


def test_shards_carry_their_rows_and_examples(digits):
    _, test = digits
    view = CorruptionView(test, "contrast", 1)
    shards = list(shards_of(view, test, 100))
    assert [(s.start, s.stop) for s in shards] == [(i, min(i + 100, len(test))) for i in range(0, len(test), 100)]
    assert np.shares_memory(shards[1].x, test.x)  # slices, not copies
    assert shards[0].keep.tolist() == [0, 1, 2] and all(s.keep.size == 0 for s in shards[1:])
    np.testing.assert_array_equal(shards[2].index, np.arange(200, 300))


def test_in_memory_and_untrained_models_are_refused_by_the_pool(blobs, digits):
    _, in_memory = blobs  # a Model built in memory: no spec to reload it from
    pool = ProcessPoolBackend(workers=1)
    with pytest.raises(ModelError, match="built in memory") as info:
        list(pool.run(in_memory, CleanView(), []))
    assert info.value.where == "backend"
    _, test = digits
    untrained = load_model("assay.demo:make_digits_cnn", untrained=True, sample=test.x[:2], num_classes=10)
    with pytest.raises(ModelError, match="random weights"):
        list(pool.run(untrained, CleanView(), []))
    assert pool._pool is None  # refused before any worker started


class UnregisteredView(View):
    spec = ViewSpec.make("not-registered")


def test_unregistered_view_kinds_are_an_option_error_in_the_driver(model):
    pool = ProcessPoolBackend(workers=1)
    with pytest.raises(OptionError, match="not registered"):
        list(pool.run(model, UnregisteredView(), [Shard(0, 1, np.zeros((1, 1, 8, 8), np.float32))]))
    assert pool._pool is None

    class Local(View):
        pass

    with pytest.raises(OptionError, match="inside a function"):
        register_view_kind("local-kind", Local)


def test_unknown_backend_names_the_choices():
    with pytest.raises(OptionError, match="unknown backend") as info:
        get_backend("ray-cluster")
    assert info.value.where == "backend" and "processes" in info.value.fix
    assert isinstance(get_backend("processes"), ProcessPoolBackend)
    with pytest.raises(OptionError):
        ProcessPoolBackend(workers=0)
