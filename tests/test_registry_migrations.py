"""Registry schema migrations (issue 13, item 1), on SQLite and a real PostgreSQL server: an empty database and
a database created by the first revision, holding data, both upgrade to the head; the revisions ship with the
package."""

from __future__ import annotations

import fnmatch
import json
import multiprocessing
from pathlib import Path

import pytest
import sqlalchemy as sa

from assay.registry import open_registry
from assay.registry import schema as head_schema
from assay.registry.artifacts import LocalArtifactStore, put_tree
from assay.registry.audit import append, now
from assay.registry.db import head_revision, known_revisions, open_database, resolve_url, script_directory
from assay.registry.identity import bundle_files, model_files
from registry_bundles import Bundles

pytest_plugins = ["postgres"]  # the postgres_server / postgres_url / registry_url fixtures (tests/postgres.py)

ROOT = Path(__file__).parents[1]
FIRST = "0001_schema"


@pytest.fixture(scope="session")
def bundles(tmp_path_factory) -> Bundles:
    return Bundles(tmp_path_factory.mktemp("registry-migration-bundles"))


def _revision(url: str) -> str:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one())
    finally:
        engine.dispose()


def _triggers(conn) -> set[str]:
    if conn.dialect.name == "postgresql":
        query = "SELECT DISTINCT trigger_name FROM information_schema.triggers"
        names = {r[0] for r in conn.exec_driver_sql(query)}
        names |= {r[0] for r in conn.exec_driver_sql("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")}
        return names
    return {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'")}


def test_revisions_form_one_chain_and_ship_with_the_package():
    script = script_directory()
    assert [r.revision for r in script.walk_revisions()] == ["0002_tags_archive", FIRST]
    assert head_revision() == "0002_tags_archive"
    # Opening a registry reads the revisions without importing Alembic: the same chain as Alembic's own view.
    assert known_revisions() == {r.revision: r.down_revision for r in script.walk_revisions()}
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["assay"]
    package = ROOT / "src" / "assay"
    for path in (package / "registry" / "migrations").rglob("*.py"):
        rel = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(rel, pattern) for pattern in patterns), f"{rel} would not ship in the wheel"


def test_upgrade_an_empty_database(registry_url, tmp_path):
    with open_registry(registry_url, artifacts=tmp_path / "a") as registry:
        assert registry.models() == []
        with registry.db.read() as conn:
            inspector = sa.inspect(conn)
            for table in head_schema.METADATA.sorted_tables:
                columns = {c["name"] for c in inspector.get_columns(table.name)}
                assert columns == {c.name for c in table.columns}, table.name
            triggers = _triggers(conn)
    assert _revision(registry.url) == head_revision()
    guarded = ("audit_log", "versions", "alias_moves", "archives", "models")
    if registry.db.is_postgres:
        assert {f"{t}_append_only" for t in guarded} | {f"{t}_no_truncate" for t in guarded} <= triggers
    else:
        assert {f"{t}_no_{e}" for t in guarded for e in ("update", "delete")} <= triggers


def _first_schema_registry(url: str, artifacts: Path, bundles: Bundles) -> None:
    """A registry at revision 0001 with what that schema holds: a model, two versions (no tags column yet), a
    promotion and a rollback of 'production', and their audit rows, written as the first release wrote them."""
    resolved, file = resolve_url(url)
    db = open_database(resolved, file, revision=FIRST)
    store = LocalArtifactStore(artifacts)
    meta = sa.MetaData()
    v1 = sa.Table("versions", meta, autoload_with=db.engine)
    assert "tags" not in v1.c and not sa.inspect(db.engine).has_table("archives")
    with db.write() as conn:
        created = now()
        conn.execute(head_schema.models.insert().values(name="m", created_at=created))
        for number, key in ((1, "a"), (2, "b")):
            files = model_files(bundles.models[key])
            spec = {**files.spec, "main": files.main, "files": sorted(files.files)}
            record = {"name": "m", "version": number, "model_sha256": files.sha256, "model_format": files.format,
                      "model_spec": spec, "model_tree_sha256": put_tree(store, files.files),
                      "evidence_sha256": put_tree(store, bundle_files(bundles.bundles[key])),
                      "data_fingerprints": ["fp"], "git_commit": None, "creator": "carol", "created_at": created,
                      "message": f"v{number}"}
            conn.execute(v1.insert().values(**{k: json.dumps(v, sort_keys=True, separators=(",", ":"))
                                               if k in ("model_spec", "data_fingerprints") else v
                                               for k, v in record.items()}))
            append(conn, "register", "m", "carol", record, created_at=created)
        moves = [(None, 1, "promote", None), (1, 2, "promote", None), (2, 1, "rollback", "bad canary")]
        for i, (source, target, action, reason) in enumerate(moves, start=1):
            move = {"id": i, "name": "m", "alias": "production", "from_version": source, "to_version": target,
                    "action": action, "reason": reason, "gate_verdict": None, "comparison_sha256": None,
                    "forced": False, "actor": "carol", "created_at": created}
            conn.execute(head_schema.alias_moves.insert().values(**move))
            if source is None:
                conn.execute(head_schema.aliases.insert().values(name="m", alias="production", version=target,
                                                                 move_id=i))
            else:
                conn.execute(head_schema.aliases.update().values(version=target, move_id=i))
            append(conn, "move", "m", "carol", move, created_at=created)
    db.dispose()


