"""Output folders: which ones Assay may write, how it replaces them atomically, and crash recovery.

Every command that writes a folder (evaluate, demo, compare, select, compress, and later ones) goes
through :func:`atomic_directory`, after checking the path up front with :func:`check_output` so that a
bad ``--out`` fails before any work is done. The rules:

1. **Only Assay's own folders are replaced.** Every output folder carries a manifest
   (``assay-manifest.json``: kind, version, and every file with its size and sha256). An existing folder
   is replaced only when it has a manifest and every file in it is listed there. A folder holding any
   other file, or no manifest, is never replaced, ``force`` or not; an empty folder is simply used.
2. **Same kind, or ``force``.** An Assay folder of another kind (a comparison where an evaluation is
   going) is replaced only with ``force``.
3. **Inputs are untouchable.** The output is never an input, never contains one and never lies inside
   one (model, data, bundles, cache), and is never the working directory or one of its parents.
4. **Fail early.** A path below a regular file, a symbolic link, an unwritable parent: :class:`OutputError`
   before any work. A disk that fills up while writing is an ``OutputError`` too, and leaves nothing.
5. **Atomic replacement.** The new folder is assembled in ``.NAME.tmp-*`` beside the target, its manifest
   written last (so a complete folder is recognisable); then the old folder moves to ``.NAME.old-*``, the
   new one into place, and the old one is deleted.
6. **Crash recovery.** Both temporary folders carry the writer's process id (and start time) in their
   names. The next run into the same path removes debris whose writer is gone; when a crash fell between the two renames
   (no target, an old folder aside), the new folder is moved into place if it is complete, otherwise
   the old one is restored.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from assay._hashing import file_sha256
from assay.errors import OutputError

__all__ = [
    "MANIFEST",
    "OUTPUT_KINDS",
    "atomic_directory",
    "check_output",
    "check_output_file",
    "input_paths",
    "read_manifest",
    "recover_debris",
]

MANIFEST = "assay-manifest.json"
MANIFEST_FORMAT = 1
OUTPUT_KINDS = ("evaluate", "compare", "select", "compress", "card", "monitor", "audit", "scan", "estimate")
_DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}


def input_paths(*specs: Any, cache_dir: Any = None) -> list[Path]:
    """The resolved paths of the inputs among ``specs`` that exist on disk (strings, paths, or None;
    built-in data names and factory specs that are not paths are skipped), plus the output cache
    ``cache_dir`` (True: the default one; False/None: none), which counts even before it exists."""
    found: list[Path] = []
    if cache_dir is True:
        from assay._paths import default_cache_dir

        cache_dir = default_cache_dir()
    if isinstance(cache_dir, (str, os.PathLike)):
        found.append(Path(cache_dir).resolve())
    for spec in specs:
        if spec is None or isinstance(spec, bool):
            continue
        if isinstance(spec, (list, tuple, set)):
            found += input_paths(*spec)
            continue
        if not isinstance(spec, (str, os.PathLike)):
            continue
        text = os.fspath(spec)
        if text and os.path.exists(text):
            found.append(Path(text).resolve())
    return found


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of an Assay output folder, or None when it has none (or an unreadable one)."""
    path = Path(folder) / MANIFEST
    try:
        if not path.is_file() or path.stat().st_size > 64 << 20:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("tool") != "assay" or not isinstance(data.get("files"), dict):
        return None
    return data


