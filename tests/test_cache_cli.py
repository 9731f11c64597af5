"""`assay cache info|clear` and the output cache's size cap, end to end through `assay.cli.main`: what info
reports (checked against the files on disk), that clear deletes only what the cache wrote, `--older-than`,
bad input (exit 2 with a fix), and least-recently-used eviction under a cap."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.cli import main
from assay.demo import DigitsCNN
from assay.engine.cache import (
    CacheEntry,
    OutputCache,
    ViewOutput,
    cache_entries,
    cache_key,
    over_cap,
    parse_duration,
)
from assay.models.export import export_onnx
from cli_helpers import assert_user_error, run_cli

DAY = 86400.0


def _put(cache: OutputCache, name: str, rows: int = 500) -> Path:
    """Write one entry (logits of ``rows`` x 10 float32, about 20 KB) and return its file."""
    key = cache_key(name)
    logits = np.random.default_rng(abs(hash(name)) % 2**32).standard_normal((rows, 10)).astype(np.float32)
    cache.put(key, ViewOutput(logits=logits, features=None))
    assert cache.directory is not None
    return cache.directory / key[:2] / f"{key}.npz"


def _set_last_used(path: Path, timestamp: float) -> None:
    os.utime(path, (timestamp, timestamp))


def _npz_files(directory: Path) -> list[Path]:
    """Independent of the cache's own listing: every .npz below ``directory``."""
    return sorted(p for p in directory.rglob("*.npz") if p.is_file())


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    """run_cli with stdout's whitespace flattened (the tables wrap with the terminal width)."""
    code, out, err = run_cli(args, capsys)
    return code, " ".join(out.split()), err


_assert_user_error = assert_user_error


