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


# --------------------------------------------------------------------------------------------------
# Preallocated outputs, feature summaries
# --------------------------------------------------------------------------------------------------


def test_features_not_kept_still_summarized(blobs):
    """keep_features=False drops the (N, D) array but keeps its mean/std (numpy's, ddof=0) for references."""
    ds, model = blobs
    full = run_views(model, ds, batch_size=64, cache_dir=None, progress=False)
    lean = run_views(model, ds, batch_size=64, cache_dir=None, progress=False, keep_features=False)
    assert lean.clean.features is None
    np.testing.assert_array_equal(lean.clean.logits, full.clean.logits)
    x = ds.x.astype(np.float64)
    np.testing.assert_allclose(lean.clean.feature_mean, x.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(lean.clean.feature_std, x.std(axis=0), rtol=1e-6)


def test_feature_summary_merges_batches_exactly():
    from assay.engine.run import _FeatureSummary, feature_sample_rows

    rng = np.random.default_rng(3)
    x = rng.normal(5.0, 2.0, size=(3000, 7))
    summary = _FeatureSummary(len(x))
    start = 0
    for part in np.array_split(x, [1, 2, 300, 301, 999, 2500]):
        summary.add(part, start)
        start += len(part)
    mean, std = summary.result()
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(std, x.std(axis=0), rtol=1e-6)
    rows = feature_sample_rows(len(x))  # the sample holds exactly the chosen rows, in order
    assert len(rows) == 1000 and len(set(rows)) == 1000
    np.testing.assert_array_equal(summary.sample, x[rows].astype(np.float32))


def test_model_returning_wrong_row_count_is_a_model_error():
    from assay.errors import ModelError

    ds, model = make_blobs_dataset(n=100)
    model._forward = lambda x, f: (np.zeros((len(x) - 1, 3)), None)
    with pytest.raises(ModelError, match="rows of outputs for a batch of"):
        run_views(model, ds, batch_size=32, cache_dir=None, progress=False)


def test_transform_gets_the_inputs_and_their_positions(blobs):
    """Views see their batch (a slice of the data, not a copy they may keep changing) and its row numbers."""
    ds, model = blobs
    seen = []

    class Shifted(View):
        spec = ViewSpec.make("shifted")

        def transform(self, x, index):
            np.testing.assert_array_equal(x, ds.x[index])
            seen.append(index.copy())
            return x + 1.0

    before = ds.x.copy()
    out = run_views(model, ds, [Shifted()], batch_size=150, cache_dir=None, progress=False)
    np.testing.assert_array_equal(np.concatenate(seen), np.arange(len(ds)))
    np.testing.assert_array_equal(ds.x, before)
    np.testing.assert_allclose(out["shifted"].logits, (ds.x + 1.0) @ model.weight + model.bias, rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# Cache entries are checked, not trusted
# --------------------------------------------------------------------------------------------------


def _no_cache(ds, model):
    return run_views(model, ds, cache_dir=None, progress=False).clean


def _only_entry(directory):
    (entry,) = list(directory.rglob("*.npz"))
    return entry


def _assert_equal_outputs(got, expected):
    np.testing.assert_array_equal(got.logits, expected.logits)
    np.testing.assert_array_equal(got.features, expected.features)


def _assert_replaced(ds, model, directory):
    """The entry was rewritten: the next run is a hit with zero forward passes and the right outputs."""
    calls = model.calls
    again = run_views(model, ds, cache_dir=directory, progress=False)
    assert again.cache_hits == 1 and model.calls == calls
    _assert_equal_outputs(again.clean, _no_cache(ds, model))
    assert not list(directory.rglob("*.tmp"))


def _rewrite_entry(entry, change):
    """Rewrite an entry as a valid .npz, its arrays passed through ``change`` and its record kept."""
    with np.load(entry) as z:
        arrays = {name: z[name] for name in z.files}
    change(arrays)
    with open(entry, "wb") as fh:
        np.savez(fh, **arrays)


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "permuted rows", "edited value"])
def test_damaged_entry_is_a_miss_and_is_replaced(blobs, tmp_path, damage):
    ds, model = blobs
    run_views(model, ds, cache_dir=tmp_path, progress=False)
    entry = _only_entry(tmp_path)
    data = entry.read_bytes()
    if damage == "truncated":
        entry.write_bytes(data[: len(data) // 2])
    elif damage == "flipped byte":
        entry.write_bytes(data[:200] + bytes([data[200] ^ 0x01]) + data[201:])
    elif damage == "permuted rows":
        order = np.random.default_rng(0).permutation(len(ds))
        _rewrite_entry(entry, lambda a: a.update(logits=a["logits"][order], features=a["features"][order]))
    else:
        _rewrite_entry(entry, lambda a: a["logits"].__setitem__((0, 0), a["logits"][0, 0] + 1))
    calls = model.calls
    out = run_views(model, ds, cache_dir=tmp_path, progress=False)
    assert out.cache_hits == 0 and model.calls > calls, "a damaged entry must be recomputed"
    _assert_equal_outputs(out.clean, _no_cache(ds, model))
    assert any("recomputed and replaced" in note for note in out.notes)
    _assert_replaced(ds, model, tmp_path)


def test_entry_copied_from_another_key_is_a_miss(blobs, tmp_path):
    """Another data set's entry, copied over this one's file name, is not served."""
    ds, model = blobs
    other, _ = make_blobs_dataset(seed=1)
    run_views(model, ds, cache_dir=tmp_path, progress=False)
    mine = _only_entry(tmp_path)
    other_dir = tmp_path / "other"
    run_views(model, other, cache_dir=other_dir, progress=False)
    mine.write_bytes(_only_entry(other_dir).read_bytes())
    calls = model.calls
    out = run_views(model, ds, cache_dir=tmp_path, progress=False)
    assert out.cache_hits == 0 and model.calls > calls
    _assert_equal_outputs(out.clean, _no_cache(ds, model))
    assert any("another model, data or view" in note for note in out.notes)
    calls = model.calls
    assert run_views(model, ds, cache_dir=tmp_path, progress=False).cache_hits == 1 and model.calls == calls


def test_entry_for_another_row_count_is_a_miss(blobs, tmp_path):
    """Even with a matching record and checksum, logits of the wrong length are never served."""
    ds, model = blobs
    cache = OutputCache(tmp_path)
    key = cache_key("k")
    cache.put(key, ViewOutput(logits=np.zeros((5, 3), np.float32), features=None))
    assert cache.get(key) is not None
    assert cache.get(key, rows=6) is None


def _make_unwritable(directory, monkeypatch):
    """A read-only directory. Root ignores permission bits, so there the refusal the OS would give a
    normal user is simulated at the one call that creates files."""
    import errno

    import assay.engine.cache as cache_module

    directory.mkdir(exist_ok=True)
    directory.chmod(0o555)
    probe = directory / "probe"
    try:
        probe.touch()
    except PermissionError:
        return
    probe.unlink()

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(directory))

    monkeypatch.setattr(cache_module.tempfile, "mkstemp", refuse)


def test_read_only_cache_dir_runs_without_cache_and_warns_once(blobs, tmp_path, monkeypatch):
    import warnings

    from assay.engine.cache import CacheWarning

    ds, model = blobs
    expected = _no_cache(ds, model)
    directory = tmp_path / "ro"
    _make_unwritable(directory, monkeypatch)

    class Scaled(View):
        spec = ViewSpec.make("scaled", factor=2)

        def transform(self, x, index):
            return x * 2

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = run_views(model, ds, [CleanView(), Scaled()], cache_dir=directory, progress=False)
    cache_warnings = [w for w in caught if issubclass(w.category, CacheWarning)]
    assert len(cache_warnings) == 1, [str(w.message) for w in caught]
    assert "cannot be written" in str(cache_warnings[0].message)
    _assert_equal_outputs(out.clean, expected)
    assert len(out.notes) == 1 and "without caching" in out.notes[0]
    assert not list(directory.rglob("*.npz")) and not list(directory.rglob("*.tmp"))
    directory.chmod(0o755)


def test_full_disk_runs_without_cache(blobs, tmp_path, monkeypatch):
    import errno

    import assay.engine.cache as cache_module
    from assay.engine.cache import CacheWarning

    ds, model = blobs

    def no_space(fh, **arrays):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module.np, "savez", no_space)
    with pytest.warns(CacheWarning, match="No space left on device"):
        out = run_views(model, ds, cache_dir=tmp_path, progress=False)
    monkeypatch.undo()
    _assert_equal_outputs(out.clean, _no_cache(ds, model))
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("*.npz"))


