"""A real, throw-away PostgreSQL server for tests (not a mock, not SQLite pretending).

``postgres_server`` (session scope, so once per pytest-xdist worker) finds ``initdb``/``pg_ctl`` (PATH, then
``/usr/lib/postgresql/*/bin``), installs Debian's ``postgresql`` package with apt-get when they are missing
(root only), runs ``initdb`` on a temp dir and starts the server with ``pg_ctl`` on a free port, listening on
127.0.0.1 only with its unix socket in the temp dir; it is stopped and removed afterwards. initdb refuses to
run as root, so as root the server runs as the ``postgres`` user (``runuser``), owning the temp dir. The test
is skipped, with the reason, only when PostgreSQL cannot be found or installed. ``ASSAY_TEST_POSTGRES_URL``
(a superuser URL) uses an existing server instead.

``postgres_url`` gives each test a fresh database (``postgresql+psycopg://...``); ``registry_url`` runs a test
on SQLite and on PostgreSQL. A test module uses them with ``pytest_plugins = ["postgres"]``.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["PostgresServer", "postgres_server", "postgres_url", "registry_url"]

_counter = itertools.count()


def _find_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: PATH first, then the newest /usr/lib/postgresql/*/bin."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(os.path.realpath(initdb)).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(found[-1]).parent if found else None


def _install() -> str | None:
    """Install Debian's postgresql package; None on success, else why not."""
    if os.geteuid() != 0:
        return "PostgreSQL is not installed and installing it needs root (apt-get install -y postgresql)"
    if shutil.which("apt-get") is None:
        return "PostgreSQL is not installed and there is no apt-get to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wait = ["-o", "DPkg::Lock::Timeout=600"]  # two xdist workers may install at once: the second waits for dpkg
    for command in (["apt-get", *wait, "install", "-y", "-q", "postgresql"],
                    ["apt-get", *wait, "update", "-q"], ["apt-get", *wait, "install", "-y", "-q", "postgresql"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode == 0 and "install" in command:
            return None
    return f"apt-get install postgresql failed: {done.stderr.strip()[-300:]}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """A running PostgreSQL cluster: ``url(dbname)``, ``create_database()``, ``stop()``."""

    def __init__(self, host: str, port: int, user: str, password: str | None = None) -> None:
        self.host, self.port, self.user, self.password = host, port, user, password

    def url(self, dbname: str = "postgres") -> str:
        auth = self.user + (f":{self.password}" if self.password else "")
        return f"postgresql+psycopg://{auth}@{self.host}:{self.port}/{dbname}"

    def _admin(self):
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                               dbname="postgres", autocommit=True, connect_timeout=10)

    def create_database(self) -> str:
        """A new empty database (unique per process); its SQLAlchemy URL."""
        name = f"assay_test_{os.getpid()}_{next(_counter)}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with contextlib.suppress(Exception), self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class _Cluster(PostgresServer):
    """A cluster this fixture made: initdb + pg_ctl on a temp dir (as the postgres user when run as root)."""

    def __init__(self) -> None:
        bindir = _find_bin()
        if bindir is None:
            reason = _install()
            if reason is not None:
                pytest.skip(reason)
            bindir = _find_bin()
            if bindir is None:
                pytest.skip("PostgreSQL was installed but initdb/pg_ctl are not on PATH or in /usr/lib/postgresql")
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="assay-pg-"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            import pwd

            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no 'postgres' user to run initdb as")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            runuser = shutil.which("runuser") or shutil.which("setpriv")
            if runuser is None:
                pytest.skip("running as root without runuser/setpriv to start PostgreSQL as 'postgres'")
            self.as_user = ([runuser, "-u", "postgres", "--"] if runuser.endswith("runuser")
                            else [runuser, f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups"])
        self.data = self.root / "data"
        self._run([str(bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                   "--locale=C", "--no-sync"], timeout=120)
        for _attempt in range(3):
            port = _free_port()
            options = (f"-p {port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
            done = self._run([str(bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
                              "-w", "-t", "60", "-o", options, "start"], timeout=90, check=False)
            if done.returncode == 0:
                super().__init__("127.0.0.1", port, "postgres")
                return
        log = (self.root / "server.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"pg_ctl could not start PostgreSQL: {done.stderr}\n{log}")

    def _run(self, command: list[str], *, timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*self.as_user, *command], capture_output=True, text=True, timeout=timeout,
                              cwd=self.root, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                          timeout=60, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server per test session (per xdist worker)."""
    external = os.environ.get("ASSAY_TEST_POSTGRES_URL")
    if external:
        from sqlalchemy.engine import make_url

        parsed = make_url(external)
        yield PostgresServer(parsed.host or "127.0.0.1", parsed.port or 5432, parsed.username or "postgres",
                             parsed.password)
        return
    started = time.perf_counter()
    cluster = _Cluster()
    cluster.startup_s = time.perf_counter() - started  # type: ignore[attr-defined]
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server (dropped afterwards)."""
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on SQLite (a file in tmp_path) and on a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return str(request.getfixturevalue("postgres_url"))
