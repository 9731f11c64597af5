"""Evidence bundles: written atomically, read back as untrusted input.

A bundle is the folder ``assay evaluate --out`` writes (:func:`write_bundle`):

* ``evidence.json``: the :class:`~assay.evidence.schema.Evidence` (schema version ``SCHEMA_VERSION``);
* ``predictions.npz``: per-sample ``ids``, ``labels``, clean ``logits`` and ``slice_*`` columns, for paired
  comparisons without the model;
* ``reference.npz``: what monitoring compares live traffic with, a versioned
  :class:`~assay.reference.Reference` (per-sample confidence and entropy, histograms, class and prediction
  counts, ATC thresholds, monitored-feature bins, chunk statistics, provenance);
* ``report.html`` and ``report.md``: the rendered reports (plus copies of any extra files, e.g. the model);
* ``assay-manifest.json``: kind ``evaluate``, version and every file with its size and sha256, written by
  :func:`~assay.evidence.output.atomic_directory`.

The folder is assembled in a temporary sibling and renamed into place, so a failure never leaves half a
bundle behind, and it only ever replaces a folder Assay wrote (see :mod:`assay.evidence.output`).

Reads are validated, never unpickled: :func:`read_evidence` bounds the size and nesting of evidence.json and
checks its schema's major version; :func:`read_predictions` checks every array header of predictions.npz
against evidence.json before reading its data, then the values (finite logits, labels in range, unique ids);
:func:`read_reference` reads reference.npz the same way (:meth:`assay.reference.Reference.load`);
:func:`read_bundle` returns evidence and predictions as a :class:`Bundle` whose ``.reference`` is read on
first access. Every failure is a :class:`~assay.errors.DataError`.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from assay.data.npz import read_npz_member
from assay.errors import DataError
from assay.evidence.output import atomic_directory
from assay.evidence.schema import SCHEMA_VERSION, Evidence

if TYPE_CHECKING:
    from assay.reference import Reference

__all__ = [
    "Bundle",
    "Predictions",
    "atomic_directory",
    "read_bundle",
    "read_evidence",
    "read_json_object",
    "read_predictions",
    "read_reference",
    "write_bundle",
]

_REGENERATE = "re-run `assay evaluate` with this version of Assay to regenerate the bundle"
#: Longest string id / slice label read from predictions.npz (characters).
MAX_LABEL_CHARS = 1024

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
        # numpy's stub puts ``allow_pickle: bool`` beside ``**kwds``, so mypy rejects any splatted dict of arrays.
        np.savez_compressed(tmp / "predictions.npz",
                            **{k: _plain_array(v) for k, v in predictions.items()})  # type: ignore[arg-type]
        for filename, arrays in (extra_arrays or {}).items():
            np.savez_compressed(tmp / filename,
                                **{k: _plain_array(v) for k, v in arrays.items()})  # type: ignore[arg-type]
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


def read_json_object(file: Path, *, name: str, fix: str) -> dict[str, Any]:
    """A JSON object from ``file`` read as untrusted input: at most :data:`MAX_EVIDENCE_BYTES` (checked with
    ``stat`` first), UTF-8, nested at most :data:`MAX_EVIDENCE_DEPTH` deep; every failure is a DataError naming
    ``name`` with ``fix``. Nothing in it is evaluated."""
    where = str(file)
    try:
        st = file.stat()
    except OSError:
        raise DataError(f"no {name} at {file}", where=where, fix=fix) from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{file} is not a regular file", where=where, fix=fix)
    if st.st_size > MAX_EVIDENCE_BYTES:
        raise DataError(f"{name} is {st.st_size:,} bytes; a real one is far below the {MAX_EVIDENCE_BYTES:,} "
                        "accepted", where=where, fix=fix)
    try:
        with file.open("rb") as f:
            data = f.read(MAX_EVIDENCE_BYTES + 1)
        if len(data) > MAX_EVIDENCE_BYTES:
            raise DataError(f"{name} is over {MAX_EVIDENCE_BYTES:,} bytes", where=where, fix=fix)
        raw = json.loads(data.decode("utf-8-sig"))
    except OSError as exc:
        raise DataError(f"cannot read {name} ({exc.strerror or exc})", where=where,
                        fix="check the file's permissions") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{name} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}): "
                        "binary or another encoding", where=where, fix=fix) from None
    except RecursionError:
        raise DataError(f"{name} is nested too deeply", where=where, fix=fix) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{name} is not valid JSON: {exc.msg}", where=f"{file}:{exc.lineno}", fix=fix) from None
    except ValueError as exc:  # e.g. an integer longer than Python converts
        raise DataError(f"{name} is not valid JSON: {str(exc)[:200]}", where=where, fix=fix) from None
    if not isinstance(raw, dict):
        raise DataError(f"{name} must hold a JSON object, got a {type(raw).__name__}", where=where, fix=fix)
    if _nesting_depth(raw, MAX_EVIDENCE_DEPTH) > MAX_EVIDENCE_DEPTH:
        raise DataError(f"{name} is nested more than {MAX_EVIDENCE_DEPTH} levels deep", where=where, fix=fix)
    return raw


def read_evidence(path: str | os.PathLike[str]) -> Evidence:
    """``evidence.json`` of a bundle (the file or its directory), read as untrusted input
    (:func:`read_json_object`), of this schema's major version; every failure is a DataError."""
    given = Path(path)
    file = given / "evidence.json" if given.is_dir() else given
    where = str(file)
    if not file.exists():
        raise DataError(f"no evidence file at {file}", where=where,
                        fix="point to a bundle directory written by `assay evaluate`")
    raw = read_json_object(file, name="evidence.json", fix=_REGENERATE)
    version = raw.get("schema_version")
    if not isinstance(version, str) or version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        shown = repr(version)[:40] if version is not None else "none"
        raise DataError(f"evidence.json has schema version {shown}; this Assay reads version {SCHEMA_VERSION}",
                        where=where, fix=_REGENERATE + " (or read it with the Assay version that wrote it)")
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



