"""``assay estimate`` end to end: the model's expected errors on an unlabelled pool, which items to label
(:func:`select_queue`), and the pool's accuracy and per-class accuracy from their labels (:func:`run_estimate`)
as an evidence bundle (:func:`write_estimate`). The statistics are :mod:`assay.stats.active_testing`'s; the
queue and its design record are :mod:`assay.estimate.queue`'s.

Labels come from the filled-in queue, or, with ``simulate``, from the pool's own labels used as the oracle for
the queued items only (a demo or benchmark of what labelling the queue would give; the other labels are never
read). The estimate is of the model's accuracy on the pool the queue was drawn from; the queue's design record
must match the model (sha256) and the pool (fingerprint of inputs and ids).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from assay.data.dataset import Dataset
from assay.environment import environment_info
from assay.errors import DataError, OptionError
from assay.estimate.queue import QUEUE_FORMAT, LabelQueue, read_queue, read_queue_labels
from assay.evidence.schema import DataInfo, Evidence, Finding, Metric, Section
from assay.stats.active_testing import (
    DEFENSIVE_SHARE,
    PROPOSAL_RULES,
    AccuracyEstimate,
    accuracy_estimate,
    class_accuracy_estimates,
    expected_error,
    select_items,
    uniform_width,
)
from assay.stats.probabilities import softmax

if TYPE_CHECKING:
    from assay.models.base import Model

__all__ = [
    "ESTIMATE_KIND",
    "EstimateRun",
    "EstimateSettings",
    "estimate_inputs",
    "pool_fingerprint",
    "read_surrogate_probs",
    "run_estimate",
    "select_queue",
    "write_estimate",
]

#: The output kind of the bundle (evidence/output.py's OUTPUT_KINDS must list it).
ESTIMATE_KIND = "estimate"
#: Classes with fewer labelled items than this get a warning: their interval is wide and the ratio estimate rough.
MIN_CLASS_LABELS = 10


@dataclass(frozen=True)
class EstimateSettings:
    """How the queue is drawn and the estimate computed: ``label_budget`` draws (the labels paid for are the
    distinct items, at most that many), ``seed``, the proposal (``selection``) and ``defensive`` share
    (:mod:`assay.stats.active_testing`'s ``rule``), interval ``confidence``; and how the model runs."""

    label_budget: int = 200
    seed: int = 0
    selection: str = "sawade"
    defensive: float = DEFENSIVE_SHARE
    confidence: float = 0.95
    batch_size: int = 256
    cache_dir: Any = True
    progress: bool = True

    def __post_init__(self) -> None:
        budget = self.label_budget
        if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 2:
            raise OptionError(f"the label budget must be an integer of at least 2, got {budget!r}",
                              where="label_budget", fix="ask for e.g. 200 labels")
        if self.selection not in PROPOSAL_RULES:
            raise OptionError(f"unknown selection rule {self.selection!r}", where="selection",
                              fix=f"use one of {', '.join(PROPOSAL_RULES)}")
        if not (isinstance(self.defensive, (int, float)) and 0.0 < self.defensive <= 1.0):
            raise OptionError(f"the defensive share must lie in (0, 1], got {self.defensive!r}", where="defensive",
                              fix=f"use e.g. {DEFENSIVE_SHARE} (1 is uniform labelling)")
        if not (isinstance(self.confidence, (int, float)) and 0.5 <= self.confidence < 1.0):
            raise OptionError(f"confidence must lie in [0.5, 1), got {self.confidence!r}", where="confidence",
                              fix="use e.g. 0.95")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise OptionError(f"batch_size must be a positive integer, got {self.batch_size!r}", where="batch_size",
                              fix="use e.g. 256")

    def record(self) -> dict[str, Any]:
        return {"label_budget": int(self.label_budget), "seed": int(self.seed), "selection": self.selection,
                "defensive": float(self.defensive), "confidence": float(self.confidence)}


def pool_fingerprint(pool: Dataset) -> str:
    """sha256 over the pool's inputs and ids, not its labels: the same pool with or without labels matches."""
    return dataclasses.replace(pool, y=None, notes=list(pool.notes)).fingerprint


def estimate_inputs(model: Any, pool: Any, *, labels: Any = None, queue: Any = None, weights: Any = None,
                    cache_dir: Any = None, surrogate: Any = None) -> list[Path]:
    """Every input of an estimate on disk: the output folder may not be, contain or lie inside any of them."""
    from assay.evidence.output import input_paths

    specs = [s for s in (model, pool, labels, queue, weights, surrogate) if isinstance(s, (str, os.PathLike))]
    return input_paths(*specs, cache_dir=cache_dir)


def _load(model: Any, pool: Any, data_options: dict[str, Any] | None, model_options: dict[str, Any] | None
          ) -> tuple[Model, Dataset]:
    from assay.evaluation.inputs import align_classes, as_dataset, as_model, check_shapes

    dataset = as_dataset(pool, data_options, role="unlabeled")
    loaded = as_model(model, dataset.x[:2], dataset.class_names, model_options or {})
    check_shapes(loaded, dataset, "pool")
    if dataset.y is not None:
        dataset, _ = align_classes(loaded, dataset, "pool")
        dataset.validate_labels(loaded.info.num_classes)
    return loaded, dataset


def _logits(model: Model, pool: Dataset, settings: EstimateSettings) -> np.ndarray:
    from assay.engine.cache import OutputCache, default_cache_dir
    from assay.engine.run import run_views

    cache_dir = settings.cache_dir
    cache = OutputCache(default_cache_dir() if cache_dir is True else cache_dir or None)
    outputs = run_views(model, pool, cache_dir=cache, batch_size=settings.batch_size, progress=settings.progress,
                        keep_features=False)
    return np.asarray(outputs.clean.logits, dtype=np.float64)


def read_surrogate_probs(path: str | os.PathLike[str]) -> np.ndarray:
    """Another model's (N, C) class probabilities on the pool from a ``.npy`` file (never unpickled); checked
    against the pool when the queue is drawn."""
    where = os.fspath(path)
    try:
        values = np.load(where, allow_pickle=False)
    except FileNotFoundError:
        raise DataError("no such file", where=where, fix="check the path to the surrogate's probabilities") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"not a readable .npy array of numbers ({exc})", where=where,
                        fix="save the probabilities with numpy.save(path, probs) as an (N, C) float array") from None
    if not isinstance(values, np.ndarray) or values.dtype.kind not in "fiu":
        raise DataError("the file does not hold one numeric array", where=where,
                        fix="save the probabilities with numpy.save(path, probs) as an (N, C) float array")
    return values.astype(np.float64)


