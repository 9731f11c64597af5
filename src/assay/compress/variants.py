"""Compressed variants of a classifier, each written as an ONNX file so one runtime judges them all.

``make_variants`` turns a model into a float32 reference plus the requested variants:

=====================  ==================================================================================
``fp32``               the reference: a torch model exported with :func:`~assay.models.export.export_onnx`,
                       an ONNX model copied as is (always built, always first)
``int8-static``        static int8 QDQ (``onnxruntime.quantization.quantize_static``), weights per channel,
                       one variant per calibration method: ``int8-static-minmax``, ``-percentile``,
                       ``-entropy`` (each can be asked for alone)
``int8-dynamic``       ``quantize_dynamic`` restricted to MatMul/Gemm (MLP/transformer layers; on a conv
                       net only the head)
``int8-dynamic-all``   ``quantize_dynamic`` with ORT's defaults (every supported op): on conv nets it emits
                       ConvInteger, far *slower* than float32 on x86 — kept so the audit shows the trap
``fp16``               float16 weights and compute, float32 inputs/outputs
``prune``              structured channel pruning (torch models only), one variant per ratio, optionally
                       fine-tuned; named ``pruned-<ratio>``
=====================  ==================================================================================

The int8 variants quantize the reference after ONNX Runtime's pre-processing (``quant_pre_process``:
symbolic shape inference and graph optimization, as the ORT quantization guide recommends), written
next to the variants as ``fp32-preprocessed.onnx``. Only the static int8 methods read calibration data
(:func:`needs_calibration`); the others build from the model alone.

With ``keep_going=True`` a method that fails to build does not stop the others: it comes back as a
:class:`Variant` with ``error`` set and no file, for the caller to report.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import platform
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from assay.errors import DataError, ModelError, OptionError, UserError
from assay.models._common import describe_error
from assay.models.base import Model
from assay.progress import scope, shown, stage

if TYPE_CHECKING:
    import onnx

    from assay.data.dataset import Dataset

__all__ = [
    "CALIBRATION_METHODS",
    "KNOWN_METHODS",
    "METHODS",
    "STATIC_METHODS",
    "Variant",
    "calibration_batch_size",
    "describe_error",
    "make_variants",
    "missing_calibration_error",
    "needs_calibration",
    "parse_methods",
    "static_quantization_types",
]

METHODS = ("fp32", "int8-static", "int8-dynamic", "int8-dynamic-all", "fp16", "prune")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
STATIC_METHODS = tuple(f"int8-static-{c}" for c in CALIBRATION_METHODS)
KNOWN_METHODS = METHODS + STATIC_METHODS
MAX_CALIBRATION_SAMPLES = 512
"""Histogram calibration (Percentile, Entropy) keeps every activation of every sample in memory before
building its histograms, so the calibration set is capped (a seeded random subset)."""
CALIBRATION_BATCH = 64
"""Largest calibration batch; the batch actually used divides the number of samples (see
:func:`calibration_batch_size`)."""
MIN_INT8_DEPTH = 16
ENTROPY_BINS = 1024
ENTROPY_QUANTIZED_BINS = 255
"""Histogram over [-max|x|, max|x|] with 512 bins a side; 255 levels = the int8 grid. ORT's KL search is a
Python loop over candidate thresholds: ~0.3 s per activation tensor with these sizes."""
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@dataclass
class Variant:
    """One compressed (or reference) model, as an ONNX file; or, with ``error`` set, a method that failed
    to build (``path`` is then None). ``copy_of_original``: the file is the original model itself (the fp32
    reference of an ONNX original), so timing the two against each other measures noise."""

    name: str
    method: str
    path: Path | None
    torch_module: Any | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    copy_of_original: bool = False


def make_variants(
    model: str | os.PathLike[str] | Model,
    calibration: Dataset | None,
    methods: Sequence[str],
    *,
    out_dir: str | os.PathLike[str],
    prune_ratios: Sequence[float] = (0.5,),
    train_data: Dataset | None = None,
    finetune_epochs: int = 0,
    seed: int = 0,
    example: np.ndarray | None = None,
    max_calibration_samples: int = MAX_CALIBRATION_SAMPLES,
    keep_going: bool = False,
    progress: bool | None = None,
) -> list[Variant]:
    """Build the reference and the variants ``methods`` ask for into ``out_dir``; fp32 comes first.

    ``model``: an ONNX or TorchScript/torch.export file, or a loaded :class:`~assay.models.base.Model`
    (pass a loaded factory model to prune). ``calibration``: inputs for static int8 calibration (at most
    ``max_calibration_samples`` are used); required only when a static int8 method is asked for.
    ``train_data`` and ``finetune_epochs``: the fine-tune after pruning. ``example``: one input batch for
    export and pruning (default: the first two calibration rows). All inputs are checked before any work
    starts. ``keep_going``: a variant that fails to build is returned with ``error`` set instead of raising.
    ``progress``: one step per variant built (None: as the enclosing :func:`assay.progress.scope` says).
    """
    requested = parse_methods(methods)
    ratios = _check_ratios(prune_ratios) if "prune" in requested else []
    if finetune_epochs < 0:
        raise OptionError(f"fine-tune epochs must be >= 0, got {finetune_epochs}", where="finetune_epochs",
                          fix="give 0 (no fine-tune) or a positive number of epochs")
    if "prune" in requested and finetune_epochs > 0 and train_data is None:
        raise OptionError("fine-tuning after pruning needs training data", where="train_data",
                          fix="pass labelled training data, or set the fine-tune epochs to 0")
    if max_calibration_samples < 1:
        raise OptionError(f"max_calibration_samples must be >= 1, got {max_calibration_samples}",
                          where="max_calibration_samples", fix="give a positive number (512 is plenty)")
    calibrate = needs_calibration(requested)
    if calibrate and calibration is None:
        raise missing_calibration_error(requested)
    if example is not None:
        example_batch = np.asarray(example)
    elif calibration is not None:
        example_batch = np.asarray(calibration.x[:2])
    else:
        raise OptionError("no example input to export the model with", where="example",
                          fix="pass example= (a batch of two inputs) or calibration data")
    loaded = _resolve_model(model, example_batch)
    if calibrate and calibration is not None:
        _check_calibration(loaded, calibration)
    module = None
    if "prune" in requested:
        module = _prunable_module(loaded)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [job for name in requested if name != "fp32"  # (variant name, method, pruning ratio)
            for job in ([(f"pruned-{r:g}", name, r) for r in ratios] if name == "prune" else [(name, name, 0.0)])]
    variants: list[Variant] = []
    with scope(shown(progress)), stage("building compressed variants", total=1 + len(jobs), unit="variants") as advance:
        advance.detail("[fp32]")
        variants.append(_reference(loaded, example_batch, out))
        advance()
        reference = out / "fp32.onnx"
        metadata = _metadata(reference)
        base: Path | None = None
        for name, method, ratio in jobs:
            advance.detail(f"[{name}]")
            if method.startswith("int8-") and base is None:  # int8 variants share the pre-processed reference
                base, base_note = _preprocess(reference, out / "fp32-preprocessed.onnx")
                variants[0].notes.append(base_note)
            t0 = time.perf_counter()
            try:
                made = _build(method, loaded, module, calibration, base or reference, reference, example_batch, out,
                              ratio=ratio, train_data=train_data, epochs=finetune_epochs, seed=seed,
                              max_samples=max_calibration_samples)
                assert made.path is not None  # only a failed method (error set) has no file
                _stamp(made.path, metadata, made.name)
            except Exception as exc:  # a model the converters cannot handle: say which method, keep the cause
                error = f"building the {name} variant failed: {describe_error(exc)}"
                if not keep_going:
                    if isinstance(exc, UserError):
                        raise
                    raise ModelError(error, where=loaded.info.path, fix=f"leave {method} out of the methods "
                                     "(the other methods may still work)") from exc
                for stale in out.glob(f"{name}.onnx*"):
                    stale.unlink(missing_ok=True)
                variants.append(Variant(name, method, None, None, [], error=error))
                continue
            finally:
                advance()
            made.notes.append(f"built in {time.perf_counter() - t0:.3f} s")
            variants.append(made)
    _stamp(reference, metadata, "fp32")
    return variants


def _build(method: str, model: Model, module: Any, calibration: Dataset | None, base: Path, reference: Path,
           example: np.ndarray, out: Path, *, ratio: float, train_data: Dataset | None, epochs: int,
           seed: int, max_samples: int) -> Variant:
    if method.startswith("int8-static-"):
        if calibration is None:  # make_variants checks this up front
            raise missing_calibration_error([method])
        return _static_int8(base, calibration, method.removeprefix("int8-static-"), out, seed=seed,
                            max_samples=max_samples)
    if method == "int8-dynamic":
        return _dynamic_int8(base, out / "int8-dynamic.onnx", all_ops=False)
    if method == "int8-dynamic-all":
        return _dynamic_int8(base, out / "int8-dynamic-all.onnx", all_ops=True)
    if method == "fp16":
        return _fp16(reference, out / "fp16.onnx")
    return _pruned(model, module, example, ratio, out, train_data=train_data, epochs=epochs, seed=seed)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


def static_quantization_types(isa_flags: Sequence[str], machine: str | None = None) -> tuple[str, str, bool, str]:
    """(activation type, weight type, reduce_range, why) for static int8 on this CPU.

    Follows ``quantize_static``'s guidance for CPU inference (ORT 1.2x+): x86 with VNNI, U8S8
    (uint8 activations, int8 weights) without range reduction; x86 without VNNI, U8S8 with 7-bit weights
    (``reduce_range``) against the int16 saturation of VPMADDUBSW; ARM, S8S8.
    """
    machine = (machine or platform.machine()).lower()
    if machine in ("arm64", "aarch64") or machine.startswith("arm"):
        return "QInt8", "QInt8", False, "S8S8 (int8 activations and weights), ORT's recommendation for ARM"
    vnni = sorted(set(isa_flags) & set(VNNI_FLAGS))
    if vnni:
        return ("QUInt8", "QInt8", False,
                f"U8S8 (uint8 activations, int8 weights), ORT's recommendation for x86 with VNNI ({vnni[0]})")
    return ("QUInt8", "QInt8", True,
            ("U8S8 with 7-bit weights (reduce_range), ORT's recommendation for x86 without VNNI "
             "(avoids int16 saturation in VPMADDUBSW)"))


# --------------------------------------------------------------------------- checks


def parse_methods(methods: Sequence[str]) -> list[str]:
    """The method names to build, in order, without repeats; ``int8-static`` expands to its three
    calibration methods. An unknown name is an :class:`~assay.errors.OptionError` listing the known ones."""
    if isinstance(methods, str):
        methods = [methods]
    requested: list[str] = []
    for raw in methods:
        name = str(raw).strip().lower()
        if name not in KNOWN_METHODS:
            raise OptionError(f"unknown method {raw!r}: not a compression method", where="methods",
                              fix=f"choose from: {', '.join(KNOWN_METHODS)}")
        expanded = list(STATIC_METHODS) if name == "int8-static" else [name]
        requested.extend(n for n in expanded if n not in requested)
    if not requested:
        raise OptionError("no compression method given", where="methods",
                          fix=f"choose one or more of: {', '.join(KNOWN_METHODS)}")
    return requested


def needs_calibration(methods: Sequence[str]) -> bool:
    """Whether any of ``methods`` (parsed or not) is a static int8 method, the only ones that calibrate."""
    return any(name in STATIC_METHODS for name in parse_methods(methods))


def missing_calibration_error(methods: Sequence[str]) -> OptionError:
    """The error for static int8 methods asked for without calibration data (names them, says what else works)."""
    static = [name for name in parse_methods(methods) if name in STATIC_METHODS]
    return OptionError(f"no calibration data for static int8 quantization ({', '.join(static)})",
                       where="calibration",
                       fix="pass --quantization-data DATA (calibration= in Python: a few hundred representative "
                           "inputs, e.g. from the training set; never the evaluation set itself), or leave the "
                           "int8-static methods out (int8-dynamic and fp16 need no calibration)")


def calibration_batch_size(n: int, limit: int | None = None, fixed: int | None = None) -> int:
    """The batch size that feeds ``n`` calibration samples to ONNX Runtime's calibrators: the largest
    divisor of ``n`` not above ``limit`` (default :data:`CALIBRATION_BATCH`; 1 when ``n`` is a prime above
    it), or the model's ``fixed``
    batch dimension. All batches must have the same size because ORT's histogram calibrators (Percentile,
    Entropy) stack every batch's activations with ``np.asarray`` before histogramming, which fails on a
    short last batch. The stacked values, hence the histograms and min/max ranges, do not depend on how
    the samples were batched, so an equal split changes nothing but the number of runs."""
    if n < 1:
        raise ValueError(f"no calibration samples (n={n})")
    if fixed is not None:
        if n % fixed:
            raise DataError(f"the model's input has a fixed batch size of {fixed}, which does not divide the {n} "
                            "calibration samples", where="calibration",
                            fix=f"give a multiple of {fixed} calibration samples, or export the model with a dynamic "
                                "batch dimension")
        return fixed
    return max(d for d in range(1, min(n, limit or CALIBRATION_BATCH) + 1) if n % d == 0)


def _check_ratios(ratios: Sequence[float]) -> list[float]:
    checked: list[float] = []
    for ratio in ratios:
        if not 0.0 < float(ratio) < 1.0:
            raise OptionError(f"pruning ratio must lie strictly between 0 and 1, got {ratio}", where="prune_ratios",
                            fix="give fractions of channels to remove, e.g. 0.3 0.5")
        if float(ratio) not in checked:
            checked.append(float(ratio))
    if not checked:
        raise OptionError("no pruning ratio given", where="prune_ratios", fix="give at least one ratio, e.g. 0.5")
    return checked


def _resolve_model(model: str | os.PathLike[str] | Model, example: np.ndarray) -> Model:
    from assay.models.loader import load_model

    if isinstance(model, Model):
        return model
    spec = os.fspath(model)
    if Path(spec).suffix.lower() == ".onnx":
        return load_model(spec)
    return load_model(spec, sample=example)  # torch files learn their classes from a dry run


def _check_calibration(model: Model, calibration: Dataset) -> None:
    """The calibration data must feed the model: a UserError naming the calibration set otherwise."""
    from assay.models.loader import check_input_compatible

    x = np.asarray(calibration.x)
    if x.dtype == object or x.dtype.kind in "US":
        raise DataError("the calibration data is text; quantization calibrates on numeric input tensors",
                        where=f"calibration data {calibration.source}",
                        fix="compress a model whose ONNX input is a numeric tensor (tokenize before the model)")
    try:
        check_input_compatible(model, x[:2])
    except UserError as exc:
        expected = ["N", *("?" if d is None else d for d in model.info.input_shape[1:])]
        raise DataError(
            f"the calibration data does not fit the model: {exc.what}",
            where=f"calibration data {calibration.source} (per-sample shape {tuple(x.shape[1:])}; model input "
            f"({', '.join(map(str, expected))}))",
            fix="calibrate on samples shaped like the model's inputs, e.g. part of its training or validation "
            "data with the same preprocessing",
        ) from exc


def _prunable_module(model: Model) -> Any:
    """The eager torch module pruning edits; ModelError when the model has none."""
    if model.torch_module() is None:
        raise ModelError(
            "pruning needs the torch model: structured pruning removes channels from torch layers, which an "
            "ONNX file does not have",
            where=model.info.path,
            fix="compress the torch model instead — the factory 'package.module:callable' with --weights "
            "(or a TorchScript file for the other methods) — or leave 'prune' out of the methods",
        )
    module = model.eager_module()
    if module is None:
        raise ModelError(
            f"pruning needs the eager torch module, but this is a {model.info.format} program whose layers are "
            "compiled away",
            where=model.info.path,
            fix="pass the factory 'package.module:callable' with --weights, or leave 'prune' out of the methods",
        )
    return module


# --------------------------------------------------------------------------- builders


def _reference(model: Model, example: np.ndarray, out: Path) -> Variant:
    """The fp32 reference: the model written as ONNX (``Model.to_onnx``: an ONNX model copies itself, with its
    external data folded in; a torch model is exported)."""
    path = out / "fp32.onnx"
    t0 = time.perf_counter()
    try:
        export = model.to_onnx(path, example)
    except UserError:
        raise
    except Exception as exc:  # every variant derives from this export: nothing can be built without it
        raise ModelError(f"exporting the {model.info.format} model to ONNX failed: {describe_error(exc)}",
                         where=model.info.path,
                         fix="compress the model as an ONNX file exported by hand (torch.onnx.export), or make "
                             "it exportable") from exc
    notes = [f"built in {time.perf_counter() - t0:.3f} s"]
    return Variant("fp32", f"float32 reference ({export.how})", path, None, notes, copy_of_original=export.copied)


def _export(module: Any, example: np.ndarray, path: Path, class_names: list[str]) -> None:
    from assay.models.export import export_onnx
    from assay.models.torch_models import to_torch_inputs

    export_onnx(module, to_torch_inputs(example), path, class_names=class_names)


def _preprocess(reference: Path, target: Path) -> tuple[Path, str]:
    """ORT's quantization pre-processing; on failure the int8 variants quantize the reference as is."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with _quiet():
            quant_pre_process(str(reference), str(target))
        return target, f"ORT quantization pre-processing (shape inference + optimization) applied: {target.name}"
    except Exception as exc:
        target.unlink(missing_ok=True)
        return reference, (f"ORT quantization pre-processing failed ({type(exc).__name__}: {_first_line(exc)}); "
                           "int8 variants quantize the reference as exported")


