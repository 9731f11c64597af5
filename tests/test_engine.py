"""Engine: batched inference, caching (a second identical run does zero forward passes), views."""

from __future__ import annotations

import numpy as np
import pytest

from assay.engine import CleanView, OutputCache, View, ViewOutput, ViewSpec, run_views
from assay.engine.cache import cache_key
from assay.errors import UserError
from conftest import LinearModel, make_blobs_dataset


def test_outputs_match_direct_forward_and_batches_are_counted(blobs):
    ds, model = blobs
    out = run_views(model, ds, batch_size=64, cache_dir=None, progress=False)
    expected = ds.x @ model.weight + model.bias
    np.testing.assert_allclose(out.clean.logits, expected, rtol=1e-6)
    np.testing.assert_array_equal(out.clean.features, ds.x)
    assert out.forward_batches == model.calls == -(-len(ds) // 64)
    assert out.cache_hits == 0


def test_second_identical_run_does_zero_forward_passes(blobs, tmp_path):
    ds, model = blobs
    first = run_views(model, ds, cache_dir=tmp_path, progress=False)
    calls = model.calls
    assert calls > 0
    second = run_views(model, ds, cache_dir=tmp_path, progress=False)
    assert model.calls == calls, "the cached run must not call the model"
    assert second.forward_batches == 0 and second.cache_hits == 1
    np.testing.assert_array_equal(first.clean.logits, second.clean.logits)
    np.testing.assert_array_equal(first.clean.features, second.clean.features)


def test_cache_key_changes_with_data_model_and_view(blobs, tmp_path):
    ds, model = blobs
    run_views(model, ds, cache_dir=tmp_path, progress=False)
    other_ds, other_model = make_blobs_dataset(seed=1)
    calls = model.calls
    run_views(model, other_ds, cache_dir=tmp_path, progress=False)  # new data -> miss
    assert model.calls > calls
    run_views(other_model, ds, cache_dir=tmp_path, progress=False)  # new model -> miss
    assert other_model.calls > 0

    class Scaled(View):
        spec = ViewSpec.make("scaled", factor=2)

        def transform(self, x, index):
            return x * 2

    calls = model.calls
    out = run_views(model, ds, [CleanView(), Scaled()], cache_dir=tmp_path, progress=False)
    assert out.cache_hits == 1 and model.calls > calls  # clean from cache, scaled computed
    np.testing.assert_allclose(out["scaled:factor=2"].logits, (2 * ds.x) @ model.weight + model.bias, rtol=1e-5)


def test_corrupt_cache_entry_is_a_miss(blobs, tmp_path):
    ds, model = blobs
    run_views(model, ds, cache_dir=tmp_path, progress=False)
    for f in tmp_path.rglob("*.npz"):
        f.write_bytes(b"garbage")
    calls = model.calls
    out = run_views(model, ds, cache_dir=tmp_path, progress=False)
    assert model.calls > calls and out.clean.logits.shape == (len(ds), 3)


def test_cache_roundtrip_without_features(tmp_path):
    cache = OutputCache(tmp_path)
    key = cache_key("a", "b")
    assert cache.get(key) is None
    cache.put(key, ViewOutput(logits=np.ones((2, 3), np.float32), features=None))
    got = cache.get(key)
    assert got.features is None and got.logits.shape == (2, 3)
    assert not list(tmp_path.rglob("*.tmp"))


def test_probability_outputs_refused_then_accepted():
    ds, _ = make_blobs_dataset(n=50)
    w = np.zeros((4, 3), np.float32)
    probs_model = LinearModel(w, np.log(np.array([0.2, 0.3, 0.5])), (4,))
    # Make the "model" return probabilities: softmax of a constant row.
    probs_model._forward = lambda x, f: (np.tile([0.2, 0.3, 0.5], (len(x), 1)), None)
    with pytest.raises(UserError, match="look like probabilities"):
        run_views(probs_model, ds, cache_dir=None, progress=False)
    accepted = LinearModel(w, np.zeros(3), (4,), outputs="probabilities")
    accepted._forward = lambda x, f: (np.tile([0.2, 0.3, 0.5], (len(x), 1)), None)
    out = run_views(accepted, ds, cache_dir=None, progress=False)
    np.testing.assert_allclose(out.clean.logits[0], np.log([0.2, 0.3, 0.5]), rtol=1e-6)


def test_wrong_output_width_is_a_user_error():
    ds, _ = make_blobs_dataset(n=10)
    model = LinearModel(np.zeros((4, 3)), np.zeros(3), (4,))
    model._forward = lambda x, f: (np.zeros((len(x), 5)), None)
    with pytest.raises(UserError, match=r"expected \(N, 3\)"):
        run_views(model, ds, cache_dir=None, progress=False)