def _files_under(folder: Path) -> list[str]:
    """Relative POSIX paths of every non-directory entry below ``folder`` (symlinks included, not followed)."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        base = Path(root)
        found += [(base / name).relative_to(folder).as_posix() for name in files]
        found += [(base / name).relative_to(folder).as_posix() for name in dirs if (base / name).is_symlink()]
    return found


def _describe(names: list[str]) -> str:
    shown = ", ".join(names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_replaceable(target: Path, kind: str, force: bool, where: str) -> None:
    """Raise unless the existing folder ``target`` may be replaced by an output of ``kind``."""
    if not any(target.iterdir()):
        return
    manifest = read_manifest(target)
    if manifest is None:
        raise OutputError(
            f"{target} exists and was not written by Assay (it has no {MANIFEST}); Assay never replaces such a "
            "folder, even with --force",
            where=where,
            fix="choose a new output path (e.g. a subfolder), or remove the folder yourself if it holds nothing "
                "you need",
        )
    foreign = sorted(set(_files_under(target)) - set(manifest["files"]) - {MANIFEST})
    if foreign:
        raise OutputError(
            f"{target} is an Assay output but also holds files Assay did not write ({_describe(foreign)}); "
            "Assay never replaces it, even with --force",
            where=where,
            fix="move those files elsewhere, or choose another output path",
        )
    if manifest.get("kind") != kind and not force:
        raise OutputError(
            f"{target} holds an Assay {manifest.get('kind')} output, not a {kind} output",
            where=where,
            fix=f"choose another output path, or pass --force to replace the {manifest.get('kind')} output",
        )


def check_output(out: str | os.PathLike[str], kind: str, *, inputs: Iterable[Path] = (), force: bool = False,
                 where: str = "--out") -> Path:
    """Validate the output folder ``out`` for an output of ``kind`` before any work is done; return its
    absolute path. Also cleans up debris that killed runs left beside it (see :func:`recover_debris`).

    Raises :class:`OutputError` for every rule in the module docstring."""
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    raw = Path(out)
    if raw.is_symlink():
        raise OutputError(f"{raw} is a symbolic link", where=where,
                          fix="give the real path of the output folder, not a link to it")
    target = Path(os.path.abspath(raw))
    cwd = Path.cwd().resolve()
    resolved = target.resolve()
    if _is_within(cwd, resolved):
        raise OutputError(
            f"{out} is the current directory{'' if resolved == cwd else ' or one of its parents'}; the output "
            "folder replaces what is there",
            where=where, fix="give a new folder for the output, e.g. --out assay-out")
    for path in inputs:
        if _is_within(path, resolved):
            what = "is" if path == resolved else "contains"
            raise OutputError(f"the output folder {out} {what} an input ({path})", where=where,
                              fix="write the output to a folder of its own, away from the model, data and cache")
        if _is_within(resolved, path):
            raise OutputError(f"the output folder {out} lies inside an input ({path})", where=where,
                              fix="write the output to a folder of its own, away from the model, data and cache")
    _check_parents(target, out, where)
    if target.exists() and not target.is_dir():
        raise OutputError(f"{out} exists and is not a folder", where=where,
                          fix="choose another output path (Assay writes a folder there)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        recover_debris(target)
        probe = Path(tempfile.mkdtemp(prefix=f".{target.name}.probe-", dir=target.parent))
        probe.rmdir()
    except OSError as exc:
        raise _disk_error(exc, target, where) from exc
    if target.exists():
        _check_replaceable(target, kind, force, where)
    return target


def check_output_file(out: str | os.PathLike[str], *, is_ours: Callable[[Path], bool], what: str,
                      inputs: Iterable[Path] = (), where: str = "--out") -> Path:
    """Validate a single output file before any work: not a folder, not a link, not an input, not below a
    file, in a writable folder; an existing file is replaced only when ``is_ours(path)`` recognises it as
    Assay's ``what`` (e.g. a profile written by ``assay profile --json``). Returns its absolute path."""
    raw = Path(out)
    target = Path(os.path.abspath(raw))
    if raw.is_symlink():
        raise OutputError(f"{raw} is a symbolic link", where=where, fix="give the real path of the output file")
    if target.is_dir():
        raise OutputError(f"{out} is a folder", where=where, fix="give a file name, e.g. profile.json")
    if any(target == path for path in inputs):
        raise OutputError(f"the output file {out} is an input", where=where, fix="write the output to a new file")
    _check_parents(target, out, where)
    if target.exists() and not is_ours(target):
        raise OutputError(f"{out} exists and is not {what}; Assay does not overwrite it", where=where,
                          fix="choose a new file name, or remove the file yourself")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        probe = Path(tempfile.mkdtemp(prefix=f".{target.name}.probe-", dir=target.parent))
        probe.rmdir()
    except OSError as exc:
        raise _disk_error(exc, target, where) from exc
    return target


def _check_parents(target: Path, out: Any, where: str) -> None:
    """OutputError when the nearest existing ancestor of ``target`` is a file (nothing can be made below it)."""
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{parent} is a file, so {out} cannot be written below it", where=where,
                                  fix="choose an output path whose parent folders are folders")
            return


