"""Coverage of the intervals of maxima of absolute differences (demographic parity, equalized odds, the
worst-slice gap), by simulation against known truth, and the issue-20 case where the bias-corrected (BC)
percentile interval collapsed below the estimate.

The vectorized simulations treat each simulated dataset as one row of ``rate_spread_intervals`` (each row
gets its own critical values), so hundreds of datasets with B resamples each cost one call. A larger
simulation (end to end through ``fairness_metrics``, all four metrics, old vs new) is
``bench/bench_fairness_coverage.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.checks.fairness_metrics import fairness_metrics
from assay.checks.slice_metrics import worst_slice_gap
from assay.stats.bootstrap import bias_corrected_ci, max_abs_ci, rate_spread_intervals

UNEQUAL_4 = np.array([0.35, 0.30, 0.20, 0.15])  # four groups; the two small ones are shifted (ties at both ends)


def _group_probs(n_groups: int, classes: int, d: float) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(group sizes, per-group prediction probabilities (G, K), reported classes) with a true
    demographic-parity difference (largest over reported classes) of exactly ``d``."""
    sizes, shifted = {2: (np.array([0.6, 0.4]), [1]), 3: (np.array([0.4, 0.35, 0.25]), [2]),
                      4: (UNEQUAL_4, [2, 3])}[n_groups]
    if classes == 2:
        base, target, reported = np.array([0.55, 0.45]), 1, [1]
    else:
        base, target, reported = np.full(classes, 1.0 / classes), 0, list(range(classes))
    lam = d / (1.0 - base[target])  # moving a share lam of the mass to `target` raises its rate by d
    moved = (1 - lam) * base + lam * np.eye(classes)[target]
    probs = np.stack([moved if g in shifted else base for g in range(n_groups)])
    return sizes, probs, reported


