"""The registry database: URL defaults, engines (SQLite / PostgreSQL), embedded Alembic migrations, write
transactions, and database errors turned into :class:`~assay.errors.RegistryError` with what / where / fix.

SQLite runs in WAL mode with a busy timeout and foreign keys on; Python's sqlite3 transaction handling is
off and every write transaction starts with ``BEGIN IMMEDIATE`` (it takes the write lock up front, so two
writers queue on the busy timeout instead of failing on a lock upgrade). On PostgreSQL every write
transaction first takes a transaction-scoped advisory lock, so writers append to the audit chain one at a
time; reads never wait.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, Engine, make_url

from assay.errors import RegistryError

__all__ = [
    "BUSY_TIMEOUT_S",
    "CONNECT_TIMEOUT_S",
    "Database",
    "alembic_scripts",
    "head_revision",
    "known_revisions",
    "open_database",
    "resolve_url",
    "revisions_in",
    "script_directory",
    "single_head",
    "upgrade",
]

#: How long a SQLite writer waits for another writer's lock before giving up (seconds).
BUSY_TIMEOUT_S = 30.0
#: How long opening a PostgreSQL connection may take before the server counts as unreachable (seconds).
CONNECT_TIMEOUT_S = 5
#: Key of the PostgreSQL advisory lock that serialises the registry's writers (any constant; "assay" in ASCII).
_PG_LOCK_KEY = 0x6173736179
_SQLITE_HEADER = b"SQLite format 3\x00"
_MIGRATIONS = Path(__file__).parent / "migrations"
_FIX_URL = ("pass a registry URL (sqlite:///path/registry.db or postgresql+psycopg://user@host/db) with --registry "
            "or ASSAY_REGISTRY")


def resolve_url(url: str | None, root: str | os.PathLike[str] | None = None) -> tuple[str, Path | None]:
    """(SQLAlchemy URL, SQLite file or None). ``url``: a URL or a SQLite file path; None: ``ASSAY_REGISTRY``, else
    ``<root>/.assay/registry.db`` (``root``: the working directory)."""
    given = url if url is not None else os.environ.get("ASSAY_REGISTRY") or None
    if given is None:
        file = Path(root if root is not None else os.getcwd()).expanduser().absolute() / ".assay" / "registry.db"
        return f"sqlite:///{file}", file
    if "://" not in given:
        file = Path(given).expanduser().absolute()
        return f"sqlite:///{file}", file
    try:
        parsed = make_url(given)
    except exc.ArgumentError:
        raise RegistryError(f"{_mask(given)!r} is not a database URL", where="registry URL", fix=_FIX_URL) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database
        if not database or database == ":memory:":
            raise RegistryError("an in-memory SQLite registry would vanish when the process ends",
                                where=_mask(given), fix="name a file: sqlite:///path/registry.db")
        if database.startswith("file:"):  # sqlite:///file:path?mode=ro&uri=true
            return given, Path(database[5:].split("?")[0])
        return given, Path(database)
    if backend != "postgresql":
        raise RegistryError(f"the registry runs on SQLite or PostgreSQL, not {backend!r}", where=_mask(given),
                            fix=_FIX_URL)
    if parsed.get_driver_name() != "psycopg":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False), None


def _mask(url: str) -> str:
    """The URL with its password hidden (for messages)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return url.split("@")[-1] if "@" in url else url


def alembic_scripts(location: Path) -> Any:
    """Alembic's view of the revisions embedded at ``location`` (no alembic.ini: the location is set in code)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(location))
    return ScriptDirectory.from_config(config)


_REVISION_LINE = re.compile(r'^(down_revision|revision)(?:[ \t]*:[^=\n]*)?[ \t]*=[ \t]*(None|"[^"\n]*")[ \t]*$', re.M)


@functools.cache
def revisions_in(versions: Path) -> dict[str, str | None]:
    """Revision -> the revision it upgrades from, read from the ``revision`` and ``down_revision`` lines of the
    scripts in ``versions`` without importing Alembic (opening an up-to-date database needs no migration
    machinery: ~0.5 s of every CLI start). Tests check this equals Alembic's own view, for the registry's and
    the prediction log's migrations."""
    out: dict[str, str | None] = {}
    for path in sorted(versions.glob("r*.py")):
        found = {key: None if value == "None" else value.strip('"')
                 for key, value in _REVISION_LINE.findall(path.read_text(encoding="utf-8"))}
        revision = found.get("revision")
        assert revision is not None, f"{path.name} names no revision"
        out[revision] = found.get("down_revision")
    return out


