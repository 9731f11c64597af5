"""Version tags and archiving: ``versions.tags`` (JSON object, '{}' for versions registered before) and the
append-only ``archives`` table (a version is archived once, with a reason; its row never changes).

Revision ID: 0002_tags_archive
Revises: 0001_schema
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from assay.registry.migrations._triggers import drop_append_only, make_append_only

revision = "0002_tags_archive"
down_revision: str | None = "0001_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("versions", sa.Column("tags", sa.Text, nullable=False, server_default="{}"))
    op.create_table(
        "archives",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.UniqueConstraint("name", "version", name="uq_archives_version"),
        sa.ForeignKeyConstraint(["name", "version"], ["versions.name", "versions.version"],
                                name="fk_archives_version"),
    )
    make_append_only("archives")


def downgrade() -> None:
    drop_append_only("archives")
    op.drop_table("archives")
    op.drop_column("versions", "tags")
