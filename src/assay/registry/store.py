"""``Registry``: versions, aliases and the audit log over one database and one artifact store.

Rules it keeps:

* **Versions are immutable.** ``register`` stores the model's files and the evidence bundle in the artifact
  store first (complete blobs only), then writes the version row and its audit row in one transaction (which
  re-stores any blob a concurrent ``gc`` removed); a version is never committed without its artifacts, and
  registering the same bytes again returns the version already there, so a retry after a crash is safe.
  Database triggers refuse UPDATE/DELETE of versions; archiving is a row in the append-only ``archives``.
* **Aliases move by compare-and-swap** on the holder the caller expects: the holder is read and the alias
  updated with ``WHERE version = expected`` (or inserted) in one serialised write transaction; of two
  concurrent moves exactly one wins, the other gets :class:`~assay.errors.RegistryConflictError` naming the
  actual holder. Every move is kept (append-only ``alias_moves``).
* **The audit log is tamper-evident** (:mod:`assay.registry.audit`): every register, move, archive and gc
  appends a hash-chained row; :meth:`Registry.verify` re-hashes the chain, cross-checks the version, move,
  archive and alias tables against it, and re-hashes every artifact they reference.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from assay.errors import RegistryConflictError, RegistryError
from assay.evidence.bundle import read_evidence
from assay.registry import audit
from assay.registry._types import (
    ACTIONS,
    ROLLOUT_ACTIONS,
    AliasMove,
    ModelVersion,
    VerifyReport,
    check_alias,
    check_name,
)
from assay.registry.artifacts import (
    ArtifactStore,
    LocalArtifactStore,
    canonical_json,
    check_sha256,
    materialize_tree,
    put_tree,
    read_tree,
    sha256_of_file,
)
from assay.registry.db import Database, open_database, resolve_url
from assay.registry.identity import bundle_files, data_fingerprints, model_files
from assay.registry.schema import alias_moves, aliases, archives, audit_log, models, versions

__all__ = ["Registry", "open_registry"]

_MAX_MESSAGE = 10_000
_MAX_TAG_VALUE = 1_000
_GIT_COMMIT = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")
#: Version fields an audit "register" row records (and verify compares with the versions table).
_VERSION_FIELDS = ("name", "version", "model_sha256", "model_format", "model_spec", "model_tree_sha256",
                   "evidence_sha256", "data_fingerprints", "git_commit", "creator", "created_at", "message", "tags")
_MOVE_FIELDS = ("id", "name", "alias", "from_version", "to_version", "action", "reason", "gate_verdict",
                "comparison_sha256", "forced", "actor", "created_at")
_ARCHIVE_FIELDS = ("id", "name", "version", "reason", "actor", "created_at")


def _default_actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no USER/LOGNAME and no passwd entry (some containers)
        return f"uid-{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _git_commit(cwd: str | os.PathLike[str] | None = None) -> str | None:
    """``git rev-parse HEAD`` in ``cwd`` (the working directory), or None outside a repository / without git."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and _GIT_COMMIT.fullmatch(commit) else None


def _check_text(value: object, what: str, limit: int, *, required: bool = False) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip() and not required):
        if required:
            raise RegistryError(f"a {what} is required", where=what, fix=f"give a {what} (it is kept in the history)")
        return None
    if not isinstance(value, str) or not value.strip():
        raise RegistryError(f"the {what} must be non-empty text", where=what, fix=f"give a {what}")
    if len(value) > limit:
        raise RegistryError(f"the {what} is {len(value):,} characters long (at most {limit:,})", where=what,
                            fix=f"shorten the {what}")
    return value


def _check_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise RegistryError("tags must be a mapping of names to text", where="tags", fix="pass {'key': 'value'}")
    checked: dict[str, str] = {}
    for key, value in tags.items():
        check_name(key, what="tag name", where="tags")
        if not isinstance(value, str) or len(value) > _MAX_TAG_VALUE:
            raise RegistryError(f"the value of tag {key!r} must be text of at most {_MAX_TAG_VALUE} characters",
                                where=f"tags[{key!r}]", fix="pass text")
        checked[key] = value
    return dict(sorted(checked.items()))


