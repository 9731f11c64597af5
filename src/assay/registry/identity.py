"""What a registered version is made of: the model's files and sha256 (as Assay's loaders compute it, without
loading the model) and the files of an evidence bundle (checked against the bundle's own manifest).

The model sha256 must be the one ``evidence.json`` records (``model.sha256``), so it follows the loaders in
:mod:`assay.models`: an ONNX file's bytes followed by its external data files (``onnx_model.onnx_files``
order), a TorchScript / ``torch.export`` file's bytes, and for a factory sha256(``package.module:callable`` +
NUL + the weights file's bytes). Nothing is imported or run to compute it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assay.errors import ModelError, RegistryError
from assay.evidence.output import MANIFEST, read_manifest
from assay.models._common import sha256_file
from assay.models.formats import FORMATS, format_for_file, supported_text
from assay.models.spec import ModelSpec
from assay.registry.artifacts import sha256_of_file

__all__ = ["ModelFiles", "bundle_files", "data_fingerprints", "model_files"]


@dataclass(frozen=True)
class ModelFiles:
    """A model as the registry stores it: format, Assay's sha256, the spec to reload it, and its files by the
    names they are stored under (``main`` is the one :meth:`Registry.model_path` returns)."""

    format: str
    sha256: str
    spec: dict[str, Any]
    files: dict[str, Path]
    main: str


def model_files(model: str | os.PathLike[str], weights: str | os.PathLike[str] | None = None) -> ModelFiles:
    """The files and sha256 of a model file or of a factory ``package.module:callable`` with ``weights``."""
    spec = os.fspath(model)
    weights_path = None if weights is None else Path(os.fspath(weights))
    file = Path(spec)
    if file.exists() or ":" not in spec:
        return _file_model(file, weights_path)
    return _factory_model(spec, weights_path)


def _file_model(file: Path, weights: Path | None) -> ModelFiles:
    where = str(file)
    if not file.exists():
        raise ModelError("model file not found", where=where,
                         fix="check the path (or give a factory as 'package.module:callable' with --weights)")
    if not file.is_file():
        raise ModelError("the model path is not a regular file", where=where,
                         fix=f"give a model file: {supported_text()}")
    if weights is not None:
        raise ModelError("--weights applies only to a factory 'package.module:callable'", where=str(weights),
                         fix="drop --weights (the model file holds its weights)")
    fmt = format_for_file(file)
    if fmt is None:
        raise ModelError(f"unsupported model format {file.suffix.lower() or '(no extension)'!r}", where=where,
                         fix=f"give one of: {supported_text()}")
    absolute = file.resolve()
    paths = fmt.files(ModelSpec(format=fmt.name, path=str(absolute))).paths or [absolute]
    base = absolute.parent
    stored: dict[str, Path] = {}
    for path in paths:
        resolved = Path(path).resolve()
        try:
            name = resolved.relative_to(base).as_posix()
        except ValueError:
            raise ModelError(f"the model's file {resolved} lies outside the model's folder", where=where,
                             fix="keep external data files next to the model") from None
        stored[name] = resolved
    first, *rest = paths
    return ModelFiles(format=fmt.name, sha256=sha256_file(first, rest),
                      spec={"format": fmt.name, "path": str(absolute), "weights": None},
                      files=stored, main=absolute.name)


def _factory_model(spec: str, weights: Path | None) -> ModelFiles:
    factory = next(fmt for fmt in FORMATS.values() if fmt.factory)
    if weights is None:
        raise ModelError(f"the factory {spec!r} was given no weights: a registered version must pin the weights "
                         "it was evaluated with", where=spec, fix="pass --weights FILE (.safetensors or a state dict)")
    if not weights.is_file():
        raise ModelError("weights file not found", where=str(weights), fix="check the path")
    digest = hashlib.sha256(spec.encode("utf-8") + b"\0")
    with open(weights, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    absolute = weights.resolve()
    return ModelFiles(format=factory.name, sha256=digest.hexdigest(),
                      spec={"format": factory.name, "path": spec, "weights": str(absolute)},
                      files={absolute.name: absolute}, main=absolute.name)


def bundle_files(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Every file of an evidence bundle by its relative posix name, checked against the bundle's manifest
    (``assay-manifest.json``, when present): a listed file missing or changed, or a file not listed, is refused
    (the bundle is not the one Assay wrote). Symbolic links are refused."""
    root = Path(folder)
    where = str(root)
    if not root.is_dir():
        raise RegistryError("the evidence bundle is not a folder", where=where,
                            fix="pass the folder `assay evaluate --out` wrote")
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for entry in [*dirnames, *filenames]:
            path = Path(dirpath) / entry
            if path.is_symlink():
                raise RegistryError(f"the evidence bundle holds a symbolic link ({path.relative_to(root)})",
                                    where=str(path), fix="copy the file the link points to into the bundle")
        for filename in sorted(filenames):
            path = Path(dirpath) / filename
            found[path.relative_to(root).as_posix()] = path
    manifest = read_manifest(root)
    if manifest is None:
        return found
    listed = manifest.get("files")
    if not isinstance(listed, dict):
        raise RegistryError("the bundle's manifest lists no files", where=str(root / MANIFEST),
                            fix="re-run `assay evaluate` to rewrite the bundle")
    problems = []
    for name, entry in sorted(listed.items()):
        sha = entry.get("sha256") if isinstance(entry, dict) else None
        if name not in found:
            problems.append(f"{name} is missing")
        elif sha is not None and sha256_of_file(found[name]) != sha:
            problems.append(f"{name} changed")
    problems += [f"{name} is not in the manifest" for name in sorted(found) if name != MANIFEST and name not in listed]
    if problems:
        raise RegistryError(f"the evidence bundle is not the one Assay wrote: {'; '.join(problems[:5])}"
                            + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""), where=where,
                            fix="re-run `assay evaluate ... --out BUNDLE` and register the fresh bundle")
    return found


def data_fingerprints(evidence: Any) -> tuple[str, ...]:
    """``data.fingerprint`` first, then every other fingerprint the run's configuration records (OOD sets,
    calibration data), without repeats."""
    found = [evidence.data.fingerprint]
    stack: list[Any] = [evidence.config]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in sorted(item.items()):
                if isinstance(value, str) and (key == "fingerprint" or key.endswith("_fingerprint")):
                    found.append(value)
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return tuple(dict.fromkeys(found))
