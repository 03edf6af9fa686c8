"""The template editor in a real browser: a writer edits a template (highlighted as she
types), saves versions (lint findings at their lines), compares two side by side, previews
call, WeChat and SMS scripts for a sample customer and plays the voice, submits; the author's
own approval is refused (four eyes), a qa user approves and it goes live; a rejection needs a
reason; a rollback makes the earlier version live again. Hostile text stays text."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import auth
from tests.web.conftest import Live, shot, sign_in
from tests.web.test_journeys import HOSTILE, check_widths

NAME = "call/signoff"
NEW_LINE = "期待下次再为您服务"


def new_key(live: Live, role: str, name: str) -> str:
    with live.api() as c:
        r = c.post("/v1/keys", json={"role": role, "name": name}, headers=auth(live.keys["admin"]))
        assert r.status_code == 201, r.text
        return str(r.json()["key"])


def shown(page: Any) -> tuple[int, str]:
    meta = page.locator("#shown-version")
    return int(meta.get_attribute("data-id")), str(meta.get_attribute("data-status"))


def test_edit_preview_submit_approve_rollback(page: Any, second: Any, live: Live) -> None:
    page.set_default_timeout(60_000)
    sign_in(page, live.keys["writer"], lang="en")
    page.goto(f"/web/templates/{NAME}")
    live_id, status = shown(page)
    assert status == "live"
    assert page.locator("#steps").count() == 0  # a writer has nothing to do on a live version

    # the editor highlights what is typed (a mirror behind the textarea)
    area = page.get_by_label("Template text")
    source = area.input_value()
    assert "再见" in source
    assert page.locator(".code-editor.enhanced .mirror .tok-expr").count() > 0
    edited = source.replace("再见", f"{NEW_LINE}，再见", 1)
    area.fill(edited)
    assert NEW_LINE in page.locator(".code-editor .mirror").inner_text()
    page.get_by_label("Message", exact=True).fill(HOSTILE)
    check_widths(page, "editor")
    page.get_by_role("button", name="Save a new version").click()
    page.wait_for_url("**saved=1")
    draft_id, status = shown(page)
    assert status == "draft" and draft_id != live_id
    assert page.locator("#lint-summary").inner_text() == "Lint found nothing."
    assert page.locator("#shown-message").inner_text() == HOSTILE  # text, not markup
    assert page.evaluate("() => window.__pwned") is None

    # a broken version: lint findings at their lines, no submit button
    broken = edited.rstrip("\n") + "\n{{ customer.nmae }}" + HOSTILE
    page.get_by_label("Template text").fill(broken)
    assert page.evaluate("() => window.__pwned") is None  # the mirror shows it as text
    page.get_by_role("button", name="Save a new version").click()
    page.wait_for_url("**saved=1")
    assert page.evaluate("() => window.__pwned") is None  # and so does the source listing
    assert page.get_by_label("Template text").input_value() == broken
    finding = page.locator("ol.source .finding[data-code='undeclared']")
    assert finding.count() == 1
    line = int(finding.get_attribute("data-line"))
    assert line == len(edited.splitlines()) + 1
    assert page.locator(f"#L{line}").get_attribute("class") == "flagged"
    assert page.get_by_role("button", name="Submit for approval").count() == 0
    shot(page, "editor-lint")

    # history and a side-by-side diff of the live version and the draft
    history = page.locator("#history tbody tr")
    assert history.count() >= 3
    page.get_by_label("Compare version").select_option(str(live_id))
    page.get_by_label("with version").select_option(str(draft_id))
    page.get_by_role("button", name="Compare side by side").click()
    page.wait_for_url("**/web/template-diff?*")
    changed = page.locator("#diff tr.d-change")
    assert changed.count() >= 1
    assert NEW_LINE in changed.first.locator("td.right").inner_text()
    assert NEW_LINE not in changed.first.locator("td.left").inner_text()
    assert NEW_LINE in changed.first.locator("td.right ins").inner_text()  # the words added
    check_widths(page, "diff")

    # preview: call, WeChat and SMS for a sample customer, the call's changed segment spoken
    page.goto(f"/web/templates/{NAME}?v={draft_id}")
    page.get_by_role("link", name="Preview this version").click()
    samples = page.get_by_role("group", name="Sample customers")
    samples.get_by_label("S-1", exact=False).check()
    samples.get_by_label("S-2", exact=False).check()
    page.get_by_label("Moment").select_option("none")
    page.get_by_role("button", name="Preview", exact=True).click()
    page.wait_for_selector("#results")
    items = page.locator("article.preview-item")
    assert items.count() == 6  # two customers, three channels
    assert sorted(items.nth(i).get_attribute("data-channel") for i in range(6)) == [
        "call", "call", "sms", "sms", "wechat", "wechat"
    ]  # fmt: skip
    assert page.locator("article.preview-item[data-channel='call'] audio").count() == 2
    call = page.locator("article.preview-item[data-channel='call']").first
    assert NEW_LINE in call.locator("li.segment.changed").first.inner_text()
    audio = call.locator("audio")
    src = audio.get_attribute("src")
    assert src and src.startswith("/web/audio/")
    r = page.request.get(src)
    assert r.status == 200 and r.body()[:4] == b"RIFF"
    duration = page.evaluate(
        """async () => { const a = document.querySelector("article[data-channel='call'] audio");
           a.preload = "auto"; a.load();
           await new Promise(ok => { a.onloadedmetadata = ok; setTimeout(ok, 10000); });
           return a.duration; }"""
    )
    assert duration and duration > 0.5  # the browser can play it
    check_widths(page, "preview")

    # submit
    page.goto(f"/web/templates/{NAME}?v={draft_id}")
    page.get_by_role("button", name="Submit for approval").click()
    page.wait_for_url("**done=submit")
    assert shown(page) == (draft_id, "submitted")
    assert page.get_by_role("button", name="Approve").count() == 0  # writers do not approve

    # four eyes: the author with a qa key is refused, next to the form
    sign_in(second, new_key(live, "qa", "test writer"), lang="en")
    second.goto(f"/web/templates/{NAME}?v={draft_id}")
    assert "Four eyes" in second.locator("#own-version").inner_text()
    assert second.get_by_role("button", name="Approve").count() == 0
    csrf = second.locator("form[action='/web/logout'] input[name=csrf]").input_value()
    r = second.request.post(f"/web/template-versions/{draft_id}/approve",
                            form={"csrf": csrf, "publish": "1"})  # fmt: skip
    assert r.status == 403 and "Four eyes" in r.text()  # the store refuses it, not only the page
    second.goto(f"/web/templates/{NAME}?v={draft_id}")
    assert shown(second) == (draft_id, "submitted")
    second.context.clear_cookies()

    # another user approves; it goes live
    sign_in(second, live.keys["qa"], lang="en")
    second.get_by_role("navigation", name="Main menu").get_by_role("link", name="Templates").click()
    second.locator(f"#pending li[data-id='{draft_id}'] a").click()  # what waits for approval
    second.wait_for_url(f"**/web/templates/{NAME}?v={draft_id}")
    check_widths(second, "approve")
    second.get_by_label("Note (optional)").fill("checked")
    second.get_by_role("button", name="Approve").click()
    second.wait_for_url("**done=approve")
    assert shown(second) == (draft_id, "live")
    assert "test qa" in second.locator("#shown-version").inner_text()
    with live.api() as c:
        r = c.post("/v1/scripts/render", json={"customer_id": live.customers[5]["customer_id"]},
                   headers=auth(live.keys["writer"]))  # fmt: skip
        assert NEW_LINE in r.json()["text"]

    # rollback to the earlier version
    second.goto(f"/web/templates/{NAME}?v={live_id}")
    assert shown(second) == (live_id, "superseded")
    second.get_by_label("Reason for the rollback (optional)").fill("QA defect")
    second.get_by_role("button", name="Roll back to this version").click()
    second.wait_for_url("**done=rollback")
    assert shown(second) == (live_id, "live")
    with live.api() as c:
        r = c.post("/v1/scripts/render", json={"customer_id": live.customers[5]["customer_id"]},
                   headers=auth(live.keys["writer"]))  # fmt: skip
        assert NEW_LINE not in r.json()["text"]
        log = c.get("/v1/template-events", params={"name": NAME},
                    headers=auth(live.keys["qa"])).json()  # fmt: skip
    assert log["chain_ok"]
    assert [e["action"] for e in log["events"][:4]] == ["rollback", "publish", "approve", "submit"]


def test_reject_needs_a_reason(page: Any, second: Any, live: Live) -> None:
    sign_in(page, live.keys["writer"])
    page.goto("/web/templates/chat/sms")
    page.get_by_label("模板文本").fill(page.get_by_label("模板文本").input_value() + " ")
    page.get_by_label("说明", exact=True).fill("trailing space")
    page.get_by_role("button", name="保存并预览").click()  # saved, then straight to the preview
    page.wait_for_url("**/web/template-versions/*/preview")
    vid = int(page.url.split("/")[-2])
    page.goto(f"/web/templates/chat/sms?v={vid}")
    assert shown(page) == (vid, "draft")
    page.get_by_role("button", name="提交审批").click()
    page.wait_for_url("**done=submit")

    sign_in(second, live.keys["qa"])
    second.goto(f"/web/templates/chat/sms?v={vid}")
    second.get_by_role("button", name="驳回").click()
    error = second.locator("#reject-note-error")
    assert error.inner_text() == "请填写理由。"
    assert second.get_by_label("驳回理由").get_attribute("aria-invalid") == "true"
    check_widths(second, "reject-error")
    second.get_by_label("驳回理由").fill(HOSTILE)
    second.get_by_role("button", name="驳回").click()
    second.wait_for_url("**done=reject")
    assert shown(second) == (vid, "rejected")
    assert second.locator("#decision-note").inner_text() == HOSTILE
    assert second.evaluate("() => window.__pwned") is None
