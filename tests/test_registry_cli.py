"""`assay registry ...` end to end through `assay.cli.main` on real evidence bundles: register -> promote
(through the gate: passes, refusals with exit 1, --force) -> rollback -> history, list, show, archive, gc,
verify; and bad input, each exit 2 with "Error:" and a "Fix:", no traceback, nothing half-written: unknown
name, version or alias, evidence of another model, a bundle without predictions, different data, a corrupted
or foreign database file, PostgreSQL unreachable, a read-only registry, and two processes promoting from the
same holder (exactly one wins)."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from assay.cli import main
from assay.registry import open_registry
from cli_helpers import assert_user_error, run_cli
from test_registry_promotion import Candidate, make_candidates, sha256_file

SCRIPT = Path(sys.executable).parent / "assay"
pytest_plugins = ["postgres"]  # registry_url: SQLite and a real PostgreSQL server (tests/postgres.py)


@pytest.fixture(scope="module")
def candidates(tmp_path_factory) -> dict[str, Candidate]:
    return make_candidates(tmp_path_factory.mktemp("candidates"))


@pytest.fixture
def where(tmp_path) -> list[str]:
    """The registry options of every command in a test: a fresh SQLite registry and artifact folder."""
    (tmp_path / "reg").mkdir()
    return ["--registry", f"sqlite:///{tmp_path / 'reg' / 'registry.db'}", "--artifacts", str(tmp_path / "reg" / "art")]


_run, _assert_user_error = run_cli, assert_user_error  # shared with the other CLI tests (tests/cli_helpers.py)


def _json(args: list[str], capsys):
    code, out, err = _run(args, capsys)
    assert code == 0, err
    return json.loads(out)


def _register(name: str, c: Candidate, where: list[str], capsys, *extra: str) -> int:
    code, out, err = _run(["registry", "register", name, str(c.model), "--evidence", str(c.bundle), *where, *extra],
                          capsys)
    assert code == 0, err
    ref = out.split()[0]
    assert ref.startswith(f"{name}@"), out
    return int(ref.split("@")[1])


# ------------------------------------------------------------------------------------------- the workflow


def test_register_promote_rollback_history_end_to_end(registry_url, candidates, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")  # the history table's words unfolded
    where = ["--registry", registry_url, "--artifacts", str(tmp_path / "art")]
    v1 = _register("clf", candidates["base"], where, capsys, "--message", "baseline", "--tag", "data=blobs-0",
                   "--tag", "owner=ml team")
    v2 = _register("clf", candidates["better"], where, capsys)
    v3 = _register("clf", candidates["worse"], where, capsys)
    assert (v1, v2, v3) == (1, 2, 3)
    code, out, err = _run(["registry", "register", "clf", str(candidates["better"].model), "--evidence",
                           str(candidates["better"].bundle), *where], capsys)
    assert code == 0 and out.startswith("clf@2 ") and "already registered" in out, (out, err)  # identical bytes

    shown = _json(["registry", "show", "clf@1", "--json", *where], capsys)
    assert shown["message"] == "baseline" and shown["tags"] == {"data": "blobs-0", "owner": "ml team"}
    assert shown["model_sha256"] == sha256_file(candidates["base"].model) and shown["aliases"] == []
    assert (Path(shown["evidence_dir"]) / "evidence.json").read_bytes() == \
        (candidates["base"].bundle / "evidence.json").read_bytes()

    code, out, err = _run(["registry", "promote", "clf", "1", "--alias", "production", "-q", *where], capsys)
    assert code == 0 and "no gate: first holder" in " ".join(out.split()), (out, err)
    code, out, err = _run(["registry", "promote", "clf", "2", "--alias", "production", "--reason", "retrained",
                           *where], capsys)
    flat = " ".join(out.split())
    assert code == 0 and "Regression gate: PASS" in flat and "1 -> 2" in flat and "gate pass" in flat, (out, err)

    code, out, err = _run(["registry", "promote", "clf", "3", "--alias", "production", *where], capsys)
    assert code == 1 and "Regression gate: FAIL" in " ".join(out.split()), (out, err)
    assert err.startswith("Refused:") and "stays at version 2" in " ".join(err.split()) and "--force" in err
    _assert_user_error(*_run(["registry", "promote", "clf", "3", "--alias", "production", "--force", *where],
                             capsys)[::2], "needs a reason", "--reason")
    assert _json(["registry", "show", "clf@production", "--json", *where], capsys)["version"] == 2

    code, out, err = _run(["registry", "promote", "clf", "3", "--alias", "production", "--force", "--reason",
                           "hotfix", "-q", *where], capsys)
    assert code == 0 and "FORCED" in out and "gate fail" in out, (out, err)
    code, out, err = _run(["registry", "rollback", "clf", "--alias", "production", "--reason", "class 0 in prod",
                           *where], capsys)
    assert code == 0 and "3 -> 2 (rollback)" in out, (out, err)
    assert _json(["registry", "show", "clf@production", "--json", *where], capsys)["version"] == 2

    history = _json(["registry", "history", "clf", "--alias", "production", "--json", *where], capsys)
    assert [(h["from_version"], h["to_version"], h["action"], h["gate_verdict"], h["forced"], h["reason"])
            for h in history] == [(None, 1, "promote", "none", False, None), (1, 2, "promote", "pass", False,
                                   "retrained"), (2, 3, "force", "fail", True, "hotfix"),
                                  (3, 2, "rollback", None, False, "class 0 in prod")]
    reg = open_registry(where[1], artifacts=where[3])
    try:  # each recorded comparison is a stored file with that hash, saying the recorded verdict
        for h in history:
            if h["comparison_sha256"]:
                stored = reg.artifact_path(h["comparison_sha256"])
                assert sha256_file(stored) == h["comparison_sha256"]
                assert json.loads(stored.read_text())["verdict"] == h["gate_verdict"]
    finally:
        reg.close()
    code, out, _ = _run(["registry", "history", "clf", *where], capsys)
    table = " ".join(out.split())
    assert code == 0 and "rollback" in table and "class 0 in prod" in table and "hotfix" in table

    listing = _json(["registry", "list", "--json", *where], capsys)
    assert listing == [{"name": "clf", "versions": 3, "latest": 3, "archived": 0, "aliases": {"production": 2}}]
    code, out, err = _run(["registry", "archive", "clf", "1", "--reason", "superseded", *where], capsys)
    assert code == 0, err
    assert _json(["registry", "show", "clf@1", "--json", *where], capsys)["archived"] is True
    code, out, err = _run(["registry", "verify", *where], capsys)
    assert code == 0 and "check out" in out, out + err
    code, out, err = _run(["registry", "gc", "--dry-run", *where], capsys)
    assert code == 0 and "0 unreferenced artifacts would be removed" in out, out + err


def test_verify_exits_1_and_names_a_changed_artifact(candidates, where, tmp_path, capsys):
    _register("clf", candidates["base"], where, capsys)
    reg = open_registry(where[1], artifacts=where[3])
    try:
        sha = reg.version("clf", 1).model_sha256
    finally:
        reg.close()
    blob = next(p for p in Path(where[3]).rglob("*") if p.is_file() and p.name.endswith(sha[2:]))
    os.chmod(blob, 0o644)
    blob.write_bytes(blob.read_bytes() + b"tampered")
    code, out, err = _run(["registry", "verify", *where], capsys)
    assert code == 1 and sha[:12] in out and "Verification failed" in err, out + err


# ------------------------------------------------------------------------------------------- bad input


def test_unknown_name_version_and_alias(candidates, where, capsys):
    _register("clf", candidates["base"], where, capsys)
    for args, fragment in [
        (["registry", "promote", "nosuch", "1", "--alias", "production"], "nosuch"),
        (["registry", "promote", "clf", "7", "--alias", "production"], "7"),
        (["registry", "show", "nosuch@1"], "nosuch"),
        (["registry", "show", "clf@7"], "7"),
        (["registry", "show", "clf@staging"], "staging"),
        (["registry", "rollback", "clf", "--alias", "staging", "--reason", "r"], "staging"),
        (["registry", "rollback", "nosuch", "--alias", "production", "--reason", "r"], "nosuch"),
        (["registry", "archive", "clf", "7", "--reason", "r"], "7"),
        (["registry", "history", "nosuch"], "nosuch"),
        (["registry", "history", "clf", "--alias", "staging"], "staging"),
    ]:
        _assert_user_error(*_run([*args, *where], capsys)[::2], fragment)
    assert _json(["registry", "history", "clf", "--json", *where], capsys) == []


def test_evidence_of_another_model_is_refused_and_nothing_is_written(candidates, where, tmp_path, capsys):
    code, _, err = _run(["registry", "register", "clf", str(candidates["better"].model), "--evidence",
                         str(candidates["base"].bundle), *where], capsys)
    _assert_user_error(code, err)
    assert _json(["registry", "list", "--json", *where], capsys) == []
    blobs = [p for p in Path(where[3]).rglob("*") if p.is_file()] if Path(where[3]).exists() else []
    code, out, err = _run(["registry", "gc", "--dry-run", *where], capsys)
    assert code == 0 and len(blobs) == sum(line.startswith("would remove") for line in out.splitlines()), out


def test_gate_impossible_without_predictions_or_across_data(candidates, where, capsys):
    for name in ("base", "no_predictions", "other_data"):
        _register("clf", candidates[name], where, capsys)
    assert main(["registry", "promote", "clf", "1", "--alias", "production", "-q", *where]) == 0
    capsys.readouterr()
    _assert_user_error(*_run(["registry", "promote", "clf", "2", "--alias", "production", *where], capsys)[::2],
                       "clf@2", "predictions.npz", "assay evaluate MODEL --data DATA --out")
    _assert_user_error(*_run(["registry", "promote", "clf", "3", "--alias", "production", *where], capsys)[::2],
                       "different data", "re-evaluate")
    history = _json(["registry", "history", "clf", "--json", *where], capsys)
    assert [h["to_version"] for h in history] == [1]


def _foreign_database(path: Path) -> Path:
    """Somebody else's SQLite database (rollback journal, SQLite's default)."""
    con = sqlite3.connect(path)
    with con:
        con.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
        con.execute("INSERT INTO invoices (amount) VALUES (12.5)")
    con.close()
    return path


def _commands(c: Candidate) -> list[list[str]]:
    return [["registry", "list"], ["registry", "register", "clf", str(c.model), "--evidence", str(c.bundle)],
            ["registry", "verify"], ["registry", "history", "clf"]]


def test_corrupted_or_foreign_database_files(candidates, tmp_path, capsys):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(4096))
    foreign = _foreign_database(tmp_path / "foreign.db")
    for db in (garbage, foreign):
        before = sha256_file(db)
        where = ["--registry", f"sqlite:///{db}", "--artifacts", str(tmp_path / "art")]
        for args in _commands(candidates["base"]):
            _assert_user_error(*_run([*args, *where], capsys)[::2], db.name)
        if db is garbage:
            assert sha256_file(db) == before  # nothing written into it
    con = sqlite3.connect(foreign)
    try:  # not migrated, not "repaired": its tables and rows are as they were
        assert con.execute("SELECT name FROM sqlite_master").fetchall() == [("invoices",)]
        assert con.execute("SELECT id, amount FROM invoices").fetchall() == [(1, 12.5)]
    finally:
        con.close()
    assert not (tmp_path / "art").exists() or not any(p.is_file() for p in (tmp_path / "art").rglob("*"))


def test_a_foreign_database_is_left_byte_for_byte(candidates, tmp_path, capsys):
    foreign = _foreign_database(tmp_path / "foreign.db")
    before = sha256_file(foreign)
    for args in _commands(candidates["base"]):
        assert main([*args, "--registry", f"sqlite:///{foreign}", "--artifacts", str(tmp_path / "art")]) == 2
    assert sha256_file(foreign) == before


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_postgresql_unreachable_is_a_clear_error_not_a_hang(tmp_path):
    url = f"postgresql+psycopg://assay@127.0.0.1:{_closed_port()}/registry"
    start = time.monotonic()
    proc = subprocess.run([str(SCRIPT), "registry", "list", "--registry", url, "--artifacts",
                           str(tmp_path / "art")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    elapsed = time.monotonic() - start
    _assert_user_error(proc.returncode, proc.stderr, "127.0.0.1")
    print(f"unreachable PostgreSQL reported after {elapsed:.1f} s")


def test_read_only_registry_refuses_writes_and_keeps_its_contents(candidates, tmp_path, capsys):
    """A registry the user may read but not write: files without write permission (root ignores those, so as
    root the database is opened read-only by its URL, mode=ro): reads work, every write is exit 2, nothing
    changes."""
    folder = tmp_path / "reg"
    folder.mkdir()
    writable = ["--registry", f"sqlite:///{folder / 'registry.db'}", "--artifacts", str(folder / "art")]
    _register("clf", candidates["base"], writable, capsys)
    _register("clf", candidates["better"], writable, capsys)
    assert main(["registry", "promote", "clf", "1", "--alias", "production", "-q", *writable]) == 0
    capsys.readouterr()
    def stored() -> dict[Path, str]:
        """The database and the blobs; not checkouts/ (copies made for reads) nor SQLite's -wal/-shm index files,
        which a reader of a WAL database may create empty."""
        return {p: sha256_file(p) for p in folder.rglob("*") if p.is_file() and "checkouts" not in p.parts
                and not p.name.endswith(("-wal", "-shm"))}

    snapshot = stored()
    if os.geteuid() == 0:
        where = ["--registry", f"sqlite:///file:{folder / 'registry.db'}?mode=ro&uri=true", *writable[2:]]
    else:
        for p in [*folder.rglob("*"), folder]:
            os.chmod(p, 0o555 if p.is_dir() else 0o444)
        where = writable
    try:
        assert _json(["registry", "show", "clf@production", "--json", *where], capsys)["version"] == 1
        for args in (["registry", "register", "clf", str(candidates["worse"].model), "--evidence",
                      str(candidates["worse"].bundle)],
                     ["registry", "promote", "clf", "2", "--alias", "production", "-q"],
                     ["registry", "archive", "clf", "2", "--reason", "r"], ["registry", "gc"]):
            _assert_user_error(*_run([*args, *where], capsys)[::2], "read-only")
    finally:
        for p in [folder, *folder.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
    assert stored() == snapshot


# ------------------------------------------------------------------------------------------- a race

RACER = """
import os, sys, time
from pathlib import Path
import assay.compare.gate as gate

