"""The content-addressed artifact store: every file the registry keeps, named by its sha256.

:class:`ArtifactStore` is the interface (so an object store can plug in later); :class:`LocalArtifactStore`
keeps blobs in a folder as ``sha256/ab/cdef...`` (the first two hex digits name a subfolder, as Git does).
A blob is written to ``tmp/`` first, fsynced, then renamed into place (and the folder fsynced), so a blob at
its final path is always complete: a process killed mid-write leaves only a temp file, which :meth:`gc_temp`
removes once its writer is gone. Blobs are read-only files.

A *tree* is a blob too: canonical JSON ``{"kind": "assay-tree", "files": {relative path: {"sha256", "bytes"}}}``
naming the blobs of a folder (an evidence bundle, a model's files). :func:`put_tree` stores a folder (or a set
of files) and returns the tree's sha256; :func:`materialize_tree` rebuilds the folder, checking every file
against its hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from assay._hashing import file_sha256
from assay.errors import RegistryError

__all__ = [
    "TREE_KIND",
    "ArtifactStore",
    "LocalArtifactStore",
    "canonical_json",
    "check_sha256",
    "materialize_tree",
    "put_tree",
    "read_tree",
    "sha256_bytes",
    "sha256_of_file",
    "tree_bytes",
]

TREE_KIND = "assay-tree"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20
#: A temp file of a writer that is gone, or older than this (seconds), is debris.
_TEMP_MAX_AGE = 24 * 3600


def canonical_json(value: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, no spaces, UTF-8): the same value always hashes the same."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_of_file(path: str | os.PathLike[str]) -> str:
    return file_sha256(path)


def check_sha256(sha256: object) -> str:
    """``sha256`` when it is 64 lowercase hex digits (the only names the store ever resolves to a path)."""
    if not isinstance(sha256, str) or _HEX64.fullmatch(sha256) is None:
        raise RegistryError(f"{str(sha256)[:80]!r} is not a sha256 (64 lowercase hex digits)", where="sha256",
                            fix="pass the full sha256 of a stored artifact")
    return sha256


@runtime_checkable
class ArtifactStore(Protocol):
    """Where the registry keeps blobs by sha256. Writes are atomic (a blob is complete or absent)."""

    def put_file(self, path: str | os.PathLike[str]) -> str:
        """Store a copy of the file; return its sha256 (storing the same bytes twice keeps one blob)."""
        ...

    def put_bytes(self, data: bytes) -> str:
        """Store ``data``; return its sha256."""
        ...

    def has(self, sha256: str) -> bool:
        """True when the blob is stored (not checked against its hash: see :meth:`check`)."""
        ...

    def read_bytes(self, sha256: str) -> bytes:
        """The blob's bytes (RegistryError when missing)."""
        ...

    def copy_to(self, sha256: str, dest: Path) -> None:
        """Write the blob to ``dest``, checking its hash on the way (RegistryError when missing or changed)."""
        ...

    def check(self, sha256: str) -> str | None:
        """None when the blob is present and hashes to its name, else what is wrong ('missing', 'changed: ...')."""
        ...

    def delete(self, sha256: str) -> None:
        """Remove the blob (nothing when absent)."""
        ...

    def blobs(self) -> Iterator[str]:
        """Every stored blob's sha256."""
        ...


