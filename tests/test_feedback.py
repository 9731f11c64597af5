"""The feedback loop (issue 15, deliverable 4): which logged predictions to label (assay.monitor.labeling), labels
back into the log (`assay feedback import`), the labelled slice as --data (`assay feedback dataset`), the queue
(`assay feedback queue`), and the runnable loop example in reduced size.

Scores are checked against independent references (scipy's entropy, scikit-learn's NearestNeighbors, hand-computed
margins and p-values); selection on hand-built frames where the right answer is known by construction."""

from __future__ import annotations

import hashlib
import importlib.util
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import entropy as scipy_entropy
from sklearn.neighbors import NearestNeighbors

from assay.errors import DataError, OptionError
from assay.monitor.labeling import (
    QUEUE_COLUMNS,
    SelectionWeights,
    disagreement_scores,
    is_feedback_dataset,
    knn_distances,
    labelled_arrays,
    novelty_scores,
    read_label_csv,
    select_for_labeling,
    uncertainty_scores,
)
from assay.serve.log import PredictionRow, open_log, read_log
from cli_helpers import assert_user_error as _assert_user_error
from cli_helpers import run_cli as _run
from registry_bundles import make_onnx

ROOT = Path(__file__).parents[1]


def _confident(cls: int, c: int = 10, strength: float = 12.0) -> np.ndarray:
    logits = np.zeros(c, np.float32)
    logits[cls] = strength
    return logits


def _frame(rows: list[dict]) -> pd.DataFrame:
    """A read_log-like frame from row dicts (defaults: primary, unlabelled, a distinct input per request)."""
    out = []
    for i, r in enumerate(rows):
        logits = np.asarray(r["logits"], np.float32)
        out.append({"request_id": r.get("request_id", f"r{i}"), "row": r.get("row", 0), "time": float(i),
                    "version": r.get("version", "m@1"), "model_sha256": None, "role": r.get("role", "primary"),
                    "input_sha256": r.get("input_sha256", f"h{r.get('request_id', i)}"), "inputs": None,
                    "inputs_dtype": None, "inputs_shape": None, "logits": logits, "top1": int(logits.argmax()),
                    "confidence": 0.0, "features": r.get("features"), "label": r.get("label", pd.NA),
                    "label_time": np.nan})
    frame = pd.DataFrame(out)
    frame["label"] = frame["label"].astype("Int64")
    return frame


# ------------------------------------------------------------------------------------------- pure scores


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 12), st.integers(1, 20), st.integers(0, 2**31 - 1))
def test_uncertainty_matches_scipy_entropy_and_sorted_margin(c, n, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 4, size=(n, c))
    u, margin, entropy = uncertainty_scores(logits)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    top = np.sort(p, axis=1)[:, ::-1]
    np.testing.assert_allclose(margin, top[:, 0] - top[:, 1], atol=1e-12)
    np.testing.assert_allclose(entropy, scipy_entropy(p, axis=1) / np.log(c), atol=1e-9)
    np.testing.assert_allclose(u, ((1 - margin) + entropy) / 2, atol=1e-12)
    assert ((u >= 0) & (u <= 1)).all()


