"""assay.reference: bins and histograms against numpy, chunk statistics against scipy's two-sample
statistics on the documented random chunks, save/load round trips, older reference.npz files, and crafted
files refused as DataError."""

from __future__ import annotations

import copy
import io
import json
import math
import pickle
import subprocess
import sys
import zipfile
from types import SimpleNamespace

import numpy as np
import numpy.lib.format as npy_format
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp, wasserstein_distance

from assay.checks.label_free import ATCEstimator
from assay.checks.ood_scores import msp, neg_entropy
from assay.errors import DataError, OptionError, OutputError
from assay.reference import (
    SCHEMA_VERSION,
    STATISTICS,
    Reference,
    ReferenceSettings,
    _chunk_statistics,
    bin_counts,
    binned_ks,
    chi2_homogeneity,
    js_distance,
    ks_wasserstein,
    quantile_edges,
)
from assay.stats.bootstrap import spawn_seed


def _data(n: int = 600, num_classes: int = 4, dims: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    logits = rng.normal(size=(n, num_classes)) * 1.5
    logits[np.arange(n), labels] += 2.0
    inputs = rng.normal(size=(n, dims)).astype(np.float32)
    inputs[:, 0] = rng.integers(0, 3, n)  # a discrete column
    inputs[:, 1] = 7.0  # a constant column
    features = rng.normal(size=(n, 8)).astype(np.float32)
    return logits, labels, inputs, features


def _names(c: int) -> list[str]:
    return [f"class{i}" for i in range(c)]


def _assert_same(a: Reference, b: Reference) -> None:
    arrays_a, arrays_b = a.to_arrays(), b.to_arrays()
    assert set(arrays_a) == set(arrays_b)
    for key in arrays_a:
        assert arrays_a[key].dtype == arrays_b[key].dtype, key
        np.testing.assert_array_equal(arrays_a[key], arrays_b[key], err_msg=key)
    assert a.header() == b.header()


# ------------------------------------------------------------------------------------------ bins


def test_quantile_edges_hand_computed() -> None:
    # 10 distinct values, 5 bins: cuts after the 2nd, 4th, 6th, 8th values, halfway to the next.
    x = np.arange(1.0, 11.0)
    edges = quantile_edges(x, 5)
    np.testing.assert_array_equal(edges, [1, 2.5, 4.5, 6.5, 8.5, 10])
    np.testing.assert_array_equal(bin_counts(x, edges), [2, 2, 2, 2, 2])
    # A discrete feature (3 values <= 10 bins): one bin per value.
    x = np.array([0, 0, 0, 1, 1, 2.0])
    edges = quantile_edges(x, 10)
    np.testing.assert_array_equal(edges, [0, 0.5, 1.5, 2])
    np.testing.assert_array_equal(bin_counts(x, edges), [3, 2, 1])
    # A point mass at 0 holding 90 of 110 values and 20 distinct values above it: the first eight
    # cuts fall on the mass and merge; the ninth (ceil(9 * 110 / 10) - 1 = position 98) after value 9.
    x = np.concatenate([np.zeros(90), np.arange(1.0, 21.0)])
    edges = quantile_edges(x, 10)
    np.testing.assert_array_equal(edges, [0, 0.5, 9.5, 20])
    np.testing.assert_array_equal(bin_counts(x, edges), [90, 9, 11])
    np.testing.assert_array_equal(np.histogram(x, edges)[0], [90, 9, 11])
    # A constant feature: one zero-width bin holding everything.
    edges = quantile_edges(np.full(4, 3.0), 10)
    np.testing.assert_array_equal(edges, [3, 3])
    np.testing.assert_array_equal(bin_counts(np.full(4, 3.0), edges), [4])


def test_quantile_edges_against_numpy_quantile() -> None:
    rng = np.random.default_rng(3)
    for n, bins in [(1000, 10), (257, 20), (50, 7)]:
        x = np.round(rng.normal(size=n), 2)  # ties, but more distinct values than bins
        edges = quantile_edges(x, bins)
        distinct = np.unique(x)
        # The cut values are numpy's inverted-CDF quantiles at k / bins (minus the maximum), deduplicated.
        cuts = np.unique(np.quantile(x, np.arange(1, bins) / bins, method="inverted_cdf"))
        cuts = cuts[cuts < x.max()]
        following = distinct[np.searchsorted(distinct, cuts, side="right")]
        np.testing.assert_array_equal(edges, np.concatenate([[x.min()], (cuts + following) / 2, [x.max()]]))
        np.testing.assert_array_equal(bin_counts(x, edges), np.histogram(x, edges)[0])


def test_bin_counts_match_numpy_histogram_and_keep_outliers() -> None:
    rng = np.random.default_rng(4)
    edges = np.linspace(0, 1, 11)
    x = rng.random(500)
    np.testing.assert_array_equal(bin_counts(x, edges), np.histogram(x, edges)[0])
    np.testing.assert_array_equal(bin_counts([0.0, 1.0, 0.1], edges), np.histogram([0.0, 1.0, 0.1], edges)[0])
    # Live values outside the reference range are counted in the outer bins (numpy drops them).
    np.testing.assert_array_equal(bin_counts([-5.0, 7.0, 0.55], edges), [1, 0, 0, 0, 0, 1, 0, 0, 0, 1])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=1, max_size=300), st.integers(1, 30))
