"""OOD check wired into evaluate: metrics equal scikit-learn's on the cached scores, split fitting is
stated, shapes are checked, selective prediction is reported."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.metrics import roc_auc_score

from assay.api import run_evaluation
from assay.checks.base import EvaluateConfig
from assay.data.dataset import Dataset
from assay.errors import UserError
from conftest import make_blobs_dataset


def test_ood_metrics_from_cached_outputs(tmp_path):
    ds, model = make_blobs_dataset(n=400, noise=1.0)
    far = Dataset(x=np.random.default_rng(1).normal(0, 12, (300, 4)).astype(np.float32), y=None, ids=np.arange(300),
                  modality="tabular", name="far", source="<far>")
    np.savez(tmp_path / "far.npz", x=far.x)
    run = run_evaluation(model, ds, config=EvaluateConfig(ood=[str(tmp_path / "far.npz")], n_bootstrap=200),
                         cache_dir=None)
    section = run.evidence.sections["ood"]
    rows = {(r["detector"], r["ood_set"]): r for r in section.tables["detectors"]}
    assert {"msp", "energy", "mahalanobis", "knn"} <= {d for d, _ in rows}
    # Without --train-data, detectors are scored on the half of the ID set not used for fitting.
    assert any("seeded half of the evaluation set" in f.message for f in section.findings)
    id_logits = ds.x @ model.weight + model.bias
    ood_logits = far.x @ model.weight + model.bias
    r = rows[("msp", "far")]
    n_id = r["n_id"]
    assert n_id == 200 and r["n_ood"] == 300
    # Recompute MSP AUROC with scikit-learn on the same (seeded) ID half, from float32 logits as cached.
    perm = np.random.default_rng(__import__("assay").stats.spawn_seed(0, "ood/split")).permutation(400)
    id_half = np.sort(perm[200:])
    msp_id = softmax(id_logits.astype(np.float32).astype(np.float64), axis=1).max(1)[id_half]
    msp_ood = softmax(ood_logits.astype(np.float32).astype(np.float64), axis=1).max(1)
    expected = roc_auc_score(np.r_[np.zeros(200), np.ones(300)], -np.r_[msp_id, msp_ood])
    assert r["auroc"] == pytest.approx(expected)
    assert r["auroc_ci_low"] <= r["auroc"] <= r["auroc_ci_high"]
    assert rows[("mahalanobis", "far")]["auroc"] > 0.95
    assert "risk_coverage" in section.plots and "aurc" in section.metrics


def test_ood_set_of_the_wrong_shape(tmp_path):
    ds, model = make_blobs_dataset(n=100)
    np.savez(tmp_path / "wide.npz", x=np.zeros((10, 7), np.float32))
    with pytest.raises(UserError, match=r"\(4,\).*\(7,\)"):
        run_evaluation(model, ds, config=EvaluateConfig(ood=[str(tmp_path / "wide.npz")]), cache_dir=None)
    with pytest.raises(UserError, match="synthetic OOD sets are images"):
        run_evaluation(model, ds, config=EvaluateConfig(ood=["synthetic"]), cache_dir=None)


def test_vim_runs_for_torch_models_with_the_last_layer(tmp_path):
    import torch
    from safetensors.torch import save_file

    from assay.checks.ood_scores import ViMDetector
    from assay.data.loader import load_data
    from assay.demo import DigitsCNN
    from assay.models.loader import load_model
    from assay.stats.ranking import auroc

    torch.manual_seed(0)
    save_file(DigitsCNN().state_dict(), tmp_path / "w.safetensors")
    train, test = load_data("digits:train"), load_data("digits:test")
    model = load_model("assay.demo:make_digits_cnn", weights=str(tmp_path / "w.safetensors"), sample=test.x[:2])
    np.savez(tmp_path / "train.npz", x=train.x, y=train.y)
    cfg = EvaluateConfig(ood=["synthetic"], train_data=str(tmp_path / "train.npz"), n_bootstrap=100)
    run = run_evaluation(model, test, config=cfg, cache_dir=None)
    rows = {(r["detector"], r["ood_set"]): r for r in run.evidence.sections["ood"].tables["detectors"]}
    fc2 = model.torch_module().fc2
    vim = ViMDetector().fit(model.features(train.x), fc2.weight.detach().numpy(), fc2.bias.detach().numpy())
    ood_name = next(n for n in run.outputs.views if "uniform_noise" in n)
    expected = auroc(vim.score(run.outputs.clean.features), vim.score(run.outputs[ood_name].features))
    assert rows[("vim", "synthetic:uniform_noise")]["auroc"] == pytest.approx(expected, rel=1e-6)
