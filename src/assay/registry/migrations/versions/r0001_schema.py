"""First registry schema: models, immutable versions, aliases, the append-only move history and audit log.

Revision ID: 0001_schema
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from assay.registry.migrations._triggers import drop_append_only, make_append_only

revision = "0001_schema"
down_revision: str | None = None
branch_labels = None
depends_on = None

_NAME = sa.String(128)
_SHA = sa.String(64)
_TIME = sa.String(40)  # ISO 8601 UTC text: the same bytes on every back-end, so audit hashes never depend on it
_WHO = sa.String(256)


def upgrade() -> None:
    op.create_table(
        "registry_info",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "models",
        sa.Column("name", _NAME, primary_key=True),
        sa.Column("created_at", _TIME, nullable=False),
    )
    op.create_table(
        "versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", _NAME, sa.ForeignKey("models.name"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("model_sha256", _SHA, nullable=False),
        sa.Column("model_format", sa.String(64), nullable=False),
        sa.Column("model_spec", sa.Text, nullable=False),
        sa.Column("model_tree_sha256", _SHA, nullable=False),
        sa.Column("evidence_sha256", _SHA, nullable=False),
        sa.Column("data_fingerprints", sa.Text, nullable=False),
        sa.Column("git_commit", sa.String(64), nullable=True),
        sa.Column("creator", _WHO, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("message", sa.Text, nullable=True),
        sa.UniqueConstraint("name", "version", name="uq_versions_name_version"),
        sa.UniqueConstraint("name", "model_sha256", "evidence_sha256", name="uq_versions_same_bytes"),
        sa.CheckConstraint("version >= 1", name="ck_versions_positive"),
    )
    op.create_table(
        "alias_moves",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", _NAME, nullable=False),
        sa.Column("alias", _NAME, nullable=False),
        sa.Column("from_version", sa.Integer, nullable=True),
        sa.Column("to_version", sa.Integer, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("gate_verdict", sa.String(32), nullable=True),
        sa.Column("comparison_sha256", _SHA, nullable=True),
        sa.Column("forced", sa.Boolean, nullable=False),
        sa.Column("actor", _WHO, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(["name", "to_version"], ["versions.name", "versions.version"],
                                name="fk_alias_moves_version"),
    )
    op.create_index("ix_alias_moves_name_alias", "alias_moves", ["name", "alias", "id"])
    op.create_table(
        "aliases",
        sa.Column("name", _NAME, primary_key=True),
        sa.Column("alias", _NAME, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("move_id", sa.Integer, sa.ForeignKey("alias_moves.id"), nullable=False),
        sa.ForeignKeyConstraint(["name", "version"], ["versions.name", "versions.version"],
                                name="fk_aliases_version"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("name", _NAME, nullable=True),
        sa.Column("actor", _WHO, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("prev_hash", _SHA, nullable=False),
        sa.Column("row_hash", _SHA, nullable=False),
        sa.UniqueConstraint("prev_hash", name="uq_audit_log_prev_hash"),  # a fork of the chain cannot commit
    )
    for table in ("models", "versions", "alias_moves", "audit_log"):
        make_append_only(table)
    op.bulk_insert(sa.table("registry_info", sa.column("key", sa.String), sa.column("value", sa.Text)),
                   [{"key": "kind", "value": "assay-registry"}])


def downgrade() -> None:
    for table in ("models", "versions", "alias_moves", "audit_log"):
        drop_append_only(table)
    for table in ("audit_log", "aliases", "alias_moves", "versions", "models", "registry_info"):
        op.drop_table(table)