def single_head(revisions: dict[str, str | None], what: str) -> str:
    """The one revision no other revision upgrades from (the newest schema); an assertion names ``what`` when the
    scripts have branched."""
    heads = [r for r in revisions if r not in set(revisions.values())]
    assert len(heads) == 1, f"{what} have {len(heads)} heads"
    return heads[0]


def script_directory() -> Any:
    """Alembic's view of the registry's embedded revisions."""
    return alembic_scripts(_MIGRATIONS)


def known_revisions() -> dict[str, str | None]:
    """The registry's revisions, each with the revision it upgrades from (:func:`revisions_in`)."""
    return revisions_in(_MIGRATIONS / "versions")


def head_revision() -> str:
    """The newest registry schema revision this Assay knows."""
    return single_head(known_revisions(), "the embedded migrations")


@dataclass
class Database:
    """An open registry database: the engine, what it is, and whether it may be written."""

    engine: Engine
    url: str
    sqlite_file: Path | None
    read_only: bool = False

    @property
    def where(self) -> str:
        return str(self.sqlite_file) if self.sqlite_file is not None else _mask(self.url)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Database errors raised inside become RegistryErrors saying what / where / fix."""
        try:
            yield
        except exc.DBAPIError as error:
            raise translate(error, self.where, self.is_postgres) from None
        except OSError as error:  # e.g. the folder of a SQLite file vanished
            raise RegistryError(f"cannot use the registry database ({error.strerror or error})", where=self.where,
                                fix="check the path and its permissions") from None

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads (a consistent snapshot on SQLite's WAL; rolled back on exit)."""
        with self.errors(), self.engine.connect() as conn:
            yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction, serialised with every other writer (BEGIN IMMEDIATE / advisory lock);
        committed when the block ends without an exception."""
        self.check_writable()
        with self.errors(), self.engine.connect() as conn:
            if not self.is_postgres:
                conn.execution_options(assay_begin="BEGIN IMMEDIATE")
            with conn.begin():
                if self.is_postgres:
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
                yield conn

    def check_writable(self) -> None:
        """RegistryError when the registry was opened read-only."""
        if self.read_only:
            raise RegistryError("the registry is read-only", where=self.where,
                                fix="open a writable registry (check the file's and folder's permissions, or drop "
                                    "mode=ro from the URL)")

    def dispose(self) -> None:
        self.engine.dispose()


def translate(error: exc.DBAPIError, where: str, postgres: bool) -> RegistryError:
    """A RegistryError for a database failure, by what the driver said."""
    text = str(error.orig) if error.orig is not None else str(error)
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    low = text.lower()
    if "file is not a database" in low or "not a database" in low:
        return RegistryError("the registry file is not a SQLite database", where=where,
                             fix="point --registry / ASSAY_REGISTRY at a registry (or a new file name to create one)")
    if "malformed" in low or "disk image" in low or "database corrupt" in low:
        return RegistryError(f"the registry database is corrupted ({first})", where=where,
                             fix="restore the database from a backup; `assay registry verify` checks a restored one")
    if "readonly" in low or "read-only" in low or "read only" in low:
        return RegistryError("the registry is read-only", where=where,
                             fix="open a writable registry (check the file's and folder's permissions)")
    if "unable to open database" in low:
        return RegistryError("cannot open the registry database file", where=where,
                             fix="check that its folder exists and is readable and writable")
    if "database is locked" in low or "database is busy" in low:
        return RegistryError(f"another process has held the registry's write lock for more than {BUSY_TIMEOUT_S:.0f} s",
                             where=where, fix="retry when the other registry command has finished")
    if "disk is full" in low or "no space" in low:
        return RegistryError("the disk holding the registry is full", where=where, fix="free some space and retry")
    if "assay registry: rows of this table are never changed" in low:
        return RegistryError(f"the registry refused to change an append-only row ({first})", where=where,
                             fix="registry history is never edited: archive a version or move an alias instead")
    if postgres and isinstance(error, exc.OperationalError) and (
            "authentication" in low or "password" in low or ("role" in low and "does not exist" in low)):
        return RegistryError(f"the PostgreSQL server refused the login ({first})", where=where,
                             fix="check the user and password in the URL (or PGPASSWORD / ~/.pgpass)")
    if postgres and isinstance(error, exc.OperationalError) and "does not exist" in low and "database" in low:
        return RegistryError(f"the PostgreSQL database does not exist ({first})", where=where,
                             fix="create it first (createdb NAME, or CREATE DATABASE NAME) or fix the name in the URL")
    if postgres and isinstance(error, exc.OperationalError):
        return RegistryError(f"cannot reach the PostgreSQL registry: {first}", where=where,
                             fix="check the host, port, database name and credentials in the URL and that the "
                                 "server is running")
    if isinstance(error, exc.ProgrammingError | exc.OperationalError):
        return RegistryError(f"the registry database failed: {first}", where=where,
                             fix="check that this is an Assay registry and that it is reachable")
    return RegistryError(f"the registry database failed: {type(error.orig).__name__}: {first}", where=where,
                         fix="retry; if it persists, run `assay registry verify`")


def _sqlite_engine(url: str, file: Path) -> tuple[Engine, bool]:
    """An engine for a SQLite registry file (WAL, busy timeout, foreign keys, BEGIN IMMEDIATE for writes), and
    whether it is read-only."""
    parsed = make_url(url)
    read_only = "mode=ro" in (parsed.database or "") or parsed.query.get("mode") == "ro"
    if file.exists():
        if not file.is_file():
            raise RegistryError("the registry path is not a file", where=str(file),
                                fix="point --registry / ASSAY_REGISTRY at a registry database file")
        try:
            with open(file, "rb") as handle:
                header = handle.read(len(_SQLITE_HEADER))
        except OSError as error:
            raise RegistryError(f"cannot read the registry database ({error.strerror})", where=str(file),
                                fix="check the file's permissions") from None
        if header and header != _SQLITE_HEADER:
            raise RegistryError("the file is not an Assay registry (not a SQLite database)", where=str(file),
                                fix="point --registry / ASSAY_REGISTRY at a registry (or a new file name to create "
                                    "one)")
        if not os.access(file, os.W_OK) or not os.access(file.parent, os.W_OK):
            read_only = True
    elif read_only:
        raise RegistryError("the read-only registry does not exist", where=str(file), fix="check the path")
    engine = sa.create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # transactions are begun explicitly (below)
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("assay_begin", "BEGIN"))

    return engine, read_only


def _postgres_engine(url: str) -> Engine:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise RegistryError("PostgreSQL registries need the psycopg driver", where=_mask(url),
                            fix="pip install 'assay[postgres]'") from None
    return sa.create_engine(url, connect_args={"connect_timeout": CONNECT_TIMEOUT_S}, pool_pre_ping=True)


_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def _forget_connections_in_child() -> None:
    """After fork the child must not reuse the parent's pooled connections (SQLAlchemy's advice)."""
    for engine in list(_ENGINES):
        engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_connections_in_child)


def open_database(url: str, sqlite_file: Path | None, *, create_folder: bool = False,
                  revision: str | None = None) -> Database:
    """Open the registry database at ``url``, check it is a registry (or empty) and migrate it to the head
    revision (``revision``: an older one, for migration tests). Every failure is a RegistryError."""
    if sqlite_file is not None:
        if create_folder:
            with contextlib.suppress(OSError):
                sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        if not sqlite_file.parent.is_dir():
            raise RegistryError("the registry's folder does not exist", where=str(sqlite_file.parent),
                                fix="create the folder first, or choose another registry path")
        engine, read_only = _sqlite_engine(url, sqlite_file)
        db = Database(engine, url, sqlite_file, read_only)
    else:
        db = Database(_postgres_engine(url), url, None)
    _ENGINES.add(db.engine)
    try:
        upgrade(db, revision or head_revision())
    except BaseException:
        db.dispose()
        raise
    return db


def upgrade(db: Database, target: str) -> None:
    """Upgrade the registry to revision ``target`` (the head when opened; an older one only in migration tests),
    once, under the write lock (two processes opening a new registry at once create it once)."""
    with db.read() as conn:
        current = _identify(conn, db.where)
    if current == target:
        _use_wal(db)
        return
    if db.read_only:
        raise RegistryError(f"the read-only registry has schema {current or '(none)'}; this Assay needs {target}",
                            where=db.where, fix="open it writable once so it can be upgraded")
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext

    _use_wal(db)  # an empty database or an Assay registry (_identify refused anything else)
    script = script_directory()
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with db.write() as conn:
        current = _identify(conn, db.where)  # again, under the lock
        if current == target:
            return

        def steps(rev: Any, _context: Any) -> Any:
            return script._upgrade_revs(target, rev)

        with EnvironmentContext(config, script, fn=steps, destination_rev=target) as env:
            env.configure(connection=conn, target_metadata=None)
            env.run_migrations()


def _use_wal(db: Database) -> None:
    """Put a writable SQLite registry in WAL mode (readers never wait for the writer). Only once the file is
    known to be empty or an Assay registry: the journal mode is written into the file's header, and another
    program's database must be left byte for byte."""
    if db.sqlite_file is None or db.read_only:
        return
    raw = db.engine.raw_connection()  # autocommit (isolation_level None): the pragma cannot run in a transaction
    try:
        cursor = raw.cursor()
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()
    except Exception as error:
        raise RegistryError(f"cannot switch the registry to WAL mode ({error})", where=db.where,
                            fix="check that the registry's folder is writable") from None
    finally:
        raw.close()


