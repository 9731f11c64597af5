"""`assay profile` and the efficiency check in evaluate/compare, end to end (tiny budgets: no timing asserts)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from assay.cli import main
from assay.demo import DigitsCNN
from assay.models.export import export_onnx
from assay.profiling.flops import count_flops


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("profile") / "cnn.onnx"
    export_onnx(DigitsCNN().eval(), torch.rand(2, 1, 8, 8), path)
    return path


def test_profile_command_writes_a_consistent_profile(onnx_model, tmp_path, capsys):
    out = tmp_path / "profile.json"
    code = main(["profile", str(onnx_model), "--latency-budget", "0.2", "--latency-batch-sizes", "1,4",
                 "--json", str(out), "--price-per-hour", "1.0"])
    assert code == 0
    profile = json.loads(out.read_text())
    assert [b["batch_size"] for b in profile["latency"]["batches"]] == [1, 4]
    assert profile["flops"] == count_flops(str(onnx_model)).flops == 2 * 337_536
    assert profile["model_size_mb"] == pytest.approx(onnx_model.stat().st_size / 2**20)
    assert profile["cost_per_million"] > 0 and profile["energy"]["method"] in ("rapl", "tdp-estimate")
    printed = capsys.readouterr().out
    assert "latency_p95_ms[batch=4]" in printed and "flops" in printed


@pytest.mark.parametrize(("args", "message"), [
    (["--latency-batch-sizes", "0"], "positive integers"),
    (["--latency-batch-sizes", "one"], "comma-separated list of integers"),
    (["--latency-budget", "0"], "--latency-budget must be > 0"),
])
def test_profile_bad_options(onnx_model, capsys, args, message):
    assert main(["profile", str(onnx_model), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_efficiency_section_in_evaluate_feeds_the_latency_gate(onnx_model, tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((200, 1, 8, 8)).astype(np.float32), y=rng.integers(0, 10, 200))
    for name in ("a", "b"):
        assert main(["evaluate", str(onnx_model), "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / name),
                     "--checks", "performance,calibration,efficiency", "--latency-batch-sizes", "1,4",
                     "--latency-budget", "0.2", "--n-bootstrap", "100", "--no-cache", "-q"]) == 0
    evidence = json.loads((tmp_path / "a" / "evidence.json").read_text())
    metrics = evidence["sections"]["efficiency"]["metrics"]
    assert metrics["latency_p95_ms"]["value"] > 0 and metrics["flops"]["value"] == 2 * 337_536
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp"), "-q"]) in (0, 1)
    rules = {r["metric"]: r for r in json.loads((tmp_path / "cmp" / "comparison.json").read_text())["rules"]}
    assert rules["latency_p95_ms"]["status"] != "skipped"  # both bundles have an efficiency section


def test_latency_rule_refuses_timings_from_different_machines(onnx_model, tmp_path):
    from assay.compare.gate import side_from_bundle
    from assay.compare.policy import parse_policy

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((100, 1, 8, 8)).astype(np.float32), y=rng.integers(0, 10, 100))
    assert main(["evaluate", str(onnx_model), "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "a"),
                 "--checks", "performance,efficiency", "--latency-batch-sizes", "1", "--latency-budget", "0.1",
                 "--n-bootstrap", "100", "--no-cache", "-q"]) == 0
    a = side_from_bundle(tmp_path / "a", "baseline")
    b = side_from_bundle(tmp_path / "a", "candidate")
    b.evidence = b.evidence.model_copy(update={"environment": b.evidence.environment.model_copy(
        update={"cpu_model": "Some Other CPU"})})
    from assay.compare.gate import compare_sides

    result = compare_sides(a, b, parse_policy("latency_p95_ms: {max_increase_pct: 10}\n"), n_bootstrap=100)
    assert result.rules[0].status == "skipped" and "different setups" in result.rules[0].message
