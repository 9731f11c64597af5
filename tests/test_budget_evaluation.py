"""``assay evaluate --budget`` end to end: the budget section against the full run of the same evaluation
(intervals that cover the full run's values; a budget beyond the full run reproduces it exactly), bad budgets,
the reports, compare on a budget bundle, and Ctrl-C during the sampling (a valid bundle, exit 0)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import hypergeom
from sklearn.metrics import roc_auc_score

from assay.checks.budget import mean_placements
from assay.demo import train_digits_cnn
from assay.models.export import export_onnx
from cli_helpers import assert_user_error, run_cli

SCRIPT = Path(sys.executable).parent / "assay"
FAST = ["--n-bootstrap", "100"]


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory) -> Path:
    from assay.data.loader import load_data

    train = load_data("digits:train")
    net = train_digits_cnn(train.x, train.y, epochs=3)
    path = tmp_path_factory.mktemp("budget-model") / "digits.onnx"
    export_onnx(net, torch.from_numpy(train.x[:2]), path, class_names=train.class_names)
    return path


@pytest.fixture(scope="module")
def bundles(digits_model, tmp_path_factory) -> dict[str, dict]:
    """The standard suite at severities 1 and 5: the full run, and the same run with --budget 10% and 30%."""
    from assay.cli import main

    root = tmp_path_factory.mktemp("budget-runs")
    common = ["evaluate", str(digits_model), "--data", "digits", "--suite", "standard", "--severities", "1,5",
              "--cache-dir", str(root / "cache"), "-q", *FAST]
    out = {}
    for name, extra in (("full", []), ("b10", ["--budget", "10%"]), ("b30", ["--budget", "30%"])):
        assert main([*common, "--out", str(root / name), *extra]) == 0
        out[name] = json.loads((root / name / "evidence.json").read_text())
        out[name]["_dir"] = root / name
    return out


def _full_accuracy(full: dict) -> dict[tuple[str, int], float]:
    return {(r["corruption"], int(r["severity"])): r["accuracy"]
            for r in full["sections"]["corruption"]["tables"]["per_view"]}


def test_budget_section_replaces_the_robustness_checks(bundles):
    ev = bundles["b10"]
    assert "budget" in ev["sections"] and "corruption" not in ev["sections"]
    assert {"performance", "calibration"} <= set(ev["sections"])  # the clean-view checks still run
    section = ev["sections"]["budget"]
    rows = section["tables"]["per_view"]
    assert len(rows) == 15 * 2 and {r["kind"] for r in rows} == {"corruption"}
    for r in rows:
        assert 0 < r["n_sampled"] <= r["population"] == 540
        assert r["value_ci_low"] <= r["value"] <= r["value_ci_high"]
        assert r["width"] == pytest.approx(r["value_ci_high"] - r["value_ci_low"])
    bought = {r["what"]: r for r in section["tables"]["what_the_budget_bought"]}
    passes = bought["model passes"]
    assert passes["used"] <= passes["budget"] + 1e-9 and passes["budget"] == pytest.approx(0.1 * passes["full_run"])
    # The full run: the clean pass (540 rows) and every corruption view over every row.
    assert passes["full_run"] == 540 + 30 * 540
    assert ev["config"]["budget"] == "10%" and ev["config"]["budget_objective"] == "widest"
    assert {"interval_width", "severity_noise"} <= set(section["plots"])
    larger = {r["budget"]: r for r in section["tables"]["larger_budget"]}
    assert larger["full run"]["widest_width"] == 0 and larger["2x"]["widest_width"] < larger[
        "this run (projected)"]["widest_width"]
    with np.load(bundles["b10"]["_dir"] / "predictions.npz") as z:  # per-sample: the clean view only
        assert set(z.files) == {"ids", "logits", "labels"}


def test_intervals_cover_the_full_run(bundles):
    """Each view's interval against the accuracy the full run measured on every row. At 95% a few of 30
    intervals may miss by chance (the seed fixes which), so at least 27 must cover. The mean over views has one
    interval per run, which misses 1 time in 20 (at seed 0 and 10% it does, by 0.0006; 2,000 simulated pilot samples
    of these views cover 95%): it must lie within the 99.9% interval of the same standard error (3.29 / 1.96
    times the half-width), which a biased estimate or a mis-scaled variance would leave."""
    full = _full_accuracy(bundles["full"])
    truth = bundles["full"]["sections"]["corruption"]["metrics"]["mean_corruption_accuracy"]["value"]
    for name in ("b10", "b30"):
        rows = bundles[name]["sections"]["budget"]["tables"]["per_view"]
        covered = [r["value_ci_low"] - 1e-12 <= full[(r["corruption"], r["severity"])] <= r["value_ci_high"] + 1e-12
                   for r in rows]
        assert sum(covered) >= 27, (name, [r["view"] for r, ok in zip(rows, covered) if not ok])
        mean = bundles[name]["sections"]["budget"]["metrics"]["mean_corruption_accuracy"]
        half = (mean["ci_high"] - mean["ci_low"]) / 2
        assert 0 < half < 0.05 and abs(mean["value"] - truth) <= 3.29 / 1.96 * half, (name, mean, truth)
    # A larger budget buys narrower intervals.
    widths = {name: bundles[name]["sections"]["budget"]["metrics"]["widest_interval"]["value"]
              for name in ("b10", "b30")}
    assert widths["b30"] < widths["b10"]


def test_interval_of_one_view_matches_the_hypergeometric_test(bundles):
    """The reported interval of a share, checked against scipy's hypergeometric distribution: K/N at each end
    is the last population count the two-sided test at 5% does not reject (Wright 1991)."""
    row = bundles["b10"]["sections"]["budget"]["tables"]["per_view"][0]
    n, big_n = row["n_sampled"], row["population"]
    x = round(row["value"] * n)
    k_lo, k_hi = round(row["value_ci_low"] * big_n), round(row["value_ci_high"] * big_n)
    if x > 0:
        assert hypergeom.sf(x - 1, big_n, k_lo, n) > 0.025 >= hypergeom.sf(x - 1, big_n, k_lo - 1, n)
    if x < n:
        assert hypergeom.cdf(x, big_n, k_hi, n) > 0.025 >= hypergeom.cdf(x, big_n, k_hi + 1, n)


def test_a_budget_beyond_the_full_run_reproduces_it_exactly(bundles, digits_model, tmp_path, capsys):
    out = tmp_path / "big"
    code, _, err = run_cli(["evaluate", str(digits_model), "--data", "digits", "--corruptions",
                            "gaussian_noise,contrast,motion_blur", "--severities", "1,5", "--budget", "1000000passes",
                            "--no-cache", "--out", str(out), "-q", *FAST], capsys)
    assert code == 0, err
    section = json.loads((out / "evidence.json").read_text())["sections"]["budget"]
    full = _full_accuracy(bundles["full"])
    rows = section["tables"]["per_view"]
    assert len(rows) == 6
    for r in rows:
        assert r["n_sampled"] == r["population"] == 540 and r["width"] == 0
        assert r["value"] == r["value_ci_low"] == r["value_ci_high"] == pytest.approx(
            full[(r["corruption"], r["severity"])], abs=1e-12)
    mean = section["metrics"]["mean_corruption_accuracy"]
    expected = np.mean([full[(r["corruption"], r["severity"])] for r in rows])
    assert mean["value"] == pytest.approx(expected, abs=1e-12) and mean["ci_low"] == mean["ci_high"] == mean["value"]
    assert section["config"]["stopped_because"] == "complete"
    assert any("sampled in full" in f["message"] for f in section["findings"])


def test_placements_average_to_sklearns_auroc():
    rng = np.random.default_rng(0)
    id_scores = np.round(rng.random(300), 2)  # ties, counted half
    ood_scores = np.round(rng.random(120) * 0.8, 2)
    auroc = roc_auc_score(np.r_[np.zeros(300), np.ones(120)], -np.r_[id_scores, ood_scores])
    assert mean_placements(id_scores, ood_scores).mean() == pytest.approx(auroc, abs=1e-12)


@pytest.mark.parametrize(("extra", "fragments"), [
    (["--suite", "standard", "--budget", "5 parsecs"], ["--budget '5 parsecs' is not a budget", "--budget"]),
    (["--suite", "standard", "--budget", "0passes"], ["must be positive"]),
    (["--suite", "standard", "--budget", "0"], ["is not a budget"]),
    (["--suite", "standard", "--budget", "10%", "--budget-objective", "smallest"], ["--budget-objective"]),
    (["--budget", "10%"], ["has nothing to sample", "--suite standard"]),
])
def test_bad_budgets_are_user_errors(digits_model, tmp_path, capsys, extra, fragments):
    out = tmp_path / "o"
    code, _, err = run_cli(["evaluate", str(digits_model), "--data", "digits", "--out", str(out), "--no-cache",
                            *FAST, *extra], capsys)
    assert_user_error(code, err, *fragments)
    assert not out.exists()


def test_reports_show_the_budget_section(bundles):
    folder = bundles["b10"]["_dir"]
    markdown = (folder / "report.md").read_text()
    assert "Budgeted robustness evaluation" in markdown and "per\\_view" in markdown
    html = (folder / "report.html").read_text()
    assert "Budgeted robustness evaluation" in html and "Interval width per view" in html
    assert "could not be drawn" not in html and "does not draw" not in html


def test_compare_reads_the_clean_predictions_of_a_budget_bundle(bundles, tmp_path, capsys):
    """The paired rules read predictions.npz (the clean view, complete in budget mode); a rule on the corruption
    section is skipped with a message naming the bundle that lacks it."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("accuracy: {max_drop: 0.01}\nmean_corruption_accuracy: {max_drop: 0.05}\n")
    code, _, err = run_cli(["compare", str(bundles["full"]["_dir"]), str(bundles["b10"]["_dir"]),
                            "--policy", str(policy), "--out", str(tmp_path / "cmp"), "-q"], capsys)
    assert code == 0, err  # same model, same clean predictions: the gate passes
    comparison = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    rules = {r["metric"]: r for r in comparison["rules"]}
    assert rules["accuracy"]["status"] == "pass"
    assert rules["mean_corruption_accuracy"]["status"] == "skipped"
    assert "no corruption section" in rules["mean_corruption_accuracy"]["message"]


