"""``assay compress``: build variants, audit each against the original through the same engine and suite,
profile them on this machine, and recommend the fastest one that keeps accuracy and every class.

The damage audit is the compare gate with two rules: ``accuracy: {max_drop}`` and
``per_class_accuracy: {max_drop}`` on paired statistics. A variant is recommended only when the accuracy
rule *passes* (the paired CI shows the drop is within the limit; inconclusive is not enough), no class is
shown to drop beyond the class limit and the worst class's point drop is within it, and it is faster than
the original at the ranking batch size: p50 CIs apart and at least ``MIN_SPEEDUP``, in a head-to-head
timing where the original and the variants are timed in alternating rounds
(:func:`~assay.profiling.latency.interleaved_latency`).
For an ONNX original the fp32 reference (the same model) is a negative control: variants must beat the
faster of the two, and a gap between them beyond the margin is reported as timing noise. A slower variant is never
recommended; the report says why it is slow (ConvInteger, fp16 without hardware support, pruning that removed no
compute).

Bad input that concerns the whole run (an unknown method, no labelled data, static int8 without
calibration data) is refused before any work. A failure of one variant (it cannot be built, loaded,
evaluated or timed) does not stop the others: that variant gets status ``failed`` and the verdict
``failed: <reason>``, is never recommended, and is listed in every output.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assay.compare.gate import Comparison, Side, compare_sides
from assay.compare.policy import Policy, Rule
from assay.compare.select import pareto_front, worst_class_accuracy
from assay.data.dataset import Dataset
from assay.errors import DataError, OptionError
from assay.profiling.latency import interleaved_latency
from assay.progress import track

__all__ = ["CompressionResult", "VariantAudit", "compress"]

MAX_EXEMPLARS_SHOWN = 24
#: A variant must be at least this much faster (p50 ratio) to count as faster, besides non-overlapping CIs.
MIN_SPEEDUP = 1.1


@dataclass
class VariantAudit:
    """One variant: how it was built, what it damaged (vs the original), what it costs here."""

    name: str
    method: str
    path: Path | None
    notes: list[str]
    evidence: Any = None
    comparison: Comparison | None = None
    profile: Any = None
    # indices of the samples whose prediction differs from the original's
    changed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    predictions: np.ndarray | None = None  # the variant's predicted class per sample
    error: str | None = None  # why the variant failed (built, loaded, evaluated or timed); None when it did not
    run: Any = None  # its EvaluationRun (the chosen variant's evidence bundle is written from it)
    original_evidence: Any = None  # the original's evidence (for unpaired section deltas)
    head_to_head: dict[int, float] = field(default_factory=dict)  # p50 ms from the interleaved timing
    suspect: bool = False  # measured faster without a mechanism (e.g. fp16 with no hardware fp16)
    speedup: dict[int, float] = field(default_factory=dict)
    faster: bool = False
    slow_reasons: list[str] = field(default_factory=list)
    feasible: bool = False
    status: str = ""  # recommended / eligible / slower / not faster / suspect / damaged / damage unclear / reference
    #                   / failed
    verdict: str = ""

    @property
    def failed(self) -> bool:
        return self.error is not None

    def fail(self, reason: str) -> None:
        """Mark the variant failed: never faster, never feasible, never recommended."""
        self.error, self.status, self.verdict = reason, "failed", f"failed: {reason}"
        self.faster = self.feasible = self.suspect = False

    def row(self) -> dict[str, Any]:
        if self.comparison is None or self.profile is None or self.evidence is None:
            return self._failed_row()
        m = self.comparison.metrics
        rules = {r.metric: r for r in self.comparison.rules}
        worst = min(self.comparison.per_class, key=lambda r: r["delta"]) if self.comparison.per_class else None
        slices = [{**r, "group": f"{col}={r['group']}"} for col, rs in self.comparison.per_slice.items() for r in rs
                  if not r["insufficient"]]
        worst_slice = min(slices, key=lambda r: r["delta"]) if slices else None
        acc = self.evidence.sections["performance"].metrics["accuracy"].value
        lat = {b: s["p50_ms"] for b, s in _latency(self.profile).items()}
        return {
            "variant": self.name, "method": self.method, "accuracy": acc,
            "accuracy_delta": m["accuracy_delta"].value, "accuracy_delta_ci": [m["accuracy_delta"].ci_low,
                                                                               m["accuracy_delta"].ci_high],
            "worst_class": worst["group"] if worst else None, "worst_class_delta": worst["delta"] if worst else None,
            "worst_class_accuracy": worst_class_accuracy(self.evidence),
            "negative_flip_rate": m["negative_flip_rate"].value, "changed_predictions": len(self.changed),
            "ece_delta": m["ece_delta"].value, "ece_after_temperature": _metric(self.evidence, "calibration",
                                                                                "ece_after_temperature"),
            "ece_after_temperature_delta": _delta(self.evidence, self.original_evidence, "calibration",
                                                  "ece_after_temperature"),
            "mean_corruption_accuracy": _metric(self.evidence, "corruption", "mean_corruption_accuracy"),
            "mean_corruption_accuracy_delta": _delta(self.evidence, self.original_evidence, "corruption",
                                                     "mean_corruption_accuracy"),
            "worst_slice": worst_slice["group"] if worst_slice else None,
            "worst_slice_delta": worst_slice["delta"] if worst_slice else None,
            "accuracy_rule": rules["accuracy"].status, "class_rule": rules["per_class_accuracy"].status,
            **{f"p50_ms[batch={b}]": v for b, v in lat.items()},
            **{f"head_to_head_p50_ms[batch={b}]": v for b, v in self.head_to_head.items()},
            **{f"speedup[batch={b}]": v for b, v in self.speedup.items()},
            "size_mb": self.profile.model_size_mb, "flops": self.profile.flops,
            "faster": self.faster, "feasible": self.feasible, "status": self.status, "verdict": self.verdict,
            "slow_reasons": self.slow_reasons, "notes": self.notes, "error": self.error,
        }

    def _failed_row(self) -> dict[str, Any]:
        """The row of a variant that never got (fully) audited: its name, status and reason; no numbers."""
        empty = ("accuracy", "accuracy_delta", "worst_class", "worst_class_delta", "worst_class_accuracy",
                 "negative_flip_rate", "ece_delta", "ece_after_temperature", "ece_after_temperature_delta",
                 "mean_corruption_accuracy", "mean_corruption_accuracy_delta", "worst_slice", "worst_slice_delta",
                 "accuracy_rule", "class_rule", "size_mb", "flops")
        return {"variant": self.name, "method": self.method, **dict.fromkeys(empty),
                "accuracy_delta_ci": [None, None], "changed_predictions": len(self.changed),
                "faster": False, "feasible": False, "status": self.status or "failed",
                "verdict": self.verdict or f"failed: {self.error}", "slow_reasons": [], "notes": self.notes,
                "error": self.error}


@dataclass
class CompressionResult:
    original: dict[str, Any]
    variants: list[VariantAudit]
    recommended: str | None
    reasons: list[str]
    ranking_batch: int
    limits: dict[str, float]

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [v.row() for v in self.variants]

    def as_dict(self) -> dict[str, Any]:
        return {"original": self.original, "recommended": self.recommended, "reasons": self.reasons,
                "ranking_batch": self.ranking_batch, "limits": self.limits, "variants": self.rows,
                "exemplars": {v.name: [int(i) for i in v.changed] for v in self.variants}}


# ------------------------------------------------------------------------------------------- helpers


def _metric(evidence: Any, section: str, key: str) -> float | None:
    metric = evidence.metric(section, key) if evidence is not None else None
    return None if metric is None else metric.value


def _delta(evidence: Any, original: Any, section: str, key: str) -> float | None:
    """Variant minus original of a section metric (None when either lacks it)."""
    a, b = _metric(original, section, key), _metric(evidence, section, key)
    return None if a is None or b is None else b - a


def _latency(profile: Any) -> dict[int, dict[str, float]]:
    """{batch: {"p50_ms", "p50_ci_low", "p50_ci_high"}} from an EfficiencyProfile."""
    out = {}
    for stats in profile.latency.batches:
        lo = stats.p50_ci_low_ms if stats.p50_ci_low_ms is not None else stats.p50_ms
        hi = stats.p50_ci_high_ms if stats.p50_ci_high_ms is not None else stats.p50_ms
        out[int(stats.batch_size)] = {"p50_ms": stats.p50_ms, "p50_ci_low": lo, "p50_ci_high": hi}
    return out


def _check_limit(value: float, name: str) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
        raise OptionError(f"{name} must be a fraction in [0, 1), got {value!r}", where=name,
                        fix="give the largest tolerable drop as a fraction, e.g. 0.01 for one accuracy point")


def _side_of(run: Any, name: str, path: str) -> Side:
    return Side(name=name, evidence=run.evidence, predictions=run.predictions(), path=path)


def _judge(audit: VariantAudit, head: dict[str, Any], base_lat: dict[int, dict[str, float]],
           base_flops: float | None, rank_batch: int, max_class_drop: float, isa: list[str],
           reference_only: bool) -> None:
    """Speed-ups, faster / feasible, status and verdict of one audited variant. ``head``: the interleaved
    head-to-head timings at the ranking batch (which decide "faster"); ``base_lat``: the original's profile."""
    from assay.compress.diagnose import explain_pruning, explain_slowdown

    # Only audits that did not fail are judged: each was built (has its file) and compared with the original.
    assert audit.path is not None and audit.comparison is not None
    lat = _latency(audit.profile)
    audit.speedup = {b: base_lat[b]["p50_ms"] / lat[b]["p50_ms"] for b in base_lat if lat[b]["p50_ms"] > 0}
    ours, theirs = head[audit.name], head["original"]
    audit.head_to_head = {rank_batch: ours.p50_ms}
    audit.speedup[rank_batch] = theirs.p50_ms / ours.p50_ms
    ours_hi = ours.p50_ci_high_ms if ours.p50_ci_high_ms is not None else ours.p50_ms
    theirs_lo = theirs.p50_ci_low_ms if theirs.p50_ci_low_ms is not None else theirs.p50_ms
    # Faster = p50 CIs apart AND a practical margin.
    audit.faster = ours_hi < theirs_lo and audit.speedup[rank_batch] >= MIN_SPEEDUP
    structural = explain_slowdown(audit.path, isa_flags=isa)
    if audit.faster and structural and not audit.name.startswith("pruned"):
        # Measured faster, yet the graph says it computes the same or more (fp16 without hardware fp16,
        # ConvInteger, ...): the gain has no mechanism and is treated as a threading/timing artefact.
        audit.faster, audit.suspect = False, True
    if not audit.faster:
        audit.slow_reasons = structural
        if audit.name.startswith("pruned"):
            # Pruning needs the eager torch module, whose FLOPs profile_model always counts on the sample.
            assert base_flops is not None
            audit.slow_reasons += explain_pruning(base_flops, audit.profile.flops)
        if not audit.slow_reasons:
            audit.slow_reasons = ["no graph-level cause found; the variant simply does not run faster here"]
    statuses = {r.metric: r.status for r in audit.comparison.rules}
    worst_delta = min((r["delta"] for r in audit.comparison.per_class), default=0.0)
    # Accuracy: the paired CI must show the drop is within the limit. Classes: no class may be shown to drop
    # beyond the limit, and the worst class's point drop must be within it (with ~50 samples per class a CI
    # can rarely *prove* a 3-point bound, so requiring that would recommend nothing).
    audit.feasible = (statuses["accuracy"] == "pass" and statuses["per_class_accuracy"] != "fail"
                      and worst_delta >= -max_class_drop)
    speed = audit.speedup.get(rank_batch, float("nan"))
    if reference_only:
        audit.status, audit.feasible = "reference", False
        audit.verdict = f"the fp32 reference export of an ONNX original (same model; {speed:.2f}x measured)"
    elif audit.suspect:
        audit.status = "suspect"
        audit.verdict = (f"not recommended: measured {speed:.2f}x faster at batch {rank_batch}, but the graph gives "
                         "no reason to be (see the causes listed); treated as a timing artefact")
    elif not audit.faster:
        audit.status = "slower" if speed < 1 else "not faster"
        audit.verdict = f"not recommended: not faster than the original at batch {rank_batch} ({speed:.2f}x)"
    elif not audit.feasible:
        audit.status = "damaged" if "fail" in statuses.values() or worst_delta < -max_class_drop else "damage unclear"
        failing = [f"{r.metric} {r.status}" for r in audit.comparison.rules if r.status != "pass"]
        audit.verdict = (f"not recommended: {audit.status} ({', '.join(failing) or 'worst class'}; worst class "
                         f"{worst_delta:+.3f})")
    else:
        audit.status = "eligible"
        audit.verdict = f"eligible: {speed:.2f}x faster at batch {rank_batch}"


