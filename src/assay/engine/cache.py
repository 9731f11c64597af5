"""On-disk cache of model outputs, keyed by model hash + data fingerprint + view spec.

Entries are checked, never trusted. Each ``<key>.npz`` holds the view's arrays and a JSON record: the key
it was written for, what the key was made of (model hash, data fingerprint, view spec), the row count,
and a sha256 over the key and every array's name, dtype, shape and bytes. A read that fails in any way
(truncated or corrupt file, an entry copied from another key, rows permuted or edited, a row count that
does not fit the data) is a miss; the entry is then recomputed and replaced.

A cache that cannot be written (read-only directory, full disk) never fails a run: the run goes on
without writing, says so once (a :class:`CacheWarning`, and a note in ``OutputCache.notes`` that
``run_views`` copies to ``Outputs.notes``). A cache path that exists and is not a directory is a user
error (:class:`~assay.errors.OptionError`), raised before any inference.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from assay._paths import default_cache_dir
from assay.errors import OptionError

__all__ = ["CacheWarning", "OutputCache", "ViewOutput", "cache_key", "check_cache_dir", "default_cache_dir"]

# Bump when the meaning of cached arrays or the entry layout changes (2: checksummed record).
CACHE_FORMAT = "2"
_RECORD = "__record__"
_ARRAYS = ("logits", "features", "feature_mean", "feature_std", "feature_sample", "examples", "example_index")
# Anything that reading a damaged or crafted .npz can raise: all of it makes the entry a miss.
_READ_ERRORS = (OSError, ValueError, KeyError, TypeError, EOFError, MemoryError, RecursionError, zipfile.BadZipFile,
                zlib.error)


class CacheWarning(UserWarning):
    """The output cache cannot be used as asked (the run continues without writing to it)."""


@dataclass
class ViewOutput:
    """Outputs of the model on one view: logits (N, C), features (N, D) or None, and a few of the
    view's model inputs (``examples`` at rows ``example_index``) for reports to show.

    ``feature_mean`` and ``feature_std`` (D,) summarize the features over all rows; they are there
    whenever the model exposes features, even when the features themselves were not kept."""

    logits: np.ndarray
    features: np.ndarray | None
    examples: np.ndarray | None = None
    example_index: np.ndarray | None = None
    feature_mean: np.ndarray | None = None
    feature_std: np.ndarray | None = None
    feature_sample: np.ndarray | None = None


def cache_key(*parts: str) -> str:
    h = hashlib.sha256()
    for part in (CACHE_FORMAT, *parts):
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def check_cache_dir(directory: str | os.PathLike[str]) -> Path:
    """``directory`` as a Path; OptionError when it, or the nearest of its parents that exists, is not a
    directory (a regular file given as ``--cache-dir``): a clear user error, before any inference."""
    path = Path(directory)
    for existing in (path, *path.parents):
        if existing.exists():
            if existing.is_dir():
                return path
            below = "" if existing == path else f" (its parent {existing} is a file)"
            raise OptionError(
                f"the cache directory {path} is not a directory{below}",
                where="cache_dir",
                fix="point --cache-dir (or ASSAY_CACHE_DIR) at a directory, or pass --no-cache to run without "
                    "the output cache",
            )
    return path


def _checksum(key: str, arrays: dict[str, np.ndarray]) -> str:
    """sha256 over the key and every array's name, dtype, shape and bytes (row order included)."""
    h = hashlib.sha256(key.encode("ascii"))
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        h.update(f"\0{name}\0{value.dtype.str}\0{value.shape}\0".encode())
        h.update(value.reshape(-1).view(np.uint8).data)  # the bytes in place (no copy of large arrays)
    return h.hexdigest()


class OutputCache:
    """A directory of ``<key[:2]>/<key>.npz`` entries; writes are atomic (temp file + rename).

    ``notes`` collects what a run should report: entries found damaged and recomputed, and the
    cache falling back to read-only (warned once per cache object).
    """

    def __init__(self, directory: str | os.PathLike[str] | None) -> None:
        self.directory = check_cache_dir(directory) if directory is not None else None
        self.notes: list[str] = []
        self._writable = True

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.npz"

    def _note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)

    def get(self, key: str, *, rows: int | None = None, record: dict[str, Any] | None = None) -> ViewOutput | None:
        """The entry of ``key`` if it is intact, else None (a miss).

        Intact means: a readable archive whose record names ``key`` (and agrees with ``record``, what the
        key was made of), whose arrays match the record's checksum, and whose logits have ``rows`` rows.
        """
        if self.directory is None:
            return None
        path = self._path(key)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as archive:
                stored = json.loads(bytes(archive[_RECORD]).decode("utf-8"))
                arrays = {name: archive[name] for name in archive.files if name != _RECORD}
            problem = self._mismatch(key, stored, arrays, rows, record or {})
        except _READ_ERRORS as exc:
            problem = f"unreadable ({type(exc).__name__})"
        if problem is not None:
            self._note(f"cache entry {path.name} was {problem}: recomputed and replaced")
            return None
        return ViewOutput(**{name: arrays.get(name) for name in _ARRAYS})  # type: ignore[arg-type]

    @staticmethod
    def _mismatch(key: str, stored: Any, arrays: dict[str, np.ndarray], rows: int | None,
                  record: dict[str, Any]) -> str | None:
        """Why an entry read from disk cannot serve ``key`` (None when it can)."""
        if not isinstance(stored, dict) or stored.get("format") != CACHE_FORMAT:
            return "written in another format"
        if stored.get("key") != key or any(stored.get(k) != v for k, v in record.items()):
            return "written for another model, data or view"
        if "logits" not in arrays or set(arrays) - set(_ARRAYS):
            return "missing arrays"
        if stored.get("sha256") != _checksum(key, arrays):
            return "corrupt (checksum mismatch)"
        if rows is not None and (arrays["logits"].ndim != 2 or arrays["logits"].shape[0] != rows):
            return f"for {arrays['logits'].shape[0]} rows, not {rows}"
        return None

    def put(self, key: str, output: ViewOutput, *, record: dict[str, Any] | None = None) -> None:
        """Write the entry of ``key`` (replacing any). Never raises for I/O: when the directory cannot
        be written, warns once and stops writing (reads go on)."""
        if self.directory is None or not self._writable:
            return
        arrays = {}
        for name in _ARRAYS:
            value = getattr(output, name)
            if value is not None:
                arrays[name] = value.astype(str) if value.dtype == object else value
        stored = {**(record or {}), "format": CACHE_FORMAT, "key": key, "sha256": _checksum(key, arrays)}
        arrays[_RECORD] = np.frombuffer(json.dumps(stored, sort_keys=True).encode("utf-8"), dtype=np.uint8)
        path = self._path(key)
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, path)
        except OSError as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            self._read_only(exc)
        except BaseException:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise

    def _read_only(self, exc: OSError) -> None:
        self._writable = False
        reason = exc.strerror or type(exc).__name__
        message = (f"the output cache {self.directory} cannot be written ({reason}); this run continues without "
                   "caching its outputs (fix the directory's permissions or free space, choose another with "
                   "--cache-dir, or pass --no-cache)")
        self._note(message)
        warnings.warn(message, CacheWarning, stacklevel=2)  # one location: Python shows it once
