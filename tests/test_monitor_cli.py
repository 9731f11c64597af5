"""`assay monitor` end to end: a real bundle (and the same model registered, by NAME@ALIAS), a prediction log
written through `open_log`, exit 0 without drift and 1 with a planted shift, the report folder and dashboard,
--json, the state continued by a second run, and bad input: exit 2, "Error:", a "Fix:", no traceback, nothing
written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from assay.cli import main
from assay.evidence.output import read_manifest
from assay.models.loader import load_model
from assay.serve.log import PredictionRow, open_log
from registry_bundles import evaluate, make_data, make_onnx


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("monitor")
    model = make_onnx(root / "lin.onnx", seed=1)
    data = make_data(root / "data.npz", n=1500, seed=0)
    bundle = evaluate(model, data, root / "bundle")
    return {"root": root, "model": model, "bundle": bundle, "loaded": load_model(str(model))}


def _write_log(folder: Path, model, x: np.ndarray, *, start: int = 0, labels: np.ndarray | None = None) -> None:
    logits = model.logits(x.astype(np.float32))
    with open_log(str(folder)) as log:
        for i0 in range(0, len(x), 100):  # requests of 100 rows
            rows = []
            for i in range(i0, min(i0 + 100, len(x))):
                p = np.exp(logits[i] - logits[i].max())
                rows.append(PredictionRow(request_id=f"q{start + i0}", row=i - i0, time=1000.0 + start + i,
                                          version="lin@1", role="primary", input_sha256="0" * 64, logits=logits[i],
                                          top1=int(logits[i].argmax()), confidence=float(p.max() / p.sum()),
                                          inputs=x[i].astype(np.float32)))
            log.submit(rows)
        if labels is not None:
            for i, label in enumerate(labels):
                log.feedback(f"q{start + (i // 100) * 100}", int(label), row=i % 100, at=5000.0 + i)


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_user_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert err.startswith("Error:"), err
    assert "Traceback" not in err
    flat = " ".join(err.split())
    assert "Fix:" in flat
    for fragment in fragments:
        assert fragment in flat, (fragment, flat)


def test_monitor_without_drift_exits_0_and_writes_the_report(setup, tmp_path, capsys) -> None:
    rng = np.random.default_rng(5)
    log = tmp_path / "log"
    x = rng.normal(size=(600, 4))
    _write_log(log, setup["loaded"], x, labels=rng.integers(0, 3, 600))
    out, html = tmp_path / "report", tmp_path / "dash.html"
    code, stdout, err = _run(["monitor", "--log", str(log), "--reference", str(setup["bundle"]), "--window", "200",
                              "--out", str(out), "--html", str(html)], capsys)
    assert code == 0, err + stdout
    assert "3 window(s) closed" in stdout
    report = json.loads((out / "monitor.json").read_text())
    assert report["verdict"] == "pass" and report["summary"]["windows"] == 3
    snapshot = report["snapshot"]
    assert snapshot["schema"] == "assay.monitor.snapshot/1" and snapshot["rows_processed"] == 600
    names = {t["name"] for t in snapshot["windows"][0]["tests"]}
    assert {"class_mix", "confidence_ks", "ood_rate", "near_margin_share", "estimated_accuracy", "input[0]",
            "input[3]"} <= names  # tabular inputs logged; the bundle's clean logits give the near-margin share
    realized = snapshot["windows"][0]["realized_accuracy"]
    assert realized["n_labelled"] == 200  # every row labelled (at random: about a third right)
    assert read_manifest(out)["kind"] == "monitor"
    assert (out / "monitor.md").read_text().startswith("# Assay monitor report")
    assert html.read_text().startswith("<!DOCTYPE html>") and (out / "dashboard.html").exists()
    # Again into the same report and page: replaced, since they are Assay's own.
    code, _, err = _run(["monitor", "--log", str(log), "--reference", str(setup["bundle"]), "--window", "200",
                         "--out", str(out), "--html", str(html), "--quiet"], capsys)
    assert code == 0, err


def test_a_planted_shift_exits_1_and_the_state_continues(setup, tmp_path, capsys) -> None:
    rng = np.random.default_rng(6)
    log, state = tmp_path / "log", tmp_path / "state"
    _write_log(log, setup["loaded"], rng.normal(size=(400, 4)))
    args = ["monitor", "--log", str(log), "--reference", str(setup["bundle"]), "--window", "200", "--state", str(state)]
    code, stdout, err = _run(args, capsys)
    assert code == 0, err + stdout
    _write_log(log, setup["loaded"], rng.normal(size=(400, 4)) + np.array([1.5, 0, 0, -1.0]), start=400)
    code, stdout, err = _run([*args, "--json"], capsys)
    assert code == 1, err
    snapshot = json.loads(stdout)
    assert snapshot["rows_processed"] == 800
    assert [w["index"] for w in snapshot["windows"]] == [0, 1, 2, 3]
    assert not snapshot["windows"][1]["alarms"] and snapshot["windows"][2]["alarms"]
    assert any(a.startswith("input[0]") for a in snapshot["windows"][2]["alarms"])
    code, stdout, err = _run(args, capsys)  # nothing new: no window evaluated, no alarm
    assert code == 0 and "Monitored 0 new logged rows" in stdout


def test_a_registry_reference_by_alias(setup, tmp_path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    assert main(["registry", "register", "lin", str(setup["model"]), "--evidence", str(setup["bundle"]),
                 "--registry", url]) == 0
    assert main(["registry", "promote", "lin", "1", "--alias", "production", "--registry", url, "--quiet"]) == 0
    capsys.readouterr()
    log = tmp_path / "log"
    _write_log(log, setup["loaded"], np.random.default_rng(7).normal(size=(300, 4)))
    code, stdout, err = _run(["monitor", "--log", str(log), "--reference", "lin@production", "--registry", url,
                              "--window", "150", "--json"], capsys)
    assert code == 0, err
    snapshot = json.loads(stdout)
    assert snapshot["model"] == {"name": "lin", "version": "1", "alias": "production"}
    assert snapshot["alias_history"][0]["alias"] == "production"


def test_bad_input_is_exit_2_with_a_fix(setup, tmp_path, capsys) -> None:
    bundle = str(setup["bundle"])
    log = tmp_path / "log"
    _write_log(log, setup["loaded"], np.random.default_rng(8).normal(size=(200, 4)))
    cases = [
        (["--log", str(tmp_path / "nowhere"), "--reference", bundle], "no prediction log"),
        (["--log", str(log), "--reference", str(tmp_path / "nobundle")], "no evaluation bundle"),
        (["--log", str(log)], "--reference"),
        (["--log", str(log), "--reference", bundle, "--window", "1w"], "--window"),
        (["--log", str(log), "--reference", bundle, "--fdr", "2"], "fdr"),
        (["--log", str(log), "--reference", bundle, "--threshold-rule", "max"], "--threshold-rule"),
        (["--log", str(log), "--reference", bundle, "--roles", "boss"], "roles"),
        (["--log", str(log), "--reference", "nobody@production", "--registry", f"sqlite:///{tmp_path / 'r.db'}"],
         "no registry"),
        (["--log", str(log), "--reference", bundle, "--out", str(log)], "input"),
    ]
    for args, fragment in cases:
        code, _, err = _run(["monitor", *args], capsys)
        _assert_user_error(code, err, fragment)
    state = tmp_path / "state"
    assert main(["monitor", "--log", str(log), "--reference", bundle, "--state", str(state), "--quiet"]) == 0
    code, _, err = _run(["monitor", "--log", str(log), "--reference", bundle, "--state", str(state), "--window", "50"],
                        capsys)
    _assert_user_error(code, err, "other settings")
    other = tmp_path / "other.html"
    other.write_text("<html>mine</html>")
    code, _, err = _run(["monitor", "--log", str(log), "--reference", bundle, "--html", str(other)], capsys)
    _assert_user_error(code, err, "does not overwrite")
    assert other.read_text() == "<html>mine</html>"


def test_realized_accuracy_below_the_reference_is_an_alarm(setup, tmp_path, capsys) -> None:
    """No input drift, but the feedback says the model is wrong: the realized accuracy's interval lies below the
    reference accuracy, an alarm (exit 1)."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(200, 4))
    wrong = (setup["loaded"].logits(x.astype(np.float32)).argmax(1) + 1) % 3
    log = tmp_path / "log"
    _write_log(log, setup["loaded"], x, labels=wrong)
    code, stdout, err = _run(["monitor", "--log", str(log), "--reference", str(setup["bundle"]), "--window", "200"],
                             capsys)
    assert code == 1, err + stdout
    assert "realized_accuracy: 0.000" in stdout