# ------------------------------------------------------------------------------------------- compress


def compress(
    model: str,
    data: Dataset | str,
    *,
    calibration: Dataset | str | None = None,
    methods: list[str] | None = None,
    out: str | os.PathLike[str] | None = "assay-compress",
    prune_ratios: list[float] | None = None,
    train_data: Dataset | str | None = None,
    finetune_epochs: int = 0,
    max_accuracy_drop: float = 0.01,
    max_class_drop: float = 0.03,
    batch_sizes: tuple[int, ...] = (1, 32),
    ranking_batch: int | None = None,
    latency_budget_s: float = 5.0,
    threads: int | None = None,
    suite: str | None = None,
    slice_by: list[str] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    cache_dir: Any = True,
    progress: bool = False,
    model_options: dict[str, Any] | None = None,
    data_options: dict[str, Any] | None = None,
    backend: str = "local",
    ray_address: str | None = None,
    num_workers: int | None = None,
    force: bool = False,
) -> CompressionResult:
    """Build, audit, profile and rank compressed variants of ``model`` (see the module docstring).

    With ``out`` the variants end in ``out/variants/`` (and ``VariantAudit.path`` points there); with
    ``out=None`` their working files are deleted on return. ``out`` is checked first: it replaces only an
    Assay compression output (``force``: any Assay output), never a folder holding other files or an input.
    ``backend``, ``ray_address``, ``num_workers``: where the damage audits' forward passes run (one backend for
    the original and every variant; the timing runs stay on this machine)."""
    from assay.checks.base import EvaluateConfig
    from assay.compress.variants import (
        describe_error,
        make_variants,
        missing_calibration_error,
        needs_calibration,
        parse_methods,
    )
    from assay.engine.backends import get_backend
    from assay.engine.planning import apply_suite
    from assay.environment import cpu_model_and_flags
    from assay.evaluation import as_dataset, run_evaluation
    from assay.evidence.output import check_output, input_paths
    from assay.models.loader import load_model
    from assay.profiling.profile import profile_model

    _check_limit(max_accuracy_drop, "max_accuracy_drop")
    _check_limit(max_class_drop, "max_class_drop")
    methods = parse_methods(list(methods or ["int8-static", "int8-dynamic", "fp16"]))  # unknown names fail here
    engine_backend = get_backend(backend, address=ray_address, workers=num_workers)  # holds nothing until it runs
    batch_sizes = tuple(sorted({int(b) for b in batch_sizes}))
    if not batch_sizes or min(batch_sizes) < 1:
        raise OptionError(f"batch sizes must be positive integers, got {batch_sizes}", where="batch_sizes",
                        fix="e.g. --latency-batch-sizes 1,32 (batch_sizes=(1, 32) in Python)")
    rank_batch = int(ranking_batch or max(batch_sizes))
    if rank_batch not in batch_sizes:
        raise OptionError(f"the ranking batch size {rank_batch} is not profiled", where="ranking_batch",
                        fix=f"use one of {', '.join(map(str, batch_sizes))} or add it to the profiled batch sizes "
                            "(--latency-batch-sizes)")
    calibrate = needs_calibration(methods)
    if calibrate and calibration is None and train_data is None:  # before any data is read
        raise missing_calibration_error(methods)
    inputs = input_paths(model, data, calibration, train_data, (model_options or {}).get("weights"),
                         cache_dir=cache_dir)
    if out is not None:  # a bad output path fails before any variant is built
        check_output(out, "compress", inputs=inputs, force=force)
    dataset = as_dataset(data, data_options or {})
    if dataset.y is None:
        raise DataError("the evaluation data has no labels", where="data",
                        fix="the damage audit compares accuracy per class: give labelled data")
    train = as_dataset(train_data, data_options or {}) if train_data is not None else None
    notes: list[str] = []
    calib: Dataset | None = None
    if not calibrate:
        if calibration is not None:
            notes.append("the quantization data (--quantization-data, calibration=) was not used: only the int8-static "
                         "methods calibrate")
    elif calibration is not None:
        calib = as_dataset(calibration, data_options or {})
    else:
        calib, notes = train, ["quantization calibrated on the training data (--train-data): no quantization data "
                                "(--quantization-data, calibration=) was given"]
    if calib is not None and calib.fingerprint == dataset.fingerprint:
        notes.append("the calibration set is the evaluation set: int8 ranges were fitted on the audited samples")
    # The data's class names, as evaluate gives them: the damage tables, console and exemplars name classes,
    # not output indices.
    original = load_model(str(model), sample=dataset.x[:2], class_names=dataset.class_names,
                          **{**(model_options or {}), **({"threads": threads} if threads else {})})
    if calib is not None and tuple(np.asarray(calib.x).shape[1:]) != tuple(np.asarray(dataset.x).shape[1:]):
        raise DataError(f"the calibration inputs have shape {tuple(np.asarray(calib.x).shape[1:])} per sample, "
                        f"the evaluation inputs {tuple(np.asarray(dataset.x).shape[1:])}", where="calibration",
                        fix="give calibration data in the model's input layout (same preprocessing as --data)")
    config = EvaluateConfig(seed=seed, n_bootstrap=n_bootstrap, confidence=confidence, slice_by=list(slice_by or []),
                            **apply_suite(suite, {}))
    _model, isa = cpu_model_and_flags()
    sample = np.asarray(dataset.x[: max(batch_sizes)])
    policy = Policy(rules=(Rule("accuracy", "max_drop", max_accuracy_drop),
                           Rule("per_class_accuracy", "max_drop", max_class_drop)),
                    confidence=confidence, source="compress limits")

    work = Path(tempfile.mkdtemp(prefix="assay-compress-"))
    try:
        variants = make_variants(original, calib, methods, out_dir=work / "variants",
                                 prune_ratios=prune_ratios or [0.5], train_data=train, finetune_epochs=finetune_epochs,
                                 seed=seed, example=dataset.x[:2], keep_going=True, progress=progress)
        base_run = run_evaluation(original, dataset, config=config, cache_dir=cache_dir, progress=progress,
                                  backend=engine_backend)
        base_side = _side_of(base_run, "original", str(model))
        base_path = str(model) if Path(str(model)).is_file() else None
        base_profile = profile_model(original, sample, batch_sizes=batch_sizes, budget_s=latency_budget_s,
                                     model_path=base_path, threads=threads, progress=progress)
        base_flops = base_profile.flops
        audits: list[VariantAudit] = []
        timed: dict[str, Any] = {"original": original}
        for variant in track(variants, "auditing variants", unit="variants", enabled=progress, label=lambda v: v.name):
            vnotes = list(variant.notes)
            if variant.name.startswith("int8-dynamic"):
                vnotes.append("dynamic quantization computes activation scales per batch: a sample's prediction can "
                              "depend on the other samples in its batch (the audit used the engine's batches)")
            audit = VariantAudit(name=variant.name, method=variant.method, path=variant.path, notes=vnotes,
                                 original_evidence=base_run.evidence)
            audits.append(audit)
            if variant.error is not None:
                audit.fail(variant.error)
                continue
            stage = "loading"
            try:  # one variant's failure is reported in its row; the others go on
                vmodel = load_model(str(variant.path), sample=dataset.x[:2], threads=threads or None,
                                    class_names=dataset.class_names)
                stage = "evaluating"
                audit.run = run_evaluation(vmodel, dataset, config=config, cache_dir=cache_dir, progress=progress,
                                           backend=engine_backend)
                audit.evidence = audit.run.evidence
                audit.comparison = compare_sides(base_side, _side_of(audit.run, variant.name, str(variant.path)),
                                                 policy, n_bootstrap=n_bootstrap, seed=seed)
                audit.predictions = audit.run.outputs.clean.logits.argmax(1)
                audit.changed = np.flatnonzero(base_run.outputs.clean.logits.argmax(1) != audit.predictions)
                stage = "timing"
                audit.profile = profile_model(vmodel, sample, batch_sizes=batch_sizes, budget_s=latency_budget_s,
                                              model_path=str(variant.path), threads=threads, progress=progress)
            except Exception as exc:
                audit.fail(f"{stage} the {variant.name} variant failed: {describe_error(exc)}")
                continue
            timed[variant.name] = vmodel
        timing_failures: dict[str, str] = {}
        head = interleaved_latency(timed, sample[:rank_batch], rank_batch, budget_s=latency_budget_s * len(timed),
                                   confidence=confidence, failures=timing_failures, progress=progress)
        if "original" in timing_failures:
            raise RuntimeError(f"timing the original failed: {timing_failures['original']}")
        for audit in audits:
            if audit.name in timing_failures:
                audit.fail(f"timing the {audit.name} variant failed: {timing_failures[audit.name]}")
        base_lat = _latency(base_profile)
        # The fp32 reference of an ONNX original is a copy of the original itself.
        same_format = any(v.name == "fp32" and v.copy_of_original for v in variants)
        if same_format and "fp32" in head:
            # Negative control: the fp32 reference of an ONNX original is the same model, so any speed
            # difference between the two is timing noise. Variants must beat the faster of the two.
            control = head["original"].p50_ms / head["fp32"].p50_ms
            if abs(control - 1.0) > MIN_SPEEDUP - 1.0:
                notes.append(f"timing noise: the fp32 copy of the original measured {control:.2f}x the original's "
                             f"speed in the same interleaved rounds; speed-ups are judged against the faster of "
                             "the two")
            if head["fp32"].p50_ms < head["original"].p50_ms:
                head = {**head, "original": head["fp32"]}
        for audit in audits:
            if not audit.failed:
                _judge(audit, head, base_lat, base_flops, rank_batch, max_class_drop, list(isa),
                       reference_only=same_format and audit.name == "fp32")
        eligible = [a for a in audits if a.faster and a.feasible and not a.failed]
        reasons = list(notes)
        pick = None
        if eligible:
            pick = max(eligible, key=lambda a: a.speedup[rank_batch])
            pick.status = "recommended"
            reasons.insert(0, f"{pick.name} is the fastest variant ({pick.speedup[rank_batch]:.2f}x at batch "
                              f"{rank_batch}) whose accuracy drop is within {max_accuracy_drop:g} at "
                              f"{int(confidence * 100)}% confidence (paired CI) and whose worst class drops by at "
                              f"most {max_class_drop:g}, none significantly beyond it")
        else:
            reasons.insert(0, "no variant is both faster than the original and within the accuracy and per-class "
                              "limits: keep the original")
        result = CompressionResult(
            original={"model": str(model), "accuracy": _metric(base_run.evidence, "performance", "accuracy"),
                      "worst_class_accuracy": worst_class_accuracy(base_run.evidence),
                      **{f"p50_ms[batch={b}]": base_lat[b]["p50_ms"] for b in batch_sizes},
                      f"head_to_head_p50_ms[batch={rank_batch}]": head["original"].p50_ms,
                      "size_mb": base_profile.model_size_mb, "flops": base_flops},
            variants=audits, recommended=pick.name if pick else None, reasons=reasons, ranking_batch=rank_batch,
            limits={"max_accuracy_drop": max_accuracy_drop, "max_class_drop": max_class_drop,
                    "confidence": confidence})
        if out is not None:
            _write(result, Path(out), dataset, base_run, pick, inputs=inputs, force=force)
            for audit in audits:  # the working copies are deleted below; point at the written ones
                if audit.path is not None and audit.path.is_file():
                    audit.path = Path(out) / "variants" / f"{audit.name}.onnx"
        return result
    finally:
        engine_backend.close()
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------------------- outputs


