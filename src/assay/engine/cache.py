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

Housekeeping (``assay cache info|clear``) is pure functions over the folder: :func:`cache_entries` lists
what the cache wrote, and nothing else: files named ``<key[:2]>/<key>.npz`` (a 64-hex key) that are numpy
archives holding only the cache's arrays. A hit touches its entry, so an entry's modification time is
when it was last used: :func:`older_than` selects by it, :func:`over_cap` picks the least recently used
entries to drop under a size cap, and :func:`remove_entries` checks each file again before deleting it.
An ``OutputCache`` with ``max_bytes`` (default: ``$ASSAY_CACHE_MAX_MB`` megabytes of 2**20 bytes, else no
cap) evicts least-recently-used entries after each write until the entries fit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import time
import warnings
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from assay._paths import default_cache_dir
from assay.errors import OptionError

__all__ = [
    "MAX_MB_ENV",
    "CacheEntry",
    "CacheSummary",
    "CacheWarning",
    "Cleared",
    "OutputCache",
    "Removed",
    "ViewOutput",
    "cache_entries",
    "cache_key",
    "check_cache_dir",
    "clear_cache",
    "default_cache_dir",
    "max_bytes_from_env",
    "older_than",
    "over_cap",
    "parse_duration",
    "remove_entries",
    "stale_temp_files",
    "summarize_cache",
]

# Bump when the meaning of cached arrays or the entry layout changes (2: checksummed record).
CACHE_FORMAT = "2"
_RECORD = "__record__"
_ARRAYS = ("logits", "features", "feature_mean", "feature_std", "feature_sample", "examples", "example_index")
# Names of what the cache writes: <key[:2]>/<key>.npz entries and, while one is written, .<key>.<random>.tmp.
_SHARD_NAME = re.compile(r"[0-9a-f]{2}")
_ENTRY_NAME = re.compile(r"([0-9a-f]{64})\.npz")
_TEMP_NAME = re.compile(r"\.([0-9a-f]{64})\.[A-Za-z0-9_]+\.tmp")
MAX_MB_ENV = "ASSAY_CACHE_MAX_MB"
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
    cache falling back to read-only (warned once per cache object). ``max_bytes``: after each write, the
    least recently used entries are deleted until the entries fit (the one just written is kept); None reads
    ``$ASSAY_CACHE_MAX_MB`` (no cap when unset).
    """

    def __init__(self, directory: str | os.PathLike[str] | None, *, max_bytes: int | None = None) -> None:
        self.directory = check_cache_dir(directory) if directory is not None else None
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1):
            raise OptionError(f"max_bytes must be a positive number of bytes, got {max_bytes!r}", where="max_bytes",
                              fix="give the cap in bytes, e.g. 2 * 2**30 for 2 GiB, or None for no cap")
        self.max_bytes = max_bytes if max_bytes is not None else max_bytes_from_env()
        self.notes: list[str] = []
        self._writable = True
        self._bytes_known: int | None = None  # entry bytes in the folder as of the last listing plus writes since

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
        with contextlib.suppress(OSError):  # a read-only cache still serves its entries
            os.utime(path)  # last used now: the size cap and `assay cache clear --older-than` go by it
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
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, path)
        except OSError as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            self._read_only(exc)
            return
        except BaseException:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise
        if self.max_bytes is not None:
            self._evict(keep=path)

    def _evict(self, keep: Path) -> None:
        """Delete least-recently-used entries until the cache fits ``max_bytes`` (never ``keep``). The folder is
        listed (names and sizes) on the first write and whenever the running total says the cap may be passed,
        not on every write; each file is checked to be an entry before it is deleted."""
        assert self.directory is not None and self.max_bytes is not None
        if self._bytes_known is not None:
            try:
                self._bytes_known += keep.stat().st_size  # a replaced entry counts twice: a listing comes sooner
            except OSError:
                self._bytes_known = None
        if self._bytes_known is not None and self._bytes_known <= self.max_bytes:
            return
        candidates = _named_entries(self.directory)
        total = sum(e.size for e in candidates)
        if total > self.max_bytes:
            total -= remove_entries(over_cap(candidates, self.max_bytes, keep={keep})).bytes  # never raises
        self._bytes_known = total

    def _read_only(self, exc: OSError) -> None:
        self._writable = False
        reason = exc.strerror or type(exc).__name__
        message = (f"the output cache {self.directory} cannot be written ({reason}); this run continues without "
                   "caching its outputs (fix the directory's permissions or free space, choose another with "
                   "--cache-dir, or pass --no-cache)")
        self._note(message)
        warnings.warn(message, CacheWarning, stacklevel=2)  # one location: Python shows it once


# ------------------------------------------------------------------------------------- housekeeping


@dataclass(frozen=True)
class CacheEntry:
    """One entry on disk: its file, its size in bytes and when it was last used (written or read: a hit
    touches the file), in seconds since the epoch."""

    path: Path
    size: int
    last_used: float


@dataclass(frozen=True)
class CacheSummary:
    """What ``assay cache info`` shows: the folder, whether it exists, its entries (count, bytes, least and
    most recently used), the size cap in force, and how many other files lie there (never touched)."""

    directory: Path
    exists: bool
    entries: int
    total_bytes: int
    least_recently_used: float | None
    most_recently_used: float | None
    max_bytes: int | None
    other_files: int


def max_bytes_from_env() -> int | None:
    """The size cap set by ``$ASSAY_CACHE_MAX_MB`` (megabytes of 2**20 bytes) in bytes; None when unset."""
    text = os.environ.get(MAX_MB_ENV, "").strip()
    if not text:
        return None
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = float("nan")
    if not megabytes > 0 or megabytes == float("inf"):
        raise OptionError(f"{MAX_MB_ENV}={text!r} is not a size in megabytes", where=MAX_MB_ENV,
                          fix=f"set {MAX_MB_ENV} to a positive number of megabytes, e.g. 2000, or unset it for no cap")
    return max(1, int(megabytes * 2**20))


def _named_entries(directory: Path) -> list[CacheEntry]:
    """Files named like entries (``<key[:2]>/<key>.npz``), least recently used first; contents unchecked."""
    found: list[CacheEntry] = []
    try:
        shards = [d for d in os.scandir(directory) if _SHARD_NAME.fullmatch(d.name) and d.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    for shard in shards:
        try:
            files = list(os.scandir(shard.path))
        except OSError:
            continue
        for file in files:
            match = _ENTRY_NAME.fullmatch(file.name)
            if match is None or not match[1].startswith(shard.name) or not file.is_file(follow_symlinks=False):
                continue
            try:
                stat = file.stat(follow_symlinks=False)
            except OSError:
                continue
            found.append(CacheEntry(Path(file.path), stat.st_size, stat.st_mtime))
    return sorted(found, key=lambda e: (e.last_used, str(e.path)))


def _written_by_cache(path: Path) -> bool:
    """True for an archive the cache wrote: a zip (``np.savez``) whose members are the cache's arrays, logits
    among them (every entry format so far). A damaged entry fails this and is left alone, like any other file."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            members = set(archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return False
    return "logits.npy" in members and members <= {f"{name}.npy" for name in (*_ARRAYS, _RECORD)}


