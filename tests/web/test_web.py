"""The workspace without a browser: sessions and CSRF, security headers, the catalogs, the
lift's interval and the template highlighter."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.web import i18n
from api.web.editor import side_by_side
from api.web.reports import lift_view
from api.web.templates_browser import highlight
from scripts_engine.reports import lift
from tests.web.conftest import Live

TEMPLATES = Path(i18n.__file__).parent / "templates"
#: keys made at run time from a prefix and a value
DYNAMIC = {
    "status.": ("building", "ready", "failed"),
    "role.": ("admin", "writer", "qa", "dialler"),
    "kind.": ("quantitative", "qualitative", "propensity"),
    "channel.": ("call", "wechat", "sms"),
    "match.": ("full", "partial"),
    "funnel.": ("planned", "selected", "dialled", "reported", "connected", "converted"),
    "grid.source_help.": ("outcomes", "history"),
    "campaign.lift_": ("no_data", "no_conversions"),
    "moment.": ("maturity", "birthday", "holiday", "payday", "market_swing", "event", "none",
                "auto"),
    "vstatus.": ("draft", "submitted", "approved", "rejected", "live", "superseded"),
    "editor.done.": ("submit", "approve", "reject", "publish", "rollback"),
    "editor.err.": ("own_version", "role", "bad_state", "lint_errors"),
    "preview.audio_": ("changed", "script", "none"),
    "reason.": ("sample", "opt_out", "complaint", "new_version", "wealth", "age_60",
                "calibration"),
    "group.": ("model", "control"),
    "card.": ("opening_disclosure", "risk_disclosure", "no_banned_claims", "opt_out_honoured",
              "audio_ai_label", "no_personal_data", "clarity", "persona_fit",
              "dialect_naturalness", "pacing"),
    "verdict.": ("pass", "fail", "na"),
    "outcome.": ("connected", "no_answer", "busy", "voicemail", "failed"),
    "reviews.status_": ("open", "done"),
    "reviews.err.": ("own_template", "not_assigned", "already_reviewed", "defects",
                     "defect_template", "defect_item", "critical", "quality"),
}  # fmt: skip


@contextmanager
def signed_in(live: Live, role: str) -> Iterator[httpx.Client]:
    with live.api() as c:
        c.get("/web/login")
        r = c.post("/web/login", data={"key": live.keys[role], "csrf": c.cookies["se_login_csrf"]})
        assert r.status_code == 303 and r.headers["location"] == "/web/"
        yield c


def test_catalogs_have_the_same_keys_and_every_key_used() -> None:
    zh, en = i18n.catalog("zh-CN"), i18n.catalog("en")
    assert set(zh) == set(en)
    used = set()
    sources = [p.read_text(encoding="utf-8") for p in TEMPLATES.glob("*.html")]
    sources += [p.read_text(encoding="utf-8") for p in TEMPLATES.parent.glob("*.py")]
    for text in sources:
        used |= set(re.findall(r"""\bt\(\s*["']([a-z_]+\.[\w.]*[a-z])["']""", text))
        used |= set(re.findall(r"""["']((?:login\.error|error)\.[a-z_]+)(?<!\.html)["']""", text))
    used |= {prefix + value for prefix, values in DYNAMIC.items() for value in values}
    assert not used - set(zh), f"missing from the catalogs: {sorted(used - set(zh))}"
    for key in zh:  # placeholders match between languages
        assert set(re.findall(r"{(\w+)}", zh[key])) == set(re.findall(r"{(\w+)}", en[key])), key


def test_sign_in_needs_the_form_token_and_a_live_key(live: Live) -> None:
    with live.api() as c:
        r = c.post("/web/login", data={"key": live.keys["admin"], "csrf": "x" * 32})
        assert r.status_code == 422 and "登录表单已过期" in r.text
        r = c.get("/web/grid")
        assert r.status_code == 303 and r.headers["location"].startswith("/web/login?next=")


def test_forms_need_the_csrf_token_and_a_cookie_cannot_be_forged(live: Live) -> None:
    with signed_in(live, "admin") as c:
        assert c.get("/web/").status_code == 200
        r = c.post("/web/campaigns", data={"name": "no token"})
        assert r.status_code == 403
        assert c.post("/web/logout", data={}).status_code == 403
        value = c.cookies["se_session"]
        payload, mac = value.rsplit(".", 1)
        forged = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + mac
        with live.api() as other:
            other.cookies.set("se_session", forged)
            assert other.get("/web/").status_code == 303
        token = re.search(r'name="csrf" value="([^"]+)"', c.get("/web/").text)
        assert token is not None
        assert c.post("/web/logout", data={"csrf": token.group(1)}).status_code == 303
        with live.api() as stale:  # the logged-out cookie no longer works
            stale.cookies.set("se_session", value)
            assert stale.get("/web/").status_code == 303


def test_pages_send_security_headers(live: Live) -> None:
    with signed_in(live, "qa") as c:
        r = c.get("/web/grid")
        assert r.status_code == 200
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-frame-options"] == "DENY"
        assert c.get("/web/templates/../../etc/passwd").status_code in (404, 400)
        assert c.get("/web/grid/P-NOPE").status_code == 404


def lift_interval(c1: int, n1: int, c0: int, n0: int) -> dict[str, Any]:
    """The page's lift card for these counts, from the shared report's :func:`lift`."""
    conv = {"model": {"n": n1, "count": c1, "rate": c1 / n1 if n1 else None},
            "control": {"n": n0, "count": c0, "rate": c0 / n0 if n0 else None}}  # fmt: skip
    return lift_view({"conversion": conv, "lift": lift((c1, n1), (c0, n0))})


def test_lift_is_the_shared_reports_ratio_with_its_interval() -> None:
    out = lift_interval(30, 100, 10, 80)
    assert out["status"] == "ok"
    assert out["lift"] == pytest.approx((30 / 100) / (10 / 80), abs=1e-4)
    assert out["low"] < out["lift"] < out["high"] and out["level"] == 0.95
    assert lift_interval(3, 10, 0, 10)["status"] == "no_conversions"
    assert lift_interval(3, 10, 0, 0)["status"] == "no_data"


def test_highlight_keeps_every_character_and_marks_jinja() -> None:
    source = "您好，{{ customer.name }}\n{% if x %}是{% endif %}{# 注 #}\n"
    lines = highlight(source)
    assert "\n".join("".join(text for _, text in line) for line in lines) == source
    kinds = [k for line in lines for k, _ in line]
    assert kinds.count("expr") == 1 and kinds.count("stmt") == 2 and kinds.count("comment") == 1


def test_side_by_side_pairs_changed_lines_and_folds_long_runs() -> None:
    a = "".join(f"{i}\n" for i in range(10)) + "您好，再见\n旧\n"
    b = "".join(f"{i}\n" for i in range(10)) + "您好，明天见\n"
    rows = side_by_side(a, b)
    assert [r["kind"] for r in rows].count("fold") == 1  # ten equal lines: 3, fold, 3
    change, delete = rows[-2], rows[-1]
    assert change["kind"] == "change" and (change["ln"], change["rn"]) == (11, 11)
    assert [t for ch, t in change["rparts"] if ch] == ["明天"]
    assert [t for ch, t in change["lparts"] if ch] == ["再"]
    assert delete["kind"] == "change" and delete["right"] is None and delete["left"] == "旧"


#: who may open each page (the others get the 403 page); everyone must sign in first
PAGES = {
    "/web/": {"admin", "writer", "qa"},
    "/web/grid": {"admin", "writer", "qa"},
    "/web/grid/P-ABCDE": {"admin", "writer", "qa"},
    "/web/campaigns": {"admin", "qa"},
    "/web/templates": {"admin", "writer", "qa"},
    "/web/templates/call/opening": {"admin", "writer", "qa"},
    "/web/templates/styles.yaml": {"admin", "writer", "qa"},
    "/web/reviews": {"admin", "qa"},
    "/web/reports/defects": {"admin", "writer", "qa"},
}


def test_pages_by_role(live: Live) -> None:
    with live.api() as anonymous:
        for path in PAGES:
            r = anonymous.get(path)
            assert r.status_code == 303 and "/web/login" in r.headers["location"], path
    for role in ("admin", "writer", "qa"):
        with signed_in(live, role) as c:
            for path, allowed in PAGES.items():
                assert c.get(path).status_code == (200 if role in allowed else 403), (path, role)
            home = c.get("/web/").text
            token = re.search(r'name="csrf" value="([^"]+)"', home)
            assert token is not None
            r = c.post("/web/campaigns", data={"csrf": token.group(1), "name": "x"})
            assert r.status_code == (422 if role == "admin" else 403)  # only admins create
            # the editor's forms: the role's steps only, and never without the form token
            r = c.post("/web/templates/call/opening", data={"csrf": token.group(1), "source": ""})
            assert r.status_code == (403 if role == "qa" else 422)  # qa does not write
            r = c.post("/web/templates/call/opening", data={"source": "x"})
            assert r.status_code == 403  # no token
            r = c.post("/web/template-versions/1/approve", data={"csrf": token.group(1)})
            assert r.status_code in ((403,) if role == "writer" else (409, 403))
            r = c.post("/web/reviews/queue", data={"csrf": token.group(1)})
            assert r.status_code == (403 if role == "writer" else 422)
            for path in ("/web/templates/call/opening?v=99999999999", "/web/template-diff?a=0&b=1",
                         "/web/template-versions/99999999999/preview"):  # fmt: skip
                assert c.get(path).status_code == 422, path  # refused, never a database error
            assert c.get("/web/template-versions/999999/preview").status_code == 404


@pytest.mark.parametrize(
    ("counts", "expected"),
    [((56, 70, 48, 80), (0.2, 0.0524, 0.3339)), ((9, 10, 3, 10), (0.6, 0.1705, 0.8090))],
    ids=["newcombe-1998-a", "newcombe-1998-b"],
)
def test_difference_interval_matches_newcombes_published_examples(
    counts: tuple[int, int, int, int], expected: tuple[float, float, float]
) -> None:
    """Newcombe (1998), Statistics in Medicine 17:873-890, table II, method 10."""
    out = lift_interval(*counts)
    got = (out["difference"], out["diff_low"], out["diff_high"])
    assert got == pytest.approx(expected, abs=1e-4)
    zero = lift_interval(8, 16, 0, 7)  # no control conversion: no ratio, still a difference
    assert zero["status"] == "no_conversions" and zero["diff_low"] < 0.5 < zero["diff_high"]


def test_the_lift_card_rounds_the_difference_once() -> None:
    """The card's difference is the rates' own, rounded once by the page: through the report's
    4-digit value it would be rounded twice (-0.823529 -> -0.8235 -> "-82.3", not -82.4)."""
    out = lift_interval(0, 2, 14, 17)
    assert out["difference"] == pytest.approx(0 / 2 - 14 / 17, abs=1e-12)
    assert "%+.1f" % (out["difference"] * 100) == "-82.4"
