"""Calls: report an outcome (idempotent), read a call's audit record."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Query, Request, Response
from sqlalchemy import select

from api.deps import Analyst, ServicesDep, SignedDialler, services_of
from api.errors import ERROR_RESPONSES, ApiError
from api.lean import LeanRoute
from api.schemas import CallPage, CallRecordOut, CallRow, DecisionBrief, OutcomeIn, OutcomeOut
from scripts_engine.db import repository as repo
from scripts_engine.db.models import GateDecision
from scripts_engine.outcomes import outcome_public, record_outcome_async

# the dialler's hot routes take the lean handler (api/lean.py)
router = APIRouter(
    prefix="/v1/calls", tags=["calls"], responses=ERROR_RESPONSES, route_class=LeanRoute
)
Signature = Annotated[
    str | None,
    Header(
        alias="X-Signature",
        description="t=<unix seconds>,v1=<hex HMAC-SHA256(signing secret, t + '.' + raw "
        "body)>; required unless the server runs with outcome_signatures=optional.",
        max_length=1000,
        examples=["t=1778551200,v1=5f2b..."],
    ),
]
IdemKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Required: a unique key per outcome (a UUID). The same key and body "
        "replays the first answer; the same key with another body is a 409.",
        max_length=255,
    ),
]


_REPLAYED = {"Idempotent-Replayed": {
    "description": "`true` when this is the stored answer to an earlier request with the same "
                   "Idempotency-Key and body (nothing was done again).",
    "schema": {"type": "string", "enum": ["true"]}}}  # fmt: skip


@router.post("/{call_id}/outcome", response_model=OutcomeOut, status_code=201,
             responses={201: {"headers": _REPLAYED}})  # fmt: skip
async def report_outcome(
    call_id: str, body: OutcomeIn, principal: SignedDialler, request: Request,
    idempotency_key: IdemKey = None, x_signature: Signature = None,
) -> Response:  # fmt: skip
    """Report what happened on a leased call. An opt-out stops every campaign's calls to the
    customer at once; a refusal stops them for 180 days.

    Sign the raw body: `X-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(signing secret,
    t + "." + body)>` (the signing secret is shown once when the dialler key is created); a
    missing, wrong or stale (over 300 s) signature is a 401."""
    services = services_of(request)
    now = services.clock()
    if not idempotency_key or not idempotency_key.strip():
        raise ApiError(400, "send an Idempotency-Key header (a UUID per outcome)",
                       code="idempotency_key_missing")  # fmt: skip
    answer = await record_outcome_async(
        db=services.db, call_id=call_id, api_key_id=principal.key_id,
        idem_key=idempotency_key.strip(), body=body.model_dump(mode="json"), now=now,
        refusal_days=services.gate.rules.refusal_cooldown_days,
    )  # fmt: skip
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    # the stored answer was made from the validated row: sent as it is (orjson: the JSON
    # JSONResponse would send, in a fraction of its time)
    return Response(orjson.dumps(answer.body), status_code=answer.status_code,
                    headers=headers, media_type="application/json")  # fmt: skip


@router.get("", response_model=CallPage)
def list_calls(
    _: Analyst,
    services: ServicesDep,
    campaign_id: Annotated[str | None, Query(max_length=64)] = None,
    customer_id: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[Literal["ready", "leased", "blocked", "done"] | None, Query()] = None,
    after: Annotated[
        str | None,
        Query(max_length=40, description="The last id of the page before (its `next_after`)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> CallPage:
    """Calls by id, of a campaign and/or a customer, in a status, each with the gate's last
    decision: why a customer was not called (`blocked`: closed by the gate; `ready` with a
    `not_before`: put back until then). `GET /v1/calls/{id}` has the whole record."""
    with services.db.read() as session:
        rows = repo.list_calls(session=session, campaign_id=campaign_id,
                               customer_id=customer_id, status=status, after=after,
                               limit=limit)  # fmt: skip
        calls = [
            CallRow(id=c.id, campaign_id=c.campaign_id, customer_id=c.customer_id,
                    group=c.group, profile_id=c.profile_id, status=c.status,  # type: ignore[arg-type]
                    claims=c.claims, not_before=c.not_before,
                    last_decision=DecisionBrief(at=d.at, allowed=d.allowed, rule=d.rule)
                    if d is not None else None)
            for c, d in rows
        ]  # fmt: skip
    return CallPage(calls=calls, next_after=calls[-1].id if len(calls) == limit else None)


@router.get("/{call_id}", response_model=CallRecordOut)
def get_call(call_id: str, _: Analyst, services: ServicesDep) -> dict[str, Any]:
    """The call's full record: script, audit record, audio, gate decisions, outcome."""
    with services.db.read() as session:
        call = repo.get_call(session=session, call_id=call_id)
        if call is None:
            raise ApiError(404, f"no call '{call_id}'")
        outcome = repo.get_outcome(session=session, call_id=call_id)
        doc = repo.get_call_document(session=session, call_id=call_id)
        decisions = session.scalars(
            select(GateDecision).where(GateDecision.call_id == call_id).order_by(GateDecision.id)
        ).all()
        return {
            "id": call.id, "campaign_id": call.campaign_id, "customer_id": call.customer_id,
            "group": call.group, "profile_id": call.profile_id, "status": call.status,
            "claims": call.claims, "script": doc.script if doc else {}, "record": doc.record if doc else {},
            "audio": call.audio,
            "decisions": [
                {"at": d.at, "allowed": d.allowed, "rule": d.rule, "checks": d.checks,
                 "ruleset": d.ruleset, "api_key_id": d.api_key_id} for d in decisions
            ],
            "outcome": outcome_public(outcome) if outcome is not None else None,
        }  # fmt: skip
