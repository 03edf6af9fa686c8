"""A live change reaches calls already built, by itself: the background refresh rebuilds the
waiting calls (chunked, with progress), and a claim re-renders a stale call before handing it
out. A call already handed out keeps what it was given. Over HTTP, SQLite and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from scripts_engine import qa
from scripts_engine.campaigns import call_id
from scripts_engine.config import Settings
from scripts_engine.refresh import refresh_waiting
from tests.api.conftest import Clock, auth, create_keys, demo_records, make_client
from tests.api.server import build_now
from tests.api.test_journey import wait_ready

SIGNOFF = "call/signoff"
NEW_LINE = "期待下次再为您服务"


def publish(
    c: TestClient, keys: dict[str, str], name: str, old: str, new: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The writer replaces ``old`` by ``new`` in a file, someone else approves and publishes
    it; returns the live version before and the new one."""
    live = c.get(f"/v1/templates/{name}", headers=auth(keys["writer"])).json()["live"]
    body = {"source": live["source"].replace(old, new), "message": "an edit"}
    version = c.put(f"/v1/templates/{name}", json=body, headers=auth(keys["writer"])).json()
    assert version["lint_errors"] == 0, version["lint"]
    c.post(f"/v1/template-versions/{version['id']}/submit", headers=auth(keys["writer"]))
    r = c.post(f"/v1/template-versions/{version['id']}/approve", json={"publish": True},
               headers=auth(keys["qa"]))  # fmt: skip
    assert r.status_code == 200 and r.json()["status"] == "live", r.text
    return live, version


