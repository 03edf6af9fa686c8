"""Claims: hand each ready call to exactly one dialler, for a while (a lease), if the gate
allows it.

One claim is one write transaction (on SQLite it may share a group commit with other writes,
in its own savepoint; claims of one campaign that arrive together run as one,
:meth:`Claim.together`, each still getting what it would alone). It selects due calls of
the campaign (ready ones, and leased ones whose lease expired: an expired lease returns the
call to the pool), locks them
(PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so concurrent claims take different calls; SQLite:
the transaction began ``IMMEDIATE``, so claims run one at a time), then locks the customers in
id order, with the other customers on file with their phone numbers (so a claim in another
campaign, or an opt-out, for the same customer or number waits), reads their suppressions and
attempts and their numbers' (the do-not-call list and the caps count numbers too, see
:mod:`scripts_engine.gate`), and asks the :class:`~scripts_engine.gate.Gate`. Every
decision is stored with its rule. An allowed call is leased and an attempt is recorded in the
same transaction, which is what makes the frequency cap hold under races. A blocked call is
either closed (no consent, opted out) or put back with ``not_before`` set to when the block
lifts, so it is not re-examined before then. When blocked candidates leave the claim short,
it looks again (a few rounds). The claim never parses or re-encodes a script: what the dialler
gets was encoded once, at build time (``calls.payload``), and is spliced into the answer.
Statements are SQLAlchemy Core, built once in :mod:`scripts_engine.db.repository` and run on
the transaction's Connection (:mod:`scripts_engine.db.prepared`): a round reads candidates with
their payloads (one statement), the customers, their suppressions and recent attempts (two
statements), then leases the allowed calls, puts the blocked ones back and stores the
decisions and attempts (:func:`~scripts_engine.db.repository.claim_writes`); a claim that
hands out nothing checks that the campaign exists and says when to ask again (``next_due``:
None only when nothing is left to hand out, see :func:`_next_due`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from scripts_engine.audio import get_format
from scripts_engine.campaigns import Toolkit, call_payload, renderer_live_set
from scripts_engine.db import repository as repo
from scripts_engine.db.errors import NotFound
from scripts_engine.db.session import Database, write_core, write_core_async
from scripts_engine.filters import mask_phone
from scripts_engine.gate import Decision, Gate, Subject
from scripts_engine.refresh import renew_leased

log = logging.getLogger("scripts_engine.claims")
#: Extra candidates examined per round (blocked ones are skipped), and rounds per claim.
OVERSCAN = 2
ROUNDS = 8
#: how soon a claim that found nothing while its campaign is being built should ask again
BUILDING_RETRY = timedelta(seconds=2)


@dataclass(frozen=True)
class ClaimedCall:
    """A call leased by this claim, with what the dialler gets (``payload``: JSON of group,
    profile and script, made at build time, as UTF-8 bytes)."""

    call_id: str
    campaign_id: str
    customer_id: str
    phone: str | None
    payload: bytes
    audio: dict[str, str]  # format -> "sha256.ext"
    decision: Decision
    lease_until: datetime
    not_after: datetime
    #: digest of the template and styles versions the script was rendered with
    live_set: str | None = None
    #: the number the gate judged, in E.164 form (``+8613800001234``)
    phone_e164: str | None = None


@dataclass(frozen=True)
class ClaimResult:
    calls: list[ClaimedCall]
    decisions: list[Decision]
    #: with no calls: when to ask again; None when nothing is left to hand out
    next_due: datetime | None


def _audio_refs(audio: dict[str, Any] | None) -> dict[str, str]:
    return {fmt: f"{sha}.{get_format(fmt).ext.lstrip('.')}" for fmt, sha in (audio or {}).items()}


#: what one customer or one number has on file: facts by (table, row id)
_Facts = dict[tuple[str, int], repo.Fact]


def _subject(customer_id: str, person: tuple[bool | None, str | None, str | None, str | None],
             facts: _Facts) -> Subject:  # fmt: skip
    """The gate's view of a customer: its facts and its number's (``facts``), the number's
    other customers' marked as such."""
    consent, tz, phone, _number = person
    refusals = [f[4] for f in facts.values() if f[3] == "refusal" and f[4] is not None]
    listed = [f for f in facts.values() if f[3] == "dnc"]
    others = [f for f in facts.values() if f[1] != customer_id]
    # the customer's own attempts by their local days; other customers' on the number by
    # their times (the gate counts them on this customer's local day: customers on one
    # number may live in different time zones)
    days = [date.fromisoformat(f[5]) for f in facts.values()
            if f[3] == "attempt" and f[5] and f[1] == customer_id]  # fmt: skip
    return Subject(
        customer_id=customer_id,
        consent=consent,  # a deleted customer: None, so no
        timezone=tz,
        opted_out=any(f[3] == "opt_out" for f in facts.values()),
        refused_until=max(refusals) if refusals else None,
        attempt_days=days,
        # a customer no longer on file (consent None) is blocked by its consent, not this
        has_number=bool(phone and phone.strip()) or consent is None,
        dnc_listed=bool(listed),
        dnc_until=_last(f[4] for f in listed),
        number_blocks=[(f[3], f[1] or "") for f in others if f[3] in ("opt_out", "refusal")],
        number_attempts=[(f[4], f[1] or "") for f in others if f[3] == "attempt" and f[4]],
        number_shown=mask_phone(phone) if phone else "",
    )


