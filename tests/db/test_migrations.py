"""Migrations: applied on an empty database, idempotent, and matching the models."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from scripts_engine.config import Settings
from scripts_engine.db.migrate import current_tables, upgrade
from scripts_engine.db.models import Base
from scripts_engine.db.session import open_database


def test_upgrade_twice_and_models_match(db_url: str, tmp_path: Path) -> None:
    db = open_database(Settings(state_dir=tmp_path), url=db_url)
    try:
        upgrade(db)
        upgrade(db)
        assert "calls" in current_tables(db) and "alembic_version" in current_tables(db)
        with db.read_engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
    finally:
        db.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    db = open_database(Settings(state_dir=tmp_path))
    try:
        with db.write_engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 15000
    finally:
        db.dispose()
