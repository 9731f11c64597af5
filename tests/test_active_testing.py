"""Label-efficient accuracy estimation (issue 19, assay.stats.active_testing): hand-computed Hansen–Hurwitz
cases, the uniform design reducing to the plain mean, unbiasedness (exactly, by enumerating one draw, and over
many seeds), properties of the proposal, intervals against statsmodels/scipy references, and the coverage of
nominal 95% intervals by simulation (the issue's acceptance line: >= 93% over many seeds at 200 labels)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest
from statsmodels.stats.proportion import proportion_confint

from assay.errors import DataError, OptionError
from assay.stats.active_testing import (
    DEFENSIVE_SHARE,
    accuracy_estimate,
    centres,
    class_accuracy_estimates,
    draw,
    estimate_from_labels,
    expected_error,
    korn_graubard_interval,
    proposal,
    select_items,
    uniform_interval,
    uniform_width,
)

# ------------------------------------------------------------------------------------------- hand-computed


def test_hansen_hurwitz_by_hand():
    q = np.array([0.1, 0.2, 0.3, 0.4])
    # item 0 drawn once (right), item 2 drawn twice (wrong); centre 0: z = c / (N q)
    est = accuracy_estimate(np.array([1, 0]), q[[0, 2]], 4, counts=np.array([1, 2]))
    z = np.array([1 / (4 * 0.1), 0.0, 0.0])
    assert est.unclipped == pytest.approx(z.mean())  # 2.5 / 3
    assert est.std_error == pytest.approx(np.sqrt(z.var(ddof=1) / 3))
    assert est.value == 0.8333333333333334 and est.draws == 3 and est.labels == 2
    # centre 0.5: z = 0.5 + (c - 0.5) / (N q) = 1.75 and 0.5 - 0.5 / 1.2
    est = accuracy_estimate(np.array([1, 0]), q[[0, 2]], 4, counts=np.array([1, 2]), centre=0.5)
    assert est.unclipped == pytest.approx((1.75 + 2 * (0.5 - 0.5 / 1.2)) / 3)
    # per-item centres (difference estimator): z = T + (c - a) / (N q), T the pool mean of the centres
    a = np.array([0.9, 0.8, 0.4, 0.7])
    est = accuracy_estimate(np.array([1, 0]), q[[0, 2]], 4, counts=np.array([1, 2]), centre=a[[0, 2]],
                            centre_mean=a.mean())
    z = np.array([a.mean() + 0.1 / 0.4, a.mean() - 0.4 / 1.2, a.mean() - 0.4 / 1.2])
    assert est.unclipped == pytest.approx(z.mean()) and "difference" in est.method


def test_proposal_by_hand():
    e = np.array([0.0, 0.5, 0.1, 0.2])
    r = e.mean()
    star = np.sqrt(e * (1 - r) ** 2 + (1 - e) * r**2)
    np.testing.assert_allclose(proposal(e), 0.9 * star / star.sum() + 0.1 / 4)
    np.testing.assert_allclose(proposal(e, rule="expected-loss"), 0.9 * e / e.sum() + 0.1 / 4)
    s = np.sqrt(e * (1 - e))
    np.testing.assert_allclose(proposal(e, rule="difference", defensive=0.5), 0.5 * s / s.sum() + 0.5 / 4)
    np.testing.assert_allclose(proposal(e, rule="uniform"), np.full(4, 0.25))
    np.testing.assert_allclose(proposal(np.zeros(3), rule="expected-loss"), np.full(3, 1 / 3))  # nothing to favour
    np.testing.assert_allclose(expected_error(np.array([[0.7, 0.3], [0.2, 0.8]])), [0.3, 0.2])
    # a surrogate's probabilities: the chance that the model's predicted class (0 and 0 here) is wrong
    np.testing.assert_allclose(expected_error(np.array([[0.7, 0.3], [0.2, 0.8]]), np.array([0, 0])), [0.3, 0.8])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=2, max_size=40), st.floats(0, 1), st.integers(0, 2**31 - 1))
def test_uniform_design_gives_the_plain_mean(correct, centre, seed):
    c = np.asarray(correct, float)
    n = len(c)
    q = proposal(np.random.default_rng(seed).random(n), rule="uniform")
    d = draw(q, 3 * n, seed)
    est = accuracy_estimate(c[d.items], q[d.items], n, counts=d.counts, centre=centre)
    plain = float(np.mean(c[d.sequence]))  # the mean over draws, duplicates counted
    assert est.unclipped == pytest.approx(plain)
    assert 0.0 <= est.ci_low <= est.value <= est.ci_high <= 1.0


@pytest.mark.parametrize("rule", ["sawade", "difference", "expected-loss"])
def test_one_draw_is_exactly_unbiased(rule):
    """E[z] = sum_i q_i z_i equals the pool accuracy exactly, whatever the surrogate says."""
    rng = np.random.default_rng(1)
    n = 50
    e = rng.beta(1, 4, n)
    c = (rng.random(n) > 0.3).astype(float)  # unrelated to e: a useless surrogate changes nothing in expectation
    q = proposal(e, rule=rule)
    a = centres(e, rule)
    z = np.array([estimate_from_labels(q, a, np.array([i]), np.array([1]), c[[i]]).unclipped for i in range(n)])
    assert float(q @ z) == pytest.approx(c.mean(), abs=1e-12)


def test_unbiased_over_many_seeds():
    rng = np.random.default_rng(2)
    n = 400
    e = np.where(rng.random(n) < 0.8, rng.beta(1, 30, n), rng.beta(2, 2, n))
    c = (rng.random(n) >= e).astype(float)
    values = []
    for seed in range(3000):
        s = select_items(e, 40, seed=seed)
        values.append(estimate_from_labels(s.q, s.centre, s.draws.items, s.draws.counts, c[s.draws.items]).unclipped)
    values = np.asarray(values)
    assert abs(values.mean() - c.mean()) < 4 * values.std() / np.sqrt(len(values))


# ------------------------------------------------------------------------------------------- properties


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=60), st.sampled_from(["sawade", "difference", "expected-loss"]),
       st.floats(0.01, 1.0))
def test_proposal_is_a_distribution_with_bounded_weights(errors, rule, defensive):
    e = np.asarray(errors)
    q = proposal(e, rule=rule, defensive=defensive)
    assert (q > 0).all() and q.sum() == pytest.approx(1.0)
    assert (1.0 / (len(e) * q) <= 1.0 / defensive + 1e-9).all()  # the defensive mixture bounds every weight


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(2, 30))
def test_estimates_and_intervals_lie_in_the_unit_interval(seed, m):
    rng = np.random.default_rng(seed)
    n = 60
    e = rng.random(n) * 0.6
    c = (rng.random(n) >= rng.random(n)).astype(float)
    y = rng.integers(0, 3, n)
    for rule in ("sawade", "difference"):
        s = select_items(e, m, rule=rule, seed=seed)
        est = estimate_from_labels(s.q, s.centre, s.draws.items, s.draws.counts, c[s.draws.items])
        assert 0.0 <= est.ci_low <= est.value <= est.ci_high <= 1.0
        for k in class_accuracy_estimates(c[s.draws.items], y[s.draws.items], s.q[s.draws.items], 3,
                                          counts=s.draws.counts):
            if k.value is not None:  # a ratio of nonnegative totals with the numerator's terms in the denominator's
                assert 0.0 <= k.ci_low <= k.value <= k.ci_high <= 1.0


def test_bad_inputs_are_user_errors():
    with pytest.raises(DataError):
        proposal(np.array([0.2, 1.5]))
    with pytest.raises(OptionError):
        proposal(np.array([0.2]), rule="greedy")
    with pytest.raises(OptionError):
        proposal(np.array([0.2]), defensive=0.0)
    with pytest.raises(OptionError):
        draw(np.array([0.5, 0.5]), 0)
    with pytest.raises(DataError):
        accuracy_estimate(np.array([1, 2]), np.array([0.5, 0.5]), 2)
    with pytest.raises(DataError):
        accuracy_estimate(np.array([1, 0]), np.array([0.5, 0.5]), 1)
    with pytest.raises(DataError):
        expected_error(np.array([0.2, 0.8]))


# ------------------------------------------------------------------------------------------- intervals


@pytest.mark.parametrize(("x", "n"), [(0, 20), (3, 20), (17, 20), (20, 20), (180, 200)])
def test_korn_graubard_at_binomial_variance_is_clopper_pearson(x, n):
    p = x / n
    lo, hi = korn_graubard_interval(p, p * (1 - p) / n, n)
    ref = binomtest(x, n).proportion_ci(0.95, method="exact")
    assert (lo, hi) == pytest.approx((ref.low, ref.high), abs=1e-9)


@pytest.mark.parametrize(("x", "n"), [(0, 30), (12, 30), (29, 30), (170, 200)])
def test_uniform_interval_is_wilson(x, n):
    assert uniform_interval(x, n) == pytest.approx(proportion_confint(x, n, 0.05, method="wilson"), abs=1e-12)
    # the finite-population correction narrows it, and a census is exact
    lo, hi = uniform_interval(x, n, 2 * n)
    assert hi - lo < np.subtract(*proportion_confint(x, n, 0.05, method="wilson")[::-1])
    assert uniform_interval(x, n, n) == (x / n, x / n)
    assert uniform_width(x / n, n) == pytest.approx(np.subtract(*proportion_confint(x, n, 0.05, "wilson")[::-1]))


# ------------------------------------------------------------------------------------------- coverage


def _pool(n: int, seed: int, overconfident: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(surrogate expected errors, correct 0/1, true labels of 3 classes): 80% easy items, 20% hard ones; the
    errors are drawn from the true error probabilities, the surrogate says them (calibrated) or a third of them
    (overconfident)."""
    rng = np.random.default_rng(seed)
    e = np.where(rng.random(n) < 0.8, rng.beta(1, 30, n), rng.beta(2, 2, n))
    correct = (rng.random(n) >= e).astype(float)
    y = rng.integers(0, 3, n)
    return (e / 3 if overconfident else e), correct, y


