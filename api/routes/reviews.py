"""QA reviews: build a campaign's queue, list and open reviews, score them, calibrate."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request

from api.deps import Approver, Now, Principal, ServicesDep, Staff
from api.errors import ERROR_RESPONSES, ApiError
from api.routes.scripts import profile_out
from api.routes.templates import MAX_ID, store
from api.schemas_writers import (
    CalibrationCreated,
    CalibrationIn,
    QueueIn,
    QueueOut,
    ResultOut,
    ReviewDetail,
    ReviewSummary,
    ScorecardIn,
)
from scripts_engine import qa
from scripts_engine.db import repository as repo
from scripts_engine.db.models import ReviewItem, ReviewResult
from scripts_engine.outcomes import outcome_public
from scripts_engine.versions import find_versions

router = APIRouter(prefix="/v1/reviews", tags=["reviews"], responses=ERROR_RESPONSES)
ReviewId = Annotated[int, Path(ge=1, le=MAX_ID, description="A review's id.")]


def summary(item: ReviewItem, scored: bool) -> ReviewSummary:
    return ReviewSummary(id=item.id, batch=item.batch, call_id=item.call_id,
                         campaign_id=item.campaign_id, profile_id=item.profile_id,
                         reasons=item.reasons, status=item.status,  # type: ignore[arg-type]
                         scored_by_me=scored, created_at=item.created_at)  # fmt: skip


def result_out(r: ReviewResult) -> ResultOut:
    return ResultOut(id=r.id, review_id=r.item_id, reviewer=r.reviewer, critical=r.critical,
                     quality=r.quality, score=r.score, passed=r.passed, defects=r.defects,
                     notes=r.notes, created_at=r.created_at)  # fmt: skip


@router.get("/scorecard", response_model=dict[str, Any])
def scorecard(_: Staff) -> dict[str, Any]:
    """The scorecard: critical compliance items (any fail fails the review) and the weighted
    quality items (1-5)."""
    return {"critical": qa.CRITICAL, "quality": {k: {"weight": w, "help": qa.QUALITY_HELP[k]}
                                                 for k, w in qa.QUALITY.items()},
            "reasons": list(qa.REASONS)}  # fmt: skip


@router.post("/queue", response_model=QueueOut)
def build_queue(body: QueueIn, principal: Approver, services: ServicesDep, now: Now) -> Any:
    """Add a campaign's stratified sample (per profile and template-pack version) and its
    must-review calls (opt-outs, complaints, first renders of new template versions, wealth
    offers, customers aged 60+) to the queue. Safe to repeat: adds what became due."""
    s = services.settings
    return qa.build_queue(
        db=services.db, campaign_id=body.campaign_id,
        rate=s.qa_sample_rate if body.rate is None else body.rate,
        new_version_renders=(s.qa_new_version_renders if body.new_version_renders is None
                             else body.new_version_renders),
        actor=principal.actor, now=now,
    )  # fmt: skip


@router.post("/calibrations", response_model=CalibrationCreated, status_code=201)
def start_calibration(
    body: CalibrationIn, principal: Approver, services: ServicesDep, now: Now
) -> CalibrationCreated:
    """Send the same calls to two or more reviewers, blind; follow the spread with GET."""
    reviewers = list(dict.fromkeys(r.strip() for r in body.reviewers if r.strip()))
    if len(reviewers) < 2:
        raise ApiError(422, "name at least two different reviewers",
                       errors=[{"field": "body.reviewers", "error": "at least two"}])  # fmt: skip
    batch = qa.start_calibration(db=services.db, call_ids=body.call_ids, reviewers=reviewers,
                                 actor=principal.actor, now=now)  # fmt: skip
    return CalibrationCreated(id=batch, reviews=len(dict.fromkeys(body.call_ids)))


@router.get("/calibrations/{session_id}", response_model=dict[str, Any])
def calibration(session_id: str, principal: Approver, services: ServicesDep) -> dict[str, Any]:
    """The spread between reviewers per call and overall. Scores are shown once everyone has
    scored (an admin sees them at once)."""
    with services.db.read() as session:
        items = qa.list_items(session, reviewer=principal.actor.name, batch=session_id,
                              mine=False, limit=1000)  # fmt: skip
        complete = bool(items) and all(i.status == "done" for i, _ in items)
        return qa.calibration_report(session, session_id,
                                     reveal=complete or principal.role == "admin")  # fmt: skip


@router.get("", response_model=list[ReviewSummary])
def list_reviews(
    principal: Approver, services: ServicesDep,
    campaign_id: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[Literal["open", "done"] | None, Query()] = "open",
    reason: Annotated[str | None, Query(max_length=20)] = None,
    batch: Annotated[str | None, Query(max_length=40, description="queue or a calibration id")] = None,
    all_items: Annotated[bool, Query(alias="all", description="Also items you may not review "
                                     "(your own templates, others' calibrations).")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2_147_483_647, description="Only items with "
                      "a smaller id: the next page after an item (pass the last id).")] = None,
) -> list[ReviewSummary]:  # fmt: skip
    """Review items, newest first: by default the open ones you may review. Pages of
    `limit`; for the next page pass the last item's id as `before`."""
    with services.db.read() as session:
        rows = qa.list_items(session, reviewer=principal.actor.name, campaign_id=campaign_id,
                             status=status, reason=reason, batch=batch, mine=not all_items,
                             limit=limit, before=before)  # fmt: skip
        return [summary(i, scored) for i, scored in rows]


