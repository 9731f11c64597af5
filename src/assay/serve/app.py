"""The HTTP app of ``assay serve``: ``create_app(model_source, ...) -> FastAPI``.

Design (issue 14):

- The model answers from a :class:`ModelSlot` holding one immutable :class:`LoadedModel` (version + model);
  a swap replaces the reference in one assignment, so a request keeps the model it started with and no lock
  is taken on the request path. Model calls block: they run in the threadpool (``run_in_threadpool``).
- Input validation happens before the model is touched: body size (Content-Length, then counted while the
  body streams in), JSON or ``application/x-npy`` (``np.load(allow_pickle=False)``), numeric values, the
  model's per-row shape, finite values, batch rows. Every refusal is a 4xx with
  ``{"error": what, "where": ..., "fix": ...}``; no input yields a 500.
- Hot swap: a poller (``poll_seconds``) or ``POST /admin/reload`` asks each registry-backed source which
  version its alias holds; a new one is loaded and warmed off the request path, then swapped in.
- Shadow (every request scored by a challenger after the response, its rows sent under the same request id
  with role ``shadow``) and canary (a sticky fraction by a hash of ``X-Assay-Key`` or the request id).
- Every prediction row goes to a :class:`PredictionSink` (the prediction log; a no-op by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import hmac
import io
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from assay.errors import OptionError, UserError
from assay.models.base import Model

__all__ = ["BadRequestError", "LoadedModel", "ModelSlot", "ModelSource", "NullSink", "PredictionSink", "create_app",
           "parse_inputs", "softmax"]

REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
NPY_TYPES = ("application/x-npy", "application/octet-stream")
_LOGGER = logging.getLogger("assay.serve")


# ------------------------------------------------------------------------------------------- the log's interface
@runtime_checkable
class PredictionSink(Protocol):
    """Where prediction rows go (the prediction log, :mod:`assay.serve.log`): ``submit(rows)`` returns None
    (queued) or an awaitable (strict durability: done once committed); ``close()`` flushes everything.
    Optional counters ``queued``, ``dropped``, ``committed`` are exported in ``/metrics``."""

    def submit(self, rows: list[dict[str, Any]]) -> Awaitable[Any] | None: ...

    def close(self) -> None: ...


class NullSink:
    """A sink that keeps nothing (serving without a prediction log)."""

    queued = 0
    dropped = 0
    committed = 0

    def submit(self, rows: list[dict[str, Any]]) -> None:
        return None

    def close(self) -> None:
        return None


# ------------------------------------------------------------------------------------------- models and slots
@dataclass(frozen=True)
class LoadedModel:
    """One loaded, warmed model and what names it: ``version`` (``NAME@3`` for a registry version, else
    ``FILE@sha256[:12]``), its evidence summary (section -> verdict) when known."""

    version: str
    model: Model
    evidence: dict[str, Any] | None = None
    #: median seconds of a one-row forward pass, measured by :func:`warm` (None: not measured)
    row_seconds: float | None = None
    #: the evaluation bundle of this very model (its monitoring reference), when known
    evidence_dir: str | None = None

    @property
    def classes(self) -> list[str]:
        return list(self.model.info.class_names)


class ModelSlot:
    """The model a role (primary, canary, shadow) answers with. ``current`` is replaced by one assignment
    (atomic under the GIL and on the event loop), so readers never see a half-swapped model and take no lock."""

    def __init__(self, loaded: LoadedModel | None = None) -> None:
        self.current: LoadedModel | None = loaded
        self.swaps = 0

    def swap(self, loaded: LoadedModel) -> LoadedModel | None:
        old, self.current = self.current, loaded
        if old is not None:
            self.swaps += 1
        return old


def _evidence_summary(folder: Path) -> dict[str, Any] | None:
    from assay.evidence.bundle import read_evidence

    try:
        ev = read_evidence(folder)
    except (UserError, OSError):
        return None
    return {"verdict": ev.verdict, "sections": {name: sec.verdict for name, sec in ev.sections.items()},
            "model_sha256": ev.model.sha256}


def warm(model: Model, timed: int = 5) -> float | None:
    """One forward pass on zeros of the model's input shape (free dimensions: 1), so the first request does not
    pay for lazy initialisation; then ``timed`` more, whose median time (seconds) is returned: the server runs a
    model that fast on the event loop rather than in a worker thread (see ``inline_below_ms``)."""
    shape = [1 if d is None else int(d) for d in model.info.input_shape]
    if not shape:
        return None
    shape[0] = 1
    x = np.zeros(shape, dtype=np.dtype(model.info.input_dtype))
    model.forward(x)
    times = []
    for _ in range(timed):
        start = time.perf_counter()
        model.forward(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) if times else None


class ModelSource:
    """Where a role's model comes from: a model file / factory (loaded once), an in-memory :class:`Model`, or
    ``NAME@ALIAS`` / ``NAME@VERSION`` in a registry (followed by the poller when it is an alias)."""

    def __init__(self, source: str | Model, *, registry: str | None = None, artifacts: str | None = None,
                 weights: str | None = None) -> None:
        self.source = source
        self.registry_url = registry
        self.artifacts = artifacts
        self.weights = weights
        self._registry: Any = None
        self._preloaded: LoadedModel | None = None
        self.is_registry = isinstance(source, str) and "@" in source and not Path(source).exists()

    def _open(self) -> Any:
        if self._registry is None:
            from assay.registry import open_registry

            self._registry = open_registry(self.registry_url, artifacts=self.artifacts)
        return self._registry

    def current_version(self) -> str:
        """The version this source names now (a registry lookup for ``NAME@ALIAS``)."""
        if not self.is_registry:
            return "static"
        return str(self._open().resolve(str(self.source)).ref)

    def preload(self) -> LoadedModel:
        """Load now (a bad model fails here, e.g. before a server starts); the app's first load takes this one."""
        self._preloaded = self.load()
        return self._preloaded

    def load(self) -> LoadedModel:
        """Load and warm the model this source names now."""
        if self._preloaded is not None:
            loaded, self._preloaded = self._preloaded, None
            return loaded
        if isinstance(self.source, Model):
            model = self.source
            return LoadedModel(f"{Path(model.info.path).name}@{model.info.sha256[:12]}", model,
                               row_seconds=warm(model))
        from assay.models import load_model

        if self.is_registry:
            reg = self._open()
            mv = reg.resolve(str(self.source))
            path = reg.model_path(mv)
            spec = mv.model_spec
            outputs: Literal["logits", "probabilities"] = (
                "probabilities" if spec.get("outputs") == "probabilities" else "logits")
            if spec.get("weights") is not None:  # a factory spec: "path" is its import path, the file its weights
                model = load_model(str(spec["path"]), weights=path, outputs=outputs,
                                   class_names=spec.get("class_names"), num_classes=spec.get("num_classes"))
            else:
                model = load_model(path, outputs=outputs, class_names=spec.get("class_names"))
            folder = reg.evidence_dir(mv)
            return LoadedModel(mv.ref, model, _evidence_summary(folder), row_seconds=warm(model),
                               evidence_dir=str(folder))
        model = load_model(str(self.source), weights=self.weights)
        return LoadedModel(f"{Path(model.info.path).name}@{model.info.sha256[:12]}", model, row_seconds=warm(model))

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()
            self._registry = None