@pytest.fixture
def foreign(tmp_path) -> dict[str, bytes]:
    """Files in the cache folder that the cache did not write, by path relative to the folder."""
    key = cache_key("not-an-entry")
    other_key = cache_key("misplaced")
    files = {
        "notes.txt": b"my notes",
        f"{key[:2]}/readme.md": b"a file in a shard folder",
        f"{key[:2]}/{key}.npz": b"not an archive at all",  # named like an entry
        f"{other_key[:2]}/x.npz": b"",
        "sub/deeper/data.npz": b"",
        "tmpabcd.tmp": b"a temp file of someone else",
    }
    cache_dir = tmp_path / "cache"
    for relative, content in files.items():
        (cache_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (cache_dir / relative).write_bytes(content)
    # a numpy archive named like an entry, but holding arrays the cache never writes
    user_npz = cache_dir / other_key[:2] / f"{other_key}.npz"
    np.savez(user_npz, x=np.zeros(3), y=np.ones(3))
    files[str(user_npz.relative_to(cache_dir))] = user_npz.read_bytes()
    return files


def _assert_foreign_intact(cache_dir: Path, foreign: dict[str, bytes]) -> None:
    for relative, content in foreign.items():
        assert (cache_dir / relative).read_bytes() == content, relative


# ------------------------------------------------------------------------------------------- info


def test_info_reports_entries_size_and_last_use(tmp_path, foreign, capsys):
    cache_dir = tmp_path / "cache"
    cache = OutputCache(cache_dir)
    paths = [_put(cache, f"view-{i}") for i in range(3)]
    stamps = [time.time() - 10 * DAY, time.time() - 2 * DAY, time.time() - 3600]
    for path, stamp in zip(paths, stamps, strict=True):
        _set_last_used(path, stamp)
    total = sum(p.stat().st_size for p in paths)
    assert total > 2**10
    code, out, err = _run(["cache", "info", "--cache-dir", str(cache_dir)], capsys)
    assert code == 0, err
    assert f"Output cache: {cache_dir}" in out
    assert f"Entries: 3 ({total / 2**10:.1f} KB)" in out  # the foreign files are not counted
    assert f"Least recently used: {time.strftime('%Y-%m-%d %H:%M', time.localtime(stamps[0]))} (10 days ago)" in out
    assert f"Most recently used: {time.strftime('%Y-%m-%d %H:%M', time.localtime(stamps[2]))}" in out
    assert "Size cap: none" in out
    # counted at the folder's top (notes.txt, tmpabcd.tmp, sub/ as one) and in its shard folders (four files)
    assert "Other files: 7 " in out
    _assert_foreign_intact(cache_dir, foreign)


def test_info_uses_the_default_cache_and_does_not_create_it(tmp_path, capsys, monkeypatch):
    cache_dir = tmp_path / "not-yet"
    monkeypatch.setenv("ASSAY_CACHE_DIR", str(cache_dir))
    code, out, _ = _run(["cache", "info"], capsys)
    assert code == 0 and f"Output cache: {cache_dir} (does not exist yet" in out and "Entries: 0" in out
    code, out, _ = _run(["cache", "clear"], capsys)
    assert code == 0 and "Removed 0 entries" in out
    assert not cache_dir.exists()


def test_info_on_a_file_is_a_user_error(tmp_path, capsys):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    for command in ("info", "clear"):
        code, _, err = _run(["cache", command, "--cache-dir", str(not_a_folder)], capsys)
        _assert_user_error(code, err, "is not a directory", "Where: --cache-dir.")


# ------------------------------------------------------------------------------------------ clear


def test_clear_deletes_only_the_cache_entries(tmp_path, foreign, capsys):
    cache_dir = tmp_path / "cache"
    cache = OutputCache(cache_dir)
    paths = [_put(cache, f"view-{i}") for i in range(4)]
    freed = sum(p.stat().st_size for p in paths)
    code, out, err = _run(["cache", "clear", "--cache-dir", str(cache_dir)], capsys)
    assert code == 0, err
    assert f"Removed 4 entries ({freed / 2**10:.1f} KB) from {cache_dir}." in out
    assert not any(p.exists() for p in paths)
    _assert_foreign_intact(cache_dir, foreign)
    assert _npz_files(cache_dir) == sorted(cache_dir / r for r in foreign if r.endswith(".npz"))
    assert cache_entries(cache_dir) == []


def test_clear_never_follows_a_symlink(tmp_path, capsys):
    cache_dir = tmp_path / "cache"
    cache = OutputCache(cache_dir)
    outside = _put(OutputCache(tmp_path / "elsewhere"), "precious")
    key = cache_key("link")
    link = cache_dir / key[:2] / f"{key}.npz"
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    _put(cache, "view")
    code, out, _ = _run(["cache", "clear", "--cache-dir", str(cache_dir)], capsys)
    assert code == 0 and "Removed 1 entry" in out
    assert link.is_symlink() and outside.exists()


def test_clear_older_than_goes_by_last_use(tmp_path, capsys):
    cache_dir = tmp_path / "cache"
    cache = OutputCache(cache_dir)
    old, middle, recent = (_put(cache, name) for name in ("old", "middle", "recent"))
    now = time.time()
    _set_last_used(old, now - 10 * DAY)
    _set_last_used(middle, now - 2 * DAY)
    _set_last_used(recent, now - 3600)
    code, out, _ = _run(["cache", "clear", "--older-than", "7d", "--cache-dir", str(cache_dir)], capsys)
    assert code == 0 and "Removed 1 entry" in out and "kept 2 used in the last 7d" in out
    assert [old.exists(), middle.exists(), recent.exists()] == [False, True, True]
    # a hit makes an entry recent again: read `middle` through the cache, then clear what is older than a day
    assert OutputCache(cache_dir).get(cache_key("middle"), rows=500) is not None
    code, out, _ = _run(["cache", "clear", "--older-than", "1d", "--cache-dir", str(cache_dir)], capsys)
    assert code == 0 and "Removed 0 entries" in out and middle.exists()
    code, out, _ = _run(["cache", "clear", "--older-than", "30m", "--cache-dir", str(cache_dir)], capsys)
    assert code == 0 and "Removed 1 entry" in out and middle.exists() and not recent.exists()


def test_clear_removes_stale_temp_files_of_interrupted_writes(tmp_path, capsys):
    cache_dir = tmp_path / "cache"
    entry = _put(OutputCache(cache_dir), "view")
    key = entry.stem
    stale = entry.parent / f".{key}.k3j2h1.tmp"
    fresh = entry.parent / f".{key}.p9q8r7.tmp"  # may be a write in progress
    for path in (stale, fresh):
        path.write_bytes(b"partial")
    _set_last_used(stale, time.time() - 2 * 3600)
    code, out, _ = _run(["cache", "clear", "--cache-dir", str(cache_dir)], capsys)
    assert code == 0 and "also 1 temp files" in out
    assert not stale.exists() and fresh.exists() and not entry.exists()


@pytest.mark.parametrize("text", ["7x", "", "d7", "-1d", "7 days", "1.d", "7d!"])
def test_clear_with_a_bad_duration_is_refused(text, tmp_path, capsys):
    cache_dir = tmp_path / "cache"
    entry = _put(OutputCache(cache_dir), "view")
    code, _, err = _run(["cache", "clear", "--older-than", text, "--cache-dir", str(cache_dir)], capsys)
    _assert_user_error(code, err, "is not a duration", "Where: --older-than.", "7d")
    assert entry.exists()


@pytest.mark.parametrize(("text", "seconds"), [
    ("7d", 7 * 86400), ("12h", 12 * 3600), ("30m", 1800), ("45s", 45), ("2w", 14 * 86400), ("1d12h", 129600),
    ("1.5h", 5400), (" 3 D ", 3 * 86400), ("0s", 0),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


def test_clear_that_cannot_delete_says_so(tmp_path, capsys, monkeypatch):
    cache_dir = tmp_path / "cache"
    entry = _put(OutputCache(cache_dir), "view")
    unlink = Path.unlink

    def refuse(self, *args, **kwargs):  # a folder the user may not write (chmod does not stop root)
        if self == entry:
            raise PermissionError(13, "Permission denied", str(self))
        return unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", refuse)
    code, out, err = _run(["cache", "clear", "--cache-dir", str(cache_dir)], capsys)
    _assert_user_error(code, err, "1 cache entries could not be deleted", f"Where: {entry}.", "permissions")
    assert entry.exists() and "Removed 0 entries" in out


# --------------------------------------------------------------------------------------- size cap


def test_cap_evicts_the_least_recently_used_first(tmp_path):
    cache_dir = tmp_path / "cache"
    writer = OutputCache(cache_dir)
    a, b, c = (_put(writer, name) for name in "abc")
    size = a.stat().st_size
    assert b.stat().st_size == c.stat().st_size == size
    now = time.time()
    for path, age in ((a, 300), (b, 200), (c, 100)):
        _set_last_used(path, now - age)
    capped = OutputCache(cache_dir, max_bytes=3 * size)
    assert capped.get(cache_key("a"), rows=500) is not None  # a is now the most recently used
    d = _put(capped, "d")  # four entries do not fit three: the least recently used one goes
    assert [a.exists(), b.exists(), c.exists(), d.exists()] == [True, False, True, True]
    e = _put(capped, "e")
    assert [a.exists(), c.exists(), d.exists(), e.exists()] == [True, False, True, True]
    assert sum(p.stat().st_size for p in _npz_files(cache_dir)) <= 3 * size


def test_cap_keeps_the_new_entry_and_foreign_files(tmp_path, foreign):
    cache_dir = tmp_path / "cache"
    old = _put(OutputCache(cache_dir), "old")
    new = _put(OutputCache(cache_dir, max_bytes=1), "new")  # nothing fits: all but the entry just written go
    assert new.exists() and not old.exists()
    _assert_foreign_intact(cache_dir, foreign)


def test_cap_from_the_environment(tmp_path, capsys, monkeypatch):
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("ASSAY_CACHE_MAX_MB", "0.05")  # 52,428 bytes: two ~20 KB entries fit, three do not
    cache = OutputCache(cache_dir)
    assert cache.max_bytes == int(0.05 * 2**20)
    paths = []
    for name in "abc":
        paths.append(_put(cache, name))
        _set_last_used(paths[-1], time.time() - 100 + len(paths))
    assert [p.exists() for p in paths] == [False, True, True]
    code, out, _ = _run(["cache", "info", "--cache-dir", str(cache_dir)], capsys)
    assert code == 0 and "Size cap: 51.2 KB (ASSAY_CACHE_MAX_MB)" in out and "Entries: 2" in out


@pytest.mark.parametrize("value", ["abc", "0", "-5", "inf", "nan"])
def test_bad_cap_in_the_environment_is_refused(value, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ASSAY_CACHE_MAX_MB", value)
    code, _, err = _run(["cache", "info", "--cache-dir", str(tmp_path)], capsys)
    _assert_user_error(code, err, "is not a size in megabytes", "Where: ASSAY_CACHE_MAX_MB.")


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(0, 1000), min_size=0, max_size=12), cap=st.integers(0, 5000),
       keep_index=st.one_of(st.none(), st.integers(0, 11)), data=st.data())
def test_over_cap_properties(sizes, cap, keep_index, data):
    """Whatever it drops is older than whatever it keeps (keep aside), what stays fits the cap unless only kept
    entries are left, and dropping one entry fewer would not fit (it drops no more than it must)."""
    stamps = data.draw(st.lists(st.floats(0, 1e6), min_size=len(sizes), max_size=len(sizes), unique=True))
    entries = [CacheEntry(Path(f"e{i}.npz"), size, stamp) for i, (size, stamp) in enumerate(zip(sizes, stamps))]
    keep = {entries[keep_index].path} if keep_index is not None and keep_index < len(entries) else set()
    dropped = over_cap(entries, cap, keep=keep)
    assert not {e.path for e in dropped} & keep
    remaining = [e for e in entries if e not in dropped]
    total = sum(e.size for e in remaining)
    assert total <= cap or all(e.path in keep for e in remaining)
    stays = [e for e in remaining if e.path not in keep]
    if dropped and stays:
        assert max(e.last_used for e in dropped) < min(e.last_used for e in stays)
    if dropped:
        assert total + dropped[-1].size > cap


# ---------------------------------------------------------------------------------------- end to end


def test_evaluate_fills_the_cache_and_clear_empties_it(tmp_path, foreign, capsys):
    """A real run writes its entry where info finds it; clear removes it and nothing else; the next run works."""
    torch.manual_seed(0)
    model = tmp_path / "cnn.onnx"
    export_onnx(DigitsCNN().eval(), torch.rand(2, 1, 8, 8), model)
    cache_dir = tmp_path / "cache"
    run = ["evaluate", str(model), "--data", "digits", "--n-bootstrap", "100", "--cache-dir", str(cache_dir), "-q",
           "--out", str(tmp_path / "out"), "--force"]
    assert main(run) == 0
    written = [p for p in _npz_files(cache_dir) if str(p.relative_to(cache_dir)) not in foreign]
    assert written
    code, out, _ = _run(["cache", "info", "--cache-dir", str(cache_dir)], capsys)
    assert code == 0 and f"Entries: {len(written)} " in out
    code, out, _ = _run(["cache", "clear", "--cache-dir", str(cache_dir)], capsys)
    assert code == 0 and f"Removed {len(written)} entr" in out
    assert not any(p.exists() for p in written)
    _assert_foreign_intact(cache_dir, foreign)
    assert main(run) == 0 and cache_entries(cache_dir)