def test_read_only_cache_still_serves_its_entries(blobs, tmp_path, monkeypatch):
    ds, model = blobs
    run_views(model, ds, cache_dir=tmp_path, progress=False)
    _make_unwritable(tmp_path, monkeypatch)
    calls = model.calls
    out = run_views(model, ds, cache_dir=tmp_path, progress=False)
    assert out.cache_hits == 1 and model.calls == calls and not out.notes
    _assert_equal_outputs(out.clean, _no_cache(ds, model))
    tmp_path.chmod(0o755)


@pytest.mark.parametrize("below", [False, True])
def test_cache_dir_that_is_a_file_is_an_option_error_before_inference(blobs, tmp_path, below):
    from assay.errors import OptionError

    ds, model = blobs
    file = tmp_path / "cache.txt"
    file.write_text("not a directory")
    with pytest.raises(OptionError, match="is not a directory") as info:
        run_views(model, ds, cache_dir=file / "sub" if below else file, progress=False)
    assert model.calls == 0, "no inference before the option is refused"
    assert "--no-cache" in str(info.value) and file.read_text() == "not a directory"


# --------------------------------------------------------------------------------------------------
# End to end through the CLI
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def blobs_files(tmp_path):
    """The blobs data as .npz and its nearest-centre classifier as a one-Gemm ONNX file."""
    import onnx.helper as oh
    from onnx import TensorProto, numpy_helper

    ds, model = make_blobs_dataset(n=600)
    graph = oh.make_graph(
        [oh.make_node("Gemm", ["x", "W", "b"], ["logits"])], "blobs",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [oh.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 3])],
        [numpy_helper.from_array(model.weight, "W"), numpy_helper.from_array(model.bias, "b")],
    )
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    proto.ir_version = 8
    model_path, data_path = tmp_path / "blobs.onnx", tmp_path / "blobs.npz"
    model_path.write_bytes(proto.SerializeToString())
    np.savez(data_path, x=ds.x, y=ds.y)
    accuracy = float((np.argmax(ds.x @ model.weight + model.bias, axis=1) == ds.y).mean())
    return model_path, data_path, accuracy