def test_upgrade_a_first_schema_database_holding_data(registry_url, tmp_path, bundles):
    _first_schema_registry(registry_url, tmp_path / "a", bundles)
    assert _revision(registry_url) == FIRST
    with open_registry(registry_url, artifacts=tmp_path / "a") as registry:
        assert _revision(registry.url) == head_revision()
        old = registry.versions("m")
        assert [(v.version, v.message, v.tags, v.archived, v.creator) for v in old] == [
            (1, "v1", {}, False, "carol"), (2, "v2", {}, False, "carol")]
        assert registry.aliases("m") == {"production": 1}
        assert [(h.from_version, h.to_version, h.reason) for h in registry.history("m")] == [
            (None, 1, None), (1, 2, None), (2, 1, "bad canary")]
        assert registry.verify().ok
        assert registry.evidence_dir(old[0]).joinpath("evidence.json").read_bytes() == (
            bundles.bundles["a"] / "evidence.json").read_bytes()
        # What the second revision added works on the old data.
        new = registry.register("m", bundles.models["c"], evidence=bundles.bundles["c"], tags={"k": "v"})
        assert (new.version, new.tags) == (3, {"k": "v"})
        assert registry.archive("m", 2, reason="old").archived
        assert registry.verify().ok
        with registry.db.read() as conn:
            triggers = _triggers(conn)
        assert ("archives_append_only" if registry.db.is_postgres else "archives_no_update") in triggers


def test_downgrade_to_the_first_schema_and_back(registry_url, tmp_path, bundles):
    """The second revision's downgrade drops what it added and keeps the data the first schema holds."""
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext

    with open_registry(registry_url, artifacts=tmp_path / "a") as registry:
        registry.register("m", bundles.models["a"], evidence=bundles.bundles["a"], tags={"k": "v"})
        script = script_directory()
        config = Config()
        config.set_main_option("script_location", script.dir)
        with registry.db.write() as conn, EnvironmentContext(
                config, script, fn=lambda rev, _ctx: script._downgrade_revs(FIRST, rev), destination_rev=FIRST) as env:
            env.configure(connection=conn, target_metadata=None)
            env.run_migrations()
        url = registry.url
    assert _revision(url) == FIRST
    with open_registry(url, artifacts=tmp_path / "a") as registry:
        assert [(v.version, v.tags) for v in registry.versions("m")] == [(1, {})]
        assert _revision(url) == head_revision()


def _open_fresh(url: str, artifacts: str, queue) -> None:
    try:
        with open_registry(url, artifacts=artifacts) as registry:
            queue.put(("ok", registry.models()))
    except Exception as exc:  # reported to the parent
        queue.put(("error", repr(exc)))


def test_processes_opening_a_new_registry_at_once_create_it_once(registry_url, tmp_path):
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_open_fresh, args=(registry_url, str(tmp_path / "a"), queue)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    assert results == [("ok", [])] * 4
    assert _revision(registry_url) == head_revision()


def test_opening_an_up_to_date_registry_does_not_import_alembic(tmp_path):
    """Alembic's machinery is ~0.5 s of every CLI start; a registry already at the head revision needs none."""
    import subprocess
    import sys

    code = ("import sys\nfrom assay.registry import open_registry\nopen_registry(root=sys.argv[1]).close()\n"
            "print(any(name.startswith('alembic') for name in sys.modules))\n")
    first = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, capture_output=True, text=True)
    second = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, capture_output=True, text=True)
    assert first.stdout.strip() == "True"  # creating the registry ran the migrations
    assert second.stdout.strip() == "False"
