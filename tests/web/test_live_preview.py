"""The editor's live preview in a real browser: a writer types and, without saving, sees the
call, WeChat and SMS scripts of the unsaved text for a sample customer, lint findings at their
lines (a syntax error too), and hears the changed sentence; no version is created."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import auth
from tests.web.conftest import Live, sign_in
from tests.web.test_journeys import HOSTILE, check_widths

NAME = "call/signoff"
SENTENCE = "祝您和家人生活愉快"
#: markup in a script's text (HOSTILE's "__pwned" already breaks a content rule: a leak)
MARKUP = '<b id="injected">您好</b>'


def version_ids(live: Live) -> list[int]:
    with live.api() as c:
        r = c.get(f"/v1/templates/{NAME}", headers=auth(live.keys["writer"]))
        assert r.status_code == 200, r.text
        return [v["id"] for v in r.json()["versions"]]


def test_live_preview_of_unsaved_text(page: Any, live: Live) -> None:
    page.set_default_timeout(60_000)
    sign_in(page, live.keys["writer"])
    page.goto(f"/web/templates/{NAME}")
    before = version_ids(live)
    # the preview of the text as it stands comes on its own, for each channel
    result = page.locator("#live-result")
    page.wait_for_selector("#live-result .preview-item[data-channel='sms']")
    assert result.locator("#live-lint-summary").inner_text() == "检查通过，没有发现问题。"
    assert result.locator("li.segment.changed").count() == 0  # nothing changed yet

    area = page.get_by_label("模板文本")
    source = area.input_value()
    assert "再见" in source
    area.fill(source.replace("再见", f"{SENTENCE}，再见", 1))
    changed = result.locator("article[data-channel='call'] li.segment.changed")
    changed.first.wait_for()
    assert SENTENCE in changed.first.inner_text()
    assert SENTENCE not in changed.first.locator(".was").inner_text()  # the live text beside it
    check_widths(page, "editor-live")

    # only the call channel, for another sample customer
    page.get_by_label("示例客户").select_option("S-3")
    for channel in ("微信", "短信"):
        page.get_by_role("group", name="渠道").get_by_label(channel).uncheck()
    page.wait_for_function(
        "() => document.querySelectorAll('#live-result article.preview-item').length === 1"
    )
    assert "S-3" in result.locator("article.preview-item h2").inner_text()

    # the voice of the unsaved sentence, on request
    page.get_by_role("button", name="朗读改动").click()
    audio = result.locator("article[data-channel='call'] audio")
    audio.wait_for()
    src = audio.get_attribute("src")
    assert src and src.startswith("/web/audio/")
    r = page.request.get(src)
    assert r.status == 200 and r.body()[:4] == b"RIFF"

    # a syntax error: shown at its line, and nothing rendered; hostile text stays text
    broken = area.input_value().rstrip("\n") + f"\n{HOSTILE}\n{{{{ customer.name "
    area.fill(broken)
    finding = result.locator(".finding[data-code='syntax']")
    finding.wait_for()
    assert int(finding.get_attribute("data-line")) in (len(broken.splitlines()) - 1,
                                                       len(broken.splitlines()))  # fmt: skip
    assert result.locator("#live-broken").count() == 1
    assert result.locator("article.preview-item").count() == 0
    assert page.evaluate("() => window.__pwned") is None
    area.fill(source.replace("再见", f"{MARKUP}再见", 1))
    changed.first.wait_for()
    assert MARKUP in changed.first.inner_text()  # shown as text
    assert page.locator("#injected").count() == 0
    page.set_viewport_size({"width": 390, "height": 844})
    check_widths(page, "editor-live-error")

    # nothing was saved
    assert version_ids(live) == before
