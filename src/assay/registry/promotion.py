"""Promotion through the paired regression gate, and rollback.

An alias (``production``, ``staging``) names the version a team serves. Moving it is the one registry
operation that changes what runs, so both ways of moving it are compare-and-swap on the holder read first
(:meth:`Registry.move_alias` with ``expected=``): of two promotions that raced from the same holder exactly one
moves the alias, the other gets a :class:`~assay.errors.RegistryConflictError` and nothing is overwritten.

* :func:`promote` runs :func:`assay.compare.gate.compare_sides` between the current holder's stored evidence
  (baseline) and the candidate's, on the same data fingerprint, under a gate policy, and moves the alias only
  when the gate passes (inconclusive only with ``allow_inconclusive``). The comparison.json is stored as an
  artifact and its sha256, the verdict and the reason are recorded in the move, so every move can be
  re-checked later. The first holder of an alias has nothing to be compared with and needs no gate.
  ``force`` overrides a refusal but skips nothing silently: the gate still runs when it can, its verdict is
  recorded, a reason is required, and the move is logged as ``force``. The verdict a move records is the gate's
  (``pass``, ``fail``, ``inconclusive``), ``none`` for a first holder (nothing to compare with) or ``not run``
  for a forced move the gate could not judge (different data, no predictions: the reason says why).
* :func:`rollback` moves the alias back to the version that held it before the current holder (walking back
  through promotions: a second rollback goes one further back), or to a named former holder. It runs no
  gate on purpose: rollback is the emergency path, used when the live version misbehaves in ways the stored
  evidence did not show, and the version it returns to already held the alias (it passed the gate, or was
  forced, when it was promoted). A reason is required and recorded.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from assay.errors import DataError, OptionError, RegistryError, UserError

if TYPE_CHECKING:
    from assay.compare.gate import Comparison, Side
    from assay.compare.policy import Policy
    from assay.registry import AliasMove, ModelVersion, Registry

__all__ = ["PromotionResult", "former_holders", "promote", "rollback"]

Verdict = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class PromotionResult:
    """What :func:`promote` did: ``move`` is the recorded alias move (None when the alias did not move:
    the gate refused, or the version already held the alias). ``comparison`` is the gate's result (None for
    the first holder, or when a forced promotion could not run the gate; ``gate_error`` then says why)."""

    name: str
    alias: str
    version: int
    previous: int | None
    move: AliasMove | None
    verdict: Verdict | None
    comparison: Comparison | None
    comparison_sha256: str | None
    forced: bool
    refused: str | None = None
    gate_error: str | None = None

    @property
    def promoted(self) -> bool:
        return self.move is not None

    @property
    def exit_code(self) -> int:
        """0 moved (or already held); 1 the gate refused (fail, or inconclusive without allow_inconclusive)."""
        return 1 if self.refused else 0


def _label(name: str, version: int) -> str:
    return f"{name}@{version}"


def _side(registry: Registry, mv: ModelVersion, role: str) -> Side:
    """One side of the gate, read from the version's stored evidence bundle."""
    from assay.compare.gate import side_from_bundle

    return side_from_bundle(registry.evidence_dir(mv), f"{role} {_label(mv.name, mv.version)}")


