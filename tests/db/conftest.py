"""The database fixtures (SQLite always; PostgreSQL when configured) for storage tests."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts_engine import versions as vs
from scripts_engine.config import ROOT, Settings
from scripts_engine.db.migrate import upgrade
from scripts_engine.db.session import Database, open_database
from scripts_engine.grid import Grid
from tests.api.conftest import db_url

__all__ = ["db_url"]


@pytest.fixture
def db(db_url: str, tmp_path: Path) -> Iterator[Database]:
    """A fresh, migrated database of each kind."""
    database = open_database(Settings(state_dir=tmp_path), url=db_url)
    upgrade(database)
    yield database
    database.dispose()


@pytest.fixture
def store(db: Database, grid: Grid) -> vs.VersionStore:
    """The template-version store over ``db`` (not seeded)."""
    return vs.VersionStore(db, ROOT / "personas", grid)
