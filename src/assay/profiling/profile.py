"""What a model costs on this machine: ``profile_model`` -> :class:`EfficiencyProfile`.

Latency per batch size (:mod:`assay.profiling.latency`), size on disk (the files the model is made of,
``Model.model_files()``: ONNX external data included, a factory's weights only), parameters and FLOPs per
sample (``Model.parameter_count()``, ``Model.flop_count()``: :mod:`assay.models.flops`), peak memory in a
fresh process that loads the model from its spec (:mod:`assay.profiling.memory`), CPU model and ISA
flags, energy per 1,000 inferences (:mod:`assay.profiling.energy`) and, given the machine's price, the
cost per million inferences. Threads are set through ``Model.set_threads()``. Nothing here branches on
the model's format: each format answers for itself.

Sizes are in MB of 2**20 bytes (MiB), as elsewhere in Assay.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from assay.errors import UserError
from assay.models.base import Model
from assay.models.flops import FlopCount
from assay.models.formats import ModelFiles, format_for_file
from assay.models.spec import ModelSpec
from assay.profiling.energy import EnergyEstimate, energy_per_1000, measure_energy, rapl_available
from assay.profiling.latency import LatencyProfile, make_batch, measure_latency
from assay.profiling.memory import peak_rss_subprocess
from assay.progress import stage

__all__ = ["EfficiencyProfile", "model_file_size", "profile_model"]

MB = 2**20


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class EfficiencyProfile(_Model):
    """What a model costs on this machine: latency, size, parameters, FLOPs, memory, energy, money."""

    model_path: str | None
    model_format: str | None
    latency: LatencyProfile
    threads: int | None
    threads_source: str
    model_size_mb: float | None
    model_files: list[str] = Field(default_factory=list)
    model_size_note: str
    parameters: int | None
    parameters_convention: str
    flops: int | None = Field(description="FLOPs per sample (2 x MACs), see flop_count.method.")
    flop_count: FlopCount
    cpu_model: str | None
    cpu_count: int | None
    isa_flags: list[str]
    peak_rss_mb: float | None
    rss_baseline_mb: float | None = Field(description="Peak RSS of the fresh process before loading the model.")
    rss_note: str
    best_batch_size: int
    seconds_per_inference: float = Field(description="p50 / batch at the best-throughput batch size.")
    energy: EnergyEstimate
    energy_j_per_1000: float
    price_per_hour: float | None
    cost_per_million: float | None
    cost_note: str | None
    notes: list[str] = Field(default_factory=list)


def model_file_size(files: ModelFiles) -> tuple[float | None, list[str], str]:
    """(size in MB of 2**20 bytes, files counted, what they are); size None when there is no file."""
    paths = [p for p in files.paths if p.is_file()]
    if not paths:
        return None, [], files.note
    return sum(p.stat().st_size for p in paths) / MB, [str(p) for p in paths], files.note


def _measured(model: Model, model_path: str | None) -> tuple[ModelSpec | None, ModelFiles]:
    """What a fresh process loads (the model's spec, or one for ``model_path``) and the files whose size
    counts."""
    own = model.spec()
    if model_path is None or (own is not None and _same_file(own.path, model_path)):
        return own, model.model_files()
    fmt = format_for_file(model_path) if Path(model_path).is_file() else None
    if fmt is None:
        found = [Path(model_path)] if Path(model_path).is_file() else []
        return None, ModelFiles(found, "model file" if found else f"no model file at {model_path!r}")
    spec = ModelSpec(format=fmt.name, path=os.path.abspath(model_path), outputs=model.info.outputs,
                     num_classes=model.info.num_classes)
    return spec, spec.files()


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def profile_model(
    model: Model,
    sample: np.ndarray,
    *,
    batch_sizes: Sequence[int] = (1, 8, 32),
    threads: int | None = None,
    budget_s: float = 10.0,
    price_per_hour: float | None = None,
    measure_rss: bool = True,
    model_path: str | None = None,
    confidence: float = 0.95,
    seed: int = 0,
    warmup: int = 5,
    min_runs: int = 20,
    max_runs: int = 2000,
    target_rel_halfwidth: float = 0.05,
    progress: bool | None = None,
) -> EfficiencyProfile:
    """Latency per batch size (``model.logits``), size, parameters, FLOPs, peak RSS, energy and cost.

    ``threads``: applied with ``model.set_threads`` for the measurement (torch: ``torch.set_num_threads``,
    restored afterwards; ONNX: a session reloaded from the model's spec when it differs). ``budget_s`` is
    per batch size. Size and peak RSS come from the model's own files and spec (``model.model_files()``,
    ``model.spec()``), or from ``model_path`` when given; a model built in memory has neither (None, with
    the reason). ``price_per_hour`` (the machine's price) gives the cost per million inferences at the
    best-throughput batch size. ``progress``: show the timing and the fresh-process measurement as they
    run (None: as the enclosing :func:`assay.progress.scope` says).
    """
    from assay.environment import cpu_model_and_flags

    if price_per_hour is not None and not price_per_hour >= 0:
        raise UserError(f"price_per_hour must be non-negative, got {price_per_hour}", where="price_per_hour",
                        fix="give the machine's hourly price, e.g. 0.1")
    sample = np.asarray(sample)
    setting = model.set_threads(threads)
    runner, used_threads, notes = setting.model, setting.threads, list(setting.notes)
    try:
        latency = measure_latency(runner.logits, sample, batch_sizes=batch_sizes, warmup=warmup, min_runs=min_runs,
                                  max_runs=max_runs, target_rel_halfwidth=target_rel_halfwidth, budget_s=budget_s,
                                  confidence=confidence, seed=seed, threads=used_threads, progress=progress)
        best = latency.best
        spi = best.seconds_per_inference
        if rapl_available():
            batch = make_batch(sample, best.batch_size, seed)
            energy = measure_energy(lambda: runner.logits(batch), best.batch_size, used_threads,
                                    min_seconds=min(2.0, budget_s))
        else:
            energy = energy_per_1000(spi, used_threads)
    finally:
        setting.restore()

    rss_spec, files = _measured(model, model_path)
    size_mb, file_names, size_note = model_file_size(files)
    flop_count = model.flop_count(sample)
    parameters = model.parameter_count()
    cpu_model, isa_flags = cpu_model_and_flags()

    if not measure_rss:
        peak, baseline, rss_note = None, None, "not measured (measure_rss=False)"
    elif rss_spec is None:
        peak, baseline, rss_note = None, None, "not measured: no model file to load in a fresh process"
    else:
        rss_batch = max(b.batch_size for b in latency.batches)
        fixed = model.info.input_shape[0] if model.info.input_shape else None
        if fixed is not None:
            rss_batch = int(fixed)  # a graph exported with a fixed batch size
        with stage("peak memory in a fresh process", enabled=progress):
            peak, baseline, rss_note = peak_rss_subprocess(
                rss_spec.model_copy(update={"threads": used_threads}), make_batch(sample, rss_batch, seed),
                input_dtype=model.info.input_dtype)

    cost = cost_note = None
    if price_per_hour is not None:
        cost = price_per_hour / 3600.0 * spi * 1e6
        cost_note = (f"{price_per_hour:g}/h / 3600 x {spi * 1e3:.4g} ms per inference (p50 at batch "
                     f"{best.batch_size}, the best throughput) x 1e6; assumes the machine runs only this model")
    return EfficiencyProfile(
        model_path=model_path or model.info.path, model_format=model.info.format, latency=latency,
        threads=used_threads, threads_source=setting.source, model_size_mb=size_mb, model_files=file_names,
        model_size_note=size_note, parameters=parameters.count, parameters_convention=parameters.convention,
        flops=flop_count.flops, flop_count=flop_count, cpu_model=cpu_model, cpu_count=os.cpu_count(),
        isa_flags=list(isa_flags), peak_rss_mb=peak, rss_baseline_mb=baseline, rss_note=rss_note,
        best_batch_size=best.batch_size, seconds_per_inference=spi, energy=energy,
        energy_j_per_1000=energy.joules, price_per_hour=price_per_hour, cost_per_million=cost,
        cost_note=cost_note, notes=notes)
