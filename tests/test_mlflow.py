"""MLflow interoperability against a real local MLflow tracking store (SQLite backend, artifacts in a temp folder;
no mocks): the evaluator plugin through ``mlflow.models.evaluate(..., evaluators=["assay"])`` -- logged metrics
and CI companions equal to the bundle's evidence.json and to MLflow's and scikit-learn's own numbers -- and
``assay registry export-mlflow`` / ``import-mlflow`` end to end: a round trip of versions, sha256 tags and aliases,
idempotence, alias moves both ways, versions without Assay evidence, and bad input (exit 2, Error/Fix, no
traceback). One tracking database serves the module (MLflow's schema migrations take ~2 s); each test uses its own
model names and Assay registries."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from assay.errors import ModelError  # noqa: E402
from assay.integrations._mlflow import evidence_metrics, metric_name  # noqa: E402
from assay.integrations.mlflow_evaluator import AssayEvaluator  # noqa: E402
from assay.registry import open_registry  # noqa: E402
from assay.registry.promotion import promote  # noqa: E402
from conftest import make_blobs_dataset  # noqa: E402
from registry_bundles import Bundles  # noqa: E402
from test_registry_cli import _assert_user_error, _run  # noqa: E402  (the registry CLI's test helpers)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real MLflow tracking store: SQLite database and artifacts in a temp folder (also the working directory,
    where MLflow puts the artifacts of experiments created without a location), the assay evaluator registered as
    the entry point would register it, and three tiny ONNX models with their evidence bundles."""
    from mlflow.models.evaluation.evaluator_registry import _model_evaluation_registry

    root = tmp_path_factory.mktemp("mlflow")
    patch = pytest.MonkeyPatch()
    patch.chdir(root)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    patch.setenv("MLFLOW_TRACKING_URI", uri)
    patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    _model_evaluation_registry.register("assay", AssayEvaluator)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("evaluations", artifact_location=str(root / "evaluations"))
    (root / "bundles").mkdir()
    try:
        yield SimpleNamespace(uri=uri, root=root, client=client, experiment=experiment,
                              bundles=Bundles(root / "bundles"))
    finally:
        patch.undo()


def _open(path: Path):
    """An Assay registry (SQLite) in ``path``, created when new."""
    path.mkdir(parents=True, exist_ok=True)
    return open_registry(f"sqlite:///{path / 'registry.db'}", artifacts=path / "artifacts")


def _registry_args(path: Path) -> list[str]:
    path.mkdir(parents=True, exist_ok=True)
    return ["--registry", f"sqlite:///{path / 'registry.db'}", "--artifacts", str(path / "artifacts")]


def _download_evidence(client: MlflowClient, run_id: str, dest: Path) -> dict:
    folder = Path(client.download_artifacts(run_id, "assay/evidence", str(dest)))
    return json.loads((folder / "evidence.json").read_text())


def _expected_metrics(evidence: dict) -> dict[str, float]:
    """Every finite metric of evidence.json (read as plain JSON) with its finite CI ends, by MLflow name."""
    expected = {}
    for section, body in evidence["sections"].items():
        for key, m in body["metrics"].items():
            if m["value"] is None or not math.isfinite(m["value"]):
                continue
            name = metric_name(f"{section}.{key}")
            expected[name] = m["value"]
            for end in ("ci_low", "ci_high"):
                if m[end] is not None and math.isfinite(m[end]):
                    expected[f"{name}_{end}"] = m[end]
    return expected


# --------------------------------------------------------------------------------------------- the evaluator


