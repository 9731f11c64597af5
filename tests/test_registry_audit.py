"""The tamper-evident audit log (issue 13, item 5), on SQLite and a real PostgreSQL server: database triggers
refuse UPDATE/DELETE of history; someone with direct database access who drops them and edits a row, or edits
an artifact file, is named by ``verify``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat

import pytest
import sqlalchemy as sa

from assay.registry import open_registry
from assay.registry.audit import GENESIS
from registry_bundles import Bundles, file_sha256

pytest_plugins = ["postgres"]  # the postgres_server / postgres_url / registry_url fixtures (tests/postgres.py)

APPEND_ONLY = ("audit_log", "versions", "alias_moves", "archives", "models")


@pytest.fixture(scope="session")
def bundles(tmp_path_factory) -> Bundles:
    return Bundles(tmp_path_factory.mktemp("registry-audit-bundles"))


@pytest.fixture
def reg(registry_url, tmp_path, bundles):
    """A registry with history: m@1..3, production 1 -> 2 -> 3 -> (rollback) 2, m@1 archived."""
    registry = open_registry(registry_url, artifacts=tmp_path / "artifacts")
    for key in "abc":
        registry.register("m", bundles.models[key], evidence=bundles.bundles[key])
    registry.move_alias("m", "production", 1, expected=None, action="promote", actor="alice")
    registry.move_alias("m", "production", 2, expected=1, action="promote", gate_verdict="pass", actor="alice",
                        comparison_sha256=registry.put_artifact(bundles.bundles["b"] / "report.md"))
    registry.move_alias("m", "production", 3, expected=2, action="force", reason="hotfix", actor="bob")
    registry.move_alias("m", "production", 2, expected=3, action="rollback", reason="errors", actor="bob")
    registry.archive("m", 1, reason="superseded")
    assert registry.verify().ok
    yield registry
    registry.close()


@contextlib.contextmanager
def _attacker(registry):
    """A raw connection of its own, autocommitting each statement, as someone with direct database access has."""
    engine = sa.create_engine(registry.url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def _drop_guards(conn, table: str) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"DROP TRIGGER {table}_append_only ON {table}")
    else:
        conn.exec_driver_sql(f"DROP TRIGGER {table}_no_update")
        conn.exec_driver_sql(f"DROP TRIGGER {table}_no_delete")


def _problems(registry) -> list[str]:
    report = registry.verify()
    assert not report.ok
    return report.problems


@pytest.mark.parametrize("table", APPEND_ONLY)
def test_triggers_refuse_update_and_delete(reg, table):
    column = {"audit_log": "actor", "versions": "message", "alias_moves": "reason", "archives": "reason",
              "models": "created_at"}[table]
    statements = [f"UPDATE {table} SET {column} = 'x'", f"DELETE FROM {table}"]
    if reg.db.is_postgres:
        statements.append(f"TRUNCATE {table} CASCADE")
    for statement in statements:
        with _attacker(reg) as conn, pytest.raises(sa.exc.DBAPIError, match="never changed or deleted"):
            conn.exec_driver_sql(statement)
    assert reg.verify().ok


def test_chain_hashes_recomputed_by_hand(reg):
    """row_hash = sha256(prev_hash + canonical JSON of the row), recomputed with hashlib and json only."""
    with reg.db.read() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM audit_log ORDER BY id"))]
    assert [r["event"] for r in rows] == ["register"] * 3 + ["move"] * 4 + ["archive"]
    prev = "0" * 64
    for row in rows:
        content = {key: row[key] for key in ("id", "created_at", "event", "name", "actor", "payload")}
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert row["prev_hash"] == prev
        assert row["row_hash"] == hashlib.sha256((prev + text).encode()).hexdigest()
        prev = row["row_hash"]
    assert rows[0]["prev_hash"] == GENESIS and reg.verify().head_hash == prev
    register = json.loads(rows[0]["payload"])
    version = reg.version("m", 1)
    assert (register["model_sha256"], register["evidence_sha256"], register["version"]) == (
        version.model_sha256, version.evidence_sha256, 1)
    move = json.loads(rows[3]["payload"])
    assert (move["to_version"], move["actor"], move["action"]) == (1, "alice", "promote")


def test_verify_names_an_edited_audit_row(reg):
    with _attacker(reg) as conn:
        _drop_guards(conn, "audit_log")
        conn.exec_driver_sql("UPDATE audit_log SET actor = 'mallory' WHERE id = 5")
    problems = _problems(reg)
    assert any(p.startswith("audit log: row 5 (move m) was changed") for p in problems), problems


def test_verify_names_an_edited_row_whose_hash_was_recomputed(reg):
    """An attacker who recomputes the edited row's own hash still breaks the link to the next row."""
    from assay.registry.audit import row_hash

    with _attacker(reg) as conn:
        _drop_guards(conn, "audit_log")
        row = dict(conn.exec_driver_sql("SELECT * FROM audit_log WHERE id = 6").mappings().one())
        row["actor"] = "mallory"
        conn.execute(sa.text("UPDATE audit_log SET actor = :a, row_hash = :h WHERE id = 6"),
                     {"a": "mallory", "h": row_hash(row["prev_hash"], row)})
    problems = _problems(reg)
    assert [p[:36] for p in problems] == ["audit log: row 7 does not follow row 6"[:36]], problems


def test_verify_names_a_deleted_audit_row(reg):
    with _attacker(reg) as conn:
        _drop_guards(conn, "audit_log")
        conn.exec_driver_sql("DELETE FROM audit_log WHERE id = 2")
    problems = _problems(reg)
    assert any(p.startswith("audit log: row 2 missing (deleted) before row 3") for p in problems), problems
    assert any(p.startswith("version m@2 has no audit row") for p in problems), problems


