"""``assay audit`` end to end: a planted digits set (bundle files, flagged pairs, thumbnails, manifest), a model's
leaked-vs-clean accuracy, given probabilities, a datasheet; bad input (modality or shape mismatch naming both
sets, missing files, bad or pickled --pred-probs, an invalid licence) exits 2 with Error:/Fix: and no traceback;
the output folder rules (never a folder Assay did not write)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax

from assay.audit import FLAGGED_COLUMNS, AuditSettings, check_compatible, read_pred_probs, run_audit
from assay.audit.planting import Planted, plant_issues
from assay.data.dataset import Dataset
from assay.data.loader import load_data
from assay.errors import DataError
from assay.evidence.output import read_manifest
from assay.evidence.schema import Evidence
from cli_helpers import assert_user_error, run_cli

FINDERS = ("assay.audit.duplicates", "assay.audit.leakage", "assay.audit.integrity")
needs_finders = pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in FINDERS),
                                   reason="the audit's finder modules have not landed yet")


def _save(path: Path, data: Dataset) -> str:
    np.savez(path, x=data.x, y=data.y, ids=data.ids)
    return str(path)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Planted, str, str]:
    """Digits with 4 exact and 6 near train duplicates, 10 test->train leaks and 5 % flipped labels, as NPZ."""
    folder = tmp_path_factory.mktemp("planted")
    p = plant_issues(load_data("digits:train"), load_data("digits:test"), exact=4, near=6, leaks=10, seed=2)
    return p, _save(folder / "train.npz", p.train), _save(folder / "test.npz", p.test)


@needs_finders
def test_audit_writes_the_bundle_with_flagged_pairs_and_thumbnails(planted, tmp_path, capsys) -> None:
    p, train, test = planted
    out = tmp_path / "audit"
    code, stdout, err = run_cli(["audit", "--train", train, "--test", test, "--out", str(out)], capsys)
    assert code == 0, err
    assert "Audit bundle" in stdout and "leak" in stdout
    assert sorted(f.name for f in out.iterdir()) == ["assay-manifest.json", "evidence.json", "flagged.csv",
                                                     "report.html", "report.md"]
    assert read_manifest(out)["kind"] == "audit"
    evidence = Evidence.model_validate_json((out / "evidence.json").read_text())
    assert {"duplicates", "leakage", "labels", "integrity", "examples"} <= set(evidence.sections)
    leaked = evidence.sections["leakage"].metrics["leaked_test_share"]
    assert leaked.value is not None and leaked.ci_low is not None and leaked.ci_high is not None
    assert leaked.ci_low <= leaked.value <= leaked.ci_high and leaked.n == len(p.test)
    assert evidence.sections["leakage"].verdict == "fail"  # 10 of 540 = 1.9 % >= the 1 % default
    flagged = pd.read_csv(out / "flagged.csv", keep_default_na=False)
    assert list(flagged.columns) == FLAGGED_COLUMNS
    leaks = flagged[flagged["kind"] == "leak"]
    found = {(int(r.index), int(r.partner_index)) for r in leaks.itertuples()}
    assert {(t, s) for t, (s, _) in p.leaks.items() if _ == "exact"} <= found
    assert set(leaks["split"]) == {"test"} and set(leaks["partner_split"]) == {"train"}
    ids = {int(i) for i in leaks["id"]}
    assert ids <= {int(i) for i in p.test.ids}
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 and "<script" not in html
    assert len(html) < 1_500_000


@needs_finders
def test_a_model_gives_accuracy_on_leaked_and_clean_test_items(planted) -> None:
    """Reference: the model's own predictions, split by the planted leaks (which the audit must find)."""
    from conftest import LinearModel

    p, _, _ = planted
    rng = np.random.default_rng(0)
    assert p.train.y is not None and p.test.y is not None
    model = LinearModel(rng.normal(size=(64, 10)), np.zeros(10), (1, 8, 8))
    run = run_audit(p.train, p.test, model=model, settings=AuditSettings(examples=0))
    metrics = run.evidence.sections["leakage"].metrics
    logits = p.test.x.reshape(len(p.test), -1) @ model.weight + model.bias
    correct = logits.argmax(1) == p.test.y
    leaked = np.zeros(len(p.test), bool)
    leaked[run.flagged.loc[run.flagged["kind"] == "leak", "index"].astype(int).unique()] = True
    assert leaked[[t for t, (_, how) in p.leaks.items() if how == "exact"]].all()
    assert metrics["accuracy_leaked"].value == pytest.approx(correct[leaked].mean())
    assert metrics["accuracy_clean"].value == pytest.approx(correct[~leaked].mean())
    assert run.evidence.model.sha256 == model.info.sha256
    assert run.evidence.config["embedding"] == "model features"


