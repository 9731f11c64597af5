"""The model format registry: which loader reads which model file (or factory spec).

A :class:`ModelFormat` says how to recognise a model (file extensions, or ``package.module:callable``
for a factory), which load options apply to it, how to load a :class:`~assay.models.spec.ModelSpec` of
it, and which files make it up. :func:`~assay.models.loader.load_model` resolves a path to a format here
and loads through it; ``ModelInfo.format`` and ``ModelSpec.format`` are keys of :data:`FORMATS`.

Built in: ``onnx`` (.onnx, onnxruntime), ``torchscript`` (.pt/.pth/.ts), ``torch-export`` (.pt2, and a
``torch.export`` archive saved under a TorchScript extension), ``factory`` (``module:callable`` plus
weights). A new format is one :func:`register_format` call; its loader must keep Assay's rule that
nothing is unpickled and nothing from the file runs as code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from assay.errors import ModelError

if TYPE_CHECKING:
    import numpy as np

    from assay.models.base import Model
    from assay.models.spec import ModelSpec

__all__ = [
    "FORMATS",
    "ModelFiles",
    "ModelFormat",
    "extension_map",
    "format_for_file",
    "get_format",
    "register_format",
    "supported_text",
]


class ModelFiles(NamedTuple):
    """The files a model is made of (for its size on disk) and what they are."""

    paths: list[Path]
    note: str


@dataclass(frozen=True)
class ModelFormat:
    """One model format: how to recognise it, which load options apply, how to load it.

    ``options``: the optional load options the format reads (``feature_layer``, ``feature_output``,
    ``threads``, ``weights``); ``outputs``, ``class_names`` and ``num_classes`` apply to every format.
    ``also_reads``/``recognizes``: extensions of *other* formats whose files this format claims when
    ``recognizes(file)`` says so (a ``torch.export`` archive saved as ``.pt``). ``noun`` names the
    format's models in messages ("ONNX models"); ``runtime`` is what a process must import to run them.
    """

    name: str
    title: str
    noun: str
    runtime: str
    load: Callable[[ModelSpec, np.ndarray | None], Model]
    files: Callable[[ModelSpec], ModelFiles]
    extensions: tuple[str, ...] = ()
    options: frozenset[str] = frozenset()
    also_reads: tuple[str, ...] = ()
    recognizes: Callable[[Path], bool] | None = None
    factory: bool = False


FORMATS: dict[str, ModelFormat] = {}


def register_format(fmt: ModelFormat) -> ModelFormat:
    """Add ``fmt`` to :data:`FORMATS` (a name or extension already taken is a ValueError)."""
    if fmt.name in FORMATS:
        raise ValueError(f"model format {fmt.name!r} is already registered")
    taken = {ext: other.name for other in FORMATS.values() for ext in other.extensions}
    clash = [ext for ext in fmt.extensions if ext in taken]
    if clash:
        raise ValueError(f"extension {clash[0]!r} already belongs to the {taken[clash[0]]!r} format")
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> ModelFormat:
    """The registered format ``name``; a ModelError listing the known ones otherwise."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ModelError(f"unknown model format {name!r}", where="format",
                         fix=f"use one of: {', '.join(sorted(FORMATS))}") from None


def extension_map() -> dict[str, str]:
    """File extension -> format name, for every file format."""
    return {ext: fmt.name for fmt in FORMATS.values() for ext in fmt.extensions}


def format_for_file(path: str | Path) -> ModelFormat | None:
    """The format of a model file, by extension then by content (a format that claims files of another's
    extension, e.g. a ``torch.export`` archive named ``.pt``); None for an unknown extension."""
    file = Path(path)
    suffix = file.suffix.lower()
    name = extension_map().get(suffix)
    if name is None:
        return None
    for other in FORMATS.values():
        if suffix in other.also_reads and other.recognizes is not None and other.recognizes(file):
            return other
    return FORMATS[name]


def supported_text() -> str:
    """What Assay loads, for messages: ``ONNX (.onnx), TorchScript (...), ..., or a factory ...``."""
    files = [fmt.title for fmt in FORMATS.values() if not fmt.factory]
    factories = [fmt.title for fmt in FORMATS.values() if fmt.factory]
    return ", ".join(files) + "".join(f", or {title}" for title in factories)


