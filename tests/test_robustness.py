"""Robustness checks end to end: corruption metrics against hand computations, CE/mCE formulas,
baseline normalization, adversarial worst-case protocol, sanity findings, bad input."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from assay.api import run_evaluation
from assay.checks.base import EvaluateConfig
from assay.checks.calibration import ece
from assay.checks.corruption import corruption_error, relative_corruption_error
from assay.data.loader import load_data
from assay.demo import train_digits_cnn
from assay.errors import UserError
from assay.evidence.schema import ModelInfo
from assay.models.torch_models import TorchModel
from assay.stats.probabilities import softmax


def torch_model(module: torch.nn.Module, name: str = "net", shape: tuple[int, ...] = (1, 8, 8)) -> TorchModel:
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in module.parameters()) + name.encode())
    info = ModelInfo(path=f"<{name}>", format="factory", sha256=digest.hexdigest(), input_shape=[None, *shape],
                     input_dtype="float32", num_classes=10, class_names=[str(i) for i in range(10)])
    return TorchModel(module.eval(), info)


@pytest.fixture(scope="module")
def digits():
    return load_data("digits:train"), load_data("digits:test")


@pytest.fixture(scope="module")
def nets(digits):
    train, _ = digits
    return train_digits_cnn(train.x, train.y, epochs=8, seed=0), train_digits_cnn(train.x, train.y, epochs=2, seed=1)


def test_corruption_errors_hand_case():
    errors = np.array([[0.2, 0.4], [0.1, 0.1]])
    reference = np.array([[0.4, 0.4], [0.2, 0.3]])
    np.testing.assert_allclose(corruption_error(errors, reference), [0.6 / 0.8, 0.2 / 0.5])
    # relative: sum_s (E - E_clean) / sum_s (E_ref - E_ref_clean), with E_clean = 0.05, E_ref_clean = 0.1
    np.testing.assert_allclose(relative_corruption_error(errors, 0.05, reference, 0.1),
                               [(0.15 + 0.35) / (0.3 + 0.3), (0.05 + 0.05) / (0.1 + 0.2)])
    # vectorized over resamples: one clean error per resample
    batched = relative_corruption_error(np.stack([errors, errors]), np.array([0.05, 0.0]), reference, 0.1)
    np.testing.assert_allclose(batched[0], [(0.15 + 0.35) / 0.6, 0.1 / 0.3])
    np.testing.assert_allclose(batched[1], [0.6 / 0.6, 0.2 / 0.3])


def test_corruption_check_matches_hand_computation(digits, nets, tmp_path):
    _, test = digits
    model = torch_model(nets[0], "a")
    cfg = EvaluateConfig(corruptions=["gaussian_noise", "contrast"], severities=[1, 3, 5], n_bootstrap=200)
    run = run_evaluation(model, test, config=cfg, cache_dir=tmp_path)
    section = run.evidence.sections["corruption"]
    rows = section.tables["per_view"]
    assert len(rows) == 6
    clean_correct = run.outputs.clean.logits.argmax(1) == test.y
    errors = []
    for row in rows:
        view = next(name for name, v in run.outputs.views.items() if name.startswith("corruption:")
                    and f"name={row['corruption']}," in name and f"severity={row['severity']}," in name)
        logits = run.outputs[view].logits
        correct = logits.argmax(1) == test.y
        assert row["accuracy"] == pytest.approx(correct.mean())
        assert row["accuracy_ci_low"] <= row["accuracy"] <= row["accuracy_ci_high"]
        assert row["flip_rate"] == pytest.approx((clean_correct & ~correct).sum() / clean_correct.sum())
        assert row["ece"] == pytest.approx(ece(softmax(logits), test.y))
        errors.append(1 - correct.mean())
    errors = np.array(errors).reshape(2, 3)
    clean_error = 1 - clean_correct.mean()
    m = section.metrics
    assert m["mean_corruption_accuracy"].value == pytest.approx(1 - errors.mean())
    # No baseline: normalized by the model's own clean error, and labelled so.
    assert m["mce"].value == pytest.approx(np.mean(errors.sum(1) / (3 * clean_error)))
    assert m["relative_mce"].value == pytest.approx(np.mean((errors - clean_error).sum(1) / (3 * clean_error)))
    assert "own clean error" in m["mce"].config["normalizer"]
    worst = int(np.argmax(errors.mean(1)))
    assert m["worst_corruption_accuracy"].config["corruption"] == ["gaussian_noise", "contrast"][worst]
    for name in ("mean_corruption_accuracy", "mce", "flip_rate", "mean_ece_under_corruption"):
        assert m[name].ci_low <= m[name].value <= m[name].ci_high, name
    assert {"severity_noise", "severity_digital", "examples"} <= set(section.plots)
    # A second identical run hits the cache for every view.
    calls_before = run.outputs.forward_batches
    again = run_evaluation(model, test, config=cfg, cache_dir=tmp_path)
    assert calls_before > 0 and again.outputs.forward_batches == 0


def test_baseline_normalizes_ce(digits, nets, tmp_path):
    _, test = digits
    cfg = dict(corruptions=["gaussian_noise"], severities=[2, 4], n_bootstrap=100)
    from assay.api import write_evaluation

    base_run = run_evaluation(torch_model(nets[1], "b"), test, config=EvaluateConfig(**cfg), cache_dir=None)
    write_evaluation(base_run, tmp_path / "base")
    run = run_evaluation(torch_model(nets[0], "a"), test, config=EvaluateConfig(**cfg, baseline=str(tmp_path / "base")),
                         cache_dir=None)
    ours = [1 - r["accuracy"] for r in run.evidence.sections["corruption"].tables["per_view"]]
    theirs = [1 - r["accuracy"] for r in base_run.evidence.sections["corruption"].tables["per_view"]]
    mce = run.evidence.sections["corruption"].metrics["mce"]
    assert mce.value == pytest.approx(sum(ours) / sum(theirs))
    assert "baseline" in mce.config["normalizer"]


class Quantized(torch.nn.Module):
    """Gradient masking by construction: inputs are rounded to 8 bits (zero gradient almost everywhere)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x * 255) / 255)