def test_evaluate_with_assay_logs_every_metric_its_ci_and_the_bundle(store, tmp_path):
    from sklearn.metrics import accuracy_score, log_loss

    from assay.evidence.bundle import read_evidence

    ds, model = make_blobs_dataset(n=300)
    logits = model.logits(ds.x)
    mlflow.set_experiment(experiment_id=store.experiment)
    with mlflow.start_run() as run:
        result = mlflow.models.evaluate(lambda x: model.logits(np.asarray(x, dtype=np.float32)), ds.x,
                                        targets=ds.y, model_type="classifier", evaluators=["assay"],
                                        evaluator_config={"assay": {"n_bootstrap": 200}})
    logged = store.client.get_run(run.info.run_id)
    evidence = _download_evidence(store.client, run.info.run_id, tmp_path)
    expected = _expected_metrics(evidence)
    assert len(expected) > 20 and "performance.accuracy_ci_low" in expected and "calibration.ece_ci_high" in expected
    assert logged.data.metrics == expected  # every one, exactly as evidence.json has it, and nothing else
    assert result.metrics == expected
    # independent references for two of them
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    assert expected["performance.accuracy"] == pytest.approx(accuracy_score(ds.y, logits.argmax(1)), abs=1e-12)
    assert expected["performance.nll"] == pytest.approx(log_loss(ds.y, probabilities), rel=1e-5)
    assert expected["performance.accuracy_ci_low"] <= expected["performance.accuracy"] \
        <= expected["performance.accuracy_ci_high"]
    files = {Path(f.path).name for f in store.client.list_artifacts(run.info.run_id, "assay/evidence")}
    assert {"evidence.json", "predictions.npz", "report.html", "assay-manifest.json"} <= files
    assert logged.data.tags["assay.verdict"] == read_evidence(tmp_path / "evidence").verdict
    assert logged.data.tags["assay.evidence_path"] == "assay/evidence"
    assert "<html" in result.artifacts["assay_report"].content
    assert result.artifacts["assay_evidence"].content == evidence


