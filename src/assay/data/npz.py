"""Load a dataset from a NumPy ``.npz`` archive, never unpickling it and never trusting its sizes.

Keys read (every other member of the archive is ignored and never decompressed):

- ``x`` (required): the inputs. ``ndim >= 3`` is an image batch (NCHW), ``ndim == 2`` a tabular batch
  ``(N, F)``; both become float32. Images are expected in [0, 1] (normalization belongs inside the model):

  * ``uint8`` images (0..255) are divided by 255, and ``Dataset.notes`` says so;
  * images of any other dtype are cast without rescaling; if their values leave [0, 1] they are kept as
    they are (the model may normalize 0-255 inputs itself; we cannot know) and ``Dataset.notes`` carries
    a warning with the range found.

  Tabular ``x`` is never rescaled or range-checked. A 1-D fixed-width unicode array (``dtype '<U…'``) is text.
- ``y`` (optional): integer class indices (whole-number floats are accepted); absent = unlabeled.
- ``ids`` (optional): one identifier per sample; default ``0..N-1``.
- ``meta_<name>``: one 1-D array per metadata column ``<name>`` (for slicing).
- ``class_names`` (optional): a 1-D string array, one name per class index.

Strings must be stored as fixed-width unicode (``np.array(names)``, not ``dtype=object``):
object arrays need pickle, which we refuse for untrusted files.

Hostile archives. The members are read with :mod:`zipfile` and the ``.npy`` header parser of
:mod:`numpy.lib.format` instead of ``np.load``, so that nothing is allocated before it is checked:

1. each used member's header (shape, dtype) is read without its data, and the size it declares
   (``prod(shape) * itemsize`` plus the header) must equal the member's uncompressed size in the zip
   directory (``ZipInfo.file_size``) — a header that lies about its shape is refused, naming the key;
2. the memory the loaded data set needs (declared bytes plus the float32 copy of ``x``) must fit
   :func:`assay.data.limits.memory_limit` (half the machine's memory; ``ASSAY_MAX_DATA_BYTES`` overrides);
3. data is streamed into a buffer of exactly the declared size: :mod:`zipfile` never returns more than
   ``file_size`` bytes of a member and checks its CRC-32 at the end, so a member that decompresses to more
   than its directory entry says (a zip bomb), or to less, is refused without growing past the declared size.
   Only stored and deflated members (what ``numpy.savez`` / ``savez_compressed`` write) are accepted.
"""

from __future__ import annotations

import io
import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, cast

import numpy as np
import numpy.lib.format as npy_format

from assay.data.dataset import DataNote, Dataset, Modality, image_range_note, reject_rows
from assay.data.limits import format_bytes, require_fits
from assay.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["UINT8_SCALED_NOTE", "NpyHeader", "integer_labels", "load_npy", "load_npz", "read_npy_header",
           "read_npz_member", "require_unique_ids"]

_META_PREFIX = "meta_"
_USED_KEYS = ("x", "y", "ids", "class_names")
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
_READ_CHUNK = 4 * 1024 * 1024
# What zipfile raises for damaged members: a CRC-32 mismatch, a broken deflate stream, a short file.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError)
_RESAVE = "re-save the data with numpy.savez or numpy.savez_compressed"
UINT8_SCALED_NOTE = DataNote("image inputs 'x' are uint8 (0..255) and were divided by 255 to lie in [0, 1]",
                             severity="info")