def read_predictions(path: str | os.PathLike[str], evidence: Evidence) -> dict[str, np.ndarray] | None:
    """``predictions.npz`` of a bundle, validated against its ``evidence.json`` (None when absent).

    Read as untrusted input, never unpickled: every array's header is checked before its data is read
    (``ids``, ``labels``, ``slice_*`` of shape (n,), ``logits`` (n, classes)), then the values: finite logits,
    labels in range, unique ids. Anything else is a DataError naming the file and the array."""
    path = Path(path)
    if not path.exists():
        return None
    if not path.is_file():
        raise DataError(f"{path.name} is not a file", where=str(path), fix=_REGENERATE)
    n, num_classes = evidence.data.n, evidence.model.num_classes
    expected = {"ids": ((n,), "iuUS"), "labels": ((n,), "iu"), "logits": ((n, num_classes), "f")}
    arrays: dict[str, np.ndarray] = {}
    key = ""
    try:
        with zipfile.ZipFile(path) as zf:
            members = {info.filename[:-4]: info for info in zf.infolist() if info.filename.endswith(".npy")}
            missing = sorted(set(expected) - set(members))
            if missing:
                raise DataError(f"predictions.npz lacks {', '.join(missing)} (it holds {sorted(members)[:10]})",
                                where=str(path), fix=_REGENERATE)
            slices = sorted(k for k in members if k.startswith("slice_"))
            for key in [*expected, *slices]:
                shape, kinds = expected.get(key, ((n,), "iufbUS"))
                arrays[key] = read_npz_member(zf, members[key], shape, kinds, f"{path} [{key!r}]",
                                               fix=_REGENERATE, max_label_chars=MAX_LABEL_CHARS)
    except DataError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError, KeyError,
            NotImplementedError, RuntimeError) as exc:
        member = f" (array {key!r})" if key else ""
        detail = str(exc)[:200] or type(exc).__name__
        raise DataError(f"predictions.npz is not a readable .npz archive{member}: {detail}", where=str(path),
                        fix=_REGENERATE) from None
    logits, labels, ids = arrays["logits"], arrays["labels"].astype(np.int64), arrays["ids"]
    bad = np.flatnonzero(~np.isfinite(logits).all(axis=1))
    if bad.size:
        raise DataError(f"{bad.size} row(s) of logits are NaN or infinite (first at rows {bad[:5].tolist()})",
                        where=f"{path} ['logits']",
                        fix=_REGENERATE + "; if the model itself outputs NaN, fix the model")
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise DataError(f"{bad.size} label(s) lie outside 0..{num_classes - 1} (first at rows {bad[:5].tolist()}: "
                        f"{labels[bad[:3]].tolist()})", where=f"{path} ['labels']", fix=_REGENERATE)
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{int((counts > 1).sum())} sample id(s) occur more than once (e.g. "
                        f"{values[counts > 1][:3].tolist()})", where=f"{path} ['ids']", fix=_REGENERATE)
    arrays["labels"] = labels
    return arrays


def read_reference(path: str | os.PathLike[str], evidence: Evidence | None = None) -> Reference:
    """``reference.npz`` (the file, or a bundle folder holding it) as a :class:`~assay.reference.Reference`,
    read as untrusted input (see :meth:`Reference.load <assay.reference.Reference.load>`); with
    ``evidence``, it must describe the same evaluation, and fills the provenance older files lack."""
    from assay.reference import Reference  # layer 3: imported here, not at module level

    return Reference.load(path, evidence)


class Bundle(tuple[Evidence, Predictions | None]):
    """What :func:`read_bundle` returns: the pair ``(evidence, predictions)`` (so ``evidence, predictions =
    read_bundle(path)`` keeps working) with attributes ``.evidence``, ``.predictions`` and ``.reference``,
    the bundle's :class:`~assay.reference.Reference` (None without ``reference.npz``), read and validated
    on first access."""

    def __new__(cls, evidence: Evidence, predictions: Predictions | None, folder: Path) -> Bundle:
        bundle = super().__new__(cls, (evidence, predictions))
        bundle.folder = folder
        return bundle

    folder: Path

    def __getnewargs__(self) -> tuple[Evidence, Predictions | None, Path]:
        return self[0], self[1], self.folder  # copy and pickle rebuild it through __new__

    @property
    def evidence(self) -> Evidence:
        return self[0]

    @property
    def predictions(self) -> Predictions | None:
        return self[1]

    @cached_property
    def reference(self) -> Reference | None:
        file = self.folder / "reference.npz"
        return read_reference(file, self.evidence) if file.exists() else None


def read_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Evidence plus predictions (None when the bundle has no ``predictions.npz``), both validated as
    untrusted input (:func:`read_evidence`, :func:`read_predictions`); it unpacks to those two, and its
    ``.reference`` reads ``reference.npz`` on first access (:func:`read_reference`)."""
    directory = Path(path)
    evidence = read_evidence(directory)
    folder = directory if directory.is_dir() else directory.parent
    return Bundle(evidence, read_predictions(folder / "predictions.npz", evidence), folder)