def test_evaluate_a_logged_sklearn_model_agrees_with_mlflows_own_evaluator(store):
    """A pyfunc by URI, string labels in a DataFrame: Assay scores with the raw model's predict_proba in its
    classes_ order; MLflow's built-in classifier evaluator, run alongside, is the reference."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    ds, _ = make_blobs_dataset(n=240, seed=3, noise=6.0)
    frame = pd.DataFrame(ds.x, columns=["f0", "f1", "f2", "f3"]).assign(label=np.array(["ant", "bee", "cat"])[ds.y])
    clf = LogisticRegression(max_iter=500).fit(frame[["f0", "f1", "f2", "f3"]], frame["label"])
    mlflow.set_experiment(experiment_id=store.experiment)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(clf, name="clf", serialization_format="cloudpickle",
                                        pip_requirements=["scikit-learn"])
        result = mlflow.models.evaluate(info.model_uri, frame, targets="label", model_type="classifier",
                                        evaluators=["assay", "default"],
                                        evaluator_config={"assay": {"n_bootstrap": 100},
                                                          "default": {"log_model_explainability": False}})
    assert 0.5 < result.metrics["accuracy_score"] < 1  # a model that errs, so the comparison means something
    assert result.metrics["performance.accuracy"] == pytest.approx(result.metrics["accuracy_score"], abs=1e-12)
    assert result.metrics["performance.nll"] == pytest.approx(result.metrics["log_loss"], rel=1e-6)
    evidence = result.artifacts["assay_evidence"].content
    assert evidence["model"]["class_names"] == ["ant", "bee", "cat"]
    assert evidence["model"]["outputs"] == "probabilities"
    assert evidence["model"]["path"].startswith("models:/")


def test_evaluator_config_input_shape_and_label_list(store):
    """MLflow's rows reshaped to images for Assay (the model still gets MLflow's flat rows), and 1-based labels
    mapped through label_list; without it they are refused with that fix."""
    from assay.errors import DataError

    rng = np.random.default_rng(0)
    x = rng.random((120, 16)).astype(np.float32)
    weight = rng.normal(size=(16, 3)).astype(np.float32)
    seen_shapes = set()

    def predict(rows):
        rows = np.asarray(rows, dtype=np.float32)
        seen_shapes.add(rows.shape[1:])
        return rows @ weight

    y = (x @ weight).argmax(1) + 1  # labels 1, 2, 3 for score columns 0, 1, 2
    mlflow.set_experiment(experiment_id=store.experiment)
    with mlflow.start_run():
        result = mlflow.models.evaluate(predict, x, targets=y, model_type="classifier", evaluators=["assay"],
                                        evaluator_config={"assay": {"input_shape": [1, 4, 4], "label_list": [1, 2, 3],
                                                                    "n_bootstrap": 100}})
    evidence = result.artifacts["assay_evidence"].content
    assert evidence["model"]["input_shape"] == [None, 1, 4, 4] and evidence["data"]["modality"] == "image"
    assert evidence["model"]["class_names"] == ["1", "2", "3"] and result.metrics["performance.accuracy"] == 1.0
    assert seen_shapes == {(16,)}
    with mlflow.start_run(), pytest.raises(DataError, match="targets 3 are not among the model's classes"):
        mlflow.models.evaluate(predict, x, targets=y, model_type="classifier", evaluators=["assay"])


def test_evaluator_refuses_labels_static_predictions_and_regressors(store):
    ds, _ = make_blobs_dataset(n=60)
    mlflow.set_experiment(experiment_id=store.experiment)
    with mlflow.start_run(), pytest.raises(ModelError, match="one row of class scores") as caught:
        mlflow.models.evaluate(lambda x: np.zeros(len(x), dtype=np.int64), ds.x, targets=ds.y,
                               model_type="classifier", evaluators=["assay"])
    assert "pyfunc_predict_fn='predict_proba'" in (caught.value.fix or "")
    import pandas as pd

    frame = pd.DataFrame(ds.x, columns=list("abcd")).assign(label=ds.y, pred=ds.y)
    with mlflow.start_run(), pytest.raises(ModelError, match="needs the model itself"):
        mlflow.models.evaluate(data=frame, targets="label", predictions="pred", model_type="classifier",
                               evaluators=["assay"])
    assert not AssayEvaluator.can_evaluate(model_type="regressor", evaluator_config={})
    assert AssayEvaluator.can_evaluate(model_type="classifier", evaluator_config={})


def test_the_entry_point_registers_the_evaluator_in_a_fresh_interpreter(tmp_path):
    """MLflow finds evaluators through the ``mlflow.model_evaluator`` entry point group of installed
    distributions: a distribution declaring exactly the line pyproject.toml needs makes ``"assay"`` a registered
    evaluator, loaded by MLflow's own registry (``list_evaluators``), and the module imports without MLflow."""
    import subprocess

    info = tmp_path / "assay_entry_probe-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: assay-entry-probe\nVersion: 0\n")
    (info / "entry_points.txt").write_text(
        "[mlflow.model_evaluator]\nassay = assay.integrations.mlflow_evaluator:AssayEvaluator\n")
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "from mlflow.models.evaluation.evaluator_registry import _model_evaluation_registry as r\n"
            "from mlflow.models import list_evaluators\n"
            "print(sorted(list_evaluators()), r.get_evaluator('assay').__class__.__module__)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'assay'" in done.stdout and "assay.integrations.mlflow_evaluator" in done.stdout, done.stdout
    without = ("import sys; sys.modules['mlflow'] = None\n"
               "import assay.integrations.mlflow_evaluator as m, assay.integrations.mlflow_registry\n"
               "print(m.AssayEvaluator.can_evaluate(model_type='classifier', evaluator_config={}))\n")
    done = subprocess.run([sys.executable, "-c", without], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr[-2000:]


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=400))
def test_metric_names_are_names_mlflow_accepts(name):
    """Any Assay metric name becomes a key MLflow's own validator accepts (the reference), at most 250 long."""
    from mlflow.utils.validation import _validate_metric_name

    key = metric_name(name)
    _validate_metric_name(key)
    assert 0 < len(key) <= 250


def test_metric_names_keep_assay_names_and_never_merge_two(store, tmp_path):
    assert metric_name("performance.accuracy") == "performance.accuracy"
    assert metric_name("ood.auroc[msp,svhn]") == "ood.auroc_msp_svhn"
    assert metric_name("robustness.robust_accuracy_pgd@0.03137") == "robustness.robust_accuracy_pgd_0.03137"
    from assay.evidence.bundle import read_evidence
    from assay.evidence.schema import Metric

    evidence = read_evidence(store.bundles.bundles["a"])
    section = evidence.sections["performance"]
    extra = {"x[a]": Metric(value=1.0, n=1, method="m"), "x_a": Metric(value=2.0, ci_low=1.5, n=1, method="m"),
             "nan": Metric(value=float("nan"), n=1, method="m")}
    evidence.sections["performance"] = section.model_copy(update={"metrics": {**section.metrics, **extra}})
    logged = evidence_metrics(evidence)
    keys = [m.key for m in logged]
    assert len(keys) == len(set(keys))  # no number overwrites another
    by_source = {(m.metric, m.field): m.value for m in logged}
    assert by_source[("x[a]", "value")] == 1.0 and by_source[("x_a", "value")] == 2.0
    assert by_source[("x_a", "ci_low")] == 1.5 and ("nan", "value") not in by_source


