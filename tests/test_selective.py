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
