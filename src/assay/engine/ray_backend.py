"""The Ray backend: the engine's units of work run on Ray actors, on this machine or a cluster.

The same contract as :class:`~assay.engine.backends.ProcessPoolBackend` (model spec, view spec, shard in;
:class:`~assay.engine.work.ShardResult` out, in shard order), on ``workers`` long-lived actors instead of
local processes. Each actor loads the model once from its spec (through the normal loader: the same safety
checks, sha256 verified) and keeps it; views are rebuilt from their specs with the driver's view-kind table,
so corruptions and attacks (the heavy part) run on the workers. The driver makes the shards, merges the
results and writes the cache, so a re-run after a crash resumes from the cache.

Why actors, not Ray Data's ``map_batches``: the driver already streams shards and needs their results in
order; a fixed pool of actors with at most two shards each in flight bounds the object store's load to
``2 * workers`` shards (Ray Data's own buffering has been seen to use 2-5x the data's memory, ray#65544).
A killed actor is restarted (``max_restarts``) and its shards resubmitted (``max_task_retries``); a unit is
pure, so a retry gives the identical result.

Data reaches the workers through the object store (each shard's rows are its arguments); the model is read
by every worker from its path, so on a cluster the model file must be at the same path on every node (a
shared file system). A worker that cannot read it raises the driver's :class:`~assay.errors.ModelError`,
naming the path and the node.

Ray is imported only when a RayBackend is made: ``pip install 'assay[ray]'``.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from assay import errors
from assay.engine.backends import Backend, portable_model_spec, portable_view_spec, start_worker
from assay.engine.views import VIEW_KINDS, View, ViewSpec
from assay.engine.work import Shard, ShardResult, run_shard
from assay.errors import OptionError, UserError

if TYPE_CHECKING:
    from assay.models.base import Model
    from assay.models.spec import ModelSpec

__all__ = ["CONNECT_TIMEOUT_S", "RayBackend"]

#: Seconds allowed to reach a cluster's address, and for the cluster to start the workers asked for.
CONNECT_TIMEOUT_S = 15.0
START_TIMEOUT_S = 120.0
#: Restarts of a dead actor, and retries of a shard whose actor died.
MAX_RESTARTS = 3
MAX_TASK_RETRIES = 3
#: Shards in flight per actor (one running, one queued: the actor never waits for the driver).
IN_FLIGHT_PER_WORKER = 2
INSTALL_FIX = "pip install 'assay[ray]' (or use --backend local or processes)"


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise OptionError("--backend ray needs Ray, which is not installed", where="backend",
                          fix=INSTALL_FIX) from None
    return ray


def _host_port(address: str) -> tuple[str, int]:
    """``ray://HOST:PORT`` (Ray Client, port 10001 by default) or ``HOST:PORT`` (the head's GCS, port 6379)."""
    client = address.startswith("ray://")
    rest = address[len("ray://"):] if client else address
    host, sep, port = rest.rpartition(":")
    if not sep:
        host, port = rest, "10001" if client else "6379"
    if not host or "/" in host or not port.isdigit():
        raise OptionError(f"the Ray address {address!r} is not auto, ray://HOST:PORT or HOST:PORT", where="ray_address",
                          fix="give auto (the cluster `ray start` started on this machine), ray://HOST:10001 "
                              "(Ray Client) or HOST:6379 (the head node's address)")
    return host.strip("[]"), int(port)


def _check_reachable(address: str, timeout: float) -> None:
    """An address nothing answers on fails here within ``timeout`` seconds, not in Ray's reconnect loop."""
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise OptionError(f"cannot reach the Ray cluster at {address} ({reason})", where="ray_address",
                          fix=f"start the cluster (`ray start --head` on its head node) and check that {host}:{port} "
                              "is reachable from here, or drop --ray-address to start a local Ray") from None


def _node() -> str:
    """Where this code runs: the Ray node id (short) and the host name."""
    node_id = ""
    try:
        import ray

        if ray.is_initialized():  # (get_runtime_context would start a Ray otherwise)
            node_id = ray.get_runtime_context().get_node_id()[:12]
    except Exception:  # no node id to be had: the host name still says where
        pass
    return f"Ray node {node_id or '?'} (host {socket.gethostname()})"


@dataclass(frozen=True)
class _WorkerError:
    """A :class:`~assay.errors.UserError` raised on a worker, as plain data (Ray would wrap the exception
    itself in a RayTaskError with the worker's traceback)."""

    kind: str
    what: str
    where: str | None
    fix: str | None
    node: str

    def raise_here(self) -> None:
        cls = getattr(errors, self.kind, None)
        if not (isinstance(cls, type) and issubclass(cls, UserError)):
            cls = UserError
        raise cls(f"{self.what.rstrip('.')} (on the worker at {self.node})", where=self.where,
                  fix=(self.fix.rstrip(".") + "; " if self.fix else "") + "on a cluster, every node needs the model "
                  "at the same path (a shared file system) and the same packages")


