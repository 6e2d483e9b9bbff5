"""Alembic environment: runs on the connection that ``Database.migrate`` hands over.

The revisions are hand-written, so applying them needs no table metadata; whoever
autogenerates a new revision passes every package's metadata in
``config.attributes["target_metadata"]`` (tests/unit/test_migrations.py lists them). The
store sits below the packages that own those tables, so it does not import them here.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=context.config.attributes.get("target_metadata"),
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