def integer_labels(values: np.ndarray, *, where: str, what: str = "labels") -> np.ndarray:
    """Labels as int64 class indices; whole-number floats pass, anything else is a DataError."""
    values = np.asarray(values)
    if values.ndim != 1:
        fix = "store one integer class index per sample"
        if values.ndim == 2 and values.shape[1] > 1:
            fix = "these look one-hot; store y.argmax(axis=1) instead"
        raise DataError(f"{what} must be 1-D, got shape {values.shape}", where=where, fix=fix)
    kind = values.dtype.kind
    if kind in "iub":
        return values.astype(np.int64)
    if kind == "f":
        reject_rows(~np.isfinite(values), f"{what} are missing or infinite", where=where,
                    fix="drop the unlabeled rows or give every sample a class index")
        fractional = values != np.round(values)
        if fractional.any():
            rows = np.flatnonzero(fractional)[:5].tolist()
            raise DataError(
                f"{what} must be whole class indices; {int(fractional.sum())} are not "
                f"(e.g. {values[fractional][:3].tolist()} at rows {rows})",
                where=where,
                fix="store integer class indices 0..C-1 (not probabilities or regression targets)",
            )
        return values.astype(np.int64)
    raise DataError(
        f"{what} have dtype {values.dtype}; expected integer class indices",
        where=where,
        fix="store integer class indices 0..C-1 and put the names in 'class_names'",
    )


def load_npz(path: str | os.PathLike[str], *, name: str | None = None) -> Dataset:
    """Read ``x``, ``y``, ``ids``, ``meta_*`` and ``class_names`` from an ``.npz`` file (no pickle).

    Sizes are checked from the headers before anything is allocated (see the module docstring).
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise DataError("no such file", where=where, fix="check the path to the .npz file")
    with _open_archive(path, where) as archive:
        members = _members(archive)
        if "x" not in members:
            raise DataError(
                f"no 'x' array in the archive (keys present: {list(members)})",
                where=where,
                fix="save the inputs under the key 'x', e.g. numpy.savez(path, x=inputs, y=labels)",
            )
        used = [key for key in members if key in _USED_KEYS or key.startswith(_META_PREFIX)]
        headers = {key: _header(archive, members[key], key, where) for key in used}
        require_fits(
            _loaded_bytes(headers),
            what=f"loading the arrays {used[:6]}{' ...' if len(used) > 6 else ''} "
            f"(x: shape {headers['x'].shape}, {headers['x'].dtype})",
            where=where,
            fix="evaluate a smaller file (e.g. a random subset of the samples) or use a machine with more memory",
        )
        arrays = {key: _read_member(archive, members[key], headers[key], where) for key in used}

    x, modality, notes = _inputs(arrays["x"], where)
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
        notes=notes,
    )


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` header declares, read without its data (``key`` names the array in messages)."""

    key: str
    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype
    data_offset: int  # bytes of magic + header before the data, from the start of the array

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.count * self.dtype.itemsize


def _open_archive(path: Path, where: str) -> zipfile.ZipFile:
    with path.open("rb") as file:
        magic = file.read(len(_NPY_MAGIC))
    if magic == _NPY_MAGIC:
        raise DataError(
            "this is a single .npy array, not an .npz archive",
            where=where,
            fix="save with numpy.savez(path, x=inputs, y=labels)",
        )
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise DataError(f"not a readable .npz archive ({exc})", where=where, fix=f"{_RESAVE}") from exc


def _members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Key -> directory entry, keys named as ``np.load`` names them (``x.npy`` -> ``x``); later entries win."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        if info.is_dir():
            continue
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        members[key] = info
    return members


def _header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, where: str) -> NpyHeader:
    """Parse one member's ``.npy`` header without reading its data, and check it against the zip directory."""
    if info.compress_type not in _ZIP_METHODS:
        raise DataError(
            f"array {key!r} is compressed with zip method {info.compress_type}; only stored or deflated "
            "members (what numpy writes) are read",
            where=where,
            fix=_RESAVE,
        )
    if info.flag_bits & 0x1:
        raise DataError(f"array {key!r} is encrypted", where=where, fix=f"{_RESAVE}, without a password")
    try:
        with archive.open(info) as stream:
            return _parse_header(stream, key, info.file_size, "its zip entry", where)
    except _ZIP_ERRORS as exc:
        raise _corrupt(key, exc, where) from exc


