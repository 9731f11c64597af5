"""Reading and writing evidence bundles atomically.

A bundle is a directory: ``evidence.json`` (the schema), ``predictions.npz`` (per-sample ids, labels and
clean logits, for paired comparisons without the model), plus rendered reports. It is assembled in a
temporary sibling directory and renamed into place, so a failure never leaves half a bundle behind, and
it only ever replaces a folder Assay wrote (see :mod:`assay.evidence.output`).
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from assay.errors import DataError, UserError
from assay.evidence.output import atomic_directory
from assay.evidence.schema import Evidence

__all__ = ["Predictions", "atomic_directory", "read_bundle", "read_evidence", "write_bundle"]

MAX_EVIDENCE_BYTES = 256 << 20

Predictions = dict[str, np.ndarray]


def _plain_array(values: np.ndarray) -> np.ndarray:
    """Arrays storable without pickle (object arrays become unicode)."""
    values = np.asarray(values)
    return values.astype(str) if values.dtype == object else values


def write_bundle(
    out_dir: str | os.PathLike[str],
    evidence: Evidence,
    predictions: Predictions,
    renderers: dict[str, Callable[[Evidence], str]] | None = None,
    extra_arrays: dict[str, Predictions] | None = None,
    extra_files: dict[str, str | os.PathLike[str]] | None = None,
    *,
    inputs: Iterable[Path] = (),
    force: bool = False,
) -> Path:
    """Write ``evidence.json``, ``predictions.npz``, each ``renderers[filename](evidence)`` and any
    ``extra_arrays[filename]`` npz and a copy of each ``extra_files[filename]`` into ``out_dir``, replacing a
    previous evaluation bundle there atomically (``inputs``/``force``: see :func:`atomic_directory`)."""
    with atomic_directory(out_dir, "evaluate", inputs=inputs, force=force) as tmp:
        (tmp / "evidence.json").write_text(evidence.model_dump_json(indent=2), encoding="utf-8")
        np.savez_compressed(tmp / "predictions.npz", **{k: _plain_array(v) for k, v in predictions.items()})
        for filename, arrays in (extra_arrays or {}).items():
            np.savez_compressed(tmp / filename, **{k: _plain_array(v) for k, v in arrays.items()})
        for filename, source in (extra_files or {}).items():
            shutil.copyfile(source, tmp / filename)
        for filename, render in (renderers or {}).items():
            (tmp / filename).write_text(render(evidence), encoding="utf-8")
    return Path(out_dir)


def read_evidence(path: str | os.PathLike[str]) -> Evidence:
    """Load and validate ``evidence.json`` (given the file or its bundle directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / "evidence.json"
    if not path.is_file():
        raise UserError(f"no evidence file at {path}", where=str(path), fix="point to a directory written by `assay evaluate`")
    if path.stat().st_size > MAX_EVIDENCE_BYTES:
        raise DataError(f"{path} is {path.stat().st_size >> 20} MiB, far larger than any evidence file",
                        where=str(path), fix="point to a directory written by `assay evaluate`")
    try:
        return Evidence.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, ValidationError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise UserError(
            f"{path} is not a valid evidence file: {str(exc).splitlines()[0]}",
            where=str(path),
            fix="re-run `assay evaluate` with this version of Assay to regenerate it",
        ) from None


def read_bundle(path: str | os.PathLike[str]) -> tuple[Evidence, Predictions | None]:
    """Evidence plus predictions (None when the bundle has no ``predictions.npz``)."""
    directory = Path(path)
    evidence = read_evidence(directory)
    pred_path = (directory if directory.is_dir() else directory.parent) / "predictions.npz"
    if not pred_path.exists():
        return evidence, None
    try:
        with np.load(pred_path, allow_pickle=False) as z:
            return evidence, {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise DataError(f"{pred_path} is damaged or not a predictions archive ({type(exc).__name__}: "
                        f"{str(exc)[:200]})", where=str(pred_path),
                        fix="re-run `assay evaluate` to regenerate the bundle") from None
