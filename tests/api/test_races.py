"""Races against a real uvicorn server with concurrent clients (threads), on a real database:
no call is handed out twice, the frequency cap holds across campaigns, and duplicate
outcomes have one effect."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from api import create_app
from scripts_engine.config import Settings
from tests.api.conftest import Clock, auth, create_keys, demo_records, signed
from tests.api.server import build_now, running

THREADS = 8


@pytest.fixture
def served(api_settings: Settings, clock: Clock) -> Iterator[tuple[FastAPI, str, dict[str, str]]]:
    app = create_app(api_settings, clock=clock, start_builder=False)
    with running(app) as base:
        keys = create_keys(api_settings)
        keys["dialler2"] = create_keys(api_settings)["dialler"]
        yield app, base, keys


def post(base: str, path: str, key: str, body: Any, **headers: str) -> httpx.Response:
    with httpx.Client(base_url=base, timeout=60) as c:
        if path.endswith("/outcome"):
            return c.post(path, **signed(key, body, **headers))
        return c.post(path, json=body, headers={**auth(key), **headers})


def campaign(app: FastAPI, base: str, admin: str, **body: Any) -> str:
    r = post(base, "/v1/campaigns", admin, {"name": "race", "min_hits": 0, **body})
    assert r.status_code == 202, r.text
    build_now(app)
    return str(r.json()["id"])


def claim_at_once(
    base: str, keys: dict[str, str], ids: list[str], *, claims: int, limit: int
) -> list[str]:
    """``claims`` claims from two diallers, spread over the campaigns ``ids``, from
    :data:`THREADS` threads at once: the customers of the calls handed out."""

    def claim(i: int) -> list[str]:
        key = keys["dialler"] if i % 2 else keys["dialler2"]
        r = post(base, f"/v1/campaigns/{ids[i % len(ids)]}/calls/claim", key, {"limit": limit})
        assert r.status_code == 200, r.text
        return [x["customer_id"] for x in r.json()["calls"]]

    with ThreadPoolExecutor(THREADS) as pool:
        return [c for part in pool.map(claim, range(claims)) for c in part]


def test_concurrent_claims_never_share_a_call(served: Any) -> None:
    app, base, keys = served
    assert post(base, "/v1/customers", keys["admin"], demo_records(30)).status_code == 200
    cid = campaign(app, base, keys["admin"])

    def drain(i: int) -> list[str]:
        key = keys["dialler"] if i % 2 else keys["dialler2"]
        got: list[str] = []
        with httpx.Client(base_url=base, timeout=60) as c:
            while True:
                r = c.post(f"/v1/campaigns/{cid}/calls/claim", json={"limit": 2},
                           headers=auth(key))  # fmt: skip
                assert r.status_code == 200, r.text
                if not r.json()["calls"]:
                    return got
                got += [x["id"] for x in r.json()["calls"]]

    with ThreadPoolExecutor(THREADS) as pool:
        claimed = [x for part in pool.map(drain, range(THREADS)) for x in part]
    twice = [k for k, n in Counter(claimed).items() if n > 1]
    consenting = sum(r.get("consent") == "true" for r in demo_records(30))
    assert not twice and len(claimed) == consenting


def test_frequency_cap_holds_across_campaigns_under_races(served: Any) -> None:
    app, base, keys = served
    assert post(base, "/v1/customers", keys["admin"], demo_records(5)).status_code == 200
    ids = [campaign(app, base, keys["admin"]) for _ in range(4)]  # the same 5 customers x 4
    customers = claim_at_once(base, keys, ids, claims=20, limit=5)
    # at most 1 attempt a day per customer, whichever campaign asked first
    expected = [r["customer_id"] for r in demo_records(5) if r.get("consent") == "true"]
    assert sorted(customers) == sorted(expected)


def test_one_number_is_called_once_a_day_under_races(served: Any) -> None:
    """Customers on file with one number (spelled differently) in four campaigns claimed at
    once: the number is called once, whichever customer and campaign got there first (on
    PostgreSQL the claim locks the number's other customers too)."""
    app, base, keys = served
    recs = [r for r in demo_records(30) if r.get("consent") == "true"][:8]
    for i, rec in enumerate(recs):  # two households of four
        rec["phone"] = ("+86 138 0000 1234", "13800001234", "0086 139 0000 5678",
                        "139-0000-5678")[i % 4]  # fmt: skip
    assert post(base, "/v1/customers", keys["admin"], recs).status_code == 200
    ids = [campaign(app, base, keys["admin"], customers=[r["customer_id"] for r in recs[i::2]])
           for i in range(2)]  # fmt: skip
    customers = claim_at_once(base, keys, ids * 2, claims=24, limit=1)
    numbers = Counter(next(r["phone"] for r in recs if r["customer_id"] == c)[-4:]
                      for c in customers)  # fmt: skip
    assert numbers == {"1234": 1, "5678": 1}, customers


def test_duplicate_outcomes_have_one_effect(served: Any) -> None:
    app, base, keys = served
    assert post(base, "/v1/customers", keys["admin"], demo_records(2)).status_code == 200
    cid = campaign(app, base, keys["admin"])
    call = post(base, f"/v1/campaigns/{cid}/calls/claim", keys["dialler"], {"limit": 1})
    call_id = call.json()["calls"][0]["id"]
    body = {"status": "connected", "converted": True, "intent_grade": "B", "duration_s": 31.0}

    def report(i: int) -> httpx.Response:
        return post(base, f"/v1/calls/{call_id}/outcome", keys["dialler"], body,
                    **{"Idempotency-Key": "same-key"})  # fmt: skip

    with ThreadPoolExecutor(THREADS) as pool:
        answers = list(pool.map(report, range(16)))
    ok = [a for a in answers if a.status_code == 201]
    assert all(a.status_code in (201, 409) for a in answers)
    assert ok and len({a.json()["id"] for a in ok}) == 1
    assert sum(a.headers.get("idempotent-replayed") != "true" for a in ok) == 1

    def other_key(i: int) -> int:
        r = post(base, f"/v1/calls/{call_id}/outcome", keys["dialler"], body,
                 **{"Idempotency-Key": f"k{i}"})  # fmt: skip
        return r.status_code

    with ThreadPoolExecutor(THREADS) as pool:
        assert set(pool.map(other_key, range(8))) == {409}
    with httpx.Client(base_url=base) as c:
        stats = c.get(f"/v1/stats/profiles?campaign_id={cid}", headers=auth(keys["qa"])).json()
    assert sum(p["outcomes"] for p in stats["profiles"]) == 1
