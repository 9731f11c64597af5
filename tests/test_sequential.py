"""The always-valid confidence sequence (stats/sequential.py): the boundary against the authors' library,
time-uniform coverage under monitoring after every batch (and a repeated t-interval failing the same
simulation), batch updates equal to one-at-a-time updates, persistence, decisions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from assay.errors import DataError, OptionError
from assay.stats.sequential import ConfidenceSequence, msprt_p_value, sequential_decision, stitched_boundary

# ------------------------------------------------------------------------------------------ boundary


def test_stitched_boundary_matches_confseq_reference_values():
    # gostevehoward/confseq, test/uniform_boundaries_unittest.cpp (the authors' C++ implementation):
    # poly_stitching_bound(100, 0.05, 10, 3) == 64.48755 and poly_stitching_bound(100, .05, 10, -1) == 28.99389.
    assert float(stitched_boundary(100, 0.05, v_min=10, c=3)) == pytest.approx(64.48755, abs=1e-5)
    assert float(stitched_boundary(100, 0.05, v_min=10, c=-1)) == pytest.approx(28.99389, abs=1e-5)


def test_stitched_boundary_is_flat_below_v_min_and_grows_after():
    v = np.array([0.0, 5.0, 10.0, 20.0, 1000.0])
    u = stitched_boundary(v, 0.05, v_min=10, c=1)
    assert u[0] == u[1] == u[2]
    assert np.all(np.diff(u[2:]) > 0)
    with pytest.raises(OptionError):
        stitched_boundary(1.0, 1.5, v_min=1, c=1)
    with pytest.raises(OptionError):
        stitched_boundary(1.0, 0.05, v_min=0, c=1)


# ------------------------------------------------------------------------------------------ coverage

RUNS, BATCHES, BATCH = 300, 40, 25
ALPHA = 0.1
TOLERANCE = 0.03


def _three_point(mean: float, discordant: float):
    """Paired differences in {-1, 0, 1} with P(nonzero) = discordant and the given mean."""
    p_up, p_down = (discordant + mean) / 2, (discordant - mean) / 2

    def draw(rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.choice([-1.0, 0.0, 1.0], size=size, p=[p_down, 1 - discordant, p_up])

    return draw


CASES = {
    # name: (low, high, true mean, sampler)
    "paired difference, 10% discordant, mean -0.02": (-1.0, 1.0, -0.02, _three_point(-0.02, 0.10)),
    "accuracy indicator, p = 0.9": (0.0, 1.0, 0.9, lambda rng, size: (rng.random(size) < 0.9).astype(float)),
    "rare flips, p = 0.03": (0.0, 1.0, 0.03, lambda rng, size: (rng.random(size) < 0.03).astype(float)),
    "beta(2, 5)": (0.0, 1.0, 2 / 7, lambda rng, size: rng.beta(2.0, 5.0, size)),
}


def _simulate(case: str, seed: int) -> tuple[np.ndarray, float, float, float]:
    low, high, mean, draw = CASES[case]
    rng = np.random.default_rng(seed)
    return draw(rng, (RUNS, BATCHES * BATCH)).reshape(RUNS, BATCHES, BATCH), low, high, mean


@pytest.mark.parametrize("case", list(CASES))
def test_time_uniform_coverage_when_checked_after_every_batch(case):
    data, low, high, mean = _simulate(case, seed=15)
    ever_missed = 0
    for run in data:
        cs = ConfidenceSequence(low, high, alpha=ALPHA)
        missed = False
        for batch in run:
            cs = cs.update(batch)
            lo, hi = cs.interval()
            missed |= not lo <= mean <= hi
        ever_missed += missed
    rate = ever_missed / RUNS
    assert rate <= ALPHA + TOLERANCE, f"{case}: {rate:.3f} of runs excluded the mean at some look"


def test_repeated_t_interval_fails_the_same_simulation():
    """The contrast: a fixed-n t-interval recomputed after every batch excludes the true mean at some look
    in far more than alpha of the runs (the reason the monitor uses a confidence sequence)."""
    data, _, _, mean = _simulate("beta(2, 5)", seed=15)
    flat = data.reshape(RUNS, -1)
    n = np.arange(1, flat.shape[1] + 1)
    looks = n[BATCH - 1::BATCH]
    running_mean = np.cumsum(flat, axis=1) / n
    running_sq = np.cumsum(flat ** 2, axis=1)
    var = (running_sq - n * running_mean ** 2) / (n - 1).clip(min=1)
    half = stats.t.ppf(1 - ALPHA / 2, looks - 1) * np.sqrt(var[:, looks - 1] / looks)
    missed = np.abs(running_mean[:, looks - 1] - mean) > half
    naive_rate = float(missed.any(axis=1).mean())
    assert naive_rate > 2 * ALPHA, naive_rate
    # ... while each single look alone is about right (the t-interval is not simply broken).
    assert float(missed[:, -1].mean()) < ALPHA + TOLERANCE


def test_width_is_within_a_small_factor_of_the_fixed_n_interval():
    """Validity is not bought with uselessness: after 5,000 observations the sequence is at most ~3 times
    as wide as the fixed-n normal interval at the same level."""
    rng = np.random.default_rng(3)
    x = _three_point(-0.02, 0.10)(rng, 5000)
    cs = ConfidenceSequence(-1, 1, alpha=0.05).update(x)
    lo, hi = cs.current_interval()
    clt = 2 * 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert clt < hi - lo < 3.0 * clt


def test_a_worse_challenger_is_stopped_and_an_equal_one_is_not():
    rng = np.random.default_rng(7)
    stopped_at = []
    for _ in range(50):
        cs = ConfidenceSequence(-1, 1, alpha=0.05)
        for k in range(1, 201):
            cs = cs.update(_three_point(-0.08, 0.20)(rng, 50))
            if sequential_decision(cs, margin=0.01) == "worse":
                stopped_at.append(k * 50)
                break
    assert len(stopped_at) == 50 and max(stopped_at) <= 10_000
    false_stops = 0
    for _ in range(50):
        cs = ConfidenceSequence(-1, 1, alpha=0.05)
        stopped = False
        for _ in range(100):
            cs = cs.update(_three_point(0.0, 0.20)(rng, 50))
            stopped |= sequential_decision(cs, margin=0.05) == "worse"
        false_stops += stopped
        assert sequential_decision(cs, margin=0.05) == "non_inferior"
    assert false_stops <= 2  # at most alpha / 2 of the runs, in expectation


# ------------------------------------------------------------------------------------------ state


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=80), st.integers(1, 7))
def test_batch_update_equals_one_at_a_time(values, cut):
    whole = ConfidenceSequence(0.0, 1.0).update(values)
    step = ConfidenceSequence(0.0, 1.0)
    for v in values:
        step = step.update([v])
    chunks = ConfidenceSequence(0.0, 1.0)
    for start in range(0, len(values), cut):
        chunks = chunks.update(values[start:start + cut])
    for other in (step, chunks):
        assert other.n == whole.n
        assert other.total == pytest.approx(whole.total, abs=1e-9)
        assert other.variance == pytest.approx(whole.variance, rel=1e-9, abs=1e-9)
        assert other.current_interval() == pytest.approx(whole.current_interval(), abs=1e-9)
    # The intersection over finer looks can only be tighter.
    assert step.interval()[0] >= whole.interval()[0] - 1e-12
    assert step.interval()[1] <= whole.interval()[1] + 1e-12


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.floats(-1.0, 1.0, allow_nan=False), min_size=1, max_size=30), min_size=1, max_size=8))
def test_intervals_stay_in_range_nested_and_around_the_mean(batches):
    cs = ConfidenceSequence(-1.0, 1.0)
    previous = cs.interval()
    for batch in batches:
        cs = cs.update(batch)
        lo, hi = cs.interval()
        assert -1.0 <= lo <= hi <= 1.0
        assert previous[0] <= lo and hi <= previous[1]  # running intersection
        c_lo, c_hi = cs.current_interval()
        assert c_lo <= cs.mean <= c_hi
        previous = (lo, hi)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=2, max_size=50))
def test_width_shrinks_with_more_of_the_same_data(values):
    few = ConfidenceSequence(0.0, 1.0).update(values)
    many = ConfidenceSequence(0.0, 1.0).update(np.tile(values, 8))
    assert many.radius() < few.radius()


def test_json_round_trip_and_bad_states():
    cs = ConfidenceSequence(-1, 1, alpha=0.1).update([0.0, 1.0, -1.0, 0.5])
    restored = ConfidenceSequence.from_json(json.loads(json.dumps(cs.to_json())))
    assert restored == cs and restored.interval() == cs.interval()
    assert restored.update([0.2]) == cs.update([0.2])
    good = cs.to_json()
    for bad in ({}, {**good, "schema": "other/1"}, {**good, "n": -1}, {**good, "n": 1.5}, {**good, "alpha": 2.0},
                {**good, "variance": -1.0}, {**good, "lower": 0.9, "upper": 0.1}, {**good, "low": "x"},
                {k: v for k, v in good.items() if k != "total"}, [1, 2]):
        with pytest.raises(DataError):
            ConfidenceSequence.from_json(bad)


def test_bad_options_and_observations():
    with pytest.raises(OptionError):
        ConfidenceSequence(1.0, 1.0)
    with pytest.raises(OptionError):
        ConfidenceSequence(0.0, 1.0, alpha=0.0)
    with pytest.raises(OptionError):
        ConfidenceSequence(0.0, float("inf"))
    cs = ConfidenceSequence(0.0, 1.0)
    with pytest.raises(DataError, match="outside"):
        cs.update([0.5, 1.5])
    with pytest.raises(DataError):
        cs.update([float("nan")])
    assert cs.update([]) is cs
    assert math.isnan(cs.mean) and cs.interval() == (0.0, 1.0) and cs.radius() == math.inf


def test_sequential_decision():
    def at(lower: float, upper: float) -> ConfidenceSequence:
        return ConfidenceSequence(-1.0, 1.0, lower=lower, upper=upper)

    assert sequential_decision(at(-0.2, -0.05), margin=0.01) == "worse"
    assert sequential_decision(at(-0.2, -0.05), margin=0.01, worse_by=0.1) == "undecided"
    assert sequential_decision(at(-0.005, 0.03), margin=0.01) == "non_inferior"
    assert sequential_decision(at(-0.02, 0.03), margin=0.01) == "undecided"
    assert sequential_decision(at(-0.009, -0.001), margin=0.01) == "worse"  # worse wins when both hold
    assert at(0.7, 0.8).below(0.85) and not at(0.7, 0.9).below(0.85) and at(0.7, 0.8).above(0.6)
    with pytest.raises(OptionError):
        sequential_decision(at(0.0, 0.1), margin=-0.1)


def test_variance_process_is_the_sum_of_squared_prediction_errors():
    """V_t = sum_i (x_i - x_hat_i)^2 with x_hat_i the mean of a midpoint pseudo-observation and x_1..x_(i-1),
    computed here by a plain loop; the radius is u(max(V_t, v_min)) / t at alpha / 2 per side."""
    values = [0.3, 1.0, 0.0, 0.0, 0.9, 0.45, 1.0]
    seen, variance = [0.5], 0.0
    for x in values:
        variance += (x - sum(seen) / len(seen)) ** 2
        seen.append(x)
    cs = ConfidenceSequence(0.0, 1.0, alpha=0.2, v_min=0.5).update(values[:3]).update(values[3:])
    assert cs.variance == pytest.approx(variance, rel=1e-12)
    expected = float(stitched_boundary(max(variance, 0.5), 0.1, v_min=0.5, c=1.0)) / len(values)
    assert cs.radius() == pytest.approx(expected, rel=1e-12)


def test_msprt_p_value_closed_form_and_always_valid_type_one_error():
    # By hand: V = tau^2 = 1, n = 16, mean - null = 0.5: Lambda = sqrt(1/17) exp(256 * 0.25 / (2 * 17)) = 1.593...
    assert msprt_p_value(0.5, 16, 1.0) == pytest.approx(math.sqrt(17) * math.exp(-64 / 34), rel=1e-12)
    assert msprt_p_value(0.5, 4, 1.0) == 1.0  # Lambda = sqrt(1/5) exp(0.4) < 1
    assert msprt_p_value(0.0, 0, 1.0) == 1.0 and msprt_p_value(0.0, 10, 1.0) == 1.0
    # Normal observations with known variance, the running minimum checked after every one of 1,000 steps:
    # rejections at 0.05 stay near or below 0.05, and a mean of 0.3 is found.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, 1000))
    n = np.arange(1, 1001)
    means = np.cumsum(x, axis=1) / n
    p_null = np.array([[msprt_p_value(m, k, 1.0) for m, k in zip(row[::10], n[::10], strict=True)] for row in means])
    assert np.mean(p_null.min(axis=1) <= 0.05) <= 0.05 + 0.03
    shifted = np.cumsum(x[:20] + 0.3, axis=1) / n
    assert all(min(msprt_p_value(m, k, 1.0) for m, k in zip(row, n, strict=True)) < 0.05 for row in shifted)
    with pytest.raises(OptionError):
        msprt_p_value(0.1, 5, 0.0)
    with pytest.raises(OptionError):
        msprt_p_value(0.1, -1, 1.0)