class LocalArtifactStore:
    """Blobs in a local folder: ``<root>/sha256/ab/cdef...``; temp files in ``<root>/tmp``; materialized trees
    in ``<root>/checkouts/<tree sha256>``. Nothing else under ``root`` is ever written or deleted."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    # -- paths ----------------------------------------------------------------------------------------
    def path(self, sha256: str) -> Path:
        """Where the blob ``sha256`` lives (whether or not it is there)."""
        check_sha256(sha256)
        return self.root / "sha256" / sha256[:2] / sha256[2:]

    @property
    def temp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def checkout_dir(self) -> Path:
        return self.root / "checkouts"

    def _temp_name(self, stem: str = "") -> Path:
        return self.temp_dir / f"{os.getpid()}-{secrets.token_hex(6)}{stem}.part"

    # -- writing --------------------------------------------------------------------------------------
    def _mkdirs(self, folder: Path) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _store_error(exc, folder) from None

    def put_file(self, path: str | os.PathLike[str]) -> str:
        try:  # hash first: a blob already stored costs one read, no copy and no fsync
            known = sha256_of_file(path)
            if self._present(known, os.stat(path).st_size):
                return known
        except FileNotFoundError:
            raise RegistryError(f"cannot read {path}: no such file", where=str(path), fix="check the path") from None
        except OSError as exc:
            raise RegistryError(f"cannot read {path} ({exc.strerror or exc})", where=str(path),
                                fix="check the file's permissions") from None
        self._mkdirs(self.temp_dir)
        temp = self._temp_name()
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as src, open(temp, "xb") as dst:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            return self._commit(temp, digest.hexdigest())
        except OSError as exc:
            with contextlib.suppress(OSError):
                temp.unlink()
            if isinstance(exc, FileNotFoundError) and not Path(path).exists():
                raise RegistryError(f"cannot read {path}: no such file", where=str(path),
                                    fix="check the path") from None
            raise _store_error(exc, self.root) from None

    def put_bytes(self, data: bytes) -> str:
        sha = sha256_bytes(data)
        if self._present(sha, len(data)):
            return sha
        self._mkdirs(self.temp_dir)
        temp = self._temp_name()
        try:
            with open(temp, "xb") as dst:
                dst.write(data)
                dst.flush()
                os.fsync(dst.fileno())
            return self._commit(temp, sha)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise _store_error(exc, self.root) from None

    def _present(self, sha256: str, size: int) -> bool:
        try:
            return self.path(sha256).stat().st_size == size
        except OSError:
            return False

    def _commit(self, temp: Path, sha256: str) -> str:
        """Move a complete, fsynced temp file to its content address (keeping a present blob of that size)."""
        target = self.path(sha256)
        if self._present(sha256, temp.stat().st_size):
            temp.unlink()
            return sha256
        self._mkdirs(target.parent)
        os.chmod(temp, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        os.replace(temp, target)
        _fsync_dir(target.parent)
        return sha256

    # -- reading --------------------------------------------------------------------------------------
    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def read_bytes(self, sha256: str) -> bytes:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            raise _missing(sha256, self.path(sha256)) from None
        except OSError as exc:
            raise _store_error(exc, self.path(sha256)) from None

    def copy_to(self, sha256: str, dest: Path) -> None:
        source = self.path(sha256)
        digest = hashlib.sha256()
        try:
            with open(source, "rb") as src, open(dest, "xb") as dst:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
        except FileNotFoundError:
            if not source.exists():
                raise _missing(sha256, source) from None
            raise
        if digest.hexdigest() != sha256:
            raise RegistryError(f"the stored artifact {sha256[:12]}... has changed on disk (it now hashes to "
                                f"{digest.hexdigest()[:12]}...)", where=str(source),
                                fix="run `assay registry verify` to list every damaged artifact; restore the "
                                    "file from a backup or register the version's files again")

    def check(self, sha256: str) -> str | None:
        target = self.path(sha256)
        try:
            actual = sha256_of_file(target)
        except FileNotFoundError:
            return "missing"
        except OSError as exc:
            return f"unreadable ({exc.strerror or exc})"
        return None if actual == sha256 else f"changed (it now hashes to {actual[:12]}...)"

    def delete(self, sha256: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(sha256).unlink()

    def blobs(self) -> Iterator[str]:
        base = self.root / "sha256"
        if not base.is_dir():
            return
        for sub in sorted(base.iterdir()):
            if len(sub.name) != 2 or not sub.is_dir():
                continue
            for file in sorted(sub.iterdir()):
                sha = sub.name + file.name
                if _HEX64.fullmatch(sha) and file.is_file() and not file.is_symlink():
                    yield sha

    def gc_temp(self, *, dry_run: bool = False) -> list[Path]:
        """Temp files and half-built checkouts whose writer is gone (or older than a day): removed unless
        ``dry_run``; returns them."""
        found: list[Path] = []
        for folder in (self.temp_dir, self.checkout_dir):
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                match = re.fullmatch(r"\.?(?:tmp-)?(\d+)-[0-9a-f]{12}.*", entry.name)
                if match is None:
                    continue
                try:
                    age = time.time() - entry.lstat().st_mtime
                except OSError:
                    continue
                if _alive(int(match.group(1))) and age < _TEMP_MAX_AGE:
                    continue
                found.append(entry)
                if not dry_run:
                    _remove(entry)
        return found

    def checkouts(self) -> list[str]:
        """The tree sha256 of every materialized checkout."""
        if not self.checkout_dir.is_dir():
            return []
        return sorted(e.name for e in self.checkout_dir.iterdir() if _HEX64.fullmatch(e.name))

    def remove_checkout(self, tree_sha256: str) -> None:
        _remove(self.checkout_dir / check_sha256(tree_sha256))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _make_writable(path: Path) -> None:
    for folder, dirs, _files in os.walk(path):
        os.chmod(folder, stat.S_IRWXU)
        for d in dirs:
            with contextlib.suppress(OSError):
                os.chmod(Path(folder) / d, stat.S_IRWXU)


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        with contextlib.suppress(OSError):
            _make_writable(entry)
        shutil.rmtree(entry, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            entry.unlink()


def _fsync_dir(folder: Path) -> None:
    """fsync a directory so a rename into it survives a power cut (not possible on every platform)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _missing(sha256: str, where: Path) -> RegistryError:
    return RegistryError(f"the stored artifact {sha256[:12]}... is missing from the artifact store", where=str(where),
                         fix="run `assay registry verify` to list every damaged artifact; point ASSAY_ARTIFACTS at "
                             "the store this registry was written with, or restore the file from a backup")


