"""``load_model``: one entry point from a path, factory spec or ``ModelSpec`` to a :class:`~assay.models.base.Model`.

Formats come from the registry in :mod:`assay.models.formats`, chosen by extension: ``.onnx`` (onnxruntime),
``.pt``/``.pth``/``.ts`` (TorchScript), ``.pt2`` (``torch.export``), or ``package.module:callable`` plus
``weights`` (``.safetensors`` or a state dict). Nothing is ever unpickled: every pickle in a file (a state
dict's ``data.pkl``, TorchScript's, a ``.pt2``'s sample inputs) is scanned first by
:func:`assay.models.pickle_scan.check_pickles`, and one that imports anything beyond what ``torch.save``
writes for tensors (a full pickled module, ``os.system``) is refused with instructions. Model files that would
run code when loaded (expression strings, operators that touch files, native libraries) are refused with
:class:`~assay.errors.UnsafeModelError` by the format loaders, through :mod:`assay.models.safety`; a
``torch.export`` archive saved under a ``.pt`` name takes the same path as a ``.pt2``. Every load goes through
:func:`load_spec`, which is also how a :class:`~assay.models.spec.ModelSpec` loads in another process."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from assay.errors import ModelError, OptionError, UserError
from assay.models._common import check_static_shape, dry_run, sample_batch
from assay.models.base import Model, OutputKind
from assay.models.formats import FORMATS, ModelFormat, extension_map, format_for_file, get_format, supported_text
from assay.models.spec import ModelSpec

__all__ = ["SUPPORTED_FORMATS", "check_input_compatible", "load_model", "load_spec"]

#: extension -> format name (kept for callers of the old table; the registry is :data:`assay.models.formats.FORMATS`)
SUPPORTED_FORMATS = extension_map()


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
    path_or_factory: str | os.PathLike[str] | ModelSpec,
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
    """Load a classifier from a file, a factory spec, or a :class:`~assay.models.spec.ModelSpec`.

    ``outputs``: what the model returns, ``"logits"`` (default; probability-like outputs are refused)
    or ``"probabilities"`` (log-probabilities are then used as logits).
    ``feature_layer`` (torch) / ``feature_output`` (ONNX value name) choose the embedding ``features``
    returns; by default it is the input of the last linear layer.
    ``threads``: intra-op threads (ONNX defaults to ``os.cpu_count()``; torch keeps its setting unless given).
    ``sample``: a few data rows; the model is dry-run on them to learn the number of classes and to
    refuse incompatible data early. Torch models need ``sample`` or ``num_classes``.
    ``untrained``: a factory without ``weights`` is refused (it would be scored with random initial
    weights) unless this says that is what is meant.
    A ``ModelSpec`` carries its own options (only ``sample`` may be given with it); its sha256 is checked.
    The format comes from :mod:`assay.models.formats`; the model's ``spec()`` reloads it in another process.
    """
    if isinstance(path_or_factory, ModelSpec):
        given = [name for name, value, default in (
            ("weights", weights, None), ("outputs", outputs, "logits"), ("feature_layer", feature_layer, None),
            ("feature_output", feature_output, None), ("threads", threads, None), ("class_names", class_names, None),
            ("num_classes", num_classes, None), ("untrained", untrained, False)) if value != default]
        if given:
            raise OptionError(f"{', '.join(given)} cannot be given with a ModelSpec: the spec holds its own load "
                              "options", where=given[0],
                              fix="set them on the spec: spec.model_copy(update={...})")
        return load_spec(path_or_factory, sample=sample)
    spec = os.fspath(path_or_factory)
    weights_path = os.fspath(weights) if weights is not None else None
    if outputs not in ("logits", "probabilities"):
        raise UserError(f"outputs must be 'logits' or 'probabilities', not {outputs!r}", where="outputs",
                        fix="say what the model returns")
    if threads is not None and threads < 1:
        raise UserError(f"threads must be at least 1, got {threads}", where="threads", fix="pass a positive count")
    if sample is not None:
        sample = np.asarray(sample)
        if sample.ndim == 0 or len(sample) == 0:
            raise UserError("the sample has no rows", where="sample", fix="pass at least one input row")

    file = Path(spec)
    is_file = file.exists() or ":" not in spec
    if untrained and (is_file or weights_path is not None):
        raise OptionError("untrained applies only to a factory given without weights", where="untrained",
                          fix="drop --untrained (a model file and --weights hold trained weights)")
    if not is_file and weights_path is None and not untrained:
        raise ModelError(
            f"the factory {spec!r} was given no weights: it would be evaluated with its random initial weights",
            where=spec,
            fix="pass --weights FILE (.safetensors or a state dict), or --untrained if you mean to evaluate the "
                "untrained model")
    fmt = _file_format(spec, weights_path) if is_file else _factory_format()
    return load_spec(ModelSpec(format=fmt.name, path=spec, weights=weights_path, outputs=outputs,
                               feature_layer=feature_layer, feature_output=feature_output, threads=threads,
                               untrained=untrained, num_classes=num_classes,
                               class_names=None if class_names is None else [str(n) for n in class_names]),
                     sample=sample)


def load_spec(spec: ModelSpec, *, sample: np.ndarray | None = None, verify: bool = True) -> Model:
    """Load ``spec`` through its format's loader; the model's ``spec()`` is ``spec`` with absolute paths, the
    resolved number of classes and the loaded sha256. ``verify``: a sha256 in ``spec`` must match (not for an
    untrained factory, whose initial weights are random)."""
    fmt = get_format(spec.format)
    _check_options(spec, fmt)
    model = fmt.load(spec, sample)
    if spec.untrained:
        model.info = model.info.model_copy(update={"untrained": True})
    if verify and spec.sha256 is not None and not spec.untrained and model.info.sha256 != spec.sha256:
        raise ModelError(f"the model is not the one its spec describes: sha256 {model.info.sha256[:12]}... "
                         f"instead of {spec.sha256[:12]}... (the file changed since)", where=spec.path,
                         fix="load the model again from its file (a spec pins the bytes it was made from)")
    model._spec = spec.model_copy(update={
        "path": spec.path if fmt.factory else os.path.abspath(spec.path),
        "weights": None if spec.weights is None else os.path.abspath(spec.weights),
        "num_classes": model.info.num_classes, "sha256": model.info.sha256})
    if sample is not None:
        check_input_compatible(model, sample)
    return model


def _check_options(spec: ModelSpec, fmt: ModelFormat) -> None:
    """A feature option the format does not read is refused, naming the one it does."""
    for given, other in (("feature_layer", "feature_output"), ("feature_output", "feature_layer")):
        if getattr(spec, given) is not None and given not in fmt.options:
            right = other if other in fmt.options else None
            raise UserError(f"{given} does not apply to {fmt.noun}", where=given,
                            fix=f"use {right} (--{right.replace('_', '-')}) instead" if right
                            else f"drop {given}")
    if spec.weights is not None and "weights" not in fmt.options:
        raise UserError("--weights applies only to a factory 'package.module:callable'", where=spec.weights,
                        fix="drop --weights (the model file holds its weights), or pass the factory that builds "
                        "the model")


def _factory_format() -> ModelFormat:
    return next(fmt for fmt in FORMATS.values() if fmt.factory)


def _file_format(path: str, weights: str | None) -> ModelFormat:
    """The format of a model file; UserError for a missing file, a folder, an unknown extension or weights."""
    file = Path(path)
    if not file.exists():
        raise UserError("model file not found", where=path,
                        fix="check the path (or give a factory as 'package.module:callable' with --weights)")
    if file.is_dir():
        raise UserError("the model path is a directory, not a model file", where=path,
                        fix=f"give a model file: {supported_text()}")
    fmt = format_for_file(file)
    if fmt is None:
        suffix = file.suffix.lower()
        raise UserError(f"unsupported model format {suffix or '(no extension)'!r}", where=path,
                        fix=f"give one of: {supported_text()}")
    if weights is not None:
        raise UserError("--weights applies only to a factory 'package.module:callable'", where=weights,
                        fix="drop --weights (the model file holds its weights), or pass the factory that builds "
                        "the model")
    return fmt
