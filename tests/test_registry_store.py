"""The registry store (issue 13, items 1, 2, 4): versions, resolve, aliases by compare-and-swap, history,
archive, gc, checkouts, and clear errors for every registry that cannot be opened -- on SQLite and on a real
PostgreSQL server (``registry_url``)."""

from __future__ import annotations

import getpass
import hashlib
import json
import multiprocessing
import os
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from assay.errors import DataError, ModelError, RegistryConflictError, RegistryError, UserError
from assay.registry import AliasMove, ModelVersion, open_registry
from assay.registry.artifacts import canonical_json
from assay.registry.identity import model_files
from registry_bundles import Bundles, file_sha256, make_onnx, rewrite_evidence, variant_bundle

pytest_plugins = ["postgres"]  # the postgres_server / postgres_url / registry_url fixtures (tests/postgres.py)


@pytest.fixture(scope="session")
def bundles(tmp_path_factory) -> Bundles:
    return Bundles(tmp_path_factory.mktemp("registry-bundles"))


@pytest.fixture
def reg(registry_url, tmp_path):
    registry = open_registry(registry_url, artifacts=tmp_path / "artifacts")
    yield registry
    registry.close()


def _count(registry, table: str) -> int:
    with registry.db.read() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar())


# -- versions --------------------------------------------------------------------------------------------------
def test_register_records_an_immutable_version(reg, bundles):
    evidence = json.loads((bundles.bundles["a"] / "evidence.json").read_text())
    v1 = reg.register("digits", bundles.models["a"], evidence=bundles.bundles["a"], message="first",
                      tags={"team": "vision"})
    assert (v1.name, v1.version, v1.ref) == ("digits", 1, "digits@1")
    # Independent references: hashlib over the file, the bundle's own evidence.json.
    assert v1.model_sha256 == file_sha256(bundles.models["a"]) == evidence["model"]["sha256"]
    assert v1.model_format == "onnx"
    assert v1.data_fingerprints[0] == evidence["data"]["fingerprint"]
    assert v1.creator == getpass.getuser()
    assert v1.message == "first" and v1.tags == {"team": "vision"} and not v1.archived
    assert v1.created_at.endswith("Z") and v1.created_at[:4].isdigit()
    # The evidence tree names every bundle file by its sha256.
    tree = json.loads(reg.artifact_path(v1.evidence_sha256).read_bytes())
    assert {name: entry["sha256"] for name, entry in tree["files"].items()} == {
        p.name: file_sha256(p) for p in bundles.bundles["a"].iterdir()}
    assert reg.artifact_path(v1.evidence_sha256).read_bytes() == canonical_json(tree)
    assert hashlib.sha256(canonical_json(tree)).hexdigest() == v1.evidence_sha256
    # Monotonic per name; another name starts at 1.
    v2 = reg.register("digits", bundles.models["b"], evidence=bundles.bundles["b"])
    other = reg.register("other", bundles.models["c"], evidence=bundles.bundles["c"])
    assert (v2.version, other.version) == (2, 1)
    assert reg.version("digits", 1) == v1 and reg.versions("digits") == [v1, v2]
    assert reg.models() == ["digits", "other"]


def test_same_bytes_return_the_existing_version(reg, bundles):
    v1 = reg.register("m", bundles.models["a"], evidence=bundles.bundles["a"])
    rows = (_count(reg, "versions"), _count(reg, "audit_log"))
    again = reg.register("m", bundles.models["a"], evidence=bundles.bundles["a"], message="other message")
    assert again == v1
    assert (_count(reg, "versions"), _count(reg, "audit_log")) == rows
    # The same model with other evidence bytes is a new version.
    assert reg.register("m", bundles.models["a"], evidence=bundles.variant("a")).version == 2


def test_evidence_for_another_model_is_refused(reg, bundles):
    blobs = sorted(reg.store.blobs())
    with pytest.raises(RegistryError) as caught:
        reg.register("m", bundles.models["b"], evidence=bundles.bundles["a"])
    message = str(caught.value)
    assert "evidence is for another model" in message and "Fix:" in message
    assert file_sha256(bundles.models["b"])[:12] in message
    assert _count(reg, "versions") == 0 and sorted(reg.store.blobs()) == blobs  # nothing written