# ------------------------------------------------------------------------------------------------- Ctrl-C

SLOW_MODEL = '''
import os
import time
from pathlib import Path

import torch

from assay.demo import make_digits_cnn


class Slow(torch.nn.Module):
    """A digits CNN whose forward pass sleeps, and which touches a marker file on its Nth call."""

    def __init__(self):
        super().__init__()
        self.inner = make_digits_cnn()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == int(os.environ["SLOW_MARK_AFTER"]):
            Path(os.environ["SLOW_MARK"]).write_text(str(self.calls))
        time.sleep(float(os.environ["SLOW_SECONDS"]))
        return self.inner(x)


def build():
    return Slow()
'''


@pytest.fixture
def sigint_not_ignored():
    """As in test_cli_signals: a test run in the background inherits SIGINT ignored; handle it while the test
    runs so the child starts with the default handler."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.skipif(not SCRIPT.exists(), reason="the assay script is not installed in this environment")
@pytest.mark.usefixtures("sigint_not_ignored")
def test_ctrl_c_during_sampling_writes_a_valid_bundle(tmp_path):
    """Ctrl-C once the planner is past its pilot chunks (the model marks its 12th forward call: 2 for the
    loader's probe and the clean view's 3 batches are earlier): exit 0, and a bundle whose budget section says
    where it stopped."""
    (tmp_path / "slow_digits.py").write_text(SLOW_MODEL)
    mark, out = tmp_path / "mark", tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "SLOW_MARK": str(mark), "SLOW_MARK_AFTER": "12",
           "SLOW_SECONDS": "0.2", "COLUMNS": "120"}
    proc = subprocess.Popen([str(SCRIPT), "evaluate", "slow_digits:build", "--untrained", "--data", "digits",
                             "--corruptions", "gaussian_noise,contrast", "--severities", "1,5", "--budget", "100%",
                             "--no-cache", "--out", str(out), "-q", *FAST],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not mark.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert mark.exists(), "the planner never reached its 12th forward pass"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    evidence = json.loads((out / "evidence.json").read_text())
    section = evidence["sections"]["budget"]
    assert section["config"]["interrupted"] is True and section["config"]["stopped_because"] == "interrupted"
    stopped = [f for f in section["findings"] if f["message"].startswith("stopped by Ctrl-C")]
    assert stopped and stopped[0]["severity"] == "warning"
    rows = section["tables"]["per_view"]
    assert all(r["n_sampled"] > 0 for r in rows)  # past the pilot: every view has rows
    assert any(r["n_sampled"] < r["population"] for r in rows)  # and not finished
    assert (out / "report.html").exists() and (out / "predictions.npz").exists()
