"""QA pages: the review queue (and building a campaign's queue), one call to review (the script
by stage, the audio, tags and reason, the outcome, the template versions it used) with the
scorecard form, and calibration results.

Reading a review goes through the API's own route function (the same checks, the same
shape); building the queue, scoring and calibrating call :mod:`scripts_engine.qa` as the
API's routes do, so segregation of duties (nobody reviews a call made with their own
template) and blind calibration hold here too.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from api.deps import Principal, ServicesDep
from api.errors import ApiError
from api.routes.reviews import get_review
from api.schemas_writers import ScorecardIn
from api.web import i18n
from api.web.auth import WebUser
from api.web.campaign_pages import _message
from api.web.editor import Id, actor, store
from api.web.pages import check_csrf, require
from api.web.render import page
from scripts_engine import qa
from scripts_engine.db import repository as repo
from scripts_engine.db.errors import Conflict, Forbidden, NotFound

router = APIRouter(prefix="/web/reviews", include_in_schema=False)
Reviewer = Annotated[WebUser, require("admin", "qa")]
VERDICTS = ("pass", "fail", "na")
SCORES = (1, 2, 3, 4, 5)


def principal(user: WebUser) -> Principal:
    return Principal(key_id=user.key_id, role=user.role, prefix=user.prefix,
                     name=user.name.strip())  # fmt: skip


def _queue_context(
    services: ServicesDep, user: WebUser, status: str, values: dict[str, Any],
    errors: dict[str, str],
) -> dict[str, Any]:  # fmt: skip
    with services.db.read() as session:
        rows = qa.list_items(session, reviewer=actor(user).name, status=status or None,
                             mine=True, limit=200)  # fmt: skip
        campaigns = [c for c in repo.list_campaigns(session=session) if c.status == "ready"]
        items = [{"id": i.id, "batch": i.batch, "call_id": i.call_id,
                  "campaign_id": i.campaign_id, "profile_id": i.profile_id,
                  "reasons": list(i.reasons), "status": i.status, "scored": scored,
                  "created_at": i.created_at} for i, scored in rows]  # fmt: skip
        names = {c.id: c.name for c in repo.list_campaigns(session=session, limit=1000)}
    return {"items": items, "campaigns": campaigns, "names": names, "status": status,
            "values": values, "errors": errors, "reasons": qa.REASONS, "added": None,
            "cal_values": {"call_ids": "", "reviewers": ""}, "cal_errors": {}}  # fmt: skip


@router.get("")
def queue_page(
    request: Request, user: Reviewer, services: ServicesDep, status: str = "open",
    added: int | None = None,
) -> Response:  # fmt: skip
    """The reviews this user may do (open by default), and the form to fill a campaign's queue."""
    status = status if status in ("open", "done", "") else "open"
    ctx = _queue_context(services, user, status, {"campaign_id": "", "rate": ""}, {})
    ctx["added"] = added
    return page(request, "reviews.html", ctx, user=user)


@router.post("/queue")
async def build_queue(request: Request, user: Reviewer, services: ServicesDep) -> Response:
    """Add a campaign's sample and must-review calls to the queue."""
    form = await request.form()
    check_csrf(request, user, str(form.get("csrf") or ""))
    t = i18n.Translator(i18n.pick(request)[0])
    values = {"campaign_id": str(form.get("campaign_id") or ""),
              "rate": str(form.get("rate") or "").strip()}  # fmt: skip
    errors: dict[str, str] = {}
    rate = services.settings.qa_sample_rate
    if values["rate"]:
        try:
            rate = float(values["rate"]) / 100
        except ValueError:
            errors["rate"] = t("err.float_parsing")
        else:
            if not 0 <= rate <= 1:
                errors["rate"] = t("reviews.err.rate")
    if not values["campaign_id"]:
        errors["campaign_id"] = t("err.missing")
    if not errors:
        try:
            out = qa.build_queue(db=services.db, campaign_id=values["campaign_id"], rate=rate,
                                 new_version_renders=services.settings.qa_new_version_renders,
                                 actor=actor(user), now=services.clock())  # fmt: skip
        except NotFound:
            errors["campaign_id"] = t("reviews.err.no_calls")
        else:
            return RedirectResponse(f"/web/reviews?added={out['added']}", status_code=303)
    ctx = _queue_context(services, user, "open", values, errors)
    return page(request, "reviews.html", ctx, user=user, status=422)


