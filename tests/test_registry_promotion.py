"""Promotion through the paired gate and rollback, on real evidence bundles, on SQLite and on a real PostgreSQL
server: the first holder needs no gate, a better candidate passes, a worse one is refused (the alias stays),
an inconclusive one is refused unless allowed, --force is recorded with the gate's verdict, the stored
comparison is the one `assay compare` computes, a promotion that raced another gets a conflict, and rollback
walks back through the holders. Helpers here (bundles of TorchScript models on Gaussian blobs) are shared
with test_registry_cli.py and test_registry_crash.py."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score

from assay.api import run_evaluation, write_evaluation
from assay.checks.base import EvaluateConfig
from assay.errors import DataError, OptionError, RegistryConflictError, RegistryError
from assay.registry import open_registry
from assay.registry.promotion import former_holders, promote, rollback
from conftest import make_blobs_dataset

pytest_plugins = ["postgres"]  # registry_url: each test on SQLite and on a real PostgreSQL server (tests/postgres.py)

# ------------------------------------------------------------------------------------------- shared helpers


@dataclass(frozen=True)
class Candidate:
    """A model file, its evidence bundle, and its accuracy computed here (the independent reference)."""

    model: Path
    bundle: Path
    accuracy: float


def save_linear(weight: np.ndarray, bias: np.ndarray, path: Path) -> Path:
    """A linear classifier as a TorchScript file (loads in a fresh process without any factory)."""
    layer = torch.nn.Linear(weight.shape[0], weight.shape[1])
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight.T)))
        layer.bias.copy_(torch.from_numpy(bias))
    with warnings.catch_warnings():  # TorchScript is deprecated in favour of torch.export, still a format we load
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.trace(layer.eval(), torch.zeros(2, weight.shape[0])), str(path))
    return path


def make_candidates(folder: Path, names: tuple[str, ...] = ("base", "better", "worse", "close", "other_data",
                                                            "no_predictions")) -> dict[str, Candidate]:
    """Models on noisy 3-class blobs (800 samples), each evaluated into a bundle. Their differences are chosen
    far from the default policy's limits relative to the intervals, so that the verdicts do not hinge on the
    interval method, except where straddling a limit is the point:

    * ``better``: the nearest-centre classifier (the best linear rule for these blobs);
    * ``base``: the nearest-centre rule blind to one feature: ~9 points less accurate, and worse on every
      class, so ``better`` passes the default gate against it with margin;
    * ``worse``: ``better`` with a bias that over-predicts class 0 (~6 points less accurate): fails;
    * ``close``: ``better``'s weights perturbed: ~0.6 points less accurate, so the accuracy delta's interval
      straddles the default 1-point limit: inconclusive against ``better``;
    * ``other_data``: ``better``'s rule evaluated on blobs drawn with another seed (another fingerprint);
    * ``no_predictions``: another perturbed rule whose bundle lost its predictions.npz.
    """
    folder.mkdir(parents=True, exist_ok=True)
    ds, linear = make_blobs_dataset(n=800, num_classes=3, dim=4, seed=0, noise=2.0)
    other_ds, _ = make_blobs_dataset(n=800, num_classes=3, dim=4, seed=1, noise=2.0)
    w, b = linear.weight, linear.bias
    blind = w.T.copy()  # class centres, feature 2 unseen: the nearest-centre rule on the other three features
    blind[:, 2] = 0
    rules = {
        "base": (blind.T.copy(), -0.5 * (blind**2).sum(1).astype(np.float32), ds),
        "better": (w, b, ds),
        "worse": (w, b + np.array([6.0, 0.0, 0.0], np.float32), ds),
        "close": (w + np.random.default_rng(5).normal(0, 0.3, w.shape).astype(np.float32), b, ds),
        "other_data": (w * np.float32(1.01), b, other_ds),
        "no_predictions": (w + np.random.default_rng(1).normal(0, 0.2, w.shape).astype(np.float32), b, ds),
    }
    out = {}
    for name in names:
        weight, bias, data = rules[name]
        model = save_linear(weight, bias, folder / f"{name}.pt")
        run = run_evaluation(str(model), data, config=EvaluateConfig(n_bootstrap=100), cache_dir=None)
        bundle = write_evaluation(run, folder / f"{name}-bundle")
        logits = np.asarray(run.predictions()["logits"])
        out[name] = Candidate(model, bundle, float(accuracy_score(data.y, logits.argmax(1))))
    if "no_predictions" in out:  # a bundle written without per-sample results (its manifest says so too)
        folder = out["no_predictions"].bundle
        (folder / "predictions.npz").unlink()
        manifest = json.loads((folder / "assay-manifest.json").read_text())
        del manifest["files"]["predictions.npz"]
        (folder / "assay-manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


def make_variants(folder: Path, n: int, *, seed: int = 2) -> list[Candidate]:
    """``n`` distinct models close to the nearest-centre rule (weights perturbed a little, each its own bytes),
    each evaluated on the same blobs as :func:`make_candidates`' models (so the gate can pair any two)."""
    folder.mkdir(parents=True, exist_ok=True)
    ds, linear = make_blobs_dataset(n=800, num_classes=3, dim=4, seed=0, noise=2.0)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        weight = linear.weight + rng.normal(0, 0.05, linear.weight.shape).astype(np.float32)
        model = save_linear(weight, linear.bias, folder / f"variant{i}.pt")
        run = run_evaluation(str(model), ds, config=EvaluateConfig(n_bootstrap=100), cache_dir=None)
        bundle = write_evaluation(run, folder / f"variant{i}-bundle")
        predicted = np.asarray(run.predictions()["logits"]).argmax(1)
        out.append(Candidate(model, bundle, float(accuracy_score(ds.y, predicted))))
    return out