@needs_finders
def test_a_factory_model_on_the_command_line(planted, tmp_path, capsys) -> None:
    """--model/--weights: the model's features embed the data and its test accuracy is split by leakage; the numbers
    equal those computed from the model's own outputs and the bundle's flagged leaks."""
    import torch

    from assay.demo import train_digits_cnn
    from assay.models import load_model

    p, train, test = planted
    assert p.train.y is not None and p.test.y is not None
    net = train_digits_cnn(p.train.x, p.train.y, epochs=1, seed=0, progress=False)
    weights = tmp_path / "digits.pt"
    torch.save(net.state_dict(), weights)
    out = tmp_path / "audit"
    code, _, err = run_cli(["audit", "--train", train, "--test", test, "--model", "assay.demo:make_digits_cnn",
                            "--weights", str(weights), "--no-cache", "--examples", "0", "--out", str(out), "-q"],
                           capsys)
    assert code == 0, err
    evidence = Evidence.model_validate_json((out / "evidence.json").read_text())
    assert evidence.config["embedding"] == "model features" and evidence.model.format == "factory"
    model = load_model("assay.demo:make_digits_cnn", weights=weights, sample=p.test.x[:2])
    correct = model.forward(p.test.x)[0].argmax(1) == p.test.y
    flagged = pd.read_csv(out / "flagged.csv", keep_default_na=False)
    leaked = np.zeros(len(p.test), bool)
    leaked[flagged.loc[flagged["kind"] == "leak", "index"].astype(int).unique()] = True
    metrics = evidence.sections["leakage"].metrics
    assert metrics["accuracy_leaked"].value == pytest.approx(correct[leaked].mean())
    assert metrics["accuracy_clean"].value == pytest.approx(correct[~leaked].mean())
    diff = metrics["difference"]
    assert diff.value == pytest.approx(correct[leaked].mean() - correct[~leaked].mean())
    assert diff.ci_low is not None and diff.ci_high is not None and diff.ci_low <= diff.value <= diff.ci_high


@needs_finders
def test_given_probabilities_are_used_for_labels_and_the_inflation(planted, tmp_path, capsys) -> None:
    p, train, test = planted
    assert p.train.y is not None and p.test.y is not None
    rng = np.random.default_rng(0)
    probs = softmax(rng.normal(size=(len(p.train), 10)) + 4 * np.eye(10)[p.train.y], axis=1)
    test_probs = softmax(4 * np.eye(10)[p.test.y] + rng.normal(size=(len(p.test), 10)), axis=1)
    path = tmp_path / "probs.npz"
    np.savez(path, train=probs, test=test_probs)
    out = tmp_path / "audit"
    code, _, err = run_cli(["audit", "--train", train, "--test", test, "--pred-probs", str(path), "--out", str(out),
                            "-q"], capsys)
    assert code == 0, err
    evidence = Evidence.model_validate_json((out / "evidence.json").read_text())
    assert evidence.sections["labels"].config["pred_probs"].startswith("given")
    assert "accuracy_leaked" in evidence.sections["leakage"].metrics


