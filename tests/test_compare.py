"""The regression gate end to end: planted regressions fail, noise passes, outputs and bad input."""

from __future__ import annotations

import json
import re
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
from assay.evidence.schema import Metric, Section
from assay.stats.paired import group_delta_p_below, paired_delta_interval, paired_delta_p_below
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
    ids = evidence[1]
    a, b, correct_a, correct_b = _planted_class_drop(evidence)  # class 3 loses 10 points, the others gain them
    drop = np.flatnonzero(correct_a & ~correct_b)
    policy = parse_policy("accuracy: {max_drop: 0.005}\nper_class_accuracy: {max_drop: 0.03}\n")
    result = compare_sides(a, b, policy, n_bootstrap=1000, seed=0)
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


# ------------------------------------------------------------------------------------------- numbers


def _with_latency(ev, p95, lo, hi, runs=72, stop="budget", elapsed_s=1.44, budget_s=2.0):
    """``ev`` with an efficiency section whose batch-1 p95 latency is ``p95`` [lo, hi] from ``runs`` timed calls."""
    metric = Metric(value=p95, ci_low=lo, ci_high=hi, n=runs, method="order-statistic CI, 95%",
                    config={"batch_size": 1, "quantile": 0.95, "threads": 2, "stop_reason": stop})
    section = Section(name="efficiency", title="Efficiency", verdict="info", metrics={"latency_p95_ms": metric},
                      tables={"latency": [{"batch_size": 1, "n_runs": runs, "stop_reason": stop,
                                           "elapsed_s": elapsed_s}]},
                      config={"budget_s_per_batch_size": budget_s})
    return ev.model_copy(update={"sections": {**ev.sections, "efficiency": section}})


def test_inconclusive_latency_rule_asks_for_timing_runs_not_samples(evidence):
    ev, ids, labels, rng = evidence
    la = _logits(labels, rng.random(N) < 0.9, rng)
    policy = parse_policy("latency_p95_ms: {max_increase_pct: 20}\n")
    a = _side("a", _with_latency(ev, 1.00, 0.95, 1.10), ids, labels, la)
    b = _side("b", _with_latency(ev, 1.10, 1.00, 1.30), ids, labels, la)
    rule = compare_sides(a, b, policy, n_bootstrap=100).rules[0]
    # By hand: change +10% with CI (1.00/1.10 - 1, 1.30/0.95 - 1) = (-9.09%, +36.84%) around the limit +20%;
    # the upper half-width 26.84 must shrink to the distance 10: (26.84/10)^2 = 7.205 times the 72 runs.
    assert rule.status == "inconclusive" and rule.n_needed_unit == "timing runs"
    assert rule.n_needed == 519
    assert "about 519 timing runs per model" in rule.message and "samples" not in rule.message
    assert f"({N:,})" not in rule.message  # not the evaluation set's size
    # Both timings ran out of their 2 s budget at 0.02 s per run: 519 runs take 10.4 s.
    assert "--latency-budget 11 or more" in rule.message
    # Timing that stopped because the median was precise: more budget would not add runs; the message says so.
    b_precise = _side("b", _with_latency(ev, 1.10, 1.00, 1.30, stop="precise"), ids, labels, la)
    a_precise = _side("a", _with_latency(ev, 1.00, 0.95, 1.10, stop="precise"), ids, labels, la)
    rule = compare_sides(a_precise, b_precise, policy, n_bootstrap=100).rules[0]
    assert "--latency-budget 11" not in rule.message and "adds no runs" in rule.message
    # Accuracy rules still count evaluation samples.
    acc = compare_sides(a, b, parse_policy("accuracy: {max_drop: 0.0}\n"), n_bootstrap=100).rules[0]
    assert acc.n_needed_unit in ("samples", None)


def test_order_statistic_latency_intervals_narrow_like_one_over_sqrt_runs():
    """The premise of the timing-run count: the p95's order-statistic CI width scales like 1/sqrt(runs)."""
    from assay.stats.order import quantile_ci

    rng = np.random.default_rng(0)

    def width(runs):
        widths = []
        for _ in range(300):
            lo, hi, _ = quantile_ci(np.sort(rng.lognormal(0.0, 0.3, size=runs)), 0.95, 0.95)
            widths.append(hi - lo)
        return float(np.mean(widths))

    assert width(72 * 4) / width(72) == pytest.approx(0.5, abs=0.08)


def _planted_class_drop(evidence, drop_share=0.10):
    """Logits of two models: class 3 loses ``drop_share`` of its samples, others gain them back."""
    ev, ids, labels, _ = evidence
    rng = np.random.default_rng(1)
    correct_a = rng.random(N) < 0.9
    correct_b = correct_a.copy()
    target = np.flatnonzero((labels == 3) & correct_a)
    drop = rng.choice(target, size=int(round(drop_share * (labels == 3).sum())), replace=False)
    correct_b[drop] = False
    fixable = np.flatnonzero((labels != 3) & ~correct_a)
    correct_b[rng.choice(fixable, size=len(drop), replace=False)] = True
    logits_a = _logits(labels, correct_a, rng)
    logits_b = logits_a.copy()
    changed = np.flatnonzero(correct_a != correct_b)
    logits_b[changed] = _logits(labels[changed], correct_b[changed], rng)
    return _side("a", ev, ids, labels, logits_a), _side("b", ev, ids, labels, logits_b), correct_a, correct_b


