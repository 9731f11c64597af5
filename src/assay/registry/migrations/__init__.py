"""The registry's Alembic migrations (embedded: :func:`assay.registry.db.migrate` configures Alembic in code,
no ``alembic.ini``). One file per revision under ``versions/``; a revision is frozen once released: it spells
out its own tables and triggers instead of importing the current schema."""
