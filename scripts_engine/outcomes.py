"""Outcomes: what happened on a call, reported once, with Stripe-style idempotency keys.

:func:`record_outcome` runs in one write transaction: look up the ``(api key, idempotency
key)`` pair; if it was seen, replay the first answer when the body is the same (a fingerprint
of the canonical body) or refuse with :class:`Conflict` when it differs; otherwise check the
call (it must have been leased to this key, and have no outcome yet), store the outcome, close
the call, add the suppression an opt-out or a refusal asks for, and store the answer under the
key, all or nothing. Two identical requests racing: on SQLite the second waits for the first
(IMMEDIATE transactions) and replays; on PostgreSQL the second's insert hits the unique index
after the first commits, its transaction is rolled back and it runs again, replaying. Either
way there is one effect.

An opt-out blocks the customer in every campaign from the next claim on (the claim reads the
suppressions under the customer's row lock). A refusal blocks for ``refusal_cooldown_days``.

:func:`profile_stats` aggregates outcomes per profile and group (model vs control): the loop
that lets the selection learn which profiles convert.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Connection, case, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from scripts_engine.db import repository as repo
from scripts_engine.db.errors import Conflict, NotFound
from scripts_engine.db.models import Call, Outcome
from scripts_engine.db.session import Database, write_core, write_core_async

STATUSES = ("connected", "no_answer", "busy", "voicemail", "failed")
GRADES = ("A", "B", "C", "D")


@dataclass(frozen=True)
class OutcomeAnswer:
    status_code: int
    body: dict[str, Any]
    replayed: bool


def fingerprint(body: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a request body."""
    blob = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


_PUBLIC = ("id", "call_id", "campaign_id", "status", "converted", "intent_grade", "opt_out",
           "refused", "duration_s", "complaint", "notes")  # fmt: skip


def _public(values: dict[str, Any]) -> dict[str, Any]:
    return {k: values[k] for k in _PUBLIC} | {"recorded_at": values["created_at"].isoformat()}


def outcome_public(row: Outcome) -> dict[str, Any]:
    return _public({k: getattr(row, k) for k in (*_PUBLIC, "created_at")})


def _record(
    conn: Connection,
    *,
    call_id: str,
    api_key_id: int,
    idem_key: str,
    body: dict[str, Any],
    now: datetime,
    refusal_days: int,
) -> OutcomeAnswer:
    digest = fingerprint({"call_id": call_id, **body})
    seen, call, new_id = repo.outcome_state(conn=conn, api_key_id=api_key_id, key=idem_key,
                                            call_id=call_id)  # fmt: skip
    if seen is not None:
        return _replay(seen, digest)
    if call is None:
        raise NotFound(f"no call '{call_id}'")
    campaign_id, customer_id, leased_by, existing = call
    if leased_by != api_key_id:
        raise Conflict("this call is not leased to this API key", code="call_not_leased")
    if existing is not None:
        # a twin of this request may have written it while this one waited for the call's
        # row lock (PostgreSQL): it is answered like any replay
        seen = repo.idempotent_answer(conn=conn, api_key_id=api_key_id, key=idem_key)
        if seen is not None:
            return _replay(seen, digest)
        raise Conflict("this call already has an outcome", code="outcome_exists")
    values = {
        "call_id": call_id, "campaign_id": campaign_id, "customer_id": customer_id,
        "status": body["status"], "converted": bool(body.get("converted")),
        "intent_grade": body.get("intent_grade"), "opt_out": bool(body.get("opt_out")),
        "refused": bool(body.get("refused")), "duration_s": body.get("duration_s"),
        "complaint": bool(body.get("complaint")), "notes": body.get("notes"),
        "api_key_id": api_key_id, "created_at": now,
    }  # fmt: skip
    pending = None  # PostgreSQL: the outcome is stored with the rest, under the id it got
    if new_id is None:
        new_id = repo.add_outcome(conn=conn, values=values)
    else:
        pending = {**values, "id": new_id}
    blocks: list[dict[str, Any]] = []
    if values["opt_out"]:
        blocks.append({"kind": "opt_out", "since": now, "until": None})
    if values["refused"]:
        blocks.append({"kind": "refusal", "since": now,
                       "until": now + timedelta(days=refusal_days)})  # fmt: skip
    answer = _public({**values, "id": new_id})
    repo.finish_outcome(conn=conn, call_id=call_id, customer_id=customer_id, outcome=pending,
                        blocks=blocks, answer={
                            "api_key_id": api_key_id, "key": idem_key, "request_hash": digest,
                            "status_code": 201, "response": answer, "created_at": now,
                        })  # fmt: skip
    return OutcomeAnswer(201, answer, False)


