"""Alembic revision scripts of the registry schema, oldest first (``r0001_schema``, ``r0002_tags_archive``)."""
