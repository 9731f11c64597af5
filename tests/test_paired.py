"""Paired statistics for model comparison: references are scipy (binomtest), scikit-learn (accuracy,
macro-F1), Assay's calibration ECE (itself tested against netcal), hand-counted cases and simulations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, f1_score

from assay.checks.performance import confusion_matrix, macro_f1_from_confusion
from assay.errors import UserError
from assay.stats.bootstrap import (
    bootstrap_cell_counts,
    bootstrap_weights,
    clopper_pearson,
    percentile_ci,
    spawn_seed,
)
from assay.stats.calibration import ece as calibration_ece
from assay.stats.multiple_testing import holm
from assay.stats.paired import (
    PairedEstimate,
    adjust_group_pvalues,
    group_delta_p_below,
    mcnemar_exact,
    mcnemar_one_sided,
    paired_classification,
    paired_delta_interval,
    paired_delta_p_above,
    paired_delta_p_below,
    paired_ece_delta,
    paired_group_deltas,
    paired_mean_delta,
    required_sample_size,
)

# --------------------------------------------------------------------------------------------------
# McNemar
# --------------------------------------------------------------------------------------------------


def test_mcnemar_equals_scipy_binomtest_over_a_grid() -> None:
    pairs = [(a, b) for a in range(31) for b in range(31)]
    pairs += [(480, 520), (520, 480), (4900, 5100), (10, 400), (1, 10_000), (12_345, 12_345)]
    for n01, n10 in pairs:
        expected = 1.0 if n01 + n10 == 0 else binomtest(n01, n01 + n10, 0.5).pvalue
        assert mcnemar_exact(n01, n10) == pytest.approx(expected, rel=1e-12, abs=1e-300), (n01, n10)


def test_mcnemar_rejects_negative_counts() -> None:
    with pytest.raises(UserError):
        mcnemar_exact(-1, 3)


# --------------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------------


def test_hand_counted_flips_and_deltas() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, 0])
    pred_a = np.array([0, 0, 1, 0, 2, 1, 0, 1, 2, 2])  # right on 0,1,2,4,6,7,8 -> 7/10
    pred_b = np.array([0, 1, 1, 1, 2, 2, 0, 2, 2, 1])  # right on 0,2,3,4,5,6,8 -> 7/10
    # A right, B wrong: samples 1, 7 -> n10 = 2. A wrong, B right: samples 3, 5 -> n01 = 2.
    r = paired_classification(labels, pred_a, pred_b, 3, n_resamples=200, seed=1)
    assert (r.n, r.n01, r.n10) == (10, 2, 2)
    assert r.accuracy_a == pytest.approx(0.7) and r.accuracy_b == pytest.approx(0.7)
    assert r.accuracy_delta.value == pytest.approx(0.0)
    assert r.negative_flip_rate.value == pytest.approx(0.2)
    assert r.positive_flip_rate.value == pytest.approx(0.2)
    assert r.mcnemar_p == 1.0
    # Per resample the delta is exactly PFR - NFR (same resampled cells).
    np.testing.assert_allclose(r.accuracy_delta.samples,
                               r.positive_flip_rate.samples - r.negative_flip_rate.samples, atol=1e-12)


def test_point_values_match_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    n, c = 3000, 8
    labels = rng.integers(0, 6, n)  # classes 6 and 7 never a label
    pred_a = np.where(rng.random(n) < 0.7, labels, rng.integers(0, 7, n))  # class 7 never predicted by A
    pred_b = np.where(rng.random(n) < 0.75, labels, rng.integers(0, 6, n))  # B never predicts 6 or 7
    r = paired_classification(labels, pred_a, pred_b, c, n_resamples=100)
    assert r.accuracy_a == pytest.approx(accuracy_score(labels, pred_a), abs=1e-12)
    assert r.accuracy_b == pytest.approx(accuracy_score(labels, pred_b), abs=1e-12)
    assert r.macro_f1_a == pytest.approx(f1_score(labels, pred_a, average="macro"), abs=1e-12)
    assert r.macro_f1_b == pytest.approx(f1_score(labels, pred_b, average="macro"), abs=1e-12)
    assert r.macro_f1_a == pytest.approx(float(macro_f1_from_confusion(confusion_matrix(labels, pred_a, c))))
    assert r.macro_f1_delta.value == pytest.approx(r.macro_f1_b - r.macro_f1_a)
    assert r.accuracy_delta.value == pytest.approx(r.accuracy_b - r.accuracy_a)
    assert r.n10 == int(np.sum((pred_a == labels) & (pred_b != labels)))
    assert r.n01 == int(np.sum((pred_a != labels) & (pred_b == labels)))
    assert r.mcnemar_p == pytest.approx(binomtest(r.n01, r.n01 + r.n10).pvalue, rel=1e-12)


def test_resampled_macro_f1_matches_scikit_learn_on_the_same_resample() -> None:
    """A replicate equals the statistic of the resampled data: rebuild one resample's data from its
    cell counts (cells in the same order as the implementation's sorted codes) and ask scikit-learn."""
    rng = np.random.default_rng(4)
    n, c = 400, 4
    labels = rng.integers(0, c, n)
    pred_a = np.where(rng.random(n) < 0.6, labels, rng.integers(0, c, n))
    pred_b = np.where(rng.random(n) < 0.7, labels, rng.integers(0, c, n))
    r = paired_classification(labels, pred_a, pred_b, c, n_resamples=5, seed=9)
    codes, counts = np.unique((labels * c + pred_a) * c + pred_b, return_counts=True)
    from assay.stats.paired import _child

    boot = bootstrap_cell_counts(counts, 5, _child(spawn_seed(9, "paired/classification"), 0))
    for row in range(5):
        resampled = np.repeat(codes, boot[row])
        y, a, b = resampled // (c * c), (resampled // c) % c, resampled % c
        expected = f1_score(y, b, average="macro") - f1_score(y, a, average="macro")
        assert r.macro_f1_delta.samples[row] == pytest.approx(expected, abs=1e-12)
        assert r.accuracy_delta.samples[row] == pytest.approx(np.mean(b == y) - np.mean(a == y), abs=1e-12)


def test_intervals_contain_the_point_values_and_have_one_replicate_per_resample() -> None:
    rng = np.random.default_rng(5)
    n = 1500
    labels = rng.integers(0, 5, n)
    pred_a = np.where(rng.random(n) < 0.8, labels, rng.integers(0, 5, n))
    pred_b = np.where(rng.random(n) < 0.9, pred_a, rng.integers(0, 5, n))
    r = paired_classification(labels, pred_a, pred_b, 5, n_resamples=300)
    for est in (r.accuracy_delta, r.negative_flip_rate, r.positive_flip_rate, r.macro_f1_delta):
        assert est.samples.shape == (300,)
        assert est.ci_low <= est.value <= est.ci_high
        assert est.ci_low < est.ci_high
        assert "B=300" in est.method and "(label, pred_A, pred_B)" in est.method


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(300, 3000),
    accuracy=st.floats(0.5, 0.95),
    disagreement=st.floats(0.01, 0.08),
    seed=st.integers(0, 2**16),
)
def test_paired_interval_is_narrower_than_unpaired_when_models_mostly_agree(
    n: int, accuracy: float, disagreement: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    correct_a = rng.random(n) < accuracy
    correct_b = np.where(rng.random(n) < disagreement, ~correct_a, correct_a)
    labels = np.zeros(n, dtype=np.int64)
    pred_a, pred_b = (~correct_a).astype(np.int64), (~correct_b).astype(np.int64)
    paired = paired_classification(labels, pred_a, pred_b, 2, n_resamples=400, seed=seed).accuracy_delta
    # Unpaired: A and B resampled independently of each other.
    acc = [bootstrap_cell_counts(np.bincount(c, minlength=2), 400, seed + i)[:, 1] / n
           for i, c in enumerate((correct_a.astype(int), correct_b.astype(int)))]
    lo, hi = percentile_ci(acc[1] - acc[0])
    assert paired.ci_high - paired.ci_low < hi - lo


def test_same_seed_same_output_different_seed_different_output() -> None:
    rng = np.random.default_rng(6)
    n = 800
    labels = rng.integers(0, 3, n)
    pred_a = np.where(rng.random(n) < 0.7, labels, rng.integers(0, 3, n))
    pred_b = np.where(rng.random(n) < 0.8, labels, rng.integers(0, 3, n))
    one, two = (paired_classification(labels, pred_a, pred_b, 3, seed=11) for _ in range(2))
    np.testing.assert_array_equal(one.macro_f1_delta.samples, two.macro_f1_delta.samples)
    assert one == two  # samples excluded from equality; the rest must match exactly
    other = paired_classification(labels, pred_a, pred_b, 3, seed=12)
    assert not np.array_equal(one.accuracy_delta.samples, other.accuracy_delta.samples)
    va, vb = rng.random(n), rng.random(n)
    np.testing.assert_array_equal(paired_mean_delta(va, vb, seed=3).samples, paired_mean_delta(va, vb, seed=3).samples)
    for scheme in ("exact", "stratified"):
        e1, e2 = (paired_ece_delta(va, va > 0.5, vb, vb > 0.4, seed=3, scheme=scheme) for _ in range(2))
        np.testing.assert_array_equal(e1.samples, e2.samples)
    g1, g2 = (paired_group_deltas(pred_a == labels, pred_b == labels, labels, seed=3) for _ in range(2))
    assert [g.delta.samples.tolist() for g in g1] == [g.delta.samples.tolist() for g in g2]


def test_identical_predictions_give_exact_binomial_intervals_not_a_collapsed_point() -> None:
    rng = np.random.default_rng(7)
    n = 200
    labels = rng.integers(0, 3, n)
    pred = np.where(rng.random(n) < 0.8, labels, rng.integers(0, 3, n))
    r = paired_classification(labels, pred, pred, 3, n_resamples=500)
    upper = clopper_pearson(0, n, 0.95)[1]
    assert upper == pytest.approx(1 - 0.025 ** (1 / n))
    assert (r.accuracy_delta.ci_low, r.accuracy_delta.ci_high) == pytest.approx((-upper, upper))
    assert (r.negative_flip_rate.ci_low, r.negative_flip_rate.ci_high) == pytest.approx((0.0, upper))
    # p_beyond follows the exact binomial: at the interval's edge it is alpha / 2.
    assert r.accuracy_delta.p_beyond(upper, "below") == pytest.approx(0.025)
    assert r.accuracy_delta.p_beyond(-upper, "above") == pytest.approx(0.025)
    assert r.accuracy_delta.p_beyond(0.0, "below") == 1.0
    assert r.negative_flip_rate.p_beyond(upper, "below") == pytest.approx(0.025)
    assert r.negative_flip_rate.p_beyond(0.5, "below") == pytest.approx(1 / 501)  # floored at 1 / (1 + B)
    assert r.mcnemar_p == 1.0 and "Clopper-Pearson" in r.accuracy_delta.method


def test_p_beyond_counts_replicates_with_the_plus_one_correction() -> None:
    est = PairedEstimate(0.0, -1.0, 1.0, np.array([-0.3, -0.2, -0.1, 0.0, 0.1, np.nan]), "hand")
    # Finite B = 5. below 0: replicates >= 0 are 0.0, 0.1 -> (1 + 2) / 6.
    assert est.p_beyond(0.0, "below") == pytest.approx(3 / 6)
    assert est.p_beyond(-0.25, "above") == pytest.approx(2 / 6)  # only -0.3 <= -0.25
    assert est.p_beyond(1.0, "below") == pytest.approx(1 / 6)
    with pytest.raises(ValueError):
        est.p_beyond(0.0, "under")  # type: ignore[arg-type]


def test_equal_quality_models_are_flagged_at_about_the_nominal_rate() -> None:
    """Null calibration: independent correctness at the same accuracy 0.9, n = 2000; the one-sided
    p-value of "B is worse" must fall below 0.025 in about 2.5% of runs (at most ~5%)."""
    n, c = 2000, 2
    labels = np.zeros(n, dtype=np.int64)
    flagged = 0
    for seed in range(200):
        rng = np.random.default_rng(1000 + seed)
        pred_a = (rng.random(n) >= 0.9).astype(np.int64)
        pred_b = (rng.random(n) >= 0.9).astype(np.int64)
        r = paired_classification(labels, pred_a, pred_b, c, n_resamples=1000, seed=seed)
        flagged += r.accuracy_delta.p_beyond(-0.0, "below") < 0.025
    assert flagged <= 10
    # ... and the same test has power: a 3-point drop is flagged most of the time.
    detected = 0
    for seed in range(40):
        rng = np.random.default_rng(5000 + seed)
        pred_a = (rng.random(n) >= 0.9).astype(np.int64)
        pred_b = (rng.random(n) >= 0.87).astype(np.int64)
        detected += paired_classification(labels, pred_a, pred_b, c, seed=seed).accuracy_delta.p_beyond(
            0.0, "below") < 0.025
    assert detected >= 24


def test_invalid_inputs_raise_user_errors() -> None:
    with pytest.raises(UserError, match="pred_b has 2 entries"):
        paired_classification(np.array([0, 1, 1]), np.array([0, 1, 1]), np.array([0, 1]), 2)
    with pytest.raises(UserError, match="integers in"):
        paired_classification(np.array([0, 1, 2]), np.array([0, 1, 1]), np.array([0, 1, 1]), 2)
    with pytest.raises(UserError, match="NaN"):
        paired_mean_delta(np.array([0.1, np.nan]), np.array([0.1, 0.2]))
    with pytest.raises(UserError, match="scheme"):
        paired_mean_delta(np.array([0.1, 0.3]), np.array([0.1, 0.2]), scheme="fast")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Groups
# --------------------------------------------------------------------------------------------------


def test_group_deltas_match_hand_counts() -> None:
    # Group "x": (A, B) correctness pairs (1,1) (1,0) (1,0) (0,1) (0,0) -> n10 = 2, n01 = 1.
    # Group "y": (1,1) (0,1) (0,1) (0,1) -> n10 = 0, n01 = 3.   Group "z": one sample (1,1).
    correct_a = np.array([1, 1, 1, 0, 0, 1, 0, 0, 0, 1], bool)
    correct_b = np.array([1, 0, 0, 1, 0, 1, 1, 1, 1, 1], bool)
    groups = np.array(["x"] * 5 + ["y"] * 4 + ["z"])
    out = paired_group_deltas(correct_a, correct_b, groups, n_resamples=300, min_size=2)
    x, y, z = out
    assert [g.group for g in out] == ["x", "y", "z"]
    assert (x.n, x.n01, x.n10, x.accuracy_a, x.accuracy_b) == (5, 1, 2, 0.6, 0.4)
    assert x.delta.value == pytest.approx(-0.2)
    assert (x.negative_flip_rate, x.positive_flip_rate) == (0.4, 0.2)
    assert x.mcnemar_p == pytest.approx(binomtest(1, 3).pvalue)
    assert (y.n, y.n01, y.n10, y.accuracy_a, y.accuracy_b) == (4, 3, 0, 0.25, 1.0)
    assert y.mcnemar_p == pytest.approx(0.25)  # 2 * 0.5^3
    assert np.isnan(z.mcnemar_p) and z.n == 1  # below min_size: not tested
    # One sample, no discordant pair: exact, Clopper-Pearson's 0 of 1 (0.975) to within the limits' 1e-5.
    assert (z.delta.ci_low, z.delta.ci_high) == pytest.approx((-0.975, 0.975), abs=2e-5)
    assert z.delta.ci_low <= -0.975 and "exact unconditional interval" in z.delta.method
    # Resampling within a group keeps its size: each replicate is a multiple of 1 / n_group.
    np.testing.assert_allclose(np.round(x.delta.samples * 5), x.delta.samples * 5, atol=1e-9)
    assert all(g.p_adjusted is None for g in out) and "within the group" in x.delta.method
    adjusted = adjust_group_pvalues(out, "holm")
    expected = holm([x.mcnemar_p, y.mcnemar_p, np.nan])[1]
    np.testing.assert_allclose([g.p_adjusted for g in adjusted], expected)


def test_planted_drop_on_one_class_is_detected() -> None:
    rng = np.random.default_rng(21)
    n, classes, bad = 2000, 10, 3
    labels = rng.integers(0, classes, n)
    correct_a = rng.random(n) < 0.9
    correct_b = correct_a.copy()
    in_bad = np.flatnonzero((labels == bad) & correct_a)
    drop = rng.choice(in_bad, size=round(0.10 * np.sum(labels == bad)), replace=False)
    correct_b[drop] = False  # B loses 10 points on class 3, identical elsewhere
    out = {g.group: g for g in paired_group_deltas(correct_a, correct_b, labels, seed=0)}
    assert out[str(bad)].delta.value == pytest.approx(-0.10, abs=0.005)
    assert out[str(bad)].delta.ci_high < -0.03
    adjusted = {g.group: g.p_adjusted for g in adjust_group_pvalues(list(out.values()), "holm")}
    assert adjusted[str(bad)] < 0.05
    assert all(p == 1.0 for g, p in adjusted.items() if g != str(bad))


# --------------------------------------------------------------------------------------------------
# Continuous statistics
# --------------------------------------------------------------------------------------------------


def test_mean_delta_exact_scheme_equals_weighted_means_of_the_same_resamples() -> None:
    rng = np.random.default_rng(8)
    n = 3000
    va, vb = rng.exponential(1.0, n), rng.exponential(0.9, n)
    est = paired_mean_delta(va, vb, n_resamples=200, seed=4)
    assert est.value == pytest.approx(vb.mean() - va.mean(), abs=1e-12)
    weights = np.concatenate(list(bootstrap_weights(n, 200, spawn_seed(4, "paired/mean")))).astype(np.float64)
    np.testing.assert_allclose(est.samples, weights @ (vb - va) / n, atol=1e-6)
    assert "exact per-sample multiplicities" in est.method


def _probabilities(rng: np.random.Generator, n: int, c: int, sharpness: float) -> np.ndarray:
    logits = rng.normal(size=(n, c)) * sharpness
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def _top_label(p: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return p.max(axis=1), p.argmax(axis=1) == labels


def test_ece_delta_point_equals_the_calibration_check_and_exact_replicates_match_it() -> None:
    rng = np.random.default_rng(9)
    n, c = 2000, 5
    labels = rng.integers(0, c, n)
    pa, pb = _probabilities(rng, n, c, 2.0), _probabilities(rng, n, c, 3.0)
    pa[np.arange(n), labels] += 0.3
    pa /= pa.sum(axis=1, keepdims=True)
    est = paired_ece_delta(*_top_label(pa, labels), *_top_label(pb, labels), n_resamples=100, seed=2)
    assert est.value == pytest.approx(calibration_ece(pb, labels) - calibration_ece(pa, labels), abs=1e-12)
    # Each replicate is the calibration check's ECE under the same resample weights (float64 there).
    weights = np.concatenate(list(bootstrap_weights(n, 100, spawn_seed(2, "paired/ece")))).astype(np.float64)
    expected = calibration_ece(pb, labels, weights=weights) - calibration_ece(pa, labels, weights=weights)
    np.testing.assert_allclose(est.samples, expected, atol=1e-6)
    stratified = paired_ece_delta(*_top_label(pa, labels), *_top_label(pb, labels), scheme="stratified")
    assert stratified.value == est.value and "bivariate normal" in stratified.method


def test_exact_and_stratified_schemes_agree_at_the_switch_point() -> None:
    """At n = 200,000 (where "auto" switches) both schemes' interval endpoints agree within 5% of the
    interval width. B = 2000 keeps the Monte Carlo noise of each endpoint near 2% of the width."""
    n, b = 200_000, 2000
    rng = np.random.default_rng(0)
    va = rng.exponential(0.5, n)
    vb = va * rng.lognormal(0.0, 0.3, n)
    conf_a = rng.beta(5, 1, n)
    right_a = rng.random(n) < conf_a * 0.95
    conf_b = np.clip(conf_a + rng.normal(0, 0.05, n), 0, 1)
    right_b = np.where(rng.random(n) < 0.9, right_a, rng.random(n) < conf_b)
    pairs = [
        tuple(paired_mean_delta(va, vb, n_resamples=b, scheme=s) for s in ("exact", "stratified")),
        tuple(paired_ece_delta(conf_a, right_a, conf_b, right_b, n_resamples=b, scheme=s)
              for s in ("exact", "stratified")),
    ]
    for exact, stratified in pairs:
        width = exact.ci_high - exact.ci_low
        assert width > 0
        assert abs(stratified.ci_low - exact.ci_low) < 0.05 * width
        assert abs(stratified.ci_high - exact.ci_high) < 0.05 * width
        assert stratified.samples.std() == pytest.approx(exact.samples.std(), rel=0.05)
    assert "quantile strata" in pairs[0][1].method
    # "auto" picks the exact scheme at the threshold and the stratified one above it.
    assert "exact" in paired_mean_delta(va[:1000], vb[:1000], n_resamples=10).method
    assert "stratified" in paired_mean_delta(np.zeros(200_001), np.ones(200_001), n_resamples=10).method


def test_stratified_mean_is_exact_for_constant_strata() -> None:
    """Values taking two levels: every quantile stratum is constant, so the stratified scheme is an exact
    multinomial bootstrap; its replicates are multiples of 1 / n and its spread matches the binomial."""
    n = 300_000
    d = np.zeros(n)
    d[: n // 10] = 1.0
    est = paired_mean_delta(np.zeros(n), d, n_resamples=2000, seed=1)
    assert "stratified" in est.method
    np.testing.assert_allclose(est.samples * n, np.round(est.samples * n), atol=1e-6)
    assert est.samples.std() == pytest.approx(np.sqrt(0.1 * 0.9 / n), rel=0.06)


# --------------------------------------------------------------------------------------------------
# Sample size
# --------------------------------------------------------------------------------------------------


def test_required_sample_size_hand_cases() -> None:
    est = PairedEstimate(-0.01, -0.03, 0.01, np.zeros(3), "hand")
    # Threshold 0 lies above: half-width facing it is 0.01 - (-0.01) = 0.02, distance 0.01 -> 4 n.
    assert required_sample_size(est, 1000, 0.0) == 4000
    # Asymmetric interval: the lower half-width (0.02) faces a threshold below.
    skewed = PairedEstimate(-0.01, -0.03, 0.0, np.zeros(3), "hand")
    assert required_sample_size(skewed, 1000, -0.02) == 4000
    assert required_sample_size(skewed, 1000, 0.0) == 1000
    assert required_sample_size(est, 1000, -0.01) is None


# --------------------------------------------------------------------------------------------------
# Exact per-group p-values (no bootstrap floor)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n01", "n10"), [(0, 0), (0, 1), (3, 0), (2, 8), (8, 2), (5, 5), (1, 19), (40, 60), (3, 200)])
def test_one_sided_mcnemar_equals_scipy_binomtest(n01: int, n10: int) -> None:
    expected = 1.0 if n01 + n10 == 0 else binomtest(n10, n01 + n10, 0.5, alternative="greater").pvalue
    assert mcnemar_one_sided(n01, n10) == pytest.approx(expected, rel=1e-12, abs=1e-300)


def test_one_sided_mcnemar_hand_case_and_statsmodels_when_installed() -> None:
    # 2 wrong -> right, 8 right -> wrong: P(X >= 8), X ~ Bin(10, 1/2) = (45 + 10 + 1) / 1024.
    assert mcnemar_one_sided(2, 8) == pytest.approx(56 / 1024, rel=1e-14)
    # The two-sided exact test is twice the smaller tail (statsmodels' mcnemar(exact=True) when present).
    assert mcnemar_exact(2, 8) == pytest.approx(2 * 56 / 1024, rel=1e-14)
    contingency = pytest.importorskip("statsmodels.stats.contingency_tables")
    table = [[30, 2], [8, 60]]  # [[both right, one way], [the other way, both wrong]]: discordant 2 and 8
    assert contingency.mcnemar(table, exact=True).pvalue == pytest.approx(mcnemar_exact(2, 8), rel=1e-12)


def _trinomial_tail(n01: int, n10: int, n: int, threshold: float) -> float:
    """P((N01 - N10) / n >= threshold) by enumerating every (N01, N10) of Multinomial(n; n01/n, n10/n, rest)."""
    from math import comb

    p01, p10 = n01 / n, n10 / n
    total = 0.0
    for a in range(n + 1):
        for b in range(n + 1 - a):
            if (a - b) / n >= threshold:
                total += comb(n, a) * comb(n - a, b) * p01 ** a * p10 ** b * (1 - p01 - p10) ** (n - a - b)
    return total


@pytest.mark.parametrize(("n01", "n10", "n", "threshold"), [
    (1, 3, 10, -0.1), (0, 4, 8, -0.25), (2, 2, 6, 0.0), (0, 0, 5, -0.2), (3, 0, 5, -0.2), (5, 0, 5, 0.5),
    (2, 7, 12, -1 / 3), (0, 5, 5, -0.5), (4, 9, 30, -0.03), (1, 1, 2, -0.5)])
def test_group_p_equals_the_enumerated_bootstrap_distribution(n01: int, n10: int, n: int, threshold: float) -> None:
    assert group_delta_p_below(n01, n10, n, threshold) == pytest.approx(_trinomial_tail(n01, n10, n, threshold),
                                                                        abs=1e-12)


def test_group_p_is_the_limit_of_the_simulated_bootstrap_without_its_floor() -> None:
    """Against paired_group_deltas' own resamples (B = 40,000): the same number within Monte Carlo error where
    replicates reach the threshold; far below 1 / (1 + B) where none do."""
    rng = np.random.default_rng(5)
    n, b = 400, 40_000
    for n01, n10, threshold in ((10, 22, -0.03), (5, 9, -0.02), (12, 12, -0.01), (2, 60, -0.05)):
        correct_a = np.zeros(n, bool)
        correct_b = np.zeros(n, bool)
        correct_a[:n10], correct_b[n10:n10 + n01] = True, True  # n10: A right only; n01: B right only
        both = n - n01 - n10 - 50
        correct_a[n10 + n01:n10 + n01 + both] = correct_b[n10 + n01:n10 + n01 + both] = True
        order = rng.permutation(n)
        group = paired_group_deltas(correct_a[order], correct_b[order], np.zeros(n, int), n_resamples=b, seed=1)[0]
        assert (group.n01, group.n10) == (n01, n10)
        exact = group_delta_p_below(n01, n10, n, threshold)
        simulated = group.delta.p_beyond(threshold, "below")
        if exact > 20 / b:
            assert abs(simulated - exact) < 4 * np.sqrt(exact * (1 - exact) / b) + 1 / b
        else:
            assert simulated <= 30 / b and exact < simulated  # the simulation floors; the exact value does not


def test_group_p_rejects_impossible_counts() -> None:
    for args in ((-1, 0, 5), (3, 3, 5), (0, 0, 0), (1.5, 0, 5)):
        with pytest.raises(UserError):
            group_delta_p_below(*args, threshold=-0.1)


def test_group_p_holds_its_level_at_the_limit() -> None:
    """At the boundary (true delta exactly at the limit) the gate's per-group p-value -- the exact bootstrap
    p-value, never below one-sided McNemar -- rejects at about the nominal 2.5%, not more."""
    rng = np.random.default_rng(0)
    n, t, draws = 200, -0.05, 1500
    for p01 in (0.03, 0.1):
        counts = rng.multinomial(n, [p01, p01 - t, 1 - 2 * p01 + t], size=draws)
        rate = np.mean([max(group_delta_p_below(a, b, n, t), mcnemar_one_sided(a, b)) < 0.025 for a, b, _ in counts])
        assert rate <= 0.025 + 3 * np.sqrt(0.025 * 0.975 / draws), (p01, rate)


# --------------------------------------------------------------------------------------------------
# Exact per-group intervals and p-values (issue 20 item 4)
# --------------------------------------------------------------------------------------------------


def _cp_upper(k: int, n: int, confidence: float = 0.95) -> float:
    return float(binomtest(k, n).proportion_ci(confidence, method="exact").high)


@pytest.mark.parametrize(("c", "n"), [(0, 71), (1, 70), (2, 55), (5, 200), (0, 30), (3, 1000), (10, 100)])
def test_exact_interval_with_only_right_to_wrong_flips_is_clopper_pearsons_bound(c: int, n: int) -> None:
    """With no wrong -> right flip, delta >= -p10 and the p01 = 0 edge alone decides the lower end: it is
    Clopper-Pearson's bound on c / n (scipy's binomtest as the reference), never narrower, at most 1e-3 wider.
    1 of 70: about -0.077 (the bootstrap said -0.043); 0 of 71: -0.0506, just past a 0.05 limit."""
    lo, hi = paired_delta_interval(0, c, n)
    assert -_cp_upper(c, n) - 1e-3 <= lo <= -_cp_upper(c, n) + 1e-7
    assert lo < -c / n < hi
    # Mirror image: swapping the flip directions negates the interval.
    assert paired_delta_interval(c, 0, n) == pytest.approx((-hi, -lo), abs=1e-12)


def test_one_flip_of_70_is_not_bounded_within_5_points_although_the_bootstrap_says_so() -> None:
    correct_a = np.ones(70, bool)
    correct_a[:2] = False
    correct_b = correct_a.copy()
    correct_b[5] = False  # one right -> wrong flip
    group = paired_group_deltas(correct_a, correct_b, np.zeros(70, int), n_resamples=2000, seed=0)[0]
    bootstrap_low = float(np.quantile(group.delta.samples, 0.025))
    assert bootstrap_low == pytest.approx(-3 / 70)  # the percentile interval's lower end: -0.043
    assert group.delta.ci_low == pytest.approx(-0.077, abs=1e-3) and group.delta.ci_low < -0.05
    assert group.p_above(-0.05) > 0.025  # not shown within a 0.05 drop limit ...
    assert paired_delta_interval(0, 0, 71)[0] == pytest.approx(-(1 - 0.025 ** (1 / 71)), abs=1e-4)  # 0 of 71


def _exact_miss_probabilities(p01: float, p10: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """P(lower end > delta) and P(upper end < delta) under Multinomial(n; p01, p10, rest), summed exactly over
    every outcome (N01, N10) of probability above 1e-10 (the rest is added to both)."""
    from scipy.stats import multinomial

    delta = p01 - p10
    miss_low = miss_high = covered = 0.0
    for b in range(n + 1):
        for c in range(n + 1 - b):
            probability = float(multinomial.pmf([b, c, n - b - c], n, [p01, p10, 1.0 - p01 - p10]))
            if probability < 1e-10:
                continue
            covered += probability
            lo, hi = paired_delta_interval(b, c, n, confidence)
            miss_low += probability * (lo > delta)
            miss_high += probability * (hi < delta)
    return miss_low + (1.0 - covered), miss_high + (1.0 - covered)


@pytest.mark.parametrize(("p01", "p10", "n"), [
    (0.0, 0.0, 71),      # identical models: no discordant pair ever
    (0.0, 0.01, 70),     # tiny discordance: 0, 1 or 2 flips, all one way
    (0.0, 0.05, 70),     # a real 5-point drop seen through a handful of flips
    (0.005, 0.02, 70),   # tiny discordance both ways
    (0.165, 0.005, 70),  # the worst point of a 203 x 203 grid of (p01, p10) at n = 70 (miss 0.02499)
    (0.335, 0.54, 30),   # the worst point of the same grid at n = 30 (0.02498)
])
def test_exact_interval_covers_at_least_nominally(p01: float, p10: float, n: int) -> None:
    """Coverage computed exactly by enumerating the outcomes (a bootstrap interval misses 1 of 70 with
    probability 0.095 + 0.028 at p10 = 0.05): each end misses with probability at most (1 - 0.95) / 2."""
    miss_low, miss_high = _exact_miss_probabilities(p01, p10, n)
    assert miss_low <= 0.025 + 1e-9 and miss_high <= 0.025 + 1e-9, (miss_low, miss_high)


def test_exact_lower_end_covers_in_simulation_with_few_and_no_discordant_pairs() -> None:
    """Monte Carlo at n = 300: no discordant pair (d = 0 always), tiny d (p10 = 0.003: 0-3 flips), and a
    2-point drop; the lower end lies above the true delta in at most 2.5% of draws (+ 3 standard errors)."""
    rng = np.random.default_rng(3)
    n, draws = 300, 400
    for p01, p10 in ((0.0, 0.0), (0.0, 0.003), (0.001, 0.004), (0.01, 0.03)):
        counts = rng.multinomial(n, [p01, p10, 1 - p01 - p10], size=draws)
        misses = sum(paired_delta_interval(int(b), int(c), n)[0] > p01 - p10 for b, c, _ in counts)
        assert misses / draws <= 0.025 + 3 * np.sqrt(0.025 * 0.975 / draws), (p01, p10, misses)


def _reference_lower_limit(b_obs: int, c_obs: int, n: int, alpha: float = 0.025, grid: int = 801) -> float:
    """The definition, evaluated by brute force: order all outcomes by their asymptotic Tango limit (the score's
    restricted MLE found by numerical maximization, the limit by root-finding), then take the smallest
    p01 - p10 over a fine grid of the Berger-Boos box at which an outcome at least as favourable has
    probability above alpha - gamma (the multinomial summed over all outcomes)."""
    from scipy.optimize import brentq, minimize_scalar
    from scipy.special import gammaln, ndtri, xlogy

    from assay.stats.paired import BERGER_BOOS_GAMMA

    z = ndtri(1 - alpha)

    def score(b: int, c: int, d: float) -> float:
        def neg_loglik(p10: float) -> float:
            p01 = p10 + d
            return -(xlogy(b, p01) + xlogy(c, p10) + xlogy(n - b - c, max(1 - p01 - p10, 1e-300)))
        p10 = minimize_scalar(neg_loglik, bounds=(max(0.0, -d), (1 - d) / 2), method="bounded",
                              options={"xatol": 1e-12}).x
        variance = n * (2 * p10 + d * (1 - d))
        return (b - c - n * d) / np.sqrt(variance) if variance > 0 else 0.0

    def limit(b: int, c: int) -> float:
        if score(b, c, -1 + 1e-9) <= z:
            return -1.0
        return brentq(lambda d: score(b, c, d) - z, -1 + 1e-9, (b - c) / n, xtol=1e-10)

    outcomes = [(b, c) for b in range(n + 1) for c in range(n + 1 - b)]
    limits = np.array([limit(b, c) for b, c in outcomes])
    favourable = limits >= limits[outcomes.index((b_obs, c_obs))] - 1e-7
    bs, cs = np.array(outcomes).T
    (a0, a1), (c0, c1) = (binomtest(k, n).proportion_ci(1 - BERGER_BOOS_GAMMA / 2, method="exact")
                          for k in (b_obs, c_obs))
    p01, p10 = np.meshgrid(np.linspace(a0, a1, grid), np.linspace(c0, c1, grid), indexing="ij")
    ok = p01 + p10 <= 1
    p01, p10 = p01[ok], p10[ok]
    log_pmf = (gammaln(n + 1) - gammaln(bs + 1) - gammaln(cs + 1) - gammaln(n - bs - cs + 1))[None, :] + \
        xlogy(bs[None, :], p01[:, None]) + xlogy(cs[None, :], p10[:, None]) + \
        xlogy((n - bs - cs)[None, :], np.maximum(1 - p01 - p10, 0)[:, None])
    probability = np.exp(log_pmf)[:, favourable].sum(axis=1)
    return float(np.min((p01 - p10)[probability > alpha - BERGER_BOOS_GAMMA]))


@pytest.mark.parametrize(("b", "c", "n"), [(0, 1, 12), (1, 3, 12), (4, 1, 12), (0, 0, 10)])
def test_lower_limit_matches_a_brute_force_evaluation_of_its_definition(b: int, c: int, n: int) -> None:
    reference = _reference_lower_limit(b, c, n)
    lo, _ = paired_delta_interval(b, c, n)
    assert lo <= reference + 1e-6  # never narrower than the definition ...
    assert lo == pytest.approx(reference, abs=1e-3)  # ... and as tight, up to the reference's grid


def test_score_ordering_is_monotone_on_full_grids() -> None:
    """The exactness argument needs Tango's score to rise with N01, fall with N10 and fall with delta."""
    from assay.stats.paired import _score

    for n in (30, 200):
        b, c = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
        valid = b + c <= n
        previous = None
        for delta in np.linspace(-0.99, 0.99, 67):
            score = np.where(valid, _score(b, c, n, float(delta)), np.nan)
            assert np.nansum(np.diff(score, axis=0) < -1e-12) == 0 and np.nansum(np.diff(score, axis=1) > 1e-12) == 0
            if previous is not None:
                assert np.nansum(score > previous + 1e-12) == 0
            previous = score


@pytest.mark.parametrize(("b", "c", "n"), [(0, 19, 186), (3, 12, 150), (40, 60, 1000), (0, 1, 70)])
def test_p_values_agree_with_the_interval_they_invert(b: int, c: int, n: int) -> None:
    lo, hi = paired_delta_interval(b, c, n)
    assert paired_delta_p_below(b, c, n, hi + 1e-4) <= 0.025 < paired_delta_p_below(b, c, n, hi - 1e-4)
    assert paired_delta_p_above(b, c, n, lo - 1e-4) <= 0.025 < paired_delta_p_above(b, c, n, lo + 1e-4)


def test_exact_p_below_holds_its_level_at_the_limit() -> None:
    """At the boundary (true delta exactly at the limit -0.05) the exact p-value rejects at most 2.5%."""
    rng = np.random.default_rng(0)
    n, t, draws = 200, -0.05, 1000
    for p01 in (0.0, 0.03, 0.1):
        counts = rng.multinomial(n, [p01, p01 - t, 1 - 2 * p01 + t], size=draws)
        rate = np.mean([paired_delta_p_below(int(a), int(b), n, t) < 0.025 for a, b, _ in counts])
        assert rate <= 0.025 + 3 * np.sqrt(0.025 * 0.975 / draws), (p01, rate)