# --------------------------------------------------------------------------------- export and import


def _mlflow_state(client: MlflowClient, name: str) -> tuple[list[tuple[int, str, str, str]], dict[str, int]]:
    versions = sorted((int(mv.version), mv.tags["assay.model_sha256"], mv.tags["assay.evidence_sha256"],
                       mv.tags["assay.version"]) for mv in client.search_model_versions(f"name='{name}'"))
    aliases = {a: int(v) for a, v in client.get_registered_model(name).aliases.items()}
    return versions, aliases


def _assay_state(path: Path, name: str):
    reg = _open(path)
    try:
        versions = [(v.version, v.model_sha256, v.evidence_sha256, v.message, v.tags, v.creator, v.archived)
                    for v in reg.versions(name)]
        return versions, reg.aliases(name), len(reg.history(name)), reg.verify().ok
    finally:
        reg.close()


def test_export_then_import_round_trips_versions_sha256_and_aliases(store, tmp_path, capsys):
    b = store.bundles
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    reg = _open(a_dir)
    try:
        reg.register("clf", b.models["a"], evidence=b.bundles["a"], message="baseline", tags={"owner": "ml"})
        reg.register("clf", b.models["b"], evidence=b.bundles["b"])
        reg.register("clf", b.models["c"], evidence=b.bundles["c"])
        promote(reg, "clf", 1, "production")
        promote(reg, "clf", 2, "staging")
        reg.archive("clf", 3, reason="worse on class 2")
    finally:
        reg.close()
    tracking = ["--tracking-uri", store.uri]
    code, out, err = _run(["registry", "export-mlflow", "clf", *tracking, *_registry_args(a_dir)], capsys)
    assert code == 0, err
    assert "clf@1 -> MLflow clf version 1 (created)" in out and "3 version(s), 3 new" in out, out
    a_versions, a_aliases, _, _ = _assay_state(a_dir, "clf")
    mlflow_versions, mlflow_aliases = _mlflow_state(store.client, "clf")
    assert mlflow_versions == [(v[0], v[1], v[2], str(v[0])) for v in a_versions]  # MLflow N is Assay N
    assert mlflow_aliases == a_aliases == {"production": 1, "staging": 2}
    first = store.client.get_model_version("clf", "1")
    assert first.description == "baseline" and first.tags["assay.tag.owner"] == "ml"
    assert store.client.get_model_version("clf", "3").tags["assay.archived"] == "worse on class 2"
    files = {f.path for f in store.client.list_artifacts(first.run_id, "assay/model")}
    assert files == {"assay/model/model_a.onnx"}
    run = store.client.get_run(first.run_id)
    assert run.data.metrics["performance.accuracy"] == json.loads(
        (b.bundles["a"] / "evidence.json").read_text())["sections"]["performance"]["metrics"]["accuracy"]["value"]

    code, out, err = _run(["registry", "import-mlflow", "clf", *tracking, *_registry_args(b_dir)], capsys)
    assert code == 0, err
    assert "clf@1 <- MLflow clf version 1 (registered)" in out, out
    b_versions, b_aliases, b_moves, b_ok = _assay_state(b_dir, "clf")
    assert b_versions == a_versions and b_aliases == a_aliases and b_ok  # numbers, sha256, message, tags, archived

    # idempotent both ways: nothing new anywhere
    for command, where in (("export-mlflow", a_dir), ("import-mlflow", b_dir)):
        code, out, err = _run(["registry", command, "clf", *tracking, *_registry_args(where)], capsys)
        assert code == 0 and "0 new" in out and "0 moved" in out and "already there" in out, (out, err)
    assert _mlflow_state(store.client, "clf") == (mlflow_versions, mlflow_aliases)
    assert _assay_state(b_dir, "clf") == (b_versions, b_aliases, b_moves, True)
    assert len(store.client.search_runs([store.client.get_experiment_by_name("assay-registry").experiment_id],
                                        "tags.`assay.model_name` = 'clf'")) == 3  # no run logged twice

    # an alias moved in Assay moves in MLflow; imported back it moves as a forced promotion with its gate verdict
    reg = _open(a_dir)
    try:
        promote(reg, "clf", 2, "production", force=True, reason="b is the one", n_bootstrap=100)
    finally:
        reg.close()
    code, out, err = _run(["registry", "export-mlflow", "clf", *tracking, *_registry_args(a_dir)], capsys)
    assert code == 0 and "alias production: clf@2 = MLflow version 2 (set: was MLflow version 1)" in out, out
    assert _mlflow_state(store.client, "clf")[1] == {"production": 2, "staging": 2}
    code, out, err = _run(["registry", "import-mlflow", "clf", *tracking, "--n-bootstrap", "100",
                           *_registry_args(b_dir)], capsys)
    assert code == 0 and "(forced: was version 1; moved as MLflow had it, gate" in " ".join(out.split()), out
    reg = _open(b_dir)
    try:
        last = reg.history("clf", "production")[-1]
        assert (last.from_version, last.to_version, last.action, last.forced) == (1, 2, "force", True)
        assert "imported from MLflow" in (last.reason or "") and last.gate_verdict in ("pass", "fail", "inconclusive")
        assert reg.verify().ok
    finally:
        reg.close()