def cache_entries(directory: str | os.PathLike[str]) -> list[CacheEntry]:
    """The entries the cache wrote in ``directory``, least recently used first (nothing else in the folder is
    listed, so nothing else is ever selected for deletion); [] when the folder does not exist."""
    return [e for e in _named_entries(check_cache_dir(directory)) if _written_by_cache(e.path)]


def stale_temp_files(directory: str | os.PathLike[str], *, min_age_s: float = 3600.0,
                     now: float | None = None) -> list[Path]:
    """Temp files a write left behind (``<key[:2]>/.<key>.<random>.tmp``, from an interrupted run) that are
    older than ``min_age_s`` (a younger one may be a write in progress)."""
    now = time.time() if now is None else now
    path = check_cache_dir(directory)
    stale: list[Path] = []
    if not path.is_dir():
        return stale
    for shard in path.iterdir():
        if not _SHARD_NAME.fullmatch(shard.name) or shard.is_symlink() or not shard.is_dir():
            continue
        for file in shard.iterdir():
            match = _TEMP_NAME.fullmatch(file.name)
            try:
                if (match and match[1].startswith(shard.name) and not file.is_symlink() and file.is_file()
                        and file.stat().st_mtime < now - min_age_s):
                    stale.append(file)
            except OSError:
                continue
    return stale


def older_than(entries: Iterable[CacheEntry], seconds: float, *, now: float | None = None) -> list[CacheEntry]:
    """The entries last used more than ``seconds`` ago."""
    cutoff = (time.time() if now is None else now) - seconds
    return [e for e in entries if e.last_used < cutoff]


