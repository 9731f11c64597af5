"""The regression gate end to end: planted regressions fail, noise passes, outputs and bad input."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from assay.api import run_evaluation, write_evaluation
from assay.checks.base import EvaluateConfig
from assay.cli import main
from assay.compare.gate import Side, compare_sides
from assay.compare.policy import DEFAULT_POLICY, parse_policy
from assay.compare.run import compare
from assay.errors import UserError
from conftest import make_blobs_dataset

N, C = 2000, 10


def _logits(labels: np.ndarray, correct: np.ndarray, rng: np.random.Generator, margin: float = 3.0) -> np.ndarray:
    """Logits whose argmax is the label where ``correct``, a random other class elsewhere."""
    pred = np.where(correct, labels, (labels + rng.integers(1, C, size=len(labels))) % C)
    z = rng.normal(size=(len(labels), C))
    z[np.arange(len(labels)), pred] += margin + rng.exponential(1.0, size=len(labels))
    return z.astype(np.float32)


@pytest.fixture(scope="module")
def evidence():
    """A real evidence object for an N-sample, C-class data set (the gate reads its metadata)."""
    rng = np.random.default_rng(0)
    ds, model = make_blobs_dataset(n=N, num_classes=C, dim=4)
    run = run_evaluation(model, ds, config=EvaluateConfig(n_bootstrap=100), cache_dir=None)
    return run.evidence, ds.ids, ds.y, rng


def _side(name, evidence, ids, labels, logits):
    return Side(name=name, evidence=evidence, predictions={"ids": ids, "labels": labels, "logits": logits}, path=name)


def test_planted_single_class_regression_fails_the_per_class_rule(evidence):
    ev, ids, labels, _ = evidence
    rng = np.random.default_rng(1)
    correct_a = rng.random(N) < 0.9
    correct_b = correct_a.copy()
    target = np.flatnonzero((labels == 3) & correct_a)
    drop = rng.choice(target, size=int(round(0.10 * (labels == 3).sum())), replace=False)
    correct_b[drop] = False  # class 3 loses 10 points ...
    fixable = np.flatnonzero((labels != 3) & ~correct_a)
    correct_b[rng.choice(fixable, size=len(drop), replace=False)] = True  # ... the others gain them back
    logits_a = _logits(labels, correct_a, rng)
    logits_b = logits_a.copy()
    changed = np.flatnonzero(correct_a != correct_b)
    logits_b[changed] = _logits(labels[changed], correct_b[changed], rng)
    policy = parse_policy("accuracy: {max_drop: 0.005}\nper_class_accuracy: {max_drop: 0.03}\n")
    result = compare_sides(_side("a", ev, ids, labels, logits_a), _side("b", ev, ids, labels, logits_b), policy,
                           n_bootstrap=1000, seed=0)
    rules = {r.metric: r for r in result.rules}
    assert abs(result.metrics["accuracy_delta"].value) < 1e-9  # overall accuracy unchanged
    assert rules["accuracy"].status != "fail"
    assert rules["per_class_accuracy"].status == "fail" and rules["per_class_accuracy"].group == result.class_names[3]
    assert result.verdict == "fail" and result.exit_code == 1
    # Flip counts are exactly the changed predictions, hand-counted.
    assert result.metrics["negative_flip_rate"].value == pytest.approx(len(drop) / N)
    assert result.metrics["positive_flip_rate"].value == pytest.approx(len(drop) / N)
    neg_ids = {f["id"] for f in result.flips["negative"]}
    assert neg_ids <= {str(ids[i]) for i in drop} and len(neg_ids) == min(len(drop), 50)


def test_equal_quality_candidates_pass_the_default_policy(evidence):
    """Noise alone must not fail the gate: <= 5% false fails over 200 simulated equal-quality pairs."""
    ev, ids, labels, _ = evidence
    fails = 0
    for seed in range(200):
        rng = np.random.default_rng(1000 + seed)
        la = _logits(labels, rng.random(N) < 0.9, rng)
        lb = _logits(labels, rng.random(N) < 0.9, rng)
        result = compare_sides(_side("a", ev, ids, labels, la), _side("b", ev, ids, labels, lb), DEFAULT_POLICY,
                               n_bootstrap=200, seed=seed)
        fails += result.verdict == "fail"
    assert fails / 200 <= 0.05


def test_different_data_and_missing_predictions_are_refused(evidence):
    ev, ids, labels, rng = evidence
    la = _logits(labels, rng.random(N) < 0.9, rng)
    other = ev.model_copy(update={"data": ev.data.model_copy(update={"fingerprint": "f" * 64, "name": "other"})})
    with pytest.raises(UserError, match="different data") as info:
        compare_sides(_side("a", ev, ids, labels, la), _side("b", other, ids, labels, la), DEFAULT_POLICY)
    assert "same --data" in info.value.fix
    with pytest.raises(UserError, match="no predictions.npz") as info:
        compare_sides(_side("a", ev, ids, labels, la), Side("candidate", ev, None, "cand"), DEFAULT_POLICY)
    assert "assay evaluate" in info.value.fix


def test_ids_are_aligned_and_rules_without_data_are_skipped(evidence):
    ev, ids, labels, rng = evidence
    la = _logits(labels, rng.random(N) < 0.9, rng)
    order = rng.permutation(N)
    shuffled = Side("b", ev, {"ids": ids[order], "labels": labels[order], "logits": la[order]}, "b")
    policy = parse_policy("accuracy: {max_drop: 0.01}\nper_slice_accuracy: {max_drop: 0.05}\n"
                          "robust_accuracy: {max_drop: 0.05}\n")
    result = compare_sides(_side("a", ev, ids, labels, la), shuffled, policy, n_bootstrap=200)
    assert result.metrics["accuracy_delta"].value == 0 and result.metrics["negative_flip_rate"].value == 0
    rules = {r.metric: r for r in result.rules}
    assert rules["accuracy"].status == "pass"  # identical predictions: exact interval within ±0.2 points
    assert rules["per_slice_accuracy"].status == "skipped" and rules["robust_accuracy"].status == "skipped"


# ------------------------------------------------------------------------------------------- CLI


def _bundles(tmp_path, shift_b=0.0, data_seed=0):
    ds, model = make_blobs_dataset(n=600, num_classes=3, dim=4, seed=data_seed)
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, shift in (("a", 0.0), ("b", shift_b)):
        model.bias = model.bias + shift
        run = run_evaluation(model, ds, config=EvaluateConfig(n_bootstrap=100), cache_dir=None)
        out[name] = write_evaluation(run, tmp_path / name)
    return out


def test_cli_compare_of_bundles_writes_every_output(tmp_path, capsys):
    bundles = _bundles(tmp_path)
    code = main(["compare", str(bundles["a"]), str(bundles["b"]), "--out", str(tmp_path / "cmp"), "-q",
                 "--n-bootstrap", "200"])
    assert code == 0
    cmp = tmp_path / "cmp"
    result = json.loads((cmp / "comparison.json").read_text())
    assert result["verdict"] == "pass" and result["n"] == 600
    suite = ET.parse(cmp / "junit.xml").getroot()
    cases = suite.findall(".//testcase")
    assert len(cases) == len(result["rules"]) and not suite.findall(".//failure")
    md = (cmp / "comparison.md").read_text()
    assert md.startswith("## Assay regression gate") and "| rule | result |" in md
    html = (cmp / "comparison.html").read_text()
    assert "Regression gate" in html and "<script" not in html


def test_cli_compare_exit_codes_for_a_regression_and_bad_input(tmp_path, capsys):
    bundles = _bundles(tmp_path, shift_b=np.array([10.0, 0.0, 0.0], dtype=np.float32))  # b over-predicts class 0
    policy = tmp_path / "gate.yaml"
    policy.write_text("accuracy: {max_drop: 0.01}\n")
    assert main(["compare", str(bundles["a"]), str(bundles["b"]), "--policy", str(policy), "-q",
                 "--out", str(tmp_path / "cmp")]) == 1
    junit = ET.parse(tmp_path / "cmp" / "junit.xml").getroot()
    assert len(junit.findall(".//failure")) == 1
    policy.write_text("accuracy: {max_drop: 0.01}\nf1: {max_drop: 0.01}\n")
    capsys.readouterr()
    assert main(["compare", str(bundles["a"]), str(bundles["b"]), "--policy", str(policy), "-q"]) == 2
    err = capsys.readouterr().err
    assert "unknown metric 'f1'" in err and "gate.yaml:2" in err and "Traceback" not in err
    (bundles["b"] / "predictions.npz").unlink()
    assert main(["compare", str(bundles["a"]), str(bundles["b"]), "-q"]) == 2
    assert "no predictions.npz" in capsys.readouterr().err


def test_cli_compare_refuses_bundles_from_different_data(tmp_path, capsys):
    first = _bundles(tmp_path / "one")
    second = _bundles(tmp_path / "two", data_seed=1)
    assert main(["compare", str(first["a"]), str(second["a"]), "-q", "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    assert "different data" in err and not (tmp_path / "cmp").exists()


def test_library_compare_needs_data_for_model_files(tmp_path):
    with pytest.raises(UserError, match="no --data"):
        compare("model_a.onnx", "model_b.onnx", out=None)


def test_per_slice_rule_reads_slice_columns_from_both_bundles(tmp_path):
    import pandas as pd

    ds, model = make_blobs_dataset(n=800, num_classes=3, dim=4, noise=1.5)
    region = np.random.default_rng(0).choice(["north", "south"], size=800)
    ds.meta = pd.DataFrame({"region": region})
    cfg = EvaluateConfig(n_bootstrap=100, slice_by=["region"])
    a = write_evaluation(run_evaluation(model, ds, config=cfg, cache_dir=None), tmp_path / "a")
    south = region == "south"
    ds_b = ds.subset(np.arange(800))
    ds_b.x[south] = ds_b.x[south][::-1]  # scramble the south inputs: the candidate fails there ...
    run_b = run_evaluation(model, ds_b, config=cfg, cache_dir=None)
    run_b.evidence.data = run_b.evidence.data.model_copy(update={"fingerprint": ds.fingerprint})  # ... same samples
    b = write_evaluation(run_b, tmp_path / "b")
    policy = parse_policy("per_slice_accuracy: {max_drop: 0.05}\n")
    result = compare(a, b, policy=policy, out=None, n_bootstrap=200)
    assert set(result.per_slice) == {"region"}
    rows = {r["group"]: r for r in result.per_slice["region"]}
    assert rows["south"]["delta"] < -0.2 and abs(rows["north"]["delta"]) < 1e-12
    rule = result.rules[0]
    assert rule.status == "fail" and rule.group == "region=south"
