"""Calibration metrics, temperature scaling and the calibration check.

References: netcal and torchmetrics (ECE, MCE), Kumar et al.'s ``uncertainty-calibration`` library
(equal-mass and debiased estimators; skipped where it is not installed, with an independent loop
implementation below that always runs), hand-computed cases and simulations with known truth.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from netcal.metrics import ECE as NetcalECE
from netcal.metrics import MCE as NetcalMCE
from sklearn.exceptions import NotFittedError
from torchmetrics.functional.classification import multiclass_calibration_error

from assay.checks.base import CheckContext, EvaluateConfig
from assay.checks.calibration import check_calibration
from assay.data.dataset import Dataset
from assay.engine.cache import ViewOutput
from assay.engine.run import Outputs
from assay.errors import DataError, OptionError
from assay.stats import calibration as calibration_stats
from assay.stats.binning import assign_bins, equal_mass_edges, equal_width_edges
from assay.stats.bootstrap import bootstrap_weights, spawn_seed
from assay.stats.calibration import (
    ClasswiseBins,
    TemperatureScaler,
    TopLabelBins,
    bin_stats,
    classwise_ece,
    debiased_ce_from_stats,
    ece,
    ece_adaptive,
    ece_debiased,
    ece_from_stats,
    mce,
    reliability_bins,
    stratified_split,
    top_label,
)

# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def calibrated_sample(n: int, num_classes: int, seed: int, scale: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits): a perfectly calibrated model (Gumbel-max sampling)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=scale, size=(n, num_classes))
    labels = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
    return logits, labels


def random_probabilities(n: int, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(num_classes, 0.7), size=n), rng.integers(0, num_classes, n)


def make_ctx(logits: np.ndarray, labels: np.ndarray, calibration=None, **config) -> CheckContext:
    n = len(labels)
    dataset = Dataset(x=np.zeros((n, 1), np.float32), y=np.asarray(labels, np.int64), ids=np.arange(n),
                      modality="tabular", name="synthetic", source="memory")
    outputs = Outputs(views={"clean": ViewOutput(logits=np.asarray(logits, np.float32), features=None)})
    return CheckContext(outputs=outputs, dataset=dataset, config=EvaluateConfig(**{"n_bootstrap": 200, **config}),
                        calibration=calibration)


def loop_ece(confidence, correct, edges) -> float:
    """Textbook ECE with an explicit loop over left-closed bins [lo, hi), the last one closed."""
    total = 0.0
    for b in range(len(edges) - 1):
        last = b == len(edges) - 2
        inside = (confidence >= edges[b]) & ((confidence <= edges[b + 1]) if last else (confidence < edges[b + 1]))
        if inside.any():
            total += inside.sum() * abs(correct[inside].mean() - confidence[inside].mean())
    return total / len(confidence)


def loop_kumar_debiased(confidence, correct, n_bins) -> float:
    """Kumar et al.'s top-label debiased L2 estimator, from the paper's recipe: split the sorted confidences
    into near-equal parts, edges halfway between parts, bins (lo, hi], and per bin subtract acc(1-acc)/(n_b-1)."""
    order = np.sort(confidence)
    parts = np.array_split(order, min(n_bins, len(order)))
    uppers = [(parts[i][-1] + parts[i + 1][0]) / 2 for i in range(len(parts) - 1)] + [1.0]
    lowers = [-np.inf] + uppers[:-1]
    total = 0.0
    for lo, hi in zip(lowers, uppers, strict=True):
        inside = (confidence > lo) & (confidence <= hi)
        m = inside.sum()
        if m < 2:
            continue
        acc, conf = correct[inside].mean(), confidence[inside].mean()
        total += m / len(confidence) * ((conf - acc) ** 2 - acc * (1 - acc) / (m - 1))
    return float(np.sqrt(max(total, 0.0)))


# --------------------------------------------------------------------------------------------------
# ECE and MCE against netcal and torchmetrics
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ece_matches_netcal_torchmetrics_and_a_loop(seed):
    p, y = random_probabilities(3000, 5, seed)
    ours = ece(p, y)
    assert ours == pytest.approx(NetcalECE(bins=15).measure(p, y), abs=1e-12)
    tm = multiclass_calibration_error(torch.tensor(p), torch.tensor(y), num_classes=5, n_bins=15, norm="l1")
    assert ours == pytest.approx(float(tm), abs=1e-6)  # torchmetrics returns float32
    conf, correct = top_label(p, y)
    assert ours == pytest.approx(loop_ece(conf, correct, np.linspace(0, 1, 16)), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_mce_matches_torchmetrics_and_netcal(seed):
    p, y = random_probabilities(2000, 4, seed)
    tm = multiclass_calibration_error(torch.tensor(p), torch.tensor(y), num_classes=4, n_bins=15, norm="max")
    assert mce(p, y) == pytest.approx(float(tm), abs=1e-6)
    assert mce(p, y) == pytest.approx(NetcalMCE(bins=15).measure(p, y), abs=1e-12)


def test_bin_edge_convention_ties_netcal_and_torchmetrics_difference():
    """Confidences exactly on bin edges: left-closed [lo, hi) like netcal (np.histogram). torchmetrics
    agrees on inner edges but puts confidence == 1.0 in an extra bin [1, 1] of its own."""
    edges = np.linspace(0, 1, 16)
    # Edge 11 is avoided: torch.linspace(0, 1, 16) differs from np.linspace there by one ulp.
    on_edges = np.repeat(edges[[9, 10, 12, 13, 14]], 20)
    c = np.r_[on_edges, np.ones(20)]
    p = np.stack([c, (1 - c) / 2, (1 - c) / 2], axis=1)
    y = np.zeros(len(c), dtype=np.int64)
    y[-10:-5], y[-5:] = 1, 2  # the confidence-1.0 group is half right (overconfident), the others all right
    ours = ece(p, y)
    assert ours == pytest.approx(NetcalECE(bins=15).measure(p, y), abs=1e-12)
    conf, correct = top_label(p, y)
    assert ours == pytest.approx(loop_ece(conf, correct, edges), abs=1e-12)
    tm = float(multiclass_calibration_error(torch.tensor(p), torch.tensor(y), num_classes=3, n_bins=15, norm="l1"))
    assert abs(tm - ours) > 0.01  # the conventions really differ here ...
    with_extra_bin = float(ece_from_stats(bin_stats(conf, correct, np.r_[edges, 1.0])))
    assert tm == pytest.approx(with_extra_bin, abs=1e-6)  # ... and exactly by torchmetrics' extra bin
    # Guo et al.'s original code uses right-closed bins, which here also moves each tie one bin down.
    right = float(ece_from_stats(bin_stats(conf, correct, edges, closed="right")))
    assert right == pytest.approx(with_extra_bin, abs=1e-12)


# --------------------------------------------------------------------------------------------------
# Hand-computed cases
# --------------------------------------------------------------------------------------------------


def test_ece_hand_two_bins():
    p = np.array([[0.40, 0.30, 0.30], [0.45, 0.35, 0.20], [0.80, 0.10, 0.10], [0.90, 0.05, 0.05]])
    y = np.array([0, 1, 0, 2])
    # bin [0, .5): conf .425, acc .5 -> .075; bin [.5, 1]: conf .85, acc .5 -> .35; each holds half the samples
    assert ece(p, y, n_bins=2) == pytest.approx(0.5 * 0.075 + 0.5 * 0.35)
    assert mce(p, y, n_bins=2) == pytest.approx(0.35)
    rows = reliability_bins(p, y, n_bins=2)
    assert [r["count"] for r in rows] == [2, 2]
    assert rows[1] == {"lower": 0.5, "upper": 1.0, "count": 2, "mean_confidence": pytest.approx(0.85),
                       "accuracy": 0.5}


def test_ece_all_confident_half_right_is_half():
    p = np.tile([1.0, 0.0], (100, 1))
    y = np.r_[np.zeros(50, int), np.ones(50, int)]
    assert ece(p, y) == pytest.approx(0.5)
    assert mce(p, y) == pytest.approx(0.5)


def test_ece_near_zero_for_a_calibrated_model():
    logits, y = calibrated_sample(100_000, 4, seed=3)
    p = softmax(logits)
    assert ece(p, y) < 0.01
    assert ece_adaptive(p, y) < 0.01
    assert ece_debiased(p, y) < 0.01
    assert classwise_ece(p, y) < 0.005


def test_classwise_ece_hand_case():
    p = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    y = np.array([0, 2])
    # class 0: |0-.2|/2 + |1-.6|/2 = .3; class 1: .3/2 + .7/2 = .5; class 2: both in [0, .5), |.5-.1| = .4
    assert classwise_ece(p, y, n_bins=2) == pytest.approx((0.3 + 0.5 + 0.4) / 3)


def test_classwise_ece_matches_per_class_loop():
    p, y = random_probabilities(1500, 6, seed=4)
    p[:100] = np.eye(6)[y[:100]]  # exact zeros and ones: the first and last bins' edge cases
    edges = np.linspace(0, 1, 16)
    expected = np.mean([loop_ece(p[:, k], (y == k).astype(float), edges) for k in range(6)])
    assert classwise_ece(p, y) == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------------------------------
# Equal-mass binning and the debiased estimator (Kumar et al. 2019)
# --------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 1_000_000), min_size=1, max_size=300, unique=True),
    st.integers(1, 25),
)
def test_equal_mass_bins_differ_by_at_most_one(ints, n_bins):
    values = np.array(ints) / 1_000_000  # distinct and well separated: midpoints fall strictly between
    edges = equal_mass_edges(values, n_bins)
    assert len(edges) == min(n_bins, len(values)) + 1 and edges[0] == 0.0 and edges[-1] == 1.0
    counts = np.bincount(assign_bins(values, edges, "right"), minlength=len(edges) - 1)
    assert counts.sum() == len(values)
    assert counts.max() - counts.min() <= 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=200), st.integers(1, 30))
def test_left_closed_bins_match_numpy_histogram(values, n_bins):
    values = np.array(values)
    edges = equal_width_edges(n_bins)
    counts = np.bincount(assign_bins(values, edges, "left"), minlength=n_bins)
    np.testing.assert_array_equal(counts, np.histogram(values, bins=edges)[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_debiased_matches_independent_loop(seed):
    p, y = random_probabilities(1000 + 37 * seed, 4, seed)
    conf, correct = top_label(p, y)
    assert ece_debiased(p, y) == pytest.approx(loop_kumar_debiased(conf, correct, 15), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_equal_mass_metrics_match_kumar_library(seed):
    cal = pytest.importorskip("calibration", reason="uncertainty-calibration (Kumar et al.) not installed")
    if not hasattr(cal, "lower_bound_scaling_ce"):
        pytest.skip("an unrelated 'calibration' module is installed")
    p, y = random_probabilities(2000, 5, seed)
    kumar_debiased = cal.lower_bound_scaling_ce(p, y, p=2, debias=True, num_bins=15,
                                                binning_scheme=cal.get_equal_bins, mode="top-label")
    assert ece_debiased(p, y) == pytest.approx(kumar_debiased, abs=1e-12)
    assert ece_adaptive(p, y) == pytest.approx(cal.get_ece_em(p, y, num_bins=15), abs=1e-12)
    assert ece(p, y) == pytest.approx(cal.get_ece(p, y, num_bins=15), abs=1e-12)


def _plugin_l2(p, y, n_bins=15):
    conf, correct = top_label(p, y)
    stats = bin_stats(conf, correct, equal_mass_edges(conf, n_bins), closed="right")
    filled = stats.count > 0
    acc = stats.sum_correct[filled] / stats.count[filled]
    mean_conf = stats.sum_confidence[filled] / stats.count[filled]
    return float(np.sqrt((stats.count[filled] / stats.total * (acc - mean_conf) ** 2).sum()))


def test_debiased_estimator_removes_the_plugin_bias():
    rng = np.random.default_rng(5)
    calibrated_debiased, calibrated_plugin, shifted_debiased, shifted_plugin = [], [], [], []
    for _ in range(40):
        conf = rng.uniform(0.55, 0.95, 2000)  # top label is class 0
        p = np.stack([conf, 1 - conf], axis=1)
        right = rng.uniform(size=conf.size) < conf  # calibrated: P(correct | conf) = conf
        y = np.where(right, 0, 1)
        calibrated_debiased.append(ece_debiased(p, y))
        calibrated_plugin.append(_plugin_l2(p, y))
        right = rng.uniform(size=conf.size) < conf - 0.05  # true top-label L2 error is exactly 0.05
        y = np.where(right, 0, 1)
        shifted_debiased.append(ece_debiased(p, y))
        shifted_plugin.append(_plugin_l2(p, y))
    assert np.mean(calibrated_debiased) < 0.5 * np.mean(calibrated_plugin)
    assert np.mean(calibrated_debiased) < 0.015
    assert abs(np.mean(shifted_debiased) - 0.05) < 0.005
    assert abs(np.mean(shifted_debiased) - 0.05) < abs(np.mean(shifted_plugin) - 0.05)


# --------------------------------------------------------------------------------------------------
# Weighted statistics = replicated data (the bootstrap path)
# --------------------------------------------------------------------------------------------------


def test_weights_equal_replicating_samples():
    p, y = random_probabilities(300, 4, seed=6)
    weights = next(bootstrap_weights(300, 5, seed=7)).astype(np.float64)
    for fn in (ece, mce, classwise_ece):
        resampled = fn(p, y, weights=weights)
        for r in range(5):
            take = weights[r].astype(int)
            assert resampled[r] == pytest.approx(fn(np.repeat(p, take, axis=0), np.repeat(y, take)), abs=1e-12)
    # equal-mass edges stay those of the unweighted data: compare with fixed edges
    conf, correct = top_label(p, y)
    edges = equal_mass_edges(conf, 15)
    debiased = debiased_ce_from_stats(bin_stats(conf, correct, edges, closed="right", weights=weights))
    for r in range(5):
        take = weights[r].astype(int)
        replicated = bin_stats(np.repeat(conf, take), np.repeat(correct, take), edges, closed="right")
        assert debiased[r] == pytest.approx(float(debiased_ce_from_stats(replicated)), abs=1e-12)
    assert ece_adaptive(p, y, weights=weights).shape == (5,)


def test_float32_multiplicities_match_replicated_data():
    """The bootstrap's own path: float32 multiplicities, column-major as SharedWeights hands them out, on
    enough samples that float32 rounding would show; prebuilt bins reused across arrays."""
    n = 20_000
    p, y = random_probabilities(n, 5, seed=8)
    conf, correct = top_label(p, y)
    width, mass = equal_width_edges(15), equal_mass_edges(conf, 15)
    top, adaptive, classwise = TopLabelBins(conf, correct, width), TopLabelBins(conf, correct, mass, "right"), \
        ClasswiseBins(p, y, width)
    for order in ("C", "F"):
        for weights in bootstrap_weights(n, 6, seed=9, max_weights=3 * n, order=order):
            assert weights.dtype == np.float32 and weights.flags[f"{order}_CONTIGUOUS"]
            got = [ece_from_stats(top(weights)), ece_from_stats(adaptive(weights)),
                   ece_from_stats(classwise(weights)).mean(axis=-1)]
            for r in range(len(weights)):
                take = weights[r].astype(int)
                rp, ry = np.repeat(p, take, axis=0), np.repeat(y, take)
                rc, rk = np.repeat(conf, take), np.repeat(correct, take)
                expected = [ece(rp, ry), float(ece_from_stats(bin_stats(rc, rk, mass, closed="right"))),
                            classwise_ece(rp, ry)]
                for value, reference in zip(got, expected):
                    assert value[r] == pytest.approx(reference, abs=1e-7)


def test_invalid_inputs_raise_user_errors():
    p, y = random_probabilities(10, 3, seed=0)
    with pytest.raises(DataError, match="labels must be integers"):
        ece(p, np.full(10, 3))
    with pytest.raises(DataError, match="expected 10 labels"):
        ece(p, y[:5])
    bad = p.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        ece(bad, y)


# --------------------------------------------------------------------------------------------------
# Temperature scaling
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("true_temperature", [0.5, 2.0])
def test_temperature_scaling_recovers_known_temperature(true_temperature):
    rng = np.random.default_rng(8)
    z = rng.normal(scale=3.0, size=(20_000, 5))
    y = np.argmax(z / true_temperature + rng.gumbel(size=z.shape), axis=1)  # y ~ softmax(z / T_true)
    scaler = TemperatureScaler().fit(z, y)
    assert scaler.temperature_ == pytest.approx(true_temperature, rel=0.10)
    before = -np.log(softmax(z)[np.arange(len(y)), y]).mean()
    after = -np.log(scaler.predict_proba(z)[np.arange(len(y)), y]).mean()
    assert after <= before
    assert scaler.nll_ == pytest.approx(after, rel=1e-9)
    np.testing.assert_array_equal(scaler.predict_proba(z).argmax(1), z.argmax(1))  # accuracy unchanged
    np.testing.assert_allclose(scaler.transform(z), z / scaler.temperature_)


def test_temperature_nll_is_minimal_on_a_grid():
    logits, y = calibrated_sample(3000, 6, seed=9)
    logits = logits * 1.7 + 0.3
    scaler = TemperatureScaler().fit(logits, y)
    grid = scaler.temperature_ * np.array([0.9, 0.97, 1.03, 1.1])
    nll = [-np.log(softmax(logits / t)[np.arange(len(y)), y]).mean() for t in grid]
    assert scaler.nll_ <= min(nll)


@settings(max_examples=60, deadline=None)
@given(st.floats(-5, 5), st.floats(0.01, 3), st.floats(0.1, 4), st.sampled_from([1e-5, 1e-3, 1e-8]),
       st.sampled_from(["quadratic", "abs", "quartic", "flat", "cosine"]))
def test_bounded_minimum_is_scipys_bounded_method(centre, half_width, scale, xatol, shape):
    """Same iterates as scipy.optimize.minimize_scalar(method="bounded"), hence the same x and f(x), bit for bit."""
    from scipy.optimize import minimize_scalar

    from assay.stats.calibration import _bounded_minimum

    functions = {"quadratic": lambda x: scale * (x - centre) ** 2, "abs": lambda x: abs(x - centre) * scale,
                 "quartic": lambda x: (x - centre) ** 4 - scale * x, "flat": lambda x: 1.0,
                 "cosine": lambda x: float(np.cos(scale * x))}
    func = functions[shape]
    lower, upper = centre - half_width * 1.7, centre + half_width
    ours = _bounded_minimum(func, lower, upper, xatol)
    theirs = minimize_scalar(func, bounds=(lower, upper), method="bounded", options={"xatol": xatol})
    assert ours == (float(theirs.x), float(theirs.fun))


def test_temperature_scaler_contract():
    scaler = TemperatureScaler(min_temperature=0.1, max_temperature=10.0)
    assert vars(scaler) == {"min_temperature": 0.1, "max_temperature": 10.0, "xatol": 1e-5}
    with pytest.raises(NotFittedError):
        scaler.transform(np.zeros((2, 3)))
    logits, y = calibrated_sample(50, 3, seed=0)
    assert scaler.fit(logits, y) is scaler
    with pytest.raises(OptionError, match="min_temperature"):
        TemperatureScaler(min_temperature=5.0, max_temperature=1.0).fit(logits, y)
    bad = logits.copy()
    bad[3, 1] = np.inf
    with pytest.raises(DataError, match="rows"):
        TemperatureScaler().fit(bad, y)


def test_temperature_at_bound_when_everything_is_right():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    scaler = TemperatureScaler().fit(logits, np.array([0, 1, 0]))
    assert scaler.at_bound_ and scaler.temperature_ < 0.011


def test_stratified_split():
    labels = np.repeat(np.arange(4), [10, 20, 30, 41])
    held, rest, stratified = stratified_split(labels, 0.5, seed=1)
    assert stratified
    assert np.intersect1d(held, rest).size == 0 and np.union1d(held, rest).size == labels.size
    np.testing.assert_array_equal(np.bincount(labels[held]), [5, 10, 15, 20])  # round-half-even of 20.5
    again = stratified_split(labels, 0.5, seed=1)
    np.testing.assert_array_equal(held, again[0])
    assert not np.array_equal(held, stratified_split(labels, 0.5, seed=2)[0])
    _, _, stratified = stratified_split(np.r_[labels, 7], 0.5, seed=1)  # a singleton class
    assert not stratified


# --------------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------------


def test_check_on_a_calibrated_model_passes_with_the_plot_contract():
    logits, y = calibrated_sample(20_000, 5, seed=10)
    section = check_calibration(make_ctx(logits, y))
    assert section.name == "calibration" and section.title == "Calibration"
    assert section.verdict == "pass"
    for name in ("ece", "ece_adaptive", "mce", "classwise_ece", "ece_debiased", "ece_before_temperature",
                 "ece_after_temperature", "nll_before_temperature", "nll_after_temperature"):
        m = section.metrics[name]
        assert m.ci_low is not None and m.ci_low <= m.ci_high, name
    assert section.metrics["temperature"].value == pytest.approx(1.0, abs=0.1)
    assert section.metrics["ece"].config["bins"] == 15 and section.metrics["ece"].config["norm"] == "l1"
    assert section.metrics["ece_debiased"].config["norm"] == "l2"
    assert section.metrics["classwise_ece"].config["label"] == "classwise"

    reliability = section.plots["reliability"]
    assert reliability["kind"] == "reliability" and reliability["title"] == "Reliability diagram"
    assert [s["label"] for s in reliability["series"]] == ["uncalibrated", "temperature-scaled"]
    for series in reliability["series"]:
        assert len(series["bins"]) == 15
        assert set(series["bins"][0]) == {"lower", "upper", "count", "mean_confidence", "accuracy"}
    assert sum(b["count"] for b in reliability["series"][0]["bins"]) == 20_000
    hist = section.plots["confidence_histogram"]
    assert {k: hist[k] for k in ("kind", "title", "xlabel", "ylabel")} == {
        "kind": "histogram", "title": "Confidence of predictions", "xlabel": "confidence", "ylabel": "count"}
    assert len(hist["edges"]) == 16 and hist["edges"][0] == 0.0 and hist["edges"][-1] == 1.0
    correct_counts, incorrect_counts = (s["counts"] for s in hist["series"])
    assert [s["label"] for s in hist["series"]] == ["correct", "incorrect"]
    assert sum(correct_counts) == int((softmax(logits).argmax(1) == y).sum())
    assert sum(correct_counts) + sum(incorrect_counts) == 20_000
    assert section.config["thresholds"] == {"pass_if_ece_ci_high_below": 0.05, "warn_if_ece_below": 0.15,
                                            "otherwise": "fail"}
    section.model_dump_json()  # serializable (None for empty bins, no NaN)


def test_check_flags_an_overconfident_model_and_temperature_fixes_it():
    logits, y = calibrated_sample(10_000, 5, seed=11)
    section = check_calibration(make_ctx(logits * 3.0, y))  # T_true = 3: much too sharp
    assert section.verdict == "fail"
    assert section.metrics["ece"].value >= 0.15
    messages = " | ".join(f.message for f in section.findings)
    assert "overconfident: mean confidence" in messages
    assert "lowers ECE from" in messages and "lowers NLL from" in messages
    assert section.metrics["temperature"].value == pytest.approx(3.0, rel=0.1)
    assert section.metrics["ece_after_temperature"].value < 0.03 < section.metrics["ece_before_temperature"].value
    assert section.metrics["nll_after_temperature"].value < section.metrics["nll_before_temperature"].value
    # the fair comparison: "before" is computed on the same held-apart part as "after"
    _, rest, _ = stratified_split(y, 0.5, spawn_seed(0, "calibration/split"))
    assert section.metrics["ece_before_temperature"].value == pytest.approx(ece(softmax(logits[rest] * 3.0), y[rest]),
                                                                            abs=1e-6)
    config = section.config["temperature_scaling"]
    assert config["fit_on"] == "held-out split of the evaluation set"
    assert config["n_fit"] + config["n_eval"] == 10_000 and config["stratified"]


def test_check_mildly_miscalibrated_model_warns():
    logits, y = calibrated_sample(10_000, 5, seed=12)
    section = check_calibration(make_ctx(logits * 1.4, y))
    assert section.metrics["ece"].ci_high >= 0.05 and section.metrics["ece"].value < 0.15
    assert section.verdict == "warn"


def test_check_uses_separate_calibration_data():
    logits, y = calibrated_sample(4000, 4, seed=13)
    cal_logits, cal_y = calibrated_sample(3000, 4, seed=14)
    section = check_calibration(make_ctx(logits * 2.0, y, calibration=(cal_logits * 2.0, cal_y)))
    config = section.config["temperature_scaling"]
    assert config["fit_on"] == "separate calibration data" and config["n_fit"] == 3000 and config["n_eval"] == 4000
    expected_t = TemperatureScaler().fit(cal_logits * 2.0, cal_y).temperature_
    assert section.metrics["temperature"].value == pytest.approx(expected_t, rel=1e-9)
    assert section.metrics["ece_before_temperature"].value == pytest.approx(section.metrics["ece"].value, abs=1e-9)
    assert any("separate calibration data" in f.message for f in section.findings)
    with pytest.raises(DataError, match="classes"):
        check_calibration(make_ctx(logits, y, calibration=(cal_logits[:, :3], cal_y % 3)))


def test_bootstrap_ci_contains_point_and_is_seed_deterministic():
    logits, y = calibrated_sample(5000, 4, seed=15)
    first = check_calibration(make_ctx(logits * 1.5, y, seed=3))
    for name in ("ece", "ece_adaptive", "ece_debiased", "ece_after_temperature", "nll_before_temperature"):
        m = first.metrics[name]
        assert m.ci_low <= m.value <= m.ci_high, name
    second = check_calibration(make_ctx(logits * 1.5, y, seed=3))
    assert first.model_dump() == second.model_dump()
    other = check_calibration(make_ctx(logits * 1.5, y, seed=4))
    assert other.metrics["ece"].value == first.metrics["ece"].value
    assert other.metrics["ece"].ci_low != first.metrics["ece"].ci_low


def test_check_on_tiny_data_skips_temperature_scaling():
    logits, y = calibrated_sample(12, 3, seed=16)
    section = check_calibration(make_ctx(logits, y))
    assert "temperature" not in section.metrics
    assert [s["label"] for s in section.plots["reliability"]["series"]] == ["uncalibrated"]
    assert section.verdict in {"warn", "fail"}  # 12 samples cannot show a CI below 0.05
    assert any("temperature scaling skipped" in f.message for f in section.findings)


# --------------------------------------------------------------------------------------------------
# Temperature-scaling findings say what the numbers say (issue 20, item 6). Reference: scipy's bounded
# scalar minimizer on the NLL (scipy.special.log_softmax), independent of TemperatureScaler's grid + Brent.
# --------------------------------------------------------------------------------------------------


def _scipy_nll(logits: np.ndarray, labels: np.ndarray, t: float = 1.0) -> float:
    from scipy.special import log_softmax

    return float(-log_softmax(np.asarray(logits, np.float64) / t, axis=1)[np.arange(len(labels)), labels].mean())


def _scipy_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(lambda log_t: _scipy_nll(logits, labels, float(np.exp(log_t))),
                          bounds=(np.log(0.01), np.log(100.0)), method="bounded", options={"xatol": 1e-7})
    return float(np.exp(res.x))


def _temperature_messages(section) -> str:
    return " | ".join(f.message for f in section.findings if f.evidence in (
        "calibration.metrics.ece_after_temperature", "calibration.metrics.temperature"))


def test_temperature_finding_says_nll_fell_with_the_numbers_and_t_matches_scipy():
    logits, y = calibrated_sample(6000, 5, seed=21)
    z = logits * 2.5  # NLL-optimal T = 2.5 by construction: overconfident
    section = check_calibration(make_ctx(z, y))
    fit, rest, _ = stratified_split(y, 0.5, spawn_seed(0, "calibration/split"))
    t_ref = _scipy_temperature(z[fit], y[fit])
    t = section.metrics["temperature"].value
    assert t == pytest.approx(t_ref, rel=1e-4) and t == pytest.approx(2.5, rel=0.1)
    before, after = _scipy_nll(z[rest], y[rest]), _scipy_nll(z[rest], y[rest], t)
    assert section.metrics["nll_before_temperature"].value == pytest.approx(before, rel=1e-6)
    assert section.metrics["nll_after_temperature"].value == pytest.approx(after, rel=1e-6)
    message = _temperature_messages(section)
    assert f"lowers NLL from {before:.4f} to {after:.4f}" in message
    assert "lowered the held-out NLL: the model is overconfident" in message
    assert "hit its bound" not in message


def test_temperature_finding_says_nll_rose_when_it_rose():
    """T fitted on overconfident calibration data (T ~ 3) applied to a calibrated evaluation set: NLL rises,
    and the finding must say so instead of calling the model overconfident."""
    logits, y = calibrated_sample(4000, 4, seed=22)
    cal_logits, cal_y = calibrated_sample(4000, 4, seed=23)
    section = check_calibration(make_ctx(logits, y, calibration=(cal_logits * 3.0, cal_y)))
    t = section.metrics["temperature"].value
    assert t == pytest.approx(_scipy_temperature(cal_logits * 3.0, cal_y), rel=1e-4)
    before, after = _scipy_nll(logits, y), _scipy_nll(logits, y, t)
    assert after > before + 1e-3  # softening calibrated logits by ~3 costs NLL
    message = _temperature_messages(section)
    assert f"raises NLL from {before:.4f} to {after:.4f}" in message
    assert "the model is overconfident" not in message and "lowers NLL" not in message
    assert "looked overconfident on the fitting data only" in message


def test_a_direction_is_claimed_only_when_the_nll_interval_says_so():
    """Calibrated models (true T = 1) on 400 samples: the fitted T wobbles around 1 and the held-out NLL moves a
    little either way. The finding names over/underconfidence only when the paired NLL interval lies above 0."""
    import re

    readings = []
    for seed in range(30, 42):
        logits, y = calibrated_sample(400, 5, seed=seed)
        section = check_calibration(make_ctx(logits, y))
        t = section.metrics["temperature"].value
        message = _temperature_messages(section)
        nll_part = message[message.index("NLL"):]
        low, high = (float(v) for v in re.search(r"CI (-?\d\.\d{4})–(-?\d\.\d{4})", nll_part).groups())
        before = section.metrics["nll_before_temperature"].value
        after = section.metrics["nll_after_temperature"].value
        looked = "overconfident" if t > 1 else "underconfident"
        if "no clear sign" in message:
            assert before - after > 1e-4 and low <= 0 <= high
            readings.append("unclear")
        elif f"the model is {looked}" in message:
            assert before - after > 1e-4 and low > 0
            readings.append("claimed")
        else:
            assert f"the model looked {looked} on the fitting data only" in message and before - after <= 1e-4
            readings.append("did not fall")
    assert {"unclear", "did not fall"} <= set(readings)  # both cautious branches were exercised


@pytest.mark.parametrize(("before", "after", "verb"), [
    (0.0631, 0.0607, "lowers"), (0.0607, 0.0631, "raises"), (0.06310, 0.06305, "leaves")])
def test_change_wording_on_the_issue_numbers(before, after, verb):
    from assay.checks.calibration import _change

    text = _change("NLL", before, after)
    assert text.startswith(verb) and f"{before:.4f}" in text and f"{after:.4f}" in text


@settings(max_examples=300, deadline=None)
@given(st.floats(0, 5), st.floats(0, 5))
def test_change_wording_never_contradicts_the_printed_values(before, after):
    import re

    from assay.checks.calibration import UNCHANGED_WITHIN, _change

    text = _change("NLL", before, after)
    printed_before, printed_after = (float(v) for v in re.findall(r"\d+\.\d{4}", text)[:2])
    if text.startswith("lowers"):
        assert printed_after < printed_before
    elif text.startswith("raises"):
        assert printed_after > printed_before
    else:
        assert text.startswith("leaves NLL unchanged") and abs(after - before) <= UNCHANGED_WITHIN


@pytest.mark.parametrize(("labels_of", "bound"), [("argmax", 0.01), ("argmin", 100.0)])
def test_temperature_at_its_bound_is_not_called_over_or_underconfident(labels_of, bound):
    """Every fitting prediction right with a margin (NLL falls as T -> 0) or every one wrong with the label the
    lowest logit (NLL falls as T -> infinity): the optimum lies beyond the search range (a dense grid agrees),
    and the finding says the fit hit its bound instead of naming a direction."""
    rng = np.random.default_rng(24)
    cal_logits = rng.normal(size=(200, 3)) * 0.5 + np.eye(3)[rng.integers(0, 3, 200)] * 4.0
    cal_y = cal_logits.argmax(1) if labels_of == "argmax" else cal_logits.argmin(1)
    logits, y = calibrated_sample(2000, 3, seed=25)
    section = check_calibration(make_ctx(logits, y, calibration=(cal_logits, cal_y)))
    t = section.metrics["temperature"].value
    assert t == pytest.approx(bound, rel=0.01)
    grid = np.geomspace(0.01, 100.0, 201)  # reference: NLL (scipy log_softmax) on a dense grid is least at the bound
    assert grid[int(np.argmin([_scipy_nll(cal_logits, cal_y, g) for g in grid]))] == pytest.approx(bound)
    message = _temperature_messages(section)
    assert f"the fit hit its bound T={bound:g}: the true optimum lies beyond" in message
    assert "calibration data may be too small" in message and "model degenerate" in message
    assert "overconfident" not in message and "underconfident" not in message
    assert any(f.severity == "warning" and "hit its bound" in f.message for f in section.findings)


# --------------------------------------------------------------------------------------------------
# The split (issue 11): metrics in assay.stats.calibration, the check in assay.checks.calibration
# --------------------------------------------------------------------------------------------------

MOVED_NAMES = [
    "DEFAULT_BINS", "BinStats", "ClasswiseBins", "TemperatureScaler", "TopLabelBins", "bin_stats",
    "classwise_bin_stats", "classwise_ece", "confidence_histogram", "debiased_ce_from_stats", "ece",
    "ece_adaptive", "ece_debiased", "ece_from_stats", "mce", "mce_from_stats", "reliability_bins",
    "reliability_from_stats", "stratified_split", "top_label",
]


@pytest.mark.parametrize("name", MOVED_NAMES)
def test_old_import_path_warns_and_gives_the_same_object(name):
    import assay.checks.calibration as old

    with pytest.warns(DeprecationWarning, match=f"assay.stats.calibration.{name}"):
        moved = getattr(old, name)
    assert moved is getattr(calibration_stats, name)
    assert name in dir(old)
    with pytest.warns(DeprecationWarning, match="moved to"):
        exec(f"from assay.checks.calibration import {name}", {})  # the `from ... import` form warns too


def test_unknown_names_still_raise_attribute_error():
    import assay.checks.calibration as old

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError, match="no_such_name"):
            old.no_such_name  # noqa: B018
        assert old.check_calibration.__module__ == "assay.checks.calibration"


def _python(code: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True, timeout=300)


def test_the_project_itself_does_not_use_the_old_paths():
    """Importing the check and its users (corruption, slices) under -W error: no DeprecationWarning."""
    done = _python("import assay.checks.calibration", "-W", "error::DeprecationWarning")
    assert done.returncode == 0, done.stderr
    done = _python(
        "import warnings; warnings.filterwarnings('error', message='assay.checks.calibration', "
        "category=DeprecationWarning)\n"
        "import assay.checks.calibration, assay.checks.corruption, assay.checks.slices, assay.stats.paired"
    )
    assert done.returncode == 0, done.stderr


def test_stats_calibration_stays_in_its_layer():
    """Layer 2: the metrics import neither the checks nor the evidence schema (nor anything above)."""
    done = _python(
        "import sys, assay.stats.calibration\n"
        "print(sorted(m for m in sys.modules if m.startswith('assay.') and m.split('.')[1] not in "
        "('stats', 'errors', '_version')))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