def _check_gateable(baseline: Side, candidate: Side, holder: ModelVersion, mv: ModelVersion, alias: str) -> None:
    """The paired gate needs per-sample predictions of both versions on the same samples: say which one is
    missing what, and how to produce it, before the gate's own (path-centred) checks would."""
    for side, v in ((baseline, holder), (candidate, mv)):
        if side.predictions is None:
            raise DataError(
                f"{_label(v.name, v.version)} was registered with an evidence bundle without predictions.npz, so "
                "the paired gate cannot compare it", where=_label(v.name, v.version),
                fix="evaluate the model again with `assay evaluate MODEL --data DATA --out BUNDLE` (it writes "
                    "predictions.npz), register that bundle as a new version and promote it; or pass --force "
                    "with --reason to move the alias without a gate")
    fa, fb = baseline.evidence.data, candidate.evidence.data
    if fa.fingerprint != fb.fingerprint:
        raise DataError(
            f"{_label(mv.name, mv.version)} and the holder of {alias!r}, {_label(holder.name, holder.version)}, "
            f"were evaluated on different data: {fb.name} (fingerprint {fb.fingerprint[:12]}) vs {fa.name} "
            f"(fingerprint {fa.fingerprint[:12]}); paired statistics need the same samples",
            where=f"{_label(mv.name, mv.version)} vs {_label(holder.name, holder.version)}",
            fix=f"re-evaluate the candidate on the holder's data (`assay evaluate MODEL --data {fa.source} --out "
                "BUNDLE`), register that bundle and promote the new version")


def _run_gate(registry: Registry, holder: ModelVersion, mv: ModelVersion, alias: str, policy: Policy,
              n_bootstrap: int, seed: int) -> Comparison:
    """The gate's comparison of ``mv`` (candidate) against ``holder`` (baseline), from their stored evidence."""
    from assay.compare.gate import compare_sides

    baseline, candidate = _side(registry, holder, "baseline"), _side(registry, mv, "candidate")
    _check_gateable(baseline, candidate, holder, mv, alias)
    return compare_sides(baseline, candidate, policy, n_bootstrap=n_bootstrap, seed=seed)


