"""Views: the variants of the evaluation data a run needs outputs for.

A view names *what* is fed to the model (the clean inputs here; corruptions, OOD sets and adversarial
examples plug in as further views). Its ``spec`` is part of the cache key, so two views with equal
specs share cached outputs.

A spec is also what rebuilds the view in another process (a backend's worker): ``View.from_spec(spec,
model)`` looks the kind up in :data:`VIEW_KINDS` and lets the class rebuild itself from the spec's
``params`` (its identity, in the cache key) and ``state`` (what the worker needs besides: a tabular
corruption's feature statistics, an ODIN view's base view). Data rows never travel in a spec: the driver
slices them into each :class:`~assay.engine.work.Shard`.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from assay.data.dataset import Dataset
from assay.errors import ModelError, OptionError

if TYPE_CHECKING:
    from assay.engine.work import Shard
    from assay.models.base import Model

__all__ = ["VIEW_KINDS", "CleanView", "InputSetView", "View", "ViewSpec", "register_view_kind", "view_class"]


@dataclass(frozen=True)
class ViewSpec:
    """Hashable description of a view: a kind and its parameters (its identity: equality, hash and the
    cache key), and ``state``: what rebuilding it elsewhere needs beyond that, which follows from the data
    the cache key already fingerprints (so it is left out of equality and the key).

    Values are plain data: strings, numbers, booleans, None, tuples of those, and nested specs."""

    kind: str
    params: tuple[tuple[str, Any], ...] = field(default=())
    state: tuple[tuple[str, Any], ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def make(cls, kind: str, **params: Any) -> ViewSpec:
        return cls(kind, tuple(sorted(params.items())))

    def with_state(self, **state: Any) -> ViewSpec:
        """This spec carrying ``state`` (rebuild-only values; the identity is unchanged)."""
        return ViewSpec(self.kind, self.params, tuple(sorted(state.items())))

    @property
    def name(self) -> str:
        if not self.params:
            return self.kind
        return self.kind + ":" + ",".join(f"{k}={v}" for k, v in self.params)

    def key(self) -> str:
        """Canonical JSON used in cache keys."""
        return json.dumps({"kind": self.kind, "params": dict(self.params)}, sort_keys=True, default=str)

    def to_json(self) -> str:
        """The whole spec (state included) as JSON; :meth:`from_json` reads it back equal, state and all."""
        return json.dumps(_plain(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ViewSpec:
        spec = _unplain(json.loads(text))
        if not isinstance(spec, ViewSpec):
            raise ValueError("not a view spec")
        return spec


def _plain(value: Any) -> Any:
    """JSON-ready form of a spec value (tuples as lists, nested specs as ``{"view": ...}``)."""
    if isinstance(value, ViewSpec):
        return {"view": {"kind": value.kind, "params": [[k, _plain(v)] for k, v in value.params],
                         "state": [[k, _plain(v)] for k, v in value.state]}}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(f"a view spec holds plain data, not {type(value).__name__}")


def _unplain(value: Any) -> Any:
    if isinstance(value, dict):
        body = value["view"]
        return ViewSpec(str(body["kind"]), tuple((str(k), _unplain(v)) for k, v in body["params"]),
                        tuple((str(k), _unplain(v)) for k, v in body["state"]))
    if isinstance(value, list):
        return tuple(_unplain(v) for v in value)
    return value


class View:
    """Base view: the dataset's own inputs, unchanged. Subclasses override ``source`` or ``transform``.

    To run on a backend other than the local one, a subclass also registers its kind
    (:func:`register_view_kind`) and rebuilds itself from its spec (:meth:`_from_spec`)."""

    spec: ViewSpec = ViewSpec("clean")
    #: The revision of the view's definition: raised when the same spec would now produce other inputs (e.g. a
    #: corruption reimplemented to match its published version), so outputs cached under the old one are misses.
    revision: int = 1

    def source(self, dataset: Dataset) -> Dataset:
        """The dataset whose inputs this view feeds (OOD views return their own)."""
        return dataset

    def transform(self, x: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Turn a batch of source inputs (rows ``index`` of the source) into model inputs.

        ``x`` may be a view of the dataset's own array (the engine slices, it does not copy): return a
        new array rather than changing ``x`` in place."""
        return x

    def row_data(self, source: Dataset) -> dict[str, np.ndarray]:
        """Per-row arrays (one entry per source row) the transform needs besides the inputs (an attack: the
        labels and which rows to attack); the driver slices them into each shard. None by default."""
        return {}

    def transform_shard(self, shard: Shard) -> np.ndarray:
        """The model inputs of one shard: ``transform`` of its rows; views that read ``row_data`` take it
        from ``shard.rows`` here (a view rebuilt in a worker has only the shard)."""
        return self.transform(shard.x, shard.index)

    def example_indices(self, source: Dataset) -> np.ndarray:
        """Rows whose model inputs are kept (cached) for reports; none for unperturbed views."""
        return np.arange(0)

    @classmethod
    def from_spec(cls, spec: ViewSpec, model: Model | None = None) -> View:
        """The view ``spec`` describes, rebuilt in this process by the class registered for its kind.

        ``model``: the model loaded in this process, for views that need its gradients (attacks, ODIN)."""
        return view_class(spec.kind)._from_spec(spec, model)

    @classmethod
    def _from_spec(cls, spec: ViewSpec, model: Model | None) -> View:
        """Rebuild from ``spec`` (classes with constructor arguments override this)."""
        return cls()


