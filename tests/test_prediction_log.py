"""The prediction log (src/assay/serve/log.py): contents equal what was submitted (hypothesis, on Parquet
segments, SQLite and a real PostgreSQL server), strict commits readable at once, close() flushes, shed/block when
the queue is full (with a store held still), DuckDB reads the embedded log, two writer processes share one
PostgreSQL table."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assay.errors import OptionError
from assay.serve.log import (
    CommitTicket,
    LogFullError,
    PredictionLog,
    PredictionRow,
    compact_log,
    open_log,
    read_log,
)
from assay.serve.log_stores import ParquetStore, Store

pytest_plugins = ["postgres"]

ROOT = Path(__file__).resolve().parents[1]


def _store(kind: str, tmp: Path, request: pytest.FixtureRequest) -> str | None:
    if kind == "parquet":
        return None
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'log.db'}"
    return str(request.getfixturevalue("postgres_url"))


def _row(i: int, prefix: str = "r", **kw: object) -> PredictionRow:
    logits = np.array([i % 7, -1.5, 0.25], dtype=np.float32)
    defaults: dict[str, object] = {"request_id": f"{prefix}{i}", "time": 1_700_000_000.0 + i, "version": "digits@3",
                                       "role": "primary", "input_sha256": f"{i:064x}", "logits": logits,
                                       "top1": int(np.argmax(logits)), "confidence": 0.5}
    defaults.update(kw)
    return PredictionRow(**defaults)  # type: ignore[arg-type]


floats = st.floats(allow_nan=False, allow_infinity=False, width=32)
rows_strategy = st.lists(st.tuples(
    st.lists(floats, min_size=1, max_size=12),  # logits
    st.none() | st.lists(floats, min_size=0, max_size=6),  # features
    st.none() | st.binary(max_size=40)  # inputs: raw bytes or an array
    | st.lists(floats, min_size=1, max_size=12).map(lambda v: np.array(v, np.float32).reshape(len(v), 1)),
    st.sampled_from(["primary", "shadow", "canary"]),
    st.floats(0, 1), st.integers(0, 2**40), st.integers(0, 31),
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), min_size=1, max_size=20)),
    min_size=0, max_size=25)


def _check_roundtrip(store: str | None, root: Path, drawn: list, commit_rows: int) -> None:
    prefix = uuid.uuid4().hex[:10]
    rows = [PredictionRow(request_id=f"{prefix}-{i}", time=1.7e9 + t / 1000, version=version, role=role,
                          input_sha256=f"{i:064x}", logits=np.array(logits, np.float32), top1=len(logits) - 1,
                          confidence=conf, inputs=inputs,
                          features=None if features is None else np.array(features, np.float32), row=row_index)
            for i, (logits, features, inputs, role, conf, t, row_index, version) in enumerate(drawn)]
    log = open_log(store, root=root, max_commit_rows=commit_rows, commit_interval_ms=1)
    half = len(rows) // 2
    log.submit(rows[:half])
    log.submit([_as_app_dict(r) for r in rows[half:]])
    log.close()
    assert log.committed == len(rows) and log.dropped == 0 and log.queue_depth == 0
    frame = read_log(store, root=root)
    frame = frame[frame["request_id"].str.startswith(prefix + "-")]
    assert list(frame["request_id"]) == [r.request_id for r in rows]  # commit order = submit order
    for got, want in zip(frame.itertuples(index=False), rows):
        assert (got.role, got.version, got.input_sha256, got.top1, got.row) == (
            want.role, want.version, want.input_sha256, want.top1, want.row)
        assert got.time == want.time and got.confidence == want.confidence
        assert got.logits.dtype == np.float32 and np.array_equal(got.logits, want.logits)
        if want.features is None:
            assert got.features is None
        else:
            assert np.array_equal(got.features, want.features)
        if isinstance(want.inputs, np.ndarray):
            assert (got.inputs_dtype, got.inputs_shape) == ("<f4", want.inputs.shape)
            rebuilt = np.frombuffer(got.inputs, got.inputs_dtype).reshape(got.inputs_shape)
            assert np.array_equal(rebuilt, want.inputs)
        else:
            assert got.inputs == want.inputs and got.inputs_dtype is None and got.inputs_shape is None


def _as_app_dict(row: PredictionRow) -> dict:
    """The row as the app submits it (model_version instead of version)."""
    out = {k: v for k, v in row.__dict__.items() if k != "version"}
    out["model_version"] = row.version
    return out


@pytest.mark.parametrize("kind", ["parquet", "sqlite", "postgresql"])
def test_log_contents_equal_what_was_submitted(kind, tmp_path, request):
    store = _store(kind, tmp_path, request)
    counter = iter(range(10**6))

    @settings(max_examples=25 if kind != "postgresql" else 12, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(drawn=rows_strategy, commit_rows=st.integers(1, 8))
    def check(drawn, commit_rows):
        root = tmp_path / f"ex{next(counter)}"
        _check_roundtrip(store, root, drawn, commit_rows)

    check()


@pytest.mark.parametrize("kind", ["parquet", "sqlite", "postgresql"])
def test_strict_row_is_readable_as_soon_as_its_ticket_resolves(kind, tmp_path, request):
    store = _store(kind, tmp_path, request)
    log = open_log(store, root=tmp_path, durability="strict", commit_interval_ms=20)

    async def go() -> None:
        for i in range(8):
            ticket = log.submit([_row(i)])
            assert isinstance(ticket, CommitTicket)
            await ticket
            assert f"r{i}" in set(read_log(store, root=tmp_path)["request_id"])
        await log.feedback("r3", 2)
        frame = read_log(store, root=tmp_path)
        assert frame.set_index("request_id").loc["r3", "label"] == 2
        assert frame["label"].isna().sum() == 7

    asyncio.run(go())
    threaded = log.submit([_row(100)])
    assert threaded is not None
    threaded.result(timeout=30)  # a plain concurrent Future too
    assert "r100" in set(read_log(store, root=tmp_path)["request_id"])
    log.close()


@pytest.mark.parametrize("kind", ["parquet", "sqlite", "postgresql"])
def test_close_flushes_everything_and_is_idempotent(kind, tmp_path, request):
    store = _store(kind, tmp_path, request)
    log = open_log(store, root=tmp_path, commit_interval_ms=200, max_commit_rows=64)
    for start in range(0, 1000, 10):
        assert log.submit([_row(i) for i in range(start, start + 10)]) is None
    log.feedback("r5", 1, at=5.0)
    log.feedback("r5", 4, at=6.0)  # the later label wins
    log.close()
    log.close()
    frame = read_log(store, root=tmp_path)
    assert sorted(frame["request_id"]) == sorted(f"r{i}" for i in range(1000))
    assert log.committed == 1000 and log.commits >= 1000 // 64 and log.commit_seconds > 0
    assert frame.set_index("request_id").loc["r5", "label"] == 4
    with pytest.raises(RuntimeError, match="closed"):
        log.submit([_row(1)])


def test_read_log_filters_by_time_and_version(tmp_path):
    with open_log(root=tmp_path) as log:
        log.submit([_row(i, version="a@1" if i % 2 else "b@2") for i in range(10)])
    frame = read_log(root=tmp_path, since=1_700_000_002, until=1_700_000_008, version="a@1")
    assert list(frame["request_id"]) == ["r3", "r5", "r7"]


class HeldStore(Store):
    """A store whose writes wait until ``release`` is set (a slow or stalled disk/database)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.rows: list[PredictionRow] = []

    def write(self, predictions, feedback) -> None:
        self.release.wait()
        self.rows.extend(predictions)