def publish_change(c: TestClient, keys: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new sentence in the sign-off, live."""
    return publish(c, keys, SIGNOFF, "再见", f"{NEW_LINE}，再见")


def signoff(script: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in script["segments"] if s["stage"] == "signoff")


def claim(c: TestClient, key: str, cid: str, limit: int) -> list[dict[str, Any]]:
    r = c.post(f"/v1/campaigns/{cid}/calls/claim", json={"limit": limit}, headers=auth(key))
    assert r.status_code == 200, r.text
    return list(r.json()["calls"])


def record(c: TestClient, keys: dict[str, str], call_id: str) -> dict[str, Any]:
    r = c.get(f"/v1/calls/{call_id}", headers=auth(keys["qa"]))
    assert r.status_code == 200, r.text
    return dict(r.json())


def progress(c: TestClient, keys: dict[str, str], cid: str) -> dict[str, Any]:
    r = c.get(f"/v1/campaigns/{cid}/refresh-scripts", headers=auth(keys["writer"]))
    assert r.status_code == 200, r.text
    return dict(r.json())


def customers(c: TestClient, keys: dict[str, str], n: int) -> list[dict[str, Any]]:
    recs = [r for r in demo_records(n + 6) if r.get("consent") == "true"][:n]
    r = c.post("/v1/customers", json=recs, headers=auth(keys["admin"]))
    assert r.json()["accepted"] == n
    return recs


def built_campaign(c: TestClient, keys: dict[str, str], n: int) -> str:
    """A campaign of ``n`` customers, built now in this thread (no background builder)."""
    customers(c, keys, n)
    r = c.post("/v1/campaigns", json={"name": "c", "min_hits": 0}, headers=auth(keys["admin"]))
    build_now(c.app)  # type: ignore[arg-type]
    return str(r.json()["id"])


def test_a_claim_renders_a_stale_call_again_before_handing_it_out(
    client: TestClient, keys: dict[str, str]
) -> None:
    # no background builder here: only the claim-time check can bring the change
    cid = built_campaign(client, keys, 4)
    (first,) = claim(client, keys["dialler"], cid, 1)
    old, new = publish_change(client, keys)
    assert signoff(first["script"])["version"] == old["version"]
    before = progress(client, keys, cid)
    assert (before["ready"], before["unchecked"]) == (3, 3)

    calls = claim(client, keys["dialler"], cid, 5)
    assert len(calls) == 3
    for call in calls:
        seg = signoff(call["script"])
        assert seg["version"] == new["version"] and NEW_LINE in seg["text"]
        assert call["audio"]["wav8k"].endswith(".wav")  # spoken again, with the new sentence
        rec = record(client, keys, call["id"])
        assert rec["record"]["refreshed_by"] == "claim" and rec["record"]["replaces_script"]
        assert rec["script"] == call["script"]  # the record is what was handed out
        assert rec["record"]["styles_version"] == call["script"]["styles_version"]
    # the call handed out before the change keeps what it was given
    kept = record(client, keys, first["id"])
    assert kept["script"] == first["script"] and "refreshed_by" not in kept["record"]
    assert signoff(kept["script"])["version"] == old["version"]


def test_the_background_refresh_brings_publish_and_rollback_to_waiting_calls(
    api_settings: Settings, clock: Clock
) -> None:
    with make_client(api_settings, clock) as c:
        keys = create_keys(api_settings)
        recs = customers(c, keys, 5)
        r = c.post("/v1/campaigns", json={"name": "b", "min_hits": 0}, headers=auth(keys["admin"]))
        cid = r.json()["id"]
        wait_ready(c, cid, keys["admin"])
        (handed,) = claim(c, keys["dialler"], cid, 1)
        old, new = publish_change(c, keys)

        def settled(version: str) -> list[dict[str, Any]]:
            deadline = time.monotonic() + 120
            while progress(c, keys, cid)["unchecked"]:
                assert time.monotonic() < deadline, progress(c, keys, cid)
                time.sleep(0.2)
            waiting = [record(c, keys, call) for call in call_ids if call != handed["id"]]
            assert all(signoff(w["script"])["version"] == version for w in waiting)
            assert all(w["record"]["refreshed_by"] == "background" for w in waiting)
            return waiting

        call_ids = [call_id(cid, str(r["customer_id"])) for r in recs]
        waiting = settled(new["version"])
        assert all(NEW_LINE in signoff(w["script"])["text"] for w in waiting)
        done = progress(c, keys, cid)
        assert (done["ready"], done["unchecked"]) == (4, 0)

        # a rollback is a live change too: the waiting calls go back to the earlier text
        r = c.post(f"/v1/template-versions/{old['id']}/rollback", json={"reason": "QA"},
                   headers=auth(keys["qa"]))  # fmt: skip
        assert r.status_code == 200, r.text
        waiting = settled(old["version"])
        assert all(NEW_LINE not in signoff(w["script"])["text"] for w in waiting)
        # the call handed out before both changes is untouched
        assert record(c, keys, handed["id"])["script"] == handed["script"]
        got = claim(c, keys["dialler"], cid, 5)
        assert len(got) == 4 and all(signoff(x["script"])["version"] == old["version"]
                                     for x in got)  # fmt: skip


def test_the_background_refresh_works_in_chunks_and_resumes(
    client: TestClient, keys: dict[str, str], clock: Clock
) -> None:
    cid = built_campaign(client, keys, 5)
    publish_change(client, keys)
    services = client.app.state.services  # type: ignore[attr-defined]
    toolkit = services.toolkit
    steps = []
    while (step := refresh_waiting(db=services.db, toolkit=toolkit, now=clock(), limit=2))[
        "checked"
    ]:
        steps.append(step)
        assert progress(client, keys, cid)["unchecked"] == 5 - sum(s["checked"] for s in steps)
    assert [s["checked"] for s in steps] == [2, 2, 1]
    assert sum(s["refreshed"] for s in steps) == 5 and all(not s["failed"] for s in steps)


def test_a_styles_change_is_traced_from_claim_to_qa_flag(
    client: TestClient, keys: dict[str, str]
) -> None:
    cid = built_campaign(client, keys, 3)
    reviewer = auth(keys["qa"])
    live, new = publish(client, keys, "styles.yaml", "thanks: ", "thanks: 祝您一切顺利！")

    # the waiting calls were built with the old styles: a claim speaks the new thanks line
    calls = claim(client, keys["dialler"], cid, 5)
    assert len(calls) == 3
    for call in calls:
        assert call["script"]["styles_version"] == new["version"] != live["version"]
        assert "祝您一切顺利！" in signoff(call["script"])["text"]
        assert record(client, keys, call["id"])["record"]["styles_version"] == new["version"]

    # QA: the call's versions include styles.yaml (with its author); a critical failure caused
    # by a style line flags the styles version and shows in its defect rate
    r = client.post("/v1/reviews/queue", json={"campaign_id": cid, "rate": 0}, headers=reviewer)
    assert r.json()["by_reason"]["new_version"] == 3
    item = client.get("/v1/reviews", params={"campaign_id": cid}, headers=reviewer).json()[0]
    detail = client.get(f"/v1/reviews/{item['id']}", headers=reviewer).json()
    used = {t["template"]: t for t in detail["templates"]}
    assert used["styles.yaml"]["version"] == new["version"]
    assert used["styles.yaml"]["author"] == "test writer"
    fail = {**dict.fromkeys(qa.CRITICAL, "pass"), "no_banned_claims": "fail"}
    card = {"critical": fail, "quality": dict.fromkeys(qa.QUALITY, 3),
            "defects": [{"template": "styles.yaml", "item": "no_banned_claims"}]}  # fmt: skip
    r = client.post(f"/v1/reviews/{item['id']}/scorecard", json=card, headers=reviewer)
    assert r.status_code == 201 and r.json()["defects"][0]["version"] == new["version"], r.text
    flagged = client.get(f"/v1/template-versions/{new['id']}", headers=reviewer).json()
    assert flagged["flags"] == 1
    rates = client.get("/v1/reports/templates", params={"name": "styles.yaml"},
                       headers=reviewer).json()  # fmt: skip
    assert [(d["version"], d["defective_calls"]) for d in rates] == [(new["version"], 1)]