@pytest.mark.parametrize("rule", ["sawade", "difference"])
@pytest.mark.parametrize("overconfident", [False, True], ids=["calibrated", "overconfident"])
def test_coverage_of_nominal_95_intervals_at_200_labels(rule, overconfident):
    e, c, y = _pool(3000, 7, overconfident)
    truth = c.mean()
    class_truth = np.array([c[y == k].mean() for k in range(3)])
    runs = 600
    covered = 0
    class_covered = np.zeros(3)
    widths, uniform_widths = [], []
    for seed in range(runs):
        s = select_items(e, 200, rule=rule, seed=seed)
        items, counts = s.draws.items, s.draws.counts
        est = estimate_from_labels(s.q, s.centre, items, counts, c[items])
        covered += est.ci_low <= truth <= est.ci_high
        widths.append(est.width)
        uniform_widths.append(uniform_width(est.value, s.draws.labels, len(e)))
        for k, ce in enumerate(class_accuracy_estimates(c[items], y[items], s.q[items], 3, counts=counts)):
            class_covered[k] += ce.ci_low <= class_truth[k] <= ce.ci_high
    assert covered / runs >= 0.93, covered / runs
    assert (class_covered / runs >= 0.93).all(), class_covered / runs
    # and it buys something: narrower than uniform labelling of as many items, on average
    assert np.mean(widths) < np.mean(uniform_widths)


def test_defensive_share_default_is_documented():
    assert DEFENSIVE_SHARE == 0.1
