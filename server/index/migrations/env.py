"""Alembic environment: runs on the connection handed in by server.index.db.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from server.index import (
    account_models,  # noqa: F401  (accounts tables, migration 0003)
    pacs_models,  # noqa: F401  (PACS tables, migration 0002)
    perfusion_models,  # noqa: F401  (perfusion, migration 0004)
)
from server.index.models import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
        with engine.begin() as conn:
            context.configure(
                connection=conn, target_metadata=target_metadata, render_as_batch=True
            )
            with context.begin_transaction():
                context.run_migrations()
        return
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run()
