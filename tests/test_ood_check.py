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
    paired = [f.message for f in section.findings if "MSP baseline" in f.message]
    assert len(paired) == 1 and "far:" in paired[0] and "paired" in paired[0]


def test_ood_set_of_the_wrong_shape(tmp_path):
    ds, model = make_blobs_dataset(n=100)
    np.savez(tmp_path / "wide.npz", x=np.zeros((10, 7), np.float32))
    with pytest.raises(UserError, match=r"\(4,\).*\(7,\)"):
        run_evaluation(model, ds, config=EvaluateConfig(ood=[str(tmp_path / "wide.npz")]), cache_dir=None)
    with pytest.raises(UserError, match="synthetic OOD sets are images"):
        run_evaluation(model, ds, config=EvaluateConfig(ood=["synthetic"]), cache_dir=None)
    np.savez(tmp_path / "ood.npz", x=ds.x[:10] + 5)
    np.savez(tmp_path / "unlabelled_train.npz", x=ds.x)
    with pytest.raises(UserError, match="training data has no labels"):
        run_evaluation(model, ds, config=EvaluateConfig(ood=[str(tmp_path / "ood.npz")],
                                                        train_data=str(tmp_path / "unlabelled_train.npz")),
                       cache_dir=None)


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


def _torch_digits_model(tmp_path):
    import torch
    from safetensors.torch import save_file

    from assay.data.loader import load_data
    from assay.demo import DigitsCNN
    from assay.models.loader import load_model

    torch.manual_seed(0)
    save_file(DigitsCNN().state_dict(), tmp_path / "w.safetensors")
    test = load_data("digits:test")
    return load_model("assay.demo:make_digits_cnn", weights=str(tmp_path / "w.safetensors"), sample=test.x[:2]), test


