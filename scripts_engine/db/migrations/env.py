"""Alembic environment: migrate the connection handed over by migrate.py, or the URL of the
settings when alembic runs by hand."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from scripts_engine.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=True)  # fmt: skip
        with context.begin_transaction():
            context.run_migrations()
        return
    from scripts_engine.config import get_settings
    from scripts_engine.db.session import database_url

    engine = create_engine(config.get_main_option("sqlalchemy.url") or database_url(get_settings()))
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
