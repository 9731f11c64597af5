"""The SQL prediction log's schema migrations (src/assay/serve/log_migrations), on SQLite and a real PostgreSQL
server: a fresh database gets exactly the schema the log used to create with ``create_all``; a database made by
that old code (tables, rows, no version table) is stamped and keeps its rows; an unknown revision or a foreign
table with the log's name is refused with what / where / fix; a registry and two log writers share one
PostgreSQL database, each with its own version table."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from assay.errors import OptionError
from assay.serve.log import PredictionRow, open_log, read_log
from assay.serve.log_migrations import (
    FIRST_REVISION,
    VERSION_TABLE,
    head_revision,
    known_revisions,
    script_directory,
)
from assay.serve.log_stores import SqlStore

pytest_plugins = ["postgres"]  # postgres_server / postgres_url / registry_url (tests/postgres.py)


def _old_metadata() -> sa.MetaData:
    """The tables exactly as SqlStore created them with create_all before the log had migrations (frozen copy)."""
    metadata = sa.MetaData()
    sa.Table(
        "assay_predictions", metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False, index=True),
        sa.Column("row", sa.BigInteger(), nullable=False),
        sa.Column("time", sa.Float(precision=53), nullable=False, index=True),
        sa.Column("version", sa.String(256), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("input_sha256", sa.String(64), nullable=False),
        sa.Column("inputs", sa.LargeBinary(), nullable=True),
        sa.Column("inputs_dtype", sa.String(32), nullable=True),
        sa.Column("inputs_shape", sa.String(256), nullable=True),
        sa.Column("logits", sa.LargeBinary(), nullable=False),
        sa.Column("top1", sa.BigInteger(), nullable=False),
        sa.Column("confidence", sa.Float(precision=53), nullable=False),
        sa.Column("features", sa.LargeBinary(), nullable=True))
    sa.Table(
        "assay_feedback", metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False, index=True),
        sa.Column("row", sa.BigInteger(), nullable=False),
        sa.Column("label", sa.BigInteger(), nullable=False),
        sa.Column("time", sa.Float(precision=53), nullable=False))
    return metadata


@pytest.fixture
def two_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two empty databases of one kind (SQLite files, or databases on the PostgreSQL test server)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    urls = server.create_database(), server.create_database()
    yield urls
    for url in urls:
        server.drop_database(url)


def _schema(url: str) -> dict[str, object]:
    """What the database says about the log's tables: columns (name, type, nullable, default), primary key,
    indexes; independent of Assay's code."""
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        out: dict[str, object] = {}
        for table in ("assay_predictions", "assay_feedback"):
            out[table] = {
                "columns": [(c["name"], str(c["type"]), c["nullable"], c.get("default"))
                            for c in inspector.get_columns(table)],
                "pk": inspector.get_pk_constraint(table)["constrained_columns"],
                "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                                  for i in inspector.get_indexes(table)),
            }
        return out
    finally:
        engine.dispose()


def _version(url: str, table: str = VERSION_TABLE) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.text(f"SELECT version_num FROM {table}"))]
    finally:
        engine.dispose()


def _row(i: int, prefix: str = "r") -> PredictionRow:
    return PredictionRow(f"{prefix}{i}", 1.7e9 + i, "m@1", "primary", f"{i:064x}", np.array([i, -1.0], np.float32),
                         0, 0.5, features=np.array([0.25 * i], np.float32))


def test_revisions_form_one_chain():
    script = script_directory()
    assert [r.revision for r in script.walk_revisions()] == [FIRST_REVISION]
    assert head_revision() == FIRST_REVISION
    assert known_revisions() == {r.revision: r.down_revision for r in script.walk_revisions()}


@pytest.mark.parametrize("two_urls", ["sqlite", "postgresql"], indirect=True)
def test_a_fresh_database_gets_exactly_the_old_schema(two_urls):
    migrated, old = two_urls
    SqlStore(migrated).close()
    engine = sa.create_engine(old)
    _old_metadata().create_all(engine)
    engine.dispose()
    assert _schema(migrated) == _schema(old)
    assert _version(migrated) == [head_revision()]
    # The store's own table objects (used for its queries) name the columns the migration made.
    store = SqlStore(migrated)
    try:
        for table in (store.predictions, store.feedback):
            assert [c.name for c in table.columns] == [c[0] for c in _schema(migrated)[table.name]["columns"]]
    finally:
        store.close()


