"""The model card quotes a model-file scan (`assay card --scan DIR`): MEASURE 2.7 cites scan.json by sha256, a scan
of another file than the evaluated model is a warning, and a folder that is not a scan is refused."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from assay.cli import main
from assay.errors import DataError
from assay.govern import build_card
from assay.govern.bundles import load_bundles, load_scan
from assay.govern.crosswalk import build_crosswalk
from cli_helpers import assert_user_error, run_cli


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo never",))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> tuple[Path, Path]:
    """(a TorchScript file of an untrained linear digits model, its evaluation bundle)."""
    base = tmp_path_factory.mktemp("card-scan")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    model = base / "digits.pt"
    torch.jit.save(torch.jit.script(net), model)
    bundle = base / "bundle"
    code = main(["evaluate", str(model), "--data", "digits:test", "--n-bootstrap", "100", "--out", str(bundle),
                 "--no-cache", "-q"])
    assert code == 0 and (bundle / "evidence.json").is_file()
    return model, bundle


def test_a_scan_of_the_evaluated_file_fills_measure_2_7(evaluated, tmp_path, capsys):
    model, bundle = evaluated
    code, _, err = run_cli(["scan", str(model), "--out", str(tmp_path / "scan"), "-q"], capsys)
    assert code == 0, err
    code, stdout, err = run_cli(["card", str(bundle), "--scan", str(tmp_path / "scan"), "--out",
                                 str(tmp_path / "card")], capsys)
    assert code == 0, err
    assert "scan is of a file" not in stdout  # the same file: no mismatch warning
    crosswalk = json.loads((tmp_path / "card" / "crosswalk.json").read_text())
    rows = [r for r in crosswalk["rows"] if r["id"] == "MEASURE 2.7" and r["kind"] == "scan"]
    assert len(rows) == 1 and rows[0]["source_id"] == "SC"
    scan_json = tmp_path / "scan" / "scan.json"
    assert rows[0]["sha256"] == hashlib.sha256(scan_json.read_bytes()).hexdigest()
    assert {"model_scan.metrics.dangerous_findings", "model_scan.metrics.pickles_scanned"} <= set(rows[0]["pointers"])
    assert crosswalk["scan"]["verdict"] == "safe"
    assert crosswalk["scan"]["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    markdown = (tmp_path / "card" / "MODEL_CARD.md").read_text()
    assert "Model file scan: verdict safe." in markdown and "SC `model_scan.metrics.dangerous_findings`" in markdown
    assert str(scan_json) in markdown  # in Sources, with its sha256


def test_a_scan_of_another_file_is_a_warning_and_its_findings_are_quoted(evaluated, tmp_path, capsys):
    _, bundle = evaluated
    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "x": _Evil()}, evil)
    code, _, err = run_cli(["scan", str(evil), "--out", str(tmp_path / "scan"), "-q"], capsys)
    assert code == 1, err  # unsafe: the gate's exit code
    code, stdout, err = run_cli(["card", str(bundle), "--scan", str(tmp_path / "scan"), "--out",
                                 str(tmp_path / "card")], capsys)
    assert code == 0, err
    assert "Warning: the scan is of a file with sha256" in " ".join(stdout.split())
    card = build_card([bundle], None, scan=tmp_path / "scan")
    assert "Model file scan: verdict unsafe." in card.markdown
    assert "posix.system" in card.markdown or "os.system" in card.markdown  # the finding, quoted
    assert any(f.evidence == "scan" and f.severity == "warning" for f in card.findings)


def test_without_a_scan_the_card_says_how_to_get_one_and_2_7_has_no_scan_row(evaluated):
    _, bundle = evaluated
    card = build_card([bundle], None)
    assert "assay card --scan DIR" in card.markdown
    cw = build_crosswalk(load_bundles([bundle]))
    assert not [r for r in cw["rows"] if r["kind"] == "scan"] and cw["scan"] is None


def test_a_folder_that_is_not_a_scan_is_refused(evaluated, tmp_path, capsys):
    _, bundle = evaluated
    code, _, err = run_cli(["card", str(bundle), "--scan", str(bundle), "--out", str(tmp_path / "card")], capsys)
    assert_user_error(code, err, "no model-file scan at", "assay scan MODEL --out DIR")
    assert not (tmp_path / "card").exists()
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / "scan.json").write_text(json.dumps({"name": "performance", "title": "x", "verdict": "pass"}))
    with pytest.raises(DataError, match="not model_scan"):
        load_scan(forged)
    (forged / "scan.json").write_text("[1, 2]")
    code, _, err = run_cli(["card", str(bundle), "--scan", str(forged), "--out", str(tmp_path / "card")], capsys)
    assert_user_error(code, err, "scan.json must hold a JSON object")
