"""Crash safety of the registry (issue 13, item 6): `assay registry register` and `assay registry promote`
processes are killed with SIGKILL at random points of their run (50 trials: the delay is drawn uniformly
within the run time measured on an uninterrupted run, so kills land in start-up, in artifact writes, inside
and after the database transaction). After each kill: `verify` passes, every version's model and evidence
are in the store, every alias points to a version and agrees with the last recorded move, every recorded
comparison is stored; and running the same command again succeeds (a register that had committed returns the
same version, a promotion that had committed finds the alias already moved)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from assay.cli import main
from assay.registry import open_registry
from test_registry_promotion import Candidate, make_candidates, make_variants, sha256_file

SCRIPT = Path(sys.executable).parent / "assay"
N_REGISTER_TRIALS = 25
N_PROMOTE_TRIALS = 25

pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="the assay script is not installed in this environment")


def _timed_run(args: list[str]) -> float:
    start = time.monotonic()
    proc = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return time.monotonic() - start


def _kill_after(args: list[str], delay: float) -> int | None:
    """Run ``assay ARGS`` and SIGKILL it after ``delay`` seconds; its exit code if it finished first."""
    proc = subprocess.Popen([str(SCRIPT), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        return None


def _check_invariants(url: str, artifacts: Path, touched: list[int]) -> None:
    """What must hold after any crash, read through a fresh connection."""
    reg = open_registry(url, artifacts=artifacts)
    try:
        report = reg.verify()
        assert report.ok, report.problems
        versions = {v.version: v for v in reg.versions("clf")}
        assert sorted(versions) == list(range(1, len(versions) + 1))  # monotonic, no gaps
        for number in touched:
            if number in versions:  # no version without its artifacts, each still what was hashed
                v = versions[number]
                assert (reg.evidence_dir(v) / "evidence.json").is_file()
                assert sha256_file(reg.model_path(v)) == v.model_sha256
        moves = reg.history("clf")
        for alias, holder in reg.aliases("clf").items():  # no alias pointing to nothing
            assert holder in versions
            assert [m.to_version for m in moves if m.alias == alias][-1] == holder
        for m in moves:
            if m.comparison_sha256:
                assert sha256_file(reg.artifact_path(m.comparison_sha256)) == m.comparison_sha256
    finally:
        reg.close()


def _versions_of(url: str, artifacts: Path, c: Candidate) -> list[int]:
    reg = open_registry(url, artifacts=artifacts)
    try:
        return [v.version for v in reg.versions("clf") if v.model_sha256 == sha256_file(c.model)]
    finally:
        reg.close()


def _holder(url: str, artifacts: Path) -> int | None:
    reg = open_registry(url, artifacts=artifacts)
    try:
        return reg.alias_holder("clf", "production")
    finally:
        reg.close()


def test_sigkill_during_register_and_promote_leaves_a_consistent_registry(tmp_path, capsys):
    rng = np.random.default_rng(13)
    base = make_candidates(tmp_path / "fixed", names=("base",))["base"]
    variants = make_variants(tmp_path / "variants", N_REGISTER_TRIALS + 1)
    artifacts = tmp_path / "artifacts"
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    where = ["--registry", url, "--artifacts", str(artifacts)]
    assert main(["registry", "register", "clf", str(base.model), "--evidence", str(base.bundle), *where]) == 0
    assert main(["registry", "promote", "clf", "1", "--alias", "production", "-q", *where]) == 0

    def register_args(c: Candidate) -> list[str]:
        return ["registry", "register", "clf", str(c.model), "--evidence", str(c.bundle), *where]

    def promote_args(version: int, trial: int) -> list[str]:
        how = ["--force", "--reason", f"crash trial {trial}"] if trial % 2 else ["--allow-inconclusive"]
        return ["registry", "promote", "clf", str(version), "--alias", "production", "-q", "--n-bootstrap", "100",
                *how, *where]

    # One uninterrupted run of each command sets the range the kill delays are drawn from.
    register_s = _timed_run(register_args(variants[0]))
    promote_s = _timed_run(promote_args(2, 1))
    outcomes = {"killed": 0, "finished": 0}

    for trial, c in enumerate(variants[1:], start=1):
        code = _kill_after(register_args(c), float(rng.uniform(0, register_s)))
        outcomes["killed" if code is None else "finished"] += 1
        before = _versions_of(url, artifacts, c)
        assert len(before) <= 1
        _check_invariants(url, artifacts, before)
        assert main(register_args(c)) == 0, capsys.readouterr().err  # the retry succeeds...
        after = _versions_of(url, artifacts, c)
        assert len(after) == 1 and (not before or after == before), (trial, before, after)  # ...exactly once
        _check_invariants(url, artifacts, after)
        capsys.readouterr()

    numbers = list(range(1, N_REGISTER_TRIALS + 3))
    for trial in range(1, N_PROMOTE_TRIALS + 1):
        current = _holder(url, artifacts)
        target = numbers[(trial * 7) % len(numbers)]
        target = target if target != current else numbers[(trial * 7 + 1) % len(numbers)]
        args = promote_args(target, trial)
        code = _kill_after(args, float(rng.uniform(0, promote_s)))
        outcomes["killed" if code is None else "finished"] += 1
        holder = _holder(url, artifacts)
        assert holder in (current, target), (trial, current, target, holder)  # moved entirely, or not at all
        _check_invariants(url, artifacts, [current, target])
        retry = main(args)
        err = capsys.readouterr().err
        if retry == 0:
            assert _holder(url, artifacts) == target
        else:  # the gate refused (fail) a plain promotion: the alias stays where it was
            assert retry == 1 and trial % 2 == 0 and "Refused" in err, err
            assert _holder(url, artifacts) == current
        _check_invariants(url, artifacts, [target])

    # Interrupted writes leave at most unreferenced blobs and temp files: gc removes them, verify still passes.
    assert main(["registry", "gc", *where]) == 0
    _check_invariants(url, artifacts, numbers)
    assert outcomes["killed"] >= (N_REGISTER_TRIALS + N_PROMOTE_TRIALS) // 4, outcomes  # the kills did land
    print(f"register {register_s:.2f} s, promote {promote_s:.2f} s uninterrupted; trials: {outcomes}")