def read_npy_header(stream: IO[bytes], key: str, where: str, fix: str | None = None) -> NpyHeader:
    """Read the magic and header of a ``.npy`` stream (nothing more; ``data_offset`` counts from where the
    stream was). Unreadable headers, object dtypes (only unpickling reads them) and negative dimensions are
    DataErrors, so callers can check the declared shape and size before anything is allocated. Shared by
    every reader of untrusted arrays (NPZ members, -C folders, bundles' predictions)."""
    start = stream.tell()
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_2_0(stream)
        else:  # 3.0 only differs for structured dtypes with non-latin-1 field names, which we never read
            raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
        data_offset = stream.tell() - start
    except (ValueError, TypeError, OverflowError, SyntaxError, RecursionError, MemoryError, EOFError) as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise DataError(f"array {key!r} is not a readable .npy array ({detail})", where=where,
                        fix=fix or _RESAVE) from exc
    if dtype.hasobject:
        raise DataError(
            f"array {key!r} has dtype object, which can only be loaded by unpickling (refused for safety)",
            where=where,
            fix=fix or f"store strings as a fixed-width unicode array, e.g. {key}=numpy.array(list_of_str) "
            "(dtype '<U…'), and numbers with a numeric dtype",
        )
    if any(size < 0 for size in shape):
        raise DataError(f"array {key!r} declares a negative dimension in its shape {shape}", where=where,
                        fix=fix or _RESAVE)
    return NpyHeader(key, tuple(int(d) for d in shape), bool(fortran_order), dtype, data_offset)


def _parse_header(stream: IO[bytes], key: str, stored_size: int, container: str, where: str) -> NpyHeader:
    """:func:`read_npy_header`, refusing a header whose declared data size differs from
    ``stored_size - header`` (the size the container, zip entry or file, says it holds)."""
    header = read_npy_header(stream, key, where)
    stored = stored_size - header.data_offset
    if stored != header.nbytes:
        raise DataError(
            f"array {key!r} declares shape {header.shape} of {header.dtype} = {header.nbytes:,} bytes "
            f"({format_bytes(header.nbytes)}), but {container} holds {stored:,} bytes of data; "
            "the header and the stored size disagree (a corrupt or crafted file)",
            where=where,
            fix=f"{_RESAVE}; do not edit .npy headers by hand",
        )
    return header


def _loaded_bytes(headers: dict[str, NpyHeader]) -> int:
    """Memory of the loaded arrays: each member's declared bytes, plus the float32 copy of numeric ``x``
    (text ``x`` becomes Python strings instead: about 64 bytes of object overhead per string)."""
    x = headers["x"]
    copy = x.count * (64 + x.dtype.itemsize) if x.dtype.kind in "US" else x.count * 4
    return sum(h.nbytes for h in headers.values()) + copy


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, header: NpyHeader, where: str) -> np.ndarray:
    """A member's data, streamed into a buffer of exactly the declared size (zipfile returns no more than
    ``file_size`` bytes); reading to the end makes zipfile check the CRC-32."""
    try:
        with archive.open(info) as stream:
            stream.read(header.data_offset)
            # typeshed types ZipFile.open as IO[bytes]; in read mode it returns a ZipExtFile (has readinto)
            array = _fill(cast(zipfile.ZipExtFile, stream), header, where)
            stream.read(1)
    except _ZIP_ERRORS as exc:
        raise _corrupt(header.key, exc, where) from exc
    return array