def _simulate(sizes: np.ndarray, probs: np.ndarray, reported: list[int], n: int, *, datasets: int,
              n_bootstrap: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Selection rates (R, K', G), their row-resampled replicates (B, R, K', G) and group sizes (R, K', G)
    for ``datasets`` datasets of n rows drawn from the (group, predicted class) table."""
    rng = np.random.default_rng(seed)
    n_groups, classes = probs.shape
    cells = (sizes[:, None] * probs).ravel()
    counts = rng.multinomial(n, cells, size=datasets)                          # (R, G*K)
    resampled = rng.multinomial(n, counts / n, size=(n_bootstrap, datasets))    # (B, R, G*K), exact row bootstrap

    def rates(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        table = table.reshape(*table.shape[:-1], n_groups, classes)
        size = table.sum(axis=-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(size > 0, table / size, np.nan)
        return np.swapaxes(rate[..., reported], -1, -2), np.swapaxes(
            np.broadcast_to(size, rate.shape)[..., reported], -1, -2)

    rate, size = rates(counts)
    return rate, rates(resampled)[0], size


def _true_values(probs: np.ndarray, reported: list[int]) -> tuple[float, float]:
    """True demographic-parity difference and ratio (worst reported class)."""
    sel = probs[:, reported]
    return float((sel.max(0) - sel.min(0)).max()), float((sel.min(0) / sel.max(0)).min())


SETTINGS = ([(2, g, d, n) for g in (2, 4) for d in (0.0, 0.02, 0.075, 0.15, 0.4) for n in (300, 3000)]
            + [(3, g, d, 1000) for g in (2, 4) for d in (0.0, 0.075)]
            + [(10, 3, 0.0, 900)])


def test_spread_interval_covers_at_least_93_percent_everywhere() -> None:
    """Nominal 95 %: >= 93 % coverage of the true DP difference and ratio in every setting (binary, 3- and
    10-class one-vs-rest worst class; 2 and 4 groups of unequal size; true values 0 to 0.4; n 300 to 3000)."""
    datasets, n_bootstrap = 400, 250
    report = []
    for i, (classes, n_groups, d, n) in enumerate(SETTINGS):
        sizes, probs, reported = _group_probs(n_groups, classes, d)
        true_diff, true_ratio = _true_values(probs, reported)
        assert true_diff == pytest.approx(d)
        rate, replicates, size = _simulate(sizes, probs, reported, n, datasets=datasets, n_bootstrap=n_bootstrap,
                                           seed=i)
        diff = rate_spread_intervals(rate, replicates, size)
        log = rate_spread_intervals(rate, replicates, size, log=True)
        covered_diff = np.mean((diff.low <= true_diff + 1e-12) & (true_diff - 1e-12 <= diff.high))
        ratio_low, ratio_high = np.exp(-log.high), np.exp(-log.low)
        covered_ratio = np.mean((ratio_low <= true_ratio + 1e-12) & (true_ratio - 1e-12 <= ratio_high))
        report.append((classes, n_groups, d, n, covered_diff, covered_ratio))
    failing = [r for r in report if min(r[4], r[5]) < 0.93]
    assert not failing, f"(classes, groups, true DP, n, coverage diff, coverage ratio): {failing}"


def test_old_bc_interval_misses_a_zero_gap_and_the_new_one_does_not() -> None:
    """The simulation can fail: the BC interval of the resampled maximum (the code before issue 20) never
    covers a true difference of 0 (its lower end is min(estimate, a replicate) > 0); the union covers."""
    sizes, probs, reported = _group_probs(4, 2, 0.0)
    rate, replicates, size = _simulate(sizes, probs, reported, 1000, datasets=150, n_bootstrap=200, seed=99)
    spread = np.nanmax(rate, axis=-1) - np.nanmin(rate, axis=-1)                 # (R, 1)
    spread_b = np.nanmax(replicates, axis=-1) - np.nanmin(replicates, axis=-1)   # (B, R, 1)
    old = np.array([bias_corrected_ci(spread_b[:, r, 0], float(spread[r, 0])) for r in range(len(spread))])
    new = rate_spread_intervals(rate, replicates, size)
    assert np.mean(old[:, 0] <= 0.0) < 0.05
    assert np.mean(new.low <= 0.0) >= 0.93


def test_issue_case_bc_collapses_and_the_new_interval_covers() -> None:
    """Issue 20's failure: a worst-class DP difference near 0.075 with about 95 % of resamples above it and
    BC giving an interval that ends below 0.08, though the truth is 0 (predictions independent of the group:
    10 classes, 3 groups, n = 900). Resamples here are drawn independently of Assay (row indices)."""
    rng = np.random.default_rng(225)
    n, classes = 900, 10
    group, y = rng.integers(0, 3, n), rng.integers(0, classes, n)
    pred = np.where(rng.random(n) < 0.9, y, rng.integers(0, classes, n))

    def worst_dp(rows: np.ndarray) -> np.ndarray:
        """Worst-class DP difference of each resample (rows: (B, n) indices)."""
        g, p = group[rows], pred[rows]
        counts = np.zeros((rows.shape[0], 3, classes))
        np.add.at(counts, (np.arange(rows.shape[0])[:, None], g, p), 1.0)
        rate = counts / counts.sum(axis=2, keepdims=True)
        return (rate.max(axis=1) - rate.min(axis=1)).max(axis=1)

    estimate = float(worst_dp(np.arange(n)[None, :])[0])
    replicates = worst_dp(np.random.default_rng(1).integers(0, n, size=(1000, n)))
    assert 0.07 < estimate < 0.08 and np.mean(replicates > estimate) >= 0.9
    old_low, old_high = bias_corrected_ci(replicates, estimate)
    assert old_low > 0.0 and old_high < 0.085  # excludes the truth, "safely" under the 0.10 warning line

    dp = fairness_metrics(y, pred, group, num_classes=classes).summary["demographic_parity_difference"]
    assert dp.value == pytest.approx(estimate)
    assert dp.ci_low == 0.0 and dp.ci_high > 0.10


def test_fairness_metrics_end_to_end_coverage_of_all_four_metrics() -> None:
    """Through ``fairness_metrics`` (its pairing of groups, TPR/FPR pooling, ratio mapping): four groups,
    ties at both ends, binary, true DP 0.075; each metric's 95 % interval covers in >= 93 % of 120 datasets."""
    pi, tpr0, fpr0, d = 0.5, 0.7, 0.2, 0.075
    lam = d / (1 - (pi * tpr0 + (1 - pi) * fpr0))
    tpr = np.array([tpr0, tpr0, tpr0 + lam * (1 - tpr0), tpr0 + lam * (1 - tpr0)])
    fpr = np.array([fpr0, fpr0, fpr0 + lam * (1 - fpr0), fpr0 + lam * (1 - fpr0)])
    sel = pi * tpr + (1 - pi) * fpr
    truth = {"demographic_parity_difference": d, "demographic_parity_ratio": sel.min() / sel.max(),
             "equalized_odds_difference": max(np.ptp(tpr), np.ptp(fpr)), "equal_opportunity_difference": np.ptp(tpr)}
    assert np.ptp(sel) == pytest.approx(d)
    covered = dict.fromkeys(truth, 0)
    runs = 120
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        group = rng.choice(4, size=1000, p=UNEQUAL_4)
        y = (rng.random(1000) < pi).astype(int)
        pred = (rng.random(1000) < np.where(y == 1, tpr[group], fpr[group])).astype(int)
        summary = fairness_metrics(y, pred, group, seed=seed, n_bootstrap=250).summary
        for name, value in truth.items():
            covered[name] += summary[name].ci_low - 1e-12 <= value <= summary[name].ci_high + 1e-12
    assert all(c / runs >= 0.93 for c in covered.values()), covered


def test_worst_slice_gap_covers_a_zero_gap() -> None:
    """Four equally accurate slices (true gap 0): the old BC interval never covered 0; the union does."""
    covered = 0
    for seed in range(150):
        rng = np.random.default_rng(seed)
        groups = rng.choice(4, size=800, p=UNEQUAL_4)
        correct = rng.random(800) < 0.85
        gap = worst_slice_gap(correct, groups, seed=seed, n_bootstrap=300)
        assert gap.ci_low <= gap.value <= gap.ci_high
        covered += gap.ci_low == 0.0
    assert covered / 150 >= 0.93


def test_two_groups_equal_the_wald_interval_of_the_difference() -> None:
    """One difference (two groups): the interval is the folded Wald interval |d| -+ z * SE (independent
    reference: the binomial SE sqrt(p1 q1 / n1 + p2 q2 / n2) and scipy's normal quantile), up to bootstrap noise."""
    from scipy.stats import norm

    rng = np.random.default_rng(4)
    n1, n2 = 3000, 2000
    group = np.r_[np.zeros(n1, int), np.ones(n2, int)]
    pred = (rng.random(n1 + n2) < np.where(group == 0, 0.30, 0.38)).astype(int)
    y = rng.integers(0, 2, n1 + n2)
    p1, p2 = pred[group == 0].mean(), pred[group == 1].mean()
    se = np.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    z = norm.ppf(0.975)
    dp = fairness_metrics(y, pred, group, seed=0, n_bootstrap=4000).summary["demographic_parity_difference"]
    assert dp.value == pytest.approx(abs(p2 - p1))
    assert dp.ci_low == pytest.approx(abs(p2 - p1) - z * se, abs=0.1 * se)
    assert dp.ci_high == pytest.approx(abs(p2 - p1) + z * se, abs=0.1 * se)


def test_max_abs_ci_union_by_hand() -> None:
    """Three statistics with known replicates: the union of est_j -+ c s_j, c from the max |t| quantile."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((20000, 3))
    estimates, scales = np.array([0.05, -0.12, 0.0]), np.array([0.01, 0.02, 0.03])
    lo, hi = max_abs_ci(estimates, estimates + z * scales)
    t = np.abs(z).max(axis=1)
    joint, lower = np.quantile(t, [0.95, 0.975])
    c_low, c_high = (lower, 1.959964) if lower + 1.959964 < 2 * joint else (joint, joint)
    assert c_high == pytest.approx(1.959964)  # three statistics: the split choice (see _critical)
    assert lo == pytest.approx(max(0.0, 0.12 - c_low * 0.02, 0.05 - c_low * 0.01), rel=0.02)
    assert hi == pytest.approx(max(0.12 + c_high * 0.02, 0.0 + c_high * 0.03), rel=0.02)
    assert all(np.isnan(max_abs_ci(np.array([np.nan]), np.full((10, 1), np.nan))))


def test_degenerate_rates_are_not_certain() -> None:
    """Both groups at a rate of 0: every replicate is 0, yet the interval is not [0, 0] (plus-one SE floor)."""
    rate = np.zeros((1, 2))
    spread = rate_spread_intervals(rate, np.zeros((200, 1, 2)), np.array([[40, 60]]))
    assert spread.low[0] == 0.0 and 0.02 < spread.high[0] < 0.2


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), min_size=2, max_size=5), st.integers(0, 2**16))
def test_interval_holds_the_estimate_and_stays_in_range(table: list[tuple[int, int]], seed: int) -> None:
    """Any (group x selected/not) table: 0 <= low <= spread <= high (and the ratio's interval within [0, 1]
    around the ratio), whatever the zero or full rates and empty groups."""
    from assay.stats.bootstrap import bootstrap_cell_counts

    counts = np.array(table)
    if counts.sum() == 0:
        return
    n = counts.sum(axis=1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(n > 0, counts[:, 1] / n, np.nan)
        resampled = bootstrap_cell_counts(counts, 200, seed).astype(float)
        rate_b = np.where(resampled.sum(axis=2) > 0, resampled[:, :, 1] / resampled.sum(axis=2), np.nan)
    if np.isfinite(rate).sum() < 2:
        return
    spread = np.nanmax(rate) - np.nanmin(rate)
    out = rate_spread_intervals(rate[None], rate_b[:, None], n[None])
    assert 0.0 <= out.worst_low <= spread + 1e-12 and spread - 1e-12 <= out.worst_high
    assert out.low[0] == out.worst_low and out.high[0] == out.worst_high  # one row: the worst is that row
    y = np.repeat(np.array([0, 1] * len(table)), counts.ravel())
    group = np.repeat(np.repeat(np.arange(len(table)), 2), counts.ravel())
    dpr = fairness_metrics(y, y, group, seed=seed, n_bootstrap=200, num_classes=2).summary["demographic_parity_ratio"]
    if np.isfinite(dpr.value):
        assert 0.0 <= dpr.ci_low <= dpr.value <= dpr.ci_high <= 1.0


def test_the_fairness_section_states_the_method_and_reports_these_intervals() -> None:
    import pandas as pd

    from assay.api import run_evaluation
    from assay.checks.base import EvaluateConfig
    from assay.checks.fairness_metrics import INTERVAL_METHOD
    from assay.stats.bootstrap import spawn_seed
    from conftest import make_blobs_dataset

    ds, model = make_blobs_dataset(n=600, noise=2.0, seed=0)
    ds.meta = pd.DataFrame({"region": np.random.default_rng(0).choice(["north", "south", "east"], size=600)})
    section = run_evaluation(model, ds, config=EvaluateConfig(sensitive=["region"], n_bootstrap=200),
                             cache_dir=None).evidence.sections["fairness"]
    pred = (ds.x @ model.weight + model.bias).argmax(1)
    expected = fairness_metrics(ds.y, pred, ds.meta["region"].to_numpy(), seed=spawn_seed(0, "fairness/region"),
                                n_bootstrap=200, num_classes=model.weight.shape[1])
    for name, est in expected.summary.items():
        metric = section.metrics[f"{name}[region]"]
        assert metric.method.startswith(INTERVAL_METHOD) and "BC" not in metric.method
        assert (metric.value, metric.ci_low, metric.ci_high) == pytest.approx((est.value, est.ci_low, est.ci_high))