def pareto_plots(result: CompressionResult) -> dict[str, dict[str, Any]]:
    """Latency vs accuracy and latency vs worst-class accuracy, original included, fronts highlighted."""
    b = result.ranking_batch
    audited = [a for a in result.variants if not a.failed]
    names = ["original", *[a.name for a in audited]]
    key = f"head_to_head_p50_ms[batch={b}]"  # the interleaved timing that decided "faster"
    lat = [result.original[key], *[a.row()[key] for a in audited]]
    plots = {}
    for key, label in (("accuracy", "accuracy"), ("worst_class_accuracy", "worst-class accuracy")):
        values = [result.original[key], *[a.row()[key] for a in audited]]
        y = np.array([np.nan if v is None else v for v in values], float)
        front = pareto_front(np.array(lat, float), y).tolist()
        plots[f"pareto_{key}"] = {
            "kind": "scatter", "title": f"p50 latency (batch {b}) vs {label}; Pareto front highlighted",
            "xlabel": f"p50 latency, ms (batch {b})", "ylabel": label, "front": front,
            "series": [{"label": "variants", "x": lat, "y": y.tolist(), "text": names}]}
    return plots


def exemplar_rows(result: CompressionResult, dataset: Dataset, base_pred: np.ndarray,
                  names: list[str]) -> list[dict[str, Any]]:
    """Thumbnail rows (images only) of the compression-identified exemplars of each variant: the samples
    whose prediction changed (Hooker et al. 2019), first ``MAX_EXEMPLARS_SHOWN`` of each."""
    from assay.report.thumbnails import png_thumbnail

    if dataset.modality != "image":
        return []
    rows = []
    for audit in result.variants:
        pick = audit.changed[:MAX_EXEMPLARS_SHOWN]
        if len(pick) and audit.predictions is not None:
            assert dataset.y is not None  # compress() audits labelled data only
            rows.append({"label": f"{audit.name} ({len(audit.changed)} changed)",
                         "images": [png_thumbnail(dataset.x[i]) for i in pick],
                         "captions": [f"{dataset.ids[i]}: {names[dataset.y[i]]} / {names[base_pred[i]]}→"
                                      f"{names[audit.predictions[i]]}" for i in pick]})
    return rows


