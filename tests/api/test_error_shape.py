"""One error shape everywhere: validation (with the field path), 401/403/404/405/409/415/422,
engine errors and crashes (no stack trace reaches a client); a failed request writes nothing."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from scripts_engine.signing import sign
from tests.api.conftest import SECRETS, auth, demo_records, outcome, signed

SHAPE = {"ok", "status", "code", "message", "errors", "request_id"}


def check(r: Any, status: int, code: str | None = None) -> dict[str, Any]:
    body = r.json()
    assert r.status_code == status, r.text
    assert set(body) == SHAPE and body["ok"] is False and body["status"] == status
    assert body["request_id"] == r.headers["x-request-id"]
    if code:
        assert body["code"] == code
    assert "Traceback" not in r.text and 'File "' not in r.text
    return dict(body)


def test_router_errors(client: TestClient) -> None:
    check(client.get("/v1/nowhere"), 404, "not_found")
    check(client.put("/healthz"), 405, "method_not_allowed")
    check(client.get("/v1/campaigns"), 401, "unauthorized")


def test_validation_errors_name_the_field(client: TestClient, keys: dict[str, str]) -> None:
    h = auth(keys["admin"])
    body = check(client.post("/v1/campaigns", json={"name": "x", "min_hits": 9}, headers=h), 422)
    assert body["errors"][0]["field"] == "body.min_hits"
    body = check(
        client.post("/v1/campaigns", json={"name": "x", "status": "ready"}, headers=h), 422
    )
    assert body["errors"][0]["field"] == "body.status"  # mass assignment refused
    body = check(client.post("/v1/score", json={"customers": [{"age": [1]}]}, headers=h), 422)
    assert body["errors"] == [{"field": "body.customers[0].age", "row": None,
                               "error": "expected a string, a number, true/false or null, "
                                        "got a list"}]  # fmt: skip
    check(client.post("/v1/score", content=b"{not json", headers=h), 422, "validation_error")
    for customers, what in (([], "the list is empty"), ("all", "no customers are stored")):
        body = check(client.post("/v1/campaigns", json={"name": "x", "customers": customers},
                                 headers=h), 422)  # fmt: skip
        assert body["errors"] == [{"field": "body.customers", "row": None,
                                   "error": f'{what}: give customer ids, or "all"'}]  # fmt: skip
    for customers in (None, 5, "some"):  # one error at the field, not one per union member
        body = check(client.post("/v1/campaigns", json={"name": "x", "customers": customers},
                                 headers=h), 422)  # fmt: skip
        assert body["errors"] == [{"field": "body.customers", "row": None,
                                   "error": 'expected a list of customer ids, or "all"'}]  # fmt: skip
    body = check(client.post("/v1/campaigns", json={"name": "x", "customers": ["a", ""]},
                             headers=h), 422)  # fmt: skip
    assert [e["field"] for e in body["errors"]] == ["body.customers[1]"]
    for limit in (True, "5", 2.5):  # a number of calls is a JSON integer, not true (1) or "5"
        body = check(client.post("/v1/campaigns/any/calls/claim", json={"limit": limit},
                                 headers=auth(keys["dialler"])), 422)  # fmt: skip
        assert body["errors"] == [{"field": "body.limit", "row": None,
                                   "error": "Input should be a valid integer"}]  # fmt: skip
    body = check(client.post("/v1/campaigns", json={"name": "x", "customers": ["ghost"]},
                             headers=h), 422)  # fmt: skip
    assert body["errors"] == [{"field": "body.customers[0]", "error": "no customer 'ghost'",
                               "row": None}]  # fmt: skip


def test_a_body_that_is_not_json_says_what_and_where(
    client: TestClient, keys: dict[str, str]
) -> None:
    """A JSON syntax error names its line and column; a body that is not UTF-8, or nests too
    deeply for the decoder, is a 400 that says so (it was a 500 on the dialler's routes). The
    same on a lean route (the outcome) and on FastAPI's own (the customers' upsert)."""

    def post(path: str, raw: bytes) -> Any:
        if path == "/v1/customers":
            headers = auth(keys["admin"])
        else:  # signed as a dialler would sign it
            headers = {**auth(keys["dialler"]), "Idempotency-Key": "k1",
                       "X-Signature": sign(SECRETS[keys["dialler"]], int(time.time()), raw)}  # fmt: skip
        return client.post(path, content=raw, headers={**headers, **js})

    js = {"Content-Type": "application/json"}
    for path in ("/v1/customers", "/v1/calls/K-x/outcome"):
        body = check(post(path, b'[\n  {"customer_id": 1,}\n]'), 422)
        assert body["errors"] == [{"field": "body", "row": None, "error":
                                   "not valid JSON: Expecting property name enclosed in double "
                                   "quotes at line 2, column 21 (character 22)"}], path  # fmt: skip
        body = check(post(path, b'{"notes": "caf\xe9"}'), 400)
        assert body["errors"] == [{"field": "body", "row": None, "error":
                                   "not UTF-8: byte 0xe9 at offset 14 (JSON must be UTF-8)"}], path  # fmt: skip
        body = check(post(path, b"[" * 5000), 400)
        assert body["errors"] == [{"field": "body", "row": None,
                                   "error": "JSON nested too deeply"}], path  # fmt: skip


def test_render_errors(client: TestClient, keys: dict[str, str]) -> None:
    h = auth(keys["writer"])
    check(client.post("/v1/scripts/render", json={}, headers=h), 422)
    check(client.post("/v1/scripts/render", json={"customer_id": "ghost"}, headers=h), 404)
    bad = {"customer": {"customer_id": "c1", "age": "old"}}
    body = check(client.post("/v1/scripts/render", json=bad, headers=h), 422)
    assert body["errors"][0]["field"] == "body.customer.age"
    rec = demo_records(1)[0]
    body = check(client.post("/v1/scripts/render", json={"customer": rec, "profile_id": "P-ZZ"},
                             headers=h), 422)  # fmt: skip
    assert body["errors"][0]["field"] == "body.profile_id"


def test_outcome_errors_and_nothing_written(client: TestClient, keys: dict[str, str]) -> None:
    d = keys["dialler"]
    check(client.post("/v1/calls/K-x/outcome", **signed(d, {"status": "connected"})), 400,
          "idempotency_key_missing")  # fmt: skip
    check(outcome(client, "K-x", d, {"status": "connected"}, "k1"), 404)
    check(outcome(client, "K-x", d, {"status": "maybe"}, "k1"), 422)
    body = check(outcome(client, "K-x", d, {"status": "failed", "converted": True,
                                            "intent_grade": "A", "opt_out": True}, "k1"), 422)  # fmt: skip
    assert body["errors"] == [
        {"field": f"body.{f}", "row": None,
         "error": f"{f} needs status 'connected' (this call was 'failed')"}
        for f in ("converted", "intent_grade")
    ]  # fmt: skip
    body = check(client.post("/v1/calls/K-x/outcome", **signed(
        d, {"status": "connected", "duration_s": float("nan")}, **{"Idempotency-Key": "k1"})), 422)  # fmt: skip
    assert body["errors"][0]["field"] == "body.duration_s"
    assert "finite" in body["errors"][0]["error"]


def test_customer_rows_rejected_change_nothing(client: TestClient, keys: dict[str, str]) -> None:
    h = auth(keys["admin"])
    good, bad = demo_records(2)
    bad = {**bad, "age": "not a number"}
    r = client.post("/v1/customers", json=[good, bad], headers=h)
    assert r.status_code == 200
    assert r.json()["accepted"] == 1
    assert r.json()["rejected"] == [{"row": 2, "field": "age", "error": "expected a number, got "
                                     "'not a number'"}]  # fmt: skip
    q = auth(keys["qa"])
    assert client.get(f"/v1/customers/{good['customer_id']}", headers=q).status_code == 200
    check(client.get(f"/v1/customers/{bad['customer_id']}", headers=q), 404)
    # a value of the wrong JSON type rejects its row only, too (it was a 422 for the request)
    r = client.post("/v1/customers", json=[{"customer_id": "G-1", "consent": True},
                                           {"customer_id": "G-2", "age": [1]}], headers=h)  # fmt: skip
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    assert r.json()["rejected"] == [{"row": 2, "field": "age", "error":
                                     "expected a string, a number, true/false or null, got a list"}]  # fmt: skip
    assert client.get("/v1/customers/G-1", headers=q).status_code == 200


def test_import_csv_and_parquet(client: TestClient, keys: dict[str, str], tmp_path: Any) -> None:
    import pandas as pd

    h = auth(keys["admin"])
    frame = pd.DataFrame(demo_records(4))
    frame.loc[3, "balance"] = "lots"
    csv_bytes = frame.to_csv(index=False).encode()
    r = client.post("/v1/customers/import", files={"file": ("c.csv", csv_bytes)}, headers=h)
    assert r.status_code == 200 and r.json()["accepted"] == 3
    assert [e["field"] for e in r.json()["rejected"]] == ["balance"]
    path = tmp_path / "c.parquet"
    frame.drop(index=3).to_parquet(path)
    r = client.post("/v1/customers/import", files={"file": ("c.parquet", path.read_bytes())},
                    headers=h)  # fmt: skip
    assert r.status_code == 200 and r.json()["accepted"] == 3
    check(client.post("/v1/customers/import", files={"file": ("c.exe", b"MZ")}, headers=h), 415)
    check(client.post("/v1/customers/import", files={"file": ("c.parquet", b"nope")}, headers=h),
          422, "bad_data")  # fmt: skip


def test_a_crash_is_a_generic_500(client: TestClient, keys: dict[str, str]) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    real = services.toolkit.engine

    class Broken:
        def __getattr__(self, name: str) -> Any:
            raise RuntimeError("secret internals /etc/passwd")

    services.toolkit.engine = Broken()
    try:
        r = client.post("/v1/score", json={"customers": demo_records(1)},
                        headers=auth(keys["qa"]))  # fmt: skip
    finally:
        services.toolkit.engine = real
    body = check(r, 500, "internal_error")
    assert "secret" not in r.text and "passwd" not in body["message"]


def test_a_lost_database_connection_is_a_503_then_recovers(
    client: TestClient, keys: dict[str, str], monkeypatch: Any
) -> None:
    """The server drops every connection of the pool (a restart, say), and the pool skips its
    ping: the request that finds out gets a 503 to retry, not a 500; the next one works."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    from scripts_engine.db import session as session_mod

    db = client.app.state.services.db  # type: ignore[attr-defined]
    if db.is_sqlite:
        pytest.skip("a PostgreSQL pool")
    h = auth(keys["writer"])
    rec = demo_records(1)[0]
    stored = client.post("/v1/customers", json=[rec], headers=auth(keys["admin"]))
    assert stored.json()["accepted"] == 1
    ask = {"customer_id": rec["customer_id"]}
    assert client.post("/v1/scripts/render", json=ask, headers=h).status_code == 200
    monkeypatch.setattr(session_mod, "IDLE_PING_S", 3600.0)
    other = create_engine(db.url, poolclass=NullPool)
    with other.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()"))  # fmt: skip
    other.dispose()
    statuses = [client.post("/v1/scripts/render", json=ask, headers=h) for _ in range(3)]
    check(statuses[0], 503, "database_unavailable")
    assert statuses[0].headers["retry-after"] == "1"
    assert [r.status_code for r in statuses[1:]] == [200, 200]