def test_per_class_p_values_are_exact_below_the_bootstrap_floor(evidence):
    from scipy.stats import binomtest

    a, b, correct_a, correct_b = _planted_class_drop(evidence)
    labels = evidence[2]
    in3 = labels == 3
    n10, n01 = int((in3 & correct_a & ~correct_b).sum()), int((in3 & ~correct_a & correct_b).sum())
    n3 = int(in3.sum())
    b_resamples = 200  # the bootstrap floor would be 1/201
    # Limit 0: the exact one-sided McNemar test on the class's discordant pairs (scipy as the reference).
    result = compare_sides(a, b, parse_policy("per_class_accuracy: {max_drop: 0.0}\n"), n_bootstrap=b_resamples)
    row = next(r for r in result.per_class if r["group"] == result.class_names[3])
    assert (row["negative_flips"], row["positive_flips"]) == (n10, n01)
    assert row["p"] == pytest.approx(binomtest(n10, n10 + n01, 0.5, alternative="greater").pvalue, rel=1e-12)
    assert row["p"] < 1e-4 < 1 / (1 + b_resamples)
    # Limit 0.03: the exact unconditional p-value the class's exact interval inverts; no bootstrap floor.
    result = compare_sides(a, b, parse_policy("per_class_accuracy: {max_drop: 0.03}\n"), n_bootstrap=b_resamples)
    row = next(r for r in result.per_class if r["group"] == result.class_names[3])
    assert row["p"] == pytest.approx(paired_delta_p_below(n01, n10, n3, -0.03), rel=1e-12)
    assert row["p"] < 1 / (1 + b_resamples) and row["ci_high"] < -0.03
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(paired_delta_interval(n01, n10, n3), abs=1e-12)
    # ... which is larger than the (invalid at a non-zero limit) bootstrap p-value, but still significant.
    assert row["p"] > group_delta_p_below(n01, n10, n3, -0.03)
    tested = sum(not r["insufficient"] for r in result.per_class)
    assert row["p_adjusted"] == pytest.approx(min(1.0, tested * row["p"]), rel=1e-9)  # Holm: the smallest p
    assert result.rules[0].status == "fail" and result.rules[0].group == result.class_names[3]
    assert row["status"] == "fail" and all(r["status"] == "pass" for r in result.per_class if r is not row)


def test_comparison_markdown_tables_share_one_format_per_column(evidence):
    from assay.report.comparison import render_markdown

    a, b, _, _ = _planted_class_drop(evidence)
    policy = parse_policy("accuracy: {max_drop: 0.005}\nper_class_accuracy: {max_drop: 0.03}\n")
    md = render_markdown(compare_sides(a, b, policy, n_bootstrap=200))
    for header in ("| rule | result |", "| metric | candidate", "| class | n |"):
        block = md[md.index(header):].split("\n\n")[0].splitlines()[2:]
        cells = [[c.strip() for c in line.strip("|").split("|")] for line in block]
        for column in zip(*cells, strict=True):
            numbers = [c for c in column if re.fullmatch(r"[-+]?\d[\d.e+-]*|\[.*\]", c)]
            notations = {"sci" if "e" in c else "fixed" for c in numbers}
            assert len(notations) <= 1, (header, column)
    assert "McNemar exact test (two-sided, all samples): p = " in md
    assert "| McNemar" not in md  # a p-value is not a delta: it is not in the delta table


def test_cli_compare_latency_rule_reports_timing_runs(tmp_path, capsys):
    """End to end: bundles whose p95 latencies overlap the limit -> comparison.md and comparison.json speak of
    timing runs (and a --latency-budget), never of evaluation samples, for the latency rule."""
    ds, model = make_blobs_dataset(n=600, num_classes=3, dim=4)
    bundles = {}
    for name, (p95, lo, hi) in {"a": (1.00, 0.95, 1.10), "b": (1.10, 1.00, 1.30)}.items():
        run = run_evaluation(model, ds, checks=["performance"], config=EvaluateConfig(n_bootstrap=100), cache_dir=None)
        run.evidence = _with_latency(run.evidence, p95, lo, hi)
        bundles[name] = write_evaluation(run, tmp_path / name)
    policy = tmp_path / "gate.yaml"
    policy.write_text("latency_p95_ms: {max_increase_pct: 20}\n")
    code = main(["compare", str(bundles["a"]), str(bundles["b"]), "--policy", str(policy), "-q",
                 "--out", str(tmp_path / "cmp")])
    assert code == 0  # inconclusive is not a failed gate
    result = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    rule = result["rules"][0]
    assert rule["status"] == "inconclusive" and rule["n_needed"] == 519 and rule["n_needed_unit"] == "timing runs"
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    line = next(line for line in md.splitlines() if line.startswith("| latency_p95_ms"))
    assert "about 519 timing runs per model" in line and "--latency-budget 11" in line and "samples" not in line
    # The verdict says what it means for the exit code, and --fail-on-inconclusive turns it into a failure.
    assert result["verdict"] == "inconclusive" and "No rule failed, so `assay compare` exits 0" in md
    assert any("exit code 0" in note for note in result["notes"])
    assert main(["compare", str(bundles["a"]), str(bundles["b"]), "--policy", str(policy), "-q", "--force",
                 "--out", str(tmp_path / "cmp"), "--fail-on-inconclusive"]) == 1


