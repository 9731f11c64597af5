"""Crash safety of the registry library, without the CLI (issue 13, item 6), on SQLite and a real PostgreSQL
server: a process registering a version and moving an alias is killed with SIGKILL at random points (the delay
drawn within the run time of an uninterrupted run); afterwards ``verify`` passes, every version has its
artifacts, every alias points to a version, and a retry succeeds. (test_registry_crash.py kills the CLI.)"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time

import pytest

from assay.registry import open_registry
from registry_bundles import Bundles, variant_bundle

pytest_plugins = ["postgres"]  # the postgres_server / postgres_url / registry_url fixtures (tests/postgres.py)

TRIALS = 50

pytestmark = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                                reason="needs fork to start killable writers quickly")


@pytest.fixture(scope="session")
def bundles(tmp_path_factory) -> Bundles:
    return Bundles(tmp_path_factory.mktemp("registry-crash-bundles"))


def _register_and_promote(url: str, artifacts: str, model: str, bundle: str) -> None:
    """The writer: register a bundle, then move 'production' to it (as promote would)."""
    with open_registry(url, artifacts=artifacts) as registry:
        version = registry.register("m", model, evidence=bundle)
        holder = registry.alias_holder("m", "production")
        if holder != version.version:
            registry.move_alias("m", "production", version.version, expected=holder,
                                action="promote" if holder is None else "force", reason="crash test")
    os._exit(0)


def _check_consistent(registry) -> None:
    report = registry.verify()
    assert report.ok, report.problems
    numbers = {v.version for v in registry.versions("m")} if registry.models() else set()
    for tree in [v.evidence_sha256 for n in registry.models() for v in registry.versions(n)]:
        assert registry.store.has(tree)
    if numbers:
        assert set(registry.aliases("m").values()) <= numbers


def test_killed_writers_leave_a_consistent_registry(registry_url, tmp_path, bundles):
    artifacts = tmp_path / "artifacts"
    model = str(bundles.models["a"])
    ctx = multiprocessing.get_context("fork")
    registry = open_registry(registry_url, artifacts=artifacts)

    def writer(bundle) -> multiprocessing.process.BaseProcess:
        proc = ctx.Process(target=_register_and_promote, args=(registry_url, str(artifacts), model, str(bundle)))
        proc.start()
        return proc

    started = time.perf_counter()
    proc = writer(variant_bundle(bundles.bundles["a"], tmp_path / "bundle0", "trial 0"))  # one uninterrupted run
    proc.join(60)
    duration = time.perf_counter() - started
    assert proc.exitcode == 0 and registry.resolve("m@production").version == 1

    # Kill at a delay drawn uniformly within the writer's run time; a writer that finished first was not killed
    # (its run time, shorter than thought, bounds later delays), so trials go on until TRIALS writers were killed.
    rng = random.Random(13)
    attempts = killed = before_commit = mid_register = 0
    while killed < TRIALS and attempts < 4 * TRIALS:
        attempts += 1
        bundle = variant_bundle(bundles.bundles["a"], tmp_path / f"bundle{attempts}", f"trial {attempts}")
        known = len(registry.versions("m"))
        blobs = len(list(registry.store.blobs()))
        started = time.perf_counter()
        proc = writer(bundle)
        time.sleep(rng.uniform(0, duration))
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(60)
        if proc.exitcode == -signal.SIGKILL:
            killed += 1
            committed = len(registry.versions("m")) > known
            before_commit += not committed
            mid_register += not committed and len(list(registry.store.blobs())) > blobs  # artifacts in, no row yet
        else:
            assert proc.exitcode == 0
            duration = min(duration, time.perf_counter() - started)
        _check_consistent(registry)
        # A retry succeeds: the same bytes give the version the killed writer committed, or a new one.
        version = registry.register("m", model, evidence=bundle)
        assert version.version == known + 1, (attempts, version.version, known)
        assert registry.evidence_dir(version).joinpath("report.md").read_bytes() == (
            bundle / "report.md").read_bytes()
    assert killed == TRIALS and before_commit >= 1, (attempts, killed, before_commit)
    removed = registry.gc()  # blobs and temp files of writers killed before their commit and not retried
    _check_consistent(registry)
    assert not (artifacts / "tmp").exists() or not list((artifacts / "tmp").iterdir())
    assert len(registry.versions("m")) == attempts + 1
    registry.close()
    print(f"{attempts} writers, {killed} killed ({before_commit} before the version committed, {mid_register} of them "
          f"after storing artifacts), {len(removed)} orphan blobs collected, writer run {duration * 1000:.0f} ms")