def _cli_accuracy(args, out, capsys):
    import json

    from assay.cli import main

    code = main(["evaluate", *args, "--out", str(out), "--quiet", "--n-bootstrap", "100"])
    err = capsys.readouterr().err
    assert code == 0, err
    return json.loads((out / "evidence.json").read_text())["sections"]["performance"]["metrics"]["accuracy"]["value"]


def test_cli_truncated_cache_entry_recovers(blobs_files, tmp_path, capsys):
    model_path, data_path, accuracy = blobs_files
    cache = tmp_path / "cache"
    args = [str(model_path), "--data", str(data_path), "--cache-dir", str(cache)]
    assert _cli_accuracy(args, tmp_path / "first", capsys) == pytest.approx(accuracy)
    for entry in cache.rglob("*.npz"):
        entry.write_bytes(entry.read_bytes()[:100])
    assert _cli_accuracy(args, tmp_path / "second", capsys) == pytest.approx(accuracy)
    assert _cli_accuracy(args, tmp_path / "third", capsys) == pytest.approx(accuracy)


def test_cli_cache_dir_that_is_a_file(blobs_files, tmp_path, capsys):
    from assay.cli import main

    model_path, data_path, _ = blobs_files
    file = tmp_path / "cache-file"
    file.write_text("x")
    out = tmp_path / "out"
    code = main(["evaluate", str(model_path), "--data", str(data_path), "--cache-dir", str(file), "--out", str(out),
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("Error:") and "Traceback" not in err
    flat = " ".join(err.split())
    assert "is not a directory" in flat and "Fix:" in flat and "--no-cache" in flat
    assert not out.exists()


def test_a_revised_view_definition_is_a_cache_miss_and_old_keys_stay(blobs, tmp_path):
    """A view whose definition changed (glass_blur now copies pixels as the published code does) must not
    reuse outputs cached under the old one; views at their first revision keep the keys they always had."""
    ds, model = blobs

    class Scaled(View):
        spec = ViewSpec.make("scaled", factor=2)

        def transform(self, x, index):
            return x * 2

    first = Scaled()
    run_views(model, ds, [first], cache_dir=tmp_path, progress=False)
    calls = model.calls
    assert run_views(model, ds, [Scaled()], cache_dir=tmp_path, progress=False).cache_hits == 1
    revised = Scaled()
    revised.revision = 2
    out = run_views(model, ds, [revised], cache_dir=tmp_path, progress=False)
    assert out.cache_hits == 0 and model.calls > calls
    assert run_views(model, ds, [revised], cache_dir=tmp_path, progress=False).cache_hits == 1


def test_glass_blur_carries_its_revision_into_the_cache_key():
    from assay.corruptions.image import REVISIONS
    from assay.engine.robust_views import CorruptionView
    from assay.engine.run import _view_record
    from assay.engine.views import View as BaseView

    images, model = make_blobs_dataset(n=8, seed=0)
    images.modality = "image"
    glass, noise = CorruptionView(images, "glass_blur", 1), CorruptionView(images, "gaussian_noise", 1)
    assert REVISIONS["glass_blur"] >= 2 and glass.revision == REVISIONS["glass_blur"] and noise.revision == 1
    assert _view_record(model, images, glass)["view_revision"] == str(REVISIONS["glass_blur"])
    assert "view_revision" not in _view_record(model, images, noise)
    rebuilt = BaseView.from_spec(glass.spec, None)  # a worker rebuilds the view from its spec
    assert rebuilt.revision == glass.revision