def test_odin_matches_pytorch_ood(tmp_path, pytorch_ood_detectors):
    torch, detectors = pytorch_ood_detectors
    ODIN, odin_preprocessing = detectors.ODIN, detectors.odin_preprocessing
    from assay.checks.ood import odin_perturb, odin_score

    model, test = _torch_digits_model(tmp_path)
    module = model.torch_module()
    x = test.x[:64]
    for eps, temperature in ((0.0014, 1000.0), (0.01, 10.0)):
        ours = odin_perturb(module, x, eps=eps, temperature=temperature)
        ref = odin_preprocessing(module, torch.from_numpy(x), eps=eps, temperature=temperature).numpy()
        np.testing.assert_allclose(ours, ref, atol=1e-7)
        assert np.abs(ours - x).max() == pytest.approx(eps, rel=1e-5)  # one signed step of size eps
        with torch.no_grad():
            logits = module(torch.from_numpy(ours)).numpy()
        ref_scores = -ODIN(module, eps=eps, temperature=temperature).predict(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(odin_score(logits, temperature), ref_scores, rtol=1e-5, atol=1e-7)


def test_odin_runs_in_the_ood_check_for_torch_models(tmp_path, pytorch_ood_detectors):
    torch, detectors = pytorch_ood_detectors
    ODIN = detectors.ODIN
    from assay.checks.ood import odin_score, synthetic_ood_sets
    from assay.data.loader import load_data
    from assay.stats.ranking import auroc

    model, test = _torch_digits_model(tmp_path)
    train = load_data("digits:train")
    np.savez(tmp_path / "train.npz", x=train.x, y=train.y)  # all test rows are then scored as ID
    cfg = EvaluateConfig(ood=["synthetic"], train_data=str(tmp_path / "train.npz"), n_bootstrap=100)
    run = run_evaluation(model, test, config=cfg, cache_dir=None)
    section = run.evidence.sections["ood"]
    rows = {(r["detector"], r["ood_set"]): r for r in section.tables["detectors"]}
    assert section.config["odin"] == {"temperature": 1000.0, "eps": 0.0014}
    detector = ODIN(model.torch_module(), eps=0.0014, temperature=1000.0)
    id_scores = -detector.predict(torch.from_numpy(test.x)).numpy()
    odin_clean = next(n for n in run.outputs.views if n.startswith("odin:") and "of=clean" in n)
    np.testing.assert_allclose(odin_score(run.outputs[odin_clean].logits), id_scores, rtol=1e-5)
    for name, ood in synthetic_ood_sets(test, seed=cfg.seed).items():
        ood_scores = -detector.predict(torch.from_numpy(ood.x)).numpy()
        # At T = 1000 the scores sit within ~1e-5 of 1/C, so float32 batching noise can swap near-ties.
        assert rows[("odin", name)]["auroc"] == pytest.approx(auroc(id_scores, ood_scores), abs=1e-3)


def test_odin_is_skipped_without_gradients(tmp_path):
    ds, model = make_blobs_dataset(n=200)
    np.savez(tmp_path / "far.npz", x=(ds.x[:50] + 40).astype(np.float32))
    run = run_evaluation(model, ds, config=EvaluateConfig(ood=[str(tmp_path / "far.npz")], n_bootstrap=100),
                         cache_dir=None)
    section = run.evidence.sections["ood"]
    assert "odin" not in {r["detector"] for r in section.tables["detectors"]}
    assert any("ODIN was not run" in f.message for f in section.findings)
    assert section.config["odin"] is None


def test_vim_runs_for_onnx_models_from_the_graph_head(tmp_path):
    """The ONNX head (Gemm with transB=1 here) is read from the graph and matches the torch weights."""
    import torch

    from assay.data.loader import load_data
    from assay.demo import DigitsCNN
    from assay.models.export import export_onnx
    from assay.models.loader import load_model

    torch.manual_seed(0)
    net = DigitsCNN().eval()
    test = load_data("digits:test")
    export_onnx(net, torch.from_numpy(test.x[:2]), tmp_path / "m.onnx")
    model = load_model(str(tmp_path / "m.onnx"))
    weight, bias = model.last_layer()
    np.testing.assert_allclose(weight, net.fc2.weight.detach().numpy(), atol=1e-7)
    np.testing.assert_allclose(bias, net.fc2.bias.detach().numpy(), atol=1e-7)
    run = run_evaluation(model, test, config=EvaluateConfig(ood=["synthetic"], n_bootstrap=100), cache_dir=None)
    assert "vim" in {r["detector"] for r in run.evidence.sections["ood"].tables["detectors"]}


def test_onnx_head_forms(tmp_path):
    """MatMul + Add heads, Gemm with transB=0/alpha/beta, and heads that are not affine in the features."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from assay.models.loader import load_model

    rng = np.random.default_rng(0)
    w1, w2, b = rng.normal(size=(4, 6)), rng.normal(size=(6, 3)), rng.normal(size=3)

    def build(head_nodes, inits, name):
        nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["f"]), *head_nodes]
        graph = helper.make_graph(
            nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 3])],
            [numpy_helper.from_array(a.astype(np.float32), n) for n, a in {"w1": w1, **inits}.items()])
        path = tmp_path / f"{name}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
        return load_model(str(path))

    x = rng.normal(size=(20, 4)).astype(np.float32)
    cases = {
        "matmul_add": ([helper.make_node("MatMul", ["f", "w2"], ["z"]),
                        helper.make_node("Add", ["b", "z"], ["logits"])],
                       {"w2": w2, "b": b}, (w2.T, b)),
        "gemm": ([helper.make_node("Gemm", ["f", "w2", "b"], ["logits"], alpha=2.0, beta=0.5)],
                 {"w2": w2, "b": b}, (2 * w2.T, 0.5 * b)),
    }
    for name, (nodes, inits, (w_expected, b_expected)) in cases.items():
        model = build(nodes, inits, name)
        weight, bias = model.last_layer()
        np.testing.assert_allclose(weight, w_expected, rtol=1e-6)
        np.testing.assert_allclose(bias, b_expected, rtol=1e-6)
        logits, feats = model.forward(x, want_features=True)
        np.testing.assert_allclose(feats @ weight.T + bias, logits, rtol=1e-4, atol=1e-4)
    # A non-affine head (ReLU after the last MatMul): no last layer.
    relu_head = build([helper.make_node("MatMul", ["f", "w2"], ["z"]), helper.make_node("Relu", ["z"], ["logits"])],
                      {"w2": w2}, "relu")
    assert relu_head.last_layer() is None


def _confident_ood(model, n: int = 300, scale: float = 6.0, seed: int = 3) -> np.ndarray:
    """Inputs far out along the class centres of the nearest-centre linear model: its logits x.c_k grow with
    the distance, so it is more confident on them than on any evaluation input."""
    rng = np.random.default_rng(seed)
    centres = model.weight.T
    return (scale * centres[rng.integers(0, len(centres), n)] + rng.normal(0, 0.5, (n, centres.shape[1]))
            ).astype(np.float32)


def test_a_more_confident_ood_set_is_a_warning_that_says_so(tmp_path):
    ds, model = make_blobs_dataset(n=400, noise=1.5)
    np.savez(tmp_path / "confident.npz", x=_confident_ood(model))
    run = run_evaluation(model, ds, config=EvaluateConfig(ood=[str(tmp_path / "confident.npz")], n_bootstrap=200),
                         cache_dir=None)
    section = run.evidence.sections["ood"]
    rows = {r["detector"]: r for r in section.tables["detectors[confident]"]}
    # Independent reference: max-logit AUROC (OOD positive, higher score = more ID) from scikit-learn.
    perm = np.random.default_rng(__import__("assay").stats.spawn_seed(0, "ood/split")).permutation(400)
    id_half = np.sort(perm[200:])
    max_logit_id = (ds.x @ model.weight + model.bias).max(1)[id_half]
    max_logit_ood = (_confident_ood(model) @ model.weight + model.bias).max(1)
    expected = roc_auc_score(np.r_[np.zeros(200), np.ones(300)], -np.r_[max_logit_id, max_logit_ood])
    assert expected < 0.01 and rows["max_logit"]["auroc"] == pytest.approx(expected, abs=1e-6)
    assert rows["max_logit"]["auroc_ci_high"] < 0.5 and rows["mahalanobis"]["auroc"] > 0.95

    assert section.verdict == "warn"
    (cause,) = section.verdict_reasons()
    assert cause.severity == "warning" and cause.sets_verdict and cause.evidence == "ood.tables.detectors[confident]"
    assert cause.message.startswith("the model is more confident on OOD set confident than on the evaluation data")
    assert "confidence-based rejection would keep the OOD inputs and reject real ones" in cause.message
    assert "max_logit 0.000" in cause.message and "energy 0.000" in cause.message
    assert "mahalanobis AUROC 1.000" in cause.message  # the feature detector that does separate it
    # The seeded-half caveat is a warning too, but not why the section warns.
    assert all("seeded half" not in f.message for f in section.verdict_reasons())
    assert not section.summary.startswith("best")
    assert section.summary.startswith("6 detectors x 1 OOD set(s); MSP baseline AUROC")

    from assay.report import render_markdown

    md = render_markdown(run.evidence)
    assert "**Why WARN:** the model is more confident on OOD set confident than on the evaluation data" in md


def test_the_ood_section_leads_with_one_table_per_set(tmp_path):
    ds, model = make_blobs_dataset(n=400, noise=1.5)
    np.savez(tmp_path / "confident.npz", x=_confident_ood(model))
    np.savez(tmp_path / "far.npz", x=np.random.default_rng(1).normal(0, 12, (300, 4)).astype(np.float32))
    run = run_evaluation(model, ds, config=EvaluateConfig(ood=[str(tmp_path / "confident.npz"),
                                                               str(tmp_path / "far.npz")], n_bootstrap=100),
                         cache_dir=None)
    section = run.evidence.sections["ood"]
    assert section.lead_tables == ["detectors[confident]", "detectors[far]"]
    full = section.tables["detectors"]
    for name in ("confident", "far"):
        lead = section.tables[f"detectors[{name}]"]
        assert [r["detector"] for r in lead] == [r["detector"] for r in full if r["ood_set"] == name]
        assert set(lead[0]) == {"detector", "auroc", "auroc_ci_low", "auroc_ci_high", "fpr_at_95_tpr",
                                "fpr_at_95_tpr_ci_low", "fpr_at_95_tpr_ci_high"}
        by_detector = {r["detector"]: r for r in full if r["ood_set"] == name}
        for row in lead:  # the same numbers as the full table and the metric list
            assert row["auroc"] == by_detector[row["detector"]]["auroc"]
            assert row["fpr_at_95_tpr"] == section.metrics[f"fpr_at_95_tpr[{row['detector']},{name}]"].value
    assert len(section.metrics) == 4 * 6 * 2 + 1  # the full list stays in the evidence

    from assay.report import render_html

    html = render_html(run.evidence)
    body = html[html.index('<section class="check" id="s-ood">'):]
    body = body[:body.index("</section>")]
    first, second = (body.index(f'id="s-ood.tables.detectors-{name}"') for name in ("confident", "far"))
    fold = body.index('<details class="block" id="s-ood-all">')
    assert first < second < body.index("<h4>Plots</h4>") < fold < body.index('<table class="metrics">')
    assert "All 49 metrics and 1 full table (also in evidence.json)" in body
    msp = next(r for r in section.tables["detectors[far]"] if r["detector"] == "msp")
    assert f"{msp['auroc']:.4f}<span class=\"ci\">" in body[second:fold]


def test_a_poorly_separated_ood_set_warns_with_the_msp_rule(tmp_path):
    """OOD inputs drawn like the evaluation data: MSP cannot tell them apart (AUROC near 0.5, not inverted)."""
    ds, model = make_blobs_dataset(n=400, noise=1.5)
    same, _ = make_blobs_dataset(n=300, noise=1.5, seed=0)
    np.savez(tmp_path / "alike.npz", x=same.x[::-1].copy() + np.float32(0.01))
    run = run_evaluation(model, ds, config=EvaluateConfig(ood=[str(tmp_path / "alike.npz")], n_bootstrap=200),
                         cache_dir=None)
    section = run.evidence.sections["ood"]
    msp = next(r for r in section.tables["detectors[alike]"] if r["detector"] == "msp")
    assert msp["auroc_ci_low"] < 0.5 < msp["auroc_ci_high"]  # chance level
    assert section.verdict == "warn"
    (cause,) = section.verdict_reasons()
    assert cause.message.startswith("max-softmax confidence separates OOD set alike poorly from the evaluation data")
    assert f"msp AUROC {msp['auroc']:.3f}" in cause.message and "warn below 0.8" in cause.message
    assert f"still accepts {msp['fpr_at_95_tpr']:.0%} of these OOD inputs" in cause.message


@pytest.mark.parametrize(("auroc", "ci_high", "inverted"), [
    (0.10, 0.20, True), (0.45, 0.49, True), (0.20, 0.55, False), (0.45, 0.60, False),
    (0.25, None, True), (0.25, float("nan"), True), (0.35, None, False), (0.0, float("nan"), True)])
def test_inverted_auroc_rule(auroc, ci_high, inverted):
    from assay.checks.ood import auroc_inverted

    assert auroc_inverted(auroc, ci_high) is inverted