def _last(ends: Iterable[datetime | None]) -> datetime | None:
    """When the last of some entries ends: None when one has no end (or there are none)."""
    out: datetime | None = None
    for end in ends:
        if end is None:
            return None
        out = end if out is None else max(out, end)
    return out


class _Ledger:
    """A claim round's facts, by customer and by number: what the gate judges a candidate
    on (its own and its number's), and where a lease the round makes counts (for the
    candidates after it: the same customer, or another on the same number)."""

    def __init__(self, facts: list[repo.Fact]):
        self.by_customer: dict[str, _Facts] = {}
        self.by_number: dict[str, _Facts] = {}
        self._new = 0
        for fact in facts:
            self._add(fact)

    def _add(self, fact: repo.Fact) -> None:
        key, customer_id, number = fact[0], fact[1], fact[2]
        if customer_id is not None:  # None: a do-not-call list entry, the number's own
            self.by_customer.setdefault(customer_id, {})[key] = fact
        if number is not None:
            self.by_number.setdefault(number, {})[key] = fact

    def of(self, customer_id: str, number: str | None) -> _Facts:
        own = self.by_customer.get(customer_id, {})
        if number is None or number not in self.by_number:
            return own
        return own | self.by_number[number]

    def attempt(self, customer_id: str, number: str | None, at: datetime, day: str) -> None:
        self._new += 1
        self._add((("new", self._new), customer_id, number, "attempt", at, day))


@dataclass(frozen=True)
class Claim:
    """One dialler's claim, as a write for :func:`~scripts_engine.db.session.write_core`: called
    with a Connection it claims alone. Claims of one campaign queued at the same time may run
    as one (:meth:`together`, which :class:`~scripts_engine.db.session.LoopWriter` and
    :class:`~scripts_engine.db.session.LoopBatcher` call for the writes with the same
    :attr:`batch_key`)."""

    gate: Gate
    campaign_id: str
    api_key_id: int
    limit: int
    lease_seconds: int
    now: datetime

    @property
    def batch_key(self) -> tuple[str, str, int]:
        return ("claim", self.campaign_id, id(self.gate))

    def __call__(self, conn: Connection) -> ClaimResult:
        return self.together(conn, [self])[0]

    @staticmethod
    def together(conn: Connection, claims: Sequence[Claim]) -> list[ClaimResult]:
        """Several claims of one campaign, through one gate, as one: one scan for the
        candidates of all, one read of their customers, one write of each kind a round. The
        candidates are dealt in order, each claim taking its ``limit`` before the next; each
        is judged at its own claim's time, and an allowed call counts for the frequency cap
        of the candidates after it, whichever claim they go to. A claim that raises (no such
        campaign) raises for all: the caller runs them one by one then."""
        return _claim(conn, claims)


