"""The workspace's pages: sign-in and out, the home page, the persona grid and one profile."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from api.deps import ServicesDep
from api.web import auth, i18n, personas
from api.web.auth import WebUser
from api.web.render import page
from scripts_engine.config import cli_command
from scripts_engine.db import repository as repo
from scripts_engine.errors import PersonaNotFound

#: the key command as a person at the server runs it (.venv/bin/scripts-engine after make run)
CLI = cli_command(absolute=False)

router = APIRouter(prefix="/web", include_in_schema=False)


class LoginRequired(Exception):
    """No valid session: the handler sends the browser to the sign-in page."""


class Forbidden(Exception):
    """Signed in, but this page is not for the user's role."""


def require(*roles: str) -> Any:
    def check(request: Request) -> WebUser:
        user = auth.current_user(request)
        if user is None:
            raise LoginRequired()
        if user.role not in roles:
            raise Forbidden()
        return user

    return Depends(check)


Anyone = Annotated[WebUser, require("admin", "writer", "qa")]


def check_csrf(request: Request, user: WebUser, token: str | None) -> None:
    if not auth.signer(request).check_csrf(user.nonce, token):
        raise Forbidden()


def _safe_next(value: str | None) -> str:
    if value and value.startswith("/web/") and "//" not in value and "\\" not in value:
        return value
    return "/web/"


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    """The sign-in form."""
    if auth.current_user(request) is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    token = auth.login_csrf(request)
    response = page(request, "login.html", {"next": _safe_next(next), "login_csrf": token,
                                            "errors": {}, "cli": CLI}, user=None)  # fmt: skip
    auth.set_login_csrf(request, response, token)
    return response


@router.post("/login")
def login(
    request: Request,
    services: ServicesDep,
    key: Annotated[str, Form(max_length=200)] = "",
    csrf: Annotated[str, Form(max_length=64)] = "",
    next: Annotated[str, Form(max_length=500)] = "/web/",
) -> Response:
    """Exchange an API key for a session cookie."""
    errors: dict[str, str] = {}
    expected = request.cookies.get(auth.LOGIN_CSRF_COOKIE)
    row = None
    if not expected or csrf != expected:
        errors["form"] = "login.error.expired"
    elif not key.strip():
        errors["key"] = "login.error.empty"
    else:
        with services.db.read() as session:
            row = repo.authenticate(session=session, key=key.strip())
        if row is None:
            errors["key"] = "login.error.unknown"
        elif row.role not in auth.WEB_ROLES:
            errors["key"] = "login.error.role"
    if errors or row is None:
        token = auth.login_csrf(request)
        failed = page(request, "login.html", {"next": _safe_next(next), "login_csrf": token,
                                                "errors": errors, "cli": CLI},
                      user=None, status=422)  # fmt: skip
        auth.set_login_csrf(request, failed, token)
        return failed
    response: Response = RedirectResponse(_safe_next(next), status_code=303)
    auth.set_session(request, response, row.id)
    response.delete_cookie(auth.LOGIN_CSRF_COOKIE, path="/web")
    return response


@router.post("/logout")
def logout(
    request: Request, user: Anyone, csrf: Annotated[str, Form(max_length=64)] = ""
) -> Response:
    """End the session."""
    check_csrf(request, user, csrf)
    response = RedirectResponse("/web/login", status_code=303)
    auth.clear_session(request, response, user)
    return response


@router.get("/")
def home(request: Request, user: Anyone, services: ServicesDep) -> Response:
    """What there is, at a glance, and where to go."""
    with services.db.read() as session:
        customers = repo.count_customers(session=session)
        campaigns = repo.list_campaigns(session=session, limit=5)
    engine = services.toolkit.engine
    return page(request, "home.html", {
        "customers": customers, "campaigns": campaigns, "tags": len(engine.grid.tags),
        "profiles": len(engine.profiles),
    }, user=user)  # fmt: skip


def _tag_rows(services: ServicesDep, request: Request) -> list[dict[str, Any]]:
    """The grid's tags, named and described in the page's language."""
    grid = services.toolkit.engine.grid
    lang = i18n.pick(request)[0]
    return [{"name": n, **s.model_dump(include={"code", "kind", "label_zh", "label_en",
                                                 "threshold"}),
             "label": s.label(lang), "description": s.describe(lang)}
            for n, s in grid.tags.items()]  # fmt: skip


@router.get("/grid")
def grid_page(
    request: Request, user: Anyone, services: ServicesDep, source: str | None = None
) -> Response:
    """The eight tags and the 56 profiles: customers and conversion per profile, a heat map.

    Conversion comes from call outcomes, or (``source=history``, and by default while no
    outcome has been reported) from the demo customers' real history."""
    engine = services.toolkit.engine
    stored = personas.stored_profiles(services)
    rates = personas.outcome_rates(services)
    if source not in ("outcomes", "history"):
        source = "outcomes" if rates else "history"
    if source == "history":
        hist = personas.history(services)
        rates = {p: {"rate": v["rate"], "outcomes": v["customers"]}
                 for p, v in hist["profiles"].items()}  # fmt: skip
    rows = []
    for p in engine.profiles:
        r = rates.get(p.id, {})
        rows.append({"id": p.id, "name_zh": p.name_zh, "name_en": p.name_en,
                     "tags": set(p.tags), "customers": stored.counts.get(p.id, 0),
                     "rate": r.get("rate"), "outcomes": r.get("outcomes", 0)})  # fmt: skip
    hist_hits = personas.history(services)["by_hits"]
    by_hits = [{"hits": h, "customers": stored.hit_counts.get(h, 0),
                "rate": hist_hits.get(str(h), {}).get("rate") if hist_hits.get(str(h), {}).get("customers") else None}
               for h in range(len(engine.grid.tags) + 1)]  # fmt: skip
    peak_customers = max((r["customers"] for r in rows), default=0)
    peak_rate = max((r["rate"] or 0.0 for r in rows), default=0.0)
    return page(request, "grid.html", {
        "tags": _tag_rows(services, request), "rows": rows, "source": source,
        "peak_customers": peak_customers, "peak_rate": peak_rate,
        "scored": stored.customers, "by_hits": by_hits,
        "min_hits": engine.profiles.k,
    }, user=user)  # fmt: skip


@router.get("/grid/{profile_id}")
def profile_page(
    request: Request, profile_id: str, user: Anyone, services: ServicesDep
) -> Response:
    """One profile: its tags, its customers and conversion, sample customers with reasons."""
    engine = services.toolkit.engine
    try:
        profile = engine.profiles.get(profile_id)
    except PersonaNotFound:
        return page(request, "error.html", {"message": "error.no_profile"}, user=user,
                    status=404)  # fmt: skip
    stored = personas.stored_profiles(services)
    hist = personas.history(services)["profiles"].get(profile.id, {})
    outcome = personas.outcome_rates(services).get(profile.id, {})
    samples = [
        {"customer_id": s["customer_id"], "name": personas.mask_name(s["record"].get("name")),
         "age": s["record"].get("age"), "city": s["record"].get("city") or "",
         "hits": len(s["hits"]), "match": s["profile"]["match"],
         "reason_zh": s["reason_zh"], "reason_en": s["reason_en"]}
        for s in stored.samples.get(profile.id, [])
    ]  # fmt: skip
    tags = [t for t in _tag_rows(services, request) if t["name"] in profile.tags]
    return page(request, "profile.html", {
        "profile": profile, "tags": tags, "customers": stored.counts.get(profile.id, 0),
        "history": hist, "outcome": outcome, "samples": samples,
        "quote": quote,
    }, user=user)  # fmt: skip
