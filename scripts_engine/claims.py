"""Claims: hand each ready call to exactly one dialler, for a while (a lease), if the gate
allows it.

One claim is one write transaction (on SQLite it may share a group commit with other writes,
in its own savepoint). It selects due calls of the campaign (ready ones, and
leased ones whose lease expired: an expired lease returns the call to the pool), locks them
(PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so concurrent claims take different calls; SQLite:
the transaction began ``IMMEDIATE``, so claims run one at a time), then locks the customers in
id order (so a claim in another campaign, or an opt-out, for the same customer waits), reads
their suppressions and attempts, and asks the :class:`~scripts_engine.gate.Gate`. Every
decision is stored with its rule. An allowed call is leased and an attempt is recorded in the
same transaction, which is what makes the frequency cap hold under races. A blocked call is
either closed (no consent, opted out) or put back with ``not_before`` set to when the block
lifts, so it is not re-examined before then. When blocked candidates leave the claim short,
it looks again (a few rounds). The claim never parses or re-encodes a script: what the dialler
gets was encoded once, at build time (``calls.payload``), and is spliced into the answer.
Statements are SQLAlchemy Core: a claim touches a handful of rows and ORM bookkeeping would
cost more than the SQL.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from scripts_engine.audio import get_format
from scripts_engine.campaigns import Toolkit, call_payload
from scripts_engine.db import repository as repo
from scripts_engine.db.errors import NotFound
from scripts_engine.db.models import Attempt, Call, Campaign, GateDecision
from scripts_engine.db.session import Database, table, write_async, write_transaction
from scripts_engine.gate import Decision, Gate, Subject
from scripts_engine.refresh import renew_leased

log = logging.getLogger("scripts_engine.claims")
#: Extra candidates examined per round (blocked ones are skipped), and rounds per claim.
OVERSCAN = 2
ROUNDS = 8


@dataclass(frozen=True)
class ClaimedCall:
    """A call leased by this claim, with what the dialler gets (``payload``: JSON text of
    group, profile and script, made at build time)."""

    call_id: str
    campaign_id: str
    customer_id: str
    phone: str | None
    payload: str
    audio: dict[str, str]  # format -> "sha256.ext"
    decision: Decision
    lease_until: datetime
    not_after: datetime


@dataclass(frozen=True)
class ClaimResult:
    calls: list[ClaimedCall]
    decisions: list[Decision]
    next_due: datetime | None


def _attempt_days(
    session: Session, customer_ids: list[str], now: datetime
) -> dict[str, list[date]]:
    out: dict[str, list[date]] = {}
    a = Attempt.__table__.c
    stmt = select(a.customer_id, a.local_day).where(
        a.customer_id.in_(customer_ids), a.at > now - timedelta(days=8)
    )
    for cid, day in session.execute(stmt):
        out.setdefault(cid, []).append(date.fromisoformat(day))
    return out


def _audio_refs(audio: dict[str, Any] | None) -> dict[str, str]:
    return {fmt: f"{sha}.{get_format(fmt).ext.lstrip('.')}" for fmt, sha in (audio or {}).items()}


def _claim(
    session: Session,
    *,
    gate: Gate,
    campaign_id: str,
    api_key_id: int,
    limit: int,
    lease_seconds: int,
    now: datetime,
) -> ClaimResult:
    if session.scalar(select(Campaign.id).where(Campaign.id == campaign_id)) is None:
        raise NotFound(f"no campaign '{campaign_id}'")
    calls, attempts, decisions_t = table(Call), table(Attempt), table(GateDecision)
    lease_until = now + timedelta(seconds=lease_seconds)
    leased: list[tuple[str, str, Decision, str | None]] = []
    decisions: list[Decision] = []
    seen: set[str] = set()
    for _round in range(ROUNDS):
        want = limit - len(leased)
        if want <= 0:
            break
        candidates = [
            c for c in repo.claim_candidates(
                session=session, campaign_id=campaign_id, now=now, limit=want + OVERSCAN
            ) if c[0] not in seen
        ]  # fmt: skip
        if not candidates:
            break
        ids = [cust for _, cust, _ in candidates]
        subjects = repo.claim_subjects(session=session, customer_ids=ids)
        blocks = repo.block_facts(session=session, customer_ids=ids, now=now)
        days = _attempt_days(session, ids, now)
        decision_rows, attempt_rows = [], []
        for call_id, customer_id, _status in candidates:
            seen.add(call_id)
            if len(leased) >= limit:
                break
            consent, tz, phone = subjects.get(customer_id, (None, None, None))
            own = blocks.get(customer_id, [])
            refusals = [u for k, u in own if k == "refusal" and u is not None]
            subject = Subject(
                customer_id=customer_id,
                consent=consent,  # a deleted customer: None, so no
                timezone=tz,
                opted_out=any(k == "opt_out" for k, _ in own),
                refused_until=max(refusals) if refusals else None,
                attempt_days=days.get(customer_id, []),
            )
            decision = gate.evaluate(subject, now)
            decisions.append(decision)
            decision_rows.append(
                {"call_id": call_id, "customer_id": customer_id, "at": now,
                 "allowed": decision.allowed, "rule": decision.rule,
                 "checks": decision.checks_json(), "ruleset": gate.rules.version,
                 "api_key_id": api_key_id}
            )  # fmt: skip
            if decision.allowed:
                assert decision.local_day is not None
                session.execute(
                    update(calls).where(calls.c.id == call_id).values(
                        status="leased", leased_by=api_key_id, lease_until=lease_until,
                        claims=calls.c.claims + 1, not_before=None,
                    )
                )  # fmt: skip
                attempt_rows.append({"customer_id": customer_id, "call_id": call_id, "at": now,
                                     "local_day": decision.local_day.isoformat()})  # fmt: skip
                days.setdefault(customer_id, []).append(decision.local_day)
                leased.append((call_id, customer_id, decision, phone))
            else:
                # leased_by stays: the last holder may still report
                session.execute(
                    update(calls).where(calls.c.id == call_id).values(
                        status="blocked" if decision.final else "ready", lease_until=None,
                        not_before=decision.retry_at,
                    )
                )  # fmt: skip
        if decision_rows:
            session.execute(insert(decisions_t), decision_rows)
        if attempt_rows:
            session.execute(insert(attempts), attempt_rows)
    payloads = repo.call_payloads(session=session, call_ids=[c for c, *_ in leased])
    claimed = []
    for call_id, customer_id, decision, phone in leased:
        payload, audio, script, record = payloads[call_id]
        if payload is None:  # built before payloads were made at build time
            payload = call_payload(str(record.get("group")), script, record)
        assert decision.window_end is not None
        claimed.append(
            ClaimedCall(
                call_id=call_id, campaign_id=campaign_id, customer_id=customer_id, phone=phone,
                payload=payload, audio=_audio_refs(audio), decision=decision,
                lease_until=lease_until, not_after=min(decision.window_end, lease_until),
            )
        )  # fmt: skip
    next_due = None
    if not claimed:
        next_due = repo.next_due(session=session, campaign_id=campaign_id)
    return ClaimResult(claimed, decisions, next_due)


def live_scripts(
    result: ClaimResult, *, db: Database, toolkit: Toolkit | None, now: datetime
) -> ClaimResult:
    """The claim's calls, each with a script of the live template and styles versions: a call
    rendered against a version no longer live is rendered again before it is handed out
    (:func:`scripts_engine.refresh.renew_leased`; one primary-key read when nothing changed).
    Runs after the lease is committed, outside the claim's transaction. If that fails, the
    calls are handed out with the approved scripts they were built with (which their records
    still name): the leases and attempts are already written."""
    if toolkit is None or not result.calls:
        return result
    try:
        renewed = renew_leased(db=db, toolkit=toolkit, now=now,
                               leases={c.call_id: c.lease_until for c in result.calls})  # fmt: skip
    except Exception:  # noqa: BLE001 - the claim stands; see the docstring
        log.exception("claim-time refresh failed; handing out the scripts as built")
        return result
    if not renewed:
        return result
    calls = [
        replace(c, payload=renewed[c.call_id]["payload"],
                audio=_audio_refs(renewed[c.call_id]["audio"])) if c.call_id in renewed else c
        for c in result.calls
    ]  # fmt: skip
    return replace(result, calls=calls)


def claim_calls(
    *,
    db: Database,
    gate: Gate,
    campaign_id: str,
    api_key_id: int,
    limit: int,
    lease_seconds: int,
    now: datetime,
    toolkit: Toolkit | None = None,
) -> ClaimResult:
    """Lease up to ``limit`` calls of a campaign to one dialler (see the module docstring).
    With ``toolkit``, stale scripts are rendered again first (:func:`live_scripts`).

    Raises:
        NotFound: no such campaign.
        Busy: the database stayed locked through every retry (nothing was written).
    """
    result = write_transaction(
        db,
        lambda session: _claim(
            session, gate=gate, campaign_id=campaign_id, api_key_id=api_key_id, limit=limit,
            lease_seconds=lease_seconds, now=now,
        ),
    )  # fmt: skip
    return live_scripts(result, db=db, toolkit=toolkit, now=now)


async def claim_calls_async(
    *,
    db: Database,
    gate: Gate,
    campaign_id: str,
    api_key_id: int,
    limit: int,
    lease_seconds: int,
    now: datetime,
    toolkit: Toolkit | None = None,
) -> ClaimResult:
    """:func:`claim_calls` for a coroutine (the service's event loop)."""
    result = await write_async(
        db,
        lambda session: _claim(
            session, gate=gate, campaign_id=campaign_id, api_key_id=api_key_id, limit=limit,
            lease_seconds=lease_seconds, now=now,
        ),
    )  # fmt: skip
    if toolkit is None or not result.calls:
        return result
    return await asyncio.get_running_loop().run_in_executor(
        None, lambda: live_scripts(result, db=db, toolkit=toolkit, now=now)
    )
