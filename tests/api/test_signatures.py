"""Outcome signatures (COMPLIANCE.md 1.4 and 7.5): missing, wrong, stale or body-tampered is a
401 that writes nothing; a valid replay has no second effect; rotation keeps the old secret
working for its overlap, then not; `optional` checks only signed reports."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from scripts_engine.signing import sign
from tests.api.conftest import SECRETS, Clock, auth, make_client, outcome, signed
from tests.api.test_calls import claim, setup_campaign

BODY = {"status": "connected", "converted": True, "intent_grade": "B"}


def call_record(client: TestClient, keys: dict[str, str], call_id: str) -> dict[str, Any]:
    return dict(client.get(f"/v1/calls/{call_id}", headers=auth(keys["qa"])).json())


def test_bad_signatures_are_401_and_write_nothing(client: TestClient, keys: dict[str, str]) -> None:
    d = keys["dialler"]
    (call,) = claim(client, d, setup_campaign(client, keys, 1))
    url = f"/v1/calls/{call['id']}/outcome"
    good = signed(d, BODY, **{"Idempotency-Key": "s1"})
    raw, headers = good["content"], good["headers"]
    now = int(time.time())
    cases = {
        "missing": {k: v for k, v in headers.items() if k != "X-Signature"},
        "garbled": {**headers, "X-Signature": "nonsense"},
        "wrong secret": {**headers, "X-Signature": sign("whsec_other", now, raw)},
        "stale": {**headers, "X-Signature": sign(SECRETS[d], now - 301, raw)},
        # 360, not 301: the server checks a few seconds after `now` on a slow machine, and a
        # stamp 301 s ahead would then be inside the tolerance
        "future": {**headers, "X-Signature": sign(SECRETS[d], now + 360, raw)},
    }
    for name, h in cases.items():
        r = client.post(url, content=raw, headers=h)
        assert r.status_code == 401 and r.json()["code"] == "bad_signature", name
    tampered = raw.replace(b'"B"', b'"A"')
    r = client.post(url, content=tampered, headers=headers)
    assert r.status_code == 401 and r.json()["code"] == "bad_signature"
    assert call_record(client, keys, call["id"])["outcome"] is None
    r = client.post(url, content=raw, headers=headers)  # the genuine report
    assert r.status_code == 201
    replay = client.post(url, content=raw, headers=headers)  # captured and sent again
    assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == r.json()


def test_rotation_overlap_then_expiry(client: TestClient, keys: dict[str, str]) -> None:
    d, admin = keys["dialler"], auth(keys["admin"])
    old = SECRETS[d]
    prefix = d.split("_")[1]
    r = client.post(f"/v1/keys/{prefix}/signing-secret", headers=admin)
    assert r.status_code == 201
    new = r.json()["signing_secret"]
    assert new != old and new.startswith("whsec_")
    cid = setup_campaign(client, keys, 2)
    first, second = claim(client, d, cid, limit=2)
    assert outcome(client, first["id"], d, BODY, "r1").status_code == 201  # old: still good
    SECRETS[d] = new
    assert outcome(client, second["id"], d, BODY, "r2").status_code == 201  # new: good
    # a second rotation with no overlap retires both earlier secrets at once
    services = client.app.state.services  # type: ignore[attr-defined]
    services.settings.signing_rotation_hours = 0.0
    newest = client.post(f"/v1/keys/{prefix}/signing-secret", headers=admin).json()
    r = client.post(f"/v1/calls/{second['id']}/outcome", **signed(d, {"status": "busy"},
                    **{"Idempotency-Key": "r3"}))  # fmt: skip
    assert r.status_code == 401
    SECRETS[d] = newest["signing_secret"]
    r = outcome(client, second["id"], d, {"status": "busy"}, "r3")
    assert r.status_code == 409 and r.json()["code"] == "outcome_exists"  # signed, then judged
    other = client.post(f"/v1/keys/{keys['qa'].split('_')[1]}/signing-secret", headers=admin)
    assert other.status_code == 422


def test_optional_signatures(api_settings: Any, clock: Clock) -> None:
    settings = api_settings.model_copy(update={"outcome_signatures": "optional"})
    with make_client(settings, clock, start_builder=False) as c:
        from tests.api.conftest import create_keys

        keys = create_keys(settings)
        d = keys["dialler"]
        first, second = claim(c, d, setup_campaign(c, keys, 2), limit=2)
        h = {**auth(d), "Idempotency-Key": "u1"}
        assert c.post(f"/v1/calls/{first['id']}/outcome", json=BODY, headers=h).status_code == 201
        bad = signed(d, BODY, **{"Idempotency-Key": "u2"})
        bad["headers"]["X-Signature"] = sign("whsec_other", int(time.time()), bad["content"])
        r = c.post(f"/v1/calls/{second['id']}/outcome", **bad)
        assert r.status_code == 401  # a signature that is there must be right
