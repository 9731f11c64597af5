"""``assay serve``: a classifier behind an HTTP API (FastAPI on uvicorn) with input validation, Prometheus
metrics, hot swap when a registry alias moves, shadow and canary routing, optional dynamic batching, and a
prediction log (:mod:`assay.serve.log`) fed through a :class:`~assay.serve.app.PredictionSink`."""

from assay.serve.app import ModelSlot, ModelSource, NullSink, PredictionSink, create_app
from assay.serve.server import serve

__all__ = ["ModelSlot", "ModelSource", "NullSink", "PredictionSink", "create_app", "serve"]
