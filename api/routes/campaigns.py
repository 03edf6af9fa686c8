"""Campaigns: start one (built in the background), follow its progress, claim its calls."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from api.deps import Admin, Dialler, Now, Reader, ServicesDep, services_of
from api.errors import ERROR_RESPONSES, ApiError
from api.lean import LeanRoute
from api.schemas import (
    CampaignAccepted,
    CampaignCreate,
    CampaignOut,
    ClaimRequest,
    ClaimResponse,
)
from scripts_engine.campaigns import start_campaign
from scripts_engine.claims import ClaimedCall, claim_calls_async
from scripts_engine.db import repository as repo
from scripts_engine.db.models import Campaign
from scripts_engine.errors import VoiceUnavailable

# the dialler's hot routes take the lean handler (api/lean.py)
router = APIRouter(
    prefix="/v1/campaigns", tags=["campaigns"], responses=ERROR_RESPONSES, route_class=LeanRoute
)


def campaign_out(services: ServicesDep, c: Campaign) -> CampaignOut:
    with services.db.read() as session:
        by_profile = repo.profile_counts(session=session, campaign_id=c.id)
        calls = repo.status_counts(session=session, campaign_id=c.id, now=services.clock())
        filtered = repo.filtered_count(session=session, campaign_id=c.id)
    return CampaignOut.model_validate(
        {"id": c.id, "name": c.name, "status": c.status, "options": c.options,
         "progress": {"total": c.total, "done": c.done, "failed": c.failed,
                      "filtered": filtered},
         "by_profile": by_profile, "calls": calls, "created_at": c.created_at}
    )  # fmt: skip


@router.post("", response_model=CampaignAccepted, status_code=202)
def create_campaign(
    body: CampaignCreate, principal: Admin, services: ServicesDep, now: Now, response: Response
) -> CampaignAccepted:
    """Plan a campaign; it is built in the background, in chunks (follow it with GET)."""
    if body.voice != "auto":
        try:
            services.toolkit.voices.get(body.voice)
        except VoiceUnavailable as exc:
            raise ApiError(
                422, str(exc), errors=[{"field": "body.voice", "error": str(exc)}]
            ) from None
    with services.db.read() as session:
        if body.customers == "all":
            ids = repo.all_customer_ids(session=session)
        else:
            ids = list(dict.fromkeys(body.customers))
            found = repo.get_customers(session=session, customer_ids=ids)
            unknown = [
                {"field": f"body.customers[{i}]", "error": f"no customer '{cid}'"}
                for i, cid in enumerate(body.customers) if cid not in found
            ][:50]  # fmt: skip
            if unknown:
                raise ApiError(422, "unknown customers", errors=unknown)
    if not ids:
        what = "no customers are stored" if body.customers == "all" else "the list is empty"
        raise ApiError(422, "a campaign needs customers", errors=[
            {"field": "body.customers", "error": f"{what}: give customer ids, or \"all\""}])  # fmt: skip
    options = body.model_dump(mode="json", exclude={"name", "customers"})
    options["customers"] = "all" if body.customers == "all" else len(ids)
    campaign_id = start_campaign(
        db=services.db, name=body.name, options=options, customer_ids=ids,
        chunk_size=services.settings.campaign_chunk_size, created_by=principal.key_id, now=now,
    )  # fmt: skip
    if services.builder is not None:
        services.builder.wake()
    response.headers["Location"] = f"/v1/campaigns/{campaign_id}"
    return CampaignAccepted(id=campaign_id, status="building")


@router.get("", response_model=list[CampaignOut])
def list_campaigns(_: Reader, services: ServicesDep) -> list[CampaignOut]:
    """The latest campaigns, newest first."""
    with services.db.read() as session:
        rows = repo.list_campaigns(session=session)
    return [campaign_out(services, c) for c in rows]


@router.get("/{campaign_id}", response_model=CampaignOut)
def get_campaign(campaign_id: str, _: Reader, services: ServicesDep) -> CampaignOut:
    """Status, progress `{total, done, failed}`, calls per profile and per state."""
    with services.db.read() as session:
        c = repo.get_campaign(session=session, campaign_id=campaign_id)
    if c is None:
        raise ApiError(404, f"no campaign '{campaign_id}'")
    return campaign_out(services, c)


_BASES: dict[tuple[Any, ...], str] = {}


def base_url(request: Request) -> str:
    """The address the client reached us at (audio URLs start with it), remembered per scheme,
    host and root path: Starlette builds it from the scope anew on every request."""
    scope = request.scope
    key = (scope.get("scheme"), request.headers.get("host"), scope.get("root_path"))
    base = _BASES.get(key)
    if base is None:
        base = str(request.base_url).rstrip("/")
        if len(_BASES) < 64:  # the host header is the client's: keep a few
            _BASES[key] = base
    return base


def claimed_out(base: str, item: ClaimedCall, now: datetime) -> bytes:
    """One claimed call as JSON (UTF-8): the per-claim fields, then the payload made at build
    time (group, profile, script) spliced in as it is stored (no parse, no re-encode)."""
    head = orjson.dumps(
        {"id": item.call_id, "campaign_id": item.campaign_id, "customer_id": item.customer_id,
         "phone": item.phone, "phone_e164": item.phone_e164,
         "audio": {fmt: f"{base}/v1/audio/{ref}" for fmt, ref in item.audio.items()},
         "window": {"not_before": now.isoformat(),
                    "not_after": item.not_after.isoformat()},
         "lease_until": item.lease_until.isoformat()},
    )  # fmt: skip
    return head[:-1] + b"," + item.payload[1:]


@router.post("/{campaign_id}/calls/claim", response_model=ClaimResponse)
async def claim(
    campaign_id: str, body: ClaimRequest, principal: Dialler, request: Request
) -> Response:
    """Lease up to `limit` ready calls to this dialler; each call passed the compliance gate
    just now. Report each with `POST /v1/calls/{id}/outcome` before `window.not_after`."""
    services = services_of(request)
    now = services.clock()
    result = await claim_calls_async(
        db=services.db, gate=services.gate, campaign_id=campaign_id,
        api_key_id=principal.key_id, limit=body.limit, lease_seconds=body.lease_seconds, now=now,
        toolkit=services.toolkit,
    )  # fmt: skip
    metrics = services.metrics
    for d in result.decisions:
        metrics.child(metrics.gate, d.rule, "true" if d.allowed else "false").inc()
    base = base_url(request)
    calls = b",".join(claimed_out(base, c, now) for c in result.calls)
    due = orjson.dumps(result.next_due.isoformat() if result.next_due else None)
    # built from rows validated when they were stored: answered without re-validating
    return Response(b'{"calls":[' + calls + b'],"next_due":' + due + b"}",
                    media_type="application/json")  # fmt: skip
