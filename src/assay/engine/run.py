"""Plan views, run batched inference once, and cache the outputs.

Checks never call the model: they read the :class:`Outputs` this module returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from assay.data.dataset import Dataset
from assay.engine.backends import Backend, LocalBackend
from assay.engine.cache import OutputCache, ViewOutput, cache_key
from assay.engine.views import CleanView, View
from assay.engine.work import Shard, ShardResult
from assay.errors import ModelError
from assay.models.base import Model
from assay.progress import stage

__all__ = ["Outputs", "RowOutputs", "run_rows", "run_views", "shards_of", "shards_of_rows"]


@dataclass
class Outputs:
    """Model outputs per view name, plus counters of work done (forward batches, cache hits) and notes
    the run should report (cache entries found damaged, a cache that could not be written)."""

    views: dict[str, ViewOutput] = field(default_factory=dict)
    forward_batches: int = 0
    cache_hits: int = 0
    transform_seconds: float = 0.0  # making the view's inputs (corruptions, attacks)
    forward_seconds: float = 0.0  # model forward passes
    notes: list[str] = field(default_factory=list)

    def absorb(self, other: Outputs) -> None:
        """Add another run's views, work counters and notes to this one (several run_views calls, one result)."""
        self.views.update(other.views)
        self.forward_batches += other.forward_batches
        self.cache_hits += other.cache_hits
        self.transform_seconds += other.transform_seconds
        self.forward_seconds += other.forward_seconds
        self.notes.extend(note for note in other.notes if note not in self.notes)

    def __getitem__(self, name: str) -> ViewOutput:
        return self.views[name]

    def __contains__(self, name: object) -> bool:
        return name in self.views

    @property
    def clean(self) -> ViewOutput:
        return self.views["clean"]


def _view_record(model: Model, source: Dataset, view: View) -> dict[str, str]:
    """What a view's cached outputs depend on: the cache key is made of it, and each entry stores it."""
    info = model.info
    record = {"model": info.sha256, "outputs": info.outputs, "feature_source": str(info.feature_source),
              "data": source.fingerprint, "view": view.spec.key()}
    if view.revision != 1:  # first definitions keep the keys they always had
        record["view_revision"] = str(view.revision)
    return record


#: Rows of features kept as a sample when the full (N, D) array is not (the monitoring reference's
#: embedding histograms are built from it): chosen by a fixed seed, so every run keeps the same rows.
FEATURE_SAMPLE_ROWS = 1000


def feature_sample_rows(n: int) -> np.ndarray:
    """The (sorted) rows a feature sample keeps out of ``n``."""
    return np.sort(np.random.default_rng(0).choice(n, size=min(n, FEATURE_SAMPLE_ROWS), replace=False))


