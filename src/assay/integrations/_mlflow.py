"""What the MLflow bridges share: importing MLflow (a UserError naming the extra when it is missing), a client for
a tracking URI, MLflow's errors as Assay's, and an evidence bundle's metrics as MLflow metrics.

Metric names follow MLflow's rules (``mlflow.utils.validation``: letters, digits, ``_ - . /`` and spaces, no
name that normalises to another path, at most 250 characters): ``<section>.<metric>`` as Assay names them
(``performance.accuracy``), with each run of other characters replaced by one ``_`` (``ood.auroc[msp,svhn]`` ->
``ood.auroc_msp_svhn``); the interval's ends are companion metrics ``<name>_ci_low`` and ``<name>_ci_high``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from assay.errors import RegistryError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from assay.evidence.schema import Evidence

__all__ = ["EVIDENCE_PATH", "INSTALL", "MODEL_PATH", "LoggedMetric", "client_for", "evidence_metrics", "log_metrics",
           "metric_name", "mlflow_errors", "quiet_store_logs", "require_mlflow", "shown_uri"]

INSTALL = "pip install 'assay[mlflow]'"
#: Where a run keeps Assay's files (run artifact paths): the evidence bundle, and an exported version's model files.
EVIDENCE_PATH = "assay/evidence"
MODEL_PATH = "assay/model"
#: MLflow's longest metric / tag key (``MAX_ENTITY_KEY_LENGTH``).
MAX_KEY = 250
_OTHER = re.compile(r"[^A-Za-z0-9_\-. /]+")


def require_mlflow(what: str) -> ModuleType:
    """The ``mlflow`` module, or a RegistryError saying that ``what`` needs the ``mlflow`` extra."""
    try:
        import mlflow
    except ImportError:
        raise RegistryError(f"{what} needs MLflow, which is not installed", where="mlflow",
                            fix=f"install the extra: {INSTALL}") from None
    return mlflow


def shown_uri(uri: str) -> str:
    """A tracking URI fit for a message: a password in it is replaced by ``***``."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def client_for(tracking_uri: str | None, what: str) -> tuple[MlflowClient, str]:
    """An ``MlflowClient`` for ``tracking_uri`` (None: MLflow's own default -- ``MLFLOW_TRACKING_URI``, else
    ``sqlite:///mlflow.db`` in the working directory) and the URI as shown in messages. The model registry is
    the tracking store's unless ``MLFLOW_REGISTRY_URI`` says otherwise (MLflow's rule)."""
    mlflow = require_mlflow(what)
    from mlflow import MlflowClient

    with mlflow_errors(tracking_uri or "the default tracking URI"):
        uri = tracking_uri if tracking_uri is not None else mlflow.get_tracking_uri()
        return MlflowClient(tracking_uri=uri), shown_uri(uri)


@contextlib.contextmanager
def quiet_store_logs() -> Iterator[None]:
    """MLflow's INFO lines about creating and migrating a tracking database ("Creating initial MLflow database
    tables...") kept off stderr while Assay works, so that a command's error stays the first line there; its
    warnings still show."""
    loggers = [logging.getLogger(name) for name in ("mlflow.store.db.utils", "alembic")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextlib.contextmanager
def mlflow_errors(where: str) -> Iterator[None]:
    """MLflow's exceptions (``MlflowException``: a bad URI, a refused name, an unreachable server) raised inside
    as RegistryErrors naming ``where`` (the tracking URI)."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        message = " ".join(str(exc.message).split())
        raise RegistryError(f"MLflow refused: {message[:500]}", where=where,
                            fix="check the tracking URI (--tracking-uri or MLFLOW_TRACKING_URI) and that its server "
                                "is reachable; running the command again is safe") from None


def metric_name(name: str) -> str:
    """``name`` as an MLflow metric key: every run of characters MLflow refuses becomes one ``_`` (trailing ones
    dropped), path segments that would normalise away (``''``, ``.``, ``..``) become underscores, and a name over
    250 characters keeps its first 237 and a 12-hex digest of the whole."""
    segments = [_OTHER.sub("_", part).rstrip("_") or "_" for part in name.split("/")]
    text = "/".join("_" * len(s) if s in (".", "..") else s for s in segments)
    if len(text) > MAX_KEY:
        text = f"{text[:MAX_KEY - 13]}_{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    return text


@dataclass(frozen=True)
class LoggedMetric:
    """One number logged to MLflow: its key there, where it comes from in ``evidence.json``
    (``sections.<section>.metrics.<key>`` and the field: ``value``, ``ci_low`` or ``ci_high``), and the value."""

    key: str
    section: str
    metric: str
    field: str
    value: float


def evidence_metrics(evidence: Evidence, prefix: str = "") -> list[LoggedMetric]:
    """Every metric of ``evidence`` with a finite value, plus its finite CI ends as ``<name>_ci_low`` /
    ``<name>_ci_high``, under MLflow-safe keys (``prefix`` first). Two Assay names that sanitise to the same key
    are told apart by a digest of the original name, so no number overwrites another."""
    found: list[LoggedMetric] = []
    taken: dict[str, str] = {}
    for section_name, section in evidence.sections.items():
        for key, metric in section.metrics.items():
            if not _finite(metric.value):
                continue
            original = f"{prefix}{section_name}.{key}"
            base = metric_name(original)
            if taken.get(base, original) != original:  # another Assay name already sanitised to this key
                base = metric_name(f"{base}_{hashlib.sha256(original.encode()).hexdigest()[:8]}")
            taken[base] = original
            for field, suffix in (("value", ""), ("ci_low", "_ci_low"), ("ci_high", "_ci_high")):
                value = getattr(metric, field)
                if _finite(value):
                    found.append(LoggedMetric(metric_name(base + suffix), section_name, key, field, float(value)))
    return found


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def log_metrics(client: MlflowClient, run_id: str, metrics: list[LoggedMetric], *, model_id: str | None = None,
                dataset_name: str | None = None, dataset_digest: str | None = None) -> None:
    """``metrics`` to the run in batches (MLflow takes at most 1,000 per call), at step 0, linked to the logged
    model and the dataset when given (as MLflow's own evaluators do)."""
    import time

    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    entries = [Metric(key=m.key, value=m.value, timestamp=stamp, step=0, model_id=model_id,
                      dataset_name=dataset_name, dataset_digest=dataset_digest, run_id=run_id) for m in metrics]
    for start in range(0, len(entries), 1000):
        client.log_batch(run_id, metrics=entries[start:start + 1000])