def _claim(conn: Connection, claims: Sequence[Claim]) -> list[ClaimResult]:
    gate, campaign_id = claims[0].gate, claims[0].campaign_id
    # due for one claim's time is due for all of them (the earliest): the scan's time, and the
    # suppressions' and attempts' (read a little wider; the gate judges them at each time)
    now = min(c.now for c in claims)
    until = [c.now + timedelta(seconds=c.lease_seconds) for c in claims]
    leased: list[list[_Leased]] = [[] for _ in claims]
    decisions: list[list[Decision]] = [[] for _ in claims]
    seen: set[str] = set()
    more = False  # candidates may be left that no round got to
    for _round in range(ROUNDS):
        want = sum(max(c.limit - len(got), 0) for c, got in zip(claims, leased, strict=True))
        if want <= 0:
            break
        candidates = [
            c for c in repo.claim_candidates(
                conn=conn, campaign_id=campaign_id, now=now, limit=want + OVERSCAN
            ) if c[0] not in seen
        ]  # fmt: skip
        if not candidates:
            break
        people, facts = repo.claim_people(
            conn=conn, customer_ids=[c[1] for c in candidates], now=now,
            since=now - timedelta(days=8),
        )  # fmt: skip
        ledger = _Ledger(facts)
        decision_rows: list[tuple[str, str, bool, str, list[Any], datetime, int]] = []
        attempt_rows: list[tuple[str, str, str, datetime, str | None]] = []
        lease_rows: list[tuple[str, int, datetime]] = []
        put_back: list[tuple[str, str, datetime | None]] = []
        at = 0  # the claim the next allowed call goes to
        for call_id, customer_id, _status, payload, audio, live_set in candidates:
            while at < len(claims) and len(leased[at]) >= claims[at].limit:
                at += 1
            if at == len(claims):
                break
            seen.add(call_id)
            claim = claims[at]
            # a customer no longer on file: no consent (None), so blocked
            person: tuple[bool | None, str | None, str | None, str | None] = people.get(
                customer_id, (None, None, None, None)
            )
            _consent, _tz, phone, number = person
            subject = _subject(customer_id, person, ledger.of(customer_id, number))
            decision = gate.evaluate(subject, claim.now)
            decisions[at].append(decision)
            decision_rows.append((call_id, customer_id, decision.allowed, decision.rule,
                                  decision.checks_json(), claim.now, claim.api_key_id))  # fmt: skip
            if decision.allowed:
                assert decision.local_day is not None
                day = decision.local_day.isoformat()
                lease_rows.append((call_id, claim.api_key_id, until[at]))
                attempt_rows.append((customer_id, call_id, day, claim.now, number))
                # the next candidates of this customer, or of this number, count it
                ledger.attempt(customer_id, number, claim.now, day)
                leased[at].append(
                    (call_id, customer_id, decision, phone, payload, audio, live_set, number)
                )
            else:
                put_back.append(
                    (call_id, "blocked" if decision.final else "ready", decision.retry_at)
                )
        repo.claim_writes(conn=conn, ruleset=gate.rules.version, leases=lease_rows,
                          put_back=put_back, decisions=decision_rows, attempts=attempt_rows)  # fmt: skip
    else:
        more = True
    old = repo.old_call_documents(
        conn=conn, call_ids=[c[0] for got in leased for c in got if c[4] is None]
    )
    next_due = None
    if not all(leased):
        next_due = _next_due(conn, campaign_id, now, more=more)
    return [
        ClaimResult([_claimed(c, campaign_id, until[at], old) for c in leased[at]],
                    decisions[at], None if leased[at] else next_due)
        for at in range(len(claims))
    ]  # fmt: skip


