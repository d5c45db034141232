"""Alembic runs migrations on the connection genq hands it (see ``jobs.db.migrate``)."""

from alembic import context
from sqlmodel import SQLModel

import jobs.models  # noqa: F401  (registers the tables on SQLModel.metadata)

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through jobs.db.migrate, which passes a connection")

context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
