"""Migrations: applied on an empty database, idempotent, and matching the models."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from scripts_engine.config import Settings
from scripts_engine.db.migrate import alembic_config, current_tables, upgrade
from scripts_engine.db.models import Base
from scripts_engine.db.session import CACHE_KIB, READ_CACHE_KIB, Database, open_database


def _downgrade(db: Database, revision: str) -> None:
    from alembic import command

    cfg = alembic_config()
    with db.write_engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


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
            # a page cache larger than SQLite's 2 MiB default, in KiB (negative)
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -CACHE_KIB
        with db.read_engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -READ_CACHE_KIB
    finally:
        db.dispose()


def test_postgres_keeps_the_calls_statistics_fresh(db_url: str, tmp_path: Path) -> None:
    """PostgreSQL analyses and vacuums the calls table after 2 % of its rows change (the
    claim's plan depends on how many calls are still ready), and the claim's index keeps the
    ids in byte order (0008); the downgrades undo both."""
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's autovacuum")

    db = open_database(Settings(state_dir=tmp_path), url=db_url)
    query = "SELECT reloptions FROM pg_class WHERE relname = 'calls'"
    index = "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_calls_pick'"
    try:
        upgrade(db)
        with db.read_engine.connect() as conn:
            options = conn.exec_driver_sql(query).scalar_one()
            assert conn.exec_driver_sql(index).scalar_one().endswith('id COLLATE "C")')
        assert "autovacuum_analyze_scale_factor=0.02" in options
        assert "autovacuum_vacuum_scale_factor=0.02" in options
        _downgrade(db, "0006")
        with db.read_engine.connect() as conn:
            assert conn.exec_driver_sql(query).scalar_one() is None
            assert conn.exec_driver_sql(index).scalar_one().endswith("(campaign_id, status, id)")
        upgrade(db)
    finally:
        db.dispose()


def test_calls_leased_before_0009_come_back_when_their_lease_ends(
    db_url: str, tmp_path: Path
) -> None:
    """0009 gives the calls leased at upgrade time their lease's end as ``not_before`` (the
    claim finds ended leases by it); its downgrade takes it away again."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import insert, select

    from scripts_engine.db import repository as repo
    from scripts_engine.db.models import Call, Campaign
    from scripts_engine.db.session import table

    now = datetime(2026, 5, 12, 2, 0, tzinfo=UTC)
    db = open_database(Settings(state_dir=tmp_path), url=db_url)
    try:
        upgrade(db, "0008")
        with db.write_engine.begin() as conn:
            conn.execute(insert(table(Campaign)), [{
                "id": "cmp", "name": "May", "options": {}, "status": "ready", "total": 1,
                "done": 1, "failed": 0, "created_by": None, "created_at": now,
                "updated_at": now}])  # fmt: skip
            conn.execute(insert(table(Call)), [{
                "id": "K-1", "campaign_id": "cmp", "customer_id": "c1", "chunk": 0,
                "group": "model", "profile_id": "P01", "audio": {}, "status": "leased",
                "leased_by": 1, "lease_until": now - timedelta(minutes=1), "not_before": None,
                "claims": 1, "created_at": now}])  # fmt: skip
        upgrade(db)
        not_before = select(table(Call).c.not_before)
        with db.write_engine.begin() as conn:
            assert conn.execute(not_before).scalar_one() == now - timedelta(minutes=1)
            found = repo.claim_candidates(conn=conn, campaign_id="cmp", now=now, limit=1)
            assert [c[0] for c in found] == ["K-1"]
        _downgrade(db, "0008")
        with db.read_engine.connect() as conn:
            assert conn.execute(not_before).scalar_one() is None
        upgrade(db)
    finally:
        db.dispose()


def test_numbers_are_filled_in_for_what_was_stored_before(db_url: str, tmp_path: Path) -> None:
    """0010: customers stored before it get their number's key, and their suppressions and
    attempts the customer's number, so the do-not-call list holds the numbers already on it."""
    db = open_database(Settings(state_dir=tmp_path), url=db_url)
    try:
        upgrade(db)
        _downgrade(db, "0009")
        with db.write_engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO customers (customer_id, record, phone, timezone, consent, "
                "profiling_opt_out, updated_at) VALUES "
                "('a', '{}', '+86 138 0000 1234', NULL, true, false, '2026-05-12 02:00:00'), "
                "('b', '{}', 'none', NULL, true, false, '2026-05-12 02:00:00'), "
                "('c', '{}', NULL, NULL, true, false, '2026-05-12 02:00:00')"
            )
            conn.exec_driver_sql(
                "INSERT INTO blocks (customer_id, kind, since) VALUES "
                "('a', 'opt_out', '2026-05-12 02:00:00'), ('b', 'opt_out', '2026-05-12 02:00:00')"
            )
            conn.exec_driver_sql(
                "INSERT INTO attempts (customer_id, call_id, at, local_day) VALUES "
                "('a', 'k1', '2026-05-12 02:00:00', '2026-05-12')"
            )
        upgrade(db)
        with db.read_engine.connect() as conn:
            keys = conn.exec_driver_sql(
                "SELECT customer_id, phone_key FROM customers ORDER BY customer_id"
            ).all()
            blocks = conn.exec_driver_sql(
                "SELECT customer_id, phone_key FROM blocks ORDER BY customer_id"
            ).all()
            attempts = conn.exec_driver_sql("SELECT phone_key FROM attempts").all()
        assert [tuple(r) for r in keys] == [("a", "+8613800001234"), ("b", None), ("c", None)]
        assert [tuple(r) for r in blocks] == [("a", "+8613800001234"), ("b", None)]
        assert [tuple(r) for r in attempts] == [("+8613800001234",)]
    finally:
        db.dispose()
