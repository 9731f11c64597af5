"""Plan views, run batched inference once, and cache the outputs.

Checks never call the model: they read the :class:`Outputs` this module returns.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from assay.data.dataset import Dataset
from assay.engine.backends import Backend, LocalBackend
from assay.engine.cache import OutputCache, ViewOutput, cache_key
from assay.engine.views import CleanView, View
from assay.models.base import Model

__all__ = ["Outputs", "run_views"]


@dataclass
class Outputs:
    """Model outputs per view name, plus counters of work done (forward batches, cache hits)."""

    views: dict[str, ViewOutput] = field(default_factory=dict)
    forward_batches: int = 0
    cache_hits: int = 0
    transform_seconds: float = 0.0  # making the view's inputs (corruptions, attacks)
    forward_seconds: float = 0.0  # model forward passes

    def absorb(self, other: Outputs) -> None:
        """Add another run's views and work counters to this one (several run_views calls, one result)."""
        self.views.update(other.views)
        self.forward_batches += other.forward_batches
        self.cache_hits += other.cache_hits
        self.transform_seconds += other.transform_seconds
        self.forward_seconds += other.forward_seconds

    def __getitem__(self, name: str) -> ViewOutput:
        return self.views[name]

    def __contains__(self, name: object) -> bool:
        return name in self.views

    @property
    def clean(self) -> ViewOutput:
        return self.views["clean"]


def _view_key(model: Model, source: Dataset, view: View) -> str:
    info = model.info
    return cache_key(info.sha256, info.outputs, str(info.feature_source), source.fingerprint, view.spec.key())


def run_views(
    model: Model,
    dataset: Dataset,
    views: Sequence[View] | None = None,
    *,
    cache_dir: str | Path | None = None,
    batch_size: int = 256,
    backend: Backend | None = None,
    progress: bool = True,
) -> Outputs:
    """Outputs of ``model`` on every view of ``dataset``, from the cache where possible.

    Features are computed alongside logits whenever the model exposes them (one pass for both).
    """
    views = list(views) if views is not None else [CleanView()]
    backend = backend or LocalBackend()
    cache = OutputCache(cache_dir)
    outputs = Outputs()
    todo: list[tuple[View, Dataset, str]] = []
    for view in views:
        source = view.source(dataset)
        key = _view_key(model, source, view)
        hit = cache.get(key)
        if hit is not None:
            outputs.views[view.spec.name] = hit
            outputs.cache_hits += 1
        else:
            todo.append((view, source, key))
    if not todo:
        return outputs

    total = sum(-(-len(src) // batch_size) for _, src, _ in todo)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not progress,
        transient=True,
    ) as bar:
        task = bar.add_task("inference", total=total)
        for view, source, key in todo:
            bar.update(task, description=f"inference [{view.spec.name}]")
            starts = range(0, len(source), batch_size)

            keep = np.asarray(view.example_indices(source), dtype=np.int64)
            examples: dict[int, np.ndarray] = {}

            def one_batch(start: int, view: View = view, source: Dataset = source, keep: np.ndarray = keep,
                          examples: dict[int, np.ndarray] = examples) -> tuple[np.ndarray, np.ndarray | None]:
                index = np.arange(start, min(start + batch_size, len(source)))
                t0 = time.perf_counter()
                x = view.transform(source.x[index], index)
                t1 = time.perf_counter()
                for i in np.intersect1d(index, keep):
                    examples[int(i)] = x[i - start]
                result = model.forward(x, want_features=True)
                outputs.transform_seconds += t1 - t0
                outputs.forward_seconds += time.perf_counter() - t1
                return result

            logits_parts: list[np.ndarray] = []
            feature_parts: list[np.ndarray] = []
            for logits, feats in backend.map(one_batch, starts):
                outputs.forward_batches += 1
                logits_parts.append(logits)
                if feats is not None:
                    feature_parts.append(feats)
                bar.advance(task)
            kept = sorted(examples)
            result = ViewOutput(
                logits=np.concatenate(logits_parts).astype(np.float32, copy=False),
                features=np.concatenate(feature_parts) if feature_parts else None,
                examples=np.stack([examples[i] for i in kept]) if kept else None,
                example_index=np.array(kept, dtype=np.int64) if kept else None,
            )
            cache.put(key, result)
            outputs.views[view.spec.name] = result
    return outputs