def _detail(request: Request, services: ServicesDep, item_id: int, viewer: Principal) -> Any:
    with services.db.read() as session:
        item = qa.get_item(session, item_id)
        call = repo.get_call(session=session, call_id=item.call_id)
        doc = repo.get_call_document(session=session, call_id=item.call_id)
        if call is None or doc is None:
            raise ApiError(404, f"the call of review {item_id} no longer exists")
        outcome = repo.get_outcome(session=session, call_id=call.id)
        results = qa.results_of(session, item.id)
        stored = find_versions(session, [(t["template"], t["version"]) for t in item.templates])
        base = str(request.base_url).rstrip("/")
        audio = {fmt: f"{base}/v1/audio/{a['sha256']}.{a['ext']}"
                 for fmt, a in (doc.record.get("audio") or {}).items()}  # fmt: skip
        scoring = doc.record.get("scoring")
        templates = []
        for t in item.templates:
            v = stored.get((t["template"], t["version"]))
            templates.append({**t, "version_id": v.id if v else None,
                              "author": v.author if v else None,
                              "status": v.status if v else None})  # fmt: skip
        mine = any(r.reviewer == viewer.actor.name for r in results)
        return ReviewDetail(
            **summary(item, mine).model_dump(), group=call.group, script=doc.script,
            audio=audio,
            scoring={**scoring, "profile": profile_out(scoring["profile"])} if scoring else None,
            templates=templates,  # type: ignore[arg-type]
            outcome=outcome_public(outcome) if outcome is not None else None,
            results=[result_out(r) for r in qa.visible_results(item, results, viewer.actor)],
        )  # fmt: skip


@router.get("/{review_id}", response_model=ReviewDetail)
def get_review(
    review_id: ReviewId, principal: Approver, services: ServicesDep, request: Request
) -> ReviewDetail:
    """One review: the script, audio, tags and reason, the outcome, the template versions the
    call used (with authors), and the scorecards you may see."""
    return _detail(request, services, review_id, principal)  # type: ignore[no-any-return]


@router.post("/{review_id}/scorecard", response_model=ResultOut, status_code=201)
def score_review(
    review_id: ReviewId, body: ScorecardIn, principal: Approver, services: ServicesDep, now: Now
) -> ResultOut:
    """Score a review. Any failed critical item fails it: name the template(s) at fault in
    `defects`; their versions (taken from the call record) are flagged. You cannot review a
    call made with your own template."""
    try:
        row = qa.submit_scorecard(
            db=services.db, versions=store(services), item_id=review_id, actor=principal.actor,
            critical=body.critical.model_dump(), quality=body.quality.model_dump(),
            defects=[d.model_dump() for d in body.defects], notes=body.notes, now=now,
        )  # fmt: skip
    except qa.InvalidScorecard as exc:
        raise ApiError(422, str(exc), errors=[{"field": f"body.{exc.field}",
                                               "error": str(exc)}]) from None  # fmt: skip
    return result_out(row)
