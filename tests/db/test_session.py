"""The PostgreSQL pool: a connection that sat idle is checked before use and replaced if the
server dropped it; a single read runs in autocommit (nothing left open on the server)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from scripts_engine.config import Settings
from scripts_engine.db import session as session_mod
from scripts_engine.db.session import open_database


def _postgres(db_url: str, tmp_path: Path) -> session_mod.Database:
    if not db_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL pool")
    return open_database(Settings(state_dir=tmp_path), url=db_url)


def _backend(db: session_mod.Database) -> int:
    """The server process behind the pool's connection (a pool used one request at a time
    hands the same connection back on the next checkout)."""
    with db.one_read() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _drop_server_side(db: session_mod.Database, pid: int) -> None:
    """End the backend ``pid`` from another, unpooled connection (as a server restart or an
    idle-session timeout would)."""
    other = create_engine(db.url, poolclass=NullPool)
    with other.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    other.dispose()


def test_an_idle_connection_the_server_dropped_is_replaced(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = _postgres(db_url, tmp_path)
    try:
        pid = _backend(db)
        monkeypatch.setattr(session_mod, "IDLE_PING_S", 0.0)
        _drop_server_side(db, pid)
        assert _backend(db) != pid  # a new connection, and no error reached the caller
    finally:
        db.dispose()


def test_a_connection_in_use_is_not_pinged(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recently used connections skip the ping (one round trip less a request); if the server
    dropped one meanwhile, that request fails and the pool is renewed for the next."""
    db = _postgres(db_url, tmp_path)
    try:
        pid = _backend(db)
        monkeypatch.setattr(session_mod, "IDLE_PING_S", 3600.0)
        _drop_server_side(db, pid)
        with pytest.raises(OperationalError, match="terminat|closed|server"):
            with db.one_read() as conn:
                conn.execute(text("SELECT 1"))
        assert _backend(db) != pid
    finally:
        db.dispose()


def test_a_single_read_leaves_no_transaction_open(db_url: str, tmp_path: Path) -> None:
    db = _postgres(db_url, tmp_path)
    try:
        with db.one_read() as conn:
            conn.execute(text("SELECT 1"))
            raw = conn.connection.dbapi_connection
            assert raw is not None
            assert raw.info.transaction_status.name == "IDLE"  # no BEGIN was sent
        with db.read_engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            raw = conn.connection.dbapi_connection
            assert raw is not None
            assert raw.info.transaction_status.name == "INTRANS"  # the ordinary way: BEGIN
    finally:
        db.dispose()