def test_a_rewritten_chain_changes_the_head_hash(reg):
    """Rewriting every row from an edit on keeps the chain consistent (verify cannot see it from inside the
    database); the head hash recorded elsewhere before shows it."""
    from assay.registry.audit import row_hash

    head = reg.verify().head_hash
    with _attacker(reg) as conn:
        _drop_guards(conn, "audit_log")
        rows = [dict(r) for r in conn.exec_driver_sql("SELECT * FROM audit_log ORDER BY id").mappings()]
        rows[-1]["actor"] = "mallory"  # the archive row: nothing else records its actor
        prev = rows[-2]["row_hash"]
        rows[-1]["row_hash"] = row_hash(prev, rows[-1])
        conn.execute(sa.text("UPDATE audit_log SET actor = :a, row_hash = :h WHERE id = :i"),
                     {"a": "mallory", "h": rows[-1]["row_hash"], "i": rows[-1]["id"]})
    report = reg.verify()
    assert report.ok and report.head_hash != head


def test_verify_names_edited_tables(reg):
    with _attacker(reg) as conn:
        _drop_guards(conn, "versions")
        _drop_guards(conn, "alias_moves")
        conn.exec_driver_sql("UPDATE versions SET message = 'rewritten' WHERE version = 2")
        conn.exec_driver_sql("UPDATE alias_moves SET reason = 'routine' WHERE id = 3")
        conn.exec_driver_sql("UPDATE aliases SET version = 3")  # no trigger: the alias table is current state
    problems = _problems(reg)
    expected = ["version m@2 differs from audit row 2 in message",
                "alias move 3 (m@production) differs from audit row 6 in reason",
                "alias m@production points to version 3 (move 4), but its last move (4) set it to version 2"]
    for text in expected:
        assert any(text in p for p in problems), (text, problems)


def test_verify_names_rows_added_behind_its_back(reg):
    with _attacker(reg) as conn:
        conn.exec_driver_sql("INSERT INTO aliases (name, alias, version, move_id) VALUES ('m', 'staging', 3, 1)")
        conn.exec_driver_sql(
            "INSERT INTO alias_moves (name, alias, from_version, to_version, action, forced, actor, created_at) "
            "VALUES ('m', 'canary', NULL, 3, 'promote', false, 'mallory', '2030-01-01T00:00:00.000000Z')")
    problems = _problems(reg)
    assert any("alias m@staging exists without any recorded move" in p for p in problems), problems
    assert any(p.startswith("alias move 5 (m@canary) has no audit row") for p in problems), problems


def test_verify_names_changed_and_missing_artifacts(reg, bundles):
    version = reg.version("m", 2)
    evidence_blob = reg.artifact_path(file_sha256(bundles.bundles["b"] / "evidence.json"))
    os.chmod(evidence_blob, stat.S_IRUSR | stat.S_IWUSR)
    evidence_blob.write_bytes(evidence_blob.read_bytes().replace(b'"n"', b'"N"', 1))
    model_blob = reg.artifact_path(file_sha256(bundles.models["c"]))
    model_blob.unlink()
    tree_blob = reg.artifact_path(reg.version("m", 1).evidence_sha256)
    tree_blob.unlink()
    problems = _problems(reg)
    assert any(p.startswith(f"artifact {evidence_blob.parent.name + evidence_blob.name} (evidence.json in the evidence "
                            "of m@2) is changed") for p in problems), problems
    assert any(p.startswith(f"artifact {model_blob.parent.name + model_blob.name} (model_c.onnx in the model of m@3) "
                            "is missing") for p in problems), problems
    assert any(f"artifact {version.evidence_sha256}" not in p and "the evidence tree of m@1) is missing" in p
               for p in problems), problems
    assert len(problems) == 3


def test_rollout_decisions_join_the_chain_and_carry_the_report_hash(reg, tmp_path):
    """A stopped canary is an audit row (no alias moves) naming the monitor report by its stored sha256; verify
    still passes, an edited rollout row is named, and bad input is refused before anything is written."""
    from assay.errors import RegistryError

    report = tmp_path / "monitor.json"
    report.write_text('{"decision": "worse"}')
    sha = reg.put_artifact(report)
    assert sha == hashlib.sha256(report.read_bytes()).hexdigest()
    before = reg.aliases("m")
    recorded = reg.record_rollout("m", action="canary_stop", reason="challenger worse with confidence",
                                  challenger="m@3", report_sha256=sha, detail={"n": 400}, actor="monitor")
    assert reg.aliases("m") == before
    [stored] = reg.rollouts("m")
    assert stored["report_sha256"] == sha and stored["challenger"] == "m@3" and stored["detail"] == {"n": 400}
    assert stored["id"] == recorded["id"] and stored["actor"] == "monitor"
    assert reg.verify().ok
    with pytest.raises(RegistryError, match="unknown rollout action"):
        reg.record_rollout("m", action="delete_everything", reason="x")
    with pytest.raises(RegistryError, match="not in the artifact store"):
        reg.record_rollout("m", action="canary_stop", reason="x", report_sha256="0" * 64)
    assert len(reg.rollouts("m")) == 1
    with _attacker(reg) as conn:
        _drop_guards(conn, "audit_log")
        conn.execute(sa.text("UPDATE audit_log SET payload = replace(payload, 'canary_stop', 'shadow_stop') "
                             "WHERE event = 'rollout'"))
    problems = reg.verify().problems
    assert any(f"row {recorded['id']}" in p for p in problems), problems