def _store_comparison(registry: Registry, comparison: Comparison) -> str:
    """comparison.json into the artifact store (only for a move that will be recorded: a refused promotion
    leaves nothing behind); its sha256."""
    fd, tmp = tempfile.mkstemp(prefix="comparison-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(comparison.model_dump_json(indent=2))
        return registry.put_artifact(Path(tmp))
    finally:
        os.unlink(tmp)


def promote(
    registry: Registry,
    name: str,
    version: int,
    alias: str,
    *,
    policy: Policy | str | os.PathLike[str] | None = None,
    allow_inconclusive: bool = False,
    force: bool = False,
    reason: str | None = None,
    actor: str | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> PromotionResult:
    """Move ``alias`` of ``name`` to ``version`` through the paired gate (see the module docstring).

    Returns a :class:`PromotionResult`; a refusal by the gate is a result (``exit_code`` 1), not an exception.
    Raises a :class:`~assay.errors.UserError` for bad input (unknown name or version, an archived version,
    bundles the gate cannot pair, ``force`` without a reason) and
    :class:`~assay.errors.RegistryConflictError` when the alias moved while the gate ran."""
    from assay.compare.policy import Policy, load_policy

    if force and not (reason and reason.strip()):
        raise OptionError("a forced promotion needs a reason", where="reason",
                          fix="say why the gate is overridden with --reason TEXT; it is recorded in the history")
    pol = policy if isinstance(policy, Policy) else load_policy(policy)  # bad policy: refused before anything
    mv = registry.version(name, version)
    if mv.archived:
        raise RegistryError(f"{_label(name, version)} is archived and cannot be promoted",
                            where=_label(name, version),
                            fix="register the model again (a new version) or promote another version")
    holder_version = registry.alias_holder(name, alias)
    unmoved = PromotionResult(name=name, alias=alias, version=version, previous=holder_version, move=None,
                              verdict=None, comparison=None, comparison_sha256=None, forced=force)
    if holder_version == version:
        return unmoved  # already there: nothing to gate, nothing to record
    comparison: Comparison | None = None
    gate_error: str | None = None
    if holder_version is not None:
        holder = registry.version(name, holder_version)
        try:
            comparison = _run_gate(registry, holder, mv, alias, pol, n_bootstrap, seed)
        except UserError as exc:
            if not force:
                raise
            gate_error = str(exc)  # forced anyway: the move records that no gate could run, and why
    verdict: Verdict | None = comparison.verdict if comparison is not None else None
    refused = None
    if verdict == "fail":
        refused = f"the gate failed: {_label(name, version)} regressed against {_label(name, holder_version or 0)}"
    elif verdict == "inconclusive" and not allow_inconclusive:
        refused = (f"the gate is inconclusive: the evidence cannot tell whether {_label(name, version)} regressed "
                   f"against {_label(name, holder_version or 0)}")
    if refused and not force:
        return replace(unmoved, verdict=verdict, comparison=comparison, refused=refused)
    sha = _store_comparison(registry, comparison) if comparison is not None else None
    recorded_verdict = verdict if verdict is not None else ("none" if holder_version is None else "not run")
    move = registry.move_alias(
        name, alias, version, expected=holder_version, action="force" if force else "promote",
        reason=reason if gate_error is None else f"{reason} [gate not run: {gate_error}]",
        gate_verdict=recorded_verdict, comparison_sha256=sha, forced=force, actor=actor)
    return replace(unmoved, move=move, verdict=verdict, comparison=comparison, comparison_sha256=sha,
                   gate_error=gate_error)


def former_holders(moves: list[AliasMove]) -> list[int]:
    """The versions an alias can roll back to, oldest first, the current holder last: the stack of holders
    built from its history (a promotion pushes its version; a rollback pops back to the version it moved to,
    so a second rollback goes one step further back, never forward again)."""
    stack: list[int] = []
    for m in moves:
        if m.action == "rollback" and m.to_version in stack:
            del stack[stack.index(m.to_version) + 1:]
        else:
            stack.append(m.to_version)
    return stack


def rollback(registry: Registry, name: str, alias: str, *, to: int | None = None, reason: str,
             actor: str | None = None) -> AliasMove:
    """Move ``alias`` back to the version that held it before the current holder (or to ``to``, any version that
    held it once), without a gate (see the module docstring for why); compare-and-swap on the current holder."""
    if not (reason and reason.strip()):
        raise OptionError("a rollback needs a reason", where="reason",
                          fix="say why with --reason TEXT; it is recorded in the history")
    current = registry.alias_holder(name, alias)
    if current is None:
        registry.versions(name)  # an unknown model is named as such
        raise RegistryError(
            f"no version of {name!r} holds the alias {alias!r}, so there is nothing to roll back",
            where=f"{name}@{alias}",
            fix=f"promote a version first: `assay registry promote {name} VERSION --alias {alias}`; "
                f"see `assay registry history {name}` for the aliases in use")
    moves = registry.history(name, alias)
    stack = former_holders(moves)
    earlier = stack[:-1] if stack and stack[-1] == current else stack
    if to is None:
        if not earlier:
            raise RegistryError(
                f"{_label(name, current)} is the first holder of {alias!r}: there is no earlier version to roll "
                "back to", where=f"{name}@{alias}",
                fix=f"promote the version you want with `assay registry promote {name} VERSION --alias {alias}`")
        target = earlier[-1]
    else:
        registry.version(name, to)  # unknown version: the store's error
        if to == current:
            raise RegistryError(f"{_label(name, to)} already holds {alias!r}", where=f"{name}@{alias}",
                                fix="name an earlier holder with --to, or leave --to out to go one holder back")
        held_ever = sorted({m.to_version for m in moves} - {current})
        if to not in held_ever:
            held = ", ".join(map(str, held_ever)) or "none"
            raise RegistryError(
                f"{_label(name, to)} never held {alias!r} (former holders: {held}); a rollback only returns to a "
                "version that held the alias, because it runs no gate", where=f"--to {to}",
                fix=f"promote it through the gate: `assay registry promote {name} {to} --alias {alias}`")
        target = to
    if registry.version(name, target).archived:
        raise RegistryError(
            f"{_label(name, target)}, the holder to roll back to, is archived", where=f"{name}@{alias}",
            fix=f"name another former holder with --to (see `assay registry history {name} --alias {alias}`)")
    return registry.move_alias(name, alias, target, expected=current, action="rollback", reason=reason,
                               forced=False, actor=actor)