def copy_candidates(candidates: dict[str, Candidate], folder: Path) -> dict[str, Candidate]:
    """A private copy (tests may not change the shared files)."""
    shutil.copytree(next(iter(candidates.values())).model.parent, folder)
    return {k: Candidate(folder / c.model.name, folder / c.bundle.name, c.accuracy) for k, c in candidates.items()}


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def candidates(tmp_path_factory) -> dict[str, Candidate]:
    return make_candidates(tmp_path_factory.mktemp("candidates"))


@pytest.fixture
def reg(registry_url, tmp_path):
    registry = open_registry(registry_url, artifacts=tmp_path / "artifacts")
    yield registry
    registry.close()


def _register(reg, candidates, *names):
    return [reg.register("clf", str(candidates[n].model), evidence=str(candidates[n].bundle)) for n in names]


# ------------------------------------------------------------------------------------------- promotion


def test_first_holder_needs_no_gate_and_a_better_candidate_passes_it(reg, candidates):
    v1, v2 = _register(reg, candidates, "base", "better")
    first = promote(reg, "clf", v1.version, "production", reason="initial release", actor="ci")
    assert first.promoted and first.verdict is None and first.comparison is None and first.exit_code == 0
    assert first.move.from_version is None and first.move.to_version == v1.version and first.move.action == "promote"
    assert first.move.comparison_sha256 is None and first.move.actor == "ci"

    second = promote(reg, "clf", v2.version, "production", reason="retrained")
    assert second.verdict == "pass" and second.promoted and reg.alias_holder("clf", "production") == v2.version
    move = second.move
    assert (move.from_version, move.to_version, move.action, move.gate_verdict, move.forced) == \
        (v1.version, v2.version, "promote", "pass", False)
    assert move.reason == "retrained"
    # The stored comparison is the file the move names, and says what independent arithmetic says.
    stored = reg.artifact_path(move.comparison_sha256)
    assert sha256_file(stored) == move.comparison_sha256
    comparison = json.loads(stored.read_text())
    assert comparison["verdict"] == "pass"
    assert comparison["baseline"]["model_sha256"] == v1.model_sha256
    assert comparison["candidate"]["model_sha256"] == v2.model_sha256
    expected = candidates["better"].accuracy - candidates["base"].accuracy
    assert comparison["metrics"]["accuracy_delta"]["value"] == pytest.approx(expected, abs=1e-12)
    assert [m.to_version for m in reg.history("clf", "production")] == [v1.version, v2.version]


def test_the_gate_verdict_is_the_one_assay_compare_gives_on_the_same_bundles(reg, candidates, tmp_path):
    from assay.compare.run import compare

    v_better, v_worse = _register(reg, candidates, "better", "worse")
    promote(reg, "clf", v_better.version, "production")
    result = promote(reg, "clf", v_worse.version, "production")
    direct = compare(candidates["better"].bundle, candidates["worse"].bundle, out=None)
    assert result.verdict == direct.verdict == "fail"
    assert [(r.metric, r.status) for r in result.comparison.rules] == [(r.metric, r.status) for r in direct.rules]
    assert result.comparison.metrics["accuracy_delta"].value == pytest.approx(
        candidates["worse"].accuracy - candidates["better"].accuracy, abs=1e-12)


