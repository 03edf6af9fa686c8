"""The database fixture (SQLite always; PostgreSQL when configured) for storage tests."""

from tests.api.conftest import db_url

__all__ = ["db_url"]
