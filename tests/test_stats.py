"""Bootstrap: exactness of the two resampling schemes, interval coverage, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.stats.bootstrap import (
    bootstrap_cell_counts,
    bootstrap_weights,
    group_sums,
    percentile_ci,
    spawn_seed,
)


def test_weights_are_multinomial_counts():
    chunks = list(bootstrap_weights(50, 300, seed=1))
    w = np.concatenate(chunks)
    assert w.shape == (300, 50)
    np.testing.assert_array_equal(w.sum(axis=1), 50)
    assert (w >= 0).all() and np.all(w == np.round(w))
    # Each sample's multiplicity is Binomial(n, 1/n): mean 1, variance (1 - 1/n).
    assert abs(w.mean() - 1.0) < 1e-9
    assert abs(w.var() - (1 - 1 / 50)) < 0.05


def test_weights_are_seed_deterministic_and_seed_sensitive():
    a = np.concatenate(list(bootstrap_weights(1000, 100, seed=3)))
    b = np.concatenate(list(bootstrap_weights(1000, 100, seed=3)))
    c = np.concatenate(list(bootstrap_weights(1000, 100, seed=4)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_cell_bootstrap_matches_resampling_pairs_in_distribution():
    """Resampling n pairs with replacement and counting cells equals a multinomial over cells."""
    rng = np.random.default_rng(0)
    n, cells = 200, 6
    data = rng.integers(0, cells, size=n)
    counts = np.bincount(data, minlength=cells)
    via_cells = bootstrap_cell_counts(counts, 4000, seed=1)
    idx = rng.integers(0, n, size=(4000, n))
    via_pairs = np.stack([np.bincount(row, minlength=cells) for row in data[idx]])
    np.testing.assert_array_equal(via_cells.sum(axis=1), n)
    np.testing.assert_allclose(via_cells.mean(0), via_pairs.mean(0), atol=0.35)
    np.testing.assert_allclose(via_cells.std(0), via_pairs.std(0), rtol=0.1)


def test_group_sums_against_loop():
    rng = np.random.default_rng(2)
    w = rng.integers(0, 3, size=(5, 40)).astype(np.float32)
    groups = rng.integers(0, 4, size=40)
    values = rng.normal(size=40)
    out = group_sums(w, groups, 4, values)
    expected = np.array([[np.sum(w[r, groups == g] * values[groups == g]) for g in range(4)] for r in range(5)])
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_allclose(group_sums(w, groups, 4),
                               [[w[r, groups == g].sum() for g in range(4)] for r in range(5)])


def test_percentile_ci_hand_case_and_nan():
    samples = np.arange(1, 1001, dtype=float)
    lo, hi = percentile_ci(samples, 0.9)
    assert lo == pytest.approx(np.quantile(samples, 0.05)) and hi == pytest.approx(np.quantile(samples, 0.95))
    lo2, hi2 = percentile_ci(np.append(samples, np.nan), 0.9)
    assert (lo2, hi2) == (lo, hi)
    assert all(np.isnan(percentile_ci(np.array([np.nan]))))
    with pytest.raises(ValueError):
        percentile_ci(samples, 1.5)


def test_coverage_of_accuracy_interval():
    """Nominal 95% interval covers the true accuracy in at least 90% of 200 simulated datasets."""
    true_acc, n, sims = 0.8, 300, 200
    rng = np.random.default_rng(123)
    covered = 0
    for s in range(sims):
        correct = rng.random(n) < true_acc
        counts = np.bincount(correct.astype(int), minlength=2)
        boot = bootstrap_cell_counts(counts, 1000, spawn_seed(s, "coverage"))[:, 1] / n
        lo, hi = percentile_ci(boot, 0.95)
        covered += lo <= true_acc <= hi
    assert covered / sims >= 0.90, covered / sims


def test_coverage_of_mean_interval_with_weights():
    """Same coverage property for a continuous mean bootstrapped with sample weights."""
    n, sims = 200, 200
    rng = np.random.default_rng(7)
    covered = 0
    for s in range(sims):
        v = rng.exponential(1.0, size=n)  # true mean 1, skewed
        means = np.concatenate([w @ v / n for w in bootstrap_weights(n, 1000, spawn_seed(s, "m"))])
        lo, hi = percentile_ci(means, 0.95)
        covered += lo <= 1.0 <= hi
    assert covered / sims >= 0.90, covered / sims


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=2, max_size=12).filter(lambda c: sum(c) > 0), st.integers(0, 2**32 - 1))
def test_cell_bootstrap_preserves_total_and_support(counts, seed):
    counts = np.array(counts)
    draws = bootstrap_cell_counts(counts, 50, seed)
    assert (draws.sum(axis=1) == counts.sum()).all()
    assert (draws[:, counts == 0] == 0).all()  # never resamples a cell that had no data


def test_shared_weights_are_identical_across_passes_kept_or_regenerated():
    from assay.stats.bootstrap import SharedWeights

    kept = SharedWeights(300, 200, spawn_seed(0, "x"))
    regenerated = SharedWeights(300, 200, spawn_seed(0, "x"), max_bytes=0)
    a, b = np.concatenate(list(kept)), np.concatenate(list(kept))
    c, d = np.concatenate(list(regenerated)), np.concatenate(list(regenerated))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(c, d)
    v = np.random.default_rng(0).normal(size=(300, 2))
    np.testing.assert_allclose(kept.means(v), a.astype(np.float64) @ v / 300, rtol=0, atol=1e-6)


def test_weights_do_not_depend_on_the_number_of_threads(monkeypatch):
    import assay.stats.bootstrap as bootstrap

    many = np.concatenate(list(bootstrap_weights(5000, 300, seed=11)))
    monkeypatch.setattr(bootstrap.os, "cpu_count", lambda: 1)
    one = np.concatenate(list(bootstrap_weights(5000, 300, seed=11)))
    np.testing.assert_array_equal(many, one)
    np.testing.assert_array_equal(many.sum(axis=1), 5000)


def test_weights_follow_the_documented_stream():
    """docs/metrics.md: resample r is the bincount of n draws from default_rng seeded by (seed, chunk, block),
    chunks of floor(2e7 / n) rows cut into 8 blocks -- written out here independently of the implementation."""
    n, n_resamples, seed = 700, 60, np.random.SeedSequence(5)
    per_chunk = min(n_resamples, 20_000_000 // n)
    rows = []
    for chunk, start in enumerate(range(0, n_resamples, per_chunk)):
        size = min(per_chunk, n_resamples - start)
        bounds = np.linspace(0, size, 9).astype(int)
        for block in range(8):
            rng = np.random.default_rng(np.random.SeedSequence(seed.entropy, spawn_key=(chunk, block)))
            rows += [np.bincount(rng.integers(0, n, size=n, dtype=np.int32), minlength=n)
                     for _ in range(bounds[block + 1] - bounds[block])]
    expected = np.array(rows)
    np.testing.assert_array_equal(np.concatenate(list(bootstrap_weights(n, n_resamples, seed))), expected)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 3000), st.integers(1, 70), st.integers(1, 200_000), st.sampled_from(["C", "F"]),
       st.sampled_from([np.float32, np.float64, np.uint8]))
def test_weights_do_not_depend_on_how_they_are_handed_out(n, n_resamples, max_weights, order, dtype):
    reference = np.concatenate(list(bootstrap_weights(n, n_resamples, seed=2)))
    arrays = list(bootstrap_weights(n, n_resamples, seed=2, max_weights=max_weights, order=order, dtype=dtype))
    for a in arrays:
        assert a.dtype == dtype and a.flags[f"{order}_CONTIGUOUS"]
        assert a.size <= max(max_weights, a.shape[1] * -(-n_resamples // 8))  # at most one seeded block more
    np.testing.assert_array_equal(np.concatenate(arrays), reference)


def test_shared_weights_are_kept_as_uint8_and_handed_out_in_bounded_float32_arrays():
    from assay.stats.bootstrap import SharedWeights

    n, b = 20_000, 1000
    shared = SharedWeights(n, b, spawn_seed(0, "y"))
    first = list(shared)
    assert all(a.dtype == np.float32 and a.flags.f_contiguous and a.size <= 8_000_000 for a in first)
    assert shared._kept is not None and sum(k.nbytes for k in shared._kept) == n * b  # one byte per weight
    second = list(shared)
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(second))
    np.testing.assert_array_equal(np.concatenate(first),
                                  np.concatenate(list(bootstrap_weights(n, b, spawn_seed(0, "y")))))


@pytest.mark.parametrize("n_groups", [6, 300])  # dense and sparse float64 paths
def test_group_sums_against_a_float64_loop(n_groups):
    from assay.stats.bootstrap import GroupSums

    rng = np.random.default_rng(4)
    n, entries = 5000, 12_000
    samples, groups = rng.integers(0, n, entries), rng.integers(0, n_groups, entries)
    values = rng.normal(100.0, 1.0, entries)  # large values: float32 sums of raw weights would lose digits
    sums = GroupSums(samples, groups, n_groups, n, values)
    weights = np.concatenate(list(bootstrap_weights(n, 12, seed=1, order="F")))
    expected = np.zeros((12, n_groups))
    for r in range(12):
        np.add.at(expected[r], groups, weights[r, samples].astype(np.float64) * values)
    np.testing.assert_allclose(sums(weights), expected, rtol=1e-6)  # float32 deviations, float64 totals
    np.testing.assert_allclose(sums(np.ascontiguousarray(weights)), expected, rtol=1e-6)
    np.testing.assert_allclose(sums(weights.astype(np.float64)), expected, rtol=1e-12)
    ones = np.zeros(n_groups)
    np.add.at(ones, groups, values)
    np.testing.assert_allclose(sums(np.ones((1, n)))[0], ones, rtol=1e-12)
    with pytest.raises(ValueError):
        sums(np.ones((2, n + 1)))
