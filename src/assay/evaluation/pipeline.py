"""The evaluation pipeline: load and validate the inputs, let every check plan its forward passes, run the
engine once over all views (cached), run the checks over the cached outputs, assemble the Evidence.

Nothing here knows a particular check: each one declares its settings, what turns it on, and the views and
facts it needs (:class:`assay.checks.base.Check`); the pipeline only orders the work.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from assay.checks.base import Check, CheckContext, EvaluateConfig, PlanContext, Preparation
from assay.checks.registry import CHECKS, DEFAULT_CHECKS, get_check
from assay.data.dataset import Dataset
from assay.engine.backends import Backend, get_backend
from assay.engine.cache import OutputCache, default_cache_dir
from assay.engine.run import Outputs, run_views
from assay.engine.views import CleanView, View
from assay.environment import environment_info
from assay.errors import OptionError
from assay.evaluation.inputs import (
    align_classes,
    as_dataset,
    as_model,
    check_shapes,
    input_findings,
    labelled,
)
from assay.evidence.schema import DataInfo, Evidence, Finding, Section
from assay.models.base import Model
from assay.progress import scope as progress_scope

if TYPE_CHECKING:
    from assay.engine.budget import BudgetRun, BudgetTarget
    from assay.reference import Reference

__all__ = ["EvaluationRun", "resolve_checks", "run_evaluation"]


class EvaluationRun:
    """Everything an evaluation produced: the evidence, the cached outputs and the dataset."""

    def __init__(self, evidence: Evidence, outputs: Outputs, dataset: Dataset) -> None:
        self.evidence = evidence
        self.outputs = outputs
        self.dataset = dataset

    def reference(self) -> Reference:
        """What monitoring compares live traffic with (``reference.npz``; :class:`assay.reference.Reference`):
        confidences, class and prediction frequencies, ATC thresholds, histograms of the monitored features,
        and chunk statistics that calibrate drift thresholds."""
        from assay.reference import Reference

        return Reference.from_run(self)

    def predictions(self) -> dict[str, np.ndarray]:
        """Per-sample arrays for ``predictions.npz``: ids, labels, clean logits, and ``slice_<column>``
        group labels of every ``--slice-by``/``--sensitive`` column (so ``compare`` can test per slice)."""
        arrays = {"ids": self.dataset.ids, "logits": self.outputs.clean.logits}
        if self.dataset.y is not None:
            arrays["labels"] = self.dataset.y
        columns = [*self.evidence.config.get("slice_by", []), *self.evidence.config.get("sensitive", [])]
        if columns:
            from assay.checks.slices import slice_labels

            for column in dict.fromkeys(columns):
                arrays[f"slice_{column}"] = slice_labels(self.dataset.meta, column, "slice_by")
        return arrays


def resolve_checks(requested: Sequence[str], config: EvaluateConfig) -> list[Check]:
    """The checks a run executes: those requested, plus every check whose input was given (``--ood`` turns
    on the OOD check). Unknown names, and a requested check with nothing to evaluate, are OptionErrors."""
    unknown = [c for c in requested if c not in CHECKS]
    if unknown:
        raise OptionError(f"unknown check(s) {unknown}", where="checks", fix=f"choose from {', '.join(CHECKS)}")
    names = list(dict.fromkeys(requested))
    for name in CHECKS:
        check = get_check(name)
        given = check.wanted(config.check(name))
        if given and name not in names:
            names.append(name)
        if name in names and check.needs is not None and not given:
            raise OptionError(f"the {name} check has nothing to evaluate", where="checks",
                              fix=f"give its input ({check.needs}), or drop it from the checks")
    return [get_check(name) for name in names]


def run_evaluation(
    model: Model | str | os.PathLike[str],
    data: Dataset | str | os.PathLike[str],
    *,
    checks: Sequence[str] = DEFAULT_CHECKS,
    calibration_data: Dataset | str | os.PathLike[str] | None = None,
    config: EvaluateConfig | None = None,
    cache_dir: str | os.PathLike[str] | bool | None = True,
    backend: str | Backend = "local",
    progress: bool = False,
    model_options: dict[str, Any] | None = None,
    data_options: dict[str, Any] | None = None,
    ray_address: str | None = None,
    num_workers: int | None = None,
) -> EvaluationRun:
    """Evaluate ``model`` on labelled ``data`` and return the evidence with the outputs behind it.

    Order of work: every option and input is validated and every check plans its forward passes before
    the first one runs (a typo never costs an inference run); then the clean view (and the training and
    calibration data when given), the views that depend on the clean outputs (attacks), measurements
    (latency), and the checks over the cached outputs.

    ``backend``: ``local``, ``processes``, ``ray`` (with ``ray_address`` and ``num_workers``, see
    :func:`assay.engine.backends.get_backend`) or a Backend object, which the caller closes."""
    config = config or EvaluateConfig()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    selected = resolve_checks(checks, config)
    budget, budgeted = None, frozenset[str]()
    if config.budget is not None:  # parsed, and the checks it replaces named, before any inference
        from assay.checks.budget import budget_plan

        budget, budgeted = budget_plan(config.budget, [c.name for c in selected])
    cache = OutputCache(default_cache_dir() if cache_dir is True else cache_dir or None)
    if not isinstance(backend, str) and (ray_address is not None or num_workers is not None):
        raise OptionError("ray_address and num_workers go with a backend name, not a Backend object",
                          where="backend", fix="give backend='ray' (or 'processes'), or set them on the Backend")
    engine_backend = (get_backend(backend, address=ray_address, workers=num_workers) if isinstance(backend, str)
                      else backend)

    t = time.perf_counter()
    data_options = data_options or {}
    dataset = labelled(as_dataset(data, data_options), "evaluation data",
                       "give labelled data (NPZ key 'y', a label column, or class folders); unlabeled data goes "
                       "to --unlabeled, which estimates its accuracy from the labelled set")
    model_obj = as_model(model, dataset.x[:2], dataset.class_names, model_options or {})
    check_shapes(model_obj, dataset, "data")
    dataset, found = align_classes(model_obj, dataset, "data")
    findings: list[Finding] = list(found)
    dataset.validate_labels(model_obj.info.num_classes)

    def load_related(spec: Any, role: str, fix: str) -> Dataset:
        """A further labelled set (calibration, training), checked and aligned like the evaluation data."""
        other = labelled(as_dataset(spec, data_options), role, fix)
        check_shapes(model_obj, other, role)
        other, found = align_classes(model_obj, other, role)
        findings.extend(found)
        other.validate_labels(model_obj.info.num_classes)
        return other

    calibration = None if calibration_data is None else load_related(
        calibration_data, "calibration data", "temperature scaling is fitted on labelled data")
    train = None if config.train_data is None else load_related(
        config.train_data, "training data", "give labelled training data (NPZ with y, a labelled image folder or "
        "table): class-conditional detectors need labels")

    def load_inputs(spec: str, what: str) -> Dataset:
        """A further input set (OOD, unlabeled), loaded like --data (its own classes, if any), shape-checked."""
        other = as_dataset(spec, {k: v for k, v in data_options.items() if k != "class_names"})
        check_shapes(model_obj, other, what)
        return other

    plan = PlanContext(model=model_obj, dataset=dataset, config=config, train=train, load_inputs=load_inputs)
    prepared: dict[str, Preparation] = {c.name: c.prepare(plan, config.check(c.name)) for c in selected}
    timings["load"] = time.perf_counter() - t

    t = time.perf_counter()
    features = any(p.features for name, p in prepared.items() if name not in budgeted)

    def run(dataset_: Dataset, views: list[View], keep_features: bool = False) -> Outputs:
        return run_views(model_obj, dataset_, views, cache_dir=cache, batch_size=config.batch_size,
                         backend=engine_backend, progress=progress, keep_features=keep_features)

    try:
        outputs = run(dataset, [CleanView()], keep_features=features)
        clean_seconds = time.perf_counter() - t
        facts: dict[str, Any] = {name: p.facts for name, p in prepared.items() if p.facts is not None}
        if train is not None and any(p.train_outputs for name, p in prepared.items() if name not in budgeted):
            facts["train_outputs"] = run(train, [CleanView()], keep_features=features).clean
        planned: dict[bool, list[View]] = {True: [], False: []}  # by whether the check reads their features
        sampled_views: list[View] = []  # views of the checks a budget replaces: sampled, not run in full
        for name, p in prepared.items():
            group = sampled_views if name in budgeted else planned[p.features]
            group += p.views
            if p.after_clean is not None:
                late_views, late_facts = p.after_clean(outputs.clean)
                group += late_views
                if late_facts is not None:
                    facts[name] = late_facts
        for keep, group in planned.items():
            if group:
                outputs.absorb(run(dataset, group, keep_features=keep))
        budget_run: BudgetRun | None = None
        targets: list[BudgetTarget] = []
        if budget is not None:
            from assay.checks.budget import budget_targets
            from assay.engine.budget import run_budgeted

            tb = time.perf_counter()
            targets = budget_targets(sampled_views, dataset, outputs.clean.logits)
            # The clean view ran in full: its passes (one per row) and seconds count against the budget.
            budget_run = run_budgeted(model_obj, dataset, targets, budget, objective=config.budget_objective,
                                      confidence=config.confidence, seed=config.seed, batch_size=config.batch_size,
                                      backend=engine_backend, progress=progress, spent_seconds=clean_seconds,
                                      spent_passes=float(len(dataset)))
            timings["inference:budget"] = time.perf_counter() - tb
        views = [*planned[True], *planned[False]]
        calib_pair = None
        if calibration is not None:
            calib_out = run(calibration, [CleanView()])
            outputs.forward_batches += calib_out.forward_batches
            outputs.cache_hits += calib_out.cache_hits
            assert calibration.y is not None  # labelled() refused unlabelled calibration data
            calib_pair = (calib_out.clean.logits, calibration.y)
        for name, p in prepared.items():
            if p.measure is not None and name not in budgeted:
                with progress_scope(progress):  # profiling shows its timing runs as the inference does
                    facts[name] = p.measure()
    finally:
        if isinstance(backend, str):  # a backend this call made (worker processes) ends with it
            engine_backend.close()
    timings["inference"] = time.perf_counter() - t
    timings["inference:perturbation"] = outputs.transform_seconds
    timings["inference:forward"] = outputs.forward_seconds

    ctx = CheckContext(outputs=outputs, dataset=dataset, config=config, calibration=calib_pair,
                       views={v.spec.name: v for v in views}, facts=facts, train=train)
    sections: dict[str, Section] = {}
    for check in selected:
        t = time.perf_counter()
        if check.name in budgeted:  # one budget section, where the first check it replaces would stand
            if budget_run is not None and "budget" not in sections:
                from assay.checks.budget import budget_section

                sections["budget"] = budget_section(budget_run, targets, replace(
                    ctx, views={v.spec.name: v for v in sampled_views}))
                timings["check:budget"] = time.perf_counter() - t
            continue
        sections[check.name] = check.run(ctx)
        timings[f"check:{check.name}"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - started

    findings = input_findings({"data": dataset, "calibration data": calibration, "training data": train}) + findings
    if model_obj.info.untrained:
        findings.append(Finding(severity="warning", evidence="model", message=(
            "the model was evaluated untrained: a factory built without weights (--untrained), so every number "
            "describes its random initial weights")))
    findings += [Finding(severity="warning", message=note) for note in outputs.notes]
    evidence = Evidence(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model=model_obj.info,
        data=DataInfo(
            name=dataset.name, source=dataset.source, modality=dataset.modality, fingerprint=dataset.fingerprint,
            n=len(dataset), num_classes=model_obj.info.num_classes,
            class_names=dataset.class_names or model_obj.info.class_names, input_shape=list(dataset.input_shape),
            metadata_columns=dataset.metadata_columns,
        ),
        environment=environment_info(),
        seed=config.seed,
        config={**config.record(), "checks": [c.name for c in selected], "backend": engine_backend.name,
                "calibration_data": None if calibration is None else calibration.source,
                "cache": {"dir": None if cache.directory is None else str(cache.directory),
                          "hits": outputs.cache_hits, "forward_batches": outputs.forward_batches}},
        timings={k: round(v, 4) for k, v in timings.items()},
        sections=sections,
        findings=findings,
    )
    return EvaluationRun(evidence, outputs, dataset)
