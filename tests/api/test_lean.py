"""The dialler's hot routes answer through the lean handler (api/lean.py) exactly as through
FastAPI's own: the same status and body for good and bad input, in the same order of checks."""

from __future__ import annotations

import json
from typing import Any

import fastapi.routing
import pytest
from fastapi.testclient import TestClient

from api.deps import get_services
from tests.api.conftest import auth, signed
from tests.api.test_calls import setup_campaign


def cases(keys: dict[str, str], cid: str) -> list[tuple[str, str, dict[str, Any]]]:
    """``(method, path, request kwargs)``: every check these routes make, good and bad."""
    d, w, qa = auth(keys["dialler"]), auth(keys["writer"]), auth(keys["qa"])
    js = {"Content-Type": "application/json"}
    claim = f"/v1/campaigns/{cid}/calls/claim"
    good = {"status": "connected", "intent_grade": "C", "duration_s": 40}
    return [
        ("POST", claim, {"content": b'{"limit": 1', "headers": {**d, **js}}),  # bad JSON
        ("POST", claim, {"content": b'{"limit": 1', "headers": js}),  # bad JSON, no key
        ("POST", claim, {"content": b'{"limit": "\xff"}', "headers": {**d, **js}}),  # not UTF-8
        ("POST", claim, {"content": b"[" * 5000, "headers": {**d, **js}}),  # nested too deeply
        ("POST", claim, {"json": {"limit": 1}}),  # no key
        ("POST", claim + "?api_key=se_x", {"json": {"limit": 1}, "headers": d}),  # key in URL
        ("POST", claim, {"json": {"limit": 1}, "headers": qa}),  # wrong role
        ("POST", claim, {"json": {"limit": 0}, "headers": d}),  # out of range
        ("POST", claim, {"json": {"limit": "x", "extra": 1}, "headers": d}),  # two errors
        ("POST", claim, {"json": [1], "headers": d}),  # not an object
        ("POST", claim, {"headers": d}),  # no body
        ("POST", claim, {"content": b'{"limit": 1}', "headers": {**d, "Content-Type":
                                                                  "text/plain"}}),  # fmt: skip
        ("POST", claim, {"content": b'{"limit": 1}',
                         "headers": {**d, "Content-Type": "application/vnd.x+json"}}),  # fmt: skip
        ("POST", "/v1/campaigns/nope/calls/claim", {"json": {"limit": 1}, "headers": d}),
        ("POST", "/v1/calls/nope/outcome", {"json": good, "headers": d}),  # unsigned
        ("POST", "/v1/calls/nope/outcome", signed(keys["dialler"], good)),  # no idem key
        ("POST", "/v1/calls/nope/outcome",
         signed(keys["dialler"], good, **{"Idempotency-Key": "k" * 256})),  # too long
        ("POST", "/v1/calls/nope/outcome",
         signed(keys["dialler"], {**good, "status": "maybe"}, **{"Idempotency-Key": "k1"})),
        ("POST", "/v1/calls/nope/outcome",
         signed(keys["dialler"], good, **{"Idempotency-Key": "k2"})),  # no such call
        ("POST", "/v1/scripts/render", {"json": {"customer_id": "nope"}, "headers": w}),
        ("POST", "/v1/scripts/render", {"json": {}, "headers": w}),
        ("POST", "/v1/scripts/render", {"json": {"customer_id": "x"}, "headers": d}),
    ]  # fmt: skip


def answer(client: TestClient, method: str, path: str, kwargs: dict[str, Any]) -> Any:
    """Status and body (an error's whole body but its request id; a claim's keys: each run
    leases another call)."""
    r = client.request(method, path, **kwargs)
    body = r.json()
    body.pop("request_id", None)
    if r.status_code == 200 and "calls" in body:
        body = {"calls": [sorted(c) for c in body["calls"]], "next_due": body["next_due"]}
    return r.status_code, json.dumps(body, sort_keys=True)


def test_lean_and_standard_handlers_answer_alike(
    client: TestClient, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = setup_campaign(client, keys, 4)
    solved: list[int] = []
    standard = fastapi.routing.solve_dependencies

    async def counting(**kwargs: Any) -> Any:
        solved.append(1)
        return await standard(**kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    lean = [answer(client, m, p, kw) for m, p, kw in cases(keys, cid)]
    assert not solved  # every one of them went through the lean handler
    # an override (of a dependency these routes do not use) turns the lean handler off
    client.app.dependency_overrides[get_services] = get_services  # type: ignore[attr-defined]
    try:
        full = [answer(client, m, p, kw) for m, p, kw in cases(keys, cid)]
    finally:
        client.app.dependency_overrides.clear()  # type: ignore[attr-defined]
    assert solved
    assert {s for s, _ in lean} >= {200, 400, 401, 403, 404, 422}
    assert 500 not in {s for s, _ in lean}
    for case, a, b in zip(cases(keys, cid), lean, full, strict=True):
        assert a == b, (case[1], a, b)
