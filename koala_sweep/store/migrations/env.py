"""Alembic environment for koala-sweep's own tables (run through koala_sweep.store.schema)."""

from alembic import context

from koala_sweep.store.schema import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table=VERSION_TABLE, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