def _check_surrogate(probs: Any, n: int, num_classes: int) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.shape != (n, num_classes):
        raise DataError(f"the surrogate probabilities have shape {p.shape}, the pool needs ({n}, {num_classes})",
                        where="surrogate_probs", fix="give one row of class probabilities per pool item")
    if not np.isfinite(p).all() or (p < 0).any() or np.abs(p.sum(axis=1) - 1.0).max() > 1e-3:
        raise DataError("the surrogate probabilities are not rows of probabilities summing to 1",
                        where="surrogate_probs", fix="pass softmax outputs, not logits")
    return p


def _check_budget(settings: EstimateSettings, n: int) -> None:
    if settings.label_budget > n:
        raise OptionError(f"the label budget ({settings.label_budget}) is larger than the pool ({n} items)",
                          where="label_budget", fix=f"ask for at most {n} labels, or label the whole pool and "
                          "evaluate it with `assay evaluate`")


def _design(model: Model, pool: Dataset, settings: EstimateSettings, probabilities: np.ndarray,
            surrogate: np.ndarray | None = None) -> LabelQueue:
    """Draw the queue from the model's expected errors on the pool: under its own ``probabilities``, or under a
    surrogate's probabilities of its predicted classes."""
    n = len(pool)
    _check_budget(settings, n)
    predicted = np.asarray(probabilities).argmax(axis=1)
    error = expected_error(probabilities) if surrogate is None else expected_error(surrogate, predicted)
    selection = select_items(error, int(settings.label_budget), rule=settings.selection, defensive=settings.defensive,
                             seed=np.random.SeedSequence([int(settings.seed), 19]))
    rows = selection.draws.items
    return LabelQueue(
        rows=rows, ids=np.asarray([str(i) for i in pool.ids[rows]]), draws=selection.draws.counts,
        q=selection.q[rows], centre=selection.centre[rows],
        predicted=predicted[rows],
        design={"format": QUEUE_FORMAT, "model": model.info.path, "model_sha256": model.info.sha256,
                "pool": pool.source, "pool_fingerprint": pool_fingerprint(pool), "population": n,
                "label_budget": int(settings.label_budget), "draws_total": int(selection.draws.draws),
                "labels": int(selection.draws.labels), "seed": int(settings.seed), "rule": settings.selection,
                "defensive": float(settings.defensive), "centre_mean": float(selection.centre.mean()),
                "expected_accuracy": float(1.0 - error.mean()),
                "surrogate": "model" if surrogate is None else "given",
                "class_names": [str(c) for c in model.info.class_names],
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})