def test_quantile_edges_properties(values: list[float], bins: int) -> None:
    x = np.asarray(values, dtype=np.float32).astype(np.float64)
    edges = quantile_edges(x, bins)
    counts = bin_counts(x, edges)
    assert (np.diff(edges) >= 0).all()
    assert counts.sum() == x.size
    assert 1 <= counts.size <= bins
    assert edges[0] == x.min() and edges[-1] == x.max()
    np.testing.assert_array_equal(counts, np.histogram(x, edges)[0] if np.ptp(x) > 0 else [x.size])
    distinct = np.unique(x).size
    if distinct <= bins:  # one bin per distinct value
        assert counts.size == distinct and (counts > 0).all()
    elif distinct == x.size:  # all distinct: equal mass up to one
        assert counts.size == bins and counts.max() - counts.min() <= 1


# ------------------------------------------------------------------------------------------ distances


def test_window_statistics_against_scipy() -> None:
    rng = np.random.default_rng(5)
    p, q = rng.integers(0, 20, size=(6, 9)), rng.integers(0, 20, size=(6, 9))
    p[0, :3] = 0  # empty categories on one side
    q[1, :3] = 0
    p[2, 4] = q[2, 4] = 0  # a category empty on both
    for a, b, js, chi2 in zip(p, q, js_distance(p, q), chi2_homogeneity(p, q), strict=True):
        assert js == pytest.approx(jensenshannon(a, b, base=2), abs=1e-12)
        keep = (a + b) > 0
        assert chi2 == pytest.approx(chi2_contingency(np.stack([a, b])[:, keep], correction=False).statistic, rel=1e-12)
    a, b = rng.normal(size=300), rng.normal(0.3, 1.2, size=200)
    ks, w1 = ks_wasserstein(a, b)
    assert ks == pytest.approx(ks_2samp(a, b).statistic, abs=1e-12)
    assert w1 == pytest.approx(wasserstein_distance(a, b), rel=1e-10)
    # Binned KS is the exact KS when every distinct value has its own bin.
    x, y = rng.integers(0, 5, 400).astype(float), rng.integers(0, 6, 300).astype(float)
    edges = quantile_edges(np.concatenate([x, y]), 10)
    assert binned_ks(bin_counts(x, edges), bin_counts(y, edges)) == pytest.approx(ks_2samp(x, y).statistic)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-100, 100, allow_nan=False), min_size=1, max_size=60), st.integers(1, 5))
def test_a_sample_against_itself_or_its_copies_is_at_distance_zero(values: list[float], copies: int) -> None:
    a = np.asarray(values)
    assert ks_wasserstein(a, np.tile(a, copies)) == (0.0, 0.0)
    counts = bin_counts(a, quantile_edges(a, 10))
    assert float(js_distance(counts, copies * counts)) == pytest.approx(0.0, abs=1e-7)
    assert float(binned_ks(counts, copies * counts)) == pytest.approx(0.0, abs=1e-12)
    assert float(chi2_homogeneity(counts, copies * counts)) == pytest.approx(0.0, abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 40), st.integers(2, 6), st.integers(2, 5))