def test_full_queue_sheds_counts_and_never_blocks():
    store = HeldStore()
    log = PredictionLog(store, queue_size=10, on_full="shed", commit_interval_ms=0)
    for i in range(10):
        log.submit([_row(i)])
    deadline = time.monotonic() + 10
    while log.queue_depth < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    done = threading.Event()

    def more() -> None:
        for i in range(10, 30):
            log.submit([_row(i)])
        done.set()

    threading.Thread(target=more, daemon=True).start()
    assert done.wait(timeout=30), "submit blocked under on_full='shed'"
    assert log.dropped == 20 and log.queue_depth == 10
    store.release.set()
    log.close()
    assert [r.request_id for r in store.rows] == [f"r{i}" for i in range(10)]
    assert log.committed == 10


def test_full_queue_sheds_strict_ticket_fails():
    store = HeldStore()
    log = PredictionLog(store, queue_size=2, on_full="shed", durability="strict", commit_interval_ms=0)
    tickets = [log.submit([_row(i)]) for i in range(5)]
    failed = [t for t in tickets if t is not None and t.done() and isinstance(t.exception(), LogFullError)]
    assert len(failed) == 3 and log.dropped == 3
    store.release.set()
    for t in tickets[:2]:
        assert t is not None
        t.result(timeout=30)
    log.close()


