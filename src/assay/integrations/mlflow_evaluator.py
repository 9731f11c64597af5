"""MLflow's model-evaluator plugin: ``mlflow.models.evaluate(model, data, targets=..., model_type="classifier",
evaluators=["assay"])`` runs Assay's evaluation on what MLflow hands over and logs it to MLflow's run.

The plugin API is MLflow 3.x's ``ModelEvaluator`` (``mlflow/models/evaluation/base.py``): a class with
``can_evaluate(*, model_type, evaluator_config, **kwargs)`` and ``evaluate(*, model_type, dataset, run_id,
evaluator_config, model=None, extra_metrics=None, custom_artifacts=None, predictions=None, **kwargs)`` returning
an ``EvaluationResult``, found through the ``mlflow.model_evaluator`` entry point
(``mlflow/models/evaluation/evaluator_registry.py``: name -> class, instantiated without arguments). Assay's
distribution declares ``assay = "assay.integrations.mlflow_evaluator:AssayEvaluator"`` there.

What it does with MLflow's inputs:

* **model** (a pyfunc model, or the function MLflow wrapped as one) becomes an Assay :class:`~assay.models.Model`
  whose forward pass calls it: the class scores are the raw model's ``predict_proba`` when it has one
  (scikit-learn, XGBoost, ... as MLflow's own classifier evaluator does), else what ``predict`` returns, which
  must be one row of scores per input (logits, or probabilities: detected, or set with ``outputs``). Labels in
  score-column order: ``label_list`` from the config, else the raw model's ``classes_``, else 0..C-1 when the
  targets are whole numbers, else the sorted distinct targets.
* **data** (MLflow's features: a 2-D array or a DataFrame, and its targets) becomes an
  :meth:`assay.data.dataset.Dataset.from_arrays` (``input_shape`` reshapes each row, e.g. ``[1, 28, 28]``, so
  image checks see images); the model always gets rows back in MLflow's form (a DataFrame with the same columns,
  integer columns restored while the values are whole numbers).
* **output**: every Assay metric with a finite value, and its CI ends as ``<name>_ci_low`` / ``<name>_ci_high``
  (names: :func:`assay.integrations._mlflow.metric_name`), logged to the run; the evidence bundle
  (evidence.json, predictions.npz, report.html, ...) under ``assay/evidence/`` in the run's artifacts; tags
  ``assay.verdict``, ``assay.model_sha256`` and ``assay.evidence_path``. The same metrics and two artifacts
  (``assay_evidence``: evidence.json, ``assay_report``: report.html) come back in the ``EvaluationResult``.

``evaluator_config`` keys: ``checks``, ``suite``, ``n_bootstrap``, ``seed``, ``confidence`` (as in
:func:`assay.evaluate`), ``label_list``, ``class_names``, ``outputs`` (``"logits"`` / ``"probabilities"``),
``input_shape``, ``metric_prefix`` (prepended to every metric name), ``out`` (also keep the bundle in this
folder); any other key is passed to :func:`assay.evaluate` as a check setting (``slice_by``, ``corruptions``, ...).
``extra_metrics`` and ``custom_artifacts`` belong to MLflow's built-in evaluators: run them alongside
(``evaluators=["assay", "default"]``). Bad input raises Assay's :class:`~assay.errors.UserError` (what, where, fix).

The model's ``sha256`` in evidence.json identifies the MLflow model by its MLmodel metadata (which carries the
``model_uuid`` MLflow gives every logged model), not by its weights; a function has no metadata, so its sha256 is
that of its scores on the first rows of the data. Either way such a bundle cannot be registered in Assay's registry
(which needs a model file): register an ONNX / TorchScript / factory model evaluated with ``assay evaluate``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from assay.errors import DataError, ModelError, OptionError
from assay.evidence.schema import ModelInfo
from assay.models.base import Model, looks_like_probabilities

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models.evaluation.base import EvaluationResult
    from mlflow.models.evaluation.base import ModelEvaluator as _Plugin
else:
    try:
        from mlflow.models.evaluation.base import ModelEvaluator as _Plugin
    except ImportError:  # without MLflow the module still imports; only MLflow ever calls the class
        _Plugin = object

__all__ = ["CONFIG_KEYS", "AssayEvaluator"]

_logger = logging.getLogger(__name__)

#: ``evaluator_config`` keys the evaluator reads itself; any other key goes to :func:`assay.evaluate`.
CONFIG_KEYS = frozenset({"checks", "suite", "n_bootstrap", "seed", "confidence", "label_list", "class_names",
                         "outputs", "input_shape", "metric_prefix", "out"})
_PROBE_ROWS = 256


class AssayEvaluator(_Plugin):
    """Assay's evaluation as an MLflow model evaluator (see the module docstring)."""

    name = "assay"

    @classmethod
    def can_evaluate(cls, *, model_type: str | None, evaluator_config: Mapping[str, Any] | None,
                     **kwargs: Any) -> bool:
        """Classifiers only: Assay's checks read per-class scores."""
        return model_type == "classifier"

    def evaluate(self, *, model_type: str | None, dataset: Any, run_id: str,
                 evaluator_config: Mapping[str, Any] | None, model: Any = None, extra_metrics: Any = None,
                 custom_artifacts: Any = None, predictions: str | None = None, **kwargs: Any) -> EvaluationResult:
        """Evaluate ``model`` on ``dataset`` with Assay, log metrics, CI companions and the bundle to ``run_id``."""
        from mlflow import MlflowClient
        from mlflow.models.evaluation.artifacts import JsonEvaluationArtifact, TextEvaluationArtifact
        from mlflow.models.evaluation.base import EvaluationResult

        from assay.api import CHECKS
        from assay.api import evaluate as assay_evaluate
        from assay.integrations._mlflow import EVIDENCE_PATH, evidence_metrics, log_metrics

        config = dict(evaluator_config or {})
        if model is None:
            raise ModelError("the assay evaluator needs the model itself: it evaluates per-class scores, which a "
                             "column of stored predictions does not hold", where="model",
                             fix="pass the model: mlflow.models.evaluate(model_uri_or_pyfunc, data, ...)")
        if extra_metrics or custom_artifacts:
            _logger.warning("the assay evaluator ignores extra_metrics and custom_artifacts; list the 'default' "
                            "evaluator too (evaluators=['assay', 'default']) to compute them")
        assay_model, data = model_and_data(model, dataset, config)
        settings = {k: v for k, v in config.items() if k not in CONFIG_KEYS}
        prefix = config.get("metric_prefix") or ""
        if not isinstance(prefix, str):
            raise OptionError(f"metric_prefix must be text, not {type(prefix).__name__}", where="metric_prefix",
                              fix="pass a string such as 'assay/'")
        client = MlflowClient()
        with tempfile.TemporaryDirectory(prefix="assay-mlflow-") as tmp:
            bundle = Path(config["out"]) if config.get("out") else Path(tmp) / "bundle"
            evidence = assay_evaluate(
                assay_model, data, out=bundle, checks=config.get("checks") or CHECKS, suite=config.get("suite"),
                seed=config.get("seed", 0), n_bootstrap=config.get("n_bootstrap", 1000),
                confidence=config.get("confidence", 0.95), cache_dir=False, **settings)
            metrics = evidence_metrics(evidence, prefix)
            log_metrics(client, run_id, metrics, model_id=kwargs.get("model_id"),
                        dataset_name=getattr(dataset, "name", None), dataset_digest=getattr(dataset, "digest", None))
            client.log_artifacts(run_id, str(bundle), EVIDENCE_PATH)
            for key, value in (("assay.verdict", evidence.verdict), ("assay.model_sha256", evidence.model.sha256),
                               ("assay.evidence_path", EVIDENCE_PATH)):
                client.set_tag(run_id, key, value)
            evidence_json = json.loads((bundle / "evidence.json").read_text(encoding="utf-8"))
            report_html = (bundle / "report.html").read_text(encoding="utf-8")
        root = client.get_run(run_id).info.artifact_uri.rstrip("/")
        artifacts = {
            "assay_evidence": JsonEvaluationArtifact(uri=f"{root}/{EVIDENCE_PATH}/evidence.json",
                                                     content=evidence_json),
            "assay_report": TextEvaluationArtifact(uri=f"{root}/{EVIDENCE_PATH}/report.html", content=report_html),
        }
        return EvaluationResult(metrics={m.key: m.value for m in metrics}, artifacts=artifacts, run_id=run_id)


