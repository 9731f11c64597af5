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
import stat
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from assay.errors import DataError, UserError
from assay.evidence.output import atomic_directory
from assay.evidence.schema import SCHEMA_VERSION, Evidence

__all__ = ["Predictions", "atomic_directory", "read_bundle", "read_evidence", "write_bundle"]

_REGENERATE = "re-run `assay evaluate` with this version of Assay to regenerate the bundle"

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


#: evidence.json is read as untrusted input: a real one is a few hundred kB.
MAX_EVIDENCE_BYTES = 64 * 2**20
#: A real evidence.json nests about 6 levels (sections > name > tables > rows > cell).
MAX_EVIDENCE_DEPTH = 64


def _nesting_depth(value: Any, limit: int) -> int:
    """Depth of nested lists/dicts (iterative, stops past ``limit``)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def read_evidence(path: str | os.PathLike[str]) -> Evidence:
    """``evidence.json`` of a bundle (the file or its directory), read as untrusted input: at most
    :data:`MAX_EVIDENCE_BYTES` (checked with ``stat`` first), UTF-8 JSON nested at most
    :data:`MAX_EVIDENCE_DEPTH` deep, of this schema's major version; every failure is a DataError."""
    given = Path(path)
    file = given / "evidence.json" if given.is_dir() else given
    where = str(file)
    try:
        st = file.stat()
    except OSError:
        raise DataError(f"no evidence file at {file}", where=where,
                        fix="point to a bundle directory written by `assay evaluate`") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{file} is not a regular file", where=where, fix=_REGENERATE)
    if st.st_size > MAX_EVIDENCE_BYTES:
        raise DataError(f"evidence.json is {st.st_size:,} bytes; a real one is far below the {MAX_EVIDENCE_BYTES:,} "
                        "accepted", where=where, fix=_REGENERATE)
    try:
        with file.open("rb") as f:
            data = f.read(MAX_EVIDENCE_BYTES + 1)
        if len(data) > MAX_EVIDENCE_BYTES:
            raise DataError(f"evidence.json is over {MAX_EVIDENCE_BYTES:,} bytes", where=where, fix=_REGENERATE)
        raw = json.loads(data.decode("utf-8-sig"))
    except OSError as exc:
        raise DataError(f"cannot read evidence.json ({exc.strerror or exc})", where=where,
                        fix="check the file's permissions") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"evidence.json is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}): "
                        "binary or another encoding", where=where, fix=_REGENERATE) from None
    except RecursionError:
        raise DataError("evidence.json is nested too deeply to be evidence", where=where, fix=_REGENERATE) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"evidence.json is not valid JSON: {exc.msg}", where=f"{file}:{exc.lineno}",
                        fix=_REGENERATE) from None
    except ValueError as exc:  # e.g. an integer longer than Python converts
        raise DataError(f"evidence.json is not valid JSON: {str(exc)[:200]}", where=where, fix=_REGENERATE) from None
    if not isinstance(raw, dict):
        raise DataError(f"evidence.json must hold a JSON object, got a {type(raw).__name__}", where=where,
                        fix=_REGENERATE)
    version = raw.get("schema_version")
    if not isinstance(version, str) or version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        shown = repr(version)[:40] if version is not None else "none"
        raise DataError(f"evidence.json has schema version {shown}; this Assay reads version {SCHEMA_VERSION}",
                        where=where, fix=_REGENERATE + " (or read it with the Assay version that wrote it)")
    if _nesting_depth(raw, MAX_EVIDENCE_DEPTH) > MAX_EVIDENCE_DEPTH:
        raise DataError(f"evidence.json is nested more than {MAX_EVIDENCE_DEPTH} levels deep", where=where,
                        fix=_REGENERATE)
    try:
        evidence = Evidence.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(part) for part in first["loc"]) or "the top level"
        raise DataError(f"evidence.json does not match the evidence schema {SCHEMA_VERSION} ({exc.error_count()} "
                        f"problem(s); first at {loc[:120]}: {first['msg'][:200]})", where=where,
                        fix=_REGENERATE) from None
    if evidence.data.n < 1 or evidence.model.num_classes < 1:
        raise DataError(f"evidence.json records {evidence.data.n} samples and {evidence.model.num_classes} classes",
                        where=where, fix=_REGENERATE)
    return evidence


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
