"""Label-free estimation wired into evaluate, and reference.npz for monitoring."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from assay.api import run_evaluation, write_evaluation
from assay.checks.base import EvaluateConfig
from assay.checks.label_free import ATCEstimator
from conftest import make_blobs_dataset


def test_unlabeled_target_estimates_mae_on_corruptions_and_reference(tmp_path):
    ds, model = make_blobs_dataset(n=500, noise=1.5)
    shifted, _ = make_blobs_dataset(n=300, noise=2.5, seed=0)  # same centres, noisier: a covariate shift
    np.savez(tmp_path / "target.npz", x=shifted.x, y=shifted.y)  # labels present: used only to report truth
    cfg = EvaluateConfig(unlabeled=[str(tmp_path / "target.npz")], corruptions=["gaussian_noise"], severities=[1, 5],
                         n_bootstrap=100)
    run = run_evaluation(model, ds, config=cfg, cache_dir=None)
    section = run.evidence.sections["label_free"]
    target_logits = shifted.x @ model.weight + model.bias
    avg = section.metrics["average_confidence[target]"]
    assert avg.value == pytest.approx(softmax(target_logits.astype(np.float64), axis=1).max(1).mean(), rel=1e-5)
    assert avg.ci_low <= avg.value <= avg.ci_high
    row = section.tables["targets"][0]
    assert row["true_accuracy"] == pytest.approx((target_logits.argmax(1) == shifted.y).mean())
    assert any("has labels" in f.message for f in section.findings)
    shifts = section.tables["corruption_shifts"]
    assert len(shifts) == 2
    mae = np.mean([abs(r["average_confidence"] - r["true_accuracy"]) for r in shifts])
    assert section.metrics["mae_on_corruptions[average_confidence]"].value == pytest.approx(mae)

    write_evaluation(run, tmp_path / "bundle")
    with np.load(tmp_path / "bundle" / "reference.npz") as ref:
        logits = ds.x @ model.weight + model.bias
        expected = ATCEstimator("maxconf").fit(logits, ds.y).threshold_
        assert float(ref["atc_threshold_maxconf"]) == pytest.approx(expected, rel=1e-6)
        assert ref["val_confidence"].shape == (500,)
        np.testing.assert_allclose(ref["feature_mean"], ds.x.mean(0), rtol=1e-5)