# --------------------------------------------------------------------------- built-in formats


def _set_torch_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _load_onnx(spec: ModelSpec, sample: np.ndarray | None) -> Model:
    from assay.models.onnx_model import load_onnx

    return load_onnx(spec.path, outputs=spec.outputs, feature_output=spec.feature_output, threads=spec.threads,
                     class_names=spec.class_names, num_classes=spec.num_classes, sample=sample)


def _load_torchscript(spec: ModelSpec, sample: np.ndarray | None) -> Model:
    from assay.models.torch_models import load_torchscript

    _set_torch_threads(spec.threads)
    return load_torchscript(spec.path, outputs=spec.outputs, feature_layer=spec.feature_layer,
                            class_names=spec.class_names, num_classes=spec.num_classes, sample=sample)


def _load_torch_export(spec: ModelSpec, sample: np.ndarray | None) -> Model:
    from assay.models.torch_models import load_torch_export

    _set_torch_threads(spec.threads)
    return load_torch_export(spec.path, outputs=spec.outputs, feature_layer=spec.feature_layer,
                             class_names=spec.class_names, num_classes=spec.num_classes, sample=sample)


def _load_factory(spec: ModelSpec, sample: np.ndarray | None) -> Model:
    from assay.models.torch_models import load_factory

    _set_torch_threads(spec.threads)
    return load_factory(spec.path, weights=spec.weights, outputs=spec.outputs, feature_layer=spec.feature_layer,
                        class_names=spec.class_names, num_classes=spec.num_classes, sample=sample)


def _onnx_files(spec: ModelSpec) -> ModelFiles:
    from assay.models.onnx_model import onnx_files

    if not Path(spec.path).is_file():
        return ModelFiles([], f"no model file at {spec.path!r}")
    files = onnx_files(spec.path)
    extra = len(files) - 1
    return ModelFiles(files, f"model file plus {extra} external data file(s)" if extra else "model file")


def _archive_files(spec: ModelSpec) -> ModelFiles:
    if not Path(spec.path).is_file():
        return ModelFiles([], f"no model file at {spec.path!r}")
    return ModelFiles([Path(spec.path)], "model file")


def _factory_files(spec: ModelSpec) -> ModelFiles:
    if spec.weights is None:
        return ModelFiles([], "no model file: a factory without weights (its code is not counted)")
    if not Path(spec.weights).is_file():
        return ModelFiles([], f"no weights file at {spec.weights!r}")
    return ModelFiles([Path(spec.weights)], "weights file only (the factory's code is not counted)")


def _is_export_archive(file: Path) -> bool:
    """True for a ``torch.export.save`` archive (it holds ``*/models/*.json``), whatever its extension."""
    import zipfile

    try:
        with zipfile.ZipFile(file) as archive:
            return any(n.endswith("/archive_format") or ("/models/" in n and n.endswith(".json"))
                       for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


_TORCH_OPTIONS = frozenset({"feature_layer", "threads"})

register_format(ModelFormat(
    name="onnx", title="ONNX (.onnx)", noun="ONNX models", runtime="onnxruntime", load=_load_onnx,
    files=_onnx_files, extensions=(".onnx",), options=frozenset({"feature_output", "threads"})))
register_format(ModelFormat(
    name="torchscript", title="TorchScript (.pt, .pth, .ts)", noun="torch models", runtime="torch",
    load=_load_torchscript, files=_archive_files, extensions=(".pt", ".pth", ".ts"), options=_TORCH_OPTIONS))
register_format(ModelFormat(
    name="torch-export", title="torch.export (.pt2)", noun="torch models", runtime="torch",
    load=_load_torch_export, files=_archive_files, extensions=(".pt2",), options=_TORCH_OPTIONS,
    also_reads=(".pt", ".pth", ".ts"), recognizes=_is_export_archive))
register_format(ModelFormat(
    name="factory", title="a factory 'package.module:callable' with --weights (.safetensors or a state dict)",
    noun="a torch factory", runtime="torch", load=_load_factory, files=_factory_files,
    options=_TORCH_OPTIONS | {"weights"}, factory=True))