def test_uncertainty_extremes():
    u, margin, entropy = uncertainty_scores(np.array([[0.0, 0.0, 0.0], [50.0, 0.0, 0.0]]))
    np.testing.assert_allclose(u, [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(margin, [0.0, 1.0], atol=1e-12)
    with pytest.raises(DataError):
        uncertainty_scores(np.zeros((3, 1)))


@pytest.mark.parametrize("k", [1, 3, 7])
def test_knn_distances_match_sklearn(k):
    rng = np.random.default_rng(k)
    reference = rng.normal(size=(200, 6))
    queries = rng.normal(size=(50, 6)) * 2
    expected = NearestNeighbors(n_neighbors=k).fit(reference).kneighbors(queries)[0][:, -1]
    np.testing.assert_allclose(knn_distances(queries, reference, k, chunk=16, dtype=np.float64), expected,
                               rtol=1e-9)
    np.testing.assert_allclose(knn_distances(queries, reference, k, chunk=16), expected, rtol=1e-4)  # float32
    # leave-one-out: the (k+1)-th neighbour of a reference row among the reference (the first is itself)
    loo = NearestNeighbors(n_neighbors=k + 1).fit(reference).kneighbors(reference)[0][:, -1]
    np.testing.assert_allclose(knn_distances(reference, reference, k, exclude_self=True, chunk=32), loo, rtol=1e-4)


def test_novelty_is_a_conformal_p_value():
    reference = np.array([1.0, 2.0, 3.0, 4.0])  # m = 4
    d, p = novelty_scores(np.array([0.5, 2.0, 4.0, 9.0]), reference)
    # p = (1 + #{ref >= x}) / 5
    np.testing.assert_allclose(p, [5 / 5, 4 / 5, 2 / 5, 1 / 5])
    np.testing.assert_allclose(d, np.log(1 / p) / np.log(5))
    assert d[-1] == pytest.approx(1.0) and d[0] == pytest.approx(0.0)


def test_disagreement_is_one_on_a_flip_else_total_variation():
    a = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]])
    b = np.array([[0.6, 0.3, 0.1], [0.3, 0.6, 0.1]])
    g, flipped = disagreement_scores(a, b)
    assert flipped.tolist() == [False, True]
    np.testing.assert_allclose(g, [0.1, 1.0])


# ------------------------------------------------------------------------------------------- selection


def _hand_built() -> pd.DataFrame:
    """Ten confident primary rows; r3 uncertain (flat logits); r5 answered confidently but its shadow predicts
    another class; r7 and r8 the same input; r9 labelled; r6 shares its input with the labelled r9."""
    rows = [{"request_id": f"r{i}", "logits": _confident(i % 10)} for i in range(10)]
    rows[3]["logits"] = np.zeros(10, np.float32)
    rows[7]["input_sha256"] = rows[8]["input_sha256"] = "same"
    rows[7]["logits"] = rows[8]["logits"] = _confident(1, strength=1.0)  # somewhat uncertain, twice
    rows[9]["label"] = 9
    rows[9]["logits"] = np.zeros(10, np.float32)  # would top the list if it were not labelled
    rows[6]["input_sha256"] = rows[9]["input_sha256"] = "labelled-input"
    rows[6]["logits"] = np.zeros(10, np.float32)
    rows.append({"request_id": "r5", "role": "shadow", "logits": _confident(2), "input_sha256": "hr5"})
    return _frame(rows)


def test_selection_picks_the_uncertain_and_the_disagreeing_rows():
    queue = select_for_labeling(_hand_built(), 3)
    assert list(queue.columns[: len(QUEUE_COLUMNS)]) == list(QUEUE_COLUMNS)
    picked = queue["request_id"].tolist()
    assert set(picked[:2]) == {"r3", "r5"}, queue[["request_id", "score", "reason"]]
    r5 = queue.set_index("request_id").loc["r5"]
    assert r5["role"] == "primary" and r5["disagreement"] == 1.0
    assert "shadow predicts 2, primary 5" in r5["reason"]
    assert "uncertain" in queue.set_index("request_id").loc["r3", "reason"]
    assert picked[2] in {"r7", "r8"}  # the next most uncertain input


def test_selection_deduplicates_inputs_and_skips_labelled_ones():
    queue = select_for_labeling(_hand_built(), 20)
    ids = queue["request_id"].tolist()
    assert "r9" not in ids and "r6" not in ids  # labelled, and an input already labelled
    assert len({"r7", "r8"} & set(ids)) == 1
    assert queue.loc[queue["input_sha256"] == "same", "copies"].item() == 2
    assert queue["input_sha256"].is_unique
    assert len(queue) == 7 and queue.attrs["candidates"] == 7  # r0..r9 less r9, r6 and one of r7/r8
    assert queue["score"].is_monotonic_decreasing