def test_factory_and_external_data_versions_round_trip(store, tmp_path):
    """A factory version (weights file + ``package.module:callable``, sha256 of both) and an ONNX model whose
    weights live in an external data file come back with the same sha256 and files, through the library calls."""
    import hashlib

    from assay.integrations.mlflow_registry import export_to_mlflow, import_from_mlflow
    from registry_bundles import evaluate, make_onnx, rewrite_evidence

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"bytes standing for weights")
    spec = "somepkg.models:build"
    sha = hashlib.sha256(spec.encode() + b"\0" + weights.read_bytes()).hexdigest()
    factory_bundle = rewrite_evidence(store.bundles.bundles["a"], tmp_path / "factory_bundle", sha256=sha,
                                      path=spec, weights=str(weights), format="factory")
    external = make_onnx(tmp_path / "ext" / "model.onnx", seed=7, external=True)
    external_bundle = evaluate(external, store.bundles.data, tmp_path / "ext_bundle")
    with _open(tmp_path / "a") as reg:
        reg.register("kinds", spec, weights=weights, evidence=factory_bundle)
        reg.register("kinds", external, evidence=external_bundle)
        sent = export_to_mlflow(reg, "kinds", tracking_uri=store.uri)
        originals = reg.versions("kinds")
    assert [(v.assay_version, v.mlflow_version, v.created) for v in sent.versions] == [(1, 1, True), (2, 2, True)]
    with _open(tmp_path / "b") as reg:
        got = import_from_mlflow(reg, "kinds", tracking_uri=store.uri)
        copies = reg.versions("kinds")
        files = sorted(p.name for p in reg.model_path(copies[1]).parent.iterdir())
        assert reg.model_path(copies[0]).read_bytes() == weights.read_bytes()
    assert [(v.assay_version, v.created) for v in got.versions] == [(1, True), (2, True)]
    assert [(v.model_sha256, v.evidence_sha256, v.model_format) for v in copies] == \
        [(v.model_sha256, v.evidence_sha256, v.model_format) for v in originals]
    assert copies[0].model_spec["path"] == spec and copies[0].model_sha256 == sha
    assert files == ["model.onnx", "model.onnx.data"]


