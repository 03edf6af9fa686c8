"""The writer -> QA -> live -> render journey over HTTP, on SQLite and PostgreSQL, with the real
renderer and real synthesis: a writer changes a sentence, previews it rendered and spoken,
gets it approved by someone else (self-approval refused), the next campaign's claimed call
uses it without a restart; QA reviews the calls, traces a defect to the version, calibrates;
the reports show the defect rate and the lift against the control group; a rollback restores
the earlier version; the audit log verifies."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from scripts_engine import qa
from scripts_engine.campaigns import call_id, in_control
from scripts_engine.config import Settings
from tests.api.conftest import SECRETS, Clock, auth, create_keys, demo_records, make_client, outcome
from tests.api.test_journey import wait_ready

SIGNOFF = "call/signoff"
NEW_LINE = "期待下次再为您服务"
PASS = dict.fromkeys(qa.CRITICAL, "pass")
GOOD = {"clarity": 4, "persona_fit": 4, "dialect_naturalness": 3, "pacing": 4}


def key(c: TestClient, admin: str, role: str, name: str) -> str:
    r = c.post("/v1/keys", json={"role": role, "name": name}, headers=auth(admin))
    assert r.status_code == 201, r.text
    if r.json().get("signing_secret"):  # a dialler signs its outcome reports with it
        SECRETS[r.json()["key"]] = r.json()["signing_secret"]
    return str(r.json()["key"])


def signoff_segment(script: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in script["segments"] if s["stage"] == "signoff")


def test_writer_qa_live_render_journey(api_settings: Settings, clock: Clock) -> None:
    with make_client(api_settings, clock) as c:
        admin = create_keys(api_settings)["admin"]
        alice = key(c, admin, "writer", "alice")
        bob = key(c, admin, "qa", "bob")
        dave = key(c, admin, "qa", "dave")
        alice_qa = key(c, admin, "qa", "alice")  # the same person with a reviewer's key
        dialler = key(c, admin, "dialler", "acme")

        # 0. a campaign built from the seeded templates, waiting to be claimed
        records = demo_records(12)
        assert c.post("/v1/customers", json=records, headers=auth(admin)).status_code == 200
        r = c.post("/v1/campaigns", json={"name": "w", "min_hits": 0, "holdout_pct": 30},
                   headers=auth(admin))  # fmt: skip
        cid = r.json()["id"]
        wait_ready(c, cid, admin)

        # 1. the writer reads the live template and saves an edit: a linted draft
        listing = c.get("/v1/templates", params={"prefix": "call/"}, headers=auth(alice)).json()
        assert SIGNOFF in {t["name"] for t in listing}
        live = c.get(f"/v1/templates/{SIGNOFF}", headers=auth(alice)).json()["live"]
        assert live["author"] == "system" and live["status"] == "live"
        source = live["source"].replace("再见", f"{NEW_LINE}，再见")
        body = {"source": source, "message": "warmer goodbye", "parent": live["version"]}
        r = c.put(f"/v1/templates/{SIGNOFF}", json=body, headers=auth(alice))
        assert r.status_code == 201, r.text
        draft = r.json()
        assert (draft["status"], draft["author"], draft["lint_errors"]) == ("draft", "alice", 0)
        again = c.put(f"/v1/templates/{SIGNOFF}", json=body, headers=auth(alice))
        assert again.status_code == 200 and again.json()["id"] == draft["id"]
        broken = c.put(f"/v1/templates/{SIGNOFF}", json={"source": "{{ customer.nmae }}"},
                       headers=auth(alice)).json()  # fmt: skip
        assert broken["lint"][0]["code"] == "undeclared" and broken["lint"][0]["line"] == 1
        r = c.post(f"/v1/template-versions/{broken['id']}/submit", headers=auth(alice))
        assert r.status_code == 409 and r.json()["code"] == "lint_errors"
        d = c.get(f"/v1/template-versions/{draft['id']}/diff", headers=auth(alice)).json()
        assert f"+{source.splitlines()[-1]}" in d["diff"] and d["from"]["id"] == live["id"]

        # 2. preview: rendered and spoken for sample customers, before it goes live
        r = c.post("/v1/previews", json={"versions": [draft["id"]], "samples": ["S-1", "S-2"],
                                         "channels": ["call", "sms"], "audio": "changed"},
                   headers=auth(alice))  # fmt: skip
        assert r.status_code == 200, r.text
        calls = [i for i in r.json()["items"] if i["channel"] == "call"]
        assert len(calls) == 2 and all(i["error"] is None for i in calls)
        for item in calls:
            seg = item["script"]["segments"][item["changed"][0]]
            assert seg["template"] == SIGNOFF and seg["version"] == draft["version"]
            assert (
                NEW_LINE in seg["text"]
                and NEW_LINE not in item["live_text"][str(item["changed"][0])]
            )
            audio = c.get(item["audio"]["url"], headers=auth(alice))
            assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
            assert 0 < item["audio"]["duration_s"] < 20  # the changed sentence, not the call
        sms = [i for i in r.json()["items"] if i["channel"] == "sms"]
        assert sms and all(i["changed"] == [] for i in sms)

        # 3. four eyes: submit; the author cannot approve (not as writer, not with a qa key)
        r = c.post(f"/v1/template-versions/{draft['id']}/submit", headers=auth(alice))
        assert r.json()["status"] == "submitted"
        assert c.post(f"/v1/template-versions/{draft['id']}/approve", json={},
                      headers=auth(alice)).status_code == 403  # fmt: skip
        r = c.post(f"/v1/template-versions/{draft['id']}/approve", json={}, headers=auth(alice_qa))
        assert r.status_code == 403 and r.json()["code"] == "own_version"
        r = c.post(f"/v1/template-versions/{draft['id']}/approve", json={"note": "ok"},
                   headers=auth(bob))  # fmt: skip
        assert r.status_code == 200 and r.json()["status"] == "approved"
        assert r.json()["decided_by"] == "bob"
        r = c.post(f"/v1/template-versions/{draft['id']}/publish", headers=auth(alice))
        assert r.json()["status"] == "live"

        # 4. the campaign built before the change is refreshed (in the background, or now on
        #    request); the next claimed call says the new sentence (no restart)
        r = c.post(f"/v1/campaigns/{cid}/refresh-scripts", json={}, headers=auth(bob))
        assert r.status_code == 200, r.text
        assert r.json()["ready"] == 12 and r.json()["stale"] == r.json()["refreshed"]
        again = c.post(f"/v1/campaigns/{cid}/refresh-scripts", json={}, headers=auth(bob))
        assert again.json()["stale"] == 0
        claimed: list[dict[str, Any]] = []
        while batch := c.post(f"/v1/campaigns/{cid}/calls/claim", json={"limit": 5},
                              headers=auth(dialler)).json()["calls"]:  # fmt: skip
            claimed += batch
        assert claimed
        for call in claimed:
            seg = signoff_segment(call["script"])
            assert seg["version"] == draft["version"] and NEW_LINE in seg["text"]
        record = c.get(f"/v1/calls/{claimed[0]['id']}", headers=auth(bob)).json()["record"]
        assert record["replaces_script"] and draft["version"] in {
            t["version"] for t in record["templates"]}  # fmt: skip
        outcomes = [{"status": "connected", "converted": True},
                    {"status": "connected", "opt_out": True},
                    {"status": "connected", "complaint": True, "notes": "客户表示要投诉"}]  # fmt: skip
        for i, call in enumerate(claimed):
            o = outcomes[i] if i < len(outcomes) else {"status": "connected",
                                                       "converted": i % 3 == 0}  # fmt: skip
            r = outcome(c, call["id"], dialler, o, idem=f"w-{i}")
            assert r.status_code == 201, r.text

        # 5. QA queue: sample plus must-review; the author never reviews her own template
        r = c.post("/v1/reviews/queue", json={"campaign_id": cid}, headers=auth(bob))
        assert r.status_code == 200, r.text
        by_reason = r.json()["by_reason"]
        assert by_reason["opt_out"] == 1 and by_reason["complaint"] == 1
        assert by_reason["new_version"] == 3  # the first renders of alice's version
        again = c.post("/v1/reviews/queue", json={"campaign_id": cid}, headers=auth(bob)).json()
        assert again["added"] == 0
        assert c.get("/v1/reviews", headers=auth(alice_qa)).json() == []
        items = c.get("/v1/reviews", params={"campaign_id": cid}, headers=auth(bob)).json()
        item = next(i for i in items if "complaint" in i["reasons"])
        r = c.post(f"/v1/reviews/{item['id']}/scorecard",
                   json={"critical": PASS, "quality": GOOD}, headers=auth(alice_qa))  # fmt: skip
        assert r.status_code == 403 and r.json()["code"] == "own_template"
        review = c.get(f"/v1/reviews/{item['id']}", headers=auth(bob)).json()
        assert review["script"]["segments"] and review["reasons"] == item["reasons"]
        assert review["audio"]["wav8k"].endswith(".wav") and review["group"] in ("model", "control")
        used = {t["template"]: t for t in review["templates"]}
        assert used[SIGNOFF]["version"] == draft["version"] and used[SIGNOFF]["author"] == "alice"
        assert review["outcome"]["notes"] == "客户表示要投诉"

        # a failed critical item must name the template; its version is flagged
        fail = {**PASS, "no_banned_claims": "fail"}
        r = c.post(f"/v1/reviews/{item['id']}/scorecard", json={"critical": fail, "quality": GOOD},
                   headers=auth(bob))  # fmt: skip
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.defects"
        card = {"critical": fail, "quality": GOOD, "notes": "sounds like a promise",
                "defects": [{"template": SIGNOFF, "item": "no_banned_claims"}]}  # fmt: skip
        r = c.post(f"/v1/reviews/{item['id']}/scorecard", json=card, headers=auth(bob))
        assert r.status_code == 201 and r.json()["passed"] is False
        assert r.json()["defects"][0]["version"] == draft["version"]
        assert c.post(f"/v1/reviews/{item['id']}/scorecard", json=card,
                      headers=auth(bob)).status_code == 409  # fmt: skip
        flagged = c.get(f"/v1/template-versions/{draft['id']}", headers=auth(bob)).json()
        assert flagged["flags"] == 1 and "flag" in {e["action"] for e in flagged["events"]}
        other = next(i for i in items if i["id"] != item["id"])
        r = c.post(f"/v1/reviews/{other['id']}/scorecard",
                   json={"critical": PASS, "quality": GOOD}, headers=auth(bob))  # fmt: skip
        assert r.status_code == 201 and r.json()["passed"] is True
        defects = c.get("/v1/reports/templates", params={"name": SIGNOFF},
                        headers=auth(alice)).json()  # fmt: skip
        row = next(d for d in defects if d["version"] == draft["version"])
        assert (row["defective_calls"], row["reviewed_calls"]) == (1, 2)
        assert row["rate"] == 0.5 and 0 < row["ci95"][0] < 0.5 < row["ci95"][1] < 1

        # 6. calibration: the same call to two reviewers, blind, then the spread
        r = c.post("/v1/reviews/calibrations",
                   json={"call_ids": [claimed[0]["id"]], "reviewers": ["bob", "dave"]},
                   headers=auth(admin))  # fmt: skip
        assert r.status_code == 201, r.text
        cal = r.json()["id"]
        cal_item = c.get("/v1/reviews", params={"batch": cal}, headers=auth(bob)).json()[0]
        c.post(f"/v1/reviews/{cal_item['id']}/scorecard", json={"critical": PASS,
               "quality": {**GOOD, "clarity": 5}}, headers=auth(bob))  # fmt: skip
        blind = c.get(f"/v1/reviews/calibrations/{cal}", headers=auth(dave)).json()
        assert blind["complete"] is False and "results" not in blind["items"][0]
        assert c.get(f"/v1/reviews/{cal_item['id']}", headers=auth(dave)).json()["results"] == []
        c.post(f"/v1/reviews/{cal_item['id']}/scorecard", json={"critical": PASS,
               "quality": {**GOOD, "clarity": 2}}, headers=auth(dave))  # fmt: skip
        spread = c.get(f"/v1/reviews/calibrations/{cal}", headers=auth(dave)).json()
        assert spread["complete"] is True and len(spread["items"][0]["results"]) == 2
        assert spread["items"][0]["score_range"] == 22.5  # clarity 5 vs 2: 3/4 x 0.3 x 100
        assert spread["verdict_agreement"] == 1.0

        # 7. the campaign report: funnel and lift against the control group
        rep = c.get(f"/v1/reports/campaigns/{cid}", headers=auth(alice)).json()
        f = rep["funnel"]
        assert f["all"]["built"] == f["model"]["built"] + f["control"]["built"] == 12
        assert f["all"]["reported"] == len(claimed) and f["all"]["opted_out"] == 1
        assert f["all"]["complaints"] == 1
        # the control group is hash-chosen per campaign: count it the same way
        control = sum(in_control(cid, str(r["customer_id"]), 30) for r in records)
        assert f["control"]["built"] == control
        # the lift has its interval when both groups reported (the gate may hold back a
        # group's only calls, e.g. a customer without consent), and none otherwise
        both = f["model"]["reported"] > 0 and f["control"]["reported"] > 0
        assert (rep["lift"]["difference_ci95"] is not None) == both
        assert rep["defects"] and rep["by_profile"] and rep["by_tag"] and rep["by_hit_count"]

        # 8. rollback to the seeded version: the next render and campaign use it again
        r = c.post(f"/v1/template-versions/{live['id']}/rollback", json={"reason": "QA defect"},
                   headers=auth(bob))  # fmt: skip
        assert r.status_code == 200 and r.json()["status"] == "live"
        r = c.post("/v1/scripts/render", json={"customer_id": records[2]["customer_id"]},
                   headers=auth(alice))  # fmt: skip
        assert signoff_segment(r.json())["version"] == live["version"]
        r = c.post("/v1/campaigns", json={"name": "after", "min_hits": 0}, headers=auth(admin))
        after = r.json()["id"]
        wait_ready(c, after, admin)
        built = c.get(f"/v1/calls/{call_id(after, records[3]['customer_id'])}",
                      headers=auth(bob)).json()  # fmt: skip
        assert signoff_segment(built["script"])["version"] == live["version"]
        log = c.get("/v1/template-events", params={"name": SIGNOFF}, headers=auth(bob)).json()
        assert log["chain_ok"] is True
        actions = [e["action"] for e in reversed(log["events"])]
        assert actions[0] == "seed" and actions[-1] == "rollback"
        assert {"save", "submit", "approve", "publish", "flag"} <= set(actions)
