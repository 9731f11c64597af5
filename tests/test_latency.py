"""The latency harness: order-statistic CIs against hand-computed binomial cases and simulation, and the
stopping rules on a fake clock (deterministic: the "model" advances the clock by a known cost)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from fractions import Fraction
from math import comb

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from assay.errors import UserError
from assay.profiling.latency import make_batch, measure_latency, summarize_times
from assay.stats.order import min_runs_for_upper_bound, quantile_ci

MS = 1_000_000  # ns


class FakeClock:
    """A nanosecond clock that only moves when the fake model runs (by the next cost)."""

    def __init__(self, costs_ns: Iterator[int]) -> None:
        self.now = 0
        self.costs = costs_ns
        self.batch_sizes: list[int] = []

    def __call__(self) -> int:
        return self.now

    def run(self, batch: np.ndarray) -> None:
        self.batch_sizes.append(len(batch))
        self.now += int(next(self.costs))


def constant(cost_ns: int) -> Iterator[int]:
    while True:
        yield cost_ns


def lognormal(sigma: float, seed: int = 0) -> Iterator[int]:
    rng = np.random.default_rng(seed)
    while True:
        yield int(MS * rng.lognormal(0.0, sigma))


SAMPLE = np.arange(40, dtype=np.float32).reshape(40, 1)


# ------------------------------------------------------------------------------------ order statistics


def test_median_ci_for_ten_runs_is_the_textbook_interval():
    # Binomial(10, 1/2): P(K <= 1) = 11/1024 <= 0.025 < P(K <= 2) = 56/1024, P(K <= 8) = 1013/1024 >= 0.975
    # -> [X(2), X(9)] with coverage (1013 - 11) / 1024 (Conover 1999, table A3 / example 3.2.1 style).
    x = np.arange(1.0, 11.0)  # X(i) = i
    lo, hi, coverage = quantile_ci(x, 0.5, 0.95)
    assert (lo, hi) == (2.0, 9.0)
    assert coverage == pytest.approx((1013 - 11) / 1024)


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99])
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_interval_matches_an_exact_rational_enumeration(q, confidence):
    """Independent of scipy: binomial tails in exact fractions, every (l, u) pair enumerated, the narrowest
    pair with both tails <= alpha/2 kept."""
    qf = Fraction(q).limit_denominator(1000)
    tail = (1 - Fraction(confidence).limit_denominator(1000)) / 2
    for n in (1, 5, 10, 29, 40, 80):
        pmf = [comb(n, k) * qf**k * (1 - qf) ** (n - k) for k in range(n + 1)]
        # X(l) for l = 0 means "no lower bound"; X(u) for u = n + 1 means "no upper bound".
        ok = [(lo, hi) for lo in range(n + 1) for hi in range(lo, n + 2)
              if sum(pmf[:lo]) <= tail and sum(pmf[hi:]) <= tail and (lo, hi) != (0, 0)]
        lo, hi = max(low for low, _ in ok), min(high for _, high in ok if high >= 1)
        got_lo, got_hi, coverage = quantile_ci(np.arange(1.0, n + 1.0), q, confidence)
        assert (got_lo, got_hi) == (float(lo) if lo >= 1 else None, float(hi) if hi <= n else None), n
        assert coverage == pytest.approx(float(1 - sum(pmf[:lo]) - sum(pmf[hi:])), abs=1e-12)


def test_old_compress_paths_warn_and_give_the_moved_objects():
    import assay.compress.energy as old_energy
    import assay.compress.flops as old_flops
    import assay.compress.latency as old_latency
    from assay.profiling import energy, flops, latency, profile
    from assay.stats import order

    for old, name, new in ((old_latency, "profile_model", profile), (old_latency, "measure_latency", latency),
                           (old_latency, "quantile_ci", order), (old_flops, "count_flops", flops),
                           (old_energy, "energy_per_1000", energy)):
        with pytest.warns(DeprecationWarning, match=f"{new.__name__}.{name}"):
            assert getattr(old, name) is getattr(new, name)
    with pytest.raises(AttributeError):
        old_latency.no_such_name  # noqa: B018


def test_p95_upper_bound_needs_72_runs_at_95_percent():
    # q^n <= 0.025 first holds at n = 72 (0.95^71 = 0.0262, 0.95^72 = 0.0249).
    assert min_runs_for_upper_bound(0.95, 0.95) == 72
    assert quantile_ci(np.arange(71.0), 0.95, 0.95)[1] is None
    lo, hi, _ = quantile_ci(np.arange(72.0), 0.95, 0.95)
    assert hi == 71.0 and lo is not None


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 400), q=st.sampled_from([0.5, 0.9, 0.95, 0.99]), conf=st.sampled_from([0.8, 0.9, 0.95]))
def test_interval_is_the_narrowest_equal_tailed_one(n, q, conf):
    x = np.arange(1.0, n + 1.0)  # X(i) = i, so the bounds are the order-statistic indices
    lo, hi, coverage = quantile_ci(x, q, conf)
    tail = (1 - conf) / 2
    lower_tail = binom.cdf(lo - 1, n, q) if lo is not None else 0.0  # P(K <= l - 1)
    upper_tail = binom.sf(hi - 1, n, q) if hi is not None else 0.0  # P(K >= u)
    assert lower_tail <= tail + 1e-9 and upper_tail <= tail + 1e-9
    if lo is not None and lo < n:
        assert binom.cdf(lo, n, q) > tail - 1e-9  # one order statistic higher would break the tail bound
    if hi is not None and hi > 1:
        assert binom.sf(hi - 2, n, q) > tail - 1e-9
    assert coverage == pytest.approx(1 - lower_tail - upper_tail, abs=1e-9)
    if lo is not None and hi is not None:
        assert coverage >= conf - 1e-9


def test_median_interval_covers_the_true_median_as_often_as_it_claims():
    # Exponential(1): true median ln 2. 4,000 simulated runs of n = 30.
    rng = np.random.default_rng(1)
    n, reps = 30, 4000
    draws = np.sort(rng.exponential(size=(reps, n)), axis=1)
    hits = 0
    for row in draws:
        lo, hi, coverage = quantile_ci(row, 0.5, 0.95)
        hits += lo <= np.log(2) <= hi
    se = np.sqrt(coverage * (1 - coverage) / reps)
    assert abs(hits / reps - coverage) < 4 * se
    assert coverage >= 0.95


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.01, 100.0, allow_nan=False), min_size=1, max_size=300))
def test_quantile_intervals_contain_the_sample_quantiles(values):
    b = summarize_times(values, batch_size=4)
    for name in ("p50", "p95", "p99"):
        point, lo, hi = getattr(b, f"{name}_ms"), getattr(b, f"{name}_ci_low_ms"), getattr(b, f"{name}_ci_high_ms")
        assert lo is None or lo <= point + 1e-12
        assert hi is None or point <= hi + 1e-12
    ordered = sorted(values)
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):  # X(ceil(n q)), Hyndman & Fan type 1
        assert getattr(b, f"{name}_ms") == ordered[int(np.ceil(round(len(values) * q, 9))) - 1]
    assert b.mean_ms == pytest.approx(np.mean(values))
    if len(values) > 1:
        assert b.std_ms == pytest.approx(np.std(values, ddof=1), rel=1e-9, abs=1e-12)
    assert b.throughput_per_s == pytest.approx(4 * 1000 / b.p50_ms)
    if b.p50_ci_low_ms is not None and b.p50_ci_high_ms is not None:
        assert b.throughput_ci_low <= b.throughput_per_s <= b.throughput_ci_high


# ------------------------------------------------------------------------------------ stopping rules


def test_constant_cost_stops_as_soon_as_the_p95_has_an_interval():
    clock = FakeClock(constant(MS))
    prof = measure_latency(clock.run, SAMPLE, batch_sizes=(1,), warmup=5, clock=clock)
    b = prof.batch(1)
    assert b.stop_reason == "precise" and b.precise
    assert b.n_runs == 72  # max(min_runs=20, runs the p95 needs for a two-sided 95% interval)
    assert b.p50_ms == b.p50_ci_low_ms == b.p50_ci_high_ms == 1.0
    assert b.cv == 0.0 and b.throughput_per_s == pytest.approx(1000.0)
    assert clock.batch_sizes.count(1) == 5 + 72  # warm-up calls are not timed
    assert gc.isenabled()


def test_noisy_cost_runs_until_precise_or_max_runs():
    # Lognormal(sigma = 0.5): the median CI half-width is about 1.23 / sqrt(n) of the median,
    # so 5% needs roughly 600 runs.
    clock = FakeClock(lognormal(0.5))
    capped = measure_latency(clock.run, SAMPLE, batch_sizes=(1,), max_runs=300, budget_s=1e6, clock=clock).batch(1)
    assert capped.stop_reason == "max_runs" and capped.n_runs == 300 and not capped.precise
    assert capped.p50_rel_halfwidth > 0.05

    clock = FakeClock(lognormal(0.5))
    done = measure_latency(clock.run, SAMPLE, batch_sizes=(1,), max_runs=5000, budget_s=1e6, clock=clock).batch(1)
    assert done.stop_reason == "precise" and done.precise
    assert 400 <= done.n_runs <= 1000
    assert done.p50_rel_halfwidth <= 0.05
    assert done.p50_ci_low_ms <= 1.0 <= done.p50_ci_high_ms  # true median of lognormal(0, s) is 1 ms


def test_budget_stops_timing_and_counts_the_warmup():
    clock = FakeClock(constant(MS))
    b = measure_latency(clock.run, SAMPLE, batch_sizes=(1,), warmup=5, budget_s=0.05, clock=clock).batch(1)
    # 5 warm-up ms + 45 timed ms reach the 50 ms budget.
    assert b.stop_reason == "budget" and b.n_runs == 45
    assert b.elapsed_s == pytest.approx(0.05)


def test_budget_smaller_than_warmup_still_times_one_run():
    clock = FakeClock(constant(MS))
    b = measure_latency(clock.run, SAMPLE, batch_sizes=(1,), warmup=10, budget_s=0.003, clock=clock).batch(1)
    assert b.n_runs == 1 and b.stop_reason == "budget"
    assert clock.batch_sizes == [1, 1, 1, 1]  # 3 warm-up calls used the budget, then one timed call
    assert b.p50_ci_low_ms is None and b.p50_rel_halfwidth is None and not b.precise


def test_each_batch_size_is_timed_on_its_own_batch():
    clock = FakeClock(constant(MS))
    seen: list[np.ndarray] = []

    def run(batch):
        seen.append(batch)
        clock.run(batch)

    prof = measure_latency(run, SAMPLE, batch_sizes=(1, 8, 32), warmup=1, clock=clock, threads=3)
    assert [b.batch_size for b in prof.batches] == [1, 8, 32]
    assert sorted(set(clock.batch_sizes)) == [1, 8, 32]
    assert all(np.isin(batch, SAMPLE).all() for batch in seen)
    assert prof.threads == 3 and prof.best.batch_size == 32  # same per-call cost: the biggest batch wins
    assert prof.batch(32).throughput_per_s == pytest.approx(32_000.0)


def test_make_batch_draws_rows_and_tiles_small_samples():
    small = np.arange(3, dtype=np.float32).reshape(3, 1)
    batch = make_batch(small, 8, seed=0)
    assert batch.shape == (8, 1) and set(batch.ravel()) <= {0.0, 1.0, 2.0}
    unique = make_batch(SAMPLE, 32, seed=0)
    assert len(np.unique(unique)) == 32  # enough rows: drawn without replacement
    assert np.array_equal(make_batch(SAMPLE, 8, seed=1), make_batch(SAMPLE, 8, seed=1))


@pytest.mark.parametrize("kwargs", [{"batch_sizes": (0,)}, {"min_runs": 0}, {"max_runs": 5, "min_runs": 10},
                                    {"budget_s": 0.0}, {"confidence": 1.0}, {"target_rel_halfwidth": 0.0}])
def test_invalid_settings_are_user_errors(kwargs):
    with pytest.raises(UserError):
        measure_latency(lambda b: None, SAMPLE, **kwargs)


def test_a_batch_size_the_model_refuses_is_a_user_error():
    def run(batch):
        if len(batch) != 1:
            raise RuntimeError("Guard failed: x.size()[0] == 1")

    with pytest.raises(UserError, match="batch of 8"):
        measure_latency(run, SAMPLE, batch_sizes=(1, 8), budget_s=0.05)


def test_real_clock_measures_something_sensible():
    work = np.random.default_rng(0).random((64, 64))
    prof = measure_latency(lambda b: work @ work, SAMPLE, batch_sizes=(1,), warmup=1, budget_s=0.2)
    b = prof.batch(1)
    assert 1 <= b.n_runs <= 2000
    assert 0 < b.min_ms <= b.p50_ms <= b.p95_ms <= b.p99_ms <= b.max_ms
    assert len(b.times_ms) == b.n_runs
    assert "times_ms" not in b.model_dump()  # raw times stay in memory, out of the JSON
