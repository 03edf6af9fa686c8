"""Storage: SQLAlchemy 2 models, repository functions, sessions and Alembic migrations."""

from scripts_engine.db.models import Base
from scripts_engine.db.session import Database, open_database, write_transaction

__all__ = ["Base", "Database", "open_database", "write_transaction"]
