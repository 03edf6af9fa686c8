"""Claims: hand each ready call to exactly one dialler, for a while (a lease), if the gate
allows it.

One claim is one write transaction. It selects due calls of the campaign (ready ones, and
leased ones whose lease expired: an expired lease returns the call to the pool), locks them
(PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so concurrent claims take different calls; SQLite:
the transaction began ``IMMEDIATE``, so claims run one at a time), then locks the customers in
id order (so a claim in another campaign, or an opt-out, for the same customer waits), reads
their suppressions and attempts, and asks the :class:`~scripts_engine.gate.Gate`. Every
decision is stored with its rule. An allowed call is leased and an attempt is recorded in the
same transaction, which is what makes the frequency cap hold under races. A blocked call is
either closed (no consent, opted out) or put back with ``not_before`` set to when the block
lifts, so it is not re-examined before then.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from scripts_engine.db import repository as repo
from scripts_engine.db.errors import NotFound
from scripts_engine.db.models import Attempt, Call, GateDecision
from scripts_engine.db.session import Database, write_transaction
from scripts_engine.gate import Decision, Gate, Subject

#: Candidates examined per call asked for (blocked ones are skipped).
OVERSCAN = 4


@dataclass(frozen=True)
class ClaimedCall:
    call: Call
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
    stmt = select(Attempt.customer_id, Attempt.local_day).where(
        Attempt.customer_id.in_(customer_ids), Attempt.at > now - timedelta(days=8)
    )
    for cid, day in session.execute(stmt):
        out.setdefault(cid, []).append(date.fromisoformat(day))
    return out


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
    if repo.get_campaign(session=session, campaign_id=campaign_id) is None:
        raise NotFound(f"no campaign '{campaign_id}'")
    candidates = repo.claim_candidates(
        session=session, campaign_id=campaign_id, now=now, limit=limit * OVERSCAN + 8
    )
    ids = [c.customer_id for c in candidates]
    repo.lock_customers(session=session, customer_ids=ids)
    customers = repo.get_customers(session=session, customer_ids=ids)
    blocks = repo.active_blocks(session=session, customer_ids=ids, now=now)
    days = _attempt_days(session, ids, now)
    lease_until = now + timedelta(seconds=lease_seconds)
    claimed: list[ClaimedCall] = []
    decisions: list[Decision] = []
    for call in candidates:
        if len(claimed) >= limit:
            break
        cust = customers.get(call.customer_id)
        own = blocks.get(call.customer_id, [])
        refusals = [b.until for b in own if b.kind == "refusal" and b.until is not None]
        subject = Subject(
            customer_id=call.customer_id,
            consent=cust.consent if cust is not None else None,  # a deleted customer: no
            timezone=cust.timezone if cust is not None else None,
            opted_out=any(b.kind == "opt_out" for b in own),
            refused_until=max(refusals) if refusals else None,
            attempt_days=days.get(call.customer_id, []),
        )
        decision = gate.evaluate(subject, now)
        decisions.append(decision)
        session.add(
            GateDecision(
                call_id=call.id, customer_id=call.customer_id, at=now, allowed=decision.allowed,
                rule=decision.rule, checks=decision.checks_json(), ruleset=gate.rules.version,
                api_key_id=api_key_id,
            )
        )  # fmt: skip
        if decision.allowed:
            assert decision.local_day is not None and decision.window_end is not None
            call.status, call.leased_by, call.lease_until = "leased", api_key_id, lease_until
            call.claims += 1
            call.not_before = None
            session.add(
                Attempt(
                    customer_id=call.customer_id, call_id=call.id, at=now,
                    local_day=decision.local_day.isoformat(),
                )
            )  # fmt: skip
            days.setdefault(call.customer_id, []).append(decision.local_day)
            not_after = min(decision.window_end, lease_until)
            _ = call.script, call.record  # load the deferred columns the dialler gets
            claimed.append(ClaimedCall(call, decision, lease_until, not_after))
        else:
            call.lease_until = None  # leased_by stays: the last holder may still report
            call.status = "blocked" if decision.final else "ready"
            call.not_before = decision.retry_at
    session.flush()
    next_due = None
    if not claimed:
        next_due = repo.next_due(session=session, campaign_id=campaign_id)
    return ClaimResult(claimed, decisions, next_due)


def claim_calls(
    *,
    db: Database,
    gate: Gate,
    campaign_id: str,
    api_key_id: int,
    limit: int,
    lease_seconds: int,
    now: datetime,
) -> ClaimResult:
    """Lease up to ``limit`` calls of a campaign to one dialler (see the module docstring).

    Raises:
        NotFound: no such campaign.
        Busy: the database stayed locked through every retry (nothing was written).
    """
    return write_transaction(
        db,
        lambda session: _claim(
            session, gate=gate, campaign_id=campaign_id, api_key_id=api_key_id, limit=limit,
            lease_seconds=lease_seconds, now=now,
        ),
    )  # fmt: skip