def _static_int8(base: Path, calibration: Dataset, calib: str, out: Path, *, seed: int, max_samples: int) -> Variant:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from assay.environment import cpu_model_and_flags

    graph = onnx.load(str(base), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelError(f"static calibration feeds one input tensor, the model has {len(inputs)}", where=str(base),
                        fix="compress a single-input classifier, or use int8-dynamic (no calibration)")
    input_name = inputs[0].name
    dtype = onnx.helper.tensor_dtype_to_np_dtype(inputs[0].type.tensor_type.elem_type)
    n = len(calibration)
    if n > max_samples:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))
        sample_text = f"{max_samples} of {n} calibration samples (seeded random subset)"
    else:
        rows = np.arange(n)
        sample_text = f"all {n} calibration samples"
    x = np.asarray(calibration.x[rows], dtype=dtype)
    dims = inputs[0].type.tensor_type.shape.dim
    fixed = dims[0].dim_value if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
    batch = calibration_batch_size(len(x), fixed=fixed)

    activation, weight, reduce_range, why = static_quantization_types(cpu_model_and_flags()[1])
    method_enum = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                   "entropy": CalibrationMethod.Entropy}[calib]
    settings = {"minmax": "MinMax (observed min/max)",
                "percentile": "Percentile (99.999th percentile of |activation| from a 2048-bin histogram, clipped "
                              "to the observed min/max)",
                "entropy": f"Entropy (KL-divergence threshold search as in TensorRT, {ENTROPY_BINS}-bin histogram, "
                           f"{ENTROPY_QUANTIZED_BINS} quantized bins)"}[calib]
    name = f"int8-static-{calib}"
    path = out / f"{name}.onnx"
    notes = [f"calibrated on {sample_text} in {len(x) // batch} batch(es) of {batch}"
             + ("" if batch == min(len(x), CALIBRATION_BATCH) or fixed else
                f" (equal batches: the largest divisor of {len(x)} up to {CALIBRATION_BATCH})")]
    shallow = _shallow_convs(graph)
    options = {"quant_format": QuantFormat.QDQ, "per_channel": True, "reduce_range": reduce_range,
               "activation_type": QuantType[activation], "weight_type": QuantType[weight],
               "calibrate_method": method_enum, "nodes_to_exclude": list(shallow)}
    kept_text = ""
    if shallow:
        listed = ", ".join(f"{n} (depth {d})" for n, d in shallow.items())
        kept_text = f"; convolutions with a reduction depth below {MIN_INT8_DEPTH} kept in float32: {listed}"
        notes.append(f"kept in float32 (int8 gains nothing on a reduction depth below {MIN_INT8_DEPTH}): {listed}")
    with _quiet(), tempfile.TemporaryDirectory(prefix="assay-calib-") as tmp:
        if calib == "entropy" and "calibration_cache_path" in inspect.signature(quantize_static).parameters:
            # quantize_static cannot pass histogram sizes to the entropy calibrator, and its default (128 bins,
            # 128 quantized bins) leaves a single candidate threshold: the full range, i.e. MinMax. Calibrate
            # here with real sizes and hand the ranges over through ORT's calibration cache.
            cache = _entropy_ranges(base, _BatchReader(input_name, x, batch), Path(tmp))
            quantize_static(str(base), str(path), None, calibration_cache_path=str(cache), **options)
        else:
            if calib == "entropy":
                settings = "Entropy with ORT's default histogram (128 bins: degenerates to the full range, as MinMax)"
                notes.append("this onnxruntime cannot take entropy histogram sizes: entropy ranges equal MinMax's")
            quantize_static(str(base), str(path), _BatchReader(input_name, x, batch), **options)
    method = (f"static int8 QDQ (onnxruntime quantize_static): {why}; weights per channel (symmetric), activations "
              f"per tensor; calibration {settings} on {sample_text}{kept_text}")
    return Variant(name, method, path, None, notes)


