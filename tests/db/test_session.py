"""The PostgreSQL pool: a connection that sat idle is checked before use and replaced if the
server dropped it; a single read runs in autocommit (nothing left open on the server). JSON
columns read back what was written, on SQLite and PostgreSQL. On SQLite an event loop keeps
its read connection."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest
from sqlalchemy import (
    JSON,
    Column,
    Integer,
    MetaData,
    Table,
    create_engine,
    func,
    select,
    text,
)
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


def test_json_columns_read_back_what_was_written(db_url: str, tmp_path: Path) -> None:
    """JSON columns are parsed by orjson, and by ``json.loads`` for what orjson refuses but
    Python's own writer produces (``NaN`` on SQLite; integers beyond 64 bits)."""
    db = open_database(Settings(state_dir=tmp_path), url=db_url)
    table = Table("json_probe", MetaData(), Column("id", Integer, primary_key=True),
                  Column("v", JSON))  # fmt: skip
    values = [{"name": "欧阳", "n": 3, "x": 0.1, "none": None, "list": [1, "二"]},
              {"big": 2**70, "neg": -(2**70)}]  # fmt: skip
    if db.is_sqlite:  # PostgreSQL's JSON has no NaN
        values.append({"nan": float("nan"), "inf": float("inf")})
    try:
        table.drop(db.write_engine, checkfirst=True)
        table.create(db.write_engine)
        with db.write_engine.begin() as conn:
            conn.execute(table.insert(), [{"id": i, "v": v} for i, v in enumerate(values)])
        with db.one_read() as conn:
            got = [r.v for r in conn.execute(select(table.c.v).order_by(table.c.id))]
        assert got[:2] == values[:2]
        if db.is_sqlite:
            assert math.isnan(got[2]["nan"]) and got[2]["inf"] == float("inf")
    finally:
        table.drop(db.write_engine, checkfirst=True)
        db.dispose()
    assert session_mod.load_json(b'{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}
    with pytest.raises(ValueError):
        session_mod.load_json("{not json")


def test_an_event_loop_keeps_its_sqlite_read_connection_without_a_snapshot(
    tmp_path: Path,
) -> None:
    """On SQLite a loop's reads share one kept connection; it sees every commit made since
    (it holds no transaction between reads), and an error replaces it."""
    db = open_database(Settings(state_dir=tmp_path))
    table = Table("probe", MetaData(), Column("id", Integer, primary_key=True))
    table.create(db.write_engine)

    def count() -> int:
        with db.one_read() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

    async def on_the_loop() -> None:
        loop = asyncio.get_running_loop()
        assert count() == 0
        kept = db.loop_reads[loop]
        with db.write_engine.begin() as conn:  # another connection commits
            conn.execute(table.insert(), [{"id": 1}, {"id": 2}])
        assert count() == 2 and db.loop_reads[loop] is kept
        assert not kept.in_transaction()  # the read's transaction was rolled back
        with pytest.raises(OperationalError), db.one_read() as conn:
            conn.execute(text("SELECT * FROM no_such_table"))
        assert loop not in db.loop_reads and kept.closed
        assert count() == 2 and db.loop_reads[loop] is not kept

    try:
        asyncio.run(on_the_loop())
        assert count() == 2  # off a loop: from the pool, as before
        assert len(db.loop_reads) == 1
    finally:
        db.dispose()
    assert not db.loop_reads
