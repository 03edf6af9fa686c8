"""Pages: one autoescaping Jinja environment for the workspace's HTML (never the script
sandbox's), the layout's context (user, language, navigation, CSRF token) and the headers
every page gets (a strict Content-Security-Policy: no inline script or style)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from api.web import charts, i18n
from api.web.auth import WebUser, signer

TEMPLATES = Path(__file__).resolve().parent / "templates"

env = Environment(
    loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
    trim_blocks=True, lstrip_blocks=True,
)  # fmt: skip
env.globals.update(vertical_bars=charts.vertical_bars, horizontal_bars=charts.horizontal_bars,
                   heat=charts.heat)  # fmt: skip

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class NavItem:
    """A workspace section and the roles that see it."""

    key: str
    href: str
    roles: tuple[str, ...]


#: The sections, in menu order (the template editor lives under nav.templates).
NAV = (
    NavItem("nav.home", "/web/", ("admin", "writer", "qa")),
    NavItem("nav.grid", "/web/grid", ("admin", "writer", "qa")),
    NavItem("nav.campaigns", "/web/campaigns", ("admin", "qa")),
    NavItem("nav.templates", "/web/templates", ("admin", "writer", "qa")),
    NavItem("nav.reviews", "/web/reviews", ("admin", "qa")),
    NavItem("nav.defects", "/web/reports/defects", ("admin", "qa")),
)


def percent(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f}%"


def number(value: float | int | None) -> str:
    return "—" if value is None else f"{value:,}"


env.filters["percent"] = percent
env.filters["number"] = number


def page(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    user: WebUser | None,
    status: int = 200,
) -> HTMLResponse:
    """Render ``templates/<name>`` in the request's language, inside the layout."""
    lang, from_url = i18n.pick(request)
    path = request.url.path
    other = "zh-CN" if lang == "en" else "en"
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "lang"]
    switch = f"{path}?{urlencode([*query, ('lang', other)])}"
    ctx = {
        "path": path, "switch_url": switch,
        "nav": [n for n in NAV if user is not None and user.role in n.roles],
        **(context or {}),
    }  # fmt: skip
    response = fragment(request, name, ctx, user=user, status=status)
    if from_url:
        response.set_cookie(i18n.COOKIE, lang, max_age=365 * 86400, samesite="lax",
                            secure=request.url.scheme == "https", path="/")  # fmt: skip
    return response


def fragment(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    user: WebUser | None,
    status: int = 200,
) -> HTMLResponse:
    """Render ``templates/<name>`` in the request's language, without the layout (a part of a
    page that its script puts in place; autoescaped like every page)."""
    lang = i18n.pick(request)[0]
    ctx = {
        "t": i18n.Translator(lang), "lang": lang, "user": user,
        "csrf": signer(request).csrf_token(user.nonce) if user is not None else "",
        **(context or {}),
    }  # fmt: skip
    html = env.get_template(name).render(ctx)
    return HTMLResponse(html, status_code=status, headers=HEADERS)
