"""``Registry``: versions, aliases and the audit log over one database and one artifact store.

Rules it keeps:

* **Versions are immutable.** ``register`` stores the model's files and the evidence bundle in the artifact
  store first (complete blobs only), then writes the version row and its audit row in one transaction; a
  version is never committed without its artifacts, and registering the same bytes again returns the
  version already there (so a retry after a crash is safe). Database triggers refuse UPDATE/DELETE of
  versions.
* **Aliases move by compare-and-swap** on the holder the caller expects: of two concurrent moves exactly one
  wins, the other gets :class:`~assay.errors.RegistryConflictError` naming the actual holder. Every move is
  kept (append-only ``alias_moves``).
* **The audit log is tamper-evident**: every register, move, archive and gc appends a row carrying
  sha256(previous row's hash + canonical JSON of the row); triggers refuse UPDATE/DELETE; :meth:`verify`
  re-hashes the chain, cross-checks the version, move and alias tables against it, and re-hashes every
  artifact.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from assay.registry._types import AliasMove, ModelVersion, VerifyReport
from assay.registry.artifacts import ArtifactStore, LocalArtifactStore

__all__ = ["Registry", "open_registry"]


class Registry:
    """A model registry: a database (SQLite or PostgreSQL, schema migrated to the newest on open) and a
    content-addressed artifact store. Open one with :func:`open_registry`."""

    def __init__(self, url: str, store: ArtifactStore) -> None:
        self.url = url
        self.store = store
        raise NotImplementedError

    # -- versions -----------------------------------------------------------------------------------------
    def register(self, name: str, model: str | os.PathLike[str], *, weights: str | os.PathLike[str] | None = None,
                 evidence: str | os.PathLike[str], message: str | None = None,
                 tags: Mapping[str, str] | None = None, creator: str | None = None) -> ModelVersion:
        """Register ``model`` (a file, or a factory ``package.module:callable`` with ``weights``) with its
        evidence bundle as the next version of ``name``; the same bytes again return the existing version.
        Evidence whose ``model.sha256`` is not this model's is refused (RegistryError)."""
        raise NotImplementedError

    def version(self, name: str, number: int) -> ModelVersion:
        """Version ``number`` of ``name`` (RegistryError listing what exists when unknown)."""
        raise NotImplementedError

    def resolve(self, ref: str) -> ModelVersion:
        """``NAME@3`` (a version), ``NAME@production`` (an alias) or ``NAME`` (the latest non-archived version)."""
        raise NotImplementedError

    def models(self) -> list[str]:
        """Every registered model name, sorted."""
        raise NotImplementedError

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name``, oldest first (archived ones included, flagged)."""
        raise NotImplementedError

    def archive(self, name: str, version: int, *, reason: str, actor: str | None = None) -> ModelVersion:
        """Retire a version (once; no alias may hold it). Its files stay until no move references them."""
        raise NotImplementedError

    # -- aliases ------------------------------------------------------------------------------------------
    def aliases(self, name: str) -> dict[str, int]:
        """alias -> version for ``name``."""
        raise NotImplementedError

    def alias_holder(self, name: str, alias: str) -> int | None:
        """The version ``alias`` points to, or None when the alias does not exist."""
        raise NotImplementedError

    def move_alias(self, name: str, alias: str, version: int, *, expected: int | None, action: str,
                   reason: str | None = None, gate_verdict: str | None = None,
                   comparison_sha256: str | None = None, forced: bool = False,
                   actor: str | None = None) -> AliasMove:
        """Point ``alias`` at ``version`` if it is still held by ``expected`` (None: the alias must not exist
        yet); otherwise RegistryConflictError naming the actual holder. ``action``: promote, rollback or force."""
        raise NotImplementedError

    def history(self, name: str, alias: str | None = None) -> list[AliasMove]:
        """Every move of ``name``'s aliases (or of one alias), oldest first."""
        raise NotImplementedError

    # -- artifacts ------------------------------------------------------------------------------------------
    def put_artifact(self, path: str | os.PathLike[str]) -> str:
        """Store a file (e.g. a promotion's comparison.json) and return its sha256."""
        raise NotImplementedError

    def artifact_path(self, sha256: str) -> Path:
        """The stored file with this sha256 (RegistryError when missing)."""
        raise NotImplementedError

    def evidence_dir(self, version: ModelVersion) -> Path:
        """The version's evidence bundle as a read-only folder, checked against its hash."""
        raise NotImplementedError

    def model_path(self, version: ModelVersion) -> Path:
        """The version's model file (a factory's weights file) in a read-only folder, checked against its hash."""
        raise NotImplementedError

    def gc(self, *, dry_run: bool = False) -> list[str]:
        """Delete stored artifacts no version or move references (only blobs the store wrote); returns them."""
        raise NotImplementedError

    def verify(self) -> VerifyReport:
        """Re-hash every referenced artifact and the audit chain; name every artifact changed or missing and
        every audit row changed (by id)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the database connections."""
        raise NotImplementedError


def open_registry(url: str | None = None, *, root: str | os.PathLike[str] | None = None,
                  artifacts: str | os.PathLike[str] | None = None) -> Registry:
    """Open (create, migrate) a registry. ``url``: a SQLAlchemy URL (``sqlite:///path``,
    ``postgresql+psycopg://user@host/db``) or a SQLite file path; default ``ASSAY_REGISTRY``, else
    ``sqlite:///<root>/.assay/registry.db`` (``root``: the working directory). ``artifacts``: the artifact
    folder; default ``ASSAY_ARTIFACTS``, else ``artifacts/`` beside a SQLite file, else ``<root>/.assay/artifacts``."""
    raise NotImplementedError(str((url, root, artifacts, LocalArtifactStore)))
