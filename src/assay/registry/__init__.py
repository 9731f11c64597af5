"""The model registry: immutable versions, aliases moved by compare-and-swap, a tamper-evident audit log.

``open_registry()`` opens (creating and migrating to the newest schema) a registry database -- SQLite at
``.assay/registry.db`` by default, PostgreSQL (``postgresql+psycopg://...``) for teams -- and its
content-addressed artifact store (``.assay/artifacts/sha256/ab/cdef...``), where every registered model file
and evidence bundle is kept by hash. See :class:`Registry` for what it does.
"""

from assay.registry._types import ACTIONS, NAME_PATTERN, AliasMove, ModelVersion, VerifyReport
from assay.registry.artifacts import ArtifactStore, LocalArtifactStore
from assay.registry.store import Registry, open_registry

__all__ = [
    "ACTIONS",
    "NAME_PATTERN",
    "AliasMove",
    "ArtifactStore",
    "LocalArtifactStore",
    "ModelVersion",
    "Registry",
    "VerifyReport",
    "open_registry",
]