class _ShardWorker:
    """A Ray actor: keeps one model (loaded from its spec on first use) and the views rebuilt for it."""

    def __init__(self, view_kinds: dict[str, str], threads: int | None) -> None:
        start_worker(view_kinds, threads)
        self._model_key: str | None = None
        self._model: Model | None = None
        self._views: dict[str, View] = {}

    def pid(self) -> int:
        return os.getpid()

    def run(self, spec: ModelSpec, view_json: str, shard: Shard) -> ShardResult | _WorkerError:
        try:
            key = spec.model_dump_json()
            if key != self._model_key:  # a new model (compress's variants): the old one and its views go
                self._model, self._views, self._model_key = None, {}, None
                self._model, self._model_key = spec.load(), key
            assert self._model is not None
            view = self._views.get(view_json)
            if view is None:
                view = self._views[view_json] = View.from_spec(ViewSpec.from_json(view_json), self._model)
            return run_shard(self._model, view, shard)
        except UserError as exc:
            return _WorkerError(type(exc).__name__, exc.what, exc.where, exc.fix, _node())
        except ImportError as exc:  # a factory's or a registered view's module the worker's Python cannot import
            return _WorkerError("ModelError", f"cannot import {exc.name or exc}", spec.path,
                                "make the module importable on every node (install it, or set PYTHONPATH)", _node())
        except OSError as exc:  # a file the loader did not expect to fail on
            return _WorkerError("ModelError", f"cannot read {exc.filename or spec.path} ({exc.strerror or exc})",
                                str(exc.filename or spec.path), None, _node())


class RayBackend(Backend):
    """Shards run on ``workers`` Ray actors (default: the cluster's CPUs divided by ``threads``), each with
    ``threads`` torch threads and a model loaded once.

    ``address``: None starts a local Ray (or uses the one this process already started); ``"auto"`` joins
    the cluster ``ray start`` runs on this machine; ``"ray://HOST:PORT"`` connects through Ray Client;
    ``"HOST:PORT"`` joins the head node at that address. An address nothing answers on is an OptionError
    within :data:`CONNECT_TIMEOUT_S` seconds."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, threads: int | None = 1) -> None:
        if workers is not None and workers < 1:
            raise OptionError(f"num_workers must be at least 1, got {workers}", where="num_workers",
                              fix="use 1 or more, or leave it out (one worker per CPU of the cluster)")
        if threads is not None and threads < 1:
            raise OptionError(f"threads must be at least 1, got {threads}", where="threads", fix="use 1 or more")
        _import_ray()  # not installed: fails here, before any work
        self.address, self.threads, self.requested_workers = address, threads, workers
        self.workers: int | None = None  # known once connected: the cluster's CPUs / threads unless requested
        self._owns_ray = False
        self._actors: list[Any] = []
        if address is not None and address != "auto":
            _check_reachable(address, CONNECT_TIMEOUT_S)

    def _connect(self, ray: Any, address: str | None) -> None:
        options: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False,
                                   "logging_level": logging.WARNING}
        if address is None:
            options.update(include_dashboard=False)
        try:
            ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, TimeoutError) as exc:
            fix = ("start one with `ray start --head` on this machine, or give --ray-address ray://HOST:10001"
                   if address == "auto" else "check that the address is a Ray head node, and that its Ray version "
                   f"is this one ({ray.__version__})")
            raise OptionError(f"cannot connect to the Ray cluster at {address or 'a new local Ray'}: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                              where="ray_address", fix=fix) from None
        self._owns_ray = True

    def _start(self, ray: Any) -> list[Any]:
        """Connect (on first use: a backend that is never run holds nothing) and start the actors."""
        if self._actors:
            return self._actors
        if not ray.is_initialized():  # else: the Ray this process already joined (ray.init ignores a new address)
            self._connect(ray, self.address)
        cpus = int(ray.cluster_resources().get("CPU", 0))
        per_worker = self.threads or 1
        workers = self.requested_workers or max(1, cpus // per_worker)
        if workers * per_worker > cpus:
            raise OptionError(f"{workers} workers of {per_worker} thread(s) need {workers * per_worker} CPUs; the "
                              f"Ray cluster has {cpus}", where="num_workers",
                              fix=f"use --num-workers {max(1, cpus // per_worker)} or fewer, or add nodes")
        worker = ray.remote(_ShardWorker).options(num_cpus=per_worker, max_restarts=MAX_RESTARTS,
                                                  max_task_retries=MAX_TASK_RETRIES)
        actors = [worker.remote(dict(VIEW_KINDS), self.threads) for _ in range(workers)]
        try:
            ray.get([a.pid.remote() for a in actors], timeout=START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            for actor in actors:
                ray.kill(actor)
            raise OptionError(f"the Ray cluster did not start {workers} workers within {START_TIMEOUT_S:.0f} s",
                              where="num_workers", fix="use fewer --num-workers, or check the cluster (`ray status`)"
                              ) from None
        self._actors, self.workers = actors, workers
        return actors

    def run(self, model: Model, view: View, shards: Iterable[Shard]) -> Iterator[ShardResult]:
        spec = portable_model_spec(model, self.threads)
        view_json = portable_view_spec(view)
        ray = _import_ray()
        actors = self._start(ray)
        spec_ref = ray.put(spec)
        in_flight: collections.deque[Any] = collections.deque()
        for i, shard in enumerate(shards):
            in_flight.append(actors[i % len(actors)].run.remote(spec_ref, view_json, shard))
            if len(in_flight) >= IN_FLIGHT_PER_WORKER * len(actors):
                yield self._result(ray, in_flight.popleft())
        while in_flight:
            yield self._result(ray, in_flight.popleft())

    def _result(self, ray: Any, ref: Any) -> ShardResult:
        """The shard's result, or the worker's UserError raised here."""
        result = ray.get(ref)
        if isinstance(result, _WorkerError):
            result.raise_here()
        assert isinstance(result, ShardResult)
        return result

    def close(self) -> None:
        """Stop the actors; shut down the local Ray this backend started (a cluster it joined stays up)."""
        if not (self._actors or self._owns_ray):
            return
        ray = _import_ray()
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False