def test_chunks_of_a_reference_made_of_copies_are_at_distance_zero(seed: int, m: int, copies: int, c: int) -> None:
    """Chunk statistics of a reference against itself: when every chunk holds the same rows as the rest
    (the reference is K copies of one block, one chunk per copy), every distance is zero."""
    rng = np.random.default_rng(seed)
    block = rng.normal(size=(m, c)) * 3
    logits = np.tile(block, (copies, 1))
    labels = rng.integers(0, c, m)
    from assay.reference import confidence_and_entropy

    confidence, entropy = (v.astype(np.float32) for v in confidence_and_entropy(logits))
    prediction = logits.argmax(1)
    inputs = np.tile(rng.integers(0, 4, size=(m, 3)).astype(np.float64), (copies, 1))
    bins = np.stack([np.searchsorted(quantile_edges(inputs[:, d], 10)[1:-1], inputs[:, d], side="right")
                     for d in range(3)], axis=1)
    chunks = [np.arange(k * m, (k + 1) * m) for k in range(copies)]
    stats = _chunk_statistics(chunks, confidence=confidence, entropy=entropy, prediction=prediction,
                              num_classes=c, correct=prediction == np.tile(labels, copies),
                              thresholds=(0.5, -1.0), feature_bins=bins, width=10)
    for name in ("prediction_js", "prediction_chi2", "confidence_ks", "confidence_wasserstein", "entropy_ks",
                 "entropy_wasserstein", "feature_js", "feature_ks"):
        np.testing.assert_allclose(stats[name], 0.0, atol=1e-6, err_msg=name)
    for name in ("mean_confidence", "accuracy", "atc_mc", "atc_ne"):
        assert np.ptp(stats[name]) == pytest.approx(0.0, abs=1e-12), name


# ------------------------------------------------------------------------------------------ from_arrays


def test_outputs_histograms_and_thresholds_against_independent_code() -> None:
    logits, labels, _, _ = _data()
    ref = Reference.from_arrays(logits, labels, class_names=_names(4))
    # Same expressions as the OOD scores (bit for bit) and as the label-free check's ATC thresholds.
    np.testing.assert_array_equal(ref.confidence, msp(logits).astype(np.float32))
    np.testing.assert_array_equal(ref.entropy, (-neg_entropy(logits)).astype(np.float32))
    assert ref.atc_threshold_maxconf == ATCEstimator("maxconf").fit(logits, labels).threshold_
    assert ref.atc_threshold_negentropy == ATCEstimator("negentropy").fit(logits, labels).threshold_
    assert ref.accuracy == pytest.approx(np.mean(logits.argmax(1) == labels))
    np.testing.assert_array_equal(ref.prediction_counts, np.bincount(logits.argmax(1), minlength=4))
    np.testing.assert_array_equal(ref.class_counts, np.bincount(labels, minlength=4))
    np.testing.assert_array_equal(ref.confidence_histogram.counts,
                                  np.histogram(ref.confidence, np.linspace(0, 1, 21))[0])
    entropy_edges = np.linspace(0, math.log(4), 21)
    np.testing.assert_array_equal(ref.entropy_histogram.counts,
                                  np.histogram(np.clip(ref.entropy, 0, math.log(4)), entropy_edges)[0])
    assert ref.confidence_histogram.counts.sum() == ref.entropy_histogram.counts.sum() == len(logits)


