"""The defect report page in a real browser: QA reviews a campaign's calls (through the API),
one with a failed critical item traced to a template; the page, reached from the QA menu, shows
each version's defect rate with its 95 % interval (the API's figures) as a chart and a table,
linked to the version and its diff; a filter that names nothing is an error next to it."""

from __future__ import annotations

from typing import Any

from scripts_engine import qa
from tests.api.conftest import auth
from tests.web.conftest import Live, sign_in
from tests.web.test_journeys import check_widths, report_outcomes
from tests.web.test_qa import make_campaign

AT_FAULT = "call/signoff"
GOOD = {"clarity": 4, "persona_fit": 4, "dialect_naturalness": 3, "pacing": 4}


def review_campaign(live: Live, cid: str) -> list[dict[str, Any]]:
    """Queue every call of the campaign and score them all: the first fails a critical item
    traced to AT_FAULT; the API's defect report for the campaign."""
    h = auth(live.keys["qa"])
    with live.api() as c:
        r = c.post("/v1/reviews/queue", json={"campaign_id": cid, "rate": 1}, headers=h)
        assert r.status_code == 200, r.text
        r = c.get("/v1/reviews", params={"campaign_id": cid, "status": "open"}, headers=h)
        assert r.status_code == 200, r.text
        reviews = r.json()
        assert len(reviews) >= 3
        for i, item in enumerate(reviews):
            critical = dict.fromkeys(qa.CRITICAL, "pass")
            defects = []
            if i == 0:
                critical["no_banned_claims"] = "fail"
                defects = [{"template": AT_FAULT, "item": "no_banned_claims", "note": "承诺收益"}]
            r = c.post(f"/v1/reviews/{item['id']}/scorecard", headers=h,
                       json={"critical": critical, "quality": GOOD, "defects": defects})  # fmt: skip
            assert r.status_code == 201, r.text
        r = c.get("/v1/reports/templates", params={"campaign_id": cid}, headers=h)
        assert r.status_code == 200, r.text
        return list(r.json())


def test_defect_report_page(page: Any, live: Live) -> None:
    page.set_default_timeout(60_000)
    # customers no other browser test calls (a call within the cool-down would be refused)
    ids = [c["customer_id"] for i, c in enumerate(live.customers) if i % 2 == 0 and i % 9 != 3]
    cid = make_campaign(live, "缺陷报告", ids[:12])
    report_outcomes(live, cid)
    expected = review_campaign(live, cid)
    at_fault = [r for r in expected if r["template"] == AT_FAULT and r["defective_calls"]]
    assert len(at_fault) == 1

    sign_in(page, live.keys["qa"])
    page.get_by_role("navigation", name="主菜单").get_by_role("link", name="缺陷报告").click()
    page.wait_for_url("**/web/reports/defects")
    page.get_by_label("活动").select_option(cid)
    page.get_by_role("button", name="筛选").click()
    page.wait_for_url(f"**campaign={cid}*")

    # the chart: one point on its interval per version, the API's figures
    groups = page.locator("svg.intervals g.interval")
    assert groups.count() == len(expected)
    drawn = {g.get_attribute("data-version-id"): (float(g.get_attribute("data-rate")),
                                                  float(g.get_attribute("data-low")),
                                                  float(g.get_attribute("data-high")))
             for g in groups.all()}  # fmt: skip
    for r in expected:
        assert drawn[str(r["version_id"])] == (r["rate"], *r["ci95"])
    bad = page.locator(f"svg.intervals g.interval[data-version-id='{at_fault[0]['version_id']}']")
    assert bad.locator("circle.point.bad").count() == 1
    row = page.locator(f"table.defects tr[data-version-id='{at_fault[0]['version_id']}']")
    n, k = at_fault[0]["defective_calls"], at_fault[0]["reviewed_calls"]
    assert f"{n}/{k}" in row.inner_text()
    check_widths(page, "defects")

    # each version links to its page
    row.locator("a.version-link").click()
    page.wait_for_url(f"**/web/templates/{AT_FAULT}?v={at_fault[0]['version_id']}")
    page.go_back()

    # a filter naming nothing: the error next to the field
    page.goto("/web/reports/defects?name=call/nope")
    assert page.locator("#name-error").is_visible()
    assert page.get_by_label("模板").get_attribute("aria-invalid") == "true"
    assert page.locator("svg.intervals").count() == 0
    check_widths(page, "defects-error")

    # English, too
    page.goto(f"/web/reports/defects?campaign={cid}&lang=en")
    assert page.get_by_role("heading", level=1).inner_text() == "Template defect report"