def _store_error(exc: OSError, where: Path) -> RegistryError:
    reason = exc.strerror or str(exc)
    return RegistryError(f"cannot write the artifact store ({reason})", where=str(where),
                         fix="check that the artifact folder is writable and the disk has room (ASSAY_ARTIFACTS "
                             "or artifacts= chooses another folder)")


# -- trees ------------------------------------------------------------------------------------------------
def put_tree(store: ArtifactStore, files: Mapping[str, str | os.PathLike[str]]) -> str:
    """Store every file (relative posix name -> path) and a tree blob naming them; return the tree's sha256."""
    entries: dict[str, dict[str, Any]] = {}
    for name in sorted(files):
        _check_relative(name)
        path = Path(files[name])
        sha = store.put_file(path)
        entries[name] = {"sha256": sha, "bytes": path.stat().st_size}
    return store.put_bytes(canonical_json({"kind": TREE_KIND, "files": entries}))


def tree_bytes(entries: Mapping[str, Mapping[str, Any]]) -> bytes:
    """The canonical bytes of a tree with these entries (its sha256 is the tree's name)."""
    return canonical_json({"kind": TREE_KIND, "files": {k: dict(v) for k, v in entries.items()}})


def read_tree(store: ArtifactStore, tree_sha256: str) -> dict[str, dict[str, Any]]:
    """The entries (relative name -> {"sha256", "bytes"}) of a stored tree, checked against its hash."""
    data = store.read_bytes(tree_sha256)
    if sha256_bytes(data) != tree_sha256:
        raise RegistryError(f"the stored tree {tree_sha256[:12]}... has changed on disk", where=tree_sha256,
                            fix="run `assay registry verify` to list every damaged artifact")
    try:
        tree = json.loads(data)
        files = tree["files"]
        if tree.get("kind") != TREE_KIND or not isinstance(files, dict):
            raise ValueError("not a tree")
        for name, entry in files.items():
            _check_relative(name)
            check_sha256(entry["sha256"])
    except (ValueError, KeyError, TypeError, RegistryError):
        raise RegistryError(f"the artifact {tree_sha256[:12]}... is not a tree", where=tree_sha256,
                            fix="pass the sha256 of a version's model or evidence tree") from None
    return files


def _check_relative(name: str) -> None:
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
        raise RegistryError(f"{name!r} is not a relative file name inside a folder", where=name,
                            fix="store files by their path relative to the folder")


def materialize_tree(store: ArtifactStore, tree_sha256: str, dest: Path) -> Path:
    """Write the tree's files under a new folder ``dest`` (must not exist), each checked against its hash, and
    make them read-only."""
    files = read_tree(store, tree_sha256)
    dest.mkdir(parents=True)
    for name, entry in files.items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        store.copy_to(entry["sha256"], target)
        os.chmod(target, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    return dest