def select_queue(model: Any, pool: Any, settings: EstimateSettings | None = None, *,
                 surrogate_probs: np.ndarray | None = None, data_options: dict[str, Any] | None = None,
                 model_options: dict[str, Any] | None = None) -> LabelQueue:
    """Which items of ``pool`` to label (write it with :func:`assay.estimate.queue.write_queue`): the model's
    expected errors on the pool (under ``surrogate_probs``, (N, C) probabilities from another model, when given:
    the probability that the model's predicted class is wrong), the proposal
    of ``settings.selection`` and ``settings.label_budget`` seeded draws."""
    settings = settings or EstimateSettings()
    loaded, dataset = _load(model, pool, data_options, model_options)
    _check_budget(settings, len(dataset))  # before the forward pass
    surrogate = None
    if surrogate_probs is not None:  # before the forward pass
        surrogate = _check_surrogate(surrogate_probs, len(dataset), loaded.info.num_classes)
    return _design(loaded, dataset, settings, softmax(_logits(loaded, dataset, settings)), surrogate)


@dataclass
class EstimateRun:
    """What :func:`run_estimate` produced: the evidence, the queue it used, the labels of the queued rows."""

    evidence: Evidence
    queue: LabelQueue
    labels: np.ndarray


def _check_design(queue: LabelQueue, model: Model, pool: Dataset) -> None:
    d = queue.design
    if d.get("model_sha256") != model.info.sha256:
        raise DataError(f"the queue was drawn for another model (sha256 {str(d.get('model_sha256'))[:12]}, "
                        f"this one {model.info.sha256[:12]}: {d.get('model')})", where="queue",
                        fix="estimate with the model the queue was drawn for, or draw a new queue for this one")
    if d.get("pool_fingerprint") != pool_fingerprint(pool) or int(d.get("population", -1)) != len(pool):
        raise DataError(f"the queue was drawn from another pool ({d.get('pool')}, {d.get('population')} items; "
                        f"this one {pool.source}, {len(pool)} items, or its inputs or ids differ)", where="queue",
                        fix="give the pool the queue was drawn from with --unlabeled")


def _metric(est: AccuracyEstimate, config: dict[str, Any]) -> Metric:
    return Metric(value=est.value, ci_low=est.ci_low, ci_high=est.ci_high, n=est.labels, method=est.method,
                  config={"draws": est.draws, "labels": est.labels,
                          "std_error": None if est.std_error is None or not math.isfinite(est.std_error)
                          else est.std_error, **config})