def test_import_refuses_versions_without_assay_evidence_unless_skipped(store, tmp_path, capsys):
    b = store.bundles
    a_dir, c_dir = tmp_path / "a", tmp_path / "c"
    reg = _open(a_dir)
    try:
        reg.register("mixed", b.models["a"], evidence=b.bundles["a"])
        promote(reg, "mixed", 1, "production")
    finally:
        reg.close()
    tracking = ["--tracking-uri", store.uri]
    assert _run(["registry", "export-mlflow", "mixed", *tracking, *_registry_args(a_dir)], capsys)[0] == 0
    # MLflow-native versions: a run with other files, and one with an evaluator-style bundle but no model file
    plain = store.client.create_run(store.experiment)
    (tmp_path / "weights.bin").write_bytes(b"not an Assay model")
    store.client.log_artifact(plain.info.run_id, str(tmp_path / "weights.bin"), "model")
    bundle_only = store.client.create_run(store.experiment)
    store.client.log_artifacts(bundle_only.info.run_id, str(b.bundles["b"]), "assay/evidence")
    for run in (plain, bundle_only):
        mv = store.client.create_model_version("mixed", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    store.client.set_registered_model_alias("mixed", "canary", mv.version)

    code, _, err = _run(["registry", "import-mlflow", "mixed", *tracking, *_registry_args(c_dir)], capsys)
    _assert_user_error(code, err, "2 version(s) of MLflow's 'mixed' carry no Assay evidence",
                       "version 2: its run holds no Assay evidence bundle",
                       "version 3: its run holds an Assay bundle but no model file", "--skip-unevaluated")
    code, out, err = _run(["registry", "list", "--json", *_registry_args(c_dir)], capsys)
    assert code == 0 and json.loads(out) == [], out  # nothing was written

    code, out, err = _run(["registry", "import-mlflow", "mixed", *tracking, "--skip-unevaluated",
                           *_registry_args(c_dir)], capsys)
    assert code == 0, err
    flat = " ".join(out.split())
    assert "note: MLflow version 2 skipped: its run holds no Assay evidence bundle" in flat, out
    assert "alias canary: mixed@- = MLflow version 3 (skipped: MLflow version 3 was not imported" in flat, out
    assert "mixed@1 <- MLflow mixed version 1 (registered)" in flat, out
    versions, aliases, _, ok = _assay_state(c_dir, "mixed")
    assert [v[1] for v in versions] == [_assay_state(a_dir, "mixed")[0][0][1]] and aliases == {"production": 1}
    assert ok


def test_bad_input_exits_2_with_a_fix(store, tmp_path, capsys, monkeypatch):
    b = store.bundles
    a_dir = tmp_path / "a"
    reg = _open(a_dir)
    try:
        reg.register("odd", b.models["a"], evidence=b.bundles["a"])
        promote(reg, "odd", 1, "prod.eu")
    finally:
        reg.close()
    tracking = ["--tracking-uri", store.uri]
    _assert_user_error(*_run(["registry", "export-mlflow", "nosuch", *tracking, *_registry_args(a_dir)],
                             capsys)[::2], "no model named 'nosuch'")
    _assert_user_error(*_run(["registry", "import-mlflow", "nosuch", *tracking, *_registry_args(a_dir)],
                             capsys)[::2], "MLflow has no registered model 'nosuch'")
    _assert_user_error(*_run(["registry", "import-mlflow", "bad name", *tracking, *_registry_args(a_dir)],
                             capsys)[::2], "not a valid model name")
    _assert_user_error(*_run(["registry", "export-mlflow", "odd", "--tracking-uri", "nosuchscheme://x",
                              *_registry_args(a_dir)], capsys)[::2], "MLflow refused")
    # an alias MLflow cannot name is skipped and said so; the versions still go
    code, out, err = _run(["registry", "export-mlflow", "odd", *tracking, *_registry_args(a_dir)], capsys)
    assert code == 0 and "alias prod.eu" in out and "skipped: MLflow alias names allow only" in out, (out, err)
    assert _mlflow_state(store.client, "odd") == ([(1, *_assay_state(a_dir, "odd")[0][0][1:3], "1")], {})

    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if MLflow were not installed
    for command in ("export-mlflow", "import-mlflow"):
        _assert_user_error(*_run(["registry", command, "odd", *tracking, *_registry_args(a_dir)], capsys)[::2],
                           "needs MLflow, which is not installed", "pip install 'assay[mlflow]'")
