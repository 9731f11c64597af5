"""Retention and the size cap of the prediction log (src/assay/serve/log.py, log_stores.py): rows older than the
cutoff are gone and every row inside the window is intact and equal (hypothesis, Parquet segments and SQL), the
size cap holds after a pass and takes the oldest segments first, labels follow the age rule, passes are bounded,
it all works while a writer is writing, and bad options are user errors."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assay.cli import main
from assay.errors import OptionError
from assay.serve.log import PredictionLog, PredictionRow, open_log, parse_size, prune_log, read_log
from assay.serve.log_stores import ParquetStore, SqlStore

pytest_plugins = ["postgres"]

HOUR = 3600.0


def _row(name: str, at: float, width: int = 3) -> PredictionRow:
    logits = np.linspace(-1, 1, width, dtype=np.float32) + len(name)
    return PredictionRow(name, at, "m@1", "primary", "ab" * 32, logits, int(np.argmax(logits)), 0.5,
                         features=np.full(2, at % 97, np.float32))


def _write_batches(store: str, batches: list[list[PredictionRow]]) -> None:
    """Each batch committed on its own (one Parquet segment / one transaction), in order."""
    with open_log(store, durability="strict", compact_every_s=None, commit_interval_ms=0) as log:
        for batch in batches:
            ticket = log.submit(batch)
            assert ticket is not None
            ticket.result(timeout=30)


def _store_url(kind: str, tmp: Path, request: pytest.FixtureRequest | None = None) -> str:
    if kind == "parquet":
        return str(tmp / "logs")
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'log.db'}"
    assert request is not None
    return str(request.getfixturevalue("postgres_url"))


def _assert_rows_equal(frame, rows: list[PredictionRow]) -> None:
    assert list(frame["request_id"]) == [r.request_id for r in rows]
    for got, want in zip(frame.itertuples(index=False), rows):
        assert (got.time, got.version, got.top1, got.confidence) == (want.time, want.version, want.top1,
                                                                     want.confidence)
        assert np.array_equal(got.logits, want.logits) and np.array_equal(got.features, want.features)


# -- parsing ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("10GB", 10 * 10**9), ("10gb", 10 * 10**9), ("500 MB", 500 * 10**6), ("1.5GiB", 3 * 2**29), ("4096", 4096),
    ("2k", 2000), ("3 KiB", 3072), ("1TB", 10**12), ("7b", 7)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "ten", "-1GB", "0", "0MB", "10XB", "GB", "1e3", "5 M B"])
def test_parse_size_refuses_what_is_not_a_size(text):
    with pytest.raises(OptionError, match="Fix:") as caught:
        parse_size(text, where="--log-max-size")
    assert caught.value.where == "--log-max-size"


def test_bad_retention_options_are_user_errors(tmp_path):
    with pytest.raises(OptionError, match="only supported for the Parquet log"):
        open_log(f"sqlite:///{tmp_path / 'log.db'}", max_bytes=10**9)
    with pytest.raises(OptionError, match="positive"):
        open_log(str(tmp_path / "logs"), retention_s=0)
    with pytest.raises(OptionError, match="positive"):
        open_log(str(tmp_path / "logs"), max_bytes=0)


@pytest.mark.parametrize(("flag", "value"), [("--log-retention", "forever"), ("--log-max-size", "10XB")])
def test_serve_refuses_bad_retention_flags(flag, value, tmp_path, capsys):
    code = main(["serve", str(tmp_path / "model.onnx"), flag, value])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("Error:") and "Fix:" in err and "Traceback" not in err and flag in err, err


# -- the age rule ---------------------------------------------------------------------------------------------------
batches_strategy = st.lists(st.lists(st.integers(0, 96), min_size=1, max_size=6), min_size=1, max_size=8)


@pytest.mark.parametrize("kind", ["parquet", "sqlite"])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ages=batches_strategy, keep_hours=st.integers(1, 72))
def test_rows_older_than_the_cutoff_go_and_rows_inside_the_window_stay_equal(kind, ages, keep_hours):
    """Ages in whole hours and a retention of N h + 30 min: no row sits near the moving cutoff."""
    now = time.time()
    retention = keep_hours * HOUR + HOUR / 2
    with tempfile.TemporaryDirectory() as tmp:
        store = _store_url(kind, Path(tmp))
        batches = [[_row(f"b{b}-{i}", now - age * HOUR) for i, age in enumerate(batch)]
                   for b, batch in enumerate(ages)]
        _write_batches(store, batches)
        everything = [r for batch in batches for r in batch]
        kept = [r for r in everything if r.time >= now - retention]
        # A pass of the running log: whole segments by their newest row (row-exact DELETE for SQL) ...
        log = PredictionLog(ParquetStore(store) if kind == "parquet" else SqlStore(store), retention_s=retention,
                            compact_every_s=None, prune_every_s=float("inf"))
        with log:
            while not log.prune_once():
                pass
            frame = read_log(store)
            if kind == "sqlite":
                _assert_rows_equal(frame, kept)
            else:  # every row in the window is intact; an expired row survives only beside a newer one
                assert set(frame["request_id"]) >= {r.request_id for r in kept}
                _assert_rows_equal(frame, [r for r in everything if r.request_id in set(frame["request_id"])])
                survivors = {r.request_id for r in everything if r.request_id in set(frame["request_id"])}
                for batch in batches:
                    if any(r.request_id in survivors and r.time < now - retention for r in batch):
                        assert any(r.time >= now - retention for r in batch)
                # ... then a compaction, which rewrites small segments without their expired rows.
                log.compact_once()
                _assert_rows_equal(read_log(store), kept)
            assert log.pruned_rows == len(everything) - len(kept)


def test_labels_follow_the_age_rule_on_their_own_time(tmp_path):
    now = time.time()
    store = str(tmp_path / "logs")
    with open_log(store, compact_every_s=None) as log:
        log.submit([_row("old", now - 3 * 86400), _row("fresh", now - HOUR)])
        log.feedback("old", 1, at=now - 2.5 * 86400)  # expired with its prediction
        log.feedback("old", 2, at=now - 60)  # a late label: kept by its own time
        log.feedback("fresh", 3, at=now - 30)
    assert prune_log(store, retention_s=86400)[0] == 2  # "old" and its expired label: their segments rewritten
    frame = read_log(store)
    assert list(frame["request_id"]) == ["fresh"] and list(frame["label"]) == [3]
    _, feedback = ParquetStore(store).read()
    assert sorted(zip(feedback["request_id"], feedback["label"])) == [("fresh", 3), ("old", 2)]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_sql_pruning_is_row_exact_and_bounded_per_pass(kind, tmp_path, request):
    url = _store_url(kind, tmp_path, request)
    cutoff = 1_700_000_000.0
    rows = [_row(f"r{i}", cutoff + (i - 10)) for i in range(20)]  # r10 sits exactly at the cutoff: kept
    _write_batches(url, [rows[:7], rows[7:]])
    with open_log(url) as log:
        log.feedback("r1", 1, at=cutoff - 1)
        log.feedback("r12", 2, at=cutoff + 1)
    store = SqlStore(url)
    try:
        passes = [store.prune(older_than=cutoff, max_rows=4, batch_rows=3) for _ in range(4)]
        assert passes == [False, False, True, True] and store.pruned_rows == 11  # 10 predictions + 1 label
    finally:
        store.close()
    frame = read_log(url)
    _assert_rows_equal(frame, rows[10:])
    assert frame.set_index("request_id")["label"].dropna().to_dict() == {"r12": 2}


# -- the size cap ---------------------------------------------------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=10), share=st.floats(0, 1.2))
def test_the_size_cap_holds_after_a_pass_and_takes_the_oldest_segments_first(sizes, share):
    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / "logs")
        batches = [[_row(f"s{k}-{i}", now - (len(sizes) - k) * 60 + i * 1e-3, width=50) for i in range(n)]
                   for k, n in enumerate(sizes)]
        _write_batches(store, batches)
        segment_bytes = [os.path.getsize(f) for f in ParquetStore(store).files("predictions")]
        assert len(segment_bytes) == len(batches)
        cap = max(1, int(share * sum(segment_bytes)))
        # Independent expectation: the longest run of newest segments that fits.
        kept_from, total = len(segment_bytes), 0
        while kept_from > 0 and total + segment_bytes[kept_from - 1] <= cap:
            kept_from -= 1
            total += segment_bytes[kept_from]
        rows, segments = prune_log(store, max_bytes=cap)
        left = ParquetStore(store)
        assert left.size() <= cap and left.size() == total
        assert segments == kept_from and rows == sum(sizes[:kept_from])
        _assert_rows_equal(read_log(store), [r for batch in batches[kept_from:] for r in batch])


def test_pruning_never_touches_a_segment_being_written_and_clears_a_crashed_writers_temp_file(tmp_path):
    store = tmp_path / "logs"
    now = time.time()
    _write_batches(str(store), [[_row("a", now)], [_row("b", now)]])
    writing = store / ".tmp-predictions-00000000000000000001-1-x-00000000.parquet"
    crashed = store / ".tmp-predictions-00000000000000000002-2-y-00000000.parquet"
    writing.write_bytes(b"partial")
    crashed.write_bytes(b"partial")
    os.utime(crashed, (now - 2 * HOUR, now - 2 * HOUR))
    assert prune_log(str(store), max_bytes=1) == (2, 2)
    assert writing.exists() and not crashed.exists()
    assert read_log(str(store)).empty


def test_a_pass_deletes_at_most_its_bound(tmp_path):
    store = str(tmp_path / "logs")
    _write_batches(store, [[_row(f"r{i}", 1e9 + i)] for i in range(5)])
    parquet = ParquetStore(store)
    assert [parquet.prune(older_than=2e9, max_segments=2) for _ in range(4)] == [False, False, True, True]
    assert (parquet.pruned_segments, parquet.pruned_rows) == (5, 5)


def test_compaction_merges_only_neighbours_and_keeps_the_commit_order(tmp_path):
    """A large segment between small ones: merging across it would put later rows before it."""
    store = str(tmp_path / "logs")
    now = time.time()
    batches = [[_row("a", now)], [_row("b", now)], [_row(f"big{i}", now, width=400) for i in range(40)],
               [_row("c", now)], [_row("d", now)]]
    _write_batches(store, batches)
    parquet = ParquetStore(store)
    sizes = [os.path.getsize(f) for f in parquet.files("predictions")]
    assert parquet.compact(small_bytes=sizes[2]) == 4
    assert len(parquet.files("predictions")) == 3
    _assert_rows_equal(read_log(store), [r for batch in batches for r in batch])


# -- while a writer writes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["parquet", "sqlite", "postgresql"])
def test_retention_while_a_writer_is_writing(kind, tmp_path, request):
    store = _store_url(kind, tmp_path, request)
    now = time.time()
    old = [_row(f"old{i}", now - 2 * 86400 + i) for i in range(120)]
    fresh: list[PredictionRow] = []
    log = open_log(store, retention_s=HOUR, prune_every_s=0.01, compact_every_s=0.03, commit_interval_ms=2)
    for i in range(0, len(old), 10):
        log.submit(old[i:i + 10])

    def write() -> None:
        for i in range(300):
            row = _row(f"new{i}", time.time())
            fresh.append(row)
            log.submit([row])
            if i % 10 == 0:
                time.sleep(0.005)

    writer = threading.Thread(target=write)
    writer.start()
    seen = 0
    while writer.is_alive():  # readers during pruning: never a fresh row missing or out of order
        ids = [i for i in read_log(store)["request_id"] if i.startswith("new")]
        assert ids == [f"new{k}" for k in range(len(ids))] and len(ids) >= seen
        seen = len(ids)
    writer.join()
    log.close()
    assert log.pruned_rows > 0
    frame = read_log(store)
    _assert_rows_equal(frame[frame["request_id"].str.startswith("new")], fresh)  # nothing inside the window lost
    prune_log(store, retention_s=HOUR)  # and once a pass has run after the last old row, exactly the fresh rows
    _assert_rows_equal(read_log(store), fresh)


def test_the_size_cap_while_a_writer_is_writing(tmp_path):
    store = str(tmp_path / "logs")
    cap = 60_000
    log = open_log(store, max_bytes=cap, prune_every_s=0.01, compact_every_s=0.03, commit_interval_ms=2)
    submitted = []
    for i in range(600):
        row = _row(f"r{i}", time.time(), width=20)
        submitted.append(row)
        log.submit([row])
        if i % 20 == 0:
            time.sleep(0.01)
    log.close()
    prune_log(store, max_bytes=cap)
    assert ParquetStore(store).size() <= cap
    assert log.pruned_segments > 0
    frame = read_log(store)
    assert 0 < len(frame) < len(submitted)
    _assert_rows_equal(frame, submitted[len(submitted) - len(frame):])  # the newest rows, contiguous, in order