# --------------------------------------------------------------------------------- MLflow's inputs as Assay's


class _PredictModel(Model):
    """An MLflow model (anything with ``predict``) as an Assay Model: each batch goes back to MLflow's input form
    (``to_input``) and through ``score`` (the raw model's ``predict_proba``, or ``predict``)."""

    def __init__(self, score: Callable[[Any], Any], method: str, to_input: Callable[[np.ndarray], Any],
                 info: ModelInfo) -> None:
        self._score = score
        self._method = method
        self._to_input = to_input
        self.info = info

    def _forward(self, x: np.ndarray, want_features: bool) -> tuple[np.ndarray, np.ndarray | None]:
        return _scores(self._score(self._to_input(x)), self._method, self.info.path), None


def model_and_data(model: Any, dataset: Any, config: Mapping[str, Any]) -> tuple[Model, Any]:
    """MLflow's model and ``EvaluationDataset`` (``features_data``, ``labels_data``) as an Assay Model and
    Dataset, following ``config`` (``label_list``, ``class_names``, ``outputs``, ``input_shape``)."""
    from assay.data.dataset import Dataset

    features = dataset.features_data
    labels = dataset.labels_data
    if labels is None:
        raise DataError("the assay evaluator needs the targets (true labels)", where="targets",
                        fix="pass targets=... to mlflow.models.evaluate")
    x, to_input, where = _features(features)
    x = _reshape(x, config.get("input_shape"))
    score, method = _score_function(model)
    path = _model_path(model)
    probe = _scores(score(to_input(x[:_PROBE_ROWS])), method, path)
    n_classes = probe.shape[1]
    given = config.get("outputs")
    if given not in (None, "logits", "probabilities"):
        raise OptionError(f"outputs must be 'logits' or 'probabilities', not {given!r}", where="outputs",
                          fix="say what the model's scores are, or leave outputs out to detect it")
    outputs: Literal["logits", "probabilities"] = (
        given if given is not None
        else "probabilities" if method == "predict_proba" or looks_like_probabilities(probe) else "logits")
    label_list = _label_list(config.get("label_list"), _raw_classes(model), np.asarray(labels), n_classes)
    y = _label_indices(np.asarray(labels), label_list)
    class_names = _class_names(config.get("class_names"), label_list)
    info = ModelInfo(path=path, format="mlflow-pyfunc", sha256=_model_sha256(model, probe),
                     input_shape=[None] if x.dtype.kind in "US" else [None, *x.shape[1:]],
                     input_dtype="string" if x.dtype.kind in "US" else "float32", num_classes=n_classes,
                     class_names=class_names, outputs=outputs)
    name = str(getattr(dataset, "name", None) or "mlflow-dataset")
    data = Dataset.from_arrays(x, y, class_names=class_names, name=name)
    _logger.debug("assay evaluator: %s rows from %s, %d classes, scores from %s", len(x), where, n_classes, method)
    return _PredictModel(score, method, to_input, info), data