def _disk_error(exc: OSError, target: Path, where: str) -> OutputError:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    fix = {errno.ENOSPC: "free disk space or write the output to another disk",
           errno.EDQUOT: "free disk space (quota exceeded) or write the output elsewhere",
           errno.EROFS: "write the output to a writable disk"}.get(exc.errno or 0,
                                                                   "choose an output path you can write to")
    return OutputError(f"cannot write the output folder {target}: {reason}", where=where, fix=fix)


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), so a reused process id is not mistaken for the writer."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _writer_tag() -> str:
    """``<pid>.<start time>.<host hash>``: who writes a temporary folder, in the folder's own name, so the
    identity exists from the instant ``mkdtemp`` creates it (a marker file could be missing after a kill)."""
    host = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
    return f"{os.getpid()}.{_process_start(os.getpid()) or 0}.{host}"


def _writer_alive(tag: str) -> bool:
    """False only when the writer named by ``tag`` is provably gone (same host, no such process, or a
    process with another start time under that id)."""
    try:
        pid_text, start, host = tag.split(".")
        pid = int(pid_text)
    except ValueError:
        return True  # not a name Assay makes: leave it alone
    if host != hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]:
        return True  # another machine on a shared disk: assume it is still writing
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return start == "0" or _process_start(pid) in (None, start)


def _stale_debris(target: Path, tag: str) -> list[Path]:
    """``.NAME.<tag>-<writer>-*`` folders beside ``target`` whose writer is gone, newest first."""
    found = []
    prefix = f".{target.name}.{tag}-"
    for entry in target.parent.glob(glob.escape(prefix) + "*"):
        if entry.is_symlink() or not entry.is_dir():
            continue
        writer = entry.name[len(prefix):].rsplit("-", 1)[0]
        if writer.count(".") == 2 and not _writer_alive(writer):
            found.append(entry)
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def recover_debris(target: str | os.PathLike[str]) -> list[str]:
    """Clean up after killed runs into ``target``; return what was done (for the log).

    If ``target`` is missing and a crash fell between the two renames, the complete new folder (it has
    its manifest) is moved into place; failing that, the old folder is restored. Then the remaining
    stale ``.NAME.tmp-*`` / ``.NAME.old-*`` folders (only those named by Assay, with a writer that is gone)
    are removed."""
    target = Path(target)
    done: list[str] = []
    temps, olds = _stale_debris(target, "tmp"), _stale_debris(target, "old")
    if not target.exists() and olds:
        complete = [t for t in temps if read_manifest(t / "content") is not None]
        if complete:
            os.replace(complete[0] / "content", target)
            done.append(f"completed an interrupted replacement of {target}")
        elif (olds[0] / target.name).is_dir():
            os.replace(olds[0] / target.name, target)
            done.append(f"restored {target} from an interrupted replacement")
    for stale in [*temps, *olds]:
        shutil.rmtree(stale, ignore_errors=True)
        done.append(f"removed {stale.name} left by a killed run")
    for probe in target.parent.glob(glob.escape(f".{target.name}.probe-") + "*"):
        with contextlib.suppress(OSError):
            probe.rmdir()  # only ever empty: the writability probe of check_output
    return done


def _write_manifest(folder: Path, kind: str) -> None:
    from assay._version import __version__

    files = {}
    for name in sorted(_files_under(folder)):
        if name == MANIFEST:
            continue
        path = folder / name
        files[name] = {"bytes": path.lstat().st_size, "sha256": file_sha256(path)} if path.is_file() else {"link": True}
    manifest = {"tool": "assay", "kind": kind, "format": MANIFEST_FORMAT, "assay_version": __version__,
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def _temp_folder(target: Path, tag: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.{tag}-{_writer_tag()}-", dir=target.parent))


@contextlib.contextmanager
def atomic_directory(out: str | os.PathLike[str], kind: str, *, inputs: Iterable[Path] = (), force: bool = False,
                     where: str = "--out") -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out`` to fill; on success it gets a manifest and replaces
    ``out`` (see the module docstring for what may be replaced); on any error it is deleted and ``out``
    is left as it was."""
    inputs = list(inputs)
    target = check_output(out, kind, inputs=inputs, force=force, where=where)
    try:
        tmp = _temp_folder(target, "tmp")
    except OSError as exc:
        raise _disk_error(exc, target, where) from exc
    umask = os.umask(0)
    os.umask(umask)
    try:
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it owner-only; the output gets ordinary permissions
        work = tmp / "content"
        work.mkdir()
        yield work
        _write_manifest(work, kind)
        if target.exists():  # re-checked: the folder may have appeared or changed while we worked
            _check_replaceable(target, kind, force, where)
            old = _temp_folder(target, "old")
            os.replace(target, old / target.name)
            os.replace(work, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno in _DISK_ERRNOS:
            raise _disk_error(exc, target, where) from exc
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
