"""The do-not-call list and the frequency caps count phone numbers, not only customers: one
line on file for several customers (a household's landline, a number written several ways) is
called at most as often as one customer, and an opt-out said on it stops every customer's calls
to it (COMPLIANCE.md [C7], [HK1])."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from scripts_engine.phones import phone_key
from tests.api.conftest import Clock, auth, demo_records, outcome
from tests.api.server import build_now

#: one mobile number, as four customers' records give it
SHARED = ["13800001234", "+86 138 0000 1234", "0086-138-0000-1234", "138 0000 1234"]


def household(n_other: int = 1) -> list[dict[str, Any]]:
    """Four consenting customers on one number (each spelled differently) and others on their
    own numbers."""
    recs = [r for r in demo_records(20) if r.get("consent") == "true"][: 4 + n_other]
    for rec, phone in zip(recs, SHARED, strict=False):
        rec["phone"] = phone
    return recs


def start(client: TestClient, keys: dict[str, str], recs: list[dict[str, Any]]) -> str:
    admin = auth(keys["admin"])
    if recs:
        accepted = client.post("/v1/customers", json=recs, headers=admin).json()["accepted"]
        assert accepted == len(recs)
    r = client.post("/v1/campaigns", json={"name": "家庭", "min_hits": 0}, headers=admin)
    assert r.status_code == 202, r.text
    build_now(client.app)  # type: ignore[arg-type]
    return str(r.json()["id"])


def claim(client: TestClient, key: str, cid: str) -> list[dict[str, Any]]:
    r = client.post(f"/v1/campaigns/{cid}/calls/claim", json={"limit": 10}, headers=auth(key))
    assert r.status_code == 200, r.text
    return list(r.json()["calls"])


def decisions(client: TestClient, keys: dict[str, str], cid: str) -> dict[str, Any]:
    """customer id -> the last gate decision on the customer's call in the campaign, as QA
    finds it: the campaign's calls (two a page), then each call's record."""
    out, after, listed = {}, None, []
    while True:
        params = {"campaign_id": cid, "limit": 2} | ({"after": after} if after else {})
        page = client.get("/v1/calls", params=params, headers=auth(keys["qa"])).json()
        listed += page["calls"]
        if (after := page["next_after"]) is None:
            break
    for row in listed:
        record = client.get(f"/v1/calls/{row['id']}", headers=auth(keys["qa"])).json()
        if record["decisions"]:
            last = record["decisions"][-1]
            assert row["last_decision"] == {k: last[k] for k in ("at", "allowed", "rule")}
            out[record["customer_id"]] = last
    return out


def test_phone_keys_read_every_spelling_as_one_number() -> None:
    assert {phone_key(p) for p in SHARED} == {"+8613800001234"}
    assert phone_key("(010) 1234-5678") == phone_key("+86 10 1234 5678") == "+861012345678"
    assert phone_key("+852 9123 4567") == "+85291234567"
    assert phone_key(None) is None and phone_key("  ") is None and phone_key("无") is None


def test_one_number_is_called_once_a_day_whoever_it_is_on_file_for(
    client: TestClient, keys: dict[str, str], clock: Clock
) -> None:
    recs = household()
    cid = start(client, keys, recs)
    calls = claim(client, keys["dialler"], cid)
    shared_ids = {r["customer_id"] for r in recs[:4]}
    called = {c["customer_id"] for c in calls}
    # one of the household and the neighbour: the daily cap of the number took the other three
    assert len(called & shared_ids) == 1 and recs[4]["customer_id"] in called and len(calls) == 2
    held = {c: d for c, d in decisions(client, keys, cid).items() if c not in called}
    assert set(held) == shared_ids - called
    (first,) = called & shared_ids
    # the number judged, in E.164 form, beside the record's spelling
    assert {c["phone_e164"] for c in calls if c["customer_id"] in shared_ids} == {"+8613800001234"}
    for d in held.values():
        assert d["rule"] == "daily_cap" and not d["allowed"]
        cap = next(c for c in d["checks"] if c["rule"] == "daily_cap")
        assert cap["detail"] == f"1 of 1 attempts today (1 to this number, for customer {first})"
        number = next(c for c in d["checks"] if c["rule"] == "number")
        assert number["detail"] == "a phone number on file (138****1234)"
    clock.advance(days=1)  # the next day: the number's next customer
    assert len({c["customer_id"] for c in claim(client, keys["dialler"], cid)} & shared_ids) == 1


def test_an_opt_out_said_on_a_line_stops_every_customer_on_that_number(
    client: TestClient, keys: dict[str, str], clock: Clock
) -> None:
    recs = household(n_other=0)
    cid = start(client, keys, recs)
    (call,) = claim(client, keys["dialler"], cid)
    r = outcome(client, call["id"], keys["dialler"], {"status": "connected", "opt_out": True}, "o")
    assert r.status_code == 201, r.text
    # a new campaign the next day, and the old one: nobody on the number is called again
    admin = auth(keys["admin"])
    other = client.post("/v1/campaigns", json={"name": "再来", "min_hits": 0}, headers=admin)
    build_now(client.app)  # type: ignore[arg-type]
    clock.advance(days=1)
    assert claim(client, keys["dialler"], cid) == []
    assert claim(client, keys["dialler"], other.json()["id"]) == []
    for customer_id, d in decisions(client, keys, cid).items():
        if customer_id == call["customer_id"]:
            continue
        assert d["rule"] == "opt_out" and not d["allowed"]
        check = next(c for c in d["checks"] if c["rule"] == "opt_out")
        assert check["detail"] == (
            f"opted out (said on this number by customer {call['customer_id']})"
        )
    states = client.get(f"/v1/campaigns/{cid}", headers=admin).json()["calls"]
    assert states == {"done": 1, "blocked": 3}
    other_id = next(r["customer_id"] for r in recs if r["customer_id"] != call["customer_id"])
    page = client.get("/v1/calls", params={"customer_id": other_id, "status": "blocked"},
                      headers=auth(keys["qa"])).json()  # fmt: skip
    assert sorted((c["campaign_id"], c["last_decision"]["rule"]) for c in page["calls"]) == sorted(
        [(cid, "opt_out"), (other.json()["id"], "opt_out")]
    )
    assert page["next_after"] is None


def test_a_new_number_is_not_held_by_the_old_ones_calls(
    client: TestClient, keys: dict[str, str]
) -> None:
    """A customer who moves to a number of their own is counted on it, with their own
    attempts: the household's calls no longer hold them (in a campaign started after the move:
    a call the gate put back waits until the block it was put back for lifts)."""
    recs = household(n_other=0)
    start(client, keys, recs)
    (first,) = claim(client, keys["dialler"], start(client, keys, []))
    moved = next(r for r in recs if r["customer_id"] != first["customer_id"])
    moved["phone"] = "13900009999"
    admin = auth(keys["admin"])
    assert client.post("/v1/customers", json=[moved], headers=admin).json()["accepted"] == 1
    later = start(client, keys, [])
    assert [c["customer_id"] for c in claim(client, keys["dialler"], later)] == [
        moved["customer_id"]
    ]


def test_the_do_not_call_list_holds_back_every_customer_on_a_number(
    client: TestClient, keys: dict[str, str], clock: Clock
) -> None:
    admin, qa = auth(keys["admin"]), auth(keys["qa"])
    recs = household()  # four customers on SHARED[0], one on a number of its own
    own = recs[4]
    r = client.post("/v1/dnc", headers=admin, json={"source": "regulator", "numbers": [
        {"phone": "0086 138-0000-1234", "reason": "投诉营销电话"},
        {"phone": "12"}, {"phone": "+86 13800001234"},
        {"phone": own["phone"], "until": clock.now.isoformat()},
    ]})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 1, "rejected": [
        {"row": 2, "field": "phone",
         "error": "'12' is not a phone number (no valid number of its country)"},
        {"row": 3, "field": "phone", "error": "the same number as row 1 (+8613800001234)"},
        {"row": 4, "field": "until",
         "error": "has passed: an entry must end in the future (or never: null)"},
    ]}  # fmt: skip
    status = client.get("/v1/dnc/138 0000 1234", headers=qa).json()
    assert status["blocked"] and [e["source"] for e in status["entries"]] == ["regulator"]
    assert status["entries"][0]["reason"] == "投诉营销电话" and status["suppressions"] == []
    assert client.get("/v1/dnc/13800001234", headers=auth(keys["dialler"])).status_code == 403

    cid = start(client, keys, recs)
    assert [c["customer_id"] for c in claim(client, keys["dialler"], cid)] == [own["customer_id"]]
    for customer_id, d in decisions(client, keys, cid).items():
        if customer_id != own["customer_id"]:
            assert (d["rule"], d["allowed"]) == ("dnc_list", False)
    # no end: the calls are closed; lifted, a new campaign calls the number again
    assert client.get(f"/v1/campaigns/{cid}", headers=admin).json()["calls"] == {
        "leased": 1,
        "blocked": 4,
    }
    lifted = client.delete("/v1/dnc/+8613800001234", headers=admin)
    assert lifted.status_code == 200 and lifted.json()["lifted_at"] is not None
    assert not client.get("/v1/dnc/13800001234", headers=qa).json()["blocked"]
    again = client.delete("/v1/dnc/+8613800001234", headers=admin)
    assert again.status_code == 404 and "not on the do-not-call list" in again.json()["message"]
    assert client.get("/v1/dnc/abc", headers=qa).status_code == 422
    clock.advance(days=1)
    later = start(client, keys, [])
    assert len(claim(client, keys["dialler"], later)) == 2  # one of the household, and `own`


def test_an_entry_with_an_end_holds_the_calls_back_until_then(
    client: TestClient, keys: dict[str, str], clock: Clock
) -> None:
    recs = household(n_other=0)
    until = clock.now + timedelta(days=2)
    r = client.post("/v1/dnc", headers=auth(keys["admin"]),
                    json={"numbers": [{"phone": SHARED[1], "until": until.isoformat()}]})  # fmt: skip
    assert r.json() == {"accepted": 1, "rejected": []}
    cid = start(client, keys, recs)
    answer = client.post(f"/v1/campaigns/{cid}/calls/claim", json={"limit": 10},
                         headers=auth(keys["dialler"])).json()  # fmt: skip
    assert answer["calls"] == [] and answer["next_due"] == until.isoformat()
    clock.advance(days=2, hours=1)
    assert len(claim(client, keys["dialler"], cid)) == 1  # the entry ended: once a day


def test_a_numbers_status_shows_the_opt_outs_said_on_it(
    client: TestClient, keys: dict[str, str]
) -> None:
    recs = household(n_other=0)
    cid = start(client, keys, recs)
    (call,) = claim(client, keys["dialler"], cid)
    r = outcome(client, call["id"], keys["dialler"], {"status": "connected", "opt_out": True}, "x")
    assert r.status_code == 201
    status = client.get("/v1/dnc/+86 138 0000 1234", headers=auth(keys["qa"])).json()
    assert status["blocked"] and status["entries"] == []
    assert [(s["kind"], s["customer_id"]) for s in status["suppressions"]] == [
        ("opt_out", call["customer_id"])
    ]


def test_an_opt_out_goes_on_the_number_dialled_not_a_new_one(
    client: TestClient, keys: dict[str, str], clock: Clock
) -> None:
    """The customer's number changed between the claim and the report (a CRM sync): "stop" was
    said on the number dialled, so that number is blocked, not the new one."""
    admin = auth(keys["admin"])
    recs = household(n_other=2)
    mover, on_old, on_new = recs[0], recs[4], recs[5]
    mover["phone"] = "13677780001"
    cid = start(client, keys, [mover])
    (call,) = claim(client, keys["dialler"], cid)
    assert call["phone"] == "13677780001"
    moved = dict(mover, phone="13677780002")
    assert client.post("/v1/customers", json=[moved], headers=admin).json()["accepted"] == 1
    r = outcome(client, call["id"], keys["dialler"], {"status": "connected", "opt_out": True}, "o")
    assert r.status_code == 201
    on_old["phone"], on_new["phone"] = "+86 136 7778 0001", "+86 136 7778 0002"
    clock.advance(days=1)
    later = start(client, keys, [on_old, on_new])
    called = {c["customer_id"] for c in claim(client, keys["dialler"], later)}
    assert called == {on_new["customer_id"]}
    held = decisions(client, keys, later)[on_old["customer_id"]]
    assert held["rule"] == "opt_out"
    assert client.get("/v1/dnc/13677780001", headers=auth(keys["qa"])).json()["blocked"]
    assert not client.get("/v1/dnc/13677780002", headers=auth(keys["qa"])).json()["blocked"]


def test_a_customer_without_a_number_is_not_handed_out(
    client: TestClient, keys: dict[str, str]
) -> None:
    """Nothing to dial: the call is closed (rule ``number``), not leased with a null phone
    (which spent the customer's attempt of the day)."""
    recs = household(n_other=1)[3:]
    recs[0].pop("phone")
    recs[1]["phone"] = "   "
    cid = start(client, keys, recs)
    assert claim(client, keys["dialler"], cid) == []
    assert {d["rule"] for d in decisions(client, keys, cid).values()} == {"number"}
    assert client.get(f"/v1/campaigns/{cid}", headers=auth(keys["admin"])).json()["calls"] == {
        "blocked": 2
    }


def test_no_list_weakens_another_and_each_row_stands_alone(
    client: TestClient, keys: dict[str, str], clock: Clock
) -> None:
    """A bank's entry with an end does not shorten a regulator's without one (one entry a
    number and source); lifting needs the source when several list a number; a row that is
    not valid is rejected with its row, the others are stored."""
    admin, qa = auth(keys["admin"]), auth(keys["qa"])
    soon = (clock.now + timedelta(minutes=1)).isoformat()
    r = client.post("/v1/dnc", headers=admin, json={"source": "regulator",
                    "numbers": [{"phone": "13800001234"}]})  # fmt: skip
    assert r.json()["accepted"] == 1
    r = client.post("/v1/dnc", headers=admin, json={"source": "bank", "numbers": [
        {"phone": "+86 138 0000 1234", "until": soon},
        {"phone": "13900001234", "until": "2027-02-30T00:00:00+08:00"},
        {"phone": "13900001235", "until": "2027-02-01T00:00:00"},
        {"phone": 13900001236},
        {"phone": "13900001237", "colour": "red"},
        {"phone": "13900001238", "reason": "客户电话投诉"},
    ]})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 2
    assert [(e["row"], e["field"]) for e in r.json()["rejected"]] == [
        (2, "until"),
        (3, "until"),
        (4, "phone"),
        (5, "colour"),
    ]
    status = client.get("/v1/dnc/13800001234", headers=qa).json()
    assert [(e["source"], e["until"]) for e in status["entries"]] == [
        ("bank", soon.replace("+00:00", "Z")),
        ("regulator", None),
    ]
    clock.advance(minutes=2)  # the bank's entry ended: the regulator's holds
    assert [e["source"] for e in client.get("/v1/dnc/13800001234", headers=qa).json()["entries"]
            ] == ["regulator"]  # fmt: skip
    r = client.post("/v1/dnc", headers=admin, json={"source": "bank",
                    "numbers": [{"phone": "13800001234"}]})  # fmt: skip
    both = client.delete("/v1/dnc/13800001234", headers=admin)
    assert both.status_code == 409 and both.json()["code"] == "several_sources"
    lifted = client.delete("/v1/dnc/13800001234?source=bank", headers=admin).json()
    assert lifted["source"] == "bank" and lifted["lifted_by"] is not None
    status = client.get("/v1/dnc/13800001234", headers=qa).json()
    assert status["blocked"] and [e["source"] for e in status["entries"]] == ["regulator"]
    assert status["history"] is None
    past = client.get("/v1/dnc/13800001234?history=true", headers=qa).json()["history"]
    assert [(e["source"], e["lifted_at"] is not None) for e in past] == [
        ("regulator", False),
        ("bank", True),
    ]


def test_a_customer_id_with_a_slash_can_be_read_back(
    client: TestClient, keys: dict[str, str]
) -> None:
    rec = household(n_other=0)[0] | {"customer_id": "BR01/000123"}
    admin = auth(keys["admin"])
    assert client.post("/v1/customers", json=[rec], headers=admin).json()["accepted"] == 1
    for path in ("/v1/customers/BR01/000123", "/v1/customers/BR01%2F000123"):
        got = client.get(path, headers=admin)
        assert got.status_code == 200 and got.json()["customer_id"] == "BR01/000123", path
    assert client.get("/v1/customers/BR01/nope", headers=admin).json()["message"] == (
        "no customer 'BR01/nope'"
    )