def _features(features: Any) -> tuple[np.ndarray, Callable[[np.ndarray], Any], str]:
    """The features as Assay's array (float32 rows, or strings for one text column) and the function that turns
    a batch of them back into what the model was given (same container, columns and integer dtypes)."""
    import pandas as pd

    if isinstance(features, pd.DataFrame):
        columns = list(features.columns)
        dtypes = dict(features.dtypes.items())
        numeric = [pd.api.types.is_numeric_dtype(t) or pd.api.types.is_bool_dtype(t) for t in dtypes.values()]
        if all(numeric):
            x = features.to_numpy(dtype=np.float32)
            return x, lambda batch: _frame(batch, columns, dtypes), "a DataFrame"
        if len(columns) == 1:
            text = features.iloc[:, 0]
            if all(isinstance(v, str) for v in text):
                return text.to_numpy(dtype=str), lambda batch: pd.DataFrame({columns[0]: list(batch)}), "a DataFrame"
        bad = next(c for c, ok in zip(columns, numeric, strict=True) if not ok)
        raise DataError(f"feature column {bad!r} is {dtypes[bad]}, not numbers", where=f"data[{bad!r}]",
                        fix="give numeric feature columns (encode categories first), or a single text column")
    array = np.asarray(features)
    if array.dtype.kind not in "biuf":
        raise DataError(f"the features are {array.dtype} values, not numbers", where="data",
                        fix="give a numeric array, or a DataFrame with one text column")
    dtype = array.dtype
    return array.astype(np.float32), lambda batch: _restore(batch.reshape(len(batch), -1), dtype), "an array"


