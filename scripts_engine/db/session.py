"""Database engines and sessions: SQLite (WAL, busy timeout) by default, PostgreSQL by URL.

SQLite allows one writer at a time. A transaction that reads and then writes (the claim: check
the frequency cap, then insert the attempt) must take the write lock when it *begins*, or a
concurrent writer makes it fail with ``SQLITE_BUSY`` instead of waiting. So :class:`Database`
has two session factories: ``write`` begins ``IMMEDIATE`` transactions (writers queue on the
busy timeout), ``read`` begins deferred ones (readers never wait for writers under WAL). On
PostgreSQL both are the same engine; row locks (``FOR UPDATE``) order concurrent writers.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from scripts_engine.config import Settings
from scripts_engine.db.errors import Busy

T = TypeVar("T")


def database_url(settings: Settings) -> str:
    """The settings' URL, or the SQLite file in the state folder."""
    if settings.database_url:
        url = settings.database_url
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return url
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(settings.state_dir) / 'engine.db'}"


def _sqlite_engine(url: str, *, immediate: bool, busy_ms: int, pool_size: int) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": busy_ms / 1000},
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=busy_ms / 1000,
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=FULL")  # an audit trail keeps its last commit
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@dataclass
class Database:
    """The engines and session factories of one database."""

    url: str
    write_engine: Engine
    read_engine: Engine
    write: sessionmaker[Session]
    read: sessionmaker[Session]
    #: SQLite: writers of this process queue here, not in SQLite's busy handler (which sleeps
    #: in steps of up to 100 ms); other processes still wait on the busy timeout
    write_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def is_sqlite(self) -> bool:
        return self.write_engine.dialect.name == "sqlite"

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self.read_engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()


def open_database(settings: Settings, *, url: str | None = None) -> Database:
    """Engines and sessions for the settings' database (nothing is created or migrated)."""
    url = url or database_url(settings)
    busy, pool = settings.db_busy_timeout_ms, settings.db_pool_size
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        write = _sqlite_engine(url, immediate=True, busy_ms=busy, pool_size=pool)
        read = _sqlite_engine(url, immediate=False, busy_ms=busy, pool_size=pool)
    else:
        write = read = create_engine(
            url, pool_size=pool, max_overflow=pool, pool_pre_ping=True, pool_timeout=busy / 1000
        )
    return Database(
        url=url,
        write_engine=write,
        read_engine=read,
        write=sessionmaker(write, expire_on_commit=False),
        read=sessionmaker(read, expire_on_commit=False),
    )


def _retryable(exc: OperationalError) -> bool:
    code = getattr(exc.orig, "sqlstate", None)
    text_ = str(exc.orig).lower()
    return code in ("40001", "40P01") or "locked" in text_ or "deadlock" in text_


def write_transaction(db: Database, fn: Callable[[Session], T], *, retries: int = 4) -> T:
    """Run ``fn(session)`` in one write transaction, committed if it returns.

    A lock timeout (SQLite) or a deadlock or serialisation failure (PostgreSQL) rolls the
    whole transaction back and runs it again, with backoff; after ``retries`` the caller gets
    :class:`~scripts_engine.db.errors.Busy` (nothing was written).
    """
    for attempt in range(retries + 1):
        try:
            with db.write_lock if db.is_sqlite else nullcontext(), db.write() as session:
                with session.begin():
                    return fn(session)
        except OperationalError as exc:
            if not _retryable(exc):
                raise
            if attempt == retries:
                raise Busy("the database is busy; retry shortly") from exc
            time.sleep(0.01 * 2**attempt * (1 + random.random()))
    raise AssertionError("unreachable")