def _loads(text: str, default: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default


def _ranges(numbers: list[int]) -> str:
    """``1-3, 5, 7-9`` for a sorted list of version numbers."""
    parts: list[str] = []
    start = prev = None
    for n in numbers:
        if start is None:
            start = prev = n
        elif prev is not None and n == prev + 1:
            prev = n
        else:
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = n
    if start is not None:
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ", ".join(parts)


class Registry:
    """A model registry: a database (SQLite or PostgreSQL, migrated to the newest schema when opened) and a
    content-addressed artifact store. Open one with :func:`open_registry`; close it (or use ``with``)."""

    def __init__(self, db: Database, store: ArtifactStore) -> None:
        self.db = db
        self.store = store

    def __repr__(self) -> str:
        return f"Registry({self.db.where!r}, store={self.store!r})"

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return self.db.url

    @property
    def read_only(self) -> bool:
        return self.db.read_only

    def close(self) -> None:
        """Release the database connections."""
        self.db.dispose()

    # -- versions -----------------------------------------------------------------------------------------
    def register(self, name: str, model: str | os.PathLike[str], *, weights: str | os.PathLike[str] | None = None,
                 evidence: str | os.PathLike[str], message: str | None = None,
                 tags: Mapping[str, str] | None = None, creator: str | None = None) -> ModelVersion:
        """Register ``model`` (a file, or a factory ``package.module:callable`` with ``weights``) with its
        evidence bundle as the next version of ``name`` (1, 2, ...).

        The version records the model's sha256 (as Assay computes it), format and spec, the model's files and
        the whole bundle (stored by hash), the data fingerprints from ``evidence.json``, the git commit of the
        working directory, ``creator`` (default: the OS user), the time, ``message`` and ``tags``. The same model
        and evidence bytes again return the existing version (nothing new is written). Refused
        (RegistryError): evidence whose ``model.sha256`` is not this model's, a bundle whose files do not match
        its manifest, an invalid name; a bundle that cannot be read is a DataError."""
        name = check_name(name)
        message = _check_text(message, "message", _MAX_MESSAGE)
        checked_tags = _check_tags(tags)
        actor = _check_text(creator, "creator", 256) or _default_actor()
        folder = Path(evidence)
        ev = read_evidence(folder)
        model_info = model_files(model, weights)
        if ev.model.sha256 != model_info.sha256:
            recorded = ev.model.path + (f" with weights {ev.model.weights}" if ev.model.weights else "")
            raise RegistryError(
                f"the evidence is for another model: evidence.json records model sha256 {ev.model.sha256[:12]}... "
                f"({recorded}), the model given hashes to {model_info.sha256[:12]}...", where=str(folder),
                fix="register the model file the bundle was evaluated with, or evaluate this model first: "
                    "assay evaluate MODEL --data DATA --out BUNDLE")
        files = bundle_files(folder)
        self.db.check_writable()
        model_tree = put_tree(self.store, model_info.files)
        evidence_tree = put_tree(self.store, files)
        spec = {**model_info.spec, "main": model_info.main, "files": sorted(model_info.files)}
        fingerprints = list(data_fingerprints(ev))
        commit = _git_commit()
        with self.db.write() as conn:
            same = conn.execute(sa.select(versions).where(
                versions.c.name == name, versions.c.model_sha256 == model_info.sha256,
                versions.c.evidence_sha256 == evidence_tree)).first()
            if same is not None:
                self._ensure_stored(model_tree, model_info.files)
                self._ensure_stored(evidence_tree, files)
                return self._version_from_row(conn, same._mapping)
            # A gc running between the blob writes above and this transaction may have removed them: gc deletes
            # under this same lock, so checking here is enough.
            self._ensure_stored(model_tree, model_info.files)
            self._ensure_stored(evidence_tree, files)
            created = audit.now()
            if conn.execute(sa.select(models.c.name).where(models.c.name == name)).first() is None:
                conn.execute(models.insert().values(name=name, created_at=created))
            last = conn.execute(sa.select(sa.func.max(versions.c.version)).where(versions.c.name == name)).scalar()
            record: dict[str, Any] = {
                "name": name, "version": int(last or 0) + 1, "model_sha256": model_info.sha256,
                "model_format": model_info.format, "model_spec": spec, "model_tree_sha256": model_tree,
                "evidence_sha256": evidence_tree, "data_fingerprints": fingerprints, "git_commit": commit,
                "creator": actor, "created_at": created, "message": message, "tags": checked_tags}
            conn.execute(versions.insert().values(**self._version_columns(record)))
            audit.append(conn, "register", name, actor, record, created_at=created)
        return self._version_from_record(record, archived=None)

    def _ensure_stored(self, tree: str, files: Mapping[str, Path]) -> None:
        """Store the files again when a blob of the tree is gone (a gc ran since they were stored)."""
        entries = _tree_entries(self.store, tree).values()
        if not self.store.has(tree) or any(not self.store.has(e["sha256"]) for e in entries):
            put_tree(self.store, files)

    @staticmethod
    def _version_columns(record: Mapping[Any, Any]) -> dict[str, Any]:
        columns = dict(record)
        for key in ("model_spec", "data_fingerprints", "tags"):
            columns[key] = canonical_json(record[key]).decode("utf-8")
        return columns

    @staticmethod
    def _record_from_row(row: Mapping[Any, Any]) -> dict[str, Any]:
        """A versions row as the record its audit row holds (JSON columns parsed)."""
        record = {key: row[key] for key in _VERSION_FIELDS}
        record["model_spec"] = _loads(row["model_spec"], {})
        record["data_fingerprints"] = _loads(row["data_fingerprints"], [])
        record["tags"] = _loads(row["tags"], {})
        return record

    @staticmethod
    def _version_from_record(record: Mapping[Any, Any], archived: Mapping[Any, Any] | None) -> ModelVersion:
        return ModelVersion(
            name=record["name"], version=int(record["version"]), model_sha256=record["model_sha256"],
            model_format=record["model_format"], model_spec=dict(record["model_spec"]),
            model_tree_sha256=record["model_tree_sha256"], evidence_sha256=record["evidence_sha256"],
            data_fingerprints=tuple(record["data_fingerprints"]), git_commit=record["git_commit"],
            creator=record["creator"], created_at=record["created_at"], message=record["message"],
            tags=dict(record["tags"]), archived=archived is not None,
            archived_reason=None if archived is None else archived["reason"])

    def _version_from_row(self, conn: Connection, row: Mapping[Any, Any]) -> ModelVersion:
        archived = conn.execute(sa.select(archives).where(archives.c.name == row["name"],
                                                          archives.c.version == row["version"])).first()
        return self._version_from_record(self._record_from_row(row),
                                         None if archived is None else archived._mapping)

    def _versions(self, conn: Connection, name: str) -> list[ModelVersion]:
        rows = conn.execute(sa.select(versions).where(versions.c.name == name).order_by(versions.c.version)).all()
        retired = {int(r.version): r._mapping for r in
                   conn.execute(sa.select(archives).where(archives.c.name == name)).all()}
        return [self._version_from_record(self._record_from_row(r._mapping), retired.get(int(r.version)))
                for r in rows]

    def _check_model(self, conn: Connection, name: str) -> None:
        if conn.execute(sa.select(models.c.name).where(models.c.name == name)).first() is None:
            known = [r[0] for r in conn.execute(sa.select(models.c.name).order_by(models.c.name).limit(21))]
            listed = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "") if known else "none yet"
            raise RegistryError(f"no model named {name!r} in the registry (models: {listed})", where=name,
                                fix="check the name (`assay registry list` shows every model), or register it first")

    def _version_row(self, conn: Connection, name: str, number: int) -> Mapping[Any, Any]:
        if isinstance(number, bool) or not isinstance(number, int):
            raise RegistryError(f"a version number must be an integer, not {number!r}", where=f"{name}@{number}",
                                fix="give a version number such as 3")
        row = conn.execute(sa.select(versions).where(versions.c.name == name,
                                                     versions.c.version == number)).first()
        if row is None:
            self._check_model(conn, name)
            numbers = [int(r[0]) for r in conn.execute(sa.select(versions.c.version).where(versions.c.name == name)
                                                       .order_by(versions.c.version))]
            raise RegistryError(f"model {name!r} has no version {number} (it has version(s) {_ranges(numbers)})",
                                where=f"{name}@{number}", fix=f"pick one of them: {name}@{numbers[-1]} is the newest")
        return row._mapping

    def version(self, name: str, number: int) -> ModelVersion:
        """Version ``number`` of ``name`` (RegistryError listing what exists when unknown)."""
        name = check_name(name)
        with self.db.read() as conn:
            return self._version_from_row(conn, self._version_row(conn, name, number))

    def resolve(self, ref: str) -> ModelVersion:
        """``NAME@3`` (a version), ``NAME@production`` (an alias) or ``NAME`` (the newest non-archived version);
        RegistryError listing what exists when the name, version or alias is unknown."""
        if not isinstance(ref, str):
            raise RegistryError(f"{ref!r} is not a model reference", where="reference",
                                fix="write NAME, NAME@VERSION or NAME@ALIAS")
        name, _, selector = ref.partition("@")
        check_name(name, where=ref)
        with self.db.read() as conn:
            if selector == "" and "@" not in ref:
                self._check_model(conn, name)
                live = [v for v in self._versions(conn, name) if not v.archived]
                if not live:
                    raise RegistryError(f"every version of {name!r} is archived", where=ref,
                                        fix=f"name an archived version explicitly ({name}@VERSION)")
                return live[-1]
            if selector.isdigit():
                return self._version_from_row(conn, self._version_row(conn, name, int(selector)))
            check_alias(selector, where=ref)
            self._check_model(conn, name)
            held = conn.execute(sa.select(aliases.c.version).where(aliases.c.name == name,
                                                                   aliases.c.alias == selector)).scalar()
            if held is None:
                existing = self._aliases(conn, name)
                listed = ", ".join(f"{a} -> {v}" for a, v in existing.items()) or "none yet"
                raise RegistryError(f"model {name!r} has no alias {selector!r} (aliases: {listed})", where=ref,
                                    fix=f"use a version number ({name}@VERSION) or promote a version to {selector!r} "
                                        "first")
            return self._version_from_row(conn, self._version_row(conn, name, int(held)))

    def models(self) -> list[str]:
        """Every registered model name, sorted."""
        with self.db.read() as conn:
            return [str(r[0]) for r in conn.execute(sa.select(models.c.name).order_by(models.c.name))]

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name``, oldest first (archived ones included, flagged)."""
        name = check_name(name)
        with self.db.read() as conn:
            self._check_model(conn, name)
            return self._versions(conn, name)

    def archive(self, name: str, version: int, *, reason: str, actor: str | None = None) -> ModelVersion:
        """Retire a version, once, with a reason (kept in the history); an alias holder cannot be archived
        (move the alias first) and an archived version can receive no alias. Its files stay in the store, so the
        history stays verifiable."""
        name = check_name(name)
        why = _check_text(reason, "reason", _MAX_MESSAGE, required=True)
        who = _check_text(actor, "actor", 256) or _default_actor()
        with self.db.write() as conn:
            row = self._version_row(conn, name, version)
            done = conn.execute(sa.select(archives).where(archives.c.name == name,
                                                          archives.c.version == version)).first()
            if done is not None:
                raise RegistryError(f"{name}@{version} is already archived ({done.reason})", where=f"{name}@{version}",
                                    fix="nothing to do")
            holding = [a for a, v in self._aliases(conn, name).items() if v == version]
            if holding:
                raise RegistryError(f"{name}@{version} holds alias(es) {', '.join(holding)}", where=f"{name}@{version}",
                                    fix="move the alias to another version first (promote or rollback)")
            created = audit.now()
            result = conn.execute(archives.insert().values(name=name, version=version, reason=why, actor=who,
                                                           created_at=created))
            record = {"id": _inserted_id(result), "name": name, "version": version, "reason": why,
                      "actor": who, "created_at": created}
            audit.append(conn, "archive", name, who, record, created_at=created)
            return self._version_from_row(conn, row)

    # -- aliases ------------------------------------------------------------------------------------------
    @staticmethod
    def _aliases(conn: Connection, name: str) -> dict[str, int]:
        rows = conn.execute(sa.select(aliases.c.alias, aliases.c.version).where(aliases.c.name == name)
                            .order_by(aliases.c.alias))
        return {str(r.alias): int(r.version) for r in rows}

    def aliases(self, name: str) -> dict[str, int]:
        """alias -> version for ``name`` (sorted by alias)."""
        name = check_name(name)
        with self.db.read() as conn:
            self._check_model(conn, name)
            return self._aliases(conn, name)

    def alias_holder(self, name: str, alias: str) -> int | None:
        """The version ``alias`` points to, or None when the alias does not exist."""
        name, alias = check_name(name), check_alias(alias)
        with self.db.read() as conn:
            self._check_model(conn, name)
            held = conn.execute(sa.select(aliases.c.version).where(aliases.c.name == name,
                                                                   aliases.c.alias == alias)).scalar()
            return None if held is None else int(held)

    def move_alias(self, name: str, alias: str, version: int, *, expected: int | None, action: str,
                   reason: str | None = None, gate_verdict: str | None = None,
                   comparison_sha256: str | None = None, forced: bool = False,
                   actor: str | None = None) -> AliasMove:
        """Point ``alias`` at ``version`` if it is still held by ``expected`` (None: the alias must not exist
        yet), recording the move (who, when, from, to, action, reason, gate verdict, comparison hash, forced).

        Compare-and-swap: read the holder and update ``WHERE version = expected`` (or insert) in one serialised
        write transaction; when someone else moved the alias first, RegistryConflictError names the actual
        holder (``.holder``) and nothing is written. ``action``: promote, rollback or force; a forced move
        (``forced`` or action ``force``) needs a reason. An archived version cannot receive an alias.
        ``comparison_sha256``: a stored artifact (:meth:`put_artifact`) holding the gate's comparison."""
        name, alias = check_name(name), check_alias(alias)
        if action not in ACTIONS:
            raise RegistryError(f"unknown alias move action {action!r}", where="action",
                                fix=f"use one of: {', '.join(ACTIONS)}")
        if expected is not None and (isinstance(expected, bool) or not isinstance(expected, int)):
            raise RegistryError(f"expected must be a version number or None, not {expected!r}", where="expected",
                                fix="pass the version the alias holds now (alias_holder), or None for a new alias")
        forced = bool(forced) or action == "force"
        why = _check_text(reason, "reason", _MAX_MESSAGE, required=forced)
        verdict = _check_text(gate_verdict, "gate verdict", 32)
        who = _check_text(actor, "actor", 256) or _default_actor()
        if comparison_sha256 is not None:
            check_sha256(comparison_sha256)
        ref = f"{name}@{alias}"
        with self.db.write() as conn:
            self._version_row(conn, name, version)
            retired = conn.execute(sa.select(archives.c.reason).where(archives.c.name == name,
                                                                      archives.c.version == version)).first()
            if retired is not None:
                raise RegistryError(f"{name}@{version} is archived ({retired.reason}) and cannot receive an alias",
                                    where=f"{name}@{version}", fix="promote a version that is not archived")
            if comparison_sha256 is not None and not self.store.has(comparison_sha256):
                raise RegistryError(f"the comparison {comparison_sha256[:12]}... is not in the artifact store",
                                    where="comparison_sha256", fix="store it first with put_artifact, then retry")
            held = conn.execute(sa.select(aliases.c.version).where(aliases.c.name == name,
                                                                   aliases.c.alias == alias)).scalar()
            holder = None if held is None else int(held)
            if holder != expected:
                raise _conflict(ref, holder, expected)
            if holder == version:
                raise RegistryError(f"{ref} already points to version {version}", where=ref,
                                    fix="nothing to do (or move it to another version)")
            created = audit.now()
            move: dict[str, Any] = {"name": name, "alias": alias, "from_version": holder, "to_version": version,
                                    "action": action, "reason": why, "gate_verdict": verdict,
                                    "comparison_sha256": comparison_sha256, "forced": forced, "actor": who,
                                    "created_at": created}
            move["id"] = _inserted_id(conn.execute(alias_moves.insert().values(**move)))
            if expected is None:
                try:
                    with conn.begin_nested():
                        conn.execute(aliases.insert().values(name=name, alias=alias, version=version,
                                                             move_id=move["id"]))
                except sa.exc.IntegrityError:
                    now_held = conn.execute(sa.select(aliases.c.version).where(
                        aliases.c.name == name, aliases.c.alias == alias)).scalar()
                    raise _conflict(ref, None if now_held is None else int(now_held), expected) from None
            else:
                done = conn.execute(aliases.update().where(aliases.c.name == name, aliases.c.alias == alias,
                                                           aliases.c.version == expected)
                                    .values(version=version, move_id=move["id"]))
                if done.rowcount != 1:
                    now_held = conn.execute(sa.select(aliases.c.version).where(
                        aliases.c.name == name, aliases.c.alias == alias)).scalar()
                    raise _conflict(ref, None if now_held is None else int(now_held), expected)
            audit.append(conn, "move", name, who, move, created_at=created)
        return _move_from(move)

    def history(self, name: str, alias: str | None = None) -> list[AliasMove]:
        """Every move of ``name``'s aliases (or of one alias), oldest first."""
        name = check_name(name)
        query = sa.select(alias_moves).where(alias_moves.c.name == name)
        if alias is not None:
            query = query.where(alias_moves.c.alias == check_alias(alias))
        with self.db.read() as conn:
            self._check_model(conn, name)
            return [_move_from(r._mapping) for r in conn.execute(query.order_by(alias_moves.c.id))]

    # -- rollout decisions ----------------------------------------------------------------------------------
    def record_rollout(self, name: str, *, action: str, reason: str, challenger: str | None = None,
                       report_sha256: str | None = None, detail: Mapping[str, Any] | None = None,
                       actor: str | None = None) -> dict[str, Any]:
        """Record a rollout decision that moves no alias (a canary or shadow stopped by the monitor, the reason
        for an automatic rollback) as one row of the tamper-evident audit log, carrying the monitor report's
        sha256 (a stored artifact, :meth:`put_artifact`), so the decision can be traced to the evidence behind it.
        ``action``: one of :data:`ROLLOUT_ACTIONS`. Returns the recorded payload."""
        name = check_name(name)
        if action not in ROLLOUT_ACTIONS:
            raise RegistryError(f"unknown rollout action {action!r}", where="action",
                                fix=f"use one of: {', '.join(ROLLOUT_ACTIONS)}")
        why = _check_text(reason, "reason", _MAX_MESSAGE, required=True)
        who = _check_text(actor, "actor", 256) or _default_actor()
        if report_sha256 is not None:
            check_sha256(report_sha256)
        body: dict[str, Any] = {"action": action, "reason": why,
                                "challenger": _check_text(challenger, "challenger", 256),
                                "report_sha256": report_sha256, "detail": dict(detail or {})}
        with self.db.write() as conn:
            self._check_model(conn, name)
            if report_sha256 is not None and not self.store.has(report_sha256):
                raise RegistryError(f"the report {report_sha256[:12]}... is not in the artifact store",
                                    where="report_sha256", fix="store it first with put_artifact, then retry")
            row = audit.append(conn, "rollout", name, who, body)
        return {**body, "id": row["id"], "created_at": row["created_at"], "actor": who}

    def rollouts(self, name: str) -> list[dict[str, Any]]:
        """The rollout decisions recorded for ``name`` (:meth:`record_rollout`), oldest first."""
        name = check_name(name)
        with self.db.read() as conn:
            self._check_model(conn, name)
            rows = conn.execute(sa.select(audit_log).where(audit_log.c.event == "rollout", audit_log.c.name == name)
                                .order_by(audit_log.c.id))
            return [{**audit.payload(r._mapping), "id": int(r.id), "created_at": str(r.created_at),
                     "actor": str(r.actor)} for r in rows]

    # -- artifacts ------------------------------------------------------------------------------------------
    def put_artifact(self, path: str | os.PathLike[str]) -> str:
        """Store a file (e.g. a promotion's comparison.json) and return its sha256."""
        self.db.check_writable()
        return self.store.put_file(path)

    def artifact_path(self, sha256: str) -> Path:
        """The stored file with this sha256 (RegistryError when missing). Read it, never write it."""
        check_sha256(sha256)
        if not isinstance(self.store, LocalArtifactStore):
            raise RegistryError("this artifact store keeps no local files", where=repr(self.store),
                                fix="read the artifact with store.read_bytes(sha256)")
        path = self.store.path(sha256)
        if not path.is_file():
            raise RegistryError(f"the artifact {sha256[:12]}... is not in the artifact store", where=str(path),
                                fix="check the sha256, or run `assay registry verify`")
        return path

    def evidence_dir(self, version: ModelVersion) -> Path:
        """The version's evidence bundle as a read-only folder, every file checked against its hash."""
        return self._checkout(version.evidence_sha256)

    def model_path(self, version: ModelVersion) -> Path:
        """The version's model file (a factory's weights file; ONNX external data beside it) in a read-only
        folder, every file checked against its hash."""
        main = version.model_spec.get("main")
        folder = self._checkout(version.model_tree_sha256)
        if not isinstance(main, str) or not (folder / main).is_file():
            raise RegistryError(f"{version.ref} names no model file in its stored tree", where=version.ref,
                                fix="run `assay registry verify`")
        return folder / main

    def _checkout(self, tree: str) -> Path:
        """A read-only folder holding the stored tree, every file checked against its hash: ``checkouts/<tree>``
        in the artifact folder (reused while every file still matches, else rebuilt), or a new temp folder when
        the artifact folder cannot be written (a read-only store)."""
        check_sha256(tree)
        entries = read_tree(self.store, tree)
        if isinstance(self.store, LocalArtifactStore):
            base = self.store.checkout_dir
            final = base / tree
            try:
                if final.is_dir():
                    if _matches(final, entries):
                        return final
                    _remove_tree(final)
                base.mkdir(parents=True, exist_ok=True)
                temp = _build_checkout(self.store, tree, base / f".tmp-{os.getpid()}-{secrets.token_hex(6)}")
                try:
                    os.rename(temp, final)
                except OSError:  # another process built it first
                    _remove_tree(temp)
                    if not (final.is_dir() and _matches(final, entries)):
                        raise
                return final
            except OSError:
                pass  # not writable: a private temp folder below
        import tempfile

        try:
            return _build_checkout(self.store, tree, Path(tempfile.mkdtemp(prefix="assay-checkout-")) / tree[:12])
        except OSError as error:
            raise RegistryError(f"cannot write a checkout of {tree[:12]}... ({error.strerror or error})",
                                where=tempfile.gettempdir(), fix="check that the temp folder is writable") from None

    def _referenced(self, conn: Connection) -> dict[str, str]:
        """sha256 -> what refers to it, for every artifact a version or a move references."""
        refs: dict[str, str] = {}
        for row in conn.execute(sa.select(versions.c.name, versions.c.version, versions.c.model_tree_sha256,
                                          versions.c.evidence_sha256).order_by(versions.c.id)):
            for kind, tree in (("model", row.model_tree_sha256), ("evidence", row.evidence_sha256)):
                refs.setdefault(tree, f"the {kind} tree of {row.name}@{row.version}")
                for file, entry in _tree_entries(self.store, tree).items():
                    refs.setdefault(entry["sha256"], f"{file} in the {kind} of {row.name}@{row.version}")
        for row in conn.execute(sa.select(alias_moves.c.id, alias_moves.c.name, alias_moves.c.alias,
                                          alias_moves.c.comparison_sha256)
                                .where(alias_moves.c.comparison_sha256.is_not(None))):
            refs.setdefault(row.comparison_sha256, f"the comparison of move {row.id} ({row.name}@{row.alias})")
        return refs

    def gc(self, *, dry_run: bool = False) -> list[str]:
        """Delete stored artifacts that no version or move references (blobs left by an interrupted register,
        the comparison of a refused promotion, ...), checkouts of such trees, and dead writers' temp files.
        Only files the store wrote (``sha256/ab/cdef...``, its ``tmp/`` and ``checkouts/``) are touched. Returns
        the sha256 of every blob deleted (or that would be, with ``dry_run``); logged in the audit log."""
        if not isinstance(self.store, LocalArtifactStore):  # pragma: no cover - no other store yet
            raise RegistryError("gc supports the local artifact store only", where=repr(self.store),
                                fix="use a local artifact folder")
        store = self.store
        if dry_run:
            with self.db.read() as conn:
                keep = self._referenced(conn)
            return [sha for sha in store.blobs() if sha not in keep]
        with self.db.write() as conn:  # the write lock: no register commits while blobs are removed
            keep = self._referenced(conn)
            doomed = [sha for sha in store.blobs() if sha not in keep]
            for sha in doomed:
                store.delete(sha)
            for tree in store.checkouts():
                if tree not in keep:
                    store.remove_checkout(tree)
            store.gc_temp()
            if doomed:
                actor = _default_actor()
                audit.append(conn, "gc", None, actor, {"deleted": doomed})
        return doomed

    def verify(self) -> VerifyReport:
        """Re-hash the audit chain and every referenced artifact; cross-check the versions, moves, archives and
        aliases against the audit log. Each problem names the audit row (by id), the table row or the artifact
        (sha256 and what refers to it) that was changed, removed or added behind the registry's back."""
        problems: list[str] = []
        with self.db.read() as conn:
            rows = [r._mapping for r in conn.execute(sa.select(audit_log).order_by(audit_log.c.id))]
            chain_problems, head, audited = audit.verify_chain(rows)
            problems += chain_problems
            problems += self._cross_check(conn, rows)
            refs = self._referenced_for_verify(conn, problems)
        for sha, what in refs.items():
            wrong = self.store.check(sha)
            if wrong is not None:
                problems.append(f"artifact {sha} ({what}) is {wrong}")
        return VerifyReport(ok=not problems, problems=problems, artifacts_checked=len(refs),
                            audit_rows_checked=audited, head_hash=head)

    def _referenced_for_verify(self, conn: Connection, problems: list[str]) -> dict[str, str]:
        """Like :meth:`_referenced`, but an unreadable tree is a problem (its files cannot be listed)."""
        refs: dict[str, str] = {}
        for row in conn.execute(sa.select(versions.c.name, versions.c.version, versions.c.model_tree_sha256,
                                          versions.c.evidence_sha256).order_by(versions.c.id)):
            for kind, tree in (("model", row.model_tree_sha256), ("evidence", row.evidence_sha256)):
                refs.setdefault(tree, f"the {kind} tree of {row.name}@{row.version}")
                try:
                    entries = read_tree(self.store, tree)
                except RegistryError:
                    continue  # the tree itself is reported as missing or changed
                for file, entry in entries.items():
                    refs.setdefault(entry["sha256"], f"{file} in the {kind} of {row.name}@{row.version}")
        for row in conn.execute(sa.select(alias_moves.c.id, alias_moves.c.name, alias_moves.c.alias,
                                          alias_moves.c.comparison_sha256)
                                .where(alias_moves.c.comparison_sha256.is_not(None))):
            refs.setdefault(row.comparison_sha256, f"the comparison of move {row.id} ({row.name}@{row.alias})")
        return refs

    def _cross_check(self, conn: Connection, rows: Sequence[Mapping[Any, Any]]) -> list[str]:
        """Every version, move and archive row equals what its audit row recorded; every alias points where the
        last move of it did; nothing exists without its audit row."""
        problems: list[str] = []
        logged: dict[tuple[str, Any], tuple[int, dict[str, Any]]] = {}
        for row in rows:
            body = audit.payload(row)
            if row["event"] == "register":
                logged[("version", (body.get("name"), body.get("version")))] = (int(row["id"]), body)
            elif row["event"] == "move":
                logged[("move", body.get("id"))] = (int(row["id"]), body)
            elif row["event"] == "archive":
                logged[("archive", (body.get("name"), body.get("version")))] = (int(row["id"]), body)
        seen: set[tuple[str, Any]] = set()
        for r in conn.execute(sa.select(versions).order_by(versions.c.id)):
            record = self._record_from_row(r._mapping)
            key = ("version", (record["name"], record["version"]))
            problems += _compare(f"version {record['name']}@{record['version']}", record, logged.get(key),
                                 _VERSION_FIELDS, defaults={"tags": {}})
            seen.add(key)
        moves: dict[int, dict[str, Any]] = {}
        for r in conn.execute(sa.select(alias_moves).order_by(alias_moves.c.id)):
            move = {k: r._mapping[k] for k in _MOVE_FIELDS}
            move["forced"] = bool(move["forced"])
            moves[int(move["id"])] = move
            key = ("move", move["id"])
            problems += _compare(f"alias move {move['id']} ({move['name']}@{move['alias']})", move, logged.get(key),
                                 _MOVE_FIELDS)
            seen.add(key)
        for r in conn.execute(sa.select(archives).order_by(archives.c.id)):
            record = {k: r._mapping[k] for k in _ARCHIVE_FIELDS}
            key = ("archive", (record["name"], record["version"]))
            problems += _compare(f"archive of {record['name']}@{record['version']}", record, logged.get(key),
                                 _ARCHIVE_FIELDS)
            seen.add(key)
        for key, (audit_id, _body) in logged.items():
            if key not in seen:
                kind, ident = key
                shown = f"{ident[0]}@{ident[1]}" if isinstance(ident, tuple) else str(ident)
                problems.append(f"{kind} {shown} is recorded in audit row {audit_id} but missing from its table "
                                "(deleted)")
        last_move: dict[tuple[str, str], dict[str, Any]] = {}
        for move in moves.values():
            last_move[(move["name"], move["alias"])] = move
        current = {(str(r.name), str(r.alias)): (int(r.version), int(r.move_id))
                   for r in conn.execute(sa.select(aliases))}
        for (name, alias), move in sorted(last_move.items()):
            held = current.get((name, alias))
            if held is None:
                problems.append(f"alias {name}@{alias} is missing: its last move ({move['id']}) set it to version "
                                f"{move['to_version']}")
            elif held != (move["to_version"], move["id"]):
                problems.append(f"alias {name}@{alias} points to version {held[0]} (move {held[1]}), but its last move "
                                f"({move['id']}) set it to version {move['to_version']}: changed behind the registry's "
                                "back")
        for name, alias in sorted(set(current) - set(last_move)):
            problems.append(f"alias {name}@{alias} exists without any recorded move (added behind the registry's back)")
        return problems