def _replay(seen: tuple[str, int, dict[str, Any]], digest: str) -> OutcomeAnswer:
    """The stored answer of an earlier request with this idempotency key, if it had this
    body."""
    request_hash, status_code, response = seen
    if request_hash != digest:
        raise Conflict(
            "this Idempotency-Key was used with another request body",
            code="idempotency_key_reused",
        )
    return OutcomeAnswer(status_code, response, True)


#: a concurrent twin (same Idempotency-Key) that commits first makes a write raise
#: IntegrityError; the next attempt replays its answer
_TWIN_ATTEMPTS = 3


def _in_flight() -> Conflict:
    return Conflict("a request with this Idempotency-Key is in progress", code="in_flight")


def record_outcome(
    *,
    db: Database,
    call_id: str,
    api_key_id: int,
    idem_key: str,
    body: dict[str, Any],
    now: datetime,
    refusal_days: int,
) -> OutcomeAnswer:
    """Store one outcome (see the module docstring); replays are answered from the store.

    Raises:
        NotFound: no such call.
        Conflict: key reused with another body; call not leased to this key; outcome exists;
            a twin still in flight.
    """
    run = partial(_record, call_id=call_id, api_key_id=api_key_id, idem_key=idem_key,
                  body=body, now=now, refusal_days=refusal_days)  # fmt: skip
    for _ in range(_TWIN_ATTEMPTS):
        with suppress(IntegrityError):
            return write_core(db, run)
    raise _in_flight()


async def record_outcome_async(
    *,
    db: Database,
    call_id: str,
    api_key_id: int,
    idem_key: str,
    body: dict[str, Any],
    now: datetime,
    refusal_days: int,
) -> OutcomeAnswer:
    """:func:`record_outcome` for a coroutine (the service's event loop)."""
    run = partial(_record, call_id=call_id, api_key_id=api_key_id, idem_key=idem_key,
                  body=body, now=now, refusal_days=refusal_days)  # fmt: skip
    for _ in range(_TWIN_ATTEMPTS):
        with suppress(IntegrityError):
            return await write_core_async(db, run)
    raise _in_flight()


def profile_stats(*, session: Session, campaign_id: str | None = None) -> dict[str, Any]:
    """Outcomes per profile and group: calls, connected, converted, conversion rate; and the
    model group's lift over the control group."""
    connected = func.sum(case((Outcome.status == "connected", 1), else_=0))
    converted = func.sum(case((Outcome.converted.is_(True), 1), else_=0))
    stmt = (
        select(Call.profile_id, Call.group, func.count(Outcome.id), connected, converted)
        .join(Outcome, Outcome.call_id == Call.id)
        .group_by(Call.profile_id, Call.group)
        .order_by(Call.profile_id, Call.group)
    )
    if campaign_id is not None:
        stmt = stmt.where(Call.campaign_id == campaign_id)
    rows, groups = [], {"model": [0, 0], "control": [0, 0]}
    for pid, group, n, conn, conv in session.execute(stmt):
        n, conn, conv = int(n), int(conn or 0), int(conv or 0)
        rows.append({"profile_id": pid, "group": group, "outcomes": n, "connected": conn,
                     "converted": conv, "conversion_rate": round(conv / n, 4) if n else 0.0})  # fmt: skip
        groups.setdefault(group, [0, 0])
        groups[group][0] += n
        groups[group][1] += conv
    rates = {g: (c / n if n else None) for g, (n, c) in groups.items()}
    lift = None
    if rates.get("model") is not None and rates.get("control"):
        lift = round(rates["model"] / rates["control"], 4)  # type: ignore[operator]
    return {
        "campaign_id": campaign_id,
        "profiles": rows,
        "groups": {
            g: {"outcomes": n, "converted": c, "conversion_rate": rates[g]}
            for g, (n, c) in groups.items()
        },  # fmt: skip
        "lift": lift,
    }