class _FeatureSummary:
    """Running per-dimension mean and standard deviation (ddof=0) of features, batch by batch, in float64
    (Chan, Golub & LeVeque 1979 pairwise update), and a fixed-seed sample of rows, so features need not be
    kept to be summarized."""

    def __init__(self, n: int) -> None:
        self.count, self.mean, self.m2 = 0, None, None
        self.rows = feature_sample_rows(n)
        self.sample: np.ndarray | None = None

    def add(self, batch: np.ndarray, start: int = 0) -> None:
        picked = self.rows[(self.rows >= start) & (self.rows < start + len(batch))]
        if picked.size:
            if self.sample is None:
                self.sample = np.empty((self.rows.size, batch.shape[1]), dtype=np.float32)
            first = int(np.searchsorted(self.rows, picked[0]))
            self.sample[first:first + picked.size] = batch[picked - start]
        batch = np.asarray(batch, dtype=np.float64)
        n_b, mean_b = batch.shape[0], batch.mean(axis=0)
        m2_b = ((batch - mean_b) ** 2).sum(axis=0)
        if self.mean is None:
            self.count, self.mean, self.m2 = n_b, mean_b, m2_b
            return
        total = self.count + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / total)
        self.m2 = self.m2 + m2_b + delta**2 * (self.count * n_b / total)
        self.count = total

    def result(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self.mean is None or self.count == 0:
            return None, None
        return self.mean.astype(np.float32), np.sqrt(self.m2 / self.count).astype(np.float32)


def run_views(
    model: Model,
    dataset: Dataset,
    views: Sequence[View] | None = None,
    *,
    cache_dir: str | Path | OutputCache | None = None,
    batch_size: int = 256,
    backend: Backend | None = None,
    progress: bool = True,
    keep_features: bool = True,
) -> Outputs:
    """Outputs of ``model`` on every view of ``dataset``, from the cache where possible.

    Features are computed alongside logits whenever the model exposes them (one pass for both). With
    ``keep_features=False`` only their mean and standard deviation are kept (``ViewOutput.feature_mean``,
    ``feature_std``): for runs whose checks never read features, whose (N, D) array can outweigh
    everything else. ``cache_dir`` may be an :class:`OutputCache` shared by several calls (one warning
    when it cannot be written); a path that is not a directory raises OptionError before any inference.
    """
    views = list(views) if views is not None else [CleanView()]
    backend = backend or LocalBackend()
    cache = cache_dir if isinstance(cache_dir, OutputCache) else OutputCache(cache_dir)
    outputs = Outputs()
    todo: list[tuple[View, Dataset, str, dict[str, str]]] = []
    for view in views:
        source = view.source(dataset)
        # The record (and the data fingerprint in it) is made even without a cache: the evidence needs the
        # fingerprint anyway, and hashing before inference keeps its transient memory out of the run's peak.
        record = _view_record(model, source, view)
        key = cache_key(*record.values())
        hit = cache.get(key, rows=len(source), record=record)
        if hit is not None and keep_features and model.has_features and hit.features is None:
            hit = None  # written by a run that did not keep features
        elif hit is not None and not keep_features:
            if hit.features is not None and hit.feature_sample is None:
                hit.feature_sample = hit.features[feature_sample_rows(len(hit.features))]
            hit.features = None
        if hit is not None:
            outputs.views[view.spec.name] = hit
            outputs.cache_hits += 1
        else:
            todo.append((view, source, key, record))
    if todo:
        total = sum(-(-len(src) // batch_size) for _, src, _, _ in todo)
        names = [view.spec.name for view, _, _, _ in todo]
        views_note = f"{len(names)} views" if len(names) > 3 else f"view{'s' * (len(names) > 1)} {', '.join(names)}"
        with stage("inference", total=total, unit="batches", enabled=progress, note=views_note) as advance:
            for view, source, key, record in todo:
                advance.detail(f"[{view.spec.name}]")
                result = _run_view(model, view, source, batch_size, backend, outputs, keep_features, advance)
                cache.put(key, result, record={**record, "rows": len(source)})
                outputs.views[view.spec.name] = result
        model.release_memory()
    outputs.notes.extend(note for note in cache.notes if note not in outputs.notes)
    return outputs


def shards_of(view: View, source: Dataset, batch_size: int) -> Iterator[Shard]:
    """The shards of one view: ``batch_size`` rows each (inputs as slices, no copy), with the view's per-row
    data and the example rows that fall in them."""
    n = len(source)
    keep = np.asarray(view.example_indices(source), dtype=np.int64)
    rows = view.row_data(source)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        yield Shard(start, stop, source.x[start:stop], {k: v[start:stop] for k, v in rows.items()},
                    keep[(keep >= start) & (keep < stop)])


def _check_rows(model: Model, result: ShardResult) -> None:
    """ModelError when the model returned another number of output rows than the shard had inputs."""
    if result.logits.shape[0] != result.stop - result.start:
        raise ModelError(
            f"the model returned {result.logits.shape[0]} rows of outputs for a batch of "
            f"{result.stop - result.start} inputs", where=model.info.path,
            fix="make the model return one row of class scores per input (no fixed batch size)")


def shards_of_rows(view: View, source: Dataset, rows: np.ndarray, batch_size: int) -> Iterator[Shard]:
    """Shards of chosen source ``rows`` (any order, no repeats needed): ``batch_size`` rows each, in the order
    given, each carrying its absolute row numbers (``Shard.source_rows``) so a view's per-row randomness, seeded
    by row number, gives each row the inputs it gets in a full run. No example inputs are kept."""
    rows = np.asarray(rows, dtype=np.int64)
    data = view.row_data(source) if rows.size else {}
    for start in range(0, rows.size, batch_size):
        stop = min(start + batch_size, rows.size)
        chosen = rows[start:stop]
        yield Shard(start, stop, source.x[chosen], {k: v[chosen] for k, v in data.items()},
                    source_rows=chosen)


@dataclass
class RowOutputs:
    """The logits of chosen rows of one view (in the order asked), the wall-clock seconds the driver waited for
    them, the compute seconds the backend reported (transform + forward) and the shards (forward batches) run."""

    logits: np.ndarray
    seconds: float
    compute_seconds: float
    batches: int


def run_rows(model: Model, view: View, source: Dataset, rows: np.ndarray, *, batch_size: int = 256,
             backend: Backend | None = None) -> RowOutputs:
    """Outputs of ``view`` on chosen rows of its ``source`` (``view.source(dataset)``), never cached: the unit of
    a budgeted run (:mod:`assay.engine.budget`). Row i gets the model inputs a full :func:`run_views` gives it
    wherever the view's randomness is seeded per row (clean, input sets, corruptions); an attack seeds each
    batch from its first row and attacks a batch as a whole, so its sampled rows are attacked as well, with
    other random starts, not with the full run's."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= len(source))):
        raise ValueError(f"rows must be a 1-D array of row numbers in [0, {len(source)})")
    backend = backend or LocalBackend()
    t0 = time.perf_counter()
    logits: np.ndarray | None = None
    compute, batches = 0.0, 0
    results = backend.run(model, view, shards_of_rows(view, source, rows, batch_size))
    try:
        for result in results:
            batches += 1
            compute += result.transform_seconds + result.forward_seconds
            _check_rows(model, result)
            if logits is None:
                logits = np.empty((rows.size, result.logits.shape[1]), dtype=np.float32)
            logits[result.start:result.stop] = result.logits
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()  # an interrupted run leaves no shard of this call queued on the backend
    if logits is None:
        logits = np.zeros((0, model.info.num_classes), dtype=np.float32)
    return RowOutputs(logits, time.perf_counter() - t0, compute, batches)


def _run_view(model: Model, view: View, source: Dataset, batch_size: int, backend: Backend, outputs: Outputs,
              keep_features: bool, advance: Callable[[], None]) -> ViewOutput:
    """One view's outputs: its shards run on the backend, merged into arrays allocated once (no per-batch
    list and concatenation copy)."""
    n = len(source)
    examples: dict[int, np.ndarray] = {}
    logits: np.ndarray | None = None
    features: np.ndarray | None = None
    summary = _FeatureSummary(n)
    has_features = True
    for result in backend.run(model, view, shards_of(view, source, batch_size)):
        outputs.forward_batches += 1
        outputs.transform_seconds += result.transform_seconds
        outputs.forward_seconds += result.forward_seconds
        start, stop, batch_logits, batch_features = result.start, result.stop, result.logits, result.features
        _check_rows(model, result)
        examples.update(result.examples)
        if logits is None:
            logits = np.empty((n, batch_logits.shape[1]), dtype=np.float32)
        logits[start:stop] = batch_logits
        has_features = has_features and batch_features is not None
        if has_features:
            assert batch_features is not None
            summary.add(batch_features, start)
            if keep_features:
                if features is None:
                    features = np.empty((n, batch_features.shape[1]), dtype=np.float32)
                features[start:stop] = batch_features
        advance()
    assert logits is not None  # datasets are never empty
    mean, std = summary.result() if has_features else (None, None)
    kept = sorted(examples)
    return ViewOutput(
        logits=logits,
        features=features if has_features else None,
        examples=np.stack([examples[i] for i in kept]) if kept else None,
        example_index=np.array(kept, dtype=np.int64) if kept else None,
        feature_mean=mean,
        feature_std=std,
        feature_sample=summary.sample if has_features and not keep_features else None,
    )
