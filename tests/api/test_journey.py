"""The whole dialler journey over HTTP: key, customers, campaign, claims, audio, outcomes,
the audit record and the statistics, on SQLite and PostgreSQL, with real synthesis."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from fastapi.testclient import TestClient

from scripts_engine.config import Settings
from tests.api.conftest import SECRETS, Clock, auth, create_keys, demo_records, make_client, outcome


def wait_ready(c: TestClient, cid: str, key: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = c.get(f"/v1/campaigns/{cid}", headers=auth(key)).json()
        if body["status"] != "building":
            return body
        time.sleep(0.2)
    raise AssertionError(f"campaign {cid} still building: {body}")


def test_dialler_journey(api_settings: Settings, clock: Clock) -> None:
    with make_client(api_settings, clock) as c:
        admin = create_keys(api_settings)["admin"]
        r = c.post("/v1/keys", json={"role": "dialler", "name": "acme"}, headers=auth(admin))
        assert r.status_code == 201
        dialler = r.json()["key"]
        SECRETS[dialler] = r.json()["signing_secret"]
        qa = c.post("/v1/keys", json={"role": "qa"}, headers=auth(admin)).json()["key"]

        records = demo_records(10)
        records[0]["consent"] = "false"  # never called
        records[1]["profiling_opt_out"] = "true"  # generic script, only when min_hits is 0
        r = c.post("/v1/customers", json=records, headers=auth(admin))
        assert r.status_code == 200 and r.json()["accepted"] == 10

        body = {"name": "journey", "min_hits": 0, "holdout_pct": 30,
                "audio_formats": ["wav8k", "alaw"]}  # fmt: skip
        r = c.post("/v1/campaigns", json=body, headers=auth(admin))
        assert r.status_code == 202 and r.headers["location"].endswith(r.json()["id"])
        cid = r.json()["id"]
        status = wait_ready(c, cid, dialler)
        assert status["progress"] == {"total": 10, "done": 10, "failed": 0, "filtered": 0}
        assert sum(status["by_profile"].values()) == 10

        claimed: list[dict[str, Any]] = []
        while True:
            r = c.post(f"/v1/campaigns/{cid}/calls/claim", json={"limit": 4}, headers=auth(dialler))
            assert r.status_code == 200, r.text
            if not r.json()["calls"]:
                break
            claimed += r.json()["calls"]
        ids = [x["customer_id"] for x in claimed]
        assert len(ids) == len(set(ids)) == 9 and records[0]["customer_id"] not in ids
        opted = next(x for x in claimed if x["customer_id"] == records[1]["customer_id"])
        assert opted["profile"] is None and opted["script"]["persona"] is False
        control = [x for x in claimed if x["group"] == "control"]
        assert all(not x["script"]["persona"] for x in control)

        first = claimed[0]
        assert first["phone"] and set(first["audio"]) == {"wav8k", "alaw"}
        a = c.get(first["audio"]["wav8k"], headers=auth(dialler))
        assert a.status_code == 200 and a.headers["content-type"] == "audio/wav"
        assert a.content[:4] == b"RIFF"
        etag = a.headers["etag"]
        assert etag.strip('"') == hashlib.sha256(a.content).hexdigest()
        again = c.get(first["audio"]["wav8k"], headers={**auth(dialler), "If-None-Match": etag})
        assert again.status_code == 304
        raw = c.get(first["audio"]["alaw"], headers=auth(dialler))
        assert raw.headers["content-type"] == "audio/PCMA"

        outcomes = [{"status": "connected", "converted": True, "intent_grade": "A"},
                    {"status": "connected", "opt_out": True}, {"status": "connected", "refused": True},
                    {"status": "no_answer"}]  # fmt: skip
        for call, result in zip(claimed, outcomes + [{"status": "busy"}] * 9, strict=False):
            r = outcome(c, call["id"], dialler, result, f"k-{call['id']}")
            assert r.status_code == 201, r.text
            replay = outcome(c, call["id"], dialler, result, f"k-{call['id']}")
            assert replay.json() == r.json() and replay.headers["idempotent-replayed"] == "true"

        rec = c.get(f"/v1/calls/{first['id']}", headers=auth(qa)).json()
        assert rec["outcome"]["converted"] is True and rec["status"] == "done"
        assert rec["record"]["audio"]["wav8k"]["sha256"] == etag.strip('"')
        assert rec["record"]["templates"] and all(t["version"] for t in rec["record"]["templates"])
        assert rec["record"]["voice"]["id"] and rec["record"]["context"]["customer"]
        assert rec["decisions"][0]["allowed"] and len(rec["decisions"][0]["checks"]) == 8

        stats = c.get(f"/v1/stats/profiles?campaign_id={cid}", headers=auth(qa)).json()
        assert sum(p["outcomes"] for p in stats["profiles"]) == 9
        assert sum(p["converted"] for p in stats["profiles"]) == 1

        # a second campaign the next day: opt-out and refusal hold across campaigns
        clock.advance(days=1)
        r = c.post("/v1/campaigns", json={"name": "again", "min_hits": 0}, headers=auth(admin))
        cid2 = r.json()["id"]
        wait_ready(c, cid2, dialler)
        r = c.post(f"/v1/campaigns/{cid2}/calls/claim", json={"limit": 20}, headers=auth(dialler))
        again_ids = {x["customer_id"] for x in r.json()["calls"]}
        assert claimed[1]["customer_id"] not in again_ids  # opted out
        assert claimed[2]["customer_id"] not in again_ids  # refused
        assert len(again_ids) == 7
        metrics = c.get("/metrics").text
        assert 'gate_decisions_total{allowed="false",rule="opt_out"}' in metrics
