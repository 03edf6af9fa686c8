"""Leases, the gate at claim time over HTTP, the audit record, and personal data in logs."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import time
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.observability import JsonFormatter, mask
from api.schemas import OutcomeIn
from scripts_engine.claims import Claim
from scripts_engine.db import repository as repo
from scripts_engine.db.errors import Conflict, NotFound
from scripts_engine.db.models import ApiKey, Block, Call, Customer, GateDecision, Outcome
from scripts_engine.db.session import read_core_async, write_core, write_core_async
from scripts_engine.outcomes import Report
from scripts_engine.signing import sign
from tests.api.conftest import SECRETS, Clock, auth, demo_records, outcome
from tests.api.server import build_now


def setup_campaign(client: TestClient, keys: dict[str, str], n: int, **opts: Any) -> str:
    admin = auth(keys["admin"])
    recs = [r for r in demo_records(n + 5) if r.get("consent") == "true"][:n]
    assert client.post("/v1/customers", json=recs, headers=admin).json()["accepted"] == n
    r = client.post("/v1/campaigns", json={"name": "c", "min_hits": 0, **opts}, headers=admin)
    build_now(client.app)  # type: ignore[arg-type]
    return str(r.json()["id"])


def claim(client: TestClient, key: str, cid: str, **body: Any) -> list[dict[str, Any]]:
    r = client.post(f"/v1/campaigns/{cid}/calls/claim", json=body, headers=auth(key))
    assert r.status_code == 200, r.text
    return list(r.json()["calls"])


def test_expired_lease_returns_the_call(client: TestClient, keys: dict[str, str], clock: Clock):
    other = client.post("/v1/keys", json={"role": "dialler"}, headers=auth(keys["admin"]))
    d2 = other.json()["key"]
    SECRETS[d2] = other.json()["signing_secret"]
    cid = setup_campaign(client, keys, 1)
    (call,) = claim(client, keys["dialler"], cid, lease_seconds=60)
    assert claim(client, d2, cid) == []  # leased
    clock.advance(seconds=61)
    assert claim(client, d2, cid) == []  # back in the pool, but today's attempt was made
    clock.advance(days=1)
    (again,) = claim(client, d2, cid)
    assert again["id"] == call["id"]
    late = outcome(client, call["id"], keys["dialler"], {"status": "busy"}, "late")
    assert late.status_code == 409 and late.json()["code"] == "call_not_leased"


def test_outside_the_window_nothing_is_handed_out(
    client: TestClient, keys: dict[str, str], clock: Clock
) -> None:
    cid = setup_campaign(client, keys, 2)
    clock.advance(hours=12)  # 22:00 in Shanghai
    r = client.post(f"/v1/campaigns/{cid}/calls/claim", json={"limit": 5},
                    headers=auth(keys["dialler"]))  # fmt: skip
    assert r.json()["calls"] == [] and r.json()["next_due"].startswith("2026-05-13T01:00")
    clock.advance(hours=11)  # 09:00 next day
    calls = claim(client, keys["dialler"], cid, limit=5)
    assert len(calls) == 2
    assert all(c["window"]["not_after"] <= c["lease_until"] for c in calls)


def test_a_claim_with_no_call_says_when_to_ask_again_and_null_when_finished(
    client: TestClient, keys: dict[str, str], clock: Clock
) -> None:
    """``next_due`` tells a dialler left with no call whether to come back, and when: in 2 s
    while the campaign is being built, when the first lease out ends, when a call put back by
    the gate becomes due; null once every call has its outcome."""
    admin = auth(keys["admin"])
    recs = [r for r in demo_records(8) if r.get("consent") == "true"][:2]
    assert client.post("/v1/customers", json=recs, headers=admin).json()["accepted"] == 2
    cid = client.post("/v1/campaigns", json={"name": "c", "min_hits": 0}, headers=admin).json()[
        "id"
    ]

    def ask(key: str) -> Any:
        r = client.post(f"/v1/campaigns/{cid}/calls/claim", json={"limit": 5}, headers=auth(key))
        assert r.status_code == 200, r.text
        return r.json()

    def at(offset: timedelta) -> str:
        return (clock.now + offset).isoformat()

    assert ask(keys["dialler"]) == {"calls": [], "next_due": at(timedelta(seconds=2))}  # building
    build_now(client.app)  # type: ignore[arg-type]
    other = client.post("/v1/keys", json={"role": "dialler"}, headers=admin).json()["key"]
    calls = claim(client, keys["dialler"], cid, limit=5, lease_seconds=90)
    assert len(calls) == 2
    assert ask(other) == {"calls": [], "next_due": at(timedelta(seconds=90))}  # leases end
    state = client.get(f"/v1/campaigns/{cid}", headers=admin).json()["calls"]
    assert state == {"leased": 2}
    clock.advance(seconds=91)  # the leases ended: the campaign counts the calls as ready
    assert client.get(f"/v1/campaigns/{cid}", headers=admin).json()["calls"] == {"ready": 2}
    clock.advance(seconds=-91)
    assert (
        outcome(client, calls[0]["id"], keys["dialler"], {"status": "busy"}, "a").status_code == 201
    )
    clock.advance(seconds=91)  # the other call's lease ended: back, but its attempt was made
    got = ask(other)
    assert got["calls"] == [] and got["next_due"].startswith("2026-05-13T01:00")  # tomorrow
    late = outcome(client, calls[1]["id"], keys["dialler"], {"status": "no_answer"}, "b")
    assert late.status_code == 201  # the lease ended, but nobody else has the call: kept
    assert ask(other) == {"calls": [], "next_due": None}  # finished


def test_an_idempotency_key_answers_its_own_request_only(
    client: TestClient, keys: dict[str, str]
) -> None:
    """The same key with the same JSON (whatever its spacing and key order) replays the first
    answer; the same key for another call, or with another body, is a 409 that says so."""
    cid = setup_campaign(client, keys, 2)
    first, second = claim(client, keys["dialler"], cid, limit=2)
    body = {"status": "connected", "intent_grade": "B", "duration_s": 31.0}
    made = outcome(client, first["id"], keys["dialler"], body, "k")
    assert made.status_code == 201
    raw = b'{ "duration_s": 31.0,\n  "status": "connected", "intent_grade": "B" }'
    headers = {**auth(keys["dialler"]), "Content-Type": "application/json", "Idempotency-Key": "k",
               "X-Signature": sign(SECRETS[keys["dialler"]], int(time.time()), raw)}  # fmt: skip
    again = client.post(f"/v1/calls/{first['id']}/outcome", content=raw, headers=headers)
    assert again.status_code == 201 and again.json() == made.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    for call_id, other in ((second["id"], body), (first["id"], {**body, "intent_grade": "A"})):
        r = outcome(client, call_id, keys["dialler"], other, "k")
        assert r.status_code == 409 and r.json()["code"] == "idempotency_key_reused"
        assert "another call, or another body" in r.json()["message"]
    assert outcome(client, second["id"], keys["dialler"], body, "k2").status_code == 201


def test_a_campaign_counts_the_customers_min_hits_left_out(
    client: TestClient, keys: dict[str, str]
) -> None:
    cid = setup_campaign(client, keys, 6, min_hits=6)
    got = client.get(f"/v1/campaigns/{cid}", headers=auth(keys["qa"])).json()
    made = sum(got["calls"].values())
    assert got["progress"]["done"] == 6 and 0 < got["progress"]["filtered"] == 6 - made


def test_opt_out_blocks_the_next_claim_in_every_campaign(
    client: TestClient, keys: dict[str, str], clock: Clock
) -> None:
    cid = setup_campaign(client, keys, 1)
    r = client.post("/v1/campaigns", json={"name": "b", "min_hits": 0},
                    headers=auth(keys["admin"]))  # fmt: skip
    build_now(client.app)  # type: ignore[arg-type]
    (call,) = claim(client, keys["dialler"], cid)
    body = {"status": "connected", "opt_out": True}
    assert outcome(client, call["id"], keys["dialler"], body, "o1").status_code == 201
    clock.advance(days=3)
    assert claim(client, keys["dialler"], r.json()["id"]) == []
    rec = client.get(f"/v1/campaigns/{r.json()['id']}", headers=auth(keys["qa"])).json()
    assert rec["calls"] == {"blocked": 1}


def test_claims_run_together_are_dealt_calls_in_order_each_as_if_alone(
    client: TestClient, keys: dict[str, str], clock: Clock
) -> None:
    """Claims of one campaign queued together (the event loop's group commit runs them as
    one): each takes up to its limit, in call order, none twice; each call is leased to its
    own claim's key until its own claim's time plus its lease, and every decision is stored
    with that claim's key and time. A claim left with nothing hears when the next is due."""
    cid = setup_campaign(client, keys, 5)
    services = client.app.state.services  # type: ignore[attr-defined]
    with services.db.read() as session:
        key_ids = sorted(session.scalars(select(ApiKey.id)))[:3]
    asks = zip(key_ids, (2, 1, 4), (60, 120, 180), strict=True)
    claims = [
        Claim(services.gate, cid, key_id, limit, lease, clock.now + timedelta(seconds=at))
        for at, (key_id, limit, lease) in enumerate(asks)
    ]
    results = write_core(services.db, lambda conn: Claim.together(conn, claims))
    got = [[c.call_id for c in r.calls] for r in results]
    assert [len(ids) for ids in got] == [2, 1, 2]
    dealt = [i for ids in got for i in ids]
    assert dealt == sorted(set(dealt))
    assert all(r.next_due is None for r in results)
    with services.db.read() as session:
        leases = {c.id: (c.leased_by, c.lease_until) for c in session.scalars(select(Call))}
        decided = {(d.call_id, d.api_key_id, d.at) for d in session.scalars(select(GateDecision))}
    for claim, ids in zip(claims, got, strict=True):
        until = claim.now + timedelta(seconds=claim.lease_seconds)
        assert all(leases[i] == (claim.api_key_id, until) for i in ids)
        assert all((i, claim.api_key_id, claim.now) in decided for i in ids)
    late = [Claim(services.gate, cid, key_ids[0], 1, 60, clock.now) for _ in range(2)]
    assert [r.calls for r in write_core(services.db, lambda c: Claim.together(c, late))] == [[], []]

    async def unknown() -> list[Any]:  # through the loop's group commit: each hears it
        return await asyncio.gather(*(write_core_async(services.db, Claim(
            services.gate, "no-such", key_ids[0], 1, 60, clock.now)) for _ in range(3)),
            return_exceptions=True)  # fmt: skip

    assert all(isinstance(e, NotFound) for e in asyncio.run(unknown()))


