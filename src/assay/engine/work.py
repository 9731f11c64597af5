"""The engine's unit of work, as plain data: one shard of one view, run on one model.

A :class:`WorkUnit` is ``(model spec, view spec, shard)`` and :func:`run_unit` turns it into a
:class:`ShardResult` (logits, features, the kept example inputs, timings). Nothing else flows in or out:
the shard carries its own input rows and the per-row data its view needs (an attack's labels and targets),
the view is rebuilt from its spec and the model is reloaded from its spec in the process that runs it.
That is what lets a backend run units in other processes (or, later, on other machines) and the driver
merge the results and write the cache.

:func:`run_shard` is the same computation on a live model and view: the local backend calls it directly,
so in-process runs pay nothing for the contract.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from assay.engine.views import View, ViewSpec

if TYPE_CHECKING:
    from assay.models.base import Model
    from assay.models.spec import ModelSpec

__all__ = ["Shard", "ShardResult", "WorkUnit", "run_shard", "run_unit"]


@dataclass(frozen=True)
class Shard:
    """Rows ``[start, stop)`` of a view's source: their inputs, the view's per-row data
    (:meth:`View.row_data`, sliced), and which of them to keep as example inputs (absolute row numbers).

    ``source_rows``: for a shard of chosen rows (a budgeted run's sample), the absolute source row of each input;
    ``start``/``stop`` are then where the shard's outputs go in the run's output array, and :attr:`index` (what
    views seed their randomness from) is ``source_rows``, so a sampled row gets the inputs a full run gives it."""

    start: int
    stop: int
    x: np.ndarray
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    keep: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    source_rows: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.source_rows is not None and len(self.source_rows) != self.stop - self.start:
            raise ValueError(f"a shard of {self.stop - self.start} outputs names {len(self.source_rows)} source rows")

    @property
    def index(self) -> np.ndarray:
        """The absolute row numbers of the shard (views seed their randomness from them)."""
        if self.source_rows is not None:
            return self.source_rows
        return np.arange(self.start, self.stop)

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass
class ShardResult:
    """The model outputs of one shard, the example inputs it kept, and where its time went."""

    start: int
    stop: int
    logits: np.ndarray
    features: np.ndarray | None
    examples: dict[int, np.ndarray]
    transform_seconds: float
    forward_seconds: float


@dataclass(frozen=True)
class WorkUnit:
    """A shard of a view to run on a model, described well enough to run in another process."""

    model: ModelSpec
    view: ViewSpec
    shard: Shard


def run_shard(model: Model, view: View, shard: Shard) -> ShardResult:
    """Feed one shard through ``view`` and ``model``: a function of its arguments only."""
    t0 = time.perf_counter()
    x = view.transform_shard(shard)
    t1 = time.perf_counter()
    # Copies: a kept example must not hold on to the whole batch.
    position = {int(row): p for p, row in enumerate(shard.index)} if shard.keep.size else {}
    examples = {int(i): np.array(x[position[int(i)]]) for i in shard.keep}
    logits, features = model.forward(x, want_features=True)
    return ShardResult(shard.start, shard.stop, logits, features, examples, t1 - t0, time.perf_counter() - t1)


#: Per process: the models and views units have needed so far (a worker loads a model once, not per shard).
_LOADED_MODELS: dict[str, Model] = {}
_REBUILT_VIEWS: dict[tuple[str, str], View] = {}


def run_unit(unit: WorkUnit) -> ShardResult:
    """:func:`run_shard` in a process that holds nothing but ``unit``: the model is loaded from its spec
    (through the normal loader: same safety checks, sha256 verified) and the view rebuilt from its spec,
    each once per process."""
    model_key = unit.model.model_dump_json()
    model = _LOADED_MODELS.get(model_key)
    if model is None:
        model = _LOADED_MODELS[model_key] = unit.model.load()
    view_key = (model_key, unit.view.to_json())
    view = _REBUILT_VIEWS.get(view_key)
    if view is None:
        view = _REBUILT_VIEWS[view_key] = View.from_spec(unit.view, model)
    return run_shard(model, view, unit.shard)