@needs_finders
def test_a_datasheet_becomes_datasheet_md(planted, tmp_path, capsys) -> None:
    pytest.importorskip("assay.govern.datasheet")
    _, train, test = planted
    sheet = tmp_path / "datasheet.yaml"
    sheet.write_text("name: planted digits\nlicense: CC-BY-SA-4.0\nsource: scikit-learn's digits\n")
    out = tmp_path / "audit"
    code, _, err = run_cli(["audit", "--train", train, "--test", test, "--datasheet", str(sheet), "--out", str(out),
                            "-q"], capsys)
    assert code == 0, err
    text = (out / "DATASHEET.md").read_text()
    assert text.startswith("---") and "CC-BY-SA-4.0".lower() in text.lower()
    evidence = json.loads((out / "evidence.json").read_text())
    section = evidence["sections"]["datasheet"]
    assert section["config"]["licence"] == "CC-BY-SA-4.0"
    assert any("share" in f["message"].lower() for f in section["findings"])  # the share-alike obligation
    assert section["tables"]["gaps"]  # collection, consent, ... not given: listed, not invented


def test_run_audit_takes_a_datasheet_path(planted, tmp_path) -> None:
    """In Python, run_audit reads datasheet.yaml itself (govern/ and audit/ share a layer); an invalid licence is
    refused before any work."""
    from assay.audit import run_audit
    from assay.errors import UserError

    _, train, _ = planted
    sheet = tmp_path / "datasheet.yaml"
    sheet.write_text("license: MIT\nsource: made in the test\n")
    run = run_audit(train, datasheet=sheet)
    assert run.evidence.sections["datasheet"].config["licence"] == "MIT"
    sheet.write_text("license: MIT OR NotALicence-9\n")
    with pytest.raises(UserError, match="NotALicence-9"):
        run_audit(train, datasheet=sheet)


def test_an_invalid_licence_is_refused_before_any_work(planted, tmp_path, capsys) -> None:
    pytest.importorskip("assay.govern.datasheet")
    _, train, _ = planted
    sheet = tmp_path / "datasheet.yaml"
    sheet.write_text("license: Apache-2.0 OR NotALicence-9\n")
    code, _, err = run_cli(["audit", "--train", train, "--datasheet", str(sheet), "--out", str(tmp_path / "o")],
                           capsys)
    assert_user_error(code, err, "NotALicence-9")
    assert not (tmp_path / "o").exists()