def _fill(stream: io.BufferedIOBase, header: NpyHeader, where: str) -> np.ndarray:
    """Read the declared bytes from ``stream`` (positioned after the header) in chunks, and shape them."""
    try:
        buffer = np.empty(header.nbytes, dtype=np.uint8)
    except MemoryError as exc:  # under the limit (or no limit known) but not free right now
        raise DataError(
            f"not enough free memory for array {header.key!r} ({format_bytes(header.nbytes)})",
            where=where,
            fix="free memory, evaluate a smaller file, or use a machine with more memory",
        ) from exc
    view = buffer.data  # a writable memoryview of the buffer (no copy)
    filled = 0
    while filled < header.nbytes:
        got = stream.readinto(view[filled : filled + _READ_CHUNK])
        if not got:
            break
        filled += got
    if filled != header.nbytes:
        raise DataError(
            f"array {header.key!r} ends after {filled:,} of the {header.nbytes:,} bytes its header declares",
            where=where,
            fix=f"{_RESAVE}; the file may be truncated",
        )
    if header.dtype.itemsize == 0:
        return np.zeros(header.shape, dtype=header.dtype)
    flat = buffer.view(header.dtype)
    if header.fortran_order:
        return flat.reshape(header.shape[::-1]).transpose()
    return flat.reshape(header.shape)


def load_npy(path: str | os.PathLike[str], *, what: str | None = None) -> np.ndarray:
    """One standalone ``.npy`` file, read with the checks of an NPZ member: no pickle, the header's declared
    size must equal the file's data size, and it must fit :func:`assay.data.limits.memory_limit` — all
    before the array is allocated. ``what`` names the array in messages (default: the file stem)."""
    path = Path(path)
    where = str(path)
    key = what or path.stem
    try:
        with path.open("rb") as stream:
            header = _parse_header(stream, key, os.fstat(stream.fileno()).st_size, "the file", where)
            require_fits(
                header.nbytes,
                what=f"array {key!r} (shape {header.shape}, {header.dtype})",
                where=where,
                fix="use a smaller file or a machine with more memory",
            )
            return _fill(stream, header, where)
    except OSError as exc:
        raise DataError(f"cannot read {path.name} ({exc})", where=where, fix="check the path and permissions") from exc


def _corrupt(key: str, exc: Exception, where: str) -> DataError:
    what = f"array {key!r} cannot be read ({exc}); the archive is corrupt or crafted"
    return DataError(what, where=where, fix=_RESAVE)


def _inputs(x: np.ndarray, where: str) -> tuple[np.ndarray, Modality, list[str]]:
    """``x`` as model inputs, its modality, and the notes on how it was read (uint8 scaling, range)."""
    kind = x.dtype.kind
    if kind in "US":
        if x.ndim != 1:
            raise DataError(
                f"text inputs must be a 1-D string array, got shape {x.shape}",
                where=where,
                fix="store one string per sample",
            )
        text = x.astype(str).astype(object)
        return text, "text", []
    if kind not in "biuf":
        raise DataError(
            f"'x' has dtype {x.dtype}; expected numbers or fixed-width strings",
            where=where,
            fix="store inputs as float32 (images NCHW in [0, 1]) or as a unicode array for text",
        )
    if x.ndim < 2:
        raise DataError(
            f"'x' has shape {x.shape}; expected (N, F) features or (N, C, H, W) images",
            where=where,
            fix="add the feature axis, e.g. x[:, None] for a single feature",
        )
    values = x.astype(np.float32, copy=False)  # float32 files are used as read: no second copy
    if x.ndim == 2:
        return values, "tabular", []
    if x.dtype == np.uint8:
        values /= np.float32(255.0)
        return values, "image", [UINT8_SCALED_NOTE]
    note = image_range_note(values)
    return values, "image", [] if note is None else [note]


def _ids(ids: np.ndarray, n: int, where: str) -> np.ndarray:
    if ids.ndim != 1 or len(ids) != n:
        raise DataError(f"'ids' has shape {ids.shape}; expected ({n},)", where=where, fix="give one id per input")
    if ids.dtype.kind in "US":
        ids = ids.astype(str)
    require_unique_ids(ids, where=where)
    return ids


