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
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

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


@dataclass(frozen=True)
class Report:
    """One outcome report, as a write for :func:`~scripts_engine.db.session.write_core`:
    called with a Connection it is stored alone. Reports queued at the same time may be
    stored as one (:meth:`together`, which :class:`~scripts_engine.db.session.LoopWriter`
    and :class:`~scripts_engine.db.session.LoopBatcher` call for the writes with the same
    :attr:`batch_key`)."""

    call_id: str
    api_key_id: int
    idem_key: str
    body: dict[str, Any]
    now: datetime
    refusal_days: int

    batch_key: ClassVar[str] = "outcome"

    @property
    def digest(self) -> str:
        """The fingerprint the idempotency key's answer is stored under."""
        return fingerprint({"call_id": self.call_id, **self.body})

    def __call__(self, conn: Connection) -> OutcomeAnswer:
        return _record(conn, self)

    @staticmethod
    def together(conn: Connection, reports: Sequence[Report]) -> list[OutcomeAnswer]:
        """Several reports, stored as one: one read of their calls (on PostgreSQL
        row-locked, in id order) and one of the answers stored under their keys, then one
        write of each kind (on PostgreSQL one statement a report, pipelined). Each is
        answered as it would be alone when that is plain: a replay, or a new outcome.
        Anything else raises (an error to answer, two reports of one call or one key, a
        concurrent twin's answer stored first), and the caller runs them one by one."""
        return _record_all(conn, reports)


def _record(conn: Connection, report: Report) -> OutcomeAnswer:
    digest = report.digest
    seen, call, new_id = repo.outcome_state(conn=conn, api_key_id=report.api_key_id,
                                            key=report.idem_key, call_id=report.call_id)  # fmt: skip
    if seen is not None:
        return _replay(seen, digest)
    campaign_id, customer_id = _check(report, call)
    if call is not None and call[3] is not None:
        # a twin of this request may have written it while this one waited for the call's
        # row lock (PostgreSQL): it is answered like any replay
        seen = repo.idempotent_answer(conn=conn, api_key_id=report.api_key_id,
                                      key=report.idem_key)  # fmt: skip
        if seen is not None:
            return _replay(seen, digest)
        raise Conflict("this call already has an outcome", code="outcome_exists")
    values, blocks, answer = _stored(report, campaign_id, customer_id, digest)
    pending = None  # PostgreSQL: the outcome is stored with the rest, under the id it got
    if new_id is None:
        new_id = repo.add_outcome(conn=conn, values=values)
    else:
        pending = {**values, "id": new_id}
    answer["response"] = _public({**values, "id": new_id})
    repo.finish_outcome(conn=conn, call_id=report.call_id, customer_id=customer_id,
                        outcome=pending, blocks=blocks, answer=answer)  # fmt: skip
    return OutcomeAnswer(201, answer["response"], False)


def _record_all(conn: Connection, reports: Sequence[Report]) -> list[OutcomeAnswer]:
    if len({r.call_id for r in reports}) < len(reports) or len(
        {(r.api_key_id, r.idem_key) for r in reports}
    ) < len(reports):
        raise Conflict("reports of one call or one key", code="not_alone")
    calls, answers, ids = repo.outcome_states(
        conn=conn, call_ids=[r.call_id for r in reports],
        keys=[(r.api_key_id, r.idem_key) for r in reports], ids=len(reports),
    )  # fmt: skip
    new: list[tuple[int, Report, str, str, str]] = []
    out: list[OutcomeAnswer | None] = []
    for report in reports:
        seen = answers.get((report.api_key_id, report.idem_key))
        if seen is not None:
            out.append(_replay(seen, report.digest))
            continue
        call = calls.get(report.call_id)
        campaign_id, customer_id = _check(report, call)
        if call is not None and call[3] is not None:
            raise Conflict("this call already has an outcome", code="outcome_exists")
        new.append((len(out), report, campaign_id, customer_id, report.digest))
        out.append(None)
    if new:
        rows, all_blocks, stored = [], [], []
        for new_id, (at, report, campaign_id, customer_id, digest) in zip(
            ids[: len(new)], new, strict=True
        ):
            values, blocks, answer = _stored(report, campaign_id, customer_id, digest)
            values["id"] = new_id
            answer["response"] = _public(values)
            rows.append(values)
            all_blocks += [{"customer_id": customer_id, "call_id": report.call_id, **b}
                           for b in blocks]  # fmt: skip
            stored.append(answer)
            out[at] = OutcomeAnswer(201, answer["response"], False)
        repo.add_outcomes(conn=conn, outcomes=rows, blocks=all_blocks, answers=stored)
    return [answer for answer in out if answer is not None]


def _check(report: Report, call: tuple[str, str, int | None, Any] | None) -> tuple[str, str]:
    """The call's campaign and customer, if this report may give it an outcome."""
    if call is None:
        raise NotFound(f"no call '{report.call_id}'")
    campaign_id, customer_id, leased_by, _existing = call
    if leased_by != report.api_key_id:
        raise Conflict("this call is not leased to this API key", code="call_not_leased")
    return campaign_id, customer_id


def _stored(
    report: Report, campaign_id: str, customer_id: str, digest: str
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """What a new outcome stores: its row (without its id), the suppressions it asks for
    (``kind``, ``since``, ``until``) and the idempotency key's row (without the response)."""
    body, now = report.body, report.now
    values = {
        "call_id": report.call_id, "campaign_id": campaign_id, "customer_id": customer_id,
        "status": body["status"], "converted": bool(body.get("converted")),
        "intent_grade": body.get("intent_grade"), "opt_out": bool(body.get("opt_out")),
        "refused": bool(body.get("refused")), "duration_s": body.get("duration_s"),
        "complaint": bool(body.get("complaint")), "notes": body.get("notes"),
        "api_key_id": report.api_key_id, "created_at": now,
    }  # fmt: skip
    blocks: list[dict[str, Any]] = []
    if values["opt_out"]:
        blocks.append({"kind": "opt_out", "since": now, "until": None})
    if values["refused"]:
        blocks.append({"kind": "refusal", "since": now,
                       "until": now + timedelta(days=report.refusal_days)})  # fmt: skip
    answer = {"api_key_id": report.api_key_id, "key": report.idem_key, "request_hash": digest,
              "status_code": 201, "created_at": now}  # fmt: skip
    return values, blocks, answer


def _replay(seen: tuple[str, int, dict[str, Any]], digest: str) -> OutcomeAnswer:
    """The stored answer of an earlier request with this idempotency key, if it had this
    body."""
    request_hash, status_code, response = seen
    if request_hash != digest:
        raise Conflict(
            "this Idempotency-Key was used for another request (another call, or another "
            "body): use a new key for each outcome",
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
    run = Report(call_id, api_key_id, idem_key, body, now, refusal_days)
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
    run = Report(call_id, api_key_id, idem_key, body, now, refusal_days)
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
