"""Robustness checks end to end: corruption metrics against hand computations, CE/mCE formulas,
baseline normalization, adversarial worst-case protocol, sanity findings, bad input."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from assay.api import run_evaluation
from assay.checks.base import EvaluateConfig
from assay.checks.corruption import corruption_error, relative_corruption_error
from assay.data.loader import load_data
from assay.demo import train_digits_cnn
from assay.errors import UserError
from assay.evidence.schema import ModelInfo
from assay.models.torch_models import TorchModel
from assay.stats.calibration import ece
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
    cfg = {"corruptions": ["gaussian_noise"], "severities": [2, 4], "n_bootstrap": 100}
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
    adv = {name: run.outputs[name].logits.argmax(1) == small.y
           for name in run.outputs.views if name.startswith("adversarial:")}
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
    # The robust/clean ratio rule: its finding's severity follows the verdict it gives, and it is the cause.
    ratio = m.value / section.metrics["clean_accuracy"].value
    (rule,) = [f for f in section.findings if "verdict: warn below" in f.message]
    expected = "critical" if ratio < 0.1 else "warning" if ratio < 0.5 else "info"
    assert rule.severity == expected and rule.sets_verdict == (expected != "info")
    if section.verdict != "pass":
        assert rule in section.verdict_reasons()


def test_gradient_masking_is_reported(digits, nets):
    _, test = digits
    small = test.subset(np.arange(60))
    masked = torch_model(Quantized(nets[0]), "masked")
    cfg = EvaluateConfig(adversarial="standard", eps=[0.2], attack_steps=5, square_queries=100, n_bootstrap=100)
    section = run_evaluation(masked, small, config=cfg, cache_dir=None).evidence.sections["adversarial"]
    critical = [f.message for f in section.findings if f.severity == "critical"]
    assert any("gradient masking" in msg for msg in critical), section.findings
    assert section.verdict == "fail"
    assert any("gradient masking" in f.message for f in section.verdict_reasons())


def test_white_box_on_onnx_offers_blackbox(digits, nets, tmp_path):
    from assay.models.export import export_onnx

    _, test = digits
    path = export_onnx(nets[0], torch.from_numpy(test.x[:2]), tmp_path / "m.onnx")
    with pytest.raises(UserError, match="--adversarial blackbox"):
        run_evaluation(str(path), test, config=EvaluateConfig(adversarial="quick"), cache_dir=None)
    cfg = EvaluateConfig(adversarial="blackbox", eps=[0.2], square_queries=30, n_bootstrap=100)
    section = run_evaluation(str(path), test.subset(np.arange(40)), config=cfg,
                             cache_dir=None).evidence.sections["adversarial"]
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
    section = run_evaluation(torch_model(nets[0], "a"), small, config=cfg,
                             cache_dir=None).evidence.sections["adversarial"]
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
    section = run_evaluation(TorchModel(head.eval(), info), three, config=cfg,
                             cache_dir=None).evidence.sections["adversarial"]
    assert "apgd-t" not in {row["attack"] for row in section.tables["attacks"]}
    assert any("APGD-T was not run" in f.message for f in section.findings)


# ------------------------------------------------- severity scale: image size and non-monotone accuracy


def _corruption_section(correct_by_severity: dict[int, np.ndarray], *, name: str = "elastic_transform",
                        shape: tuple[int, int, int] = (1, 8, 8), table: str = "auto",
                        clean: np.ndarray | None = None, n_bootstrap: int = 400):
    """The corruption check on hand-made outputs: one-hot logits that are right exactly where
    ``correct_by_severity[s]`` says (labels are all 0; a wrong prediction says 1)."""
    from assay.checks.base import CheckContext
    from assay.checks.corruption import check_corruption
    from assay.data.dataset import Dataset
    from assay.engine.cache import ViewOutput
    from assay.engine.robust_views import CorruptionView
    from assay.engine.run import Outputs

    n = len(next(iter(correct_by_severity.values())))
    data = Dataset(x=np.zeros((n, *shape), dtype=np.float32), y=np.zeros(n, dtype=np.int64), ids=np.arange(n),
                   modality="image", name="hand-made", source="hand-made")

    def logits(correct: np.ndarray) -> np.ndarray:
        out = np.zeros((n, 10), dtype=np.float32)
        out[np.arange(n), np.where(correct, 0, 1)] = 1.0
        return out

    clean = np.ones(n, dtype=bool) if clean is None else clean
    views, outputs = {}, {"clean": ViewOutput(logits=logits(clean), features=None)}
    for severity, correct in correct_by_severity.items():
        view = CorruptionView(data, name, severity, table=table)
        views[view.spec.key()] = view
        outputs[view.spec.key()] = ViewOutput(logits=logits(correct), features=None)
    config = EvaluateConfig(corruptions=[name], severities=sorted(correct_by_severity), n_bootstrap=n_bootstrap,
                            corruption_table=table)
    return check_corruption(CheckContext(outputs=Outputs(views=outputs), dataset=data, config=config, views=views))


def _first(n: int, k: int) -> np.ndarray:
    return np.arange(n) < k


def test_accuracy_rising_with_severity_is_reported_with_a_paired_test():
    from scipy.stats import binomtest

    n = 300
    # Accuracy rises 0.30 -> 0.60 from severity 1 to 5; the samples right at 1 stay right (nested sets),
    # so every discordant pair says "rose".
    rising = {s: _first(n, k) for s, k in zip(range(1, 6), (90, 95, 100, 150, 180))}
    section = _corruption_section(rising)
    reversals = section.tables["severity_reversals"]
    pairs = {(r["severity_low"], r["severity_high"]): r for r in reversals}
    top = pairs[(1, 5)]
    assert top["accuracy_low"] == pytest.approx(0.30) and top["accuracy_high"] == pytest.approx(0.60)
    assert (top["rose"], top["fell"]) == (90, 0) and top["rise"] == pytest.approx(0.30)
    assert top["p_mcnemar"] == pytest.approx(binomtest(0, 90).pvalue)
    # Holm over all C(5, 2) = 10 pairs: the smallest p-value is multiplied by 10.
    assert top["p_holm"] == pytest.approx(min(1.0, 10 * binomtest(0, 90).pvalue))
    assert 0 < top["rise_ci_low"] <= 0.30 <= top["rise_ci_high"]
    # 1 -> 2 (5 samples) and 2 -> 3 (5) are too small to be significant; 3 -> 4 (50) is not.
    assert (1, 2) not in pairs and (2, 3) not in pairs and (3, 4) in pairs
    messages = [f.message for f in section.findings if "elastic_transform: accuracy is higher" in f.message]
    assert len(messages) == 1
    assert "severity 5 (0.600) than at severity 1 (0.300)" in messages[0] and "McNemar" in messages[0]
    assert [f.severity for f in section.findings if f.message == messages[0]] == ["warning"]
    assert section.config["severity_order_test"]["pairs_tested"] == 10


def test_falling_or_flat_accuracy_raises_no_severity_finding():
    n = 300
    falling = {s: _first(n, k) for s, k in zip(range(1, 6), (280, 250, 200, 150, 90))}
    # Flat within noise: severity 2 is 4 samples better than 1 (4 rose, 0 fell): p = 0.125, not significant.
    flat = {1: _first(n, 150), 2: _first(n, 154), 3: _first(n, 150)}
    for case in (falling, flat):
        section = _corruption_section(case, shape=(1, 32, 32))
        assert "severity_reversals" not in section.tables
        assert not [f for f in section.findings if "accuracy is higher at severity" in f.message]
        assert not [f for f in section.findings if "far below" in f.message]  # 32 px: the CIFAR design size


def test_a_rise_in_accuracy_counts_only_beyond_chance_on_the_same_samples():
    """Same accuracies (0.40 -> 0.45), different pairing: 20 samples turning right and none wrong is
    beyond chance; 170 turning right while 150 turn wrong is not (exact McNemar p ~ 0.29)."""
    from scipy.stats import binomtest

    n = 400
    low, nested = _first(n, 160), _first(n, 180)
    churn = np.zeros(n, dtype=bool)
    churn[150:330] = True
    assert churn.mean() == nested.mean() == 0.45
    flagged = _corruption_section({1: low, 2: nested}, shape=(1, 32, 32)).tables["severity_reversals"]
    assert [(r["rose"], r["fell"]) for r in flagged] == [(20, 0)]
    churned = _corruption_section({1: low, 2: churn}, shape=(1, 32, 32))
    assert "severity_reversals" not in churned.tables
    assert binomtest(150, 320).pvalue > 0.05


@pytest.mark.parametrize("side,table,warned", [(8, "auto", True), (15, "auto", True), (16, "auto", False),
                                               (32, "cifar", False), (111, "imagenet", True),
                                               (112, "imagenet", False)])
def test_images_far_below_the_tables_design_size_are_flagged(side, table, warned):
    n = 60
    monotone = {1: _first(n, 50), 3: _first(n, 40)}
    section = _corruption_section(monotone, shape=(1, side, side), table=table)
    warnings = [f for f in section.findings if "far below" in f.message]
    assert bool(warnings) == warned
    resolved = "cifar" if table == "auto" else table
    design = {"cifar": 32, "imagenet": 224}[resolved]
    if warned:
        (finding,) = warnings
        assert finding.severity == "warning"
        assert f"{side}x{side} px" in finding.message and f"{design}x{design} px" in finding.message
        assert f"('{resolved}')" in finding.message and "non-monotone" in finding.message
    scale = section.config["table_scale"]
    assert scale["image_size"] == [side, side] and scale["tables"][resolved]["far_below"] == warned


def test_digits_at_8px_warn_about_the_cifar_table_and_the_elastic_reversal(digits, nets):
    """The case that motivated both warnings: 8x8 digits under the CIFAR-10-C table (design size 32 px),
    where elastic_transform's severity 1 (a large affine warp, no smooth field) hurts more than 5."""
    _, test = digits
    cfg = EvaluateConfig(corruptions=["elastic_transform"], severities=[1, 5], n_bootstrap=200)
    run = run_evaluation(torch_model(nets[0], "a"), test, config=cfg, cache_dir=None)
    section = run.evidence.sections["corruption"]
    rows = {r["severity"]: r["accuracy"] for r in section.tables["per_view"]}
    assert rows[5] > rows[1]
    messages = [f.message for f in section.findings if f.severity == "warning"]
    assert any("8x8 px, far below the 32x32 px the CIFAR-10-C" in m for m in messages), messages
    assert any(m.startswith("elastic_transform: accuracy is higher at severity 5") for m in messages), messages