def test_a_worse_candidate_is_refused_and_the_alias_stays(reg, candidates):
    v_better, v_worse = _register(reg, candidates, "better", "worse")
    promote(reg, "clf", v_better.version, "production")
    before = reg.history("clf")
    result = promote(reg, "clf", v_worse.version, "production", reason="try")
    assert result.verdict == "fail" and not result.promoted and result.exit_code == 1
    assert "gate failed" in result.refused
    assert reg.alias_holder("clf", "production") == v_better.version
    assert reg.history("clf") == before


def test_inconclusive_is_refused_unless_allowed(reg, candidates):
    v_better, v_close = _register(reg, candidates, "better", "close")
    promote(reg, "clf", v_better.version, "production")
    refused = promote(reg, "clf", v_close.version, "production")
    assert refused.verdict == "inconclusive" and refused.exit_code == 1 and "inconclusive" in refused.refused
    assert refused.comparison_sha256 is None and reg.alias_holder("clf", "production") == v_better.version
    assert reg.gc(dry_run=True) == []  # a refused promotion leaves nothing behind
    allowed = promote(reg, "clf", v_close.version, "production", allow_inconclusive=True, reason="smaller model")
    assert allowed.promoted and allowed.move.gate_verdict == "inconclusive" and allowed.move.action == "promote"
    assert reg.alias_holder("clf", "production") == v_close.version


def test_force_needs_a_reason_still_runs_the_gate_and_is_logged_as_forced(reg, candidates):
    v_better, v_worse = _register(reg, candidates, "better", "worse")
    promote(reg, "clf", v_better.version, "production")
    with pytest.raises(OptionError, match="reason"):
        promote(reg, "clf", v_worse.version, "production", force=True)
    with pytest.raises(OptionError, match="reason"):
        promote(reg, "clf", v_worse.version, "production", force=True, reason="   ")
    assert reg.alias_holder("clf", "production") == v_better.version
    forced = promote(reg, "clf", v_worse.version, "production", force=True, reason="hotfix for class 0 recall")
    assert forced.promoted and forced.verdict == "fail" and forced.forced
    move = forced.move
    assert (move.action, move.forced, move.gate_verdict) == ("force", True, "fail")
    assert move.comparison_sha256 and json.loads(reg.artifact_path(move.comparison_sha256).read_text())["verdict"] \
        == "fail"
    assert reg.history("clf", "production")[-1] == move


def test_force_across_different_data_records_that_no_gate_ran(reg, candidates):
    v_better, v_other = _register(reg, candidates, "better", "other_data")
    promote(reg, "clf", v_better.version, "production")
    with pytest.raises(DataError, match="different data"):
        promote(reg, "clf", v_other.version, "production")
    forced = promote(reg, "clf", v_other.version, "production", force=True, reason="new test set")
    assert forced.comparison is None and forced.move.gate_verdict == "not run"
    assert "different data" in forced.gate_error and "different data" in forced.move.reason


def test_gate_errors_name_the_version_and_how_to_fix_it(reg, candidates):
    v_better, v_other, v_nopred = _register(reg, candidates, "better", "other_data", "no_predictions")
    promote(reg, "clf", v_better.version, "production")
    with pytest.raises(DataError) as exc:
        promote(reg, "clf", v_other.version, "production")
    assert f"clf@{v_other.version}" in exc.value.what and "assay evaluate" in exc.value.fix
    with pytest.raises(DataError) as exc:
        promote(reg, "clf", v_nopred.version, "production")
    assert "predictions.npz" in exc.value.what and "assay evaluate MODEL --data DATA --out" in exc.value.fix
    assert reg.alias_holder("clf", "production") == v_better.version
    assert len(reg.history("clf")) == 1


def test_promoting_the_holder_again_moves_nothing(reg, candidates):
    (v1,) = _register(reg, candidates, "base")
    promote(reg, "clf", v1.version, "production")
    again = promote(reg, "clf", v1.version, "production")
    assert not again.promoted and again.exit_code == 0 and len(reg.history("clf")) == 1


def test_an_archived_version_cannot_be_promoted(reg, candidates):
    v1, v2 = _register(reg, candidates, "base", "better")
    promote(reg, "clf", v1.version, "production")
    reg.archive("clf", v2.version, reason="superseded")
    with pytest.raises(RegistryError, match="archived"):
        promote(reg, "clf", v2.version, "production")


