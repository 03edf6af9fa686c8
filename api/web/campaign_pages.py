"""Campaign pages: the list, the create form (admin), one campaign's live progress and report.

Creating goes through the API's own route function (the same validation, the same errors,
the same background build); its field errors are shown next to the form's fields.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import ValidationError

from api.deps import Principal, ServicesDep
from api.errors import ApiError
from api.routes.campaigns import create_campaign
from api.schemas import CampaignCreate
from api.web import i18n, reports
from api.web.auth import WebUser
from api.web.pages import check_csrf, require
from api.web.render import HEADERS, page
from scripts_engine.audio import FORMATS
from scripts_engine.context import MOMENTS
from scripts_engine.db import repository as repo

router = APIRouter(prefix="/web/campaigns", include_in_schema=False)

Viewer = Annotated[WebUser, require("admin", "qa")]
Manager = Annotated[WebUser, require("admin")]
CHANNELS = ("call", "wechat", "sms")
DEFAULTS: dict[str, Any] = {"name": "", "customers": "", "channel": "call", "moment": "auto",
                            "voice": "auto", "min_hits": "5", "holdout_pct": "10",
                            "audio_formats": ["wav8k"]}  # fmt: skip


def _form_context(
    services: ServicesDep, values: dict[str, Any], errors: dict[str, str]
) -> dict[str, Any]:
    with services.db.read() as session:
        campaigns = repo.list_campaigns(session=session)
    return {
        "campaigns": campaigns, "values": values, "errors": errors, "channels": CHANNELS,
        "moments": (*MOMENTS, "auto"), "voices": sorted(services.toolkit.voices.profiles),
        "formats": list(FORMATS),
    }  # fmt: skip


@router.get("")
def campaigns_page(request: Request, user: Viewer, services: ServicesDep) -> Response:
    """The campaigns, newest first, and (for admins) the form to start one."""
    return page(request, "campaigns.html", _form_context(services, dict(DEFAULTS), {}), user=user)


def _field(loc: tuple[Any, ...] | list[Any] | str) -> str:
    parts = [str(p) for p in (loc if isinstance(loc, list | tuple) else str(loc).split("."))]
    parts = [p for p in parts if p != "body"]
    return parts[0].split("[")[0] if parts else "form"


@router.post("")
async def create(request: Request, user: Manager, services: ServicesDep) -> Response:
    """Start a campaign from the form; errors come back next to their fields."""
    form = await request.form()
    check_csrf(request, user, str(form.get("csrf") or ""))
    values: dict[str, Any] = {
        k: str(form.get(k) or "").strip() for k in DEFAULTS if k != "audio_formats"
    }
    values["audio_formats"] = [str(v) for v in form.getlist("audio_formats")]
    ids = [c for c in values["customers"].replace(",", " ").split() if c]
    body_in: dict[str, Any] = {
        "name": values["name"], "customers": ids or "all", "channel": values["channel"],
        "moment": values["moment"], "voice": values["voice"] or "auto",
        "min_hits": values["min_hits"] or None, "holdout_pct": values["holdout_pct"] or None,
        "audio_formats": values["audio_formats"] or None,
    }  # fmt: skip
    body_in = {k: v for k, v in body_in.items() if v is not None}
    errors: dict[str, str] = {}
    t = i18n.Translator(i18n.pick(request)[0])
    try:
        # lax: a form sends every value as text ("5"), where the JSON API takes numbers only
        body = CampaignCreate.model_validate(body_in, strict=False)
    except ValidationError as exc:
        for e in exc.errors():
            errors.setdefault(_field(e.get("loc", ())), _message(t, e))
    else:
        principal = Principal(key_id=user.key_id, role=user.role, prefix=user.prefix)
        try:
            accepted = create_campaign(body, principal, services, services.clock(), Response())
        except ApiError as exc:
            field = _field(str((exc.errors or [{}])[0].get("field", "form")))
            unknown = [str(e.get("error", "")).split("'")[1] for e in exc.errors
                       if "no customer" in str(e.get("error", ""))]  # fmt: skip
            if unknown:
                errors[field] = t("err.unknown_customers", ids=", ".join(unknown[:5]))
            elif field == "voice":
                errors[field] = t("err.voice")
            else:
                errors[field] = t("err.invalid")
        else:
            return RedirectResponse(f"/web/campaigns/{accepted.id}", status_code=303)
    ctx = _form_context(services, values, errors)
    return page(request, "campaigns.html", ctx, user=user, status=422)


def _message(t: i18n.Translator, error: Any) -> str:
    """A validation error in the page's language (the catalog has one text per error type)."""
    kind = str(error.get("type", ""))
    ctx = {k: v for k, v in (error.get("ctx") or {}).items() if isinstance(v, int | float | str)}
    text = t(f"err.{kind}", **ctx)
    return text if text != f"err.{kind}" else t("err.invalid")


def _progress(c: Any) -> dict[str, Any]:
    finished = c.done + c.failed
    pct = 100 if c.status != "building" else (int(100 * finished / c.total) if c.total else 0)
    return {"status": c.status, "total": c.total, "done": c.done, "failed": c.failed,
            "percent": pct}  # fmt: skip


@router.get("/{campaign_id}")
def campaign_page(
    request: Request, campaign_id: str, user: Viewer, services: ServicesDep
) -> Response:
    """One campaign: progress while it builds, then the funnel, conversion and lift."""
    with services.db.read() as session:
        c = repo.get_campaign(session=session, campaign_id=campaign_id)
        report = reports.page_report(session=session, campaign=c) if c else None
    if c is None or report is None:
        return page(request, "error.html", {"message": "error.no_campaign"}, user=user,
                    status=404)  # fmt: skip
    return page(request, "campaign.html", {"c": c, "progress": _progress(c), "report": report},
                user=user)  # fmt: skip


@router.get("/{campaign_id}/progress")
def campaign_progress(campaign_id: str, user: Viewer, services: ServicesDep) -> Response:
    """The build's progress, for the page's live bar."""
    with services.db.read() as session:
        c = repo.get_campaign(session=session, campaign_id=campaign_id)
    if c is None:
        return JSONResponse({"status": "missing"}, status_code=404, headers=HEADERS)
    return JSONResponse(_progress(c), headers=HEADERS)
