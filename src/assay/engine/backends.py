"""Execution backends: where the engine's units of work (:mod:`assay.engine.work`) run.

The contract: ``backend.run(model, view, shards)`` yields one :class:`~assay.engine.work.ShardResult` per
shard, in shard order, each equal to ``run_shard(model, view, shard)``. The driver (``run_views``) makes
the shards, merges the results and writes the cache; a backend holds no state of the run.

- :class:`LocalBackend` calls :func:`~assay.engine.work.run_shard` with the live model and view (no copy,
  no reload: in-process runs cost what they cost before the contract).
- :class:`ProcessPoolBackend` sends :class:`~assay.engine.work.WorkUnit` s (model spec, view spec, shard)
  to worker processes, which reload the model and rebuild the view from their specs: proof that a unit of
  work depends on nothing shared, and the shape a Ray backend takes.
- :class:`~assay.engine.ray_backend.RayBackend` runs the same units on Ray actors (``ray`` imported lazily).
"""

from __future__ import annotations

import collections
import multiprocessing
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING

from assay.engine.views import VIEW_KINDS, View, view_class
from assay.engine.work import Shard, ShardResult, WorkUnit, run_shard, run_unit
from assay.errors import ModelError, OptionError

if TYPE_CHECKING:
    from assay.models.base import Model
    from assay.models.spec import ModelSpec

__all__ = ["BACKENDS", "Backend", "LocalBackend", "ProcessPoolBackend", "get_backend", "portable_model_spec",
           "portable_view_spec"]


class Backend(ABC):
    """Runs the shards of one view on one model, yielding their results in shard order."""

    name: str

    @abstractmethod
    def run(self, model: Model, view: View, shards: Iterable[Shard]) -> Iterator[ShardResult]: ...

    def close(self) -> None:
        """Release workers (none for the local backend)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class LocalBackend(Backend):
    """In-process, sequential: the model's runtime already uses the machine's threads."""

    name = "local"

    def run(self, model: Model, view: View, shards: Iterable[Shard]) -> Iterator[ShardResult]:
        for shard in shards:
            yield run_shard(model, view, shard)


def portable_model_spec(model: Model, threads: int | None) -> ModelSpec:
    """The spec another process reloads ``model`` from (with ``threads`` threads, unless None); ModelError for
    a model built in memory or an untrained factory, before any worker starts."""
    spec = model.spec()
    if spec is None:
        raise ModelError("a model built in memory cannot be reloaded in a worker process", where="backend",
                         fix="load the model from a file (assay.models.load_model), or use the local backend")
    if spec.untrained:
        raise ModelError("an untrained factory model has random weights: a worker would load a different model",
                         where="backend", fix="give the factory's weights, or use the local backend")
    return spec if threads is None else spec.model_copy(update={"threads": threads})


def portable_view_spec(view: View) -> str:
    """``view``'s spec as the JSON a worker rebuilds it from; OptionError, in the driver, for an unregistered
    kind or a spec that is not plain data."""
    view_class(view.spec.kind)
    try:
        return view.spec.to_json()
    except TypeError as exc:
        raise OptionError(f"the view {view.spec.name} cannot be described to a worker: {exc}", where="backend",
                          fix="keep view specs to plain data, or use the local backend") from None


def start_worker(view_kinds: dict[str, str], threads: int | None) -> None:
    """Set up a worker (a pool process or a Ray actor): the driver's view-kind table (kinds registered from code
    included) and its threads."""
    VIEW_KINDS.update(view_kinds)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


class ProcessPoolBackend(Backend):
    """Shards run in ``workers`` fresh processes (``spawn``: nothing inherited from the driver but the view-kind
    table). At most ``2 * workers`` shards are in flight, so the driver never holds a whole view's inputs twice.

    Needs a model loaded from a file or factory + weights (``model.spec()``); each worker loads it once,
    with ``threads`` threads (default 1: the workers share the machine's cores)."""

    name = "processes"

    def __init__(self, workers: int = 2, *, threads: int | None = 1) -> None:
        if workers < 1:
            raise OptionError(f"workers must be at least 1, got {workers}", where="workers", fix="use 1 or more")
        self.workers, self.threads = int(workers), threads
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=start_worker, initargs=(dict(VIEW_KINDS), self.threads))
        return self._pool

    def run(self, model: Model, view: View, shards: Iterable[Shard]) -> Iterator[ShardResult]:
        spec = portable_model_spec(model, self.threads)
        portable_view_spec(view)  # an unregistered kind fails here, in the driver, with an OptionError
        pool = self._executor()
        in_flight: collections.deque[Future[ShardResult]] = collections.deque()
        for shard in shards:
            in_flight.append(pool.submit(run_unit, WorkUnit(spec, view.spec, shard)))
            if len(in_flight) >= 2 * self.workers:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


# Imported here, once Backend exists (RayBackend subclasses it; ray itself is imported only when one is made).
from assay.engine.ray_backend import RayBackend  # noqa: E402

#: Backend names the CLI and ``evaluate(backend=...)`` accept.
BACKENDS: dict[str, type[Backend]] = {"local": LocalBackend, "processes": ProcessPoolBackend, "ray": RayBackend}


def get_backend(name: str, *, address: str | None = None, workers: int | None = None) -> Backend:
    """The backend called ``name``; ``address`` (ray only) and ``workers`` (processes, ray) as the CLI's
    ``--ray-address`` and ``--num-workers``."""
    if name not in BACKENDS:
        raise OptionError(f"unknown backend {name!r}", where="backend", fix=f"use one of: {', '.join(BACKENDS)}")
    if address is not None and name != "ray":
        raise OptionError(f"a Ray address was given for the {name} backend", where="ray_address",
                          fix="add --backend ray (backend='ray'), or drop the address")
    if workers is not None and name == "local":
        raise OptionError("the local backend has no workers", where="num_workers",
                          fix="add --backend processes or ray, or drop the number of workers")
    if name == "ray":
        return RayBackend(address=address, workers=workers)
    if name == "processes" and workers is not None:
        return ProcessPoolBackend(workers)
    return BACKENDS[name]()