def _compare(what: str, actual: Mapping[Any, Any], logged: tuple[int, dict[str, Any]] | None,
             fields: tuple[str, ...], defaults: Mapping[Any, Any] | None = None) -> list[str]:
    if logged is None:
        return [f"{what} has no audit row (added behind the registry's back)"]
    audit_id, body = logged
    changed = [f for f in fields if body.get(f, (defaults or {}).get(f)) != actual[f]]
    if changed:
        return [f"{what} differs from audit row {audit_id} in {', '.join(changed)} (changed behind the registry's "
                "back)"]
    return []


def _conflict(ref: str, holder: int | None, expected: int | None) -> RegistryConflictError:
    now = "does not exist" if holder is None else f"is held by version {holder}"
    wanted = "not to exist yet" if expected is None else f"to be held by version {expected}"
    return RegistryConflictError(f"conflict: {ref} {now}, but this move expected it {wanted} (another move won)",
                                 where=ref, fix="re-read the alias (assay registry show) and decide again",
                                 holder=holder)


def _inserted_id(result: Any) -> int:
    key = result.inserted_primary_key
    assert key is not None and key[0] is not None
    return int(key[0])


def _move_from(row: Mapping[Any, Any]) -> AliasMove:
    return AliasMove(id=int(row["id"]), name=row["name"], alias=row["alias"],
                     from_version=None if row["from_version"] is None else int(row["from_version"]),
                     to_version=int(row["to_version"]), action=row["action"], reason=row["reason"],
                     gate_verdict=row["gate_verdict"], comparison_sha256=row["comparison_sha256"],
                     forced=bool(row["forced"]), actor=row["actor"], created_at=row["created_at"])


