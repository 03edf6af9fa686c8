"""Scoring and script rendering: records in, profiles and scripts out."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from api.deps import Author, Services, ServicesDep, services_of
from api.errors import ERROR_RESPONSES, ApiError
from api.lean import LeanRoute
from api.schemas import RenderRequest, ScoreRequest, ScoreResponse, ScriptOut
from scripts_engine.campaigns import Toolkit
from scripts_engine.db import repository as repo
from scripts_engine.db.session import read_core_async
from scripts_engine.errors import DataError, PersonaNotFound
from scripts_engine.features import Batch, load_customers
from scripts_engine.render_pool import RenderArgs, render_json
from scripts_engine.scoring import Engine

# the dialler's hot routes take the lean handler (api/lean.py)
router = APIRouter(
    prefix="/v1", tags=["scoring and scripts"], responses=ERROR_RESPONSES, route_class=LeanRoute
)
OPT_OUT = "the customer opted out of profiling (PIPL art. 24): not scored"


def profile_out(profile: dict[str, Any]) -> dict[str, Any]:
    return {"name": profile["name_zh"], **profile}


def _load(engine: Engine, records: list[dict[str, Any]]) -> tuple[Batch, list[dict[str, Any]]]:
    try:
        loaded = load_customers(records, engine.grid)
    except DataError as exc:
        raise ApiError(422, str(exc), code="bad_data") from None
    errors = [{"row": e.row, "field": e.field, "error": e.error} for e in loaded.errors]
    return loaded.batch, errors


@router.post("/score", response_model=ScoreResponse)
def score(body: ScoreRequest, _: Author, services: ServicesDep) -> dict[str, Any]:
    """Tag scores, hits and the persona profile of each customer, with the reason."""
    engine = services.toolkit.engine
    batch, rejected = _load(engine, [dict(c) for c in body.customers])
    opt = [bool(batch.value("profiling_opt_out", i)) for i in range(len(batch))]
    for i, flag in enumerate(opt):
        if flag:
            rejected.append({"row": int(batch.rows[i]), "field": "profiling_opt_out",
                             "error": OPT_OUT})  # fmt: skip
    keep = batch.take(np.array([i for i, f in enumerate(opt) if not f], dtype=np.int64))
    results = []
    if len(keep):
        scored = engine.score(keep)
        for i in range(len(keep)):
            e = scored.explain(i)
            results.append({**e, "profile": profile_out(e["profile"]), "reason": e["reason_zh"]})
    rejected.sort(key=lambda r: r["row"])
    return {"results": results, "rejected": rejected}


@router.post("/scripts/render", response_model=ScriptOut)
async def render(body: RenderRequest, _: Author, request: Request) -> Response:
    """Render one customer's script (stored by `customer_id`, or inline as `customer`)."""
    services = services_of(request)
    now = services.clock()
    if (body.customer is None) == (body.customer_id is None):
        raise ApiError(422, "give exactly one of customer and customer_id",
                       errors=[{"field": "body.customer", "error": "customer or customer_id"}])  # fmt: skip
    tk = services.toolkit
    if body.profile_id is not None:
        try:
            tk.engine.profiles.get(body.profile_id)
        except PersonaNotFound as exc:
            raise ApiError(422, str(exc), errors=[{"field": "body.profile_id",
                                                   "error": str(exc)}]) from None  # fmt: skip
    if body.customer_id is None:
        record, scored = await run_in_threadpool(_scored, tk, dict(body.customer or {}))
        return await _rendered(services, body, record, scored, now)
    # one row by its key, with the other renders' reads of this turn of the loop, as one
    # statement: on SQLite on the loop's thread, on PostgreSQL in the loop's executor
    row = await read_core_async(services.db, repo.CustomerForRender(body.customer_id))
    if row is None:
        raise ApiError(404, f"no customer '{body.customer_id}'")
    record, scoring, model_version = row
    if model_version != tk.model_version and not record.get("profiling_opt_out"):
        record, scored = await run_in_threadpool(_scored, tk, record)
        return await _rendered(services, body, record, scored, now)
    # scored at upsert with this model: rendered without re-scoring
    return await _rendered(services, body, record, scoring or {}, now)


def _scored(tk: Toolkit, record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The customer validated, and scored (tens of milliseconds: run in the thread pool)."""
    batch, errors = _load(tk.engine, [record])
    if errors or not len(batch):
        raise ApiError(422, "the customer is not valid", errors=[
            {"field": f"body.customer.{e['field']}", "error": e["error"]} for e in errors
        ])  # fmt: skip
    record = batch.record(0)
    scored = None if record.get("profiling_opt_out") else tk.engine.score(batch).explain(0)
    return record, scored


async def _rendered(
    services: Services,
    body: RenderRequest,
    record: dict[str, Any],
    scored: dict[str, Any] | None,
    now: datetime,
) -> Response:
    """The script's JSON, by a render worker (scripts_engine.render_pool) or, when none can
    take it, here (well under a millisecond, less than handing it to the thread pool would
    cost)."""
    args, pool = _args(body, record, scored, now), services.render_pool
    rendered = await pool.render(args) if pool is not None else None
    if rendered is None:
        # the Script is already a validated, JSON-ready structure: answer it as it is
        rendered = render_json(services.toolkit.renderer, args)
    return Response(rendered, media_type="application/json")


def _args(
    body: RenderRequest, record: dict[str, Any], scored: dict[str, Any] | None, now: datetime
) -> RenderArgs:
    """What to render: the customer's tag scores and the profile (the asked one, or the
    scored one), with the request's options."""
    tags, profile_id = None, body.profile_id
    if scored and not record.get("profiling_opt_out"):
        tags, profile_id = scored["tags"], profile_id or scored["profile"]["id"]
    return RenderArgs(record, profile_id, tags, body.channel, body.moment,
                      body.as_of or now.date())  # fmt: skip
