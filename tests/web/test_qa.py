"""QA in a real browser: fill a campaign's review queue (errors next to the fields), open a
call (script by stage, a playable audio player, tags and reason, template versions), score it
(errors next to the fields; a failed critical item must name the template at fault), and a
blind calibration's results. Hostile text stays text."""

from __future__ import annotations

from typing import Any

from scripts_engine.campaigns import call_id
from tests.api.conftest import auth
from tests.api.test_journey import wait_ready
from tests.web.conftest import Live, shot, sign_in
from tests.web.test_journeys import HOSTILE, check_widths, report_outcomes


def make_campaign(live: Live, name: str, ids: list[str] | None = None) -> str:
    if ids is None:
        ids = [c["customer_id"] for c in live.customers[3::9]][:16]
    with live.api() as c:
        r = c.post("/v1/campaigns", json={"name": name, "customers": ids, "min_hits": 0,
                                          "holdout_pct": 25}, headers=auth(live.keys["admin"]))  # fmt: skip
        assert r.status_code == 202, r.text
        cid = str(r.json()["id"])
        assert wait_ready(c, cid, live.keys["admin"], timeout=300)["status"] == "ready"  # type: ignore[arg-type]
    return cid


def test_review_a_call(page: Any, live: Live) -> None:
    page.set_default_timeout(60_000)
    cid = make_campaign(live, HOSTILE)
    report_outcomes(live, cid)
    sign_in(page, live.keys["qa"])
    page.get_by_role("navigation", name="主菜单").get_by_role("link", name="质检").click()
    page.wait_for_url("**/web/reviews")
    assert page.title() == "质检队列 · " + page.locator(".brand").inner_text()

    # the queue form: errors next to the fields
    form = page.locator("#build-queue form")
    form.get_by_label("抽样比例（%）").fill("150")
    form.get_by_role("button", name="生成队列").click()
    assert page.locator("#campaign_id-error").inner_text() == "必填。"
    assert page.locator("#rate-error").inner_text() == "须在 0 到 100 之间。"
    check_widths(page, "reviews-form-errors")
    form = page.locator("#build-queue form")
    form.get_by_label("活动").select_option(cid)
    form.get_by_label("抽样比例（%）").fill("100")
    form.get_by_role("button", name="生成队列").click()
    page.wait_for_url("**/web/reviews?added=*")
    added = int(page.url.rsplit("=", 1)[1])
    assert added == 16
    assert page.evaluate("() => window.__pwned") is None  # the campaign's name is text
    rows = page.locator("#queue tbody tr")
    assert rows.count() >= 16
    check_widths(page, "reviews")

    # a call: script by stage, audio, tags and reason, versions
    review_id = int(rows.first.get_attribute("data-id"))
    rows.first.locator("a").first.click()
    page.wait_for_url(f"**/web/reviews/{review_id}")
    stages = page.eval_on_selector_all("#script h3", "els => els.map(e => e.dataset.stage)")
    assert stages[0] == "opening" and len(stages) >= 4
    src = page.locator("#audio audio").get_attribute("src")
    assert src and src.startswith("/web/audio/")
    r = page.request.get(src)
    assert r.status == 200 and r.body()[:4] == b"RIFF"
    assert page.locator("#reason").inner_text().startswith("命中")
    used = page.eval_on_selector_all(
        "#versions tbody tr", "els => els.map(e => e.dataset.template)"
    )
    assert "call/opening" in used
    check_widths(page, "review")

    # the scorecard: nothing chosen, errors next to each item
    card = page.locator("#scorecard form")
    card.get_by_role("button", name="保存评分表").click()
    assert page.locator("#critical-opening_disclosure-error").is_visible()
    assert page.locator("#quality-clarity-error").inner_text() == "必填。"
    card = page.locator("#scorecard form")
    for key in ("opening_disclosure", "risk_disclosure", "opt_out_honoured", "audio_ai_label",
                "no_personal_data"):  # fmt: skip
        card.locator(f"input[name='critical.{key}'][value=pass]").check()
    card.locator("input[name='critical.no_banned_claims'][value=fail]").check()
    for key in ("clarity", "persona_fit", "dialect_naturalness", "pacing"):
        card.locator(f"#quality-{key}").select_option("4")
    card.get_by_label("备注").fill(HOSTILE)
    card.get_by_role("button", name="保存评分表").click()
    # a failed critical item needs the template at fault; what was chosen is kept
    assert page.locator("#defect_template-error").inner_text().startswith("关键项不通过")
    card = page.locator("#scorecard form")
    assert card.locator("input[name='critical.no_banned_claims'][value=fail]").is_checked()
    assert card.locator("#quality-pacing").input_value() == "4"
    check_widths(page, "scorecard-errors")
    card.get_by_label("模板", exact=True).select_option("call/opening")
    card.get_by_label("评分项").select_option("no_banned_claims")
    card.get_by_role("button", name="保存评分表").click()
    page.wait_for_url("**scored=1")
    assert page.locator("#review-status").inner_text() == "已完成"
    results = page.locator("#results tbody tr")
    assert results.count() == 1 and "不通过" in results.first.inner_text()
    assert HOSTILE in results.first.inner_text()
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator("#scorecard").count() == 0  # scored once
    shot(page, "review-scored")

    # the writer sees the defect traced to the version in the template's history
    live_version = page.locator("#versions tr[data-template='call/opening'] a").get_attribute(
        "href"
    )
    page.goto(str(live_version))
    current = page.locator("#history tr.current td.qa-defects")
    defective, reviewed = current.inner_text().split("\n")[0].split("/")
    assert int(defective) >= 1 and int(reviewed) >= int(defective)


