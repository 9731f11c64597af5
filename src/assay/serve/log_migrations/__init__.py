"""Schema migrations of the prediction log's SQL tables (SQLite, PostgreSQL), embedded like the registry's
(:mod:`assay.registry.db`): Alembic configured in code, one frozen script per revision under ``versions/``.

The log keeps its revision in its own version table, ``assay_log_alembic_version``, and touches no other table,
so a registry (``alembic_version``, its own tables) and a prediction log can share one PostgreSQL database.

`upgrade_log_schema`, called by `SqlStore` on open:

- at the head revision: one read of the version table; Alembic is not imported (the fast path);
- an empty database (or one holding only other programs' tables): the head schema is created;
- the log's tables without a version table (made by ``create_all`` before the log had migrations): their
  columns are checked against ``log_0001_schema``, the database is stamped with it, then upgraded;
- an older revision: upgraded to the head;
- a revision this Assay does not know (a newer Assay wrote it), more than one recorded revision, or
  ``assay_predictions``/``assay_feedback`` tables with other columns: `OptionError` (what / where / fix), nothing
  is changed.

Upgrades run once, in one transaction, under a lock (SQLite ``BEGIN IMMEDIATE``; PostgreSQL a transaction-scoped
advisory lock of the log's own, distinct from the registry's), so processes opening a new log at once create it
once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from assay.errors import OptionError
from assay.registry.db import alembic_scripts, revisions_in, single_head

__all__ = ["FIRST_REVISION", "VERSION_TABLE", "current_revision", "head_revision", "known_revisions",
           "script_directory", "upgrade_log_schema"]

#: The log's Alembic version table (not ``alembic_version``, which a registry in the same database uses).
VERSION_TABLE = "assay_log_alembic_version"
#: The revision whose tables the log created with ``create_all`` before it had migrations.
FIRST_REVISION = "log_0001_schema"
#: PostgreSQL advisory lock serialising log schema upgrades ("assaylog" in ASCII; the registry's key differs).
_PG_LOCK_KEY = 0x61737361796C6F67
_HERE = Path(__file__).parent
#: Columns of the tables ``create_all`` made before migrations (= FIRST_REVISION; a test checks they agree).
_FIRST_COLUMNS = {
    "assay_predictions": {"id", "request_id", "row", "time", "version", "model_sha256", "role", "input_sha256",
                          "inputs", "inputs_dtype", "inputs_shape", "logits", "top1", "confidence", "features"},
    "assay_feedback": {"id", "request_id", "row", "label", "time"},
}
_UNSTAMPED = "(tables without a version)"


def script_directory() -> Any:
    """Alembic's view of the log's embedded revisions (no alembic.ini)."""
    return alembic_scripts(_HERE)


def known_revisions() -> dict[str, str | None]:
    """Revision -> the revision it upgrades from, read without importing Alembic (the registry's parser,
    :func:`assay.registry.db.revisions_in`; a test checks it equals Alembic's view)."""
    return revisions_in(_HERE / "versions")


def head_revision() -> str:
    """The newest log schema revision this Assay knows."""
    return single_head(known_revisions(), "the log's embedded migrations")


def current_revision(conn: Connection, where: str) -> str | None:
    """The log schema's revision; None when the database holds no log tables; ``_UNSTAMPED`` for tables made
    before migrations (columns checked); OptionError for an unknown revision or foreign tables with our names."""
    inspector = sa.inspect(conn)
    tables = set(inspector.get_table_names())
    if VERSION_TABLE in tables:
        revisions = [row[0] for row in conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))]
        if len(revisions) != 1:
            raise OptionError(f"the prediction log's schema version is unreadable ({len(revisions)} revisions "
                              f"recorded in {VERSION_TABLE})", where=where,
                              fix="restore the database from a backup, or log to another --log-store")
        if revisions[0] not in known_revisions():
            raise OptionError(f"the prediction log has schema revision {revisions[0]!r}, which this Assay does not "
                              "know (a newer Assay wrote it)", where=where,
                              fix="upgrade Assay (pip install -U assay), or log to another --log-store")
        return str(revisions[0])
    present = [name for name in _FIRST_COLUMNS if name in tables]
    if not present:
        return None
    for name, expected in _FIRST_COLUMNS.items():
        columns = {c["name"] for c in inspector.get_columns(name)} if name in tables else set()
        if columns != expected:
            found = ", ".join(sorted(columns)) or "no such table"
            raise OptionError(f"the database holds a table {present[0]!r} but not an Assay prediction log's tables "
                              f"({name}: {found})", where=where,
                              fix="log to another database or schema (--log-store), or drop the stray table")
    return _UNSTAMPED


def upgrade_log_schema(engine: Engine, where: str, *, target: str | None = None) -> None:
    """Bring the log's tables in ``engine``'s database to ``target`` (default: the head; an older one only in
    migration tests). SQLite engines must begin transactions with the ``assay_begin`` execution option, as
    `SqlStore`'s engine does (it is how the upgrade takes the write lock up front)."""
    target = target or head_revision()
    with engine.connect() as conn:
        if current_revision(conn, where) == target:
            return
    from alembic.config import Config

    script = script_directory()
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    postgres = engine.dialect.name == "postgresql"
    with engine.connect() as conn:
        if not postgres:
            conn.execution_options(assay_begin="BEGIN IMMEDIATE")  # takes the write lock before reading
        with conn.begin():
            if postgres:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            current = current_revision(conn, where)  # again, under the lock
            if current == target:
                return
            if current == _UNSTAMPED:
                _run(config, script, conn, FIRST_REVISION, lambda rev: script._stamp_revs(FIRST_REVISION, rev))
            _run(config, script, conn, target, lambda rev: script._upgrade_revs(target, rev))


def _run(config: Any, script: Any, conn: Connection, destination: str, steps: Any) -> None:
    from alembic.runtime.environment import EnvironmentContext

    with EnvironmentContext(config, script, fn=lambda rev, _context: steps(rev), destination_rev=destination) as env:
        env.configure(connection=conn, target_metadata=None, version_table=VERSION_TABLE)
        env.run_migrations()
