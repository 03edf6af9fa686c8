"""The outcome's answer to a concurrent twin: a write that lost the race on the idempotency key
(IntegrityError) runs again and replays the winner's answer; a twin still in flight after
three tries is a 409 ``in_flight``. Both entry points (thread and coroutine) behave alike."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from scripts_engine import outcomes
from scripts_engine.db.errors import Conflict

ARGS: dict[str, Any] = {"db": None, "call_id": "c1", "api_key_id": 1, "idem_key": "k",
                        "body": {"status": "connected"}, "now": datetime(2026, 5, 12, tzinfo=UTC),
                        "refusal_days": 180}  # fmt: skip
REPLAY = outcomes.OutcomeAnswer(201, {"id": 1}, True)


def _losing(times: int) -> tuple[list[int], Any]:
    tries: list[int] = []

    def write(db: Any, fn: Any) -> outcomes.OutcomeAnswer:
        tries.append(1)
        if len(tries) <= times:
            raise IntegrityError("INSERT INTO idempotency_keys", {}, Exception("unique"))
        return REPLAY

    return tries, write


@pytest.mark.parametrize("lost", [0, 1, 2])
def test_a_lost_race_is_run_again_and_replayed(lost: int, monkeypatch: Any) -> None:
    tries, write = _losing(lost)
    monkeypatch.setattr(outcomes, "write_core", write)
    assert outcomes.record_outcome(**ARGS) is REPLAY and len(tries) == lost + 1

    tries, write = _losing(lost)

    async def write_async(db: Any, fn: Any) -> outcomes.OutcomeAnswer:
        return write(db, fn)

    monkeypatch.setattr(outcomes, "write_core_async", write_async)
    assert asyncio.run(outcomes.record_outcome_async(**ARGS)) is REPLAY
    assert len(tries) == lost + 1


def test_a_twin_still_in_flight_is_a_conflict(monkeypatch: Any) -> None:
    tries, write = _losing(3)
    monkeypatch.setattr(outcomes, "write_core", write)
    with pytest.raises(Conflict) as caught:
        outcomes.record_outcome(**ARGS)
    assert caught.value.code == "in_flight" and len(tries) == 3

    tries, write = _losing(3)

    async def write_async(db: Any, fn: Any) -> outcomes.OutcomeAnswer:
        return write(db, fn)

    monkeypatch.setattr(outcomes, "write_core_async", write_async)
    with pytest.raises(Conflict, match="in progress"):
        asyncio.run(outcomes.record_outcome_async(**ARGS))
    assert len(tries) == 3