real = gate.compare_sides
meeting = Path(os.environ["RACE_DIR"])

def compare_after_both_read(*args, **kwargs):
    # Both racers have read the alias's holder by now; wait for the other, then both move.
    (meeting / os.environ["RACE_ME"]).touch()
    deadline = time.monotonic() + 60
    while len(list(meeting.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    return real(*args, **kwargs)

gate.compare_sides = compare_after_both_read
from assay.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_two_processes_promoting_from_the_same_holder_exactly_one_wins(registry_url, candidates, tmp_path, capsys):
    where = ["--registry", registry_url, "--artifacts", str(tmp_path / "art")]
    _register("clf", candidates["base"], where, capsys)
    _register("clf", candidates["better"], where, capsys)
    assert main(["registry", "promote", "clf", "1", "--alias", "production", "-q", *where]) == 0
    capsys.readouterr()
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", RACER, "registry", "promote", "clf", "2", "--alias",
                               "production", "--reason", me, "-q", *where], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "RACE_DIR": str(meeting), "RACE_ME": me, "COLUMNS": "200"})
             for me in ("A", "B")]
    results = {me: (p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for me, p in zip("AB", procs)}
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    codes = sorted(code for code, _, _ in results.values())
    assert codes == [0, 2], results
    loser = next(r for r in results.values() if r[0] == 2)
    _assert_user_error(loser[0], loser[2], "production")
    winner = next(me for me, r in results.items() if r[0] == 0)
    history = _json(["registry", "history", "clf", "--json", *where], capsys)
    assert [(h["from_version"], h["to_version"], h["reason"]) for h in history] == [(None, 1, None), (1, 2, winner)]
    code, out, err = _run(["registry", "verify", *where], capsys)
    assert code == 0, out + err