def test_full_queue_blocks_the_caller_until_there_is_room():
    store = HeldStore()
    log = PredictionLog(store, queue_size=5, on_full="block", commit_interval_ms=0)
    submitted = []

    def producer() -> None:
        for i in range(12):
            log.submit([_row(i)])
            submitted.append(i)

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while len(submitted) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    assert thread.is_alive() and len(submitted) <= 6  # 5 queued (+1 taken by the held writer), then it waits
    store.release.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    log.close()
    assert log.dropped == 0 and [r.request_id for r in store.rows] == [f"r{i}" for i in range(12)]


def test_a_failing_store_fails_strict_tickets_and_counts_rows():
    class Broken(Store):
        def write(self, predictions, feedback) -> None:
            raise OSError("disk full")

    log = PredictionLog(Broken(), durability="strict", commit_interval_ms=0)
    ticket = log.submit([_row(1), _row(2)])
    assert ticket is not None
    with pytest.raises(OSError, match="disk full"):
        ticket.result(timeout=30)
    log.close()
    assert log.failed == 2 and log.committed == 0


def test_duckdb_reads_the_embedded_log(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    with open_log(root=tmp_path, commit_interval_ms=1, max_commit_rows=7) as log:
        for start in range(0, 50, 5):  # one submit is never split: 7 rows per commit = one submit of 5 per file
            log.submit([_row(i, features=np.full(4, i, np.float32) if i % 3 else None)
                        for i in range(start, start + 5)])
        log.feedback("r10", 6)
    folder = tmp_path / ".assay" / "logs"
    assert len(ParquetStore(folder).files("predictions")) >= 2
    con = duckdb.connect()
    got = con.sql(f"""
        SELECT p.request_id, p.top1, p.logits, p.features, f.label
        FROM read_parquet('{folder}/predictions-*.parquet') p
        LEFT JOIN read_parquet('{folder}/feedback-*.parquet') f USING (request_id, "row")
        ORDER BY p.time""").fetchall()
    frame = read_log(root=tmp_path)
    assert [g[0] for g in got] == list(frame["request_id"])
    assert [g[1] for g in got] == list(frame["top1"])
    for g, logits, features in zip(got, frame["logits"], frame["features"]):
        assert np.array_equal(np.array(g[2], np.float32), logits)
        assert (g[3] is None and features is None) or np.array_equal(np.array(g[3], np.float32), features)
    assert {g[0]: g[4] for g in got}["r10"] == 6


def test_bad_options_are_user_errors(tmp_path):
    with pytest.raises(OptionError, match="Fix:"):
        open_log("mysql://x/y", root=tmp_path)
    with pytest.raises(OptionError, match="Fix:"):
        open_log("postgresql://x/y", root=tmp_path)
    with pytest.raises(OptionError):
        open_log(root=tmp_path, durability="sometimes")  # type: ignore[arg-type]
    with pytest.raises(OptionError):
        open_log(root=tmp_path, on_full="drop")  # type: ignore[arg-type]
    with pytest.raises(OptionError):
        _row(1, role="leader")
    with pytest.raises(OptionError, match="NUL"):
        _row(1, version="a\x00b")
    with pytest.raises(OptionError, match="UTF-8"):
        _row(1, version="a\ud800")
    with pytest.raises(OptionError, match="no prediction log"):
        read_log(root=tmp_path / "nowhere")


WRITER = textwrap.dedent("""
    import sys, numpy as np
    from assay.serve.log import PredictionRow, open_log
    store, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    log = open_log(store, commit_interval_ms=5, max_commit_rows=32)
    for i in range(n):
        log.submit([PredictionRow(f"{prefix}{i}", float(i), "m@1", "primary", "0" * 64, np.ones(3), 0, 0.4)])
    log.close()
""")


def test_two_writer_processes_share_one_postgresql_table(postgres_url):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    open_log(postgres_url).close()  # tables exist before the race (the writers also retry creating them)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, postgres_url, prefix, "400"], env=env)
             for prefix in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    frame = read_log(postgres_url)
    assert sorted(frame["request_id"]) == sorted([f"a{i}" for i in range(400)] + [f"b{i}" for i in range(400)])


def test_compaction_keeps_the_contents_and_order(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    log = open_log(root=tmp_path, commit_interval_ms=0, compact_every_s=0.05)
    for i in range(60):
        log.submit([_row(i)])
        if i % 20 == 0:
            log.feedback(f"r{i}", 3)
        time.sleep(0.005)
    log.close()  # the compactor ran while the writer committed
    compact_log(root=tmp_path)
    folder = tmp_path / ".assay" / "logs"
    store = ParquetStore(folder)
    assert len(store.files("predictions")) == 1 and len(store.files("feedback")) == 1
    frame = read_log(root=tmp_path)
    assert list(frame["request_id"]) == [f"r{i}" for i in range(60)]
    assert frame["label"].notna().sum() == 3
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{folder}/predictions-*.parquet')").fetchall()[0][0] == 60


def test_a_compaction_interrupted_before_its_deletes_duplicates_nothing(tmp_path):
    import shutil

    with open_log(root=tmp_path, commit_interval_ms=0, compact_every_s=None) as log:
        for i in range(5):
            log.submit([_row(i)])
            time.sleep(0.01)
    folder = tmp_path / ".assay" / "logs"
    saved = tmp_path / "saved"
    shutil.copytree(folder, saved)
    assert compact_log(root=tmp_path) == 5
    for source in saved.glob("predictions-*.parquet"):  # as if the process died right after the rename
        shutil.copy(source, folder / source.name)
    assert list(read_log(root=tmp_path)["request_id"]) == [f"r{i}" for i in range(5)]
    assert compact_log(root=tmp_path) == 5  # the leftovers are removed
    assert len(list(folder.glob("predictions-*.parquet"))) == 1
    assert list(read_log(root=tmp_path)["request_id"]) == [f"r{i}" for i in range(5)]


def test_reads_during_compaction_never_duplicate_or_lose_rows(tmp_path):
    log = open_log(root=tmp_path, commit_interval_ms=0, compact_every_s=None)
    stop = threading.Event()
    errors: list[BaseException] = []

    def compact_repeatedly() -> None:
        while not stop.is_set():
            try:
                compact_log(root=tmp_path)
            except BaseException as exc:
                errors.append(exc)

    compactor = threading.Thread(target=compact_repeatedly, daemon=True)
    compactor.start()
    seen = 0
    for i in range(40):
        log.submit([_row(i)])
        time.sleep(0.01)
        ids = list(read_log(root=tmp_path)["request_id"])
        assert len(ids) == len(set(ids)) and len(ids) >= seen
        assert ids == [f"r{k}" for k in range(len(ids))]
        seen = len(ids)
    log.close()
    stop.set()
    compactor.join(timeout=30)
    assert not errors
    assert list(read_log(root=tmp_path)["request_id"]) == [f"r{k}" for k in range(40)]