def require_unique_ids(ids: np.ndarray, *, where: str, fix: str = "give every sample a unique id") -> None:
    """Ids key per-sample results (paired comparisons), so a repeat would silently merge two samples."""
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        repeated = values[counts > 1][:5].tolist()
        raise DataError(f"{int((counts > 1).sum())} id(s) occur more than once (e.g. {repeated})", where=where, fix=fix)


def _meta(arrays: dict[str, np.ndarray], n: int, where: str) -> pd.DataFrame | None:
    """The ``meta_<name>`` columns as a DataFrame; None without any (pandas is then not imported)."""
    columns: dict[str, np.ndarray] = {}
    for key, values in arrays.items():
        if not key.startswith(_META_PREFIX):
            continue
        column = key[len(_META_PREFIX) :]
        if not column or values.ndim != 1 or len(values) != n:
            raise DataError(
                f"metadata array {key!r} has shape {values.shape}; expected ({n},) under a key 'meta_<name>'",
                where=where,
                fix="store one value per sample for each metadata column",
            )
        columns[column] = values.astype(str) if values.dtype.kind in "US" else values
    if not columns:
        return None
    import pandas as pd

    return pd.DataFrame(columns, index=pd.RangeIndex(n))


def _class_names(names: np.ndarray, y: np.ndarray | None, where: str) -> list[str]:
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise DataError(
            f"'class_names' must be a 1-D string array, got dtype {names.dtype} and shape {names.shape}",
            where=where,
            fix="store class_names=numpy.array(['cat', 'dog', ...])",
        )
    result = [str(name) for name in names.astype(str)]
    if y is not None and len(y) and (y.min() < 0 or y.max() >= len(result)):
        raise DataError(
            f"labels range over [{int(y.min())}, {int(y.max())}] but only {len(result)} class names are given",
            where=where,
            fix="give one class name per class index 0..C-1",
        )
    return result


def read_npz_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, shape: tuple[int, ...], kinds: str, where: str,
                    *, implied_by: str = "evidence.json", fix: str = _RESAVE, max_label_chars: int = 1024
                    ) -> np.ndarray:
    """One array of an npz archive, checked before its data is read: the header must claim ``shape`` (what
    ``implied_by`` says it must be) and a dtype of ``kinds`` (numpy kind letters); then exactly the claimed
    bytes are read (so memory never exceeds what the caller expects, however large the archive claims to
    be) and the member's CRC is verified. Never unpickles (object dtypes are refused by the header reader)."""
    with zf.open(info) as f:
        header = read_npy_header(f, info.filename.removesuffix(".npy"), where, fix=fix)
        if header.dtype.kind not in kinds:
            raise DataError(f"the array has dtype {header.dtype}, expected {_kind_words(kinds)}", where=where,
                            fix=fix)
        if header.dtype.kind in "US" and header.dtype.itemsize > 4 * max_label_chars:
            raise DataError(f"the strings are up to {header.dtype.itemsize // 4:,} characters long (at most "
                            f"{max_label_chars})", where=where, fix=fix)
        if header.shape != shape:
            raise DataError(f"the array has shape {header.shape}, but {implied_by} implies {shape}", where=where,
                            fix=fix)
        data = f.read(header.nbytes + 1)  # reading past the end verifies the CRC
    if len(data) != header.nbytes:
        raise DataError(f"the array holds {len(data):,} bytes of data; its header says {header.nbytes:,} "
                        "(truncated or corrupt)", where=where, fix=fix)
    array = np.frombuffer(data, dtype=header.dtype).reshape(shape, order="F" if header.fortran_order else "C")
    return array.astype(header.dtype.newbyteorder("="))  # a native-order, writable copy


_KIND_WORDS = {"i": "integers", "u": "unsigned integers", "f": "floating point numbers", "b": "booleans",
               "U": "strings", "S": "strings"}


def _kind_words(kinds: str) -> str:
    words = list(dict.fromkeys(_KIND_WORDS[k] for k in kinds if k != "u" or "i" not in kinds))
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
