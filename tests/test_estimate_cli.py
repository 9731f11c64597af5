"""`assay estimate` end to end (issue 19): the queue and its design record, the filled-in queue back, the bundle
(evidence.json's "estimate" section, report, labelled.csv), --simulate, and every bad input as exit 2 with what,
where and how to fix it, nothing written.

The pool is labelled by sampling each item's class from the model's own softmax, so the model is calibrated on it
by construction and the pool's true accuracy is known; the estimate is checked against it and against a
hand computation of the Hansen-Hurwitz mean from the queue's recorded probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from assay.evidence import output
from assay.evidence.output import read_manifest
from cli_helpers import assert_user_error as _assert_user_error
from cli_helpers import run_cli as _run
from registry_bundles import make_onnx

ESTIMATE_KIND = "estimate"


def test_estimate_is_a_known_output_kind():
    """The bundle's kind is one the output rules know (an unknown kind is an internal error when writing)."""
    assert ESTIMATE_KIND in output.OUTPUT_KINDS


def _logits(model: Path, x: np.ndarray) -> np.ndarray:
    import onnx
    from onnx import numpy_helper

    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(model)).graph.initializer}
    return x @ init["W"] + init["b"]


@pytest.fixture
def setup(tmp_path: Path) -> dict:
    model = make_onnx(tmp_path / "m.onnx", 1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 4)).astype(np.float32)
    logits = _logits(model, x)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])
    np.savez(tmp_path / "pool.npz", x=x, y=y, class_names=np.array(["ant", "bee", "cat"]))
    np.savez(tmp_path / "pool_unlabelled.npz", x=x, class_names=np.array(["ant", "bee", "cat"]))
    return {"model": model, "pool": tmp_path / "pool.npz", "unlabelled": tmp_path / "pool_unlabelled.npz", "y": y,
            "predicted": logits.argmax(1), "dir": tmp_path}


def _queue(s: dict, capsys, budget: int = 60, name: str = "queue.csv", *extra: str) -> Path:
    queue = s["dir"] / name
    code, out, err = _run(["estimate", str(s["model"]), "--unlabeled", str(s["unlabelled"]), "--label-budget",
                           str(budget), "--queue", str(queue), "--no-cache", *extra], capsys)
    assert code == 0, err
    assert "Queued" in out and "--labels" in out
    return queue


def _fill(queue: Path, y: np.ndarray, dest: Path, names: bool = True) -> Path:
    frame = pd.read_csv(queue, keep_default_na=False, dtype={"label": str, "id": str})
    frame["label"] = [["ant", "bee", "cat"][y[r]] if names else str(y[r]) for r in frame["row"]]
    frame.to_csv(dest, index=False)
    return dest