def _section(queue: LabelQueue, correct: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
             confidence: float, notes: list[Finding]) -> Section:
    d = queue.design
    n = queue.population
    constant = bool(np.ptp(queue.centre) == 0)
    overall = accuracy_estimate(correct, queue.q, n, counts=queue.draws,
                                centre=float(queue.centre[0]) if constant else queue.centre,
                                centre_mean=None if constant else float(d["centre_mean"]), confidence=confidence)
    labelled = len(queue.rows)
    assert overall.value is not None and overall.width is not None
    uniform = uniform_width(overall.value, labelled, n, confidence)
    ratio = overall.width / uniform if uniform > 0 else math.inf
    design = {"population": n, "rule": d["rule"], "defensive": d["defensive"], "seed": d["seed"],
              "label_budget": d["label_budget"], "surrogate": d.get("surrogate", "model")}
    metrics = {"accuracy": _metric(overall, design)}
    metrics["ci_width"] = Metric(value=overall.width, n=labelled, method="width of the accuracy interval",
                                 config={"confidence": confidence})
    metrics["uniform_ci_width"] = Metric(
        value=uniform, n=labelled, method=f"wilson({confidence:g}) with finite-population correction: uniform random "
        "labelling of as many items, at this accuracy", config={"population": n})
    metrics["width_ratio"] = Metric(value=ratio if math.isfinite(ratio) else None, n=labelled,
                                    method="ci_width / uniform_ci_width (below 1: fewer labels bought more precision)")
    rows = []
    findings: list[Finding] = list(notes)
    per_class = class_accuracy_estimates(correct, labels, queue.q, len(class_names), counts=queue.draws,
                                         confidence=confidence)
    few = []
    for k, est in enumerate(per_class):
        name = str(class_names[k])
        metrics[f"accuracy_class_{name}"] = _metric(est, {"class": name})
        rows.append({"class": name, "accuracy": est.value, "ci_low": est.ci_low, "ci_high": est.ci_high,
                     "labels": est.labels, "draws": est.draws})
        if est.labels < MIN_CLASS_LABELS:
            few.append(f"{name} ({est.labels})")
    if few:
        findings.append(Finding(severity="warning", evidence="estimate.per_class", message=(
            f"{len(few)} classes have fewer than {MIN_CLASS_LABELS} labelled items ({', '.join(few[:8])}"
            f"{' ...' if len(few) > 8 else ''}): their accuracy intervals are wide, and a class with none has no "
            "estimate; a larger --label-budget narrows them")))
    if ratio < 1:
        findings.append(Finding(severity="info", evidence="estimate.width_ratio", message=(
            f"the interval is {ratio:.2f}x the width uniform random labelling of {labelled} items would give "
            f"({overall.width:.3f} vs {uniform:.3f})")))
    else:
        findings.append(Finding(severity="info", evidence="estimate.width_ratio", message=(
            f"the interval is {ratio:.2f}x the width uniform random labelling of {labelled} items would give: the "
            "model's confidence did not point at its errors here (a badly calibrated or uninformative surrogate); "
            "the estimate is still unbiased")))
    lo, hi = overall.ci_low, overall.ci_high
    summary = (f"accuracy on the pool of {n:,} items ≈ {overall.value:.3f} [{lo:.3f}, {hi:.3f}] from {labelled} labels "
               f"({overall.draws} draws, {d['rule']} proposal); {ratio:.2f}x the interval width of uniform labelling")
    section = Section(name="estimate", title="Label-efficient accuracy estimate", verdict="info", summary=summary,
                      metrics=metrics, findings=findings, tables={"per_class": rows}, lead_tables=["per_class"],
                      config={**design, "draws_total": int(queue.draws.sum()), "labels": labelled,
                              "confidence": confidence, "centre_mean": d["centre_mean"],
                              "expected_accuracy": d.get("expected_accuracy")})
    return section