def test_chunk_statistics_against_scipy_on_the_documented_chunks() -> None:
    logits, labels, inputs, _ = _data(n=605)
    seed = 11
    ref = Reference.from_arrays(logits, labels, inputs=inputs, class_names=_names(4), seed=seed,
                                settings=ReferenceSettings(n_chunks=5))
    chunks = ref.chunks
    assert (chunks.count, chunks.size) == (5, 121)
    assert set(chunks.values) == set(STATISTICS)
    order = np.random.default_rng(spawn_seed(seed, "reference_chunks")).permutation(605)
    conf, ent = ref.confidence.astype(np.float64), ref.entropy.astype(np.float64)
    prediction = logits.argmax(1)
    for k in range(5):
        rows = order[k * 121 : (k + 1) * 121]
        rest = np.setdiff1d(np.arange(605), rows)
        v = {name: values[k] for name, values in chunks.values.items()}
        assert v["confidence_ks"] == pytest.approx(ks_2samp(conf[rows], conf[rest]).statistic, abs=1e-12)
        assert v["confidence_wasserstein"] == pytest.approx(
            wasserstein_distance(conf[rows], conf[rest]) / max(conf.std(), 1e-3), rel=1e-9)
        assert v["entropy_ks"] == pytest.approx(ks_2samp(ent[rows], ent[rest]).statistic, abs=1e-12)
        assert v["entropy_wasserstein"] == pytest.approx(
            wasserstein_distance(ent[rows], ent[rest]) / max(ent.std(), 1e-3), rel=1e-9)
        chunk_mix, rest_mix = np.bincount(prediction[rows], minlength=4), np.bincount(prediction[rest], minlength=4)
        assert v["prediction_js"] == pytest.approx(jensenshannon(chunk_mix, rest_mix, base=2), abs=1e-12)
        assert v["prediction_chi2"] == pytest.approx(
            chi2_contingency(np.stack([chunk_mix, rest_mix]), correction=False).statistic, rel=1e-10)
        assert v["mean_confidence"] == pytest.approx(conf[rows].mean())
        assert v["accuracy"] == pytest.approx(np.mean(prediction[rows] == labels[rows]))
        assert v["atc_mc"] == pytest.approx(np.mean(conf[rows] > ref.atc_threshold_maxconf))
        assert v["atc_ne"] == pytest.approx(np.mean(-ent[rows] > ref.atc_threshold_negentropy))
        for d in range(inputs.shape[1]):
            edges = ref.features.feature_edges(d)
            a, b = np.histogram(inputs[rows, d], edges)[0], np.histogram(inputs[rest, d], edges)[0]
            if np.ptp(edges) == 0:
                a, b = np.array([len(rows)]), np.array([len(rest)])
            assert v["feature_js"][d] == pytest.approx(jensenshannon(a, b, base=2), abs=1e-7)
            assert v["feature_ks"][d] == pytest.approx(
                np.abs(np.cumsum(a) / a.sum() - np.cumsum(b) / b.sum()).max(), abs=1e-12)
    # The discrete column's bins isolate its values, so its binned KS is scipy's exact KS.
    rows = order[:121]
    rest = np.setdiff1d(np.arange(605), rows)
    assert chunks.values["feature_ks"][0, 0] == pytest.approx(ks_2samp(inputs[rows, 0], inputs[rest, 0]).statistic)
    # Order-statistic thresholds: the ceil(q (K + 1))-th smallest of K = 5 chunk values.
    ordered = np.sort(chunks.values["confidence_ks"])
    assert chunks.threshold("confidence_ks", quantile=0.8) == ordered[4]  # ceil(0.8 * 6) = 5
    assert chunks.threshold("confidence_ks", quantile=0.5) == ordered[2]  # ceil(3) = 3
    with pytest.raises(OptionError, match="needs at least 9 chunks"):
        chunks.threshold("confidence_ks", quantile=0.9)  # ceil(5.4) = 6 > 5
    # Conformal p-values: (1 + #{chunk values >= observed}) / (K + 1).
    assert chunks.p_value("confidence_ks", ordered[3]) == pytest.approx(3 / 6)  # (1 + 2 chunks) / (5 + 1)
    assert chunks.p_value("confidence_ks", ordered[-1] + 1) == pytest.approx(1 / 6)
    assert chunks.p_value("confidence_ks", -1.0) == pytest.approx(1.0)
    observed = chunks.values["feature_js"][2]
    np.testing.assert_allclose(chunks.p_value("feature_js", observed),
                               (1 + (chunks.values["feature_js"] >= observed).sum(0)) / 6)
    with pytest.raises(OptionError):
        chunks.p_value("feature_js", 0.1)  # one value per feature needed
    np.testing.assert_array_equal(chunks.threshold("feature_ks", quantile=0.8),
                                  np.sort(chunks.values["feature_ks"], axis=0)[4])
    np.testing.assert_allclose(chunks.threshold("feature_js", n_sigma=3),
                               chunks.values["feature_js"].mean(0) + 3 * chunks.values["feature_js"].std(0, ddof=1))