def over_cap(entries: Iterable[CacheEntry], max_bytes: int, *, keep: Iterable[Path] = ()) -> list[CacheEntry]:
    """The least recently used entries to delete so that the rest take at most ``max_bytes`` (entries in
    ``keep`` stay, even when they alone exceed the cap)."""
    kept = {Path(p) for p in keep}
    ordered = sorted(entries, key=lambda e: (e.last_used, str(e.path)))
    total = sum(e.size for e in ordered)
    drop: list[CacheEntry] = []
    for entry in ordered:
        if total <= max_bytes:
            break
        if entry.path in kept:
            continue
        drop.append(entry)
        total -= entry.size
    return drop


class Removed(NamedTuple):
    """What :func:`remove_entries` did: entries deleted, bytes freed, and entries that could not be deleted."""

    entries: int
    bytes: int
    failed: list[Path]


def remove_entries(entries: Iterable[CacheEntry]) -> Removed:
    """Delete ``entries``, each checked again to be a cache entry first (a file that is not, or that is gone,
    is skipped; one that cannot be deleted is listed in ``failed``), then the shard folders they leave empty.
    Never raises for I/O."""
    count = freed = 0
    failed: list[Path] = []
    shards: set[Path] = set()
    for entry in entries:
        if not (_ENTRY_NAME.fullmatch(entry.path.name) and _SHARD_NAME.fullmatch(entry.path.parent.name)
                and _written_by_cache(entry.path)):
            continue
        try:
            entry.path.unlink()
        except FileNotFoundError:
            continue  # another process evicted it first
        except OSError:
            failed.append(entry.path)
            continue
        count += 1
        freed += entry.size
        shards.add(entry.path.parent)
    for shard in shards:
        with contextlib.suppress(OSError):
            shard.rmdir()  # only when empty: anything else in it stays
    return Removed(count, freed, failed)


class Cleared(NamedTuple):
    """What :func:`clear_cache` did: entries deleted, bytes freed, entries kept (used more recently than asked),
    left-over temp files deleted, and entries that could not be deleted."""

    entries: int
    bytes: int
    kept: int
    temp_files: int
    failed: list[Path]


def clear_cache(directory: str | os.PathLike[str], *, older_than_s: float | None = None,
                now: float | None = None) -> Cleared:
    """Delete the cache's entries in ``directory`` (only those last used more than ``older_than_s`` ago, when
    given) and the temp files interrupted writes left there over an hour ago. Nothing else in the folder is
    touched."""
    path = check_cache_dir(directory)
    if not path.is_dir():
        return Cleared(0, 0, 0, 0, [])
    entries = cache_entries(path)
    selected = entries if older_than_s is None else older_than(entries, older_than_s, now=now)
    removed = remove_entries(selected)
    temp_files = 0
    for temp in stale_temp_files(path, now=now):
        with contextlib.suppress(OSError):
            temp.unlink()
            temp_files += 1
    return Cleared(removed.entries, removed.bytes, len(entries) - len(selected), temp_files, removed.failed)


def summarize_cache(directory: str | os.PathLike[str]) -> CacheSummary:
    """:class:`CacheSummary` of ``directory`` (the size cap from ``$ASSAY_CACHE_MAX_MB``). Other files are
    counted at the top of the folder and inside its shard folders, not below."""
    path = check_cache_dir(directory)
    max_bytes = max_bytes_from_env()
    if not path.is_dir():
        return CacheSummary(path, False, 0, 0, None, None, max_bytes, 0)
    entries = cache_entries(path)
    ours = {e.path for e in entries}
    other = 0
    for item in path.iterdir():
        if _SHARD_NAME.fullmatch(item.name) and item.is_dir() and not item.is_symlink():
            other += sum(1 for f in item.iterdir() if f not in ours and not _TEMP_NAME.fullmatch(f.name))
        else:
            other += 1
    return CacheSummary(path, True, len(entries), sum(e.size for e in entries),
                        entries[0].last_used if entries else None, entries[-1].last_used if entries else None,
                        max_bytes, other)


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")


def parse_duration(text: str, *, where: str = "older_than") -> float:
    """Seconds in a duration such as ``7d``, ``12h``, ``30m``, ``45s``, ``2w`` or ``1d12h``; OptionError
    naming ``where`` otherwise."""
    compact = "".join(str(text).lower().split())
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise OptionError(f"{text!r} is not a duration", where=where,
                          fix="give a number and a unit (s, m, h, d or w), e.g. 7d, 12h or 1d12h")
    return float(sum(float(n) * _DURATION_UNITS[u] for n, u in parts))
