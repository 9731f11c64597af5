"""Views: the variants of the evaluation data a run needs outputs for.

A view names *what* is fed to the model (the clean inputs here; corruptions, OOD sets and adversarial
examples plug in as further views). Its ``spec`` is part of the cache key, so two views with equal
specs share cached outputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assay.data.dataset import Dataset

__all__ = ["CleanView", "View", "ViewSpec"]


@dataclass(frozen=True)
class ViewSpec:
    """Hashable description of a view: a kind and its parameters."""

    kind: str
    params: tuple[tuple[str, Any], ...] = field(default=())

    @classmethod
    def make(cls, kind: str, **params: Any) -> ViewSpec:
        return cls(kind, tuple(sorted(params.items())))

    @property
    def name(self) -> str:
        if not self.params:
            return self.kind
        return self.kind + ":" + ",".join(f"{k}={v}" for k, v in self.params)

    def key(self) -> str:
        """Canonical JSON used in cache keys."""
        return json.dumps({"kind": self.kind, "params": dict(self.params)}, sort_keys=True, default=str)


class View:
    """Base view: the dataset's own inputs, unchanged. Subclasses override ``source`` or ``transform``."""

    spec: ViewSpec = ViewSpec("clean")

    def source(self, dataset: Dataset) -> Dataset:
        """The dataset whose inputs this view feeds (OOD views return their own)."""
        return dataset

    def transform(self, x: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Turn a batch of source inputs (rows ``index`` of the source) into model inputs.

        ``x`` may be a view of the dataset's own array (the engine slices, it does not copy): return a
        new array rather than changing ``x`` in place."""
        return x

    def example_indices(self, source: Dataset) -> np.ndarray:
        """Rows whose model inputs are kept (cached) for reports; none for unperturbed views."""
        return np.arange(0)


class CleanView(View):
    """The evaluation inputs as given."""

    spec = ViewSpec("clean")