def test_chunk_plans() -> None:
    assert ReferenceSettings().chunk_plan(1000) == (10, 100)
    assert ReferenceSettings(chunk_size=300).chunk_plan(1000) == (3, 300)
    assert ReferenceSettings(chunk_size=5).chunk_plan(10**6) == (100, 5)  # at most 100 when derived
    assert ReferenceSettings(chunk_size=5, n_chunks=20).chunk_plan(1000) == (20, 5)
    assert ReferenceSettings(n_chunks=4).chunk_plan(10) == (4, 2)
    assert ReferenceSettings().chunk_plan(9) == (0, 0)
    assert ReferenceSettings(chunk_size=600).chunk_plan(1000) == (0, 0)
    ref = Reference.from_arrays(np.array([[1.0, 0.0], [0.0, 2.0]]), class_names=["a", "b"])
    assert ref.chunks is None and any("no chunk statistics" in note for note in ref.notes)


def test_monitored_features_by_modality_and_what_is_kept() -> None:
    logits, labels, inputs, features = _data()
    tabular = Reference.from_arrays(logits, labels, features, inputs, class_names=_names(4))
    assert tabular.features.space == "inputs" and tabular.features.n_features == inputs.shape[1]
    np.testing.assert_array_equal(tabular.features.n_bins, [3, 1, 10, 10, 10])
    np.testing.assert_array_equal(tabular.features.discrete, [True, True, False, False, False])
    np.testing.assert_array_equal(tabular.features.levels[0, :3], [0, 1, 2])
    np.testing.assert_array_equal(tabular.features.histogram(inputs), tabular.features.counts)
    # The embedding moments are still the embeddings' (older readers' feature_mean/feature_std).
    np.testing.assert_allclose(tabular.embedding_mean, features.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(tabular.features.std, inputs.std(0), rtol=1e-6)
    assert tabular.features.sample is None  # raw input rows only when asked for
    asked = Reference.from_arrays(logits, labels, inputs=inputs, class_names=_names(4),
                                  settings=ReferenceSettings(sample_inputs=True, sample_size=50))
    sample_rows = np.random.default_rng(spawn_seed(0, "reference_sample")).choice(600, 50, replace=False)
    np.testing.assert_array_equal(asked.features.sample, inputs[np.sort(sample_rows)])

    image = Reference.from_arrays(logits, labels, features, class_names=_names(4),
                                  settings=ReferenceSettings(feature_bins=20, sample_size=100))
    assert image.features.space == "embeddings" and image.features.counts.shape == (8, 20)
    assert (image.features.counts.sum(1) == 600).all() and image.features.sample.shape == (100, 8)
    assert "feature_js" in image.chunks.values

    # The engine kept only mean and std: stated, no histograms.
    moments = Reference.from_arrays(logits, labels, class_names=_names(4), feature_mean=features.mean(0),
                                    feature_std=features.std(0))
    assert moments.features is None and moments.embedding_mean is not None
    assert any("features=None" in note for note in moments.notes)
    # ... or a sample too: histograms from the sample, no per-feature chunk statistics.
    sampled = Reference.from_arrays(logits, labels, class_names=_names(4), feature_mean=features.mean(0),
                                    feature_std=features.std(0), feature_sample=features[:200])
    assert sampled.features.rows == 200 and "feature_js" not in sampled.chunks.values
    assert any("sample of 200 rows" in note for note in sampled.notes)

    unlabeled = Reference.from_arrays(logits, class_names=_names(4))
    assert unlabeled.class_counts is None and unlabeled.atc_threshold_maxconf is None
    assert "accuracy" not in unlabeled.chunks.values and any("no labels" in note for note in unlabeled.notes)


def test_bad_arguments_name_the_parameter() -> None:
    logits, labels, inputs, _ = _data(n=50)
    cases = [
        (lambda: Reference.from_arrays(np.full((3, 2), np.nan), class_names=["a", "b"]), DataError, "logits"),
        (lambda: Reference.from_arrays(logits, labels + 4, class_names=_names(4)), DataError, "labels"),
        (lambda: Reference.from_arrays(logits, class_names=["a"]), DataError, "class_names"),
        (lambda: Reference.from_arrays(logits, inputs=inputs[:10], class_names=_names(4)), DataError, "inputs"),
        (lambda: ReferenceSettings(feature_bins=1), OptionError, "feature_bins"),
        (lambda: ReferenceSettings(chunk_size=0), OptionError, "chunk_size"),
        (lambda: ReferenceSettings(sample_inputs=1), OptionError, "sample_inputs"),
        (lambda: quantile_edges([1.0], 0), OptionError, "n_bins"),
        (lambda: Reference.from_arrays(logits, class_names=_names(4), seed=-1), OptionError, "seed"),
    ]
    for call, error, where in cases:
        with pytest.raises(error) as info:
            call()
        assert info.value.where == where


def test_from_run_duck_typed() -> None:
    logits, labels, inputs, features = _data()
    clean = SimpleNamespace(logits=logits, features=None, feature_mean=features.mean(0), feature_std=features.std(0))
    dataset = SimpleNamespace(y=labels, x=inputs, modality="tabular", class_names=_names(4), fingerprint="f" * 64)
    evidence = SimpleNamespace(model=SimpleNamespace(sha256="a" * 64), seed=5, created_at="2024-01-01T00:00:00+00:00")
    ref = Reference.from_run(SimpleNamespace(outputs=SimpleNamespace(clean=clean), dataset=dataset, evidence=evidence))
    assert (ref.model_sha256, ref.data_fingerprint, ref.seed, ref.modality) == ("a" * 64, "f" * 64, 5, "tabular")
    assert ref.created_at == "2024-01-01T00:00:00+00:00" and ref.class_names == _names(4)
    assert ref.features.space == "inputs"
    dataset.modality = "image"
    image = Reference.from_run(SimpleNamespace(outputs=SimpleNamespace(clean=clean), dataset=dataset,
                                               evidence=evidence))
    assert image.features is None and image.embedding_std is not None


# ------------------------------------------------------------------------------------------ save / load


def test_round_trip(tmp_path) -> None:
    logits, labels, inputs, features = _data()
    for ref in (Reference.from_arrays(logits, labels, features, inputs, class_names=_names(4), seed=3,
                                      model_sha256="b" * 64, data_fingerprint="c" * 64, modality="tabular"),
                Reference.from_arrays(logits, class_names=["ünï", "b", "c", "d"]),
                Reference.from_arrays(logits[:5], labels[:5], class_names=_names(4))):
        path = ref.save(tmp_path / "reference.npz")
        loaded = Reference.load(path)
        _assert_same(ref, loaded)
        assert loaded.schema_version == SCHEMA_VERSION and loaded.class_names == ref.class_names
        assert loaded.atc_threshold_maxconf == ref.atc_threshold_maxconf
        assert Reference.load(tmp_path).n == ref.n  # a bundle folder holding reference.npz
        recomputed = loaded.recompute_chunks(n_chunks=ref.settings.n_chunks, chunk_size=ref.settings.chunk_size)
        if ref.chunks is not None:  # the monitor's recomputation from stored values is exact
            for name, values in recomputed.values.items():
                np.testing.assert_array_equal(values, ref.chunks.values[name], err_msg=name)
    with pytest.raises(OutputError):
        ref.save(tmp_path)
    assert not list(tmp_path.glob(".*tmp"))


def _legacy_arrays(logits, labels, features) -> dict[str, np.ndarray]:
    """reference.npz as EvaluationRun.reference() wrote it before schema 1.0 (transcribed)."""
    conf = msp(logits)
    arrays = {"val_confidence": conf.astype(np.float32),
              "prediction_frequency": np.bincount(logits.argmax(1), minlength=logits.shape[1]) / len(logits)}
    if labels is not None:
        arrays["class_frequency"] = np.bincount(labels, minlength=logits.shape[1]) / len(logits)
        arrays["atc_threshold_maxconf"] = np.array(ATCEstimator("maxconf").fit(logits, labels).threshold_)
        arrays["atc_threshold_negentropy"] = np.array(ATCEstimator("negentropy").fit(logits, labels).threshold_)
    if features is not None:
        arrays["feature_mean"], arrays["feature_std"] = features.mean(axis=0), features.std(axis=0)
    return arrays


def test_older_reference_npz_loads(tmp_path) -> None:
    logits, labels, _, features = _data()
    np.savez_compressed(tmp_path / "reference.npz", **_legacy_arrays(logits, labels, features))
    old = Reference.load(tmp_path / "reference.npz")
    current = Reference.from_arrays(logits, labels, features, class_names=_names(4))
    np.testing.assert_array_equal(old.confidence, current.confidence)
    np.testing.assert_array_equal(old.prediction_counts, current.prediction_counts)
    np.testing.assert_array_equal(old.class_counts, current.class_counts)
    assert old.atc_threshold_maxconf == current.atc_threshold_maxconf
    assert old.atc_threshold_negentropy == current.atc_threshold_negentropy
    np.testing.assert_allclose(old.embedding_mean, current.embedding_mean, rtol=1e-5)  # old: float32 mean
    np.testing.assert_array_equal(old.confidence_histogram.counts, current.confidence_histogram.counts)
    for name in ("confidence_ks", "confidence_wasserstein", "mean_confidence"):  # filled in from what it holds
        np.testing.assert_array_equal(old.chunks.values[name], current.chunks.values[name])
    assert old.entropy is None and old.features is None and "prediction_js" not in old.chunks.values
    assert any("before schema 1.0" in note for note in old.notes)
    assert old.class_names == ["0", "1", "2", "3"]
    # Re-saved, it is a schema 1.0 file with the same content.
    _assert_same(old, Reference.load(old.save(tmp_path / "resaved.npz")))
    # An unlabeled old file without features.
    np.savez_compressed(tmp_path / "plain.npz", **_legacy_arrays(logits, None, None))
    plain = Reference.load(tmp_path / "plain.npz")
    assert plain.class_counts is None and plain.embedding_mean is None and plain.atc_threshold_maxconf is None


# ------------------------------------------------------------------------------------------ hostile files


def _npy_bytes(array: np.ndarray | None = None, header: dict | None = None, data: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    if array is not None:
        npy_format.write_array(buffer, array, allow_pickle=True)
    else:
        npy_format.write_array_header_1_0(buffer, header)
        buffer.write(data)
    return buffer.getvalue()


def _rewrite(source, target, replace: dict[str, bytes], drop: tuple[str, ...] = ()) -> None:
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for info in zin.infolist():
            key = info.filename[:-4]
            if key in drop or key in replace:
                continue
            zout.writestr(info.filename, zin.read(info))
        for key, content in replace.items():
            zout.writestr(f"{key}.npy", content)


def _header_bytes(header: object) -> bytes:
    return _npy_bytes(np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))


def test_crafted_files_are_refused(tmp_path) -> None:
    logits, labels, inputs, _ = _data(n=200)
    good = Reference.from_arrays(logits, labels, inputs=inputs, class_names=_names(4)).save(tmp_path / "good.npz")
    header = good_header = Reference.load(good).header()
    huge_claim = {"descr": "|u1", "fortran_order": False, "shape": (10**12,)}
    cases: dict[str, tuple[dict[str, bytes], tuple[str, ...], str]] = {
        "object header": ({"header": _npy_bytes(np.array([{"a": 1}], dtype=object))}, (), "dtype object"),
        "object array": ({"val_confidence": _npy_bytes(np.array([0.5] * 200, dtype=object))}, (), "dtype object"),
        "huge header": ({"header": _npy_bytes(header=huge_claim, data=b"{}")}, (), "header"),
        "other major": ({"header": _header_bytes({**good_header, "schema_version": "2.0"})}, (), "schema version"),
        "no version": ({"header": _header_bytes({k: v for k, v in header.items() if k != "schema_version"})}, (),
                       "schema version"),
        "not json": ({"header": _npy_bytes(np.frombuffer(b"{nope", dtype=np.uint8))}, (), "not valid JSON"),
        "json list": ({"header": _header_bytes([1, 2])}, (), "JSON object"),
        "float header": ({"header": _npy_bytes(np.zeros(3))}, (), "dtype"),
        "n lies": ({"header": _header_bytes({**good_header, "n": 201})}, (), "the header implies"),
        "n too big": ({"header": _header_bytes({**good_header, "n": 10**11})}, (), "of memory"),
        "n huge": ({"header": _header_bytes({**good_header, "n": 10**14})}, (), "n must be"),
        "names": ({"header": _header_bytes({**good_header, "class_names": ["a"]})}, (), "class_names"),
        "settings": ({"header": _header_bytes({**good_header, "settings": {"feature_bins": 0}})}, (), "settings"),
        "unknown statistic": ({"header": _header_bytes(
            {**good_header, "chunks": {**good_header["chunks"], "statistics": ["boom"]}})}, (), "chunks.statistics"),
        "missing array": ({}, ("confidence_counts",), "lacks confidence_counts"),
        "wrong shape": ({"val_confidence": _npy_bytes(np.zeros(199, dtype=np.float32))}, (), "shape"),
        "wrong dtype": ({"prediction_counts": _npy_bytes(np.zeros(4))}, (), "dtype"),
        "nan": ({"val_confidence": _npy_bytes(np.full(200, np.nan, dtype=np.float32))}, (), "NaN"),
        "counts": ({"confidence_counts": _npy_bytes(np.ones(20, dtype=np.int64))}, (), "adds up to"),
        "predictions": ({"val_prediction": _npy_bytes(np.zeros(200, dtype=np.int32))}, (), "disagrees"),
        "confidence range": ({"val_confidence": _npy_bytes(np.full(200, 1.5, dtype=np.float32))}, (), r"\[0, 1\]"),
        "edges": ({"drift_edges": _npy_bytes(np.full((5, 11), 1.0)[:, ::-1] * np.arange(11)[::-1])}, (),
                  "drift_edges"),
        "truncated": ({"val_confidence": _npy_bytes(header={"descr": "<f4", "fortran_order": False, "shape": (200,)},
                                                    data=b"\0" * 10)}, (), "bytes"),
    }
    for name, (replace, drop, message) in cases.items():
        target = tmp_path / f"{name.replace(' ', '_')}.npz"
        _rewrite(good, target, replace, drop)
        with pytest.raises(DataError, match=message) as info:
            Reference.load(target)
        assert "Fix:" in str(info.value), name
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(DataError, match="not a readable reference"):
        Reference.load(tmp_path / "text.npz")
    with pytest.raises(DataError, match="no reference file"):
        Reference.load(tmp_path / "absent.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DataError, match="not a reference"):
        Reference.load(tmp_path / "other.npz")
    legacy = _legacy_arrays(logits, labels, None)
    np.savez(tmp_path / "legacy_bad.npz", **{**legacy, "prediction_frequency": np.full(4, 0.3)})
    with pytest.raises(DataError, match="frequency vector"):
        Reference.load(tmp_path / "legacy_bad.npz")


# ------------------------------------------------------------------------------------------ bundles


def test_read_bundle_exposes_the_reference(tmp_path) -> None:
    from assay.api import run_evaluation, write_evaluation
    from assay.evidence.bundle import Bundle, read_bundle, read_reference
    from conftest import make_blobs_dataset

    ds, model = make_blobs_dataset(n=300)
    run = run_evaluation(model, ds, cache_dir=None)
    write_evaluation(run, tmp_path / "b")
    bundle = read_bundle(tmp_path / "b")
    evidence, predictions = bundle  # still unpacks to two values
    assert isinstance(bundle, Bundle) and len(bundle) == 2
    assert bundle.evidence is evidence and bundle.predictions is predictions
    ref = bundle.reference
    assert isinstance(ref, Reference) and ref is bundle.reference  # read once
    logits = ds.x @ model.weight + model.bias
    assert ref.n == 300 and ref.atc_threshold_maxconf == pytest.approx(
        ATCEstimator("maxconf").fit(logits, ds.y).threshold_, rel=1e-6)
    assert ref.model_sha256 == evidence.model.sha256 and ref.class_names == evidence.data.class_names
    assert read_reference(tmp_path / "b", evidence).n == 300
    for clone in (copy.copy(bundle), pickle.loads(pickle.dumps(bundle))):
        assert isinstance(clone, Bundle) and clone.folder == bundle.folder and len(clone) == 2

    # A reference written for another model (or another n) is refused when read with the evidence.
    other = Reference.from_arrays(logits, ds.y, class_names=evidence.data.class_names, model_sha256="0" * 64)
    other.save(tmp_path / "b" / "reference.npz")
    with pytest.raises(DataError, match="another model"):
        _ = read_bundle(tmp_path / "b").reference
    Reference.from_arrays(logits[:10], ds.y[:10], class_names=evidence.data.class_names).save(
        tmp_path / "b" / "reference.npz")
    with pytest.raises(DataError, match="10 samples"):
        _ = read_bundle(tmp_path / "b").reference
    (tmp_path / "b" / "reference.npz").unlink()
    assert read_bundle(tmp_path / "b").reference is None


def test_reference_imports_nothing_above_its_layer() -> None:
    code = ("import sys, assay.reference; bad = [m for m in sys.modules if m.startswith(('assay.engine', "
            "'assay.checks', 'assay.evaluation', 'assay.api', 'assay.compare', 'assay.compress', 'assay.report'))];"
            " assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