# ------------------------------------------------------------------------------------------- input validation
class BadRequestError(Exception):
    """A request Assay refuses: HTTP ``status`` with what / where / fix (the JSON error body)."""

    def __init__(self, status: int, what: str, where: str, fix: str) -> None:
        super().__init__(what)
        self.status, self.what, self.where, self.fix = status, what, where, fix

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.what, "where": self.where, "fix": self.fix}, status_code=self.status)


def parse_inputs(body: bytes, content_type: str, info: Any, max_rows: int) -> np.ndarray:
    """The request's input batch as the model's dtype, checked against its per-row shape, finite, with 1 to
    ``max_rows`` rows; a single row without the batch dimension is accepted. Raises :class:`BadRequestError`."""
    row_shape = list(info.input_shape[1:])
    dims = ["any" if d is None else str(d) for d in row_shape]
    expected = "(N, " + ", ".join(dims) + ")"
    row_text = "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
    if content_type.split(";")[0].strip().lower() in NPY_TYPES:
        try:
            array = np.load(io.BytesIO(body), allow_pickle=False)
        except Exception as exc:  # any malformed .npy: refused, never a 500
            raise BadRequestError(400, f"the body is not a readable .npy array ({type(exc).__name__})", "body",
                                  "send np.save(buffer, array) bytes with Content-Type: application/x-npy") from None
        if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiub":
            raise BadRequestError(422, f"the array's dtype {getattr(array, 'dtype', '?')} is not numeric", "body",
                                  f"send a {info.input_dtype} array")
    else:
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            raise BadRequestError(400, "the body is not valid JSON", "body",
                                  'send {"inputs": [[...], ...]} with Content-Type: application/json') from None
        if not isinstance(payload, dict) or "inputs" not in payload:
            raise BadRequestError(422, 'the JSON body has no "inputs" field', "body",
                                  'send {"inputs": [[...], ...]}: one list of numbers per row')
        try:
            array = np.asarray(payload["inputs"])  # no dtype: strings stay strings (not parsed as numbers)
        except (ValueError, TypeError, OverflowError, RecursionError):
            array = np.asarray(None, dtype=object)
        if array.dtype.kind not in "fiu":
            raise BadRequestError(422, f"inputs are not a rectangular array of numbers {expected}", "inputs",
                                  "send nested lists of numbers (not strings or booleans), every row the same shape")
        array = array.astype(np.float64)
    if array.ndim == len(row_shape):
        array = array[None, ...]
    if array.ndim != len(row_shape) + 1 or any(d is not None and d != a for d, a in zip(row_shape, array.shape[1:],
                                                                                     strict=True)):
        raise BadRequestError(422, f"inputs have shape {tuple(array.shape)}, the model takes {expected}", "inputs",
                              f"send rows of shape {row_text}")
    if array.shape[0] == 0:
        raise BadRequestError(422, "inputs have no rows", "inputs", "send at least one row")
    if array.shape[0] > max_rows:
        raise BadRequestError(413, f"{array.shape[0]} rows in one request, the limit is {max_rows}", "inputs",
                              f"split the batch into requests of at most {max_rows} rows")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.argwhere(~np.isfinite(array))[0][0])
        raise BadRequestError(422, "inputs contain NaN or infinity", f"inputs[{bad}]", "send finite numbers only")
    dtype = np.dtype(info.input_dtype)
    if dtype.kind in "iu":
        if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
            raise BadRequestError(422, f"the model takes {dtype} inputs, got fractional numbers", "inputs",
                                  "send whole numbers")
        limits = np.iinfo(dtype)
        if array.size and (array.min() < limits.min or array.max() > limits.max):
            raise BadRequestError(422, f"inputs outside the range of {dtype}", "inputs",
                                  f"send numbers in [{limits.min}, {limits.max}]")
    elif dtype.kind == "f":
        with np.errstate(over="ignore"):
            cast = array.astype(dtype)
        if not np.isfinite(cast).all():
            raise BadRequestError(422, f"inputs overflow {dtype}", "inputs",
                                  f"send numbers within the range of {dtype}")
        return cast
    return array.astype(dtype)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------------------------------- metrics