def test_calibration_results(page: Any, live: Live) -> None:
    cid = make_campaign(live, "calibration")
    with live.api() as c:
        ids = [call_id(cid, x["customer_id"]) for x in live.customers[3::9][:16]]
        ids = [
            i for i in ids if c.get(f"/v1/calls/{i}", headers=auth(live.keys["admin"])).is_success
        ]
    sign_in(page, live.keys["qa"], lang="en")
    page.goto("/web/reviews")
    form = page.locator("#calibrate form")
    form.get_by_label("Call ids").fill(ids[0])
    form.get_by_label("Reviewers").fill("test qa")
    form.get_by_role("button", name="Start the calibration").click()
    assert "two different reviewers" in page.locator("#reviewers-error").inner_text()
    assert page.get_by_label("Call ids").input_value() == ids[0]  # kept
    page.locator("#calibrate form").get_by_label("Reviewers").fill("test qa, test admin")
    page.locator("#calibrate form").get_by_role("button", name="Start the calibration").click()
    page.wait_for_url("**/web/reviews/calibrations/CAL-*")
    cal = page.url.rsplit("/", 1)[1]
    page.goto(f"/web/reviews/calibrations/{cal}")
    assert page.locator("#cal-complete").inner_text() == "waiting for reviewers"
    page.locator("#calibration tbody tr a").first.click()
    card = page.locator("#scorecard form")
    for radio in card.locator("input[type=radio][value=pass]").all():
        radio.check()
    for key in ("clarity", "persona_fit", "dialect_naturalness", "pacing"):
        card.locator(f"#quality-{key}").select_option("5")
    card.get_by_role("button", name="Save the scorecard").click()
    page.wait_for_url("**scored=1")
    page.goto(f"/web/reviews/calibrations/{cal}")
    assert "hidden until everyone has scored" in page.locator("#calibration").inner_text()
    with live.api() as c:
        item = c.get("/v1/reviews", params={"batch": cal}, headers=auth(live.keys["admin"]))
        rid = item.json()[0]["id"]
        quality = {"clarity": 2, "persona_fit": 5, "dialect_naturalness": 5, "pacing": 5}
        critical = dict.fromkeys(("opening_disclosure", "risk_disclosure", "no_banned_claims",
                                  "opt_out_honoured", "audio_ai_label", "no_personal_data"),
                                 "pass")  # fmt: skip
        r = c.post(f"/v1/reviews/{rid}/scorecard", json={"critical": critical, "quality": quality},
                   headers=auth(live.keys["admin"]))  # fmt: skip
        assert r.status_code == 201, r.text
    page.reload()
    assert page.locator("#cal-complete").inner_text() == "complete"
    assert page.locator("#cal-range").inner_text() == "22.5"  # clarity 5 vs 2
    assert page.locator("#cal-agreement").inner_text() == "100.0%"
    check_widths(page, "calibration")