def test_selection_is_deterministic_and_independent_of_row_order():
    rng = np.random.default_rng(0)
    # Every row identical: the order is the seeded tie-break alone.
    frame = _frame([{"request_id": f"q{i}", "logits": _confident(0, strength=2.0),
                     "features": rng.normal(size=8).astype(np.float32)} for i in range(60)])
    first = select_for_labeling(frame, 10, seed=1)
    again = select_for_labeling(frame.sample(frac=1.0, random_state=3), 10, seed=1)
    pd.testing.assert_frame_equal(first, again)
    ties = _frame([{"request_id": f"q{i}", "logits": _confident(0, strength=2.0)} for i in range(60)])
    orders = {tuple(select_for_labeling(ties, 10, seed=s)["request_id"]) for s in range(4)}
    assert len(orders) > 1  # the seed decides ties


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 15), st.integers(0, 2**31 - 1), st.booleans())
def test_selection_invariants(n_requests, n, seed, with_features):
    """On random logs (several rows per request, shadow rows, repeated inputs, some labels): the queue is the
    top of the combined score, one row per input, no labelled input, at most n rows, each score the sum of its
    components, and the same whatever the row order."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_requests):
        for r in range(int(rng.integers(1, 3))):
            base = {"request_id": f"q{i}", "row": r, "input_sha256": f"in{rng.integers(0, max(2, n_requests))}",
                    "logits": rng.normal(0, 3, 4), "features": rng.normal(size=3) if with_features else None}
            if rng.random() < 0.2:
                base["label"] = int(rng.integers(0, 4))
            rows.append(base)
            if rng.random() < 0.3:
                rows.append({**base, "role": "shadow", "logits": rng.normal(0, 3, 4)})
    frame = _frame(rows)
    frame["label"] = frame.groupby(["request_id", "row"])["label"].transform("first")  # labels join per request row
    queue = select_for_labeling(frame, n, seed=seed)
    labelled = set(frame.loc[frame["label"].notna(), "input_sha256"])
    assert len(queue) <= n and queue["input_sha256"].is_unique
    assert not set(queue["input_sha256"]) & labelled
    assert queue["score"].is_monotonic_decreasing
    np.testing.assert_allclose(queue["score"], queue["uncertainty"] + queue["novelty"] + queue["disagreement"])
    unlabelled_inputs = set(frame["input_sha256"]) - labelled
    assert len(queue) == min(n, len(unlabelled_inputs)) == min(n, queue.attrs["candidates"])
    shuffled = select_for_labeling(frame.sample(frac=1.0, random_state=seed % 1000), n, seed=seed)
    pd.testing.assert_frame_equal(queue, shuffled)
    # the top n of everything scored (no pruning when all are asked for): pruning changed nothing
    everything = select_for_labeling(frame, 10_000, seed=seed)
    pd.testing.assert_frame_equal(queue, everything.head(n).reset_index(drop=True), check_like=False)


def test_novelty_against_the_reference_sample_picks_the_far_rows():
    from assay.reference import Reference

    rng = np.random.default_rng(0)
    n, c = 400, 3
    labels = rng.integers(0, c, n)
    features = rng.normal(0, 0.5, size=(n, 8)) + 3 * np.eye(8)[labels]
    logits = np.eye(c)[labels] * 6
    reference = Reference.from_arrays(logits, labels, features.astype(np.float32), class_names=["a", "b", "c"])
    near = features[:30] + rng.normal(0, 0.05, size=(30, 8))
    far = 8 * np.eye(8)[3:8] + rng.normal(0, 0.3, size=(5, 8))  # along axes no reference class uses: unseen
    rows = [{"request_id": f"n{i}", "logits": _confident(int(labels[i]), c), "features": near[i]} for i in range(30)]
    rows += [{"request_id": f"f{i}", "logits": _confident(0, c), "features": far[i]} for i in range(5)]
    queue = select_for_labeling(_frame(rows), 5, reference=reference)
    assert sorted(queue["request_id"]) == [f"f{i}" for i in range(5)], queue[["request_id", "novelty", "reason"]]
    assert (queue["novelty"] > 0.9).all() and (queue["p_novelty"] < 0.01).all()
    assert any("reference's" in note for note in queue.attrs["notes"])
    # Without a reference, the pool is the comparison: the five far rows are still the low-density ones.
    pooled = select_for_labeling(_frame(rows), 5, weights=SelectionWeights(uncertainty=0, disagreement=0))
    assert sorted(pooled["request_id"]) == [f"f{i}" for i in range(5)]


def test_selection_refuses_bad_arguments():
    with pytest.raises(OptionError):
        select_for_labeling(_hand_built(), 0)
    with pytest.raises(OptionError):
        SelectionWeights(uncertainty=-1)
    with pytest.raises(DataError):
        select_for_labeling(_hand_built().drop(columns=["logits"]), 3)
    empty = select_for_labeling(_hand_built().iloc[0:0], 3)
    assert empty.empty


# ------------------------------------------------------------------------------------------- a real log


def _write_log(store: Path, n: int = 40, *, inputs: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n one-row requests r0..r{n-1} of 4-feature inputs scored by the tiny ONNX model's weights (seed 1), logged
    with their inputs; returns (x, true labels)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)).astype(np.float32)
    now = time.time()
    rows = [PredictionRow(request_id=f"r{i}", time=now + i * 1e-3, version="m@1", role="primary",
                          input_sha256=hashlib.sha256(x[i].tobytes()).hexdigest(), logits=logits[i],
                          top1=int(logits[i].argmax()), confidence=0.5, inputs=x[i] if inputs else None)
            for i in range(n)]
    with open_log(str(store), durability="strict") as log:
        log.submit(rows).result(30)
    return x, y


def _csv(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


@pytest.mark.parametrize(("content", "fragments"), [
    ("request_id,row\nr1,0\n", ["no column 'label'"]),
    ("id,label\nr1,2\n", ["no column 'request_id'"]),
    ("request_id,label\nr1,7\n", ["outside the model's classes 0..2", ":2"]),
    ("request_id,label\nr1,cat\n", ["'cat' is not a class of the model"]),
    (b"request_id,label\nr1,\xff\xfe\n", ["not UTF-8", "line 2"]),
    ("request_id,label\nr1,1\nr1,2\n", ["labelled 1 on line 2 and 2 on line 3"]),
    ("request_id,label,row\nr1,1,x\n", ["row 'x' is not an integer"]),
    ("", ["the file is empty"]),
])
def test_import_refuses_bad_csv(tmp_path, capsys, content, fragments):
    store = tmp_path / "log"
    _write_log(store, 5)
    code, _, err = _run(["feedback", "import", str(_csv(tmp_path / "labels.csv", content)), "--log", str(store)],
                        capsys)
    _assert_user_error(code, err, *fragments)
    assert read_log(str(store))["label"].isna().all()  # nothing written


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.binary(max_size=300),
                 st.lists(st.lists(st.text(max_size=12), max_size=4), max_size=6).map(
                     lambda rows: "request_id,label,row\n" + "\n".join(",".join(r) for r in rows)),
                 st.text(max_size=300)))
def test_read_label_csv_fails_only_with_data_errors(tmp_path_factory, content):
    """Whatever the bytes: labels that passed every check, or a DataError (never another exception)."""
    path = tmp_path_factory.mktemp("csv") / "labels.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    try:
        labels, blank = read_label_csv(path, num_classes=3, class_names=["a", "b", "c"])
    except DataError as exc:
        assert exc.fix
        return
    assert blank >= 0
    for item in labels:
        assert 0 <= item.label < 3 and item.row >= 0 and item.request_id.isprintable()


def test_import_without_a_log_or_file_is_a_user_error(tmp_path, capsys):
    code, _, err = _run(["feedback", "import", str(tmp_path / "labels.csv"), "--log", str(tmp_path / "nope")], capsys)
    _assert_user_error(code, err, "no prediction log")
    store = tmp_path / "log"
    _write_log(store, 3)
    code, _, err = _run(["feedback", "import", str(tmp_path / "missing.csv"), "--log", str(store)], capsys)
    _assert_user_error(code, err, "no such file")


def test_import_round_trips_into_read_log(tmp_path, capsys):
    from assay.reference import Reference

    store = tmp_path / "log"
    _write_log(store, 6)
    ref = Reference.from_arrays(np.eye(3)[[0, 1, 2, 0]] * 5, [0, 1, 2, 0], class_names=["cat", "dog", "eel"])
    ref_path = ref.save(tmp_path / "reference.npz")
    labels = _csv(tmp_path / "labels.csv", "request_id,label,row\nr0,2,0\nr1,dog,\nr2,,\nr4,eel,0\nghost,1,0\n"
                                           "r4,2,0\n")
    code, out, err = _run(["feedback", "import", str(labels), "--log", str(store), "--reference", str(ref_path)],
                          capsys)
    assert code == 0, err
    assert "Imported 3 labels" in out and "1 lines with a blank label skipped" in out
    assert err.startswith("Warning:") and "ghost row 0 (line 6)" in " ".join(err.split())
    frame = read_log(str(store)).set_index("request_id")
    assert frame.loc["r0", "label"] == 2 and frame.loc["r1", "label"] == 1 and frame.loc["r4", "label"] == 2
    assert frame["label"].notna().sum() == 3
    # --strict refuses the file with the unknown id, writing nothing more
    code, _, err = _run(["feedback", "import", str(_csv(tmp_path / "l2.csv", "request_id,label\nr5,1\nghost,1\n")),
                         "--log", str(store), "--strict"], capsys)
    _assert_user_error(code, err, "not in the prediction log", "'ghost'")
    assert pd.isna(read_log(str(store)).set_index("request_id").loc["r5", "label"])


def test_read_label_csv_reads_a_filled_in_queue(tmp_path):
    header = ",".join(QUEUE_COLUMNS)
    blank = ",".join([""] * (len(QUEUE_COLUMNS) - 3))
    text = f"{header}\nr1,0,2,{blank}\nr2,0,,{blank}\n"
    labels, skipped = read_label_csv(_csv(tmp_path / "q.csv", text), num_classes=3)
    assert [(x.request_id, x.row, x.label) for x in labels] == [("r1", 0, 2)] and skipped == 1


def test_dataset_loads_and_evaluates(tmp_path, capsys):
    import onnxruntime as ort

    from assay.data.loader import load_data

    store = tmp_path / "log"
    x, y = _write_log(store, 40)
    labels = "request_id,label\n" + "".join(f"r{i},{y[i]}\n" for i in range(0, 40, 2))  # every other request
    assert _run(["feedback", "import", str(_csv(tmp_path / "l.csv", labels)), "--log", str(store)], capsys)[0] == 0
    out = tmp_path / "labelled.npz"
    code, stdout, err = _run(["feedback", "dataset", "--log", str(store), "--out", str(out), "--labelled-only"],
                             capsys)
    assert code == 0, err
    assert "Wrote 20 labelled samples" in stdout and is_feedback_dataset(out)
    data = load_data(str(out))
    np.testing.assert_array_equal(data.x, x[::2])
    np.testing.assert_array_equal(data.y, y[::2])
    assert data.ids.tolist() == [f"r{i}:0" for i in range(0, 40, 2)]
    assert set(data.meta["version"]) == {"m@1"}
    # evaluate reads it, and its accuracy is the model's on those rows (computed with onnxruntime directly)
    model = make_onnx(tmp_path / "m.onnx", 1)
    session = ort.InferenceSession(str(model))
    expected = float((session.run(None, {"x": x[::2]})[0].argmax(1) == y[::2]).mean())
    bundle = tmp_path / "bundle"
    code, _, err = _run(["evaluate", str(model), "--data", str(out), "--checks", "performance", "--n-bootstrap",
                         "100", "--no-cache", "--out", str(bundle), "--quiet"], capsys)
    assert code == 0, err
    import json

    evidence = json.loads((bundle / "evidence.json").read_text())
    accuracy = evidence["sections"]["performance"]["metrics"]["accuracy"]["value"]
    assert accuracy == pytest.approx(expected)
    # compare reads it too (model files + --data): a verdict, not a usage error
    other = make_onnx(tmp_path / "m2.onnx", 2)
    code, _, err = _run(["compare", str(model), str(other), "--data", str(out), "--n-bootstrap", "100", "--out",
                         str(tmp_path / "cmp"), "--quiet"], capsys)
    assert code in (0, 1), err
    # without --labelled-only, a partly labelled log gives unlabelled data (no y), and says so
    out2 = tmp_path / "all.npz"
    code, stdout, _ = _run(["feedback", "dataset", "--log", str(store), "--out", str(out2)], capsys)
    assert code == 0 and "40 unlabelled samples" in stdout and load_data(str(out2)).y is None
    # the file it wrote may be replaced; a file it did not write may not
    assert _run(["feedback", "dataset", "--log", str(store), "--out", str(out), "--labelled-only"], capsys)[0] == 0
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=x)
    code, _, err = _run(["feedback", "dataset", "--log", str(store), "--out", str(foreign)], capsys)
    _assert_user_error(code, err, "Assay does not overwrite it")


def test_dataset_refuses_a_log_without_inputs_or_labels(tmp_path, capsys):
    store = tmp_path / "log"
    _write_log(store, 5, inputs=False)
    code, _, err = _run(["feedback", "dataset", "--log", str(store), "--out", str(tmp_path / "d.npz")], capsys)
    _assert_user_error(code, err, "without --log-inputs", "--log-inputs")
    assert not (tmp_path / "d.npz").exists()
    store2 = tmp_path / "log2"
    _write_log(store2, 5)
    code, _, err = _run(["feedback", "dataset", "--log", str(store2), "--out", str(tmp_path / "d.npz"),
                         "--labelled-only"], capsys)
    _assert_user_error(code, err, "has a label", "feedback import")
    code, _, err = _run(["feedback", "dataset", "--log", str(store2), "--out", str(tmp_path / "d.csv")], capsys)
    _assert_user_error(code, err, "does not end in .npz")


def test_labelled_arrays_keeps_one_row_per_request_row():
    frame = _hand_built()
    x = np.arange(len(frame) * 2, dtype=np.float32).reshape(len(frame), 2)
    frame["inputs"] = [row.tobytes() for row in x]
    frame["inputs_dtype"] = "<f4"
    frame["inputs_shape"] = [(2,)] * len(frame)
    frame["label"] = pd.array(range(len(frame)), dtype="Int64")
    data = labelled_arrays(frame)
    assert len(data.x) == 10  # r5's shadow row is the same request row
    assert data.ids.tolist() == [f"r{i}:0" for i in range(10)]
    np.testing.assert_array_equal(data.x, x[:10])


def test_queue_cli_writes_a_csv_that_import_reads(tmp_path, capsys):
    store = tmp_path / "log"
    _, y = _write_log(store, 30)
    queue = tmp_path / "queue.csv"
    code, out, err = _run(["feedback", "queue", "--log", str(store), "--n", "5", "--out", str(queue)], capsys)
    assert code == 0, err
    assert "Queued 5 of 30" in out
    frame = pd.read_csv(queue, keep_default_na=False)
    assert list(frame.columns) == list(QUEUE_COLUMNS) and len(frame) == 5
    frame["label"] = [int(y[int(rid[1:])]) for rid in frame["request_id"]]  # the annotator fills the column in
    frame.to_csv(queue, index=False)
    code, out, err = _run(["feedback", "import", str(queue), "--log", str(store)], capsys)
    assert code == 0 and "Imported 5 labels" in out, err
    code, out, _ = _run(["feedback", "queue", "--log", str(store), "--n", "100", "--out", str(tmp_path / "q2.csv")],
                        capsys)
    assert code == 0 and "Queued 25 of 25" in out  # the labelled five are not queued again
    foreign = _csv(tmp_path / "notes.csv", "a,b\n1,2\n")
    code, _, err = _run(["feedback", "queue", "--log", str(store), "--n", "3", "--out", str(foreign)], capsys)
    _assert_user_error(code, err, "Assay does not overwrite it")


# ------------------------------------------------------------------------------------------- the loop example


def _load_example():
    spec = importlib.util.spec_from_file_location("feedback_loop_example", ROOT / "examples" / "feedback_loop.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_loop_example_runs_end_to_end_in_reduced_size(tmp_path):
    example = _load_example()
    summary = example.run_loop(tmp_path, **example.SMALL)
    assert summary["labels_imported"] == example.SMALL["n_queue"]
    assert summary["dataset_rows"] > 0
    assert summary["compare_exit"] in (0, 1)
    assert summary["promote_exit"] in (0, 1)
    # the candidate fine-tuned on labelled shifted traffic beats the champion on the held-out shifted slice
    assert summary["candidate_accuracy"] > summary["champion_accuracy"]


def test_monitor_export_labeling_writes_the_same_queue(tmp_path, capsys):
    from registry_bundles import evaluate, make_data

    model = make_onnx(tmp_path / "m.onnx", 1)
    bundle = evaluate(model, make_data(tmp_path / "ref.npz", n=200), tmp_path / "bundle")
    store = tmp_path / "log"
    _write_log(store, 60, seed=3)
    queue = tmp_path / "queue.csv"
    code, out, err = _run(["monitor", "--log", str(store), "--reference", str(bundle), "--export-labeling", "7",
                           "--labeling-selection", "informative", "--labeling-queue", str(queue)], capsys)
    assert code in (0, 1), err  # 1: an alarm (the logged logits are random), not a usage error
    assert "Labeling queue:" in " ".join(out.split())
    from assay.reference import Reference

    expected = select_for_labeling(read_log(str(store)), 7, reference=Reference.load(bundle))
    written = pd.read_csv(queue, keep_default_na=False, dtype={"label": str})
    assert written["request_id"].tolist() == expected["request_id"].tolist()
    code, _, err = _run(["monitor", "--log", str(store), "--reference", str(bundle), "--export-labeling", "0"], capsys)
    _assert_user_error(code, err, "--export-labeling")


def test_filters_that_match_nothing_are_a_user_error(tmp_path, capsys):
    store = tmp_path / "log"
    _write_log(store, 4)
    for command in (["queue", "--n", "3", "--out", str(tmp_path / "q.csv")],
                    ["dataset", "--out", str(tmp_path / "d.npz")]):
        code, _, err = _run(["feedback", *command, "--log", str(store), "--version", "other@9"], capsys)
        _assert_user_error(code, err, "none of the 4 logged predictions", "versions m@1")


def test_queue_and_import_read_the_reference_of_a_registered_version(tmp_path, capsys):
    from registry_bundles import evaluate, make_data

    model = make_onnx(tmp_path / "m.onnx", 1)
    bundle = evaluate(model, make_data(tmp_path / "ref.npz", n=200), tmp_path / "bundle")
    registry = ["--registry", f"sqlite:///{tmp_path / 'reg.db'}", "--artifacts", str(tmp_path / "artifacts")]
    assert _run(["registry", "register", "m", str(model), "--evidence", str(bundle), *registry], capsys)[0] == 0
    assert _run(["registry", "promote", "m", "1", "--alias", "production", *registry], capsys)[0] == 0
    store = tmp_path / "log"
    _write_log(store, 20)
    queue = tmp_path / "q.csv"
    code, out, err = _run(["feedback", "queue", "--log", str(store), "--n", "4", "--out", str(queue), "--reference",
                           "m@production", *registry], capsys)
    assert code == 0, err
    # the registered bundle's reference was read: a tabular one keeps no input rows, so the pool stands in
    assert "the reference holds no sample of rows" in " ".join(out.split())
    code, _, err = _run(["feedback", "queue", "--log", str(store), "--n", "4", "--out", str(queue), "--reference",
                         "m@staging", *registry], capsys)
    _assert_user_error(code, err, "staging")


def test_since_and_until_take_unix_seconds_or_iso_dates(tmp_path, capsys):
    store = tmp_path / "log"
    _write_log(store, 6)
    out = tmp_path / "q.csv"
    base = ["feedback", "queue", "--log", str(store), "--n", "10", "--out", str(out)]
    for since in ("2000-01-01", "946684800", "2000-01-01T00:00:00+02:00"):
        code, stdout, err = _run([*base, "--since", since], capsys)
        assert code == 0 and "Queued 6 of 6" in stdout, err
    code, _, err = _run([*base, "--until", "2000-01-01"], capsys)  # before every logged row
    _assert_user_error(code, err, "none of the 6 logged predictions")
    code, _, err = _run([*base, "--since", "last tuesday"], capsys)
    _assert_user_error(code, err, "--since", "ISO 8601")