class _SinkCollector(Collector):
    """The prediction log's queue depth, drops and commits, read from the sink when scraped."""

    def __init__(self, state: ServeState) -> None:
        self.state = state

    def collect(self) -> Iterable[Any]:
        sink = self.state.sink
        yield GaugeMetricFamily("assay_log_queue_depth", "Prediction log rows waiting to be committed.",
                                value=float(getattr(sink, "queued", 0) or 0))
        yield CounterMetricFamily("assay_log_dropped", "Prediction log rows shed because the queue was full.",
                                  value=float(getattr(sink, "dropped", 0) or 0))
        yield CounterMetricFamily("assay_log_committed", "Prediction log rows committed to the store.",
                                  value=float(getattr(sink, "committed", 0) or 0))
        yield CounterMetricFamily("assay_log_failed", "Prediction log rows whose commit failed after retries.",
                                  value=float(getattr(sink, "failed", 0) or 0))
        yield CounterMetricFamily("assay_log_pruned", "Prediction log rows (predictions and labels) removed by the "
                                  "retention rules.", value=float(getattr(sink, "pruned_rows", 0) or 0))
        yield CounterMetricFamily("assay_log_pruned_segments", "Parquet segments of the prediction log removed by the "
                                  "retention rules (0 for SQL stores).",
                                  value=float(getattr(sink, "pruned_segments", 0) or 0))


class Metrics:
    """The app's Prometheus metrics, in their own CollectorRegistry (several apps in one process stay apart)."""

    def __init__(self, state: ServeState) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("assay_requests", "HTTP requests.", ["endpoint"], registry=r)
        self.errors = Counter("assay_errors", "HTTP error responses.", ["endpoint", "status"], registry=r)
        self.latency = Histogram("assay_request_latency_seconds", "Request latency.", ["endpoint"], registry=r,
                                 buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.model_latency = Histogram("assay_model_latency_seconds", "Model call latency.", ["role"], registry=r,
                                       buckets=(.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25,
                                                .5, 1, 2.5))
        self.predictions = Counter("assay_predictions", "Predicted rows by class.", ["role", "class_name"],
                                   registry=r)
        self.confidence = Histogram("assay_confidence", "Top-1 probability of each predicted row.", ["role"],
                                    registry=r, buckets=(.1, .2, .3, .4, .5, .6, .7, .8, .9, .95, .99, 1.0))
        self.model_info = Gauge("assay_model_info", "The model version answering (1) per role.",
                                ["role", "version", "sha256"], registry=r)
        self.swaps = Counter("assay_model_swaps", "Hot swaps of a role's model.", ["role"], registry=r)
        self.rollout_actions = Counter("assay_rollout_actions", "Rollout decisions the monitor acted on.",
                                       ["action"], registry=r)
        self.monitor_errors = Counter("assay_monitor_errors", "Monitor steps that failed (the server kept serving).",
                                      registry=r)
        self.reload_failures = Counter("assay_model_reload_failures",
                                       "Loads of a new model version that failed (the previous model kept serving).",
                                       ["trigger"], registry=r)
        r.register(_SinkCollector(state))

    def set_model(self, role: str, old: LoadedModel | None, new: LoadedModel) -> None:
        if old is not None:
            with contextlib.suppress(KeyError):
                self.model_info.remove(role, old.version, old.model.info.sha256)
            self.swaps.labels(role).inc()
        self.model_info.labels(role, new.version, new.model.info.sha256).set(1)


KNOWN = frozenset({"/v1/predict", "/v1/feedback", "/healthz", "/readyz", "/metrics", "/v1/model", "/admin/reload",
                   "/dashboard", "/v1/monitor"})


class MetricsMiddleware:
    """Counts requests, error statuses and latency (until the last body byte is handed to the server) per endpoint.

    A plain ASGI middleware rather than Starlette's ``BaseHTTPMiddleware`` (``@app.middleware("http")``), which
    runs the endpoint in a separate task and streams the response through a memory channel: bench_serve.py
    measured that at ~0.3-0.5 ms per request on a small model. Paths outside ``known`` are counted as ``other``
    (a scanner cannot blow up the label set)."""

    def __init__(self, app: Any, metrics: Metrics, known: frozenset[str]) -> None:
        self.app, self.metrics = app, metrics
        self.children = {path: (metrics.requests.labels(path), metrics.latency.labels(path))
                         for path in (*known, "other")}
        self.known = known

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in self.known else "other"
        start = time.perf_counter()
        status = 500
        done = False

        async def send_and_time(message: Any) -> None:
            nonlocal status, done
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False) and not done:
                done = True
                requests, latency = self.children[endpoint]
                requests.inc()
                latency.observe(time.perf_counter() - start)
                if status >= 400:
                    self.metrics.errors.labels(endpoint, str(status)).inc()

        try:
            await self.app(scope, receive, send_and_time)
        except Exception:
            if not done:
                self.metrics.errors.labels(endpoint, "500").inc()
            raise


# ------------------------------------------------------------------------------------------- dynamic batching
@dataclass
class _Pending:
    x: np.ndarray
    future: asyncio.Future[tuple[LoadedModel, np.ndarray, np.ndarray | None]]