@pytest.mark.parametrize("two_urls", ["sqlite", "postgresql"], indirect=True)
def test_a_database_made_by_create_all_is_stamped_and_keeps_its_rows(two_urls):
    url, _ = two_urls
    engine = sa.create_engine(url)
    metadata = _old_metadata()
    metadata.create_all(engine)
    with engine.begin() as conn:  # rows as the old store wrote them
        conn.execute(metadata.tables["assay_predictions"].insert(), [
            {"request_id": "old1", "row": 0, "time": 1.6e9, "version": "m@1", "model_sha256": None, "role": "primary",
             "input_sha256": "0" * 64, "inputs": None, "inputs_dtype": None, "inputs_shape": None,
             "logits": np.array([1.5, -2], "<f4").tobytes(), "top1": 0, "confidence": 0.75, "features": None}])
        conn.execute(metadata.tables["assay_feedback"].insert(), [
            {"request_id": "old1", "row": 0, "label": 1, "time": 1.6e9 + 5}])
    engine.dispose()
    with pytest.raises(sa.exc.ProgrammingError if "postgresql" in url else sa.exc.OperationalError):
        _version(url)  # no version table yet
    with open_log(url) as log:
        log.submit([_row(1)])
    assert _version(url) == [FIRST_REVISION]
    frame = read_log(url)
    assert list(frame["request_id"]) == ["old1", "r1"]
    assert np.array_equal(frame["logits"][0], np.array([1.5, -2], np.float32)) and frame["label"][0] == 1
    assert np.array_equal(frame["features"][1], np.array([0.25], np.float32))


@pytest.mark.parametrize("two_urls", ["sqlite", "postgresql"], indirect=True)
def test_an_unknown_revision_is_refused_and_left_alone(two_urls):
    url, _ = two_urls
    with open_log(url) as log:
        log.submit([_row(1)])
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = 'log_0099_future'"))
    engine.dispose()
    before = _schema(url)
    with pytest.raises(OptionError) as caught:
        open_log(url)
    error = caught.value
    assert "log_0099_future" in error.what and "newer Assay" in error.what
    assert error.where and "password" not in error.where and error.fix and "upgrade Assay" in error.fix
    assert _schema(url) == before and _version(url) == ["log_0099_future"]


@pytest.mark.parametrize("two_urls", ["sqlite", "postgresql"], indirect=True)
def test_a_foreign_table_with_the_logs_name_is_refused(two_urls):
    url, _ = two_urls
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE assay_predictions (x INTEGER)"))
    engine.dispose()
    with pytest.raises(OptionError, match="not an Assay prediction log") as caught:
        SqlStore(url)
    assert "Fix:" in str(caught.value)
    engine = sa.create_engine(url)
    try:
        assert set(sa.inspect(engine).get_table_names()) == {"assay_predictions"}  # nothing created
    finally:
        engine.dispose()


def _open_and_write(url: str, prefix: str, queue) -> None:
    try:
        with open_log(url, commit_interval_ms=1) as log:
            log.submit([_row(i, prefix) for i in range(20)])
        queue.put("ok")
    except Exception as exc:  # reported to the parent
        queue.put(repr(exc))


@pytest.mark.parametrize("two_urls", ["sqlite", "postgresql"], indirect=True)
def test_processes_opening_a_new_log_at_once_create_it_once(two_urls):
    url, _ = two_urls
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_open_and_write, args=(url, f"p{k}-", queue)) for k in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    assert results == ["ok"] * 4
    assert _version(url) == [head_revision()]
    assert sorted(read_log(url)["request_id"]) == sorted(f"p{k}-{i}" for k in range(4) for i in range(20))


def test_a_registry_and_two_log_stores_share_one_postgresql_database(postgres_url, tmp_path):
    from assay.registry import open_registry
    from assay.registry.db import head_revision as registry_head

    with open_registry(postgres_url, artifacts=tmp_path / "artifacts") as registry:
        assert registry.models() == []
    first, second = open_log(postgres_url, commit_interval_ms=1), open_log(postgres_url, commit_interval_ms=1)
    with first, second:
        first.submit([_row(i, "a") for i in range(30)])
        second.submit([_row(i, "b") for i in range(30)])
    assert _version(postgres_url) == [head_revision()]
    assert _version(postgres_url, "alembic_version") == [registry_head()]
    assert sorted(read_log(postgres_url)["request_id"]) == sorted([f"a{i}" for i in range(30)] +
                                                                  [f"b{i}" for i in range(30)])
    with open_registry(postgres_url, artifacts=tmp_path / "artifacts") as registry:  # the registry still opens
        assert registry.models() == [] and registry.verify().ok


def test_a_registry_opens_a_postgresql_database_that_already_holds_a_log(postgres_url, tmp_path):
    from assay.registry import open_registry

    open_log(postgres_url).close()
    with open_registry(postgres_url, artifacts=tmp_path / "artifacts") as registry:
        assert registry.models() == []


def test_opening_an_up_to_date_log_does_not_import_alembic(tmp_path):
    code = ("import sys\nfrom assay.serve.log_stores import SqlStore\nSqlStore(sys.argv[1]).close()\n"
            "print(any(name.startswith('alembic') for name in sys.modules))\n")
    url = f"sqlite:///{tmp_path / 'log.db'}"
    runs = [subprocess.run([sys.executable, "-c", code, url], check=True, capture_output=True, text=True)
            for _ in range(2)]
    assert [r.stdout.strip() for r in runs] == ["True", "False"]  # created with Alembic, then opened without
