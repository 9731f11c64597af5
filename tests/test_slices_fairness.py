"""Multiple-testing corrections, slice analysis and fairness metrics against independent references
(scipy's BH, hand-computed Holm, fairlearn) and simulated data with known truth."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import false_discovery_control

from assay.checks.fairness_metrics import SUMMARY_METRICS, fairness_metrics
from assay.checks.slice_metrics import bin_numeric, slice_table, worst_slice_gap
from assay.errors import UserError
from assay.stats.multiple_testing import benjamini_hochberg, holm

# ---------------------------------------------------------------- multiple testing


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40))
def test_bh_adjusted_matches_scipy(p: list[float]) -> None:
    _, adjusted = benjamini_hochberg(p)
    np.testing.assert_allclose(adjusted, false_discovery_control(p), rtol=1e-12, atol=1e-15)


def test_bh_and_holm_hand_cases() -> None:
    p = [0.01, 0.04, 0.03, 0.20]
    # BH: sorted .01 .03 .04 .20 -> 4p/rank = .04 .06 .0533 .20 -> step-up min = .04 .0533 .0533 .20
    reject, adjusted = benjamini_hochberg(p, 0.05)
    np.testing.assert_allclose(adjusted, [0.04, 0.16 / 3, 0.16 / 3, 0.20])
    assert reject.tolist() == [True, False, False, False]
    # Holm: (4,3,2,1) x sorted = .04 .09 .08 .20 -> running max = .04 .09 .09 .20
    reject, adjusted = holm(p, 0.05)
    np.testing.assert_allclose(adjusted, [0.04, 0.09, 0.09, 0.20])
    assert reject.tolist() == [True, False, False, False]


def test_nan_pvalues_are_untested_and_leave_family_size() -> None:
    reject, adjusted = benjamini_hochberg([0.02, np.nan, 0.04])
    np.testing.assert_allclose(adjusted, [0.04, np.nan, 0.04])
    assert reject.tolist() == [True, False, True]
    reject, adjusted = holm([0.02, np.nan, 0.04])
    np.testing.assert_allclose(adjusted, [0.04, np.nan, 0.04])


def test_vectorized_rows_equal_row_by_row() -> None:
    p = np.random.default_rng(0).uniform(size=(50, 7)) ** 2
    for fn in (benjamini_hochberg, holm):
        reject, adjusted = fn(p)
        for row in range(len(p)):
            r1, a1 = fn(p[row])
            np.testing.assert_array_equal(reject[row], r1)
            np.testing.assert_allclose(adjusted[row], a1)


def test_invalid_pvalues_rejected() -> None:
    with pytest.raises(ValueError):
        benjamini_hochberg([0.5, 1.5])


# ---------------------------------------------------------------- slices


def test_slice_fdr_control_on_null_data() -> None:
    """Same accuracy in every slice: the fraction of runs flagging any slice stays <= 5 %."""
    runs, n, flagged_runs = 300, 400, 0
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        groups = rng.integers(0, 6, n)
        correct = rng.random(n) < 0.8
        flagged_runs += any(row.flagged for row in slice_table(correct, groups))
    # Under the global null, FDR = P(any rejection); flagging also needs underperformance (one side).
    assert flagged_runs / runs <= 0.05


def test_slice_power_on_planted_bad_slice() -> None:
    hits = 0
    for seed in range(20):
        rng = np.random.default_rng(1000 + seed)
        groups = rng.integers(0, 5, 2000)
        correct = rng.random(2000) < np.where(groups == 3, 0.70, 0.85)
        rows = {r.slice: r for r in slice_table(correct, groups)}
        hits += rows["3"].flagged
        assert not any(r.flagged for name, r in rows.items() if name != "3" and r.accuracy > 0.85)
    assert hits >= 18


def test_slice_row_values_against_hand_counts() -> None:
    # slice a: 40 samples, 20 correct; slice b: 60 samples, 57 correct.
    correct = np.r_[np.ones(20), np.zeros(20), np.ones(57), np.zeros(3)].astype(bool)
    groups = np.array(["a"] * 40 + ["b"] * 60)
    rows = {r.slice: r for r in slice_table(correct, groups, min_size=30)}
    from scipy.stats import binomtest, fisher_exact
    assert rows["a"].n == 40 and rows["a"].accuracy == 0.5 and rows["a"].rest_accuracy == 57 / 60
    ci = binomtest(20, 40).proportion_ci(0.95, method="exact")
    assert rows["a"].ci_low == pytest.approx(ci.low) and rows["a"].ci_high == pytest.approx(ci.high)
    p = fisher_exact([[20, 20], [57, 3]])[1]
    assert rows["a"].p_value == pytest.approx(p) and rows["b"].p_value == pytest.approx(p)
    assert rows["a"].flagged and not rows["b"].flagged  # both rejected, only a underperforms


def test_min_size_marks_insufficient_and_shrinks_family() -> None:
    # A tiny slice with 0 % accuracy is reported as insufficient, never tested or flagged.
    rng = np.random.default_rng(3)
    groups = np.r_[np.repeat(["big1", "big2"], 200), np.repeat("tiny", 10)]
    correct = np.r_[rng.random(400) < 0.9, np.zeros(10, dtype=bool)]
    rows = {r.slice: r for r in slice_table(correct, groups, min_size=30)}
    tiny = rows["tiny"]
    assert tiny.insufficient and not tiny.flagged and np.isnan(tiny.p_value) and np.isnan(tiny.p_adjusted)
    assert tiny.accuracy == 0.0 and tiny.ci_low == 0.0 and tiny.ci_high > 0.2  # exact CI, not collapsed
    # BH family is the two big slices only: adjusted = min(2 p_(i)/i) step-up.
    p = np.array([rows["big1"].p_value, rows["big2"].p_value])
    np.testing.assert_allclose([rows["big1"].p_adjusted, rows["big2"].p_adjusted],
                               false_discovery_control(p))
    with pytest.raises(UserError, match="two slices"):
        worst_slice_gap(correct, groups, min_size=201)


def test_worst_slice_gap_value_and_interval() -> None:
    rng = np.random.default_rng(5)
    groups = rng.integers(0, 4, 4000)
    correct = rng.random(4000) < np.array([0.9, 0.85, 0.8, 0.6])[groups]
    gap = worst_slice_gap(correct, groups, seed=1, n_bootstrap=500)
    acc = np.array([correct[groups == k].mean() for k in range(4)])
    assert gap.value == pytest.approx(acc.max() - acc.min())
    assert (gap.best_slice, gap.worst_slice) == (str(acc.argmax()), str(acc.argmin()))
    assert gap.ci_low < gap.value < gap.ci_high
    assert worst_slice_gap(correct, groups, seed=1, n_bootstrap=500) == gap  # reproducible


def test_worst_slice_gap_interval_coverage() -> None:
    """Over 100 simulated datasets the 95 % interval covers the true gap (0.3) about 95 % of the time."""
    covered = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        groups = rng.integers(0, 4, 2000)
        correct = rng.random(2000) < np.array([0.9, 0.85, 0.8, 0.6])[groups]
        gap = worst_slice_gap(correct, groups, seed=seed, n_bootstrap=300)
        covered += gap.ci_low <= 0.3 <= gap.ci_high
    assert 85 <= covered <= 100


def test_bin_numeric_quantiles() -> None:
    values = np.arange(100, dtype=float)
    labels = bin_numeric(values, q=4)
    names, counts = np.unique(labels, return_counts=True)
    assert counts.tolist() == [25, 25, 25, 25]
    assert labels[0].startswith("Q1") and labels[99].startswith("Q4") and labels[99].endswith("]")
    assert bin_numeric(np.array([1.0, np.nan]))[1] == "missing"


def test_slice_shape_mismatch_is_user_error() -> None:
    with pytest.raises(UserError, match="shape"):
        slice_table(np.ones(5, bool), np.zeros(4))


# ---------------------------------------------------------------- fairness


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_fairness_equals_fairlearn(seed: int) -> None:
    import fairlearn.metrics as fm

    rng = np.random.default_rng(seed)
    n = 600
    sensitive = rng.choice(["a", "b", "c"], n)
    y_true = rng.integers(0, 2, n)
    y_pred = np.where(rng.random(n) < 0.7, y_true, 1 - y_true)
    y_pred[sensitive == "c"] = rng.integers(0, 2, (sensitive == "c").sum())
    res = fairness_metrics(y_true, y_pred, sensitive, seed=0, n_bootstrap=200)
    for name in SUMMARY_METRICS:
        expected = getattr(fm, name)(y_true, y_pred, sensitive_features=sensitive)
        assert res.summary[name].value == pytest.approx(expected, abs=1e-12), name
        assert res.summary[name].ci_low <= res.summary[name].ci_high
    frame = fm.MetricFrame(metrics={"sel": fm.selection_rate, "n": fm.count},
                           y_true=y_true, y_pred=y_pred, sensitive_features=sensitive)
    for group in ["a", "b", "c"]:
        row = res.per_group[group]
        assert row["n"] == frame.by_group.loc[group, "n"]
        assert row["selection_rate[1]"].value == pytest.approx(frame.by_group.loc[group, "sel"])
        mask = sensitive == group
        assert row["error_rate"].value == pytest.approx(np.mean(y_true[mask] != y_pred[mask]))


def test_multiclass_one_vs_rest_equals_fairlearn_per_class_and_worst() -> None:
    import fairlearn.metrics as fm

    rng = np.random.default_rng(7)
    n = 900
    sensitive = rng.choice([0, 1], n)
    y_true = rng.integers(0, 3, n)
    y_pred = np.where(rng.random(n) < 0.6 + 0.2 * sensitive, y_true, rng.integers(0, 3, n))
    res = fairness_metrics(y_true, y_pred, sensitive, n_bootstrap=200)
    assert not res.binary and res.classes == ["0", "1", "2"]
    for name in SUMMARY_METRICS:
        per_class = [getattr(fm, name)(y_true == c, y_pred == c, sensitive_features=sensitive)
                     for c in range(3)]
        for c in range(3):
            assert res.per_class[str(c)][name].value == pytest.approx(per_class[c], abs=1e-12)
        worst = min(per_class) if name.endswith("ratio") else max(per_class)
        assert res.summary[name].value == pytest.approx(worst, abs=1e-12)


def test_fairness_interval_covers_planted_gap() -> None:
    rng = np.random.default_rng(11)
    n = 4000
    sensitive = rng.choice(["x", "y"], n)
    y_true = rng.integers(0, 2, n)
    y_pred = (rng.random(n) < np.where(sensitive == "x", 0.3, 0.5)).astype(int)
    res = fairness_metrics(y_true, y_pred, sensitive, seed=3, n_bootstrap=500)
    dp = res.summary["demographic_parity_difference"]
    assert dp.ci_low < 0.2 < dp.ci_high and dp.ci_high - dp.ci_low < 0.1


def test_single_group_is_user_error() -> None:
    with pytest.raises(UserError, match="single group") as info:
        fairness_metrics(np.array([0, 1, 1]), np.array([0, 1, 0]), np.array(["a", "a", "a"]))
    assert info.value.fix and "two or more" in info.value.fix


def test_model_class_count_decides_multiclass_even_when_two_classes_occur() -> None:
    import fairlearn.metrics as fm

    rng = np.random.default_rng(3)
    n = 600
    sensitive = rng.choice(["a", "b"], n)
    y_true = rng.integers(0, 2, n)
    y_pred = np.where(rng.random(n) < 0.8, y_true, 1 - y_true)
    inferred = fairness_metrics(y_true, y_pred, sensitive, n_bootstrap=100)
    declared = fairness_metrics(y_true, y_pred, sensitive, n_bootstrap=100, num_classes=3)
    assert inferred.binary and not declared.binary
    # Class 2 never occurs: its one-vs-rest rates are 0 in every group, so the worst class is one of 0 and 1.
    for name in ("demographic_parity_difference", "equalized_odds_difference"):
        per_class = [getattr(fm, name)(y_true == c, y_pred == c, sensitive_features=sensitive) for c in (0, 1)]
        assert declared.summary[name].value == pytest.approx(max(per_class), abs=1e-12)