class Batcher:
    """Groups concurrent requests into one model call: a batch takes every request already queued, then waits
    for more only while other predict requests are in flight (``in_flight()`` counts them), leaving when it holds
    ``max_batch`` rows or ``max_wait_ms`` after its first request; a lone request is never made to wait (bench_serve
    measured the window costing ~3 ms per request at concurrency 1). Each request gets its own rows of the logits
    and the version that answered the whole batch (and its rows of the features when ``want_features``)."""

    def __init__(self, slot: ModelSlot, max_batch: int, max_wait_ms: float, observe: Any,
                 in_flight: Any = None, want_features: bool = False) -> None:
        self.slot, self.max_batch, self.max_wait = slot, max_batch, max_wait_ms / 1000.0
        self.want_features = want_features
        self.observe = observe
        self.in_flight = in_flight if in_flight is not None else (lambda: 1 << 30)
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.calls = 0

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def predict(self, x: np.ndarray) -> tuple[LoadedModel, np.ndarray, np.ndarray | None]:
        future: asyncio.Future[tuple[LoadedModel, np.ndarray, np.ndarray | None]] = (
            asyncio.get_running_loop().create_future())
        await self.queue.put(_Pending(x, future))
        return await future

    async def _run(self) -> None:
        while True:
            first = await self.queue.get()
            batch, rows = [first], len(first.x)
            deadline = time.monotonic() + self.max_wait
            while rows < self.max_batch:
                if not self.queue.empty():
                    item = self.queue.get_nowait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0 or self.in_flight() <= len(batch):  # nobody else is coming: do not wait
                        break
                    try:
                        item = await asyncio.wait_for(self.queue.get(), left)
                    except TimeoutError:
                        break
                batch.append(item)
                rows += len(item.x)
            loaded = self.slot.current
            assert loaded is not None
            try:
                start = time.perf_counter()
                logits, features = await run_in_threadpool(
                    functools.partial(loaded.model.forward, check_outputs=False),
                    np.concatenate([p.x for p in batch]), self.want_features)
                self.observe(time.perf_counter() - start)
                self.calls += 1
            except Exception as exc:  # the model failed: every waiting request gets the error
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            offset = 0
            for p in batch:
                if not p.future.done():
                    mine = slice(offset, offset + len(p.x))
                    p.future.set_result((loaded, logits[mine], None if features is None else features[mine]))
                offset += len(p.x)


# ------------------------------------------------------------------------------------------- app state
@dataclass
class Role:
    """One role's source and slot (primary, canary or shadow)."""

    name: str
    source: ModelSource
    slot: ModelSlot = field(default_factory=ModelSlot)


@dataclass
class ServeState:
    roles: dict[str, Role]
    sink: Any
    top_k: int
    max_body_bytes: int
    max_batch_rows: int
    canary_fraction: float
    admin_token: str | None
    log_inputs: bool
    log_features: bool
    poll_seconds: float | None
    ready: bool = False
    load_error: str | None = None
    reload_error: str | None = None  # the last failed reload (None once one succeeds); shown by /readyz
    batcher: Batcher | None = None
    reload_lock: asyncio.Lock | None = None
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    predicting: int = 0
    shadow_enabled: bool = True  # turned off when the monitor stops a worse shadow challenger


