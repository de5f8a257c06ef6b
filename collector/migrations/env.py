"""Alembic environment: the connection is handed in by collector.db.upgrade."""
from __future__ import annotations

from alembic import context

from collector.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only collector.db.upgrade runs migrations
    raise RuntimeError("run migrations through `revtrace db upgrade`")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