def _tree_entries(store: ArtifactStore, tree: str) -> dict[str, dict[str, Any]]:
    """A tree's entries, or {} when the tree blob is missing or damaged (verify reports that)."""
    try:
        return read_tree(store, tree)
    except RegistryError:
        return {}


def _matches(folder: Path, entries: Mapping[str, Mapping[Any, Any]]) -> bool:
    """True when ``folder`` holds exactly the tree's files, each with its hash."""
    found = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()}
    if found != set(entries):
        return False
    try:
        return all(not (folder / name).is_symlink() and sha256_of_file(folder / name) == entry["sha256"]
                   for name, entry in entries.items())
    except OSError:
        return False


def _build_checkout(store: ArtifactStore, tree: str, dest: Path) -> Path:
    """Materialize the tree into the new folder ``dest`` and make its folders read-only (removed on failure)."""
    try:
        materialize_tree(store, tree, dest)
        for folder, _dirs, _files in os.walk(dest, topdown=False):
            os.chmod(folder, stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    except BaseException:
        _remove_tree(dest)
        raise
    return dest


def _remove_tree(folder: Path) -> None:
    for path, dirs, _files in os.walk(folder):
        with contextlib.suppress(OSError):
            os.chmod(path, stat.S_IRWXU)
        for d in dirs:
            with contextlib.suppress(OSError):
                os.chmod(Path(path) / d, stat.S_IRWXU)
    shutil.rmtree(folder, ignore_errors=True)


def open_registry(url: str | None = None, *, root: str | os.PathLike[str] | None = None,
                  artifacts: str | os.PathLike[str] | None = None) -> Registry:
    """Open a registry, creating it and migrating its schema to the newest revision as needed.

    ``url``: a SQLAlchemy URL (``sqlite:///path/registry.db``, ``postgresql+psycopg://user:pw@host/db``) or a
    SQLite file path; default ``ASSAY_REGISTRY``, else ``sqlite:///<root>/.assay/registry.db`` (``root``: the
    working directory). ``artifacts``: the artifact folder; default ``ASSAY_ARTIFACTS``, else ``artifacts/``
    beside a SQLite database file, else ``<root>/.assay/artifacts``. A file that is not a registry, a
    corrupted database, an unreachable server (within a few seconds) or a newer schema is a RegistryError."""
    resolved, sqlite_file = resolve_url(url, root)
    default = url is None and not os.environ.get("ASSAY_REGISTRY")
    db = open_database(resolved, sqlite_file, create_folder=default)
    if artifacts is not None:
        folder = Path(artifacts)
    elif os.environ.get("ASSAY_ARTIFACTS"):
        folder = Path(os.environ["ASSAY_ARTIFACTS"])
    elif sqlite_file is not None:
        folder = sqlite_file.parent / "artifacts"
    else:
        folder = Path(root if root is not None else os.getcwd()) / ".assay" / "artifacts"
    return Registry(db, LocalArtifactStore(folder.expanduser().absolute()))
