"""Weighted AURC (the bootstrap CI of selective prediction) against AURC on explicitly repeated data."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.errors import UserError
from assay.stats.ranking import aurc, aurc_weighted


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.booleans(), st.integers(0, 3)), min_size=1, max_size=30))
def test_weighted_aurc_equals_aurc_of_the_repeated_data(rows):
    conf = np.array([r[0] for r in rows], dtype=float) / 4  # few distinct values: many ties
    correct = np.array([r[1] for r in rows])
    mult = np.array([r[2] for r in rows])
    if mult.sum() == 0:
        mult[0] = 1
    expected = aurc(np.repeat(conf, mult), np.repeat(correct, mult))
    got = aurc_weighted(conf, correct, np.vstack([mult, np.ones_like(mult)]))
    assert got[0] == pytest.approx(expected, abs=1e-12)
    assert got[1] == pytest.approx(aurc(conf, correct), abs=1e-12)
    assert 0.0 <= got[0] <= 1.0


def test_weighted_aurc_rejects_misaligned_weights():
    with pytest.raises(UserError, match="columns"):
        aurc_weighted(np.array([0.1, 0.2]), np.array([1, 0]), np.ones((3, 5)))


def test_ood_resamples_are_shared_within_a_named_set():
    """Detectors scored on the same set get the same ID/OOD resamples (the check's paired comparisons rely
    on it): a monotone transform of the scores leaves every AUROC replicate unchanged."""
    from assay.stats.ranking import ood_metrics

    rng = np.random.default_rng(0)
    id_scores, ood_scores = rng.normal(1, 1, 300), rng.normal(0, 1, 200)
    a = ood_metrics(id_scores, ood_scores, n_resamples=200, seed=0, name="far")["auroc"].samples
    b = ood_metrics(np.exp(id_scores), np.exp(ood_scores), n_resamples=200, seed=0, name="far")["auroc"].samples
    c = ood_metrics(id_scores, ood_scores, n_resamples=200, seed=0, name="near")["auroc"].samples
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_bias_corrected_interval_against_scipy_bca_and_a_shifted_cloud():
    from scipy import stats

    from assay.stats.bootstrap import bias_corrected_ci, percentile_ci

    # Symmetric, unbiased replicates: BC equals the percentile interval.
    rng = np.random.default_rng(0)
    reps = rng.normal(0.0, 1.0, 20_000)
    lo, hi = bias_corrected_ci(reps, 0.0, 0.95)
    plo, phi = percentile_ci(reps, 0.95)
    assert lo == pytest.approx(plo, abs=0.03) and hi == pytest.approx(phi, abs=0.03)
    # Replicates biased upward by b around the estimate: BC moves the interval down by 2b (Efron & Tibshirani).
    b = 0.5
    lo, hi = bias_corrected_ci(reps + b, 0.0, 0.95)
    # z0 = -b, so the percentiles are Phi(-2b -+ 1.96) of N(b, 1): the interval is -b -+ 1.96.
    assert lo == pytest.approx(-b - 1.96, abs=0.08) and hi == pytest.approx(-b + 1.96, abs=0.08)
    # scipy's BCa on a near-symmetric statistic (acceleration ~ 0) agrees with our BC on the same replicates.
    data = rng.normal(1.0, 2.0, 400)
    res = stats.bootstrap((data,), np.mean, n_resamples=4000, method="BCa", confidence_level=0.9,
                          random_state=np.random.default_rng(1))
    ours = bias_corrected_ci(res.bootstrap_distribution, float(np.mean(data)), 0.9)
    assert ours[0] == pytest.approx(res.confidence_interval.low, abs=0.02)
    assert ours[1] == pytest.approx(res.confidence_interval.high, abs=0.02)
    # A one-sided cloud (every replicate above the estimate, as for a max of noisy differences near 0):
    # the percentile interval widened down to the estimate, never a collapsed one.
    cloud = np.linspace(0.1, 0.2, 1001)
    lo, hi = bias_corrected_ci(cloud, 0.0, 0.95)
    assert lo == 0.0 and hi == pytest.approx(np.quantile(cloud, 0.975))
