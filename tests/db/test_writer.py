"""The SQLite group commit: writes that share one transaction still succeed or fail alone."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from scripts_engine.db.models import Attempt
from scripts_engine.db.session import Database, Writer

NOW = datetime(2026, 5, 12, 2, 0, tzinfo=UTC)


def _attempt(customer_id: str) -> dict[str, object]:
    return {"customer_id": customer_id, "call_id": "c", "at": NOW, "local_day": "2026-05-12"}


@pytest.mark.parametrize("core", [True, False], ids=["core", "orm"])
def test_a_failing_write_in_a_batch_writes_nothing(db: Database, core: bool) -> None:
    if not db.is_sqlite:
        pytest.skip("the group commit is SQLite's")
    writer = Writer(db)
    gate = threading.Event()
    try:
        blocker = writer.submit(lambda s: gate.wait(10))  # holds the writer: the rest batch up

        def failing(session: Session) -> None:
            session.connection().execute(insert(Attempt), _attempt("failed"))
            if not core:
                session.add(Attempt(**_attempt("failed-orm")))  # type: ignore[arg-type]
                session.flush()
            raise ValueError("refused after writing")

        def ok(session: Session) -> str:
            session.connection().execute(insert(Attempt), _attempt("ok"))
            return "ok"

        bad, good = writer.submit(failing, core=core), writer.submit(ok, core=core)
        gate.set()
        assert blocker.result(10) is True
        with pytest.raises(ValueError, match="refused after writing"):
            bad.result(10)
        assert good.result(10) == "ok"
    finally:
        writer.close()
    with db.read() as session:
        written = session.scalars(select(Attempt.customer_id)).all()
    assert written == ["ok"]
