"""Alembic revision scripts of the prediction log's SQL tables, oldest first (``r0001_schema``)."""