def test_reports_stored_together_answer_each_as_alone(
    client: TestClient, keys: dict[str, str], clock: Clock
) -> None:
    """Outcome reports stored together (in the event loop's group commit on SQLite, as one
    transaction on PostgreSQL): new outcomes get their own ids, close their calls and add the suppressions they ask
    for; a report with a key already answered replays that answer; a report that must fail
    (a call leased to another key) fails alone, and so does a report whose twin (same key)
    is in the same batch: one effect, the twin replays it."""
    cid = setup_campaign(client, keys, 5)
    calls = [c["id"] for c in claim(client, keys["dialler"], cid, limit=5)]
    assert outcome(client, calls[0], keys["dialler"], {"status": "busy"}, "k0").status_code == 201
    services = client.app.state.services  # type: ignore[attr-defined]
    with services.db.read() as session:
        key_id = session.scalars(select(ApiKey.id).where(ApiKey.role == "dialler")).one()

    def report(call_id: str, key: str, body: dict[str, Any], by: int = key_id) -> Report:
        as_sent = OutcomeIn(**body).model_dump(mode="json")  # as the route passes it on
        return Report(call_id, by, key, as_sent, clock.now, 180)

    async def send(*reports: Report) -> list[Any]:
        return await asyncio.gather(*(write_core_async(services.db, r) for r in reports),
                                    return_exceptions=True)  # fmt: skip

    opted, plain = {"status": "connected", "opt_out": True}, {"status": "no_answer"}
    first = [report(calls[1], "k1", opted), report(calls[0], "k0", {"status": "busy"}),
             report(calls[2], "k2", plain)]  # fmt: skip
    got = write_core(services.db, lambda conn: Report.together(conn, first))  # as one
    assert [(a.status_code, a.replayed) for a in got] == [(201, False), (201, True), (201, False)]
    assert got[0].body["opt_out"] is True and got[2].body["call_id"] == calls[2]
    ids = [a.body["id"] for a in got]
    assert len(set(ids)) == 3
    # through the loop's group commit, which runs them one by one when the batch raises
    bad, twin_a, twin_b = asyncio.run(send(
        report(calls[3], "k3", plain, by=key_id + 100),  # not this key's lease
        report(calls[4], "k4", plain), report(calls[4], "k4", plain),
    ))  # fmt: skip
    assert isinstance(bad, Conflict) and bad.code == "call_not_leased"
    assert (twin_a.replayed, twin_b.replayed) == (False, True) and twin_a.body == twin_b.body
    with services.db.read() as session:
        stored = {o.call_id: o.id for o in session.scalars(select(Outcome))}
        status = {c.id: (c.status, c.customer_id) for c in session.scalars(select(Call))}
        blocked = [(b.customer_id, b.kind) for b in session.scalars(select(Block))]
    assert stored == {calls[0]: ids[1], calls[1]: ids[0], calls[2]: ids[2],
                      calls[4]: twin_a.body["id"]}  # fmt: skip
    assert [status[c][0] for c in calls] == ["done", "done", "done", "leased", "done"]
    assert blocked == [(status[calls[1]][1], "opt_out")]
    again = outcome(client, calls[1], keys["dialler"], opted, "k1")  # over HTTP: the same
    assert again.status_code == 201 and again.json() == got[0].body
    assert again.headers["Idempotent-Replayed"] == "true"