def _review(request: Request, services: ServicesDep, review_id: int, user: WebUser) -> Any:
    detail = get_review(review_id, principal(user), services, request).model_dump()
    detail["audio"] = {fmt: "/web/audio/" + url.rsplit("/", 1)[1]
                       for fmt, url in detail["audio"].items()}  # fmt: skip
    stages: list[dict[str, Any]] = []
    for s in detail["script"].get("segments") or []:
        if not stages or stages[-1]["stage"] != s["stage"]:
            stages.append({"stage": s["stage"], "segments": []})
        stages[-1]["segments"].append(s)
    detail["stages"] = stages
    return detail


def _review_context(
    request: Request, services: ServicesDep, review_id: int, user: WebUser
) -> dict[str, Any]:
    r = _review(request, services, review_id, user)
    me = actor(user).name
    with services.db.read() as session:
        item = qa.get_item(session, review_id)
        may = qa.may_review(item, me)
    return {
        "r": r, "may_score": may and not r["scored_by_me"] and r["status"] == "open",
        "notice": None,
        "critical": qa.CRITICAL, "quality": qa.QUALITY, "quality_help": qa.QUALITY_HELP,
        "verdicts": VERDICTS, "scores": SCORES, "values": {"critical": {}, "quality": {},
        "defect_template": "", "defect_item": "", "defect_note": "", "notes": ""},
        "errors": {}, "tags": {t["name"]: t for t in _tags(services)},
    }  # fmt: skip


def _tags(services: ServicesDep) -> list[dict[str, Any]]:
    grid = services.toolkit.engine.grid
    return [{"name": n, "label_zh": s.label_zh, "label_en": s.label_en, "code": s.code}
            for n, s in grid.tags.items()]  # fmt: skip


@router.post("/calibrations")
async def start_calibration(request: Request, user: Reviewer, services: ServicesDep) -> Response:
    """Send the same calls to two or more reviewers, blind."""
    form = await request.form()
    check_csrf(request, user, str(form.get("csrf") or ""))
    t = i18n.Translator(i18n.pick(request)[0])
    values = {"call_ids": str(form.get("call_ids") or "").strip(),
              "reviewers": str(form.get("reviewers") or "").strip()}  # fmt: skip
    calls = list(dict.fromkeys(values["call_ids"].replace(",", " ").split()))
    reviewers = list(dict.fromkeys(r.strip() for r in values["reviewers"].replace("，", ",")
                                   .split(",") if r.strip()))  # fmt: skip
    errors: dict[str, str] = {}
    if not calls:
        errors["call_ids"] = t("err.missing")
    elif len(calls) > 20:
        errors["call_ids"] = t("err.too_long", max_length=20)
    if len(reviewers) < 2:
        errors["reviewers"] = t("reviews.err.two_reviewers")
    if not errors:
        try:
            batch = qa.start_calibration(db=services.db, call_ids=calls, reviewers=reviewers,
                                         actor=actor(user), now=services.clock())  # fmt: skip
        except NotFound as exc:
            errors["call_ids"] = str(exc)
        except Forbidden as exc:
            errors["reviewers"] = str(exc)
        else:
            return RedirectResponse(f"/web/reviews/calibrations/{batch}", status_code=303)
    ctx = _queue_context(services, user, "open", {"campaign_id": "", "rate": ""}, {})
    ctx["cal_values"], ctx["cal_errors"] = values, errors
    return page(request, "reviews.html", ctx, user=user, status=422)


@router.get("/calibrations/{session_id}")
def calibration_page(
    request: Request, session_id: str, user: Reviewer, services: ServicesDep
) -> Response:
    """The spread between reviewers (scores once everyone has scored; admins at once)."""
    with services.db.read() as session:
        items = qa.list_items(session, reviewer=actor(user).name, batch=session_id,
                              mine=False, limit=1000)  # fmt: skip
        complete = bool(items) and all(i.status == "done" for i, _ in items)
        try:
            report = qa.calibration_report(session, session_id,
                                           reveal=complete or user.role == "admin")  # fmt: skip
        except NotFound:
            return page(request, "error.html", {"message": "error.no_review"}, user=user,
                        status=404)  # fmt: skip
    return page(request, "calibration.html", {"c": report, "quality": qa.QUALITY}, user=user)


