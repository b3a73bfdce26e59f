"""Alembic environment: always run programmatically on a connection that
``circlet.store.records.migrate`` opened (and already holds a lock on)."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
# render_as_batch: SQLite can only ALTER by copying tables; later revisions rely on it.
context.configure(connection=connection, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