def _frame(batch: np.ndarray, columns: list[Any], dtypes: Mapping[Any, Any]) -> pd.DataFrame:
    import pandas as pd

    flat = batch.reshape(len(batch), -1)
    return pd.DataFrame({c: _restore(flat[:, i], dtypes[c]) for i, c in enumerate(columns)}, columns=columns)


def _restore(values: np.ndarray, dtype: Any) -> np.ndarray:
    """``values`` in the original dtype where that loses nothing (integers and booleans only while every value
    still is one: a perturbed column stays float)."""
    target = np.dtype(dtype) if not hasattr(dtype, "numpy_dtype") else np.dtype(dtype.numpy_dtype)
    if target.kind == "f":
        return values.astype(target)
    if target.kind in "biu" and np.all(values == np.round(values)):
        if target.kind == "b" and not np.all((values == 0) | (values == 1)):
            return values
        return values.astype(target)
    return values


def _reshape(x: np.ndarray, input_shape: Any) -> np.ndarray:
    if input_shape is None:
        return x
    if x.dtype.kind in "US":
        raise OptionError("input_shape applies to numeric features, not text", where="input_shape",
                          fix="leave input_shape out")
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise OptionError(f"input_shape must be a list of sizes, not {input_shape!r}", where="input_shape",
                          fix="give the shape of one sample, e.g. [1, 28, 28]") from None
    if any(d < 1 for d in shape) or int(np.prod(shape)) != x.shape[1]:
        raise OptionError(f"input_shape {list(shape)} does not hold a row of {x.shape[1]} features",
                          where="input_shape", fix="give the shape of one sample whose sizes multiply to the "
                                                   "number of feature columns")
    return x.reshape(len(x), *shape)


def _raw_model(model: Any) -> Any:
    """The model under MLflow's pyfunc wrapper (``PyFuncModel.get_raw_model``), or None."""
    getter = getattr(model, "get_raw_model", None)
    if getter is None:
        return None
    try:
        return getter()
    except Exception:  # NotImplementedError, or a flavour whose wrapper cannot give it
        return None


def _score_function(model: Any) -> tuple[Callable[[Any], Any], str]:
    raw = _raw_model(model)
    proba = getattr(raw, "predict_proba", None)
    if callable(proba):
        return proba, "predict_proba"
    predict = getattr(model, "predict", None)
    if not callable(predict):
        raise ModelError(f"MLflow passed a {type(model).__name__} without a predict method", where="model",
                         fix="pass a pyfunc model, a model URI or a function")
    return predict, "predict"


def _raw_classes(model: Any) -> list[Any] | None:
    raw = _raw_model(model)
    classes = getattr(raw, "classes_", None)
    return None if classes is None else list(np.asarray(classes).tolist())


