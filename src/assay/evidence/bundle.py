"""Reading and writing evidence bundles atomically.

A bundle is a directory: ``evidence.json`` (the schema), ``predictions.npz`` (per-sample ids, labels and
clean logits, for paired comparisons without the model), plus rendered reports. It is assembled in a
temporary sibling directory and renamed into place, so a failure never leaves half a bundle behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from assay.errors import UserError
from assay.evidence.schema import Evidence

__all__ = ["Predictions", "atomic_directory", "read_bundle", "read_evidence", "write_bundle"]

Predictions = dict[str, np.ndarray]


def _plain_array(values: np.ndarray) -> np.ndarray:
    """Arrays storable without pickle (object arrays become unicode)."""
    values = np.asarray(values)
    return values.astype(str) if values.dtype == object else values


@contextlib.contextmanager
def atomic_directory(out_dir: str | os.PathLike[str], where: str = "--out") -> Iterator[Path]:
    """Yield a temporary sibling directory of ``out_dir`` to fill; on success it replaces ``out_dir``
    (a previous directory there is swapped out, then removed), on any error it is deleted and
    ``out_dir`` is left untouched."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory", where=where, fix="choose another output path")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it owner-only; the output gets ordinary permissions
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bundle(
    out_dir: str | os.PathLike[str],
    evidence: Evidence,
    predictions: Predictions,
    renderers: dict[str, Callable[[Evidence], str]] | None = None,
    extra_arrays: dict[str, Predictions] | None = None,
    extra_files: dict[str, str | os.PathLike[str]] | None = None,
) -> Path:
    """Write ``evidence.json``, ``predictions.npz``, each ``renderers[filename](evidence)`` and any
    ``extra_arrays[filename]`` npz and a copy of each ``extra_files[filename]`` into ``out_dir``, replacing a
    previous bundle there atomically."""
    with atomic_directory(out_dir) as tmp:
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
    if not path.exists():
        raise UserError(f"no evidence file at {path}", where=str(path), fix="point to a directory written by `assay evaluate`")
    try:
        return Evidence.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, ValidationError) as exc:
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
    with np.load(pred_path, allow_pickle=False) as z:
        return evidence, {k: z[k] for k in z.files}