@router.get("/{review_id}")
def review_page(
    request: Request, review_id: Id, user: Reviewer, services: ServicesDep, scored: str = ""
) -> Response:
    """One call to review, and the scorecard."""
    try:
        ctx = _review_context(request, services, review_id, user)
    except (NotFound, ApiError):
        return page(request, "error.html", {"message": "error.no_review"}, user=user,
                    status=404)  # fmt: skip
    if scored:
        ctx["notice"] = "reviews.scored"
    return page(request, "review.html", ctx, user=user)


def _scorecard_error(field: str) -> tuple[str, str]:
    """Where the core's scorecard error goes on the form, and its catalog key."""
    if field == "defects":
        return "defect_template", "reviews.err.defects"
    if field.startswith("defects"):
        which = "template" if field.endswith(".template") else "item"
        return f"defect_{which}", f"reviews.err.defect_{which}"
    return "form", f"reviews.err.{field if field in ('critical', 'quality') else 'critical'}"


@router.post("/{review_id}/scorecard")
async def score(request: Request, review_id: Id, user: Reviewer, services: ServicesDep) -> Response:
    """Score the review; errors come back next to their fields."""
    form = await request.form()
    check_csrf(request, user, str(form.get("csrf") or ""))
    t = i18n.Translator(i18n.pick(request)[0])
    critical = {k: str(form.get(f"critical.{k}") or "") for k in qa.CRITICAL}
    quality = {k: str(form.get(f"quality.{k}") or "") for k in qa.QUALITY}
    values = {"critical": critical, "quality": quality,
              "defect_template": str(form.get("defect_template") or ""),
              "defect_item": str(form.get("defect_item") or ""),
              "defect_note": str(form.get("defect_note") or "").strip(),
              "notes": str(form.get("notes") or "").strip()}  # fmt: skip
    body: dict[str, Any] = {
        "critical": {k: v for k, v in critical.items() if v},
        "quality": {k: v for k, v in quality.items() if v},
        "notes": values["notes"],
        "defects": [{"template": values["defect_template"], "item": values["defect_item"],
                     "note": values["defect_note"]}] if values["defect_template"] else [],
    }  # fmt: skip
    errors: dict[str, str] = {}
    if values["defect_template"] and not values["defect_item"]:
        errors["defect_item"] = t("err.missing")
    try:
        card = ScorecardIn.model_validate(body)
    except ValidationError as exc:
        for e in exc.errors():
            loc = [str(p) for p in e.get("loc", ())]
            if loc and loc[0] in ("critical", "quality") and len(loc) > 1:
                key = f"{loc[0]}.{loc[1]}"
            elif loc and loc[0] == "defects":
                key = "defect_" + (loc[-1] if loc[-1] in ("template", "item", "note") else "item")
            else:
                key = loc[0] if loc else "form"
            errors.setdefault(key, _message(t, e))
    else:
        if not errors:
            try:
                qa.submit_scorecard(
                    db=services.db, versions=store(services), item_id=review_id,
                    actor=actor(user), critical=card.critical.model_dump(),
                    quality=card.quality.model_dump(),
                    defects=[d.model_dump() for d in card.defects], notes=card.notes,
                    now=services.clock(),
                )  # fmt: skip
            except qa.InvalidScorecard as exc:
                key, text = _scorecard_error(exc.field)
                errors[key] = t(text)
            except NotFound:
                return page(request, "error.html", {"message": "error.no_review"}, user=user,
                            status=404)  # fmt: skip
            except (Forbidden, Conflict) as exc:
                code = getattr(exc, "code", "")
                text = t(f"reviews.err.{code}")
                errors["form"] = text if text != f"reviews.err.{code}" else str(exc)
            else:
                return RedirectResponse(f"/web/reviews/{review_id}?scored=1", status_code=303)
    try:
        ctx = _review_context(request, services, review_id, user)
    except (NotFound, ApiError):
        return page(request, "error.html", {"message": "error.no_review"}, user=user,
                    status=404)  # fmt: skip
    ctx["values"], ctx["errors"] = values, errors
    return page(request, "review.html", ctx, user=user, status=422)