def run_estimate(model: Any, pool: Any, *, labels: str | os.PathLike[str] | None = None,
                 queue: str | os.PathLike[str] | LabelQueue | None = None, simulate: bool = False,
                 settings: EstimateSettings | None = None, surrogate_probs: np.ndarray | None = None,
                 data_options: dict[str, Any] | None = None,
                 model_options: dict[str, Any] | None = None) -> EstimateRun:
    """The pool's accuracy and per-class accuracy from the labels of a queue (see the module docstring).

    ``labels``: the filled-in queue CSV; its design record is read from ``queue`` (a queue CSV path, or a
    :class:`LabelQueue`) when given, else from beside ``labels``. ``simulate``: draw a queue now (with
    ``settings``) and take its labels from the pool's own (the pool must have labels)."""
    settings = settings or EstimateSettings()
    started = time.perf_counter()
    if simulate == (labels is not None):
        raise OptionError("give either the filled-in queue (labels) or simulate (the pool's labels as the oracle)",
                          where="labels", fix="pass labels=QUEUE.csv after labelling, or simulate=True for a pool "
                          "with labels")
    loaded, dataset = _load(model, pool, data_options, model_options)
    notes: list[Finding] = []
    if simulate:
        if dataset.y is None:
            raise DataError("the pool has no labels to simulate the labeller with", where=dataset.source,
                            fix="draw a queue (--queue), label it, and pass it with --labels; or give a pool with "
                                "labels (e.g. an .npz with y)")
        queue_obj = queue if isinstance(queue, LabelQueue) else select_queue(
            loaded, dataset, settings, surrogate_probs=surrogate_probs)
        truth = dataset.y[queue_obj.rows]
        notes.append(Finding(severity="info", evidence="estimate", message=(
            f"simulated labelling: the pool's own labels of the {len(queue_obj.rows)} queued items stand in for a "
            "labeller (the other labels were not read)")))
    else:
        assert labels is not None
        queue_obj = queue if isinstance(queue, LabelQueue) else read_queue(queue if queue is not None else labels)
        _check_design(queue_obj, loaded, dataset)
        truth = read_queue_labels(labels, queue_obj, num_classes=loaded.info.num_classes,
                                  class_names=loaded.info.class_names)
    subset = dataset.subset(queue_obj.rows)
    predicted = _logits(loaded, subset, dataclasses.replace(settings, progress=False)).argmax(axis=1)
    recorded = queue_obj.predicted
    changed = int(((recorded >= 0) & (recorded != predicted)).sum())
    if changed:
        notes.append(Finding(severity="warning", evidence="estimate", message=(
            f"the model now predicts another class than when the queue was drawn for {changed} queued items "
            "(nondeterministic inference?); the estimate uses today's predictions")))
    correct = (predicted == truth).astype(np.float64)
    names = list(loaded.info.class_names)
    section = _section(queue_obj, correct, truth, names, settings.confidence, notes)
    from assay.evaluation.inputs import input_findings

    evidence = Evidence(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model=loaded.info,
        data=DataInfo(name=dataset.name, source=dataset.source, modality=dataset.modality,
                      fingerprint=dataset.fingerprint, n=len(dataset), num_classes=len(names), class_names=names,
                      input_shape=list(dataset.input_shape), metadata_columns=dataset.metadata_columns),
        environment=environment_info(),
        seed=int(queue_obj.design.get("seed", settings.seed)),
        config={"command": "estimate", **settings.record(), "simulate": bool(simulate),
                "labels": None if labels is None else os.fspath(labels),
                "queue": os.fspath(queue) if isinstance(queue, (str, os.PathLike)) else None,
                "pool_fingerprint": queue_obj.design["pool_fingerprint"]},
        timings={"total": round(time.perf_counter() - started, 4)},
        sections={"estimate": section},
        findings=input_findings({"pool": dataset}),
    )
    return EstimateRun(evidence=evidence, queue=queue_obj, labels=truth)


def write_estimate(run: EstimateRun, out: str | os.PathLike[str], force: bool = False, *,
                   inputs: Sequence[Path] = ()) -> Path:
    """Write the estimate bundle into ``out`` (kind ``estimate``): evidence.json, labelled.csv (the queued rows
    with their label, draws, probability, prediction and correctness), report.html, report.md."""
    import csv
    import io

    from assay.evidence.output import atomic_directory
    from assay.report import render_html, render_markdown

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["row", "id", "label", "draws", "probability"])
    for row, item, label, k, q in zip(run.queue.rows, run.queue.ids, run.labels, run.queue.draws, run.queue.q,
                                      strict=True):
        writer.writerow([int(row), str(item), int(label), int(k), f"{float(q):.10g}"])
    with atomic_directory(out, ESTIMATE_KIND, inputs=inputs, force=force) as tmp:
        (tmp / "evidence.json").write_text(run.evidence.model_dump_json(indent=2), encoding="utf-8")
        (tmp / "labelled.csv").write_text(buffer.getvalue(), encoding="utf-8")
        (tmp / "report.html").write_text(render_html(run.evidence, title="Assay accuracy estimate"), encoding="utf-8")
        (tmp / "report.md").write_text(render_markdown(run.evidence), encoding="utf-8")
    return Path(out)
