"""Load a dataset from a NumPy ``.npz`` archive, never unpickling it.

Keys read (anything else is ignored):

- ``x`` (required): the inputs. ``ndim >= 3`` is an image batch (expected NCHW in [0, 1]),
  ``ndim == 2`` a tabular batch ``(N, F)``; both are cast to float32 *without rescaling* — an
  integer image array in 0..255 stays in 0..255, so store images already divided by 255.
  A 1-D fixed-width unicode array (``dtype '<U…'``) is text.
- ``y`` (optional): integer class indices (whole-number floats are accepted); absent = unlabeled.
- ``ids`` (optional): one identifier per sample; default ``0..N-1``.
- ``meta_<name>``: one 1-D array per metadata column ``<name>`` (for slicing).
- ``class_names`` (optional): a 1-D string array, one name per class index.

Strings must be stored as fixed-width unicode (``np.array(names)``, not ``dtype=object``):
object arrays need pickle, which we refuse for untrusted files.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from assay.data.dataset import Dataset, Modality, reject_rows
from assay.errors import UserError

__all__ = ["integer_labels", "load_npz", "require_unique_ids"]

_META_PREFIX = "meta_"


def integer_labels(values: np.ndarray, *, where: str, what: str = "labels") -> np.ndarray:
    """Labels as int64 class indices; whole-number floats pass, anything else is a UserError."""
    values = np.asarray(values)
    if values.ndim != 1:
        fix = "store one integer class index per sample"
        if values.ndim == 2 and values.shape[1] > 1:
            fix = "these look one-hot; store y.argmax(axis=1) instead"
        raise UserError(f"{what} must be 1-D, got shape {values.shape}", where=where, fix=fix)
    kind = values.dtype.kind
    if kind in "iub":
        return values.astype(np.int64)
    if kind == "f":
        reject_rows(~np.isfinite(values), f"{what} are missing or infinite", where=where,
                    fix="drop the unlabeled rows or give every sample a class index")
        fractional = values != np.round(values)
        if fractional.any():
            rows = np.flatnonzero(fractional)[:5].tolist()
            raise UserError(
                f"{what} must be whole class indices; {int(fractional.sum())} are not "
                f"(e.g. {values[fractional][:3].tolist()} at rows {rows})",
                where=where,
                fix="store integer class indices 0..C-1 (not probabilities or regression targets)",
            )
        return values.astype(np.int64)
    raise UserError(
        f"{what} have dtype {values.dtype}; expected integer class indices",
        where=where,
        fix="store integer class indices 0..C-1 and put the names in 'class_names'",
    )


def load_npz(path: str | os.PathLike[str], *, name: str | None = None) -> Dataset:
    """Read ``x``, ``y``, ``ids``, ``meta_*`` and ``class_names`` from an ``.npz`` file (no pickle)."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise UserError("no such file", where=where, fix="check the path to the .npz file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UserError(
            f"not a readable .npz archive ({exc})",
            where=where,
            fix="write it with numpy.savez or numpy.savez_compressed",
        ) from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise UserError(
            "this is a single .npy array, not an .npz archive",
            where=where,
            fix="save with numpy.savez(path, x=inputs, y=labels)",
        )
    with archive:
        keys = list(archive.files)
        if "x" not in keys:
            raise UserError(
                f"no 'x' array in the archive (keys present: {keys})",
                where=where,
                fix="save the inputs under the key 'x', e.g. numpy.savez(path, x=inputs, y=labels)",
            )
        arrays = {key: _read(archive, key, where) for key in keys}

    x, modality = _inputs(arrays["x"], where)
    n = len(x)
    y = integer_labels(arrays["y"], where=f"{where} ['y']") if "y" in arrays else None
    ids = _ids(arrays["ids"], n, where) if "ids" in arrays else np.arange(n)
    meta = _meta(arrays, n, where)
    class_names = _class_names(arrays["class_names"], y, where) if "class_names" in arrays else None
    return Dataset(
        x=x,
        y=y,
        ids=ids,
        modality=modality,
        name=name or path.stem,
        source=where,
        class_names=class_names,
        meta=meta,
    )


def _read(archive: np.lib.npyio.NpzFile, key: str, where: str) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise UserError(f"cannot read array {key!r} ({exc})", where=where, fix="re-save the archive") from exc
        raise UserError(
            f"array {key!r} has dtype object, which can only be loaded by unpickling (refused for safety)",
            where=where,
            fix=f"store strings as a fixed-width unicode array, e.g. {key}=numpy.array(list_of_str) "
            "(dtype '<U…'), and numbers with a numeric dtype",
        ) from exc


def _inputs(x: np.ndarray, where: str) -> tuple[np.ndarray, Modality]:
    kind = x.dtype.kind
    if kind in "US":
        if x.ndim != 1:
            raise UserError(
                f"text inputs must be a 1-D string array, got shape {x.shape}",
                where=where,
                fix="store one string per sample",
            )
        text = x.astype(str).astype(object)
        return text, "text"
    if kind not in "biuf":
        raise UserError(
            f"'x' has dtype {x.dtype}; expected numbers or fixed-width strings",
            where=where,
            fix="store inputs as float32 (images NCHW in [0, 1]) or as a unicode array for text",
        )
    if x.ndim < 2:
        raise UserError(
            f"'x' has shape {x.shape}; expected (N, F) features or (N, C, H, W) images",
            where=where,
            fix="add the feature axis, e.g. x[:, None] for a single feature",
        )
    modality: Modality = "image" if x.ndim >= 3 else "tabular"
    return x.astype(np.float32), modality


def _ids(ids: np.ndarray, n: int, where: str) -> np.ndarray:
    if ids.ndim != 1 or len(ids) != n:
        raise UserError(f"'ids' has shape {ids.shape}; expected ({n},)", where=where, fix="give one id per input")
    if ids.dtype.kind in "US":
        ids = ids.astype(str)
    require_unique_ids(ids, where=where)
    return ids


def require_unique_ids(ids: np.ndarray, *, where: str, fix: str = "give every sample a unique id") -> None:
    """Ids key per-sample results (paired comparisons), so a repeat would silently merge two samples."""
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        repeated = values[counts > 1][:5].tolist()
        raise UserError(f"{int((counts > 1).sum())} id(s) occur more than once (e.g. {repeated})", where=where, fix=fix)


def _meta(arrays: dict[str, np.ndarray], n: int, where: str) -> pd.DataFrame:
    columns: dict[str, np.ndarray] = {}
    for key, values in arrays.items():
        if not key.startswith(_META_PREFIX):
            continue
        column = key[len(_META_PREFIX) :]
        if not column or values.ndim != 1 or len(values) != n:
            raise UserError(
                f"metadata array {key!r} has shape {values.shape}; expected ({n},) under a key 'meta_<name>'",
                where=where,
                fix="store one value per sample for each metadata column",
            )
        columns[column] = values.astype(str) if values.dtype.kind in "US" else values
    return pd.DataFrame(columns, index=pd.RangeIndex(n))


def _class_names(names: np.ndarray, y: np.ndarray | None, where: str) -> list[str]:
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise UserError(
            f"'class_names' must be a 1-D string array, got dtype {names.dtype} and shape {names.shape}",
            where=where,
            fix="store class_names=numpy.array(['cat', 'dog', ...])",
        )
    result = [str(name) for name in names.astype(str)]
    if y is not None and len(y) and (y.min() < 0 or y.max() >= len(result)):
        raise UserError(
            f"labels range over [{int(y.min())}, {int(y.max())}] but only {len(result)} class names are given",
            where=where,
            fix="give one class name per class index 0..C-1",
        )
    return result
