"""Previews of unsaved text (``drafts``): rendered through the same sandbox in place of the live
version, with the text's lint findings, without creating a version; bad text answers findings
at their line or a 422 naming the field, never a 500."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from scripts_engine.versions import MAX_SOURCE
from tests.api.conftest import auth

SIGNOFF = "call/signoff"
SENTENCE = "祝您生活愉快，我们下周再联系"


def _live(client: TestClient, key: str) -> dict[str, Any]:
    r = client.get(f"/v1/templates/{SIGNOFF}", headers=auth(key))
    assert r.status_code == 200, r.text
    return dict(r.json())


def _preview(client: TestClient, key: str, text: str, **extra: Any) -> Any:
    body = {"drafts": {SIGNOFF: text}, "samples": ["S-1"], "channels": ["call"], **extra}
    return client.post("/v1/previews", json=body, headers=auth(key))


def test_unsaved_text_is_rendered_in_place_of_the_live_version(
    client: TestClient, keys: dict[str, str]
) -> None:
    before = _live(client, keys["writer"])
    text = before["live"]["source"].replace("再见", f"{SENTENCE}，再见")
    assert text != before["live"]["source"]
    r = _preview(client, keys["writer"], text, audio="changed")
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["lint"] == {SIGNOFF: []} and out["versions"] == []
    (item,) = out["items"]
    segments = item["script"]["segments"]
    signoff = [i for i, s in enumerate(segments) if s["template"] == SIGNOFF]
    assert signoff and SENTENCE in segments[signoff[0]]["text"]
    assert signoff[0] in item["changed"] and SENTENCE not in item["live_text"][str(signoff[0])]
    assert item["audio"]["duration_s"] > 0  # the unsaved sentence, spoken
    # nothing was saved: the same versions as before, the live one unchanged
    after = _live(client, keys["writer"])
    assert [v["id"] for v in after["versions"]] == [v["id"] for v in before["versions"]]
    assert after["live"]["version"] == before["live"]["version"]


def test_a_syntax_error_answers_its_line_and_no_items(
    client: TestClient, keys: dict[str, str]
) -> None:
    r = _preview(client, keys["writer"], "您好。\n{{ customer.name \n再见")
    assert r.status_code == 200, r.text
    findings = r.json()["lint"][SIGNOFF]
    assert findings[0]["code"] == "syntax" and findings[0]["line"] in (2, 3)
    assert r.json()["items"] == []


def test_undeclared_variables_and_sandbox_escapes_are_findings_at_their_line(
    client: TestClient, keys: dict[str, str]
) -> None:
    r = _preview(client, keys["writer"], "再见\n{{ customer.nmae }}")
    assert r.status_code == 200, r.text
    (finding,) = r.json()["lint"][SIGNOFF]
    assert (finding["code"], finding["line"]) == ("undeclared", 2)
    escape = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    r = _preview(client, keys["writer"], escape)
    assert r.status_code == 200, r.text
    # the sandbox's policy refuses it before anything runs: findings at line 1, nothing rendered
    assert {(f["code"], f["line"]) for f in r.json()["lint"][SIGNOFF]} == {("dialect", 1)}
    assert r.json()["items"] == []


def test_bad_drafts_are_refused_with_the_field(client: TestClient, keys: dict[str, str]) -> None:
    r = client.post("/v1/previews", json={"drafts": {"call/nope": "x"}},
                    headers=auth(keys["writer"]))  # fmt: skip
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.drafts.call/nope"
    r = _preview(client, keys["writer"], "x" * (MAX_SOURCE + 1))
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"].startswith("body.drafts")
    version = _live(client, keys["writer"])["live"]["id"]
    r = _preview(client, keys["writer"], "再见", versions=[version])
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == f"body.drafts.{SIGNOFF}"
    r = _preview(client, keys["dialler"], "再见")
    assert r.status_code == 403
