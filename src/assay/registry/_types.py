"""The registry's records: a model version, an alias move, a verification report (frozen dataclasses)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from assay.errors import RegistryError

__all__ = ["ACTIONS", "NAME_PATTERN", "ROLLOUT_ACTIONS", "AliasMove", "ModelVersion", "VerifyReport", "check_alias",
           "check_name"]

#: Model and alias names: a letter or digit, then letters, digits, '.', '_' or '-' (at most 128 characters).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: What moved an alias: a gated promotion, a rollback to an earlier holder, a forced move (logged as forced).
ACTIONS = ("promote", "rollback", "force")
#: Rollout decisions recorded in the audit log without an alias move (``Registry.record_rollout``).
ROLLOUT_ACTIONS = ("canary_stop", "shadow_stop", "auto_rollback", "auto_promote")


def check_name(name: object, *, what: str = "model name", where: str = "name") -> str:
    """``name`` when it matches :data:`NAME_PATTERN`, else a RegistryError saying which characters are allowed
    (``where``: the parameter that carried it, which the CLI shows as its argument or flag)."""
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        shown = repr(name)[:80]
        raise RegistryError(f"{shown} is not a valid {what}", where=where,
                            fix="use 1-128 characters: letters, digits, '.', '_' and '-', starting with a letter "
                                "or digit")
    return name


def check_alias(alias: object, *, where: str = "alias") -> str:
    """An alias name (same charset as model names; an all-digit alias would read as a version number)."""
    check_name(alias, what="alias", where=where)
    assert isinstance(alias, str)
    if alias.isdigit():
        raise RegistryError(f"{alias!r} is not a valid alias: NAME@{alias} reads as version {alias}", where=where,
                            fix="use a word such as 'production' or 'staging'")
    return alias


@dataclass(frozen=True)
class ModelVersion:
    """One immutable registered version of a model.

    ``model_sha256`` is the sha256 Assay records for the model (``evidence.json`` ``model.sha256``: the file's
    bytes plus ONNX external data, or sha256(factory + NUL + weights) for a factory); ``model_tree_sha256``
    and ``evidence_sha256`` name the stored trees (file name -> sha256) of the model files and of the
    evidence bundle in the artifact store. ``data_fingerprints``: the fingerprints of the data the evidence
    was computed on (``data.fingerprint`` first). ``archived``: retired (no alias may point to it).
    """

    name: str
    version: int
    model_sha256: str
    model_format: str
    model_spec: dict[str, Any]
    model_tree_sha256: str
    evidence_sha256: str
    data_fingerprints: tuple[str, ...]
    git_commit: str | None
    creator: str
    created_at: str
    message: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    archived: bool = False
    archived_reason: str | None = None

    @property
    def ref(self) -> str:
        """``NAME@VERSION``: how ``Registry.resolve`` and the CLI name this version."""
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class AliasMove:
    """One move of an alias (append-only history): who, when, from which version to which, why, and the gate's
    verdict and comparison (sha256 of the stored comparison.json) behind it. ``from_version`` is None for the
    first holder."""

    id: int
    name: str
    alias: str
    from_version: int | None
    to_version: int
    action: str
    reason: str | None
    gate_verdict: str | None
    comparison_sha256: str | None
    forced: bool
    actor: str
    created_at: str


@dataclass(frozen=True)
class VerifyReport:
    """What ``Registry.verify`` found: ``ok`` when nothing; each problem names the artifact (sha256 and what
    refers to it) or the audit row (by id) that changed or went missing. ``head_hash``: the last audit row's
    hash; recorded elsewhere, it also catches a rewrite of the whole chain after the point it was taken."""

    ok: bool
    problems: list[str]
    artifacts_checked: int = 0
    audit_rows_checked: int = 0
    head_hash: str = ""