def test_git_commit_is_recorded_inside_a_repository(reg, bundles, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True, env=env)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "x"], cwd=repo, check=True, env=env)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()
    monkeypatch.chdir(repo)
    assert reg.register("m", bundles.models["a"], evidence=bundles.bundles["a"]).git_commit == head
    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.chdir(outside)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert reg.register("m", bundles.models["a"], evidence=bundles.variant("a")).git_commit is None


def test_model_sha256_matches_the_loaders(tmp_path, monkeypatch):
    """The registry hashes models without loading them; Assay's loaders are the reference."""
    from assay.models import load_model

    external = make_onnx(tmp_path / "ext" / "model.onnx", 3, external=True)
    found = model_files(external)
    assert sorted(found.files) == ["model.onnx", "model.onnx.data"]
    assert found.sha256 == load_model(external).info.sha256
    # A factory with weights: sha256(spec + NUL + weights bytes), as load_factory computes it.
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    (tmp_path / "regfactory_mod.py").write_text(
        "import torch\n\ndef build():\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    save_file(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).state_dict(), tmp_path / "w.safetensors")
    found = model_files("regfactory_mod:build", tmp_path / "w.safetensors")
    loaded = load_model("regfactory_mod:build", weights=tmp_path / "w.safetensors", num_classes=3)
    assert found.sha256 == loaded.info.sha256 and found.format == "factory"
    assert list(found.files) == ["w.safetensors"]


def test_factory_versions_store_their_weights(reg, bundles, tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"not really safetensors, but bytes to hash")
    spec = "somepkg.models:build"
    sha = hashlib.sha256(spec.encode() + b"\0" + weights.read_bytes()).hexdigest()
    bundle = rewrite_evidence(bundles.bundles["a"], tmp_path / "bundle", sha256=sha, path=spec,
                              weights=str(weights), format="factory")
    version = reg.register("f", spec, weights=weights, evidence=bundle)
    assert version.model_format == "factory" and version.model_sha256 == sha
    assert version.model_spec["path"] == spec and version.model_spec["weights"] == str(weights.resolve())
    assert reg.model_path(version).read_bytes() == weights.read_bytes()
    with pytest.raises(ModelError, match="no weights"):
        reg.register("f", spec, evidence=bundle)


@pytest.mark.parametrize("bad", ["", "-x", "a b", "a/b", "../x", "x" * 129, "é", "a@1"])
def test_invalid_names_are_refused(tmp_path, bundles, bad):
    with open_registry(f"sqlite:///{tmp_path / 'r.db'}") as registry:
        with pytest.raises(RegistryError, match="not a valid model name"):
            registry.register(bad, bundles.models["a"], evidence=bundles.bundles["a"])
        assert registry.models() == []


def test_bad_bundles_are_refused(reg, bundles, tmp_path):
    with pytest.raises(DataError, match="no evidence file"):
        reg.register("m", bundles.models["a"], evidence=tmp_path / "nowhere")
    changed = variant_bundle(bundles.bundles["a"], tmp_path / "changed", "x")
    (changed / "report.md").write_text("edited after the manifest was written")
    with pytest.raises(RegistryError, match="not the one Assay wrote: report.md changed"):
        reg.register("m", bundles.models["a"], evidence=changed)
    extra = variant_bundle(bundles.bundles["a"], tmp_path / "extra", "y")
    (extra / "notes.txt").write_text("mine")
    with pytest.raises(RegistryError, match="notes.txt is not in the manifest"):
        reg.register("m", bundles.models["a"], evidence=extra)
    with pytest.raises(ModelError, match="model file not found"):
        reg.register("m", tmp_path / "missing.onnx", evidence=bundles.bundles["a"])
    assert _count(reg, "versions") == 0


# -- resolve ------------------------------------------------------------------------------------------------------
def test_resolve_versions_aliases_and_latest(reg, bundles):
    v1 = reg.register("m", bundles.models["a"], evidence=bundles.bundles["a"])
    v2 = reg.register("m", bundles.models["b"], evidence=bundles.bundles["b"])
    reg.move_alias("m", "production", 1, expected=None, action="promote")
    assert reg.resolve("m@1") == v1 and reg.resolve("m@production") == v1 and reg.resolve("m") == v2
    reg.archive("m", 2, reason="superseded")
    assert reg.resolve("m") == v1  # latest non-archived
    assert reg.resolve("m@2").archived and reg.resolve("m@2").archived_reason == "superseded"
    with pytest.raises(RegistryError, match=r"has no version 7 \(it has version\(s\) 1-2\)"):
        reg.resolve("m@7")
    with pytest.raises(RegistryError, match=r"has no alias 'staging' \(aliases: production -> 1\)"):
        reg.resolve("m@staging")
    with pytest.raises(RegistryError, match=r"no model named 'nope' in the registry \(models: m\)"):
        reg.resolve("nope@1")
    with pytest.raises(RegistryError, match="not a valid"):
        reg.resolve("m@bad alias")


# -- aliases ------------------------------------------------------------------------------------------------------
def test_move_alias_is_compare_and_swap(reg, bundles):
    for key in "abc":
        reg.register("m", bundles.models[key], evidence=bundles.bundles[key])
    assert reg.alias_holder("m", "production") is None
    first = reg.move_alias("m", "production", 1, expected=None, action="promote", reason="first", actor="alice")
    assert isinstance(first, AliasMove) and (first.from_version, first.to_version) == (None, 1)
    with pytest.raises(RegistryConflictError, match="is held by version 1") as caught:
        reg.move_alias("m", "production", 2, expected=None, action="promote")
    assert caught.value.holder == 1
    with pytest.raises(RegistryConflictError) as caught:
        reg.move_alias("m", "production", 2, expected=3, action="promote")
    assert caught.value.holder == 1 and isinstance(caught.value, UserError)
    comparison = reg.put_artifact(bundles.bundles["b"] / "evidence.json")
    moved = reg.move_alias("m", "production", 2, expected=1, action="promote", gate_verdict="pass",
                           comparison_sha256=comparison, actor="bob")
    assert (moved.from_version, moved.to_version, moved.gate_verdict) == (1, 2, "pass")
    with pytest.raises(RegistryError, match="needs|required"):
        reg.move_alias("m", "production", 3, expected=2, action="force")
    reg.move_alias("m", "production", 3, expected=2, action="force", reason="hotfix")
    reg.move_alias("m", "production", 1, expected=3, action="rollback", reason="bad canary")
    reg.move_alias("m", "staging", 3, expected=None, action="promote")
    assert reg.aliases("m") == {"production": 1, "staging": 3}
    history = reg.history("m", "production")
    assert [(h.from_version, h.to_version, h.action, h.forced, h.reason) for h in history] == [
        (None, 1, "promote", False, "first"), (1, 2, "promote", False, None), (2, 3, "force", True, "hotfix"),
        (3, 1, "rollback", False, "bad canary")]
    assert [h.actor for h in history[:2]] == ["alice", "bob"] and history[1].comparison_sha256 == comparison
    assert [h.created_at for h in history] == sorted(h.created_at for h in history)
    assert len(reg.history("m")) == 5
    # Refusals: unknown action, version, an archived version, a comparison that is not stored.
    with pytest.raises(RegistryError, match="unknown alias move action"):
        reg.move_alias("m", "production", 2, expected=1, action="jump")
    with pytest.raises(RegistryError, match="has no version 9"):
        reg.move_alias("m", "production", 9, expected=1, action="promote")
    with pytest.raises(RegistryError, match="holds alias"):
        reg.archive("m", 1, reason="x")
    reg.archive("m", 2, reason="retired")
    with pytest.raises(RegistryError, match="is archived"):
        reg.move_alias("m", "production", 2, expected=1, action="promote")
    with pytest.raises(RegistryError, match="already archived"):
        reg.archive("m", 2, reason="again")
    with pytest.raises(RegistryError, match="not in the artifact store"):
        reg.move_alias("m", "production", 3, expected=1, action="promote", comparison_sha256="ab" * 32)
    assert reg.alias_holder("m", "production") == 1 and len(reg.history("m")) == 5
    assert reg.verify().ok


def _race_threads(url: str, artifacts: Path, contenders: int) -> list[object]:
    barrier = threading.Barrier(contenders)
    results: list[object] = [None] * contenders

    def contend(i: int) -> None:
        with open_registry(url, artifacts=artifacts) as registry:
            barrier.wait()
            try:
                results[i] = registry.move_alias("m", "production", i + 2, expected=1, action="promote")
            except RegistryConflictError as exc:
                results[i] = exc

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def _prepare_race(reg, bundles, contenders: int) -> None:
    reg.register("m", bundles.models["a"], evidence=bundles.bundles["a"])
    for _ in range(contenders):
        reg.register("m", bundles.models["a"], evidence=bundles.variant("a"))
    reg.move_alias("m", "production", 1, expected=None, action="promote")


def _check_one_winner(reg, results: list[object]) -> None:
    wins = [r for r in results if isinstance(r, AliasMove)]
    losses = [r for r in results if isinstance(r, RegistryConflictError)]
    assert len(wins) == 1 and len(losses) == len(results) - 1, results
    assert all(loss.holder == wins[0].to_version for loss in losses)
    assert reg.alias_holder("m", "production") == wins[0].to_version
    assert [(h.from_version, h.to_version) for h in reg.history("m")] == [(None, 1), (1, wins[0].to_version)]
    assert reg.verify().ok


def test_concurrent_moves_in_threads_one_wins(reg, bundles, registry_url, tmp_path):
    _prepare_race(reg, bundles, 6)
    _check_one_winner(reg, _race_threads(registry_url, tmp_path / "artifacts", 6))


def _contend_in_process(url: str, artifacts: str, target: int, barrier, queue) -> None:
    with open_registry(url, artifacts=artifacts) as registry:
        barrier.wait()
        try:
            move = registry.move_alias("m", "production", target, expected=1, action="promote")
            queue.put(("won", move.to_version))
        except RegistryConflictError as exc:
            queue.put(("lost", exc.holder))


def test_concurrent_moves_in_processes_one_wins(reg, bundles, registry_url, tmp_path):
    contenders = 4
    _prepare_race(reg, bundles, contenders)
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    barrier, queue = ctx.Barrier(contenders), ctx.Queue()
    procs = [ctx.Process(target=_contend_in_process,
                         args=(registry_url, str(tmp_path / "artifacts"), i + 2, barrier, queue))
             for i in range(contenders)]
    for p in procs:
        p.start()
    outcomes = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    winners = [v for kind, v in outcomes if kind == "won"]
    assert len(winners) == 1, outcomes
    assert all(v == winners[0] for kind, v in outcomes if kind == "lost")
    assert reg.alias_holder("m", "production") == winners[0]
    assert len(reg.history("m", "production")) == 2 and reg.verify().ok


def test_concurrent_registers_number_versions_without_gaps(reg, bundles, registry_url, tmp_path):
    sources = [bundles.variant("a") for _ in range(6)]
    barrier = threading.Barrier(len(sources))
    numbers: list[int] = []

    def register(bundle: Path) -> None:
        with open_registry(registry_url, artifacts=tmp_path / "artifacts") as registry:
            barrier.wait()
            numbers.append(registry.register("m", bundles.models["a"], evidence=bundle).version)

    threads = [threading.Thread(target=register, args=(b,)) for b in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(numbers) == list(range(1, len(sources) + 1))
    assert reg.verify().ok


# -- artifacts ------------------------------------------------------------------------------------------------------
def test_checkouts_are_read_only_copies_checked_against_their_hashes(reg, bundles):
    version = reg.register("m", bundles.models["a"], evidence=bundles.bundles["a"])
    folder = reg.evidence_dir(version)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {
        p.name: p.read_bytes() for p in bundles.bundles["a"].iterdir()}
    assert not any(p.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) for p in folder.iterdir())
    assert not folder.stat().st_mode & stat.S_IWUSR
    model = reg.model_path(version)
    assert model.name == bundles.models["a"].name and model.read_bytes() == bundles.models["a"].read_bytes()
    # A checkout changed on disk is rebuilt from the store on the next call.
    target = folder / "evidence.json"
    os.chmod(folder, stat.S_IRWXU)
    os.chmod(target, stat.S_IRUSR | stat.S_IWUSR)
    target.write_text("{}")
    again = reg.evidence_dir(version)
    assert (again / "evidence.json").read_bytes() == (bundles.bundles["a"] / "evidence.json").read_bytes()
    # A damaged blob is never handed out.
    blob = reg.artifact_path(file_sha256(bundles.bundles["a"] / "evidence.json"))
    os.chmod(blob, stat.S_IRUSR | stat.S_IWUSR)
    blob.write_text("tampered")
    os.chmod(again, stat.S_IRWXU)
    os.chmod(again / "evidence.json", stat.S_IRUSR | stat.S_IWUSR)
    (again / "evidence.json").write_text("{}")
    with pytest.raises(RegistryError, match="changed on disk"):
        reg.evidence_dir(version)


def test_checkouts_fall_back_to_a_temp_folder(reg, bundles):
    """Where checkouts/ cannot be written (here: a file stands in its place), a private temp folder serves."""
    version = reg.register("m", bundles.models["a"], evidence=bundles.bundles["a"])
    reg.store.checkout_dir.parent.mkdir(parents=True, exist_ok=True)
    reg.store.checkout_dir.write_text("in the way")
    folder = reg.evidence_dir(version)
    assert reg.store.root not in folder.parents
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {
        p.name: p.read_bytes() for p in bundles.bundles["a"].iterdir()}
    assert reg.model_path(version).read_bytes() == bundles.models["a"].read_bytes()


def test_gc_removes_only_unreferenced_blobs_the_store_wrote(reg, bundles, tmp_path):
    version = reg.register("m", bundles.models["a"], evidence=bundles.bundles["a"])
    reg.move_alias("m", "production", 1, expected=None, action="promote",
                   comparison_sha256=reg.put_artifact(bundles.bundles["b"] / "report.md"))
    orphan = reg.put_artifact(bundles.bundles["c"] / "evidence.json")
    orphan_tree = reg.evidence_dir(version)  # a checkout of a referenced tree stays
    store = reg.store
    foreign = [store.root / "notes.txt", store.root / "sha256" / "zz-not-a-blob"]
    for path in foreign:
        path.write_text("not the store's")
    before = sorted(store.blobs())
    assert reg.gc(dry_run=True) == [orphan] and sorted(store.blobs()) == before
    assert reg.gc() == [orphan]
    assert sorted(store.blobs()) == sorted(set(before) - {orphan})
    assert all(path.read_text() == "not the store's" for path in foreign) and orphan_tree.is_dir()
    assert reg.gc() == [] and reg.verify().ok
    with reg.db.read() as conn:
        events = [r[0] for r in conn.execute(sa.text("SELECT event FROM audit_log ORDER BY id"))]
    assert events == ["register", "move", "gc"]


# -- opening ------------------------------------------------------------------------------------------------------
def test_defaults_and_environment(tmp_path, monkeypatch, bundles):
    monkeypatch.delenv("ASSAY_REGISTRY", raising=False)
    monkeypatch.delenv("ASSAY_ARTIFACTS", raising=False)
    with open_registry(root=tmp_path) as registry:
        assert registry.db.sqlite_file == tmp_path / ".assay" / "registry.db"
        assert registry.store.root == tmp_path / ".assay" / "artifacts"
        registry.register("m", bundles.models["a"], evidence=bundles.bundles["a"])
    with sa.create_engine(f"sqlite:///{tmp_path / '.assay' / 'registry.db'}").connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    monkeypatch.setenv("ASSAY_REGISTRY", str(tmp_path / "env.db"))
    monkeypatch.setenv("ASSAY_ARTIFACTS", str(tmp_path / "env-artifacts"))
    with open_registry() as registry:
        assert registry.db.sqlite_file == tmp_path / "env.db"
        assert registry.store.root == tmp_path / "env-artifacts" and registry.models() == []
        with registry.db.read() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000


def _expect_registry_error(match: str, *args, **kwargs) -> RegistryError:
    started = time.perf_counter()
    with pytest.raises(RegistryError, match=match) as caught:
        open_registry(*args, **kwargs)
    error = caught.value
    assert error.fix and error.where and "Traceback" not in str(error)
    assert time.perf_counter() - started < 20
    return error


def test_files_that_are_not_registries(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(4096))
    _expect_registry_error("not a SQLite database", str(junk))
    other = tmp_path / "other.db"
    with sa.create_engine(f"sqlite:///{other}").begin() as conn:
        conn.exec_driver_sql("CREATE TABLE customers (id INTEGER)")
    _expect_registry_error(r"not an Assay registry \(it holds other tables: customers\)", str(other))
    _expect_registry_error("not a file", str(tmp_path))
    _expect_registry_error("folder does not exist", str(tmp_path / "no" / "such" / "r.db"))
    _expect_registry_error("runs on SQLite or PostgreSQL", "mysql://u@localhost/x")
    _expect_registry_error("in-memory", "sqlite://")


def test_corrupted_registry(tmp_path, bundles):
    path = tmp_path / "r.db"
    with open_registry(str(path), artifacts=tmp_path / "a") as registry:
        for key in "abc":
            registry.register("m", bundles.models[key], evidence=bundles.bundles[key])
    data = bytearray(path.read_bytes())
    rng = __import__("random").Random(0)
    for offset in range(100, len(data)):  # keep the header, scramble every page
        data[offset] = rng.randrange(256)
    path.write_bytes(bytes(data))
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    error = _expect_registry_error("corrupted|not a SQLite|not an Assay", str(path), artifacts=tmp_path / "a")
    assert str(path) in (error.where or "")


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "r.db"
    open_registry(str(path), artifacts=tmp_path / "a").close()
    with sa.create_engine(f"sqlite:///{path}").begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999_future'")
    _expect_registry_error("newer Assay", str(path))


def test_read_only_registry_reads_but_refuses_writes(tmp_path, bundles):
    path = tmp_path / "r.db"
    with open_registry(str(path), artifacts=tmp_path / "a") as registry:
        registry.register("m", bundles.models["a"], evidence=bundles.bundles["a"])
    with open_registry(f"sqlite:///file:{path}?mode=ro&uri=true", artifacts=tmp_path / "a") as registry:
        assert registry.read_only and registry.resolve("m").version == 1
        for write in (lambda: registry.register("m", bundles.models["b"], evidence=bundles.bundles["b"]),
                      lambda: registry.move_alias("m", "production", 1, expected=None, action="promote"),
                      lambda: registry.archive("m", 1, reason="x"), registry.gc,
                      lambda: registry.put_artifact(bundles.models["a"])):
            with pytest.raises(RegistryError, match="read-only"):
                write()
        assert registry.verify().ok
    if os.geteuid() != 0:  # root ignores file permissions
        os.chmod(path, stat.S_IRUSR)
        with open_registry(str(path), artifacts=tmp_path / "a") as registry:
            assert registry.read_only
            with pytest.raises(RegistryError, match="read-only"):
                registry.archive("m", 1, reason="x")


def test_unreachable_postgres_fails_fast():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connection refused
        error = _expect_registry_error("cannot reach the PostgreSQL registry",
                                       f"postgresql+psycopg://u:secret@127.0.0.1:{port}/db")
    assert "secret" not in str(error)
    # A host that drops packets: the connect timeout ends the wait (TEST-NET-1, RFC 5737, is never routed).
    started = time.perf_counter()
    with pytest.raises(RegistryError, match="cannot reach"):
        open_registry("postgresql://u@192.0.2.1:5432/db")
    assert time.perf_counter() - started < 20


# -- the registry against an independent model of it ----------------------------------------------------------------
class RegistryMachine(RuleBasedStateMachine):
    """Random sequences of register / move / archive against a dict-and-list model of what they must do."""

    def __init__(self) -> None:
        super().__init__()
        self.versions: dict[str, int] = {}
        self.aliases: dict[tuple[str, str], int] = {}
        self.archived: set[tuple[str, int]] = set()
        self.moves = 0

    @initialize()
    def open(self) -> None:
        import tempfile

        self.tmp = Path(tempfile.mkdtemp(prefix="assay-reg-machine-"))
        self.reg = open_registry(str(self.tmp / "r.db"), artifacts=self.tmp / "artifacts")
        self.sources = [variant_bundle(MACHINE_BUNDLES.bundles["a"], self.tmp / f"b{i}", f"m{i}") for i in range(4)]

    def teardown(self) -> None:
        if hasattr(self, "reg"):
            self.reg.close()
            import shutil

            shutil.rmtree(self.tmp, ignore_errors=True)

    @rule(name=st.sampled_from(["x", "y"]), source=st.integers(0, 3))
    def register(self, name: str, source: int) -> None:
        version = self.reg.register(name, MACHINE_BUNDLES.models["a"], evidence=self.sources[source])
        known = getattr(self, "known", {})
        self.known = known
        if (name, source) in known:
            assert version.version == known[(name, source)]
        else:
            self.versions[name] = self.versions.get(name, 0) + 1
            assert version.version == self.versions[name]
            known[(name, source)] = version.version

    @rule(name=st.sampled_from(["x", "y"]), alias=st.sampled_from(["production", "staging"]),
          to=st.integers(1, 3), expected=st.one_of(st.none(), st.integers(1, 3)))
    def move(self, name: str, alias: str, to: int, expected: int | None) -> None:
        holder = self.aliases.get((name, alias))
        try:
            self.reg.move_alias(name, alias, to, expected=expected, action="promote")
        except RegistryConflictError as exc:
            assert holder != expected and exc.holder == holder
            return
        except RegistryError:
            assert (name not in self.versions or to > self.versions[name] or (name, to) in self.archived
                    or (holder == expected and holder == to))
            return
        assert holder == expected and name in self.versions and to <= self.versions[name]
        self.aliases[(name, alias)] = to
        self.moves += 1

    @rule(name=st.sampled_from(["x", "y"]), number=st.integers(1, 4))
    def archive(self, name: str, number: int) -> None:
        try:
            self.reg.archive(name, number, reason="r")
        except RegistryError:
            assert (name not in self.versions or number > self.versions[name] or (name, number) in self.archived
                    or number in {v for (n, _a), v in self.aliases.items() if n == name})
            return
        self.archived.add((name, number))

    @invariant()
    def agrees(self) -> None:
        if not hasattr(self, "reg"):
            return
        assert self.reg.models() == sorted(self.versions)
        for name in self.versions:
            assert self.reg.aliases(name) == {a: v for (n, a), v in sorted(self.aliases.items()) if n == name}
            assert {(name, v.version) for v in self.reg.versions(name) if v.archived} == {
                k for k in self.archived if k[0] == name}
        assert sum(len(self.reg.history(n)) for n in self.versions) == self.moves


MACHINE_BUNDLES: Bundles


def test_registry_agrees_with_a_model_of_it(bundles):
    global MACHINE_BUNDLES
    MACHINE_BUNDLES = bundles
    machine = RegistryMachine.TestCase
    machine.settings = settings(max_examples=12, stateful_step_count=15, deadline=None,
                                suppress_health_check=list(HealthCheck))
    machine().runTest()


def test_version_records_are_frozen(reg, bundles):
    version = reg.register("m", bundles.models["a"], evidence=bundles.bundles["a"])
    assert isinstance(version, ModelVersion)
    with pytest.raises(AttributeError):
        version.version = 2  # type: ignore[misc]


def test_postgres_login_and_database_errors(postgres_server):
    base = postgres_server.url("no_such_database")
    error = _expect_registry_error("PostgreSQL database does not exist", base)
    assert "createdb" in (error.fix or "")
    _expect_registry_error("refused the login", base.replace(f"//{postgres_server.user}", "//nobody_here"))