def test_a_body_sent_without_a_json_content_type_says_so(
    client: TestClient, keys: dict[str, str]
) -> None:
    for headers, sent in (({}, "none"), ({"Content-Type": "text/plain"}, "text/plain")):
        r = client.post("/v1/campaigns/nope/calls/claim", content=b'{"limit": 1}',
                        headers={**auth(keys["dialler"]), **headers})  # fmt: skip
        assert check(r, 422)["errors"] == [{"field": "body", "row": None, "error":
            f"send the body as JSON, with Content-Type: application/json (it came as: {sent})"}]  # fmt: skip


def test_a_body_over_its_routes_limit_is_a_413_before_it_is_read(
    client: TestClient, keys: dict[str, str]
) -> None:
    """A claim or an outcome takes up to 1 MiB (``max_body_bytes``), the bulk routes an
    upload's size: a larger body is a 413 in the error shape, announced (Content-Length) or
    streamed (chunked, cut off as it passes the limit). Nothing is written."""
    d = auth(keys["dialler"])
    big = b'{"limit": 1' + b" " * (2**20) + b"}"
    claim = "/v1/campaigns/nope/calls/claim"
    body = check(client.post(claim, content=big, headers={**d, "Content-Type": "application/json"}),
                 413, "too_large")  # fmt: skip
    assert body["message"] == f"the request body is larger than {2**20} bytes"

    def chunks() -> Any:
        yield b'{"limit": 1'
        for _ in range(20):
            yield b" " * 65_536
        yield b"}"

    for path in (claim, "/v1/calls/nope/outcome"):
        r = client.post(path, content=chunks(), headers={**d, "Content-Type": "application/json",
                                                         "Idempotency-Key": "k"})  # fmt: skip
        check(r, 413, "too_large")
    # a bulk route takes more: 1.2 MB of customers is answered (here: row by row), also under
    # a root path (uvicorn --root-path puts it in front of the scope's path)
    records = demo_records(1) * 2_000
    r = client.post("/v1/customers", json=records, headers=auth(keys["admin"]))
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text[:200]
    app: Any = client.app
    prefixed = TestClient(app, root_path="/api")  # the running app: no second lifespan
    r = prefixed.post("/api/v1/customers", json=records, headers=auth(keys["admin"]))
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text[:200]
