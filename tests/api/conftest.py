"""API fixtures: a real database (SQLite always; PostgreSQL when
``SCRIPTS_ENGINE_TEST_POSTGRES_URL`` is set), the real engine, real synthesis in-process, a
pinned clock inside the calling window, and one key per role."""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from api import create_app
from scripts_engine.config import Settings
from scripts_engine.db import repository as repo
from scripts_engine.db.session import open_database, write_transaction
from scripts_engine.signing import issue_secret, master_key, sign
from tests.conftest import DEMO_CSV

PG_URL = os.environ.get("SCRIPTS_ENGINE_TEST_POSTGRES_URL")
#: 10:00 in Shanghai on a Tuesday: inside the 09:00-21:00 window
T0 = datetime(2026, 5, 12, 2, 0, tzinfo=UTC)
ROLES = ("admin", "dialler", "writer", "qa")


def reset_postgres(url: str) -> None:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'engine.db'}"
    if not PG_URL:
        pytest.skip("SCRIPTS_ENGINE_TEST_POSTGRES_URL is not set")
    reset_postgres(PG_URL)
    return PG_URL


class Clock:
    """A settable clock for the gate."""

    def __init__(self, now: datetime = T0):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def api_settings(tmp_path: Path, saved_model: Path, db_url: str) -> Settings:
    return Settings(
        state_dir=tmp_path / "state",
        model_path=saved_model,
        database_url=db_url,
        service_synthesis="inline",
        campaign_chunk_size=8,
        log_json=True,
    )


def make_client(settings: Settings, clock: Clock, **kwargs: Any) -> TestClient:
    return TestClient(create_app(settings, clock=clock, **kwargs), raise_server_exceptions=False)


@pytest.fixture
def client(api_settings: Settings, clock: Clock) -> Iterator[TestClient]:
    with make_client(api_settings, clock, start_builder=False) as c:
        yield c


#: dialler key -> its outcome-signing secret
SECRETS: dict[str, str] = {}


def create_keys(settings: Settings) -> dict[str, str]:
    """One key per role; the dialler's signing secret goes to :data:`SECRETS`."""
    db = open_database(settings)
    master = master_key(settings)

    def make(session: Any, role: str) -> str:
        row, key = repo.create_api_key(session=session, role=role, name=f"test {role}", now=T0)
        if role == "dialler":
            SECRETS[key] = issue_secret(session, master=master, api_key_id=row.id, now=T0)
        return key

    try:
        return {role: write_transaction(db, lambda s, role=role: make(s, role)) for role in ROLES}
    finally:
        db.dispose()


def signed(key: str, body: Any, *, at: float | None = None, **headers: str) -> dict[str, Any]:
    """``content`` and ``headers`` of an outcome report signed with the key's secret."""
    raw = json.dumps(body).encode()
    stamp = int(time.time() if at is None else at)
    return {"content": raw, "headers": {**auth(key), "Content-Type": "application/json",
                                        "X-Signature": sign(SECRETS[key], stamp, raw), **headers}}  # fmt: skip


def outcome(client: Any, call_id: str, key: str, body: Any, idem: str | None = None) -> Any:
    """POST a signed outcome (``client``: a TestClient or an httpx.Client)."""
    extra = {"Idempotency-Key": idem} if idem is not None else {}
    return client.post(f"/v1/calls/{call_id}/outcome", **signed(key, body, **extra))


@pytest.fixture
def keys(client: TestClient, api_settings: Settings) -> dict[str, str]:
    """One key per role (the app has migrated the database already)."""
    return create_keys(api_settings)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def demo_records(n: int, *, start: int = 0) -> list[dict[str, Any]]:
    """``n`` shipped demo customers as JSON-ready records (consent as given in the file)."""
    with DEMO_CSV.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[start : start + n]
    return [{k: v for k, v in r.items() if v != "" and k != "y"} for r in rows]