def test_render_reads_run_together_answer_each_as_alone(
    client: TestClient, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Render's reads of stored customers queued in one turn of the loop are one statement
    (in the thread pool on PostgreSQL, on the loop's thread on SQLite): each gets what it
    would get alone, a missing customer None, in the order asked."""
    setup_campaign(client, keys, 5)
    services = client.app.state.services  # type: ignore[attr-defined]
    db = services.db
    with db.read() as session:
        ids = list(session.scalars(select(Customer.customer_id).order_by(Customer.customer_id)))
    asked = [ids[2], "nobody", ids[0], ids[2], ids[4]]  # a repeat; 4 distinct ids, then 5

    def alone(customer_id: str) -> Any:
        with db.one_read() as conn:
            return repo.customer_for_render(conn=conn, customer_id=customer_id)

    wanted = [alone(c) for c in asked]
    assert wanted[1] is None and all(w is not None for i, w in enumerate(wanted) if i != 1)
    reads = [repo.CustomerForRender(c) for c in asked]
    for n in (1, 2, 3, 4, 5):  # the padded lists: 1, 2, 4, 4, 4 (distinct: 1, 2, 2, 3, 4)
        first = reads[:n]
        assert db.read_core(partial(repo.CustomerForRender.together, reads=first)) == wanted[:n]

    batches: list[int] = []
    together = repo.CustomerForRender.together

    def counted(conn: Any, batch: Any) -> Any:
        batches.append(len(batch))
        return together(conn, batch)

    monkeypatch.setattr(repo.CustomerForRender, "together", staticmethod(counted))

    async def concurrently() -> list[Any]:
        return await asyncio.gather(*(read_core_async(db, r) for r in reads))

    assert asyncio.run(concurrently()) == wanted
    assert batches == [5]


def test_no_personal_data_in_logs(client: TestClient, keys: dict[str, str]) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("scripts_engine")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    services = client.app.state.services  # type: ignore[attr-defined]
    real = services.toolkit.engine

    class Leaky:
        def __getattr__(self, name: str) -> Any:
            raise RuntimeError("customer 13812345678, id 110101199003071234, card 6222021234567890")

    try:
        cid = setup_campaign(client, keys, 3)
        calls = claim(client, keys["dialler"], cid, limit=3)
        assert calls and calls[0]["phone"]  # the dialler gets the number, the log does not
        services.toolkit.engine = Leaky()
        client.post("/v1/score", json={"customers": demo_records(1)}, headers=auth(keys["qa"]))
    finally:
        services.toolkit.engine = real
        logger.removeHandler(handler)
        logger.setLevel(level)
    text = stream.getvalue()
    assert '"route": "/v1/campaigns/{campaign_id}/calls/claim"' in text
    assert f'"pid": {os.getpid()}' in text  # which process (serve --workers N) wrote it
    assert "13812345678" not in text and "138****5678" in text
    assert not re.search(r"(?<!\d)1[3-9]\d{9}(?!\d)", text)
    assert not re.search(r"(?<!\d)\d{17}[\dXx](?!\d)", text)
    assert not re.search(r"(?<!\d)\d{16,19}(?!\d)", text)


def test_mask() -> None:
    assert mask("call 13812345678 now") == "call 138****5678 now"
    assert mask("+86 13812345678") == "+86 138****5678"
    assert mask("id 11010119900307123X") == "id 1****************X"
    assert mask("card 6222021234567890") == "card 622202******7890"
    assert mask("order 20260512") == "order 20260512"
