"""``load_model``: one entry point from a path or factory spec to a :class:`~assay.models.base.Model`.

Formats, chosen by extension: ``.onnx`` (onnxruntime), ``.pt``/``.pth``/``.ts`` (TorchScript),
``.pt2`` (``torch.export``), or ``package.module:callable`` plus ``weights`` (``.safetensors`` or a
state dict). Nothing is ever unpickled: full pickled modules are refused with instructions. Model files
that would run code when loaded (expression strings, operators that touch files, native libraries) are
refused with :class:`~assay.errors.UnsafeModelError` by the format loaders, through
:mod:`assay.models.safety`; a ``torch.export`` archive saved under a ``.pt`` name takes the same path
as a ``.pt2``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from assay.errors import ModelError, OptionError, UserError
from assay.models._common import check_static_shape, dry_run, sample_batch
from assay.models.base import Model, OutputKind

__all__ = ["SUPPORTED_FORMATS", "check_input_compatible", "load_model"]

SUPPORTED_FORMATS = {
    ".onnx": "onnx",
    ".pt": "torchscript",
    ".pth": "torchscript",
    ".ts": "torchscript",
    ".pt2": "torch-export",
}

_SUPPORTED_TEXT = (
    "ONNX (.onnx), TorchScript (.pt, .pth, .ts), torch.export (.pt2), "
    "or a factory 'package.module:callable' with --weights (.safetensors or a state dict)"
)


def check_input_compatible(model: Model, sample: np.ndarray) -> None:
    """Raise a UserError naming both shapes when ``sample`` (N, ...) cannot be fed to ``model``.

    Compares the model's static input shape with the data's per-sample shape, then runs the model on
    the first two rows so runtime failures (and probability-like outputs) surface before a long run.
    """
    sample = np.asarray(sample)
    info = model.info
    check_static_shape(info.input_shape, info.input_dtype, sample, where=info.path)
    dry_run(lambda batch: model.forward(batch, want_features=model.has_features), sample_batch(sample),
            where=info.path)


def load_model(
    path_or_factory: str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    outputs: OutputKind = "logits",
    feature_layer: str | None = None,
    feature_output: str | None = None,
    threads: int | None = None,
    class_names: list[str] | None = None,
    num_classes: int | None = None,
    sample: np.ndarray | None = None,
    untrained: bool = False,
) -> Model:
    """Load a classifier from a file or a factory spec.

    ``outputs``: what the model returns, ``"logits"`` (default; probability-like outputs are refused)
    or ``"probabilities"`` (log-probabilities are then used as logits).
    ``feature_layer`` (torch) / ``feature_output`` (ONNX value name) choose the embedding ``features``
    returns; by default it is the input of the last linear layer.
    ``threads``: intra-op threads (ONNX defaults to ``os.cpu_count()``; torch keeps its setting unless given).
    ``sample``: a few data rows; the model is dry-run on them to learn the number of classes and to
    refuse incompatible data early. Torch models need ``sample`` or ``num_classes``.
    ``untrained``: a factory without ``weights`` is refused (it would be scored with random initial
    weights) unless this says that is what is meant.
    """
    spec = os.fspath(path_or_factory)
    weights_path = os.fspath(weights) if weights is not None else None
    if outputs not in ("logits", "probabilities"):
        raise UserError(f"outputs must be 'logits' or 'probabilities', not {outputs!r}", where="--outputs",
                        fix="say what the model returns")
    if threads is not None and threads < 1:
        raise UserError(f"threads must be at least 1, got {threads}", where="--threads", fix="pass a positive count")
    if sample is not None:
        sample = np.asarray(sample)
        if sample.ndim == 0 or len(sample) == 0:
            raise UserError("the sample has no rows", where="sample", fix="pass at least one input row")

    file = Path(spec)
    is_file = file.exists() or ":" not in spec
    if untrained and (is_file or weights_path is not None):
        raise OptionError("untrained applies only to a factory given without weights", where="--untrained",
                          fix="drop --untrained (a model file and --weights hold trained weights)")
    if not is_file and weights_path is None and not untrained:
        raise ModelError(
            f"the factory {spec!r} was given no weights: it would be evaluated with its random initial weights",
            where=spec,
            fix="pass --weights FILE (.safetensors or a state dict), or --untrained if you mean to evaluate the "
                "untrained model")
    if is_file:
        model = _load_file(spec, weights=weights_path, outputs=outputs, feature_layer=feature_layer,
                           feature_output=feature_output, threads=threads, class_names=class_names,
                           num_classes=num_classes, sample=sample)
    else:
        if feature_output is not None:
            raise _wrong_feature_option("feature_output", "a torch factory", "feature_layer")
        if threads is not None:
            _set_torch_threads(threads)
        from assay.models.torch_models import load_factory

        model = load_factory(spec, weights=weights_path, outputs=outputs, feature_layer=feature_layer,
                             class_names=class_names, num_classes=num_classes, sample=sample)
        if untrained:
            model.info = model.info.model_copy(update={"untrained": True})
    if sample is not None:
        check_input_compatible(model, sample)
    return model


def _wrong_feature_option(given: str, kind: str, right: str) -> UserError:
    return UserError(f"{given} does not apply to {kind}", where=f"--{given.replace('_', '-')}",
                     fix=f"use {right} (--{right.replace('_', '-')}) instead")


def _set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _load_file(path: str, *, weights: str | None, outputs: OutputKind, feature_layer: str | None,
               feature_output: str | None, threads: int | None, class_names: list[str] | None,
               num_classes: int | None, sample: np.ndarray | None) -> Model:
    file = Path(path)
    if not file.exists():
        raise UserError("model file not found", where=path,
                        fix="check the path (or give a factory as 'package.module:callable' with --weights)")
    if file.is_dir():
        raise UserError("the model path is a directory, not a model file", where=path,
                        fix=f"give a model file: {_SUPPORTED_TEXT}")
    suffix = file.suffix.lower()
    fmt = SUPPORTED_FORMATS.get(suffix)
    if fmt is None:
        raise UserError(f"unsupported model format {suffix or '(no extension)'!r}", where=path,
                        fix=f"give one of: {_SUPPORTED_TEXT}")
    if weights is not None:
        raise UserError("--weights applies only to a factory 'package.module:callable'", where=weights,
                        fix="drop --weights (the model file holds its weights), or pass the factory that builds "
                        "the model")
    if fmt == "onnx":
        if feature_layer is not None:
            raise _wrong_feature_option("feature_layer", "ONNX models", "feature_output")
        from assay.models.onnx_model import load_onnx

        return load_onnx(path, outputs=outputs, feature_output=feature_output, threads=threads,
                         class_names=class_names, num_classes=num_classes, sample=sample)
    if feature_output is not None:
        raise _wrong_feature_option("feature_output", "torch models", "feature_layer")
    if threads is not None:
        _set_torch_threads(threads)
    from assay.models import torch_models

    if fmt == "torch-export":
        return torch_models.load_torch_export(path, outputs=outputs, feature_layer=feature_layer,
                                              class_names=class_names, num_classes=num_classes, sample=sample)
    if _is_export_archive(file):
        return torch_models.load_torch_export(path, outputs=outputs, feature_layer=feature_layer,
                                              class_names=class_names, num_classes=num_classes, sample=sample)
    return torch_models.load_torchscript(path, outputs=outputs, feature_layer=feature_layer,
                                         class_names=class_names, num_classes=num_classes, sample=sample)


def _is_export_archive(file: Path) -> bool:
    """True for a ``torch.export.save`` archive saved under a ``.pt`` name (it holds ``*/models/*.json``)."""
    import zipfile

    try:
        with zipfile.ZipFile(file) as archive:
            return any(n.endswith("/archive_format") or ("/models/" in n and n.endswith(".json"))
                       for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
