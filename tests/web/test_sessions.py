"""Logging out holds across server processes: two app instances on one database (as two
workers behind a load balancer); a session ended on one is refused by the other, on SQLite and
PostgreSQL; the records of expired sessions are deleted."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.web.auth import COOKIE, LOGIN_CSRF_COOKIE, MAX_AGE_S
from scripts_engine.config import Settings
from scripts_engine.db.models import WebSessionRevocation
from scripts_engine.db.session import write_transaction
from tests.api.conftest import Clock, create_keys, db_url, make_client  # noqa: F401


def sign_in(c: TestClient, key: str) -> str:
    """Sign in through the form; the session cookie's value."""
    c.get("/web/login")
    r = c.post("/web/login", data={"key": key, "csrf": c.cookies[LOGIN_CSRF_COOKIE]},
               follow_redirects=False)  # fmt: skip
    assert r.status_code == 303, r.text
    return str(c.cookies[COOKIE])


def signed_in(c: TestClient, cookie: str) -> bool:
    c.cookies.clear()
    r = c.get("/web/", headers={"Cookie": f"{COOKIE}={cookie}"}, follow_redirects=False)
    assert r.status_code in (200, 303), r.text
    return r.status_code == 200


def test_logout_in_one_process_is_refused_by_another(
    db_url: str,  # noqa: F811
    tmp_path: Path,
    saved_model: Path,
) -> None:
    settings = Settings(state_dir=tmp_path / "state", model_path=saved_model,
                        database_url=db_url, service_synthesis="inline")  # fmt: skip
    with (
        make_client(settings, Clock(), start_builder=False) as one,
        make_client(settings, Clock(), start_builder=False) as two,
    ):
        assert one.app is not two.app
        key = create_keys(settings)["writer"]
        cookie = sign_in(one, key)
        kept = sign_in(two, key)  # another session of the same key, in the other process
        assert signed_in(two, cookie) and signed_in(one, cookie)

        # an expired record from long ago: the next logout deletes it
        db = one.app.state.services.db
        old = datetime.now(UTC) - timedelta(seconds=MAX_AGE_S + 60)
        write_transaction(db, lambda s: s.add(WebSessionRevocation(nonce="gone", expires_at=old)))

        home = one.get("/web/", headers={"Cookie": f"{COOKIE}={cookie}"}).text
        token = re.search(r'name="csrf" value="([^"]+)"', home)
        assert token is not None
        r = one.post("/web/logout", data={"csrf": token.group(1)},
                     headers={"Cookie": f"{COOKIE}={cookie}"}, follow_redirects=False)  # fmt: skip
        assert r.status_code == 303 and r.headers["location"] == "/web/login"

        assert not signed_in(two, cookie)  # the other process refuses the ended session
        assert not signed_in(one, cookie)
        assert signed_in(two, kept)  # the key's other session goes on
        with db.read() as session:
            rows = session.scalars(select(WebSessionRevocation)).all()
            assert [r.nonce for r in rows] != [] and "gone" not in {r.nonce for r in rows}
            (row,) = rows
            # kept until the cookie would have expired, no longer
            left = row.expires_at.timestamp() - time.time()
            assert MAX_AGE_S - 120 < left <= MAX_AGE_S
            assert session.scalar(select(func.count()).select_from(WebSessionRevocation)) == 1