class CleanView(View):
    """The evaluation inputs as given."""

    spec = ViewSpec("clean")


class InputSetView(View):
    """The inputs of another data set (an OOD, unlabeled or non-member set): ``source`` is that set, the
    transform the identity. In a worker the rows come in each shard, so a view rebuilt from its spec holds no
    data. Subclasses set ``kind``."""

    kind = ""

    def __init__(self, name: str, dataset: Dataset | None) -> None:
        self.name, self._dataset = name, dataset
        self.spec = ViewSpec.make(self.kind, name=name, fingerprint=None if dataset is None else dataset.fingerprint)

    @classmethod
    def _from_spec(cls, spec: ViewSpec, model: Model | None) -> View:
        view = cls(dict(spec.params)["name"], None)
        view.spec = spec
        return view

    def source(self, dataset: Dataset) -> Dataset:
        if self._dataset is None:
            raise RuntimeError(f"a {self.kind} view rebuilt from its spec holds no data")
        return self._dataset


#: View kind -> ``"module:Class"`` of the class that rebuilds it. Resolved on first use only, so the engine
#: can name view classes of the checks layer without importing it (the layer rule). Only classes named
#: here (or through :func:`register_view_kind`, from code) are ever imported: a spec cannot name a module.
VIEW_KINDS: dict[str, str] = {
    "clean": "assay.engine.views:CleanView",
    "corruption": "assay.engine.robust_views:CorruptionView",
    "precomputed-corruption": "assay.engine.robust_views:PrecomputedCorruptionView",
    "adversarial": "assay.engine.robust_views:AdversarialView",
    "ood": "assay.checks.ood:OODView",
    "odin": "assay.checks.ood:ODINView",
    "unlabeled": "assay.checks.label_free_check:UnlabeledView",
    "nonmember": "assay.checks.privacy:NonMemberView",
    "strip": "assay.checks.backdoor:StripView",
}


def register_view_kind(kind: str, target: str | type[View]) -> None:
    """Let views of ``kind`` be rebuilt from their spec by ``target`` (a module-level ``View`` subclass, or
    its ``"module:Class"``). Backends with worker processes hand the table to their workers at start."""
    if not isinstance(target, str):
        if "<locals>" in target.__qualname__:
            raise OptionError(f"the view class {target.__qualname__} is defined inside a function, so no other "
                              "process can import it", where="target", fix="define the view class at module level")
        target = f"{target.__module__}:{target.__qualname__}"
    VIEW_KINDS[kind] = target


def view_class(kind: str) -> type[View]:
    """The class registered for ``kind`` (imported on first use); OptionError for an unregistered kind."""
    target = VIEW_KINDS.get(kind)
    if target is None:
        raise OptionError(f"views of kind {kind!r} cannot be rebuilt from their spec: the kind is not registered",
                          where="backend", fix="register the view class (assay.engine.register_view_kind), or "
                          "run it on the local backend")
    module_name, _, qualname = target.partition(":")
    found: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        found = getattr(found, part)
    if not (isinstance(found, type) and issubclass(found, View)):
        raise OptionError(f"{target} (registered for view kind {kind!r}) is not a View class", where="backend",
                          fix="register a View subclass")
    return found


def spec_state(spec: ViewSpec) -> dict[str, Any]:
    """A spec's parameters and state as one dict (what :meth:`View._from_spec` reads)."""
    return {**dict(spec.params), **dict(spec.state)}


def gradient_model(model: Model | None, spec: ViewSpec) -> Model:
    """``model`` when it has a torch module (a rebuilt attack or ODIN view takes input gradients through
    it); ModelError otherwise."""
    if model is None or model.torch_module() is None:
        raise ModelError(f"the view {spec.name} needs input gradients, and the model loaded here has none",
                         where="model", fix="evaluate the torch model (TorchScript, torch.export or factory + "
                         "weights), or drop the checks that need gradients")
    return model
