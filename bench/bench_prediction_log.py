"""Prediction log: which embedded store (issue 14, item 4), measured in one run.

    PYTHONPATH=src .venv/bin/python bench/bench_prediction_log.py [--rows 50000] [--kills 12] [--no-postgres]

1. Group-commit throughput: ``--rows`` rows (10 float32 logits, 64 float32 features, as ``--log-features`` logs)
   submitted one request at a time through `PredictionLog` in fast mode (default window 50 ms, 2048 rows max),
   then ``close()``; rows/s from first submit to the last commit. Stores: Parquet segments (one zstd file per
   batch, temp + rename), SQLite WAL (synchronous=NORMAL), and a throw-away PostgreSQL server (tests/postgres.py).
   Also the store alone: batches of 2048 rows written straight to the store (the writer thread's ceiling).
   A light-traffic case too: Parquet written 50 rows per commit (many small segments), then compacted.
2. Read-back: the whole log as a DataFrame with `read_log` (arrays decoded), and an aggregate query in DuckDB
   (``read_parquet`` for segments; for SQLite DuckDB needs its ``sqlite`` extension, downloaded on first use:
   tried, and reported when unavailable).
3. Loss window under SIGKILL: a writer process (tests/prediction_log_writer.py, 2,000 rows/s, 50 ms window)
   killed ``--kills`` times at random points per store; rows acknowledged but absent, and how long before the
   kill the oldest lost row was acknowledged.
Ratios are SQLite / Parquet (> 1: SQLite is faster or larger).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests"), str(ROOT / "src")]

from _common import machine  # noqa: E402


def make_rows(n: int) -> list:
    import numpy as np

    from assay.serve.log import PredictionRow

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(n, 10)).astype(np.float32)
    features = rng.normal(size=(n, 64)).astype(np.float32)
    now = time.time()
    return [PredictionRow(f"req-{i:08d}", now + i * 1e-4, "digits@3", "primary", f"{i:064x}", logits[i],
                          int(logits[i].argmax()), 0.5, features=features[i]) for i in range(n)]


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def throughput(store: str | None, root: Path, rows: list) -> tuple[float, float, int]:
    """(rows/s through the log in fast mode, mean commit ms, commits)."""
    from assay.serve.log import open_log

    log = open_log(store, root=root, queue_size=len(rows) + 1)
    started = time.perf_counter()
    for row in rows:
        log.submit([row])
    log.close()
    elapsed = time.perf_counter() - started
    assert log.committed == len(rows), (log.committed, log.dropped, log.failed)
    return len(rows) / elapsed, 1000 * log.commit_seconds / max(log.commits, 1), log.commits


def store_only(store: str | None, root: Path, rows: list, batch: int = 2048) -> float:
    from assay.serve.log import _open_store

    backend = _open_store(store, root, fsync=False)
    started = time.perf_counter()
    for start in range(0, len(rows), batch):
        backend.write(rows[start:start + batch], [])
    elapsed = time.perf_counter() - started
    backend.close()
    return len(rows) / elapsed


def readback(store: str | None, root: Path) -> tuple[float, float | str]:
    """(read_log seconds, DuckDB aggregate seconds or why it could not run)."""
    import duckdb

    from assay.serve.log import read_log

    started = time.perf_counter()
    frame = read_log(store, root=root)
    read_s = time.perf_counter() - started
    assert len(frame) > 0
    con = duckdb.connect()
    if store is None:
        source = f"read_parquet('{root}/.assay/logs/predictions-*.parquet')"
    elif store.startswith("postgresql"):
        return read_s, "n/a"
    else:
        source = f"sqlite_scan('{store.removeprefix('sqlite:///')}', 'assay_predictions')"
    try:
        started = time.perf_counter()
        con.sql(f"SELECT version, top1, count(*), avg(confidence) FROM {source} GROUP BY ALL").fetchall()
        return read_s, time.perf_counter() - started
    except Exception as exc:  # reported: the sqlite extension may not be downloadable
        print(f"  DuckDB on SQLite: {str(exc).splitlines()[0][:110]}")
        return read_s, "no ext."


def kills(store_kind: str, n: int, base: Path) -> list[tuple[int, int, float]]:
    from test_prediction_log_crash import kill_and_count

    rng = random.Random(2026)
    out = []
    for trial in range(n):
        root = base / f"{store_kind}-kill{trial}"
        root.mkdir(parents=True)
        store = "-" if store_kind == "parquet" else f"sqlite:///{root / 'log.db'}"
        out.append(kill_and_count(store, root, rng))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    import numpy as np

    print(f"# prediction log: {args.rows:,} rows (10 logits + 64 features, float32) — {machine()}")
    rows = make_rows(args.rows)
    base = Path(tempfile.mkdtemp(prefix="assay-logbench-"))
    stores: dict[str, str | None] = {"Parquet segments": None, "SQLite WAL": f"sqlite:///{base / 'sq' / 'log.db'}"}
    (base / "sq").mkdir()
    cluster = None
    if not args.no_postgres:
        try:
            import postgres

            cluster = postgres._Cluster()
            stores["PostgreSQL"] = cluster.create_database()
        except BaseException as exc:  # pytest.skip raises a BaseException subclass
            print(f"PostgreSQL: not measured ({exc})")
    results = {}
    try:
        print(f"{'store':18} {'log rows/s':>11} {'commit ms':>10} {'commits':>8} {'store-only rows/s':>18} "
              f"{'read_log s':>11} {'DuckDB s':>9} {'disk MB':>8} files")
        for name, store in stores.items():
            root = base / name.split()[0]
            rate, commit_ms, commits = throughput(store, root, rows)
            only = store_only(store, base / (name.split()[0] + "-only"), rows)
            read_s, duck = readback(store, root)
            disk = folder_bytes(root / ".assay" / "logs") if store is None else (
                folder_bytes(base / "sq") if name.startswith("SQLite") else float("nan"))
            files = len(list((root / ".assay" / "logs").glob("predictions-*.parquet"))) if store is None else 1
            results[name] = (rate, only, read_s)
            duck_text = f"{duck:9.3f}" if isinstance(duck, float) else duck
            print(f"{name:18} {rate:11,.0f} {commit_ms:10.1f} {commits:8d} {only:18,.0f} {read_s:11.3f} "
                  f"{duck_text:>9} {disk / 1e6:8.1f} {files}")
    finally:
        if cluster is not None:
            cluster.stop()
    small = base / "small"
    small_rate = store_only(None, small, rows, batch=50)
    small_read, small_duck = readback(None, small)
    duck_text = small_duck if isinstance(small_duck, str) else f"{small_duck:.3f}"
    small_files = len(list((small / ".assay" / "logs").glob("predictions-*.parquet")))
    print(f"Parquet, light traffic (50 rows per commit, {small_files} segments): store-only {small_rate:,.0f} rows/s, "
          f"read_log {small_read:.3f} s, DuckDB {duck_text} s, "
          f"{folder_bytes(small) / 1e6:.1f} MB")
    from assay.serve.log import compact_log

    started = time.perf_counter()
    removed = compact_log(root=small)
    compact_s = time.perf_counter() - started
    after_read, after_duck = readback(None, small)
    after_text = after_duck if isinstance(after_duck, str) else f"{after_duck:.3f}"
    print(f"  after compact_log ({compact_s:.2f} s, {removed} files merged): read_log {after_read:.3f} s, "
          f"DuckDB {after_text} s")
    pq_, sq = results["Parquet segments"], results["SQLite WAL"]
    print(f"ratio SQLite / Parquet: log rows/s {sq[0] / pq_[0]:.2f}x, store-only rows/s {sq[1] / pq_[1]:.2f}x, "
          f"read_log time {sq[2] / pq_[2]:.2f}x  (> 1: SQLite faster / slower to read)")
    if "PostgreSQL" in results:
        pg = results["PostgreSQL"]
        print(f"ratio PostgreSQL / Parquet: log rows/s {pg[0] / pq_[0]:.2f}x, store-only rows/s {pg[1] / pq_[1]:.2f}x")
    print(f"SIGKILL at random points, writer at 2,000 rows/s, 50 ms window, {args.kills} kills per store:")
    for kind in ("parquet", "sqlite"):
        acked, lost, age = (np.array(x, dtype=float) for x in zip(*kills(kind, args.kills, base)))
        print(f"  {kind:8} rows lost: median {np.median(lost):.0f}, p90 {np.percentile(lost, 90):.0f}, "
              f"max {lost.max():.0f} (of {acked.min():.0f}-{acked.max():.0f} acknowledged); oldest lost ack "
              f"before the kill: median {np.median(age):.1f} ms, max {age.max():.1f} ms")


if __name__ == "__main__":
    main()