def test_adversarial_worst_case_protocol(digits, nets):
    _, test = digits
    small = test.subset(np.arange(120))
    cfg = EvaluateConfig(adversarial="standard", eps=[0.15], attack_steps=10, square_queries=50, n_bootstrap=200)
    run = run_evaluation(torch_model(nets[0], "a"), small, config=cfg, cache_dir=None)
    section = run.evidence.sections["adversarial"]
    clean_correct = run.outputs.clean.logits.argmax(1) == small.y
    adv = {name: run.outputs[name].logits.argmax(1) == small.y for name in run.outputs.views if name.startswith("adversarial:")}
    main = [name for name in adv if "eps=0.15," in name]
    assert len(main) == 3 and len(adv) == 9  # 3 attacks x (eps/4, eps/2, eps)
    robust = clean_correct.copy()
    for name in main:
        robust &= adv[name]
    m = section.metrics["robust_accuracy"]
    assert m.value == pytest.approx(robust.mean())
    assert m.value <= section.metrics["clean_accuracy"].value
    assert m.ci_low <= m.value <= m.ci_high
    for name in main:  # each attack alone is weaker than (or as strong as) the worst case
        attack = name.split("attack=")[1].split(",")[0]
        assert section.metrics[f"robust_accuracy_{attack}@0.15"].value >= m.value
    curve = [row["robust_accuracy"] for row in section.tables["robust_vs_eps"]]
    assert len(curve) == 3
    assert {"robust_vs_eps", "per_class", "examples"} <= set(section.plots)
    text = " ".join(f.message for f in section.findings)
    assert "eval mode" in text and "not AutoAttack" in text
    assert "non-zero" in text


def test_gradient_masking_is_reported(digits, nets):
    _, test = digits
    small = test.subset(np.arange(60))
    masked = torch_model(Quantized(nets[0]), "masked")
    cfg = EvaluateConfig(adversarial="standard", eps=[0.2], attack_steps=5, square_queries=100, n_bootstrap=100)
    section = run_evaluation(masked, small, config=cfg, cache_dir=None).evidence.sections["adversarial"]
    critical = [f.message for f in section.findings if f.severity == "critical"]
    assert any("gradient masking" in msg for msg in critical), section.findings
    assert section.verdict == "fail"


def test_white_box_on_onnx_offers_blackbox(digits, nets, tmp_path):
    from assay.models.export import export_onnx

    _, test = digits
    path = export_onnx(nets[0], torch.from_numpy(test.x[:2]), tmp_path / "m.onnx")
    with pytest.raises(UserError, match="--adversarial blackbox"):
        run_evaluation(str(path), test, config=EvaluateConfig(adversarial="quick"), cache_dir=None)
    cfg = EvaluateConfig(adversarial="blackbox", eps=[0.2], square_queries=30, n_bootstrap=100)
    section = run_evaluation(str(path), test.subset(np.arange(40)), config=cfg, cache_dir=None).evidence.sections["adversarial"]
    assert section.metrics["robust_accuracy"].value <= section.metrics["clean_accuracy"].value


