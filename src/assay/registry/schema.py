"""The registry's tables at the newest revision, as SQLAlchemy Core objects for queries.

The DDL lives in the Alembic revisions (``migrations/versions/``); these definitions only name the columns
the code reads and writes, and must match the head revision (a test compares them with a migrated database).
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["METADATA", "alias_moves", "aliases", "archives", "audit_log", "models", "registry_info", "versions"]

METADATA = sa.MetaData()
_NAME = sa.String(128)
_SHA = sa.String(64)
_TIME = sa.String(40)
_WHO = sa.String(256)

registry_info = sa.Table(
    "registry_info", METADATA,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
models = sa.Table(
    "models", METADATA,
    sa.Column("name", _NAME, primary_key=True),
    sa.Column("created_at", _TIME, nullable=False),
)
versions = sa.Table(
    "versions", METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", _NAME, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("model_sha256", _SHA, nullable=False),
    sa.Column("model_format", sa.String(64), nullable=False),
    sa.Column("model_spec", sa.Text, nullable=False),
    sa.Column("model_tree_sha256", _SHA, nullable=False),
    sa.Column("evidence_sha256", _SHA, nullable=False),
    sa.Column("data_fingerprints", sa.Text, nullable=False),
    sa.Column("git_commit", sa.String(64)),
    sa.Column("creator", _WHO, nullable=False),
    sa.Column("created_at", _TIME, nullable=False),
    sa.Column("message", sa.Text),
    sa.Column("tags", sa.Text, nullable=False),
)
alias_moves = sa.Table(
    "alias_moves", METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", _NAME, nullable=False),
    sa.Column("alias", _NAME, nullable=False),
    sa.Column("from_version", sa.Integer),
    sa.Column("to_version", sa.Integer, nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("gate_verdict", sa.String(32)),
    sa.Column("comparison_sha256", _SHA),
    sa.Column("forced", sa.Boolean, nullable=False),
    sa.Column("actor", _WHO, nullable=False),
    sa.Column("created_at", _TIME, nullable=False),
)
aliases = sa.Table(
    "aliases", METADATA,
    sa.Column("name", _NAME, primary_key=True),
    sa.Column("alias", _NAME, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("move_id", sa.Integer, nullable=False),
)
archives = sa.Table(
    "archives", METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", _NAME, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("actor", _WHO, nullable=False),
    sa.Column("created_at", _TIME, nullable=False),
)
audit_log = sa.Table(
    "audit_log", METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", _TIME, nullable=False),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("name", _NAME),
    sa.Column("actor", _WHO, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("prev_hash", _SHA, nullable=False),
    sa.Column("row_hash", _SHA, nullable=False),
)