def _shallow_convs(graph: onnx.GraphProto) -> dict[str, int]:
    """Named Conv nodes whose reduction depth (input channels per group x kernel size) is below
    ``MIN_INT8_DEPTH``, typically a first layer on 1-channel images. Such a GEMM is too shallow for int8 dot
    products to pay for quantizing its input (on the demo CNN, keeping its 1x3x3 first conv in float32
    took static int8 from 1.4x to 1.9x at batch 32, one thread)."""
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    shallow = {}
    for node in graph.node:
        if node.op_type != "Conv" or not node.name or len(node.input) < 2:
            continue
        dims = shapes.get(node.input[1])
        if dims and len(dims) >= 3:
            depth = int(np.prod(dims[1:]))
            if depth < MIN_INT8_DEPTH:
                shallow[node.name] = depth
    return shallow


def _entropy_ranges(base: Path, reader: _BatchReader, tmp: Path) -> Path:
    """Entropy (KL) calibration with explicit histogram sizes, saved as an ORT calibration cache file."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data

    sizes = {"num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS}
    calibrator = create_calibrator(base, [], augmented_model_path=str(tmp / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy, extra_options=sizes)
    calibrator.collect_data(reader)
    cache = tmp / "entropy-ranges.json"
    save_tensors_data(calibrator.compute_data(), cache)
    return cache


def _dynamic_int8(base: Path, path: Path, *, all_ops: bool) -> Variant:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(str(base), str(path), op_types_to_quantize=None if all_ops else ["MatMul", "Gemm"],
                         weight_type=QuantType.QInt8)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    notes: list[str] = []
    if all_ops:
        name = "int8-dynamic-all"
        method = ("dynamic int8 (onnxruntime quantize_dynamic, default settings: every supported op, int8 weights "
                  "per tensor, activations quantized at run time). On convolutional models this emits "
                  "ConvInteger, which has no fast x86 kernel in ONNX Runtime and typically runs several times "
                  "slower than float32 — a known trap, kept to show it; use int8-static for conv nets")
        if "ConvInteger" in ops:
            notes.append("graph contains ConvInteger (dynamic quantization of convolutions)")
    else:
        name = "int8-dynamic"
        method = ("dynamic int8 of MatMul/Gemm only (onnxruntime quantize_dynamic, op_types_to_quantize="
                  "['MatMul', 'Gemm']: int8 weights per tensor, activations quantized at run time); "
                  "convolutions and other ops stay float32")
        if not ops & {"MatMulInteger", "DynamicQuantizeMatMul"}:
            notes.append("the model has no MatMul/Gemm that could be quantized: this variant computes like fp32")
    return Variant(name, method, path, None, notes)


def _fp16(reference: Path, path: Path) -> Variant:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with _quiet():
        converted = convert_float_to_float16(onnx.load(str(reference)), keep_io_types=True)
    onnx.save(_topologically_sorted(converted), str(path))
    method = ("float16 weights and compute (onnxruntime.transformers.float16.convert_float_to_float16, "
              "keep_io_types=True: inputs and outputs stay float32, cast at the graph boundary)")
    return Variant("fp16", method, path, None, [])


def _pruned(model: Model, module: Any, example: np.ndarray, ratio: float, out: Path, *,
            train_data: Dataset | None, epochs: int, seed: int) -> Variant:
    from assay.compress.pruning import count_parameters, finetune, output_layer, prune_channels
    from assay.models.torch_models import to_torch_inputs

    inputs = to_torch_inputs(example)
    kept = output_layer(module, inputs)
    kept_name = next((n for n, m in module.named_modules() if m is kept), type(kept).__name__)
    pruned = prune_channels(module, inputs, ratio)
    before, after = count_parameters(module), count_parameters(pruned)
    notes = [f"parameters {before:,} -> {after:,} ({100 * (after / before - 1):+.0f}%)"]
    name = f"pruned-{ratio:g}"
    if epochs > 0 and train_data is not None:
        with stage(f"fine-tuning {name}", note=f"{epochs} epochs over {len(train_data):,} samples"):
            finetune(pruned, train_data, epochs, seed)
        tuned = f"fine-tuned {epochs} epoch(s) on {train_data.name} (Adam, lr 1e-3, seed {seed})"
        notes.append(tuned)
    else:
        tuned = "not fine-tuned"
        notes.append("not fine-tuned: accuracy is what pruning alone leaves")
    path = out / f"{name}.onnx"
    _export(pruned, example, path, model.info.class_names)
    method = (f"structured channel pruning (Torch-Pruning DepGraph, L2-magnitude importance, {100 * ratio:g}% of "
              f"the channels of every layer; output layer {kept_name!r} kept), {tuned}")
    return Variant(name, method, path, pruned, notes)


# --------------------------------------------------------------------------- helpers


class _BatchReader:
    """Calibration inputs for ORT, in batches (an ``onnxruntime.quantization.CalibrationDataReader``);
    ``batch`` should divide ``len(x)`` (:func:`calibration_batch_size`)."""

    def __init__(self, input_name: str, x: np.ndarray, batch: int) -> None:
        self.input_name, self.x, self.batch = input_name, x, batch
        self.start = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.start >= len(self.x):
            return None
        chunk = self.x[self.start:self.start + self.batch]
        self.start += self.batch
        return {self.input_name: chunk}

    def rewind(self) -> None:
        self.start = 0

    def __iter__(self) -> _BatchReader:  # the CalibrationDataReader protocol
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def _metadata(reference: Path) -> list[tuple[str, str]]:
    import onnx

    return [(p.key, p.value) for p in onnx.load(str(reference), load_external_data=False).metadata_props]


def _stamp(path: Path, metadata: list[tuple[str, str]], name: str) -> None:
    """Give every variant the reference's metadata (class names) plus its own variant name."""
    import onnx

    model = onnx.load(str(path))
    props = dict(metadata)
    props.update({p.key: p.value for p in model.metadata_props if p.key not in props})
    props["assay_variant"] = name
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def _topologically_sorted(model: onnx.ModelProto) -> onnx.ModelProto:
    """The fp16 converter appends the input Casts at the end of the node list; ONNX wants topological order."""
    graph = model.graph
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:  # a cycle or a dangling input: keep the rest as given
            ordered.extend(pending)
            break
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        done = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in done]
    nodes = [type(n)() for n in ordered]
    for new, old in zip(nodes, ordered, strict=True):
        new.CopyFrom(old)
    del graph.node[:]
    graph.node.extend(nodes)
    return model


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ORT's quantization tools print progress to stdout and log warnings; keep Assay's output clean."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)