def _identify(conn: Connection, where: str) -> str | None:
    """The schema revision of an Assay registry; None for an empty database; RegistryError for anything else.
    The prediction log's tables (``assay serve --log-store`` in the same database) are not "anything else"."""
    tables = set(sa.inspect(conn).get_table_names()) - {"assay_predictions", "assay_feedback",
                                                        "assay_log_alembic_version"}
    if not tables:
        return None
    if "alembic_version" not in tables or "registry_info" not in tables:
        shown = ", ".join(sorted(tables)[:8]) + (" ..." if len(tables) > 8 else "")
        raise RegistryError(f"the database is not an Assay registry (it holds other tables: {shown})", where=where,
                            fix="point --registry / ASSAY_REGISTRY at a registry, or at an empty database or a new "
                                "file to create one")
    revisions = [row[0] for row in conn.execute(sa.text("SELECT version_num FROM alembic_version"))]
    kind = conn.execute(sa.text("SELECT value FROM registry_info WHERE key = 'kind'")).scalar()
    if kind != "assay-registry":
        raise RegistryError("the database is not an Assay registry (its registry_info does not say so)", where=where,
                            fix="point --registry / ASSAY_REGISTRY at an Assay registry")
    if len(revisions) != 1:
        raise RegistryError(f"the registry's schema version is unreadable ({len(revisions)} revisions recorded)",
                            where=where, fix="restore the database from a backup")
    revision = revisions[0]
    if revision not in known_revisions():
        raise RegistryError(f"the registry has schema revision {revision!r}, which this Assay does not know (it was "
                            "written by a newer Assay)", where=where, fix="upgrade Assay: pip install -U assay")
    return str(revision)