def _scores(out: Any, method: str, where: str) -> np.ndarray:
    """A model's output as an (N, C) float array of class scores, or a ModelError saying what came back."""
    import pandas as pd

    if isinstance(out, (pd.DataFrame, pd.Series)):
        out = out.to_numpy()
    try:
        array = np.asarray(out)
        if array.dtype == object and array.ndim == 1 and len(array) and np.ndim(array[0]) == 1:
            array = np.stack([np.asarray(row) for row in array])  # a column holding one score vector per row
        array = array.astype(np.float64)
    except (TypeError, ValueError):
        array = np.asarray([])
        shape = f"a {type(out).__name__} that is not an array of numbers"
    else:
        shape = f"an array of shape {array.shape}"
    if array.ndim != 2 or array.shape[1] < 2:
        raise ModelError(
            f"the model's {method} returned {shape}; Assay needs one row of class scores per input (N rows, one "
            "column per class): logits or probabilities, not class labels", where=where,
            fix="log the model so that predict returns scores (e.g. mlflow.sklearn.log_model(clf, ..., "
                "pyfunc_predict_fn='predict_proba')), or pass a function: mlflow.models.evaluate(lambda X: "
                "clf.predict_proba(X), data, ...)")
    return array


def _label_list(given: Any, classes: list[Any] | None, labels: np.ndarray, n_classes: int) -> list[Any]:
    """The label of each score column: ``label_list``, else the raw model's ``classes_``, else 0..C-1 for whole-
    number targets, else the sorted distinct targets (when there are C of them)."""
    if given is not None:
        found = list(given)
        how = "label_list"
    elif classes is not None:
        found, how = classes, "the model's classes_"
    elif labels.dtype.kind in "biuf" and np.all(labels == np.round(labels)):
        return list(range(n_classes))
    else:
        found, how = sorted(set(labels.tolist())), "the distinct targets"
    if len(found) != n_classes or len(set(found)) != len(found):
        raise DataError(f"{how} gives {len(found)} distinct labels, but the model scores {n_classes} classes",
                        where="label_list" if given is not None else "targets",
                        fix=f"pass evaluator_config={{'label_list': [...]}} with the {n_classes} labels in the order "
                            "of the model's score columns")
    return found


def _label_indices(labels: np.ndarray, label_list: Sequence[Any]) -> np.ndarray:
    index = {label: i for i, label in enumerate(label_list)}
    unknown = sorted({str(v) for v in labels.tolist() if v not in index})
    if unknown:
        raise DataError(f"targets {', '.join(unknown[:5])} are not among the model's classes "
                        f"({', '.join(map(str, label_list[:10]))})", where="targets",
                        fix="check the targets, or pass evaluator_config={'label_list': [...]} in the order of the "
                            "model's score columns")
    return np.asarray([index[v] for v in labels.tolist()], dtype=np.int64)


def _class_names(given: Any, label_list: Sequence[Any]) -> list[str]:
    if given is None:
        return [str(label) for label in label_list]
    names = [str(n) for n in given]
    if len(names) != len(label_list):
        raise OptionError(f"class_names has {len(names)} names for {len(label_list)} classes", where="class_names",
                          fix="give one name per score column")
    return names


def _model_path(model: Any) -> str:
    """Where the model came from, as MLflow knows it: ``models:/<id>``, ``runs:/<run>/<path>``, or a label."""
    meta = getattr(model, "metadata", None)
    if meta is None:
        return "<MLflow function model>"
    model_id = getattr(meta, "model_id", None)
    if model_id:
        return f"models:/{model_id}"
    if getattr(meta, "run_id", None) and getattr(meta, "artifact_path", None):
        return f"runs:/{meta.run_id}/{meta.artifact_path}"
    return f"<MLflow model {getattr(meta, 'model_uuid', None) or 'without id'}>"


def _model_sha256(model: Any, probe: np.ndarray) -> str:
    """sha256 of the MLmodel metadata (with its ``model_uuid``), or of the scores on the first rows for a
    function (see the module docstring)."""
    meta = getattr(model, "metadata", None)
    to_yaml = getattr(meta, "to_yaml", None)
    if callable(to_yaml):
        return hashlib.sha256(b"mlflow-model\0" + str(to_yaml()).encode("utf-8")).hexdigest()
    return hashlib.sha256(b"mlflow-function-scores\0" + np.ascontiguousarray(probe, dtype=np.float64).tobytes()
                          ).hexdigest()
