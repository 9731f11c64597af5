"""Model selection: leaderboard, constraints, ties broken by cost, Pareto front, CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from assay.cli import main
from assay.compare.select import pareto_front
from assay.models.export import export_onnx
from conftest import make_blobs_dataset


def test_pareto_front_hand_case():
    cost = np.array([1.0, 2.0, 3.0, 2.0, 5.0])
    benefit = np.array([0.80, 0.90, 0.90, 0.85, 0.95])
    assert pareto_front(cost, benefit).tolist() == [0, 1, 4]  # 3 is dominated by 1, 2 by 1 (same benefit, cheaper)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Three MLPs of growing width trained on the same blobs (near-equal accuracy, growing file size)."""
    root = tmp_path_factory.mktemp("select")
    ds, _ = make_blobs_dataset(n=900, num_classes=3, dim=4, noise=1.5)
    np.savez(root / "data.npz", x=ds.x, y=ds.y)
    paths = []
    for width in (8, 128, 1024):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.ReLU(), torch.nn.Linear(width, 3))
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        x, y = torch.from_numpy(ds.x), torch.from_numpy(ds.y)
        for _ in range(80):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        path = root / f"mlp{width}.onnx"
        export_onnx(net.eval(), x[:2], path)
        paths.append(path)
    return root, paths


def test_select_prefers_the_cheapest_of_indistinguishable_models(models, tmp_path, capsys):
    root, paths = models
    out = tmp_path / "sel"
    code = main(["select", *map(str, paths), "--data", str(root / "data.npz"), "--out", str(out), "-q",
                 "--n-bootstrap", "200", "--no-cache"])
    assert code == 0
    result = json.loads((out / "selection.json").read_text())
    rows = {r["model"]: r for r in result["leaderboard"]}
    sizes = {name: r["model_size_mb"] for name, r in rows.items()}
    assert sizes["mlp8.onnx"] < sizes["mlp128.onnx"] < sizes["mlp1024.onnx"]
    best = max(rows, key=lambda m: rows[m]["accuracy"])
    # Every model ties with the best (paired CI of the difference contains 0), so the smallest one wins.
    tied = [m for m in rows if m == best or (lambda d: d[1] <= 0 <= d[2])(rows[m]["accuracy_delta_vs_best"])]
    assert result["pick"] == min(tied, key=lambda m: sizes[m])
    assert result["cost_metric"] == "model_size_mb" and result["pareto_front"]
    html = (out / "selection.html").read_text()
    assert "<svg" in html and "Pareto" in html and "<script" not in html
    md = (out / "selection.md").read_text()
    assert md.startswith("## Assay selection") and "(pick)" in md


def test_select_constraints_exclude_models_and_infeasible_sets_exit_1(models, tmp_path, capsys):
    root, paths = models
    args = ["select", *map(str, paths), "--data", str(root / "data.npz"), "-q", "--n-bootstrap", "200",
            "--cache-dir", str(root / "cache")]  # the evaluations run once, then come from the cache
    assert main([*args, "--constraint", "model_size_mb>=0.02", "--out", str(tmp_path / "a")]) == 0
    result = json.loads((tmp_path / "a" / "selection.json").read_text())
    assert result["pick"] == "mlp1024.onnx"  # the only one that large
    assert {r["model"] for r in result["leaderboard"] if not r["feasible"]} == {"mlp8.onnx", "mlp128.onnx"}
    assert main([*args, "--constraint", "accuracy>=0.999", "--out", str(tmp_path / "b")]) == 1
    assert json.loads((tmp_path / "b" / "selection.json").read_text())["pick"] is None
    capsys.readouterr()
    assert main([*args, "--constraint", "latency<=5"]) == 2
    err = capsys.readouterr().err
    assert "unknown metric 'latency'" in err and "latency_p95_ms" in err and "Traceback" not in err
    assert main([*args, "--constraint", "accuracy >= eval('1')"]) == 2
    assert "cannot parse" in capsys.readouterr().err
    assert main(["select", str(paths[0]), "--data", str(root / "data.npz"), "-q"]) == 2
    assert "at least two models" in capsys.readouterr().err


def test_latency_constraints_profile_model_files_and_rank_by_latency(models, tmp_path):
    root, paths = models
    out = tmp_path / "lat"
    assert main(["select", *map(str, paths), "--data", str(root / "data.npz"), "--out", str(out), "-q",
                 "--n-bootstrap", "200", "--cache-dir", str(root / "cache"),
                 "--constraint", "latency_p95_ms<=10000"]) == 0
    result = json.loads((out / "selection.json").read_text())
    assert all(r["latency_p95_ms"] is not None and r["latency_p95_ms"] > 0 for r in result["leaderboard"])
    assert result["cost_metric"] == "latency_p95_ms"  # measured for every model: the Pareto front uses it


def test_worst_slice_column_with_slice_by(models, tmp_path):
    root, paths = models
    with np.load(root / "data.npz") as z:
        x, y = z["x"], z["y"]
    np.savez(tmp_path / "meta.npz", x=x, y=y, meta_half=np.where(np.arange(len(y)) < len(y) // 2, "first", "second"))
    out = tmp_path / "sl"
    assert main(["select", *map(str, paths[:2]), "--data", str(tmp_path / "meta.npz"), "--out", str(out), "-q",
                 "--n-bootstrap", "200", "--no-cache", "--slice-by", "half",
                 "--constraint", "worst_slice_accuracy>=0.5"]) == 0
    rows = json.loads((out / "selection.json").read_text())["leaderboard"]
    assert all(0.5 <= r["worst_slice_accuracy"] <= r["accuracy"] + 1e-12 for r in rows)  # min of slices <= their mean