def test_bad_robustness_options(digits, nets):
    from assay.engine.planning import parse_eps, parse_severities, resolve_corruptions

    assert parse_eps("8/255") == [8 / 255] and parse_eps("0.5,1/4") == [0.25, 0.5]
    for bad in ("eight", "8/0", "-1", ""):
        with pytest.raises(UserError, match="--eps"):
            parse_eps(bad)
    assert parse_severities("1-3,5") == [1, 2, 3, 5]
    with pytest.raises(UserError, match="1..5"):
        parse_severities("0-6")
    with pytest.raises(UserError, match="choose from") as err:
        resolve_corruptions("gaussian_noize", "image")
    assert "gaussian_noise" in str(err.value)
    with pytest.raises(UserError, match="is a text corruption"):
        resolve_corruptions("keyboard_typo", "image")
    _, test = digits
    tab = load_data("digits:test")
    with pytest.raises(UserError, match="needs image inputs"):
        from assay.data.dataset import Dataset

        flat = Dataset(x=tab.x.reshape(len(tab.x), -1), y=tab.y, ids=tab.ids, modality="tabular", name="t", source="t")
        run_evaluation(torch_model(torch.nn.Sequential(torch.nn.Linear(64, 10)), "lin", (64,)), flat,
                       config=EvaluateConfig(adversarial="quick"), cache_dir=None)


def test_precomputed_corruption_set_as_data(digits, nets, tmp_path):
    """A CIFAR-10-C-style folder: <name>.npy with 5 severities stacked (NHWC uint8) and labels.npy."""
    _, test = digits
    small = test.subset(np.arange(50))
    rng = np.random.default_rng(0)
    stacked = np.concatenate([np.clip(small.x + rng.normal(0, 0.1 * s, small.x.shape), 0, 1) for s in range(1, 6)])
    nhwc = (np.moveaxis(stacked, 1, -1) * 255).round().astype(np.uint8)
    (tmp_path / "c").mkdir()
    np.save(tmp_path / "c" / "my_noise.npy", nhwc)
    np.save(tmp_path / "c" / "labels.npy", np.tile(small.y, 5))
    model = torch_model(nets[0], "a")
    run = run_evaluation(model, small, config=EvaluateConfig(corruption_data=str(tmp_path / "c"), n_bootstrap=100),
                         cache_dir=None)
    rows = run.evidence.sections["corruption"].tables["per_view"]
    assert [r["severity"] for r in rows] == [1, 2, 3, 4, 5] and {r["family"] for r in rows} == {"precomputed"}
    x3 = np.moveaxis(nhwc[100:150], -1, 1).astype(np.float32) / 255
    expected = (model.logits(x3).argmax(1) == small.y).mean()
    assert rows[2]["accuracy"] == pytest.approx(expected)
    np.save(tmp_path / "c" / "labels.npy", np.tile(small.y[::-1], 5))
    with pytest.raises(UserError, match="labels.npy"):
        run_evaluation(model, small, config=EvaluateConfig(corruption_data=str(tmp_path / "c")), cache_dir=None)


def test_explicit_attack_list_and_few_class_note(digits, nets):
    from assay.engine.planning import parse_attacks

    _, test = digits
    small = test.subset(np.arange(40))
    cfg = EvaluateConfig(attacks=["fgsm", "pgd"], eps=[0.1], attack_steps=5, n_bootstrap=100)
    section = run_evaluation(torch_model(nets[0], "a"), small, config=cfg, cache_dir=None).evidence.sections["adversarial"]
    assert [row["attack"] for row in section.tables["attacks"]] == ["fgsm", "pgd"]
    assert section.config["preset"] == "custom (--attacks)"
    with pytest.raises(UserError, match="choose from fgsm, pgd"):
        parse_attacks("pgd,cw")

    # A 3-class problem: APGD-T (targeted DLR over >= 3 other classes) is skipped, and the report says so.
    three = small.subset(np.flatnonzero(small.y < 3))
    head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    torch.manual_seed(0)
    info = ModelInfo(path="<three>", format="factory", sha256="3" * 64, input_shape=[None, 1, 8, 8],
                     input_dtype="float32", num_classes=3, class_names=["0", "1", "2"])
    cfg = EvaluateConfig(adversarial="standard", eps=[0.1], attack_steps=3, square_queries=10, n_bootstrap=100)
    section = run_evaluation(TorchModel(head.eval(), info), three, config=cfg, cache_dir=None).evidence.sections["adversarial"]
    assert "apgd-t" not in {row["attack"] for row in section.tables["attacks"]}
    assert any("APGD-T was not run" in f.message for f in section.findings)
