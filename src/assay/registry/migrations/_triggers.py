"""Append-only and immutable tables, enforced by the database itself (used by the revision scripts).

SQLite: ``BEFORE UPDATE/DELETE`` triggers that ``RAISE(ABORT, ...)``. PostgreSQL: one plpgsql function that
raises, called by ``BEFORE UPDATE OR DELETE`` row triggers and a ``BEFORE TRUNCATE`` statement trigger.
Someone with direct write access can still drop a trigger; what they change afterwards is what the audit
chain and ``Registry.verify`` catch.
"""

from __future__ import annotations

from alembic import op

__all__ = ["REFUSE_MESSAGE", "drop_append_only", "make_append_only"]

REFUSE_MESSAGE = "assay registry: rows of this table are never changed or deleted"
_FUNCTION = "assay_refuse_change"


def make_append_only(table: str, *, deletes: bool = True) -> None:
    """Refuse UPDATE (and DELETE unless ``deletes`` is False) of ``table``'s rows."""
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(f"""CREATE OR REPLACE FUNCTION {_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{REFUSE_MESSAGE} (% on %)', TG_OP, TG_TABLE_NAME USING ERRCODE = 'integrity_constraint_violation';
END $$""")
        events = "UPDATE OR DELETE" if deletes else "UPDATE"
        op.execute(f"CREATE TRIGGER {table}_append_only BEFORE {events} ON {table} "
                   f"FOR EACH ROW EXECUTE FUNCTION {_FUNCTION}()")
        op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION {_FUNCTION}()")
    else:
        for event in ("UPDATE", "DELETE") if deletes else ("UPDATE",):
            op.execute(f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} "
                       f"BEGIN SELECT RAISE(ABORT, '{REFUSE_MESSAGE} ({event} on {table})'); END")


def drop_append_only(table: str) -> None:
    """Undo :func:`make_append_only` (for downgrades)."""
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
    else:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