def test_queue_then_labels_give_the_bundle(setup, capsys):
    s = setup
    queue = _queue(s, capsys)
    frame = pd.read_csv(queue, keep_default_na=False)
    assert list(frame.columns) == ["row", "id", "label", "draws", "probability"]
    assert (frame["label"] == "").all() and frame["draws"].sum() == 60 and len(frame) <= 60
    design = json.loads((s["dir"] / "queue.csv.json").read_text())
    assert design["population"] == 500 and design["rule"] == "sawade" and design["seed"] == 0
    assert len(design["model_sha256"]) == 64 and design["pool_fingerprint"]
    filled = _fill(queue, s["y"], s["dir"] / "filled.csv")
    out = s["dir"] / "est"
    code, stdout, err = _run(["estimate", str(s["model"]), "--unlabeled", str(s["unlabelled"]), "--labels",
                              str(filled), "--queue", str(queue), "--out", str(out), "--no-cache"], capsys)
    assert code == 0, err
    assert read_manifest(out)["kind"] == ESTIMATE_KIND
    assert {"evidence.json", "labelled.csv", "report.html", "report.md"} <= {p.name for p in out.iterdir()}
    evidence = json.loads((out / "evidence.json").read_text())
    section = evidence["sections"]["estimate"]
    acc = section["metrics"]["accuracy"]
    # the Hansen-Hurwitz mean by hand from the design record: z = a0 + (c - a0) / (N q), counted per draw
    rows = np.asarray(design["items"]["row"])
    q = np.asarray(design["items"]["probability"])
    k = np.asarray(design["items"]["draws"])
    a0 = design["centre_mean"]
    c = (s["predicted"][rows] == s["y"][rows]).astype(float)
    z = a0 + (c - a0) / (500 * q)
    assert acc["value"] == pytest.approx(min(max((k * z).sum() / k.sum(), 0), 1))
    assert acc["ci_low"] <= acc["value"] <= acc["ci_high"] and "hansen-hurwitz" in acc["method"]
    assert section["metrics"]["uniform_ci_width"]["value"] > 0 and "width_ratio" in section["metrics"]
    assert {r["class"] for r in section["tables"]["per_class"]} == {"ant", "bee", "cat"}
    assert "accuracy_class_bee" in section["metrics"]
    assert "Label-efficient accuracy estimate" in (out / "report.html").read_text()
    # the design record beside --labels is found without --queue when the labeller edits the queue in place
    _fill(queue, s["y"], queue, names=False)
    code, _, err = _run(["estimate", str(s["model"]), "--unlabeled", str(s["unlabelled"]), "--labels", str(queue),
                         "--out", str(out), "--no-cache", "--quiet"], capsys)
    assert code == 0, err
    assert json.loads((out / "evidence.json").read_text())["sections"]["estimate"]["metrics"]["accuracy"][
        "value"] == pytest.approx(acc["value"])


def test_simulate_reads_the_pool_labels_and_covers_the_truth(setup, capsys):
    s = setup
    truth = float((s["predicted"] == s["y"]).mean())
    covered = 0
    for seed in range(8):
        out = s["dir"] / f"sim{seed}"
        code, _, err = _run(["estimate", str(s["model"]), "--unlabeled", str(s["pool"]), "--simulate",
                             "--label-budget", "150", "--seed", str(seed), "--out", str(out), "--no-cache", "--quiet"],
                            capsys)
        assert code == 0, err
        acc = json.loads((out / "evidence.json").read_text())["sections"]["estimate"]["metrics"]["accuracy"]
        covered += acc["ci_low"] <= truth <= acc["ci_high"]
    assert covered >= 6  # nominal 95%: 8 of 8 expected, 6 leaves room for chance (the coverage itself is tested in
    # tests/test_active_testing.py over many seeds)


def test_surrogate_probabilities_drive_the_draws(setup, capsys):
    s = setup
    logits = _logits(s["model"], np.load(s["unlabelled"])["x"])
    own = np.exp(logits - logits.max(1, keepdims=True))
    own /= own.sum(1, keepdims=True)
    np.save(s["dir"] / "own.npy", own)
    plain = _queue(s, capsys, 60, "plain.csv")
    same = _queue(s, capsys, 60, "same.csv", "--surrogate-probs", str(s["dir"] / "own.npy"))
    a, b = pd.read_csv(plain), pd.read_csv(same)  # the model's own softmax as the surrogate: the same draws
    assert a["row"].tolist() == b["row"].tolist() and a["draws"].tolist() == b["draws"].tolist()
    np.testing.assert_allclose(a["probability"], b["probability"], rtol=1e-5)
    sure = np.full_like(own, 0.01)
    sure[np.arange(len(own)), s["y"]] = 0.98  # a surrogate that knows the labels: the model's errors get e ~ 0.99
    np.save(s["dir"] / "sure.npy", sure)
    other = _queue(s, capsys, 60, "other.csv", "--surrogate-probs", str(s["dir"] / "sure.npy"), "--selection",
                   "expected-loss")
    rows = pd.read_csv(other)["row"].to_numpy()
    wrong = s["predicted"] != s["y"]
    assert wrong[rows].mean() > wrong.mean() + 0.3  # the draws go to the errors (q ~ e: 0.9 of them, by design)
    np.save(s["dir"] / "bad.npy", own[:10])
    code, _, err = _run(["estimate", str(s["model"]), "--unlabeled", str(s["unlabelled"]), "--queue",
                         str(s["dir"] / "q9.csv"), "--surrogate-probs", str(s["dir"] / "bad.npy"), "--no-cache"],
                        capsys)
    _assert_user_error(code, err, "surrogate probabilities have shape (10, 3)")