def test_a_promotion_that_raced_another_gets_a_conflict_and_overwrites_nothing(reg, registry_url, candidates,
                                                                              tmp_path, monkeypatch):
    """Two threads, each with its own connection, read the same holder, run the gate, then move: the barrier
    inside the gate makes both read before either moves, so exactly one wins."""
    import assay.compare.gate as gate

    v1, v2 = _register(reg, candidates, "base", "better")
    promote(reg, "clf", v1.version, "production")
    real = gate.compare_sides
    barrier = threading.Barrier(2, timeout=60)

    def gate_after_both_read(*args, **kwargs):
        barrier.wait()
        return real(*args, **kwargs)

    monkeypatch.setattr(gate, "compare_sides", gate_after_both_read)
    outcomes: dict[str, object] = {}

    def attempt(label: str) -> None:
        other = open_registry(registry_url, artifacts=tmp_path / "artifacts")
        try:
            outcomes[label] = promote(other, "clf", v2.version, "production", reason=label)
        except Exception as exc:  # the outcome is what is tested
            outcomes[label] = exc
        finally:
            other.close()

    threads = [threading.Thread(target=attempt, args=(label,)) for label in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    won = [k for k, v in outcomes.items() if not isinstance(v, Exception)]
    lost = [v for v in outcomes.values() if isinstance(v, Exception)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert isinstance(lost[0], RegistryConflictError), lost[0]
    moves = reg.history("clf", "production")
    assert [(m.from_version, m.to_version, m.reason) for m in moves][1:] == [(v1.version, v2.version, won[0])]
    assert reg.alias_holder("clf", "production") == v2.version
    assert reg.verify().ok


# ------------------------------------------------------------------------------------------- rollback


def test_rollback_walks_back_through_the_holders(reg, candidates):
    v_base, v_better, v_worse = _register(reg, candidates, "base", "better", "worse")
    promote(reg, "clf", v_base.version, "production")
    promote(reg, "clf", v_better.version, "production")
    promote(reg, "clf", v_worse.version, "production", force=True, reason="demo")
    with pytest.raises(OptionError, match="reason"):
        rollback(reg, "clf", "production", reason="")
    back = rollback(reg, "clf", "production", reason="class 0 over-predicted in prod", actor="oncall")
    assert (back.from_version, back.to_version, back.action, back.gate_verdict, back.forced, back.actor) == \
        (v_worse.version, v_better.version, "rollback", None, False, "oncall")
    assert rollback(reg, "clf", "production", reason="still bad").to_version == v_base.version
    with pytest.raises(RegistryError, match="first holder"):
        rollback(reg, "clf", "production", reason="again")
    # --to: any former holder, never a version that did not hold the alias (that would skip the gate).
    assert rollback(reg, "clf", "production", to=v_worse.version, reason="it was fine after all").to_version == \
        v_worse.version
    assert reg.alias_holder("clf", "production") == v_worse.version
    actions = [m.action for m in reg.history("clf", "production")]
    assert actions == ["promote", "promote", "force", "rollback", "rollback", "rollback"]


def test_rollback_refuses_what_it_cannot_do(reg, candidates):
    v_base, v_better, v_worse = _register(reg, candidates, "base", "better", "worse")
    with pytest.raises(RegistryError, match="nothing to roll back"):
        rollback(reg, "clf", "production", reason="r")
    with pytest.raises(RegistryError):
        rollback(reg, "nosuch", "production", reason="r")
    promote(reg, "clf", v_base.version, "production")
    promote(reg, "clf", v_better.version, "production")
    with pytest.raises(RegistryError, match="never held"):
        rollback(reg, "clf", "production", to=v_worse.version, reason="r")
    with pytest.raises(RegistryError, match="already holds"):
        rollback(reg, "clf", "production", to=v_better.version, reason="r")
    with pytest.raises(RegistryError):
        rollback(reg, "clf", "production", to=99, reason="r")
    assert reg.alias_holder("clf", "production") == v_better.version


class _Move:
    def __init__(self, action: str, to_version: int) -> None:
        self.action, self.to_version = action, to_version


@pytest.mark.parametrize(("moves", "expected"), [
    ([], []),
    ([("promote", 1)], [1]),
    ([("promote", 1), ("promote", 2), ("promote", 3)], [1, 2, 3]),
    ([("promote", 1), ("promote", 2), ("promote", 3), ("rollback", 2)], [1, 2]),
    ([("promote", 1), ("promote", 2), ("rollback", 1), ("promote", 3)], [1, 3]),
    ([("promote", 1), ("promote", 2), ("promote", 3), ("rollback", 1)], [1]),
    ([("promote", 1), ("force", 4), ("rollback", 1), ("rollback", 4)], [1, 4]),  # --to a popped holder
])
def test_former_holders_is_a_stack_of_promotions(moves, expected):
    assert former_holders([_Move(a, v) for a, v in moves]) == expected