def _next_due(conn: Connection, campaign_id: str, now: datetime, *, more: bool) -> datetime | None:
    """When a claim left with no call should ask again: now, when candidates are left that
    its rounds did not get to; in :data:`BUILDING_RETRY` while the campaign is being built
    (the next chunk's calls come in at any time); else when the first call put back by the gate
    becomes due or the first lease out ends. None: nothing is left to hand out.

    Raises:
        NotFound: no such campaign.
    """
    status = repo.campaign_status(conn=conn, campaign_id=campaign_id)
    if status is None:
        raise NotFound(f"no campaign '{campaign_id}'")
    if more:
        return now
    due = repo.next_due(conn=conn, campaign_id=campaign_id)
    if status == "building":
        return min(due, now + BUILDING_RETRY) if due is not None else now + BUILDING_RETRY
    return due


#: a call a claim leased: (call id, customer id, decision, phone, payload, audio, live set,
#: the number judged)
_Leased = tuple[str, str, Decision, str | None, bytes | None, Any, str | None, str | None]


def _claimed(
    leased: _Leased,
    campaign_id: str,
    lease_until: datetime,
    old: dict[str, tuple[dict[str, Any], dict[str, Any]]],
) -> ClaimedCall:
    call_id, customer_id, decision, phone, payload, audio, live_set, number = leased
    if payload is None:  # built before payloads were made at build time
        script, record = old[call_id]
        payload = call_payload(str(record.get("group")), script, record).encode()
    assert decision.window_end is not None
    return ClaimedCall(
        call_id=call_id, campaign_id=campaign_id, customer_id=customer_id, phone=phone,
        payload=payload, audio=_audio_refs(audio), decision=decision, lease_until=lease_until,
        not_after=min(decision.window_end, lease_until), live_set=live_set, phone_e164=number,
    )  # fmt: skip


def live_scripts(
    result: ClaimResult, *, db: Database, toolkit: Toolkit | None, now: datetime
) -> ClaimResult:
    """The claim's calls, each with a script of the live template and styles versions: a call
    rendered against a version no longer live is rendered again before it is handed out
    (:func:`scripts_engine.refresh.renew_leased`). The claim read each call's ``live_set``
    with it, so when nothing changed this costs no database read at all.
    Runs after the lease is committed, outside the claim's transaction. If that fails, the
    calls are handed out with the approved scripts they were built with (which their records
    still name): the leases and attempts are already written."""
    if toolkit is None or not result.calls:
        return result
    try:
        digest = renderer_live_set(toolkit.renderer, reload=True)
        leases = {c.call_id: c.lease_until for c in result.calls if c.live_set != digest}
        renewed = renew_leased(db=db, toolkit=toolkit, now=now, leases=leases) if leases else {}
    except Exception:  # noqa: BLE001 - the claim stands; see the docstring
        log.exception("claim-time refresh failed; handing out the scripts as built")
        return result
    if not renewed:
        return result
    calls = [
        replace(c, payload=renewed[c.call_id]["payload"].encode(),
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
    result = write_core(db, Claim(gate, campaign_id, api_key_id, limit, lease_seconds, now))
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
    result = await write_core_async(
        db, Claim(gate, campaign_id, api_key_id, limit, lease_seconds, now)
    )
    if toolkit is None or not result.calls:
        return result
    renderer = toolkit.renderer
    if not renderer.refresh_due():
        digest = renderer_live_set(renderer)
        if all(c.live_set == digest for c in result.calls):
            return result  # nothing changed since the last look: no hand-off to a thread
    return await asyncio.get_running_loop().run_in_executor(
        None, lambda: live_scripts(result, db=db, toolkit=toolkit, now=now)
    )