def test_bad_inputs_are_user_errors(setup, capsys):
    s = setup
    base = ["estimate", str(s["model"]), "--no-cache"]
    unl = ["--unlabeled", str(s["unlabelled"])]
    # a budget larger than the pool
    code, _, err = _run([*base, *unl, "--label-budget", "501", "--queue", str(s["dir"] / "q.csv")], capsys)
    _assert_user_error(code, err, "larger than the pool", "--label-budget")
    assert not (s["dir"] / "q.csv").exists()
    # nothing to do; both --labels and --simulate
    code, _, err = _run([*base, *unl], capsys)
    _assert_user_error(code, err, "--queue")
    code, _, err = _run([*base, "--unlabeled", str(s["pool"]), "--simulate", "--labels", "x.csv"], capsys)
    _assert_user_error(code, err, "both given")
    # --simulate on a pool without labels
    code, _, err = _run([*base, *unl, "--simulate", "--out", str(s["dir"] / "o")], capsys)
    _assert_user_error(code, err, "no labels")
    queue = _queue(s, capsys)
    filled = _fill(queue, s["y"], s["dir"] / "filled.csv")
    frame = pd.read_csv(filled, keep_default_na=False, dtype={"label": str, "id": str})
    out = s["dir"] / "est"

    def labels_error(edited: pd.DataFrame, *fragments: str, args: tuple[str, ...] = ()) -> None:
        path = s["dir"] / "edited.csv"
        edited.to_csv(path, index=False)
        code, _, err = _run([*base, *(args or tuple(unl)), "--labels", str(path), "--queue", str(queue), "--out",
                             str(out)], capsys)
        _assert_user_error(code, err, *fragments)
        assert not out.exists()

    missing = frame.copy()
    missing.loc[0, "label"] = ""
    labels_error(missing, "have no label", "label every queued row")
    stranger = pd.concat([frame, frame.head(1).assign(row=int(set(range(500)).difference(frame["row"]).pop()))])
    labels_error(stranger, "is not in the queue")
    unknown = frame.copy()
    unknown.loc[1, "label"] = "dog"
    labels_error(unknown, "'dog' is not a class", "ant")
    out_of_range = frame.copy()
    out_of_range.loc[1, "label"] = "7"
    labels_error(out_of_range, "outside the model's classes")
    twice = pd.concat([frame, frame.head(1).assign(label="cat" if frame.loc[0, "label"] != "cat" else "ant")])
    labels_error(twice, "labelled")
    # a queue drawn for another model, or from another pool
    other = make_onnx(s["dir"] / "other.onnx", 2)
    code, _, err = _run(["estimate", str(other), "--no-cache", *unl, "--labels", str(filled), "--queue", str(queue),
                         "--out", str(out)], capsys)
    _assert_user_error(code, err, "another model")
    x = np.load(s["unlabelled"])["x"]
    np.savez(s["dir"] / "other_pool.npz", x=x[::-1].copy(), class_names=np.array(["ant", "bee", "cat"]))
    labels_error(frame, "another pool", args=("--unlabeled", str(s["dir"] / "other_pool.npz")))
    # a filled-in copy without its design record, and no --queue
    code, _, err = _run([*base, *unl, "--labels", str(filled), "--out", str(out)], capsys)
    _assert_user_error(code, err, "design record", "--queue")
    # a queue path that is somebody else's file is never overwritten
    foreign = s["dir"] / "notes.csv"
    foreign.write_text("a,b\n1,2\n")
    code, _, err = _run([*base, *unl, "--queue", str(foreign)], capsys)
    _assert_user_error(code, err, "Assay does not overwrite it")
    assert foreign.read_text() == "a,b\n1,2\n"
    # an unknown selection rule
    code, _, err = _run([*base, *unl, "--queue", str(s["dir"] / "q2.csv"), "--selection", "greedy"], capsys)
    _assert_user_error(code, err, "greedy", "--selection")