def canary_share(key: str) -> float:
    """A key's position in [0, 1): the first 8 bytes of its sha256 over 2**64 (sticky: the same key, the same
    position, in every process)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2.0**64


def _registry_alias(source: Any) -> tuple[str, str] | None:
    """(name, alias) when ``source`` (a ModelSource or what create_app was given) names ``NAME@ALIAS`` in a
    registry (not a pinned ``NAME@3``)."""
    text = source.source if isinstance(source, ModelSource) else source
    if not isinstance(text, str) or "@" not in text or Path(text).exists():
        return None
    name, _, alias = text.partition("@")
    return None if alias.isdigit() else (name, alias)


def _as_source(value: Any, registry: str | None, artifacts: str | None) -> ModelSource:
    return value if isinstance(value, ModelSource) else ModelSource(value, registry=registry, artifacts=artifacts)


def _prediction_rows(loaded: LoadedModel, logits: np.ndarray, probs: np.ndarray, x: np.ndarray, request_id: str,
                     role: str, log_inputs: bool, features: np.ndarray | None = None) -> list[dict[str, Any]]:
    now = time.time()
    rows = []
    for i in range(len(logits)):
        top = int(np.argmax(probs[i]))
        row: dict[str, Any] = {
            "request_id": request_id, "row": i, "time": now, "role": role, "model_version": loaded.version,
            "model_sha256": loaded.model.info.sha256,
            "input_sha256": hashlib.sha256(np.ascontiguousarray(x[i]).tobytes()).hexdigest(),
            "logits": logits[i].astype(np.float32), "top1": top, "confidence": float(probs[i, top])}
        if log_inputs:
            row["inputs"] = np.ascontiguousarray(x[i])
        if features is not None:
            row["features"] = features[i].astype(np.float32)
        rows.append(row)
    return rows


def create_app(model_source: str | Model | ModelSource, *, reference: str | None = None,
               shadow: str | ModelSource | None = None, canary: str | ModelSource | None = None,
               canary_fraction: float = 0.0, admin_token: str | None = None, max_body_bytes: int = 16 * 2**20,
               max_batch_rows: int = 1024, top_k: int = 5, sink: PredictionSink | None = None,
               cors_origins: Sequence[str] | None = None, registry: str | None = None,
               artifacts: str | None = None, poll_seconds: float | None = None, max_batch: int | None = None,
               max_wait_ms: float = 2.0, log_inputs: bool = False,
               log_features: bool = False, inline_below_ms: float = 0.5,
               monitor: Any = None) -> FastAPI:
    """The FastAPI app serving ``model_source`` (a model file, a factory, a :class:`Model`, or ``NAME@ALIAS``
    in the registry at ``registry``). See the module docstring for what each option does; the model is loaded
    (and warmed) in the background at startup, ``/readyz`` says when it is ready.

    ``inline_below_ms``: a request whose rows the model answers faster than this (the one-row time measured at
    warm-up, times the rows) runs on the event loop instead of a worker thread: the hop to the thread pool and
    back costs ~0.5-1 ms on a busy 2-core machine (bench_serve.py, profiled), far more than a small model's
    forward pass; slower calls go to the pool so they never stall other requests. 0 sends every call to the pool."""
    inline_below_s = max(0.0, float(inline_below_ms)) / 1000.0
    live = None
    if monitor is not None and monitor is not False:
        from assay.serve.monitoring import LiveMonitor, LiveMonitorSettings

        live = LiveMonitor(LiveMonitorSettings.coerce(monitor))
        if (live.settings.auto_rollback or live.settings.auto_promote) and not _registry_alias(model_source):
            raise OptionError("automatic rollback or promotion needs the model served from a registry alias",
                              where="auto_rollback" if live.settings.auto_rollback else "auto_promote",
                              fix="serve NAME@ALIAS (e.g. clf@production) with --registry")
    if not 0.0 <= canary_fraction <= 1.0:
        raise OptionError(f"canary fraction {canary_fraction} is not in [0, 1]", where="canary_fraction",
                        fix="give a fraction such as 0.1")
    if canary_fraction > 0 and canary is None:
        raise OptionError("a canary fraction was given without a canary model", where="canary_fraction",
                        fix="name the challenger with --canary NAME@ALIAS")
    if max_batch is not None and max_batch < 1:
        raise OptionError(f"max batch {max_batch} must be at least 1", where="max_batch", fix="give 8, 32, ...")
    roles = {"primary": Role("primary", _as_source(model_source, registry, artifacts))}
    if shadow is not None:
        roles["shadow"] = Role("shadow", _as_source(shadow, registry, artifacts))
    if canary is not None:
        roles["canary"] = Role("canary", _as_source(canary, registry, artifacts))
    state = ServeState(roles=roles, sink=sink if sink is not None else NullSink(), top_k=top_k,
                       max_body_bytes=max_body_bytes, max_batch_rows=max_batch_rows,
                       canary_fraction=canary_fraction, admin_token=admin_token or None, log_inputs=log_inputs,
                       log_features=log_features,
                       poll_seconds=poll_seconds)
    metrics = Metrics(state)

    async def refresh(force: bool = False) -> dict[str, Any]:
        """Load (and warm) every role whose source names a new version, then swap it in; one at a time."""
        assert state.reload_lock is not None
        changed: dict[str, Any] = {}
        async with state.reload_lock:
            for role in roles.values():
                current = role.slot.current
                if current is not None and not force:
                    if not role.source.is_registry:
                        continue
                    named = await run_in_threadpool(role.source.current_version)
                    if named == current.version:
                        continue
                loaded = await run_in_threadpool(role.source.load)
                if loaded.evidence is None and reference is not None:
                    summary = await run_in_threadpool(_evidence_summary, Path(reference))
                    if summary is not None and summary["model_sha256"] == loaded.model.info.sha256:
                        # the bundle is of this very model
                        loaded = dataclasses.replace(loaded, evidence=summary, evidence_dir=str(reference))
                if current is not None and loaded.version == current.version and not force:
                    continue
                old = role.slot.swap(loaded)
                metrics.set_model(role.name, old, loaded)
                changed[role.name] = {"from": None if old is None else old.version, "to": loaded.version}
            if live is not None and roles["primary"].slot.current is not None:
                mode = "shadow" if "shadow" in roles else "canary" if "canary" in roles else "none"
                challenger = roles[mode].slot.current if mode != "none" else None
                live.attach(roles["primary"].slot.current, challenger, mode)
        return changed

    # ------------------------------------------------------------------ the monitor's decisions (issue 15)
    def registry_target() -> tuple[Any, str, str] | None:
        """(registry, model name, alias) of the primary when it is served from a registry alias."""
        source = roles["primary"].source
        target = _registry_alias(source)
        return None if target is None else (source._open(), *target)

    async def record(action: str, reason: str, detail: dict[str, Any]) -> str | None:
        """The decision in the registry's audit log, with the monitor report (snapshot) stored beside it."""
        assert live is not None
        target = registry_target()
        if target is None:
            return None
        from assay.serve.monitoring import store_report

        reg, name, _ = target
        snapshot = live.snapshot()

        def write() -> str:
            sha = store_report(reg, snapshot)
            reg.record_rollout(name, action=action, reason=reason, challenger=live.challenger, report_sha256=sha,
                               detail=detail, actor="assay serve (monitor)")
            return sha

        try:
            return await run_in_threadpool(write)
        except Exception as exc:  # the decision stands; say that it could not be recorded
            live.event("error", f"could not record {action} in the registry: {exc}")
            return None

    async def stop_challenger(decision: dict[str, Any]) -> None:
        assert live is not None and live.tracker is not None
        state.canary_fraction = 0.0
        state.shadow_enabled = False
        action = "shadow_stop" if live.mode == "shadow" else "canary_stop"
        sha = await record(action, decision["reason"], {k: decision.get(k) for k in ("estimated", "realized",
                                                                                   "negative_flips", "alpha")})
        live.tracker.stopped = {"time": time.time(), "action": action, "reason": decision["reason"],
                                "report_sha256": sha}
        metrics.rollout_actions.labels(action).inc()
        live.event(action, f"{live.challenger} stopped: {decision['reason']}"
                   + (f" (monitor report {sha[:12]})" if sha else ""))
        _LOGGER.warning("assay serve: %s stopped: %s", live.challenger, decision["reason"])

    async def promote_challenger(decision: dict[str, Any]) -> None:
        assert live is not None and live.tracker is not None
        target = registry_target()
        challenger = live.challenger
        if target is None or challenger is None or "@" not in challenger:
            return
        reg, name, alias = target
        cname, _, number = challenger.partition("@")
        if cname != name or not number.isdigit():
            live.event("error", f"cannot promote {challenger}: it is not a version of {name}")
            live.tracker.stopped = {"time": time.time(), "action": "none", "reason": "not promotable"}
            return
        from assay.registry.promotion import promote

        reason = f"monitor: {decision['reason']}"
        result = await run_in_threadpool(lambda: promote(reg, name, int(number), alias, reason=reason,
                                                         actor="assay serve (monitor)"))
        if not result.promoted:
            live.tracker.stopped = {"time": time.time(), "action": "promotion_refused", "reason": str(result.refused)}
            live.event("promotion_refused", f"{challenger} is non-inferior live, but the gate refused it: "
                       f"{result.refused}")
            return
        sha = await record("auto_promote", decision["reason"], {"estimated": decision.get("estimated"),
                                                                "realized": decision.get("realized")})
        state.canary_fraction = 0.0
        state.shadow_enabled = False
        live.tracker.stopped = {"time": time.time(), "action": "auto_promote", "reason": decision["reason"],
                                "report_sha256": sha}
        metrics.rollout_actions.labels("auto_promote").inc()
        live.event("auto_promote", f"{challenger} promoted to {name}@{alias}: {decision['reason']}")
        await refresh()

    async def roll_back(breach: dict[str, Any]) -> None:
        assert live is not None
        target = registry_target()
        if target is None:
            return
        reg, name, alias = target
        from assay.registry.promotion import rollback

        version = live.version
        reason = (f"monitor: {breach['kind']} accuracy {breach['value']:.3f} (CI up to {breach['ci'][1]:.3f}) below "
                  f"the floor {breach['floor']:g} with confidence, after {breach['n']} rows of epoch {breach['epoch']}")
        try:
            move = await run_in_threadpool(lambda: rollback(reg, name, alias, reason=reason,
                                                            actor="assay serve (monitor)"))
        except UserError as exc:  # nothing to roll back to: say so once and keep serving
            live.event("rollback_refused", f"{version}: {exc}")
            live.rollback_blocked = True
            return
        sha = await record("auto_rollback", reason, {"breach": breach, "from": version, "to": move.to_version})
        metrics.rollout_actions.labels("auto_rollback").inc()
        live.event("auto_rollback", f"{version} rolled back to {name}@{move.to_version}: {reason}"
                   + (f" (monitor report {sha[:12]})" if sha else ""))
        _LOGGER.warning("assay serve: %s rolled back: %s", version, reason)
        await refresh()

    async def watch() -> None:
        """Step the monitor every interval and act on what it decides."""
        assert live is not None
        s = live.settings
        history_at = 0.0
        while True:
            await asyncio.sleep(s.interval_s)
            if not state.ready:
                continue
            try:
                await run_in_threadpool(live.step)
                tracker = live.tracker
                if tracker is not None and tracker.stopped is None and live.mode != "none":
                    decision = tracker.challenger_decision()
                    if decision["decision"] == "worse" and s.auto_stop:
                        await stop_challenger(decision)
                    elif decision["decision"] == "non_inferior" and s.auto_promote:
                        await promote_challenger(decision)
                breach = None if tracker is None else tracker.floor_breach()
                if breach is not None and s.auto_rollback and not live.rollback_blocked:
                    await roll_back(breach)
                if time.monotonic() - history_at > 30 or live.alias_history == []:
                    history_at = time.monotonic()
                    target = registry_target()
                    if target is not None:
                        reg, name, _ = target
                        moves = await run_in_threadpool(reg.history, name)
                        live.alias_history = [{"time": m.created_at, "alias": m.alias, "version": str(m.to_version),
                                               "action": m.action, "actor": m.actor} for m in moves]
            except Exception as exc:  # the monitor never takes the server down: count it and go on
                metrics.monitor_errors.inc()
                live.event("error", f"monitor step failed: {type(exc).__name__}: {exc}")
                _LOGGER.error("assay serve: monitor step failed: %s", exc)

    async def initial_load() -> None:
        try:
            await refresh()
        except Exception as exc:  # reported by /readyz; the server stays up to say why
            state.load_error = str(exc)
            return
        state.ready = True

    async def poll() -> None:
        assert state.poll_seconds is not None
        while True:
            await asyncio.sleep(state.poll_seconds)
            if not state.ready:
                continue
            try:
                await refresh()
            except Exception as exc:  # a registry briefly unreachable or a bad version: keep serving, retry later
                metrics.reload_failures.labels("poll").inc()
                state.reload_error = f"{type(exc).__name__}: {exc}"
                _LOGGER.warning("assay serve: reloading from the registry failed (the previous model keeps "
                                "serving): %s", state.reload_error)
            else:
                state.reload_error = None

    def spawn(coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        state.background.add(task)
        task.add_done_callback(state.background.discard)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.reload_lock = asyncio.Lock()
        if max_batch is not None:
            state.batcher = Batcher(roles["primary"].slot, max_batch, max_wait_ms,
                                    metrics.model_latency.labels("primary").observe, lambda: state.predicting,
                                    want_features=log_features)
            state.batcher.start()
        spawn(initial_load())
        if poll_seconds:
            spawn(poll())
        if live is not None:
            spawn(watch())
        try:
            yield
        finally:
            if state.batcher is not None:
                await state.batcher.stop()
            for task in list(state.background):
                task.cancel()
            await asyncio.gather(*state.background, return_exceptions=True)
            await run_in_threadpool(state.sink.close)
            for role in roles.values():
                role.source.close()

    app = FastAPI(title="assay serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.assay = state
    app.state.metrics = metrics
    app.state.reference = reference
    app.state.refresh = refresh
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "X-Request-ID", "X-Assay-Key"])

    app.add_middleware(MetricsMiddleware, metrics=metrics, known=KNOWN)

    async def read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise BadRequestError(400, "Content-Length is not a number", "Content-Length", "send a valid header")
            if int(length) > state.max_body_bytes:
                raise BadRequestError(413, f"the body is {int(length)} bytes, the limit is {state.max_body_bytes}",
                                      "body", "send fewer rows per request")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > state.max_body_bytes:
                raise BadRequestError(413, f"the body is over the limit of {state.max_body_bytes} bytes", "body",
                                      "send fewer rows per request")
            chunks.append(chunk)
        return b"".join(chunks)

    def request_id(request: Request) -> str:
        given = request.headers.get("x-request-id")
        return given if given is not None and REQUEST_ID.match(given) else str(uuid.uuid4())

    async def run_model(role: str, loaded: LoadedModel, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        start = time.perf_counter()
        if loaded.row_seconds is not None and loaded.row_seconds * len(x) < inline_below_s:
            logits, features = loaded.model.forward(x, state.log_features, check_outputs=False)  # no thread hop
        else:
            logits, features = await run_in_threadpool(
                functools.partial(loaded.model.forward, check_outputs=False), x, state.log_features)
        metrics.model_latency.labels(role).observe(time.perf_counter() - start)
        return logits, features

    async def submit(rows: list[dict[str, Any]]) -> None:
        """Hand rows to the sink; a blocking sink (on_full="block") waits in a worker thread, a strict one is
        awaited until committed."""
        if getattr(state.sink, "on_full", None) == "block":
            waited = await run_in_threadpool(state.sink.submit, rows)
        else:
            waited = state.sink.submit(rows)
        if waited is not None:
            await waited

    async def score_shadow(x: np.ndarray, rid: str) -> None:
        loaded = roles["shadow"].slot.current
        if loaded is None:
            return
        with contextlib.suppress(Exception):  # the challenger never hurts the response path
            logits, features = await run_model("shadow", loaded, x)
            probs = softmax(logits)
            count_rows("shadow", loaded, probs)
            rows = _prediction_rows(loaded, logits, probs, x, rid, "shadow", state.log_inputs, features)
            if live is not None:
                live.observe(rows)
            await submit(rows)

    children: dict[tuple[str, str], Any] = {}  # prometheus children by (role, class name): labels() is not free

    def count_rows(role: str, loaded: LoadedModel, probs: np.ndarray) -> None:
        top = probs.argmax(axis=1)
        names = loaded.model.info.class_names
        confidence = children.get((role, ""))
        if confidence is None:
            confidence = children[(role, "")] = metrics.confidence.labels(role)
        for cls, p in zip(top.tolist(), probs[np.arange(len(top)), top].tolist(), strict=True):
            name = names[cls] if cls < len(names) else str(cls)
            counter = children.get((role, name))
            if counter is None:
                counter = children[(role, name)] = metrics.predictions.labels(role, name)
            counter.inc()
            confidence.observe(p)

    @app.post("/v1/predict")
    async def predict(request: Request) -> Response:
        state.predicting += 1
        try:
            return await predict_one(request)
        finally:
            state.predicting -= 1

    async def predict_one(request: Request) -> Response:
        rid = request_id(request)
        primary = roles["primary"].slot.current
        if not state.ready or primary is None:
            return BadRequestError(503, "the model is not loaded yet", "server", "wait until GET /readyz answers 200"
                                   ).response()
        try:
            body = await read_body(request)
            x = parse_inputs(body, request.headers.get("content-type", "application/json"), primary.model.info,
                             state.max_batch_rows)
        except BadRequestError as exc:
            return exc.response()
        role, loaded = "primary", primary
        canary_slot = roles["canary"].slot.current if "canary" in roles else None
        if canary_slot is not None and state.canary_fraction > 0:
            key = request.headers.get("x-assay-key") or rid
            if canary_share(key) < state.canary_fraction:
                role, loaded = "canary", canary_slot
                try:
                    x = parse_inputs(body, request.headers.get("content-type", "application/json"),
                                     loaded.model.info, state.max_batch_rows)
                except BadRequestError as exc:
                    return exc.response()
        features = None
        try:
            if role == "primary" and state.batcher is not None:
                loaded, logits, features = await state.batcher.predict(x)
            else:
                logits, features = await run_model(role, loaded, x)
        except Exception as exc:  # the model itself failed on valid input: a JSON 500 naming it, no traceback
            _LOGGER.error("assay serve: %s failed on request %s: %s", loaded.version, rid, exc)
            return BadRequestError(500, f"the model {loaded.version} failed on this input: {type(exc).__name__}",
                                   "model", "report it with the request id; the input passed validation"
                                   ).response()
        probs = softmax(logits)
        count_rows(role, loaded, probs)
        names = loaded.classes
        k = max(1, min(state.top_k, probs.shape[1]))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        predictions = [{
            "class_index": int(order[i, 0]), "class_name": names[int(order[i, 0])],
            "confidence": float(probs[i, order[i, 0]]),
            "top_k": [{"class_index": int(c), "class_name": names[int(c)], "probability": float(probs[i, c])}
                      for c in order[i]]} for i in range(len(probs))]
        rows = _prediction_rows(loaded, logits, probs, x, rid, role, state.log_inputs, features)
        try:
            await submit(rows)
        except Exception as exc:  # strict durability: the row could not be committed (log full or failing)
            return BadRequestError(503, f"the prediction could not be logged: {exc}", "prediction log",
                                   "retry later; the log is full or its store is failing").response()
        if live is not None:
            live.observe(rows)
        background = None
        if "shadow" in roles and state.shadow_enabled:
            background = BackgroundTask(score_shadow, x, rid)
        return JSONResponse({"request_id": rid, "model_version": loaded.version, "role": role,
                             "predictions": predictions}, headers={"X-Request-ID": rid}, background=background)

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> Response:
        try:
            body = await read_body(request)
            try:
                payload = json.loads(body)
            except (ValueError, RecursionError):
                raise BadRequestError(400, "the body is not valid JSON", "body",
                                      'send {"request_id": "...", "label": 3}') from None
            if not isinstance(payload, dict):
                raise BadRequestError(422, "the body is not a JSON object", "body",
                                      'send {"request_id": "...", "label": 3}')
            rid, label = payload.get("request_id"), payload.get("label")
            if not isinstance(rid, str) or not REQUEST_ID.match(rid):
                raise BadRequestError(422, "request_id is missing or not a request id", "request_id",
                                      "send the request_id a /v1/predict answer gave")
            loaded = roles["primary"].slot.current
            names = loaded.classes if loaded is not None else []
            if isinstance(label, str) and label in names:
                label = names.index(label)
            if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < max(len(names), 1):
                raise BadRequestError(422, f"label {label!r} is not a class index or name of the model", "label",
                                      f"send an index in [0, {len(names) - 1}] or one of the class names")
        except BadRequestError as exc:
            return exc.response()
        row = {"kind": "feedback", "request_id": rid, "label": label, "time": time.time()}
        row_index = payload.get("row", 0)
        row["row"] = row_index = row_index if isinstance(row_index, int) and not isinstance(row_index, bool) else 0
        try:
            await submit([row])
            if live is not None:
                live.label(rid, row_index, label)
        except Exception as exc:
            return BadRequestError(503, f"the label could not be logged: {exc}", "prediction log",
                                   "retry later").response()
        return JSONResponse({"request_id": rid, "label": label, "accepted": True})

    @app.get("/healthz")
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        if state.ready:
            return JSONResponse({"status": "ready", "versions": {name: r.slot.current.version for name, r
                                                                 in roles.items() if r.slot.current is not None},
                                 "last_reload_error": state.reload_error})
        if state.load_error is not None:
            return BadRequestError(503, f"the model failed to load: {state.load_error}", "model",
                                   "check the model source and restart").response()
        return BadRequestError(503, "the model is loading", "model", "retry shortly").response()

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/monitor")
    async def monitor_endpoint() -> Response:
        if live is None:
            return BadRequestError(404, "the monitor is off", "server", "start the server with --monitor").response()
        return JSONResponse(await run_in_threadpool(live.snapshot), headers={"Cache-Control": "no-store"})

    @app.get("/dashboard")
    async def dashboard() -> Response:
        if live is None:
            return BadRequestError(404, "the monitor is off", "server", "start the server with --monitor").response()
        from assay.report.dashboard import render_dashboard

        page = await run_in_threadpool(lambda: render_dashboard(live.snapshot(), refresh_s=10))
        return HTMLResponse(page, headers={"Cache-Control": "no-store", "Content-Security-Policy":
                                           "default-src 'none'; style-src 'unsafe-inline'; img-src data:"})

    @app.get("/v1/model")
    async def model_endpoint() -> Response:
        described = {}
        for name, r in roles.items():
            loaded = r.slot.current
            if loaded is None:
                continue
            info = loaded.model.info
            described[name] = {"version": loaded.version, "sha256": info.sha256, "format": info.format,
                               "input_shape": info.input_shape, "input_dtype": info.input_dtype,
                               "classes": info.class_names, "evidence": loaded.evidence}
        if "primary" not in described:
            return BadRequestError(503, "the model is not loaded yet", "server", "wait until GET /readyz answers 200"
                                   ).response()
        return JSONResponse({**described["primary"], "roles": described, "reference": reference,
                             "canary_fraction": state.canary_fraction})

    @app.post("/admin/reload")
    async def admin_reload(request: Request) -> Response:
        if state.admin_token is None:
            return BadRequestError(404, "admin endpoints are off", "server",
                                   "start the server with --admin-token-file or ASSAY_ADMIN_TOKEN").response()
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode("utf-8"),
                                                                 state.admin_token.encode("utf-8")):
            return BadRequestError(403, "wrong or missing admin token", "Authorization",
                                   "send Authorization: Bearer TOKEN").response()
        try:
            changed = await refresh()
        except Exception as exc:  # the old model keeps serving
            metrics.reload_failures.labels("admin").inc()
            state.reload_error = f"{type(exc).__name__}: {exc}"
            return BadRequestError(409, f"the new model could not be loaded: {exc}", "model",
                                   "fix the registry version; the previous model is still serving").response()
        return JSONResponse({"changed": changed, "versions": {name: r.slot.current.version for name, r
                                                              in roles.items() if r.slot.current is not None}})

    return app