# ------------------------------------------------------------------------------------------- issue 20 item 4


def _per_class_sides(ev, sizes, wrong, flips):
    """Two sides over classes of the given sizes: ``wrong[k]`` samples of class k wrong in both models,
    ``flips[k]`` = (right -> wrong, wrong -> right) changes of the candidate in class k."""
    labels = np.concatenate([np.full(size, k) for k, size in enumerate(sizes)])
    pred_a = labels.copy()
    for k in range(len(sizes)):
        idx = np.flatnonzero(labels == k)
        pred_a[idx[:wrong[k]]] = (k + 1) % C
    pred_b = pred_a.copy()
    for k, (lost, gained) in flips.items():
        idx = np.flatnonzero(labels == k)
        pred_b[idx[wrong[k]:wrong[k] + lost]] = (k + 2) % C  # right -> wrong
        pred_b[idx[:gained]] = k  # wrong -> right
    rng = np.random.default_rng(0)
    ids = np.array([f"s{i}" for i in range(len(labels))])

    def logits(pred):
        z = rng.normal(size=(len(labels), C)).astype(np.float32)
        z[np.arange(len(labels)), pred] += 6.0
        return z

    return _side("a", ev, ids, labels, logits(pred_a)), _side("b", ev, ids, labels, logits(pred_b))


def test_identical_classes_never_block_and_one_flip_of_70_is_not_a_pass(evidence):
    """The two cases of issue 20: a class identical in both models (0 of 71 disagree) passes the per-class rule
    (it was 'inconclusive' with +/-0.0506), a class with one right -> wrong flip of 70 is not shown within a
    0.05 drop (the bootstrap said [-0.043, 0]; the exact lower end is Clopper-Pearson's -0.077, scipy)."""
    from scipy.stats import binomtest

    ev = evidence[0]
    sizes, wrong = [71, 70] + [60] * 8, [6, 2] + [3] * 8
    policy = parse_policy("per_class_accuracy: {max_drop: 0.05}\n")
    a, b = _per_class_sides(ev, sizes, wrong, {1: (1, 0)})
    result = compare_sides(a, b, policy, n_bootstrap=200)
    rows = {r["group"]: r for r in result.per_class}
    identical, flipped = rows[result.class_names[0]], rows[result.class_names[1]]
    assert (identical["negative_flips"], identical["positive_flips"]) == (0, 0)
    assert identical["ci_low"] == pytest.approx(-binomtest(0, 71).proportion_ci(0.95, "exact").high, abs=1e-3)
    assert identical["ci_low"] < -0.05 and identical["status"] == "pass" and "no right -> wrong" in identical["basis"]
    assert flipped["ci_low"] == pytest.approx(-binomtest(1, 70).proportion_ci(0.95, "exact").high, abs=1e-3)
    assert flipped["ci_low"] < -0.077 + 1e-3 and flipped["status"] == "inconclusive"
    rule = result.rules[0]
    assert rule.status == "inconclusive" and rule.group == result.class_names[1] and rule.ci_low == flipped["ci_low"]
    assert result.verdict == "inconclusive" and result.exit_code == 0
    assert any("exit code 0" in note and "--fail-on-inconclusive" in note for note in result.notes)
    # Without the flip, every class is identical: nothing holds the rule open, the gate passes.
    a, b = _per_class_sides(ev, sizes, wrong, {})
    result = compare_sides(a, b, policy, n_bootstrap=200)
    assert result.rules[0].status == "pass" and result.verdict == "pass" and result.exit_code == 0
    assert "right to wrong" in result.rules[0].message and result.rules[0].ci_low is None
    # A class that only gained samples is no evidence of harm either; one that lost 15 of 70 fails (10 of 70,
    # exact p 0.011, would not survive Holm over 10 classes).
    a, b = _per_class_sides(ev, sizes, wrong, {0: (0, 3), 1: (15, 0)})
    result = compare_sides(a, b, policy, n_bootstrap=200)
    rows = {r["group"]: r for r in result.per_class}
    assert rows[result.class_names[0]]["status"] == "pass" and rows[result.class_names[1]]["status"] == "fail"
    assert result.rules[0].status == "fail" and result.verdict == "fail" and result.exit_code == 1

