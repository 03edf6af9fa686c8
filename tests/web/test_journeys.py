"""The workspace's journeys in a real browser (Debian's Chromium under Playwright): sign in
and out, the persona grid and a profile, a campaign created, watched to 100% and reported
on after a dialler's outcomes, a template read; every page without sideways scrolling at
1280 px and 390 px; a hostile campaign name shown as text."""

from __future__ import annotations

import re
from typing import Any

import pytest

from scripts_engine.config import ROOT
from scripts_engine.grid import load_grid
from tests.api.conftest import auth, outcome
from tests.web.conftest import Live, no_horizontal_scroll, shot, sign_in

HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def check_widths(page: Any, name: str) -> None:
    """No horizontal scrolling at 1280 px and at 390 px; a screenshot of each."""
    for width, height in ((1280, 900), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        scroll, client = no_horizontal_scroll(page)
        assert scroll <= client, f"{name} scrolls sideways at {width}px ({scroll} > {client})"
        shot(page, f"{name}-{width}")
    page.set_viewport_size({"width": 1280, "height": 900})


def test_sign_in_and_out(page: Any, live: Live) -> None:
    page.goto("/web/grid")
    assert "/web/login" in page.url  # not signed in: to the sign-in page, then back
    page.get_by_label("API 密钥").fill("se_nothing_here")
    page.get_by_role("button", name="登录").click()
    error = page.locator("#key-error")
    assert error.inner_text() == "密钥无效或已被吊销。"
    assert page.get_by_label("API 密钥").get_attribute("aria-invalid") == "true"
    check_widths(page, "login-error")

    page.get_by_label("API 密钥").fill(live.keys["dialler"])
    page.get_by_role("button", name="登录").click()
    assert "dialler" in page.locator("#key-error").inner_text()

    page.get_by_label("API 密钥").fill(live.keys["qa"])
    page.get_by_role("button", name="登录").click()
    page.wait_for_url("**/web/grid")  # back where the user wanted to go
    assert live.keys["qa"] not in page.url
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["se_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert live.keys["qa"] not in session["value"]
    nav = page.get_by_role("navigation", name="主菜单")
    assert nav.get_by_role("link", name="外呼活动").count() == 1  # qa sees campaigns

    page.get_by_role("link", name="English").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Persona grid"
    page.goto("/web/")
    check_widths(page, "home-en")
    page.goto("/web/")
    assert page.get_by_role("button", name="Sign out").is_visible()  # the choice is kept
    page.get_by_role("link", name="中文").click()
    page.get_by_role("button", name="退出登录").click()
    page.wait_for_url("**/web/login")
    page.goto("/web/")
    assert "/web/login" in page.url


def test_writer_sees_no_campaigns(page: Any, live: Live) -> None:
    sign_in(page, live.keys["writer"])
    nav = page.get_by_role("navigation", name="主菜单")
    assert nav.get_by_role("link", name="外呼活动").count() == 0
    page.goto("/web/campaigns")
    assert page.get_by_role("heading", level=1).inner_text().startswith("您的角色不能")


def test_grid_and_profile(page: Any, live: Live) -> None:
    sign_in(page, live.keys["writer"])
    page.get_by_role("navigation", name="主菜单").get_by_role("link", name="画像矩阵").click()
    assert page.locator("table.tags-table tbody tr").count() == 8
    grid = load_grid(ROOT / "personas" / "grid.yaml")
    tags_text = page.locator("table.tags-table").inner_text()
    for tag in grid.tags.values():  # named and described in Chinese on the Chinese page
        assert tag.label_zh in tags_text and str(tag.description_zh) in tags_text
        assert tag.description not in tags_text
    rows = page.locator("#heatmap tbody tr")
    assert rows.count() == 56
    counts = page.eval_on_selector_all(
        "#heatmap tbody tr td:nth-last-child(2)", "els => els.map(e => +e.dataset.value)"
    )
    profiled = sum(1 for c in live.customers if c.get("profiling_opt_out") != "true")
    assert sum(counts) == profiled
    check_widths(page, "grid")

    page.get_by_role("link", name="历史数据").click()
    rates = page.eval_on_selector_all(
        "#heatmap tbody tr td:last-child", "els => els.map(e => e.dataset.value)"
    )
    assert sum(1 for r in rates if r) >= 10  # the demo customers' real outcomes
    busiest = max(range(56), key=lambda i: counts[i])
    link = rows.nth(busiest).locator("th a")
    pid = link.inner_text()
    link.click()
    page.wait_for_url(f"**/web/grid/{pid}")
    assert page.locator("#profile-customers").inner_text() == str(counts[busiest])
    samples = page.locator("table.samples tbody tr")
    assert samples.count() == min(8, counts[busiest])
    reason = samples.first.locator("td.reason").inner_text()
    assert "画像" + pid in reason  # the reason names the profile it led to
    assert len(page.locator(".tag-list li").all()) == 5
    first = page.locator(".tag-list li").first.inner_text()
    assert any(str(t.description_zh) in first for t in grid.tags.values())
    check_widths(page, "profile")
    page.goto("/web/grid?lang=en")
    tags_text = page.locator("table.tags-table").inner_text()
    assert all(t.label_en in tags_text and t.description in tags_text
               for t in grid.tags.values())  # fmt: skip


def report_outcomes(live: Live, campaign_id: str) -> list[dict[str, Any]]:
    """Claim every call as the dialler and report an outcome for each (deterministic)."""
    claimed: list[dict[str, Any]] = []
    with live.api() as c:
        while True:
            r = c.post(f"/v1/campaigns/{campaign_id}/calls/claim", json={"limit": 50},
                       headers=auth(live.keys["dialler"]))  # fmt: skip
            assert r.status_code == 200, r.text
            if not r.json()["calls"]:
                break
            claimed += r.json()["calls"]
        for i, call in enumerate(claimed):
            status = "connected" if i % 3 else "no_answer"
            converted = status == "connected" and (
                (i % 2 == 0) if call["group"] == "model" else (i % 5 == 0)
            )
            body = {"status": status, "converted": converted}
            r = outcome(c, call["id"], live.keys["dialler"], body, idem=f"web-{call['id']}")
            assert r.status_code == 201, r.text
            call["converted"] = converted
    return claimed


def test_campaign_journey(page: Any, live: Live) -> None:
    sign_in(page, live.keys["admin"])
    page.goto("/web/campaigns")
    form = page.locator("form[action='/web/campaigns']")
    form.get_by_label("最少命中标签数").fill("12")
    form.get_by_role("button", name="创建并开始生成").click()
    assert page.locator("#name-error").inner_text() == "必填。"  # next to its field
    assert page.locator("#min_hits-error").inner_text() == "不能大于 8。"
    check_widths(page, "campaign-form-errors")

    ids = [c["customer_id"] for c in live.customers[1::2]][:90]  # spread over the file
    form = page.locator("form[action='/web/campaigns']")
    form.get_by_label("活动名称").fill(HOSTILE)
    form.get_by_label("客户", exact=True).fill(" ".join(ids))
    form.get_by_label("最少命中标签数").fill("3")
    form.get_by_label("对照组比例（%）").fill("30")
    form.get_by_role("button", name="创建并开始生成").click()
    page.wait_for_url(re.compile(r".*/web/campaigns/C-[0-9a-f]+$"))
    campaign_id = page.url.rsplit("/", 1)[1]
    assert page.locator("#campaign-name").inner_text() == HOSTILE  # text, not markup
    assert page.evaluate("() => window.__pwned") is None
    # the live bar (updated by the page's script) reaches 100%, then the page reloads itself
    if page.locator("#build").get_attribute("data-status") == "building":
        with page.expect_navigation(timeout=180_000):
            page.wait_for_function(
                "() => document.getElementById('build-progress').value === 100", timeout=180_000
            )
    assert page.locator("#build").get_attribute("data-status") == "ready"
    assert page.locator("#build-status").inner_text() == "已就绪"
    assert page.locator("#build-percent").inner_text() == "100%"
    assert page.locator("#build-progress").get_attribute("value") == "100"
    shot(page, "campaign-built")

    claimed = report_outcomes(live, campaign_id)
    assert claimed, "the dialler got no calls"
    page.reload()
    funnel = dict(page.eval_on_selector_all(
        "#funnel g.bar", "els => els.map(e => [e.dataset.stage, +e.dataset.value])"
    ))  # fmt: skip
    converted = sum(c["converted"] for c in claimed)
    assert funnel["planned"] == len(ids)
    assert funnel["selected"] == funnel["dialled"] == funnel["reported"] == len(claimed)
    assert funnel["converted"] == converted

    bars = page.eval_on_selector_all(
        "#by-hits g.bar", "els => els.map(e => [e.dataset.hits, e.dataset.rate])"
    )
    expected: dict[str, list[int]] = {}
    with live.api() as api:
        for c in claimed:
            rec = api.get(f"/v1/calls/{c['id']}", headers=auth(live.keys["admin"])).json()
            key = str(len(rec["record"]["scoring"]["hits"]))
            cell = expected.setdefault(key, [0, 0])
            cell[0] += 1
            cell[1] += int(c["converted"])
    assert {h: float(r) for h, r in bars} == pytest.approx(
        {h: conv / n for h, (n, conv) in expected.items()}
    )
    model = [c for c in claimed if c["group"] == "model"]
    control = [c for c in claimed if c["group"] == "control"]
    model_rate = sum(c["converted"] for c in model) / len(model)
    assert page.locator("#model-rate").inner_text() == f"{model_rate * 100:.1f}%"
    if control:
        control_rate = sum(c["converted"] for c in control) / len(control)
        # the page rounds the service's difference to 0.1 point: one on a rounding edge
        # (43.85) may round either way after the service's own float arithmetic
        shown = page.locator("#diff-value").inner_text()
        diff = (model_rate - control_rate) * 100
        assert shown[0] in "+-" and abs(float(shown) - diff) <= 0.05 + 1e-9, (shown, diff)
        assert "95% 置信区间" in page.locator("#diff-ci").inner_text()
    if any(c["converted"] for c in control) and any(c["converted"] for c in model):
        control_rate = sum(c["converted"] for c in control) / len(control)
        assert page.locator("#lift-value").inner_text() == f"{model_rate / control_rate:.2f}×"
        assert "95% 置信区间" in page.locator("#lift-ci").inner_text()
    else:
        assert page.locator("#lift-status").is_visible()
    assert page.locator("#by-profile tbody tr").count() >= 2
    check_widths(page, "campaign-report")

    page.goto(f"/web/campaigns/{campaign_id}?lang=en")  # the same figures in English
    assert page.locator("#by-hits h2").inner_text() == "Conversion by number of tags hit"
    assert page.locator("#build-status").inner_text() == "ready"
    shot(page, "campaign-report-en")
    page.goto("/web/campaigns?lang=zh-CN")
    assert page.get_by_role("link", name=HOSTILE).count() == 1
    assert page.evaluate("() => window.__pwned") is None
    check_widths(page, "campaigns")


def test_revoking_the_key_ends_the_session(page: Any, live: Live) -> None:
    with live.api() as c:
        r = c.post(
            "/v1/keys", json={"role": "qa", "name": "王质检"}, headers=auth(live.keys["admin"])
        )
        key, prefix = r.json()["key"], r.json()["prefix"]
    sign_in(page, key)
    assert "王质检" in page.locator(".who").inner_text()
    with live.api() as c:
        assert c.delete(f"/v1/keys/{prefix}", headers=auth(live.keys["admin"])).status_code == 200
    page.goto("/web/grid")
    assert "/web/login" in page.url


def test_template_browser(page: Any, live: Live) -> None:
    sign_in(page, live.keys["writer"], lang="en")
    page.get_by_role("navigation", name="Main menu").get_by_role("link", name="Templates").click()
    check_widths(page, "templates")
    page.get_by_role("link", name="call/opening", exact=True).click()
    assert page.locator("#lint-summary").inner_text() == "Lint found nothing."
    assert page.locator("ol.source .tok-expr").count() > 0
    check_widths(page, "template")