# ------------------------------------------------------------------------------- the monitor's --export-labeling


def _write_log(store: Path, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n one-row requests r0..r{n-1} logged with logits whose softmax is the truth's distribution (a calibrated
    model); returns (logits, true labels)."""
    import hashlib
    import time

    from assay.serve.log import PredictionRow, open_log

    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(n, 3)) * 2.5).astype(np.float32)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])
    now = time.time()
    rows = [PredictionRow(request_id=f"r{i}", time=now + i * 1e-3, version="m@1", role="primary",
                          input_sha256=hashlib.sha256(f"x{i}".encode()).hexdigest(), logits=logits[i],
                          top1=int(logits[i].argmax()), confidence=float(p[i].max()))
            for i in range(n)]
    with open_log(str(store), durability="strict") as log:
        log.submit(rows).result(30)
    return logits, y


def test_monitor_export_labeling_draws_an_estimation_queue_and_import_prints_the_estimate(tmp_path, capsys):
    from assay.monitor.labeling import ESTIMATE_QUEUE_COLUMNS, queue_estimate, select_for_estimate
    from assay.serve.log import read_log
    from registry_bundles import evaluate, make_data

    model = make_onnx(tmp_path / "m.onnx", 1)
    bundle = evaluate(model, make_data(tmp_path / "ref.npz", n=200), tmp_path / "bundle")
    store = tmp_path / "log"
    logits, y = _write_log(store, 300)
    queue = tmp_path / "queue.csv"
    code, out, err = _run(["monitor", "--log", str(store), "--reference", str(bundle), "--export-labeling", "40",
                           "--labeling-queue", str(queue)], capsys)
    assert code in (0, 1), err  # 1: an alarm (the logged logits are not the reference's), not a usage error
    written = pd.read_csv(queue, keep_default_na=False, dtype={"label": str, "request_id": str})
    assert list(written.columns) == list(ESTIMATE_QUEUE_COLUMNS)
    assert written["draws"].sum() == 40 and (written["population"] == 300).all()
    expected = select_for_estimate(read_log(str(store)), 40, seed=0)
    assert written["request_id"].tolist() == expected["request_id"].tolist()
    np.testing.assert_allclose(written["probability"], expected["probability"], rtol=1e-9)
    # the labeller fills it in; import writes the labels and prints the unbiased estimate of the traffic's accuracy
    index = written["request_id"].str[1:].astype(int).to_numpy()
    written["label"] = [str(v) for v in y[index]]
    written.to_csv(queue, index=False)
    code, out, err = _run(["feedback", "import", str(queue), "--log", str(store)], capsys)
    assert code == 0, err
    flat = " ".join(out.split())
    assert f"Imported {len(written)} labels" in flat and "estimate the logged traffic's accuracy" in flat
    est = queue_estimate(queue, num_classes=3)
    correct = (logits.argmax(1)[index] == y[index]).astype(float)
    a = written["centre"].to_numpy()
    z = written["centre_mean"].iloc[0] + (correct - a) / (300 * written["probability"].to_numpy())
    k = written["draws"].to_numpy()
    assert est.unclipped == pytest.approx((k * z).sum() / k.sum())
    assert f"{est.value:.3f}" in out
    # the informative ranking stays available (training data: `assay feedback queue`'s selection)
    queue2 = tmp_path / "queue2.csv"
    code, _, err = _run(["monitor", "--log", str(store), "--reference", str(bundle), "--export-labeling", "7",
                         "--labeling-selection", "informative", "--labeling-queue", str(queue2)], capsys)
    assert code in (0, 1), err
    assert "probability" not in pd.read_csv(queue2).columns and len(pd.read_csv(queue2)) == 7
    code, _, err = _run(["monitor", "--log", str(store), "--reference", str(bundle), "--export-labeling", "7",
                         "--labeling-selection", "greedy", "--labeling-queue", str(queue2)], capsys)
    _assert_user_error(code, err, "--labeling-selection")
