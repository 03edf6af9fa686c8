"""Template versions: list, read, save (a new version, linted), diff, submit, approve or reject
(four eyes), publish, roll back, the audit log; and previews of drafts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from api.deps import Approver, Now, ServicesDep, Staff, Writer
from api.errors import ERROR_RESPONSES, ApiError
from api.schemas_writers import (
    ApproveIn,
    AuditOut,
    DiffOut,
    EventOut,
    RefreshIn,
    RefreshOut,
    RefreshProgress,
    RejectIn,
    RollbackIn,
    SavedVersion,
    TemplateDetail,
    TemplateSummary,
    VersionDetail,
    VersionOut,
    VersionSave,
)
from scripts_engine import versions as vs
from scripts_engine.db.models import TemplateVersion
from scripts_engine.refresh import refresh_campaign, waiting_progress

router = APIRouter(prefix="/v1", tags=["templates"], responses=ERROR_RESPONSES)
#: ids are 32-bit integers in every database
MAX_ID = 2_147_483_647
VersionId = Annotated[int, Path(ge=1, le=MAX_ID, description="A version's id.")]


def store(services: ServicesDep) -> vs.VersionStore:
    if services.versions is None:
        raise ApiError(503, "template versions are not available")
    return services.versions


def version_out(row: TemplateVersion) -> VersionOut:
    return VersionOut.model_validate(row, from_attributes=True)


def version_detail(row: TemplateVersion, events: list[Any] | None = None) -> VersionDetail:
    return VersionDetail.model_validate(
        {**version_out(row).model_dump(), "source": row.source,
         "events": [EventOut.model_validate(e, from_attributes=True) for e in events or []]}
    )  # fmt: skip


def _name(name: str) -> str:
    try:
        return vs.check_name(name)
    except ValueError as exc:
        raise ApiError(422, str(exc), errors=[{"field": "path.name", "error": str(exc)}]) from None


@router.get("/templates", response_model=list[TemplateSummary])
def list_templates(
    _: Staff, services: ServicesDep,
    prefix: Annotated[str | None, Query(max_length=200, examples=["call/"])] = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Every writer-editable file (templates and styles.yaml) with its live version."""
    with services.db.read() as session:
        return vs.summaries(session, prefix)


@router.get("/templates/{name:path}", response_model=TemplateDetail)
def get_template(name: str, _: Staff, services: ServicesDep) -> TemplateDetail:
    """A file's live version (with its text) and all its versions, newest first."""
    _name(name)
    with services.db.read() as session:
        rows = vs.versions_of(session, name)
        if not rows:
            raise ApiError(404, f"no template '{name}'")
        live = next((r for r in rows if r.status == "live"), None)
        return TemplateDetail(name=name, kind=vs.kind_of(name),
                              live=version_detail(live) if live else None,
                              versions=[version_out(r) for r in rows])  # fmt: skip


@router.put("/templates/{name:path}", response_model=SavedVersion, status_code=201,
            responses={200: {"model": SavedVersion, "description": "This text is already a "
                             "version: that version is answered"}})  # fmt: skip
def save_template(
    name: str, body: VersionSave, principal: Writer, services: ServicesDep, now: Now,
    response: Response,
) -> SavedVersion:  # fmt: skip
    """Save a new version (a draft). Lint runs now and its findings are stored with the
    version: a draft with errors is kept but cannot be submitted or approved."""
    _name(name)
    row, created = store(services).save(name=name, source=body.source, actor=principal.actor,
                                        message=body.message, now=now, parent=body.parent)  # fmt: skip
    if not created:
        response.status_code = 200
    response.headers["Location"] = f"/v1/template-versions/{row.id}"
    return SavedVersion.model_validate({**version_detail(row).model_dump(), "created": created})


@router.get("/template-versions/{version_id}", response_model=VersionDetail)
def get_version(version_id: VersionId, _: Staff, services: ServicesDep) -> VersionDetail:
    """One version: its text, lint findings, workflow state and audit events."""
    with services.db.read() as session:
        row = vs.get_version(session, version_id)
        events = [e for e in vs.events(session, name=row.name, limit=1000)
                  if e.version == row.version]  # fmt: skip
        return version_detail(row, events)