def _image_folder(root: Path, data: Dataset, n: int) -> Path:
    from PIL import Image

    assert data.y is not None
    for i in range(n):
        folder = root / str(int(data.y[i]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((data.x[i, 0] * 255).round().astype(np.uint8)).save(folder / f"{i}.png")
    return root


@needs_finders
def test_unreadable_files_are_listed_not_fatal(tmp_path, capsys) -> None:
    train = _image_folder(tmp_path / "train", load_data("digits:train"), 60)
    test = _image_folder(tmp_path / "test", load_data("digits:test"), 30)
    (train / "3" / "empty.png").write_bytes(b"")
    (train / "5" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "audit"
    code, _, err = run_cli(["audit", "--train", str(train), "--test", str(test), "--out", str(out), "-q"], capsys)
    assert code == 0, err
    evidence = Evidence.model_validate_json((out / "evidence.json").read_text())
    integrity = evidence.sections["integrity"]
    assert integrity.verdict == "fail"
    listed = json.dumps(integrity.tables)
    assert "empty.png" in listed and "broken.png" in listed
    assert evidence.data.n == 60 and evidence.data.source == str(train)  # the readable files were audited


@needs_finders
def test_text_leaks_show_as_escaped_snippets(tmp_path) -> None:
    """Text findings appear as snippets in the report, HTML-escaped (a text is data, never markup)."""
    from assay.audit import write_audit
    from assay.audit.planting import make_text_set, split_dataset

    train, test = split_dataset(make_text_set(300, seed=1), seed=1)
    texts = train.x.astype(object)
    texts[:] = [f"<script>alert({i})</script> & <b>bold</b> " + str(t) for i, t in enumerate(texts)]
    train = Dataset(x=np.array(texts, dtype=str), y=train.y, ids=train.ids, modality="text", name="t", source="t",
                    class_names=train.class_names)
    p = plant_issues(train, test, exact=2, near=2, leaks=20, flip_rate=0.0, seed=0)
    run = run_audit(p.train, p.test, settings=AuditSettings(examples=5))
    html = (write_audit(run, tmp_path / "audit") / "report.html").read_text()
    snippets = run.evidence.sections["examples"].tables["leak"]
    assert len(snippets) == 5 and all(len(r["text"]) <= 160 and r["partner_text"] for r in snippets)
    assert "<script" not in html and "<b>bold" not in html
    assert "&lt;script&gt;alert(" in html and "&lt;b&gt;bold&lt;/b&gt;" in html


@needs_finders
def test_rows_with_missing_values_are_reported_and_left_out(tmp_path, capsys) -> None:
    from assay.audit.planting import make_tabular_set

    data = make_tabular_set(300, seed=0)
    frame = pd.DataFrame(data.x, columns=[f"f{i}" for i in range(data.x.shape[1])]).assign(label=data.y)
    frame.loc[[3, 17, 40], "f2"] = np.nan
    frame.iloc[:200].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[200:].to_csv(tmp_path / "test.csv", index=False)
    out = tmp_path / "audit"
    code, stdout, err = run_cli(["audit", "--train", str(tmp_path / "train.csv"), "--test",
                                 str(tmp_path / "test.csv"), "--out", str(out), "-q"], capsys)
    assert code == 0, err
    assert stdout == ""  # --quiet: nothing on stdout, not even what cleanlab prints (kept as notes)
    evidence = Evidence.model_validate_json((out / "evidence.json").read_text())
    assert evidence.data.n == 197
    assert any("3 of 200 rows miss a value" in f.message for f in evidence.findings)
    assert "f2" in json.dumps(evidence.sections["integrity"].model_dump())
    flagged = pd.read_csv(out / "flagged.csv", keep_default_na=False)
    assert not ({"3", "17", "40"} & set(flagged.loc[flagged["split"] == "train", "id"].astype(str)))


# ------------------------------------------------------------------------------------------------ bad input
def test_train_and_test_of_another_modality_name_both(tmp_path, capsys) -> None:
    images = _save(tmp_path / "images.npz", load_data("digits:test"))
    np.savez(tmp_path / "text.npz", x=np.array(["a b c", "d e f"]), y=np.array([0, 1]))
    code, _, err = run_cli(["audit", "--train", images, "--test", str(tmp_path / "text.npz"), "--out",
                            str(tmp_path / "o")], capsys)
    assert_user_error(code, err, "image data", "text data", "images.npz", "text.npz")
    assert not (tmp_path / "o").exists()


def test_train_and_test_of_another_shape_name_both(tmp_path, capsys) -> None:
    digits = load_data("digits:test")
    a = _save(tmp_path / "eight.npz", digits)
    np.savez(tmp_path / "four.npz", x=digits.x[:, :, ::2, ::2], y=digits.y)
    code, _, err = run_cli(["audit", "--train", a, "--test", str(tmp_path / "four.npz"), "--out",
                            str(tmp_path / "o")], capsys)
    assert_user_error(code, err, "(1, 8, 8)", "(1, 4, 4)", "eight.npz", "four.npz")


def test_check_compatible_accepts_same_kind_and_shape() -> None:
    digits = load_data("digits:test")
    check_compatible(digits, load_data("digits:train"))
    check_compatible(digits, None)
    with pytest.raises(DataError):
        check_compatible(digits, Dataset.from_arrays(np.zeros((3, 64), np.float32)))


def test_weights_without_a_model_and_bad_settings_are_option_errors(tmp_path, capsys) -> None:
    code, _, err = run_cli(["audit", "--train", "digits:train", "--weights", "w.pt", "--out", str(tmp_path / "o")],
                           capsys)
    assert_user_error(code, err, "--weights", "--model")
    code, _, err = run_cli(["audit", "--train", "digits:train", "--folds", "1", "--out", str(tmp_path / "o")], capsys)
    assert_user_error(code, err, "--folds")
    code, _, err = run_cli(["audit", "--train", "digits:train", "--max-leaked-share", "2", "--out",
                            str(tmp_path / "o")], capsys)
    assert_user_error(code, err, "--max-leaked-share")
    assert not (tmp_path / "o").exists()


def test_a_missing_file_is_a_user_error(tmp_path, capsys) -> None:
    code, _, err = run_cli(["audit", "--train", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "o")], capsys)
    assert_user_error(code, err, "nope.npz")


@pytest.mark.parametrize("content, fragment", [
    (np.full((5, 10), 0.1), "shape"),  # 5 rows, the training data has 1257
    ("logits", "not probabilities"),
    ("pickle", "unpickling"),
    ("garbage", "pred"),
])
def test_bad_pred_probs_files_are_refused(tmp_path, capsys, content, fragment) -> None:
    n = len(load_data("digits:train"))
    path = tmp_path / "probs.npy"
    if isinstance(content, np.ndarray):
        np.save(path, content)
    elif content == "logits":
        np.save(path, np.random.default_rng(0).normal(size=(n, 10)))
    elif content == "pickle":
        np.save(path, np.array([{"a": 1}] * n, dtype=object), allow_pickle=True)
    else:
        path.write_bytes(b"\x93NUMPY garbage")
    code, _, err = run_cli(["audit", "--train", "digits:train", "--pred-probs", str(path), "--out",
                            str(tmp_path / "o")], capsys)
    assert_user_error(code, err, fragment)
    assert not (tmp_path / "o").exists()


def test_a_pickled_npz_member_is_refused_without_unpickling(tmp_path) -> None:
    path = tmp_path / "probs.npz"
    np.savez(path, train=np.array([object()] * 3, dtype=object))
    with pytest.raises(DataError, match="pickle"):
        read_pred_probs(path, 3)


def test_read_pred_probs_reads_train_and_test(tmp_path) -> None:
    train, test = softmax(np.eye(3)[[0, 1, 2, 0]], axis=1), softmax(np.eye(3)[[2, 1]], axis=1)
    np.savez(tmp_path / "p.npz", train=train, test=test)
    got_train, got_test = read_pred_probs(tmp_path / "p.npz", 4, 2)
    np.testing.assert_allclose(got_train, train)
    assert got_test is not None
    np.testing.assert_allclose(got_test, test)
    np.save(tmp_path / "p.npy", train)
    assert read_pred_probs(tmp_path / "p.npy", 4, 2)[1] is None


# ---------------------------------------------------------------------------------------------- output safety
def test_never_replaces_a_folder_assay_did_not_write(tmp_path, capsys) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, _, err = run_cli(["audit", "--train", "digits:train", "--out", str(out), "--force"], capsys)
    assert_user_error(code, err, "not written by Assay")
    assert (out / "notes.txt").read_text() == "keep me" and sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_the_output_may_not_be_an_input(tmp_path, capsys) -> None:
    data = tmp_path / "data"
    data.mkdir()
    train = _save(data / "train.npz", load_data("digits:test"))
    code, _, err = run_cli(["audit", "--train", train, "--out", str(data)], capsys)
    assert_user_error(code, err, "input")
    assert sorted(p.name for p in data.iterdir()) == ["train.npz"]


@needs_finders
def test_an_audit_replaces_only_an_audit_unless_forced(planted, tmp_path, capsys) -> None:
    from assay.evidence.output import atomic_directory

    out = tmp_path / "o"
    with atomic_directory(out, "monitor") as folder:
        (folder / "monitor.json").write_text("{}")
    _, train, _ = planted
    code, _, err = run_cli(["audit", "--train", train, "--out", str(out), "-q"], capsys)
    assert_user_error(code, err, "monitor output")
    code, _, err = run_cli(["audit", "--train", train, "--out", str(out), "-q", "--force"], capsys)
    assert code == 0, err
    assert read_manifest(out)["kind"] == "audit"
    code, _, err = run_cli(["audit", "--train", train, "--out", str(out), "-q"], capsys)
    assert code == 0, err  # an audit replaces an audit
