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
from assay.errors import OptionError
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


def test_a_budget_too_small_for_every_pilot_says_so(digits_model, tmp_path, capsys):
    """600 passes: the clean view takes 540, the pilots of 32 rows get through two views (32 + 28 rows); the
    other two have no row, so their intervals are 0 to 1 and the mean over views is not estimated."""
    out = tmp_path / "small"
    code, stdout, err = run_cli(["evaluate", str(digits_model), "--data", "digits", "--corruptions",
                                 "gaussian_noise,contrast", "--severities", "1,5", "--budget", "600passes",
                                 "--no-cache", "--out", str(out), *FAST], capsys)
    assert code == 0, err
    section = json.loads((out / "evidence.json").read_text())["sections"]["budget"]
    sampled = sorted(r["n_sampled"] for r in section["tables"]["per_view"])
    assert sampled == [0, 0, 28, 32]
    empty = [r for r in section["tables"]["per_view"] if r["n_sampled"] == 0]
    assert all(r["value"] is None and (r["value_ci_low"], r["value_ci_high"]) == (0, 1) for r in empty)
    assert section["metrics"]["mean_corruption_accuracy"]["value"] is None
    assert any("before every view had its pilot rows" in f["message"] for f in section["findings"])
    assert "Budgeted robustness evaluation" in stdout and (out / "report.html").exists()


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


# ------------------------------------------------------------------------------- the section on known samples


def _context(clean_logits: np.ndarray, labels: np.ndarray, views: dict):
    from assay.checks.base import CheckContext, EvaluateConfig
    from assay.data.dataset import Dataset
    from assay.engine.cache import ViewOutput
    from assay.engine.run import Outputs

    n = labels.size
    dataset = Dataset(x=np.zeros((n, 1, 4, 4), np.float32), y=labels, ids=np.arange(n), modality="image",
                      name="toy", source="<toy>", class_names=[str(k) for k in range(clean_logits.shape[1])])
    outputs = Outputs(views={"clean": ViewOutput(logits=clean_logits, features=None)})
    return dataset, CheckContext(outputs=outputs, dataset=dataset, config=EvaluateConfig(), views=views)


def _run(sampled: list, passes_used: float, full_passes: float, interrupted: bool = False):
    from assay.engine.budget import Budget, BudgetRun

    return BudgetRun(views={s.name: s for s in sampled}, budget=Budget(passes=int(passes_used)), objective="widest",
                     passes_used=passes_used, seconds_used=1.0, full_passes=full_passes, interrupted=interrupted,
                     stopped_because="interrupted" if interrupted else "budget", budget_passes=passes_used)


def test_robust_accuracy_is_the_clean_correct_share_times_the_surviving_share():
    """100 rows, 80 right on the clean view: the attack's population is those 80 rows, a row costs its 10 x 2
    iterations + 1; 30 of 40 sampled rows survive -> robust accuracy 0.8 x 30/40, interval 0.8 x the exact
    interval of 30 of 40 drawn from 80."""
    from assay.checks.budget import budget_section, budget_targets
    from assay.engine.budget import SampledView
    from assay.engine.robust_views import AdversarialView, AttackSpec
    from assay.stats.sampling import proportion_interval_wor

    labels = np.arange(100) % 4
    clean_logits = np.eye(4, dtype=np.float32)[np.where(np.arange(100) < 80, labels, (labels + 1) % 4)]
    correct = np.arange(100) < 80
    view = AdversarialView(AttackSpec("apgd-ce", 8 / 255, "linf", steps=10, restarts=2), lambda x, y, s: x, labels,
                           correct, 32)
    dataset, ctx = _context(clean_logits, labels, {view.spec.name: view})
    (target,) = budget_targets([view], dataset, clean_logits)
    assert np.array_equal(target.population, np.flatnonzero(correct)) and target.cost_per_row == 21
    rows = target.population[:40]
    logits = clean_logits[rows].copy()
    logits[30:] = np.roll(logits[30:], 1, axis=1)  # the last 10 sampled rows are broken by the attack
    values = target.values(rows, logits)
    assert values.sum() == 30
    sampled = SampledView(target.name, rows, values, logits, population=80, passes=40 * 21, seconds=0.5,
                          cost_per_row=21)
    section = budget_section(_run([sampled], 100 + 40 * 21, 100 + 80 * 21, interrupted=True), [target], ctx)
    metric = section.metrics["robust_accuracy"]
    lo, hi = proportion_interval_wor(30, 40, 80)
    assert metric.value == pytest.approx(0.8 * 0.75) and (metric.ci_low, metric.ci_high) == pytest.approx(
        (0.8 * lo, 0.8 * hi))
    assert section.config["interrupted"] is True
    assert any(f.severity == "warning" and f.message.startswith("stopped by Ctrl-C after 940 of 1,780 passes")
               for f in section.findings)


def test_a_fully_sampled_ood_set_gives_sklearns_auroc_with_no_width():
    from assay.checks.budget import budget_section, budget_targets
    from assay.checks.ood import OODView
    from assay.checks.ood_scores import msp
    from assay.data.dataset import Dataset
    from assay.engine.budget import SampledView

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 200)
    clean_logits = (3 * np.eye(3)[labels] + rng.normal(0, 1.5, (200, 3))).astype(np.float32)
    ood_logits = rng.normal(0, 1.5, (120, 3)).astype(np.float32)
    ood = OODView("noise", Dataset(x=np.zeros((120, 1, 4, 4), np.float32), y=None, ids=np.arange(120),
                                   modality="image", name="noise", source="<noise>"))
    dataset, ctx = _context(clean_logits, labels, {ood.spec.name: ood})
    (target,) = budget_targets([ood], dataset, clean_logits)
    assert not target.binary and target.population.size == 120
    rows = np.arange(120)
    sampled = SampledView(target.name, rows, target.values(rows, ood_logits), ood_logits, population=120,
                          passes=120, seconds=0.1, binary=False)
    section = budget_section(_run([sampled], 320, 320), [target], ctx)
    metric = section.metrics["auroc_msp[noise]"]
    expected = roc_auc_score(np.r_[np.zeros(200), np.ones(120)], -np.r_[msp(clean_logits), msp(ood_logits)])
    assert metric.value == pytest.approx(expected, abs=1e-12) and metric.ci_low == metric.ci_high == metric.value


def test_evaluate_api_takes_a_budget_and_an_objective(blobs):
    import assay

    dataset, model = blobs
    evidence = assay.evaluate(model, dataset, corruptions=["gaussian_noise", "scaling"], severities=[1, 5],
                              budget="40%", budget_objective="total", cache_dir=None, n_bootstrap=100)
    section = evidence.sections["budget"]
    assert "corruption" not in evidence.sections and section.config["objective"] == "total"
    assert len(section.tables["per_view"]) == 4 and section.metrics["mean_corruption_accuracy"].value is not None
    bought = section.tables["what_the_budget_bought"][0]
    assert bought["used"] <= 0.4 * bought["full_run"] + 1e-9
    with pytest.raises(OptionError, match="nothing to sample"):
        assay.evaluate(model, dataset, budget="40%", cache_dir=None, n_bootstrap=100)
