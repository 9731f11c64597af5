"""The prediction log's first SQL schema: ``assay_predictions`` and ``assay_feedback``, exactly as the log created
them with ``create_all`` before it had migrations (a database made that way is stamped with this revision after
its columns are checked). Frozen: it spells out its own tables instead of importing the current ones.

Revision ID: log_0001_schema
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "log_0001_schema"
down_revision: str | None = None
branch_labels = None
depends_on = None


def _id() -> sa.Column:
    # BIGINT on PostgreSQL; INTEGER on SQLite, where only an INTEGER PRIMARY KEY is the autoincrementing rowid
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "assay_predictions",
        _id(),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("row", sa.BigInteger(), nullable=False),
        sa.Column("time", sa.Float(precision=53), nullable=False),
        sa.Column("version", sa.String(256), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("input_sha256", sa.String(64), nullable=False),
        sa.Column("inputs", sa.LargeBinary(), nullable=True),
        sa.Column("inputs_dtype", sa.String(32), nullable=True),
        sa.Column("inputs_shape", sa.String(256), nullable=True),
        sa.Column("logits", sa.LargeBinary(), nullable=False),
        sa.Column("top1", sa.BigInteger(), nullable=False),
        sa.Column("confidence", sa.Float(precision=53), nullable=False),
        sa.Column("features", sa.LargeBinary(), nullable=True),
    )
    op.create_index("ix_assay_predictions_request_id", "assay_predictions", ["request_id"])
    op.create_index("ix_assay_predictions_time", "assay_predictions", ["time"])
    op.create_table(
        "assay_feedback",
        _id(),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("row", sa.BigInteger(), nullable=False),
        sa.Column("label", sa.BigInteger(), nullable=False),
        sa.Column("time", sa.Float(precision=53), nullable=False),
    )
    op.create_index("ix_assay_feedback_request_id", "assay_feedback", ["request_id"])


def downgrade() -> None:
    op.drop_table("assay_feedback")
    op.drop_table("assay_predictions")