def _write(result: CompressionResult, out: Path, dataset: Dataset, base_run: Any, pick: VariantAudit | None, *,
           inputs: list[Path], force: bool) -> None:
    """compression.json/.md, report.html, exemplars.csv, variants/*.onnx, and the pick as model.onnx with
    its evidence bundle in evidence/ -- all or nothing (atomic directory)."""
    from assay.evaluation import write_evaluation
    from assay.evidence.bundle import atomic_directory
    from assay.report.compression import render_compression_html, render_compression_markdown

    base_pred = base_run.outputs.clean.logits.argmax(1)
    names = base_run.evidence.model.class_names
    assert dataset.y is not None  # compress() refuses unlabelled data before anything is audited
    with atomic_directory(out, "compress", inputs=inputs, force=force) as tmp:
        (tmp / "compression.json").write_text(json.dumps(result.as_dict(), indent=2, default=_json_default),
                                              encoding="utf-8")
        (tmp / "compression.md").write_text(render_compression_markdown(result), encoding="utf-8")
        (tmp / "report.html").write_text(
            render_compression_html(result, base_run.evidence, exemplar_rows(result, dataset, base_pred, names),
                                    plots=pareto_plots(result)),
            encoding="utf-8")
        lines = ["variant,id,label,original_prediction,variant_prediction"]
        for audit in result.variants:
            if audit.predictions is not None:
                lines += [f"{audit.name},{dataset.ids[i]},{names[dataset.y[i]]},{names[base_pred[i]]},"
                          f"{names[audit.predictions[i]]}" for i in audit.changed]
        (tmp / "exemplars.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (tmp / "variants").mkdir()
        for audit in result.variants:  # a variant that failed after it was built keeps its file, for inspection
            if audit.path is not None and audit.path.is_file():
                shutil.copyfile(audit.path, tmp / "variants" / f"{audit.name}.onnx")
        if pick is not None:
            assert pick.path is not None  # the pick was built, compared and timed: it has its file
            shutil.copyfile(pick.path, tmp / "model.onnx")
            write_evaluation(pick.run, tmp / "evidence")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