@router.get("/template-versions/{version_id}/diff", response_model=DiffOut)
def diff_version(
    version_id: VersionId, _: Staff, services: ServicesDep,
    against: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Another version's id; default: the live "
                                         "version of the same file.")] = None,
) -> DiffOut:  # fmt: skip
    """Unified diff from `against` (default: the live version) to this version."""
    with services.db.read() as session:
        row = vs.get_version(session, version_id)
        if against is None:
            base = vs.live_versions(session).get(row.name)
            if base is None:
                raise ApiError(404, f"'{row.name}' has no live version; give `against`")
        else:
            base = vs.get_version(session, against)
        return DiffOut.model_validate({"from": version_out(base), "to": version_out(row),
                                       "diff": vs.diff(base, row)})  # fmt: skip


@router.post("/template-versions/{version_id}/submit", response_model=VersionOut)
def submit(version_id: VersionId, principal: Writer, services: ServicesDep, now: Now) -> VersionOut:
    """Submit a draft (without lint errors) for approval."""
    return version_out(store(services).submit(version_id, actor=principal.actor, now=now))


@router.post("/template-versions/{version_id}/approve", response_model=VersionOut)
def approve(
    version_id: VersionId, body: ApproveIn, principal: Approver, services: ServicesDep, now: Now
) -> VersionOut:
    """Approve a submitted version: a qa or admin user who is not its author; lint runs again
    against the live set and must be clean. `publish: true` also makes it live."""
    row = store(services).approve(version_id, actor=principal.actor, now=now, note=body.note,
                                  publish=body.publish)  # fmt: skip
    return version_out(row)


@router.post("/template-versions/{version_id}/reject", response_model=VersionOut)
def reject(
    version_id: VersionId, body: RejectIn, principal: Approver, services: ServicesDep, now: Now
) -> VersionOut:
    """Reject a submitted version with reasons (not the author)."""
    reasons = [r.strip() for r in body.reasons if r.strip()]
    if not reasons:
        raise ApiError(422, "give at least one reason",
                       errors=[{"field": "body.reasons", "error": "empty"}])  # fmt: skip
    return version_out(store(services).reject(version_id, actor=principal.actor, now=now,
                                              reasons=reasons))  # fmt: skip


@router.post("/template-versions/{version_id}/publish", response_model=VersionOut)
def publish(version_id: VersionId, principal: Staff, services: ServicesDep, now: Now) -> VersionOut:
    """Make an approved version live: the next render uses it (no restart)."""
    return version_out(store(services).publish(version_id, actor=principal.actor, now=now))


@router.post("/template-versions/{version_id}/rollback", response_model=VersionOut)
def rollback(
    version_id: VersionId, body: RollbackIn, principal: Approver, services: ServicesDep, now: Now
) -> VersionOut:
    """Make an earlier approved version live again."""
    return version_out(store(services).rollback(version_id, actor=principal.actor, now=now,
                                                reason=body.reason))  # fmt: skip


@router.get("/template-events", response_model=AuditOut)
def audit_log(
    _: Staff, services: ServicesDep,
    name: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> AuditOut:  # fmt: skip
    """The append-only audit log (newest first) and whether its hash chain verifies."""
    with services.db.read() as session:
        ok, bad = vs.verify_chain(session)
        rows = vs.events(session, name=name, limit=limit)
        return AuditOut(chain_ok=ok, first_bad_id=bad,
                        events=[EventOut.model_validate(e, from_attributes=True) for e in rows])  # fmt: skip


@router.post("/campaigns/{campaign_id}/refresh-scripts", response_model=RefreshOut)
def refresh_scripts(
    campaign_id: str, body: RefreshIn, _: Approver, services: ServicesDep, now: Now
) -> dict[str, Any]:
    """Re-render (and re-synthesise) now a built campaign's calls still waiting to be claimed
    whose script used a template or styles version that is no longer live (the background
    refresh does this by itself after a live change, and a claim checks each call it hands
    out); `every` re-renders all of them. Calls already handed out keep what they said."""
    return refresh_campaign(db=services.db, toolkit=services.toolkit, campaign_id=campaign_id,
                            now=now, every=body.every)  # fmt: skip


@router.get("/campaigns/{campaign_id}/refresh-scripts", response_model=RefreshProgress)
def refresh_progress(campaign_id: str, _: Staff, services: ServicesDep) -> dict[str, Any]:
    """The background refresh's progress: waiting calls not yet checked against the live
    templates and styles (0: every waiting call has the live text)."""
    return waiting_progress(db=services.db, toolkit=services.toolkit, campaign_id=campaign_id)
