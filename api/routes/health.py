"""Liveness, readiness and metrics (no key needed)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import ServicesDep
from api.schemas import Health
from scripts_engine.db import repository as repo

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: the process answers. (Answered on the event loop, not in a worker thread:
    a probe never queues behind blocking work.)"""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(services: ServicesDep) -> Response:
    """Readiness: database reachable, catalog loaded, synthesis workers alive, builder running."""
    checks: dict[str, str] = {}
    try:
        services.db.ping()
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        checks["database"] = f"unreachable: {type(exc).__name__}"
    tk = services.toolkit
    checks["catalog"] = "ok" if len(tk.engine.profiles) and tk.renderer.pack else "not loaded"
    workers = getattr(services.synth, "_workers", None)
    if workers is not None:
        dead = sum(1 for w in workers if not w.process.is_alive())
        checks["synthesis"] = "ok" if not dead else f"{dead} workers dead"
    else:
        checks["synthesis"] = "ok" if services.synth is not None else "missing"
    if services.builder is not None:
        checks["builder"] = "ok" if services.builder.alive else "stopped"
    ok = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(services: ServicesDep) -> Response:
    """Prometheus metrics."""
    m = services.metrics
    with services.db.read() as session:
        for c in repo.list_campaigns(session=session, limit=50):
            m.campaign.labels(c.id, "total").set(c.total)
            m.campaign.labels(c.id, "done").set(c.done)
            m.campaign.labels(c.id, "failed").set(c.failed)
        m.synth_queue.set(len(repo.pending_chunks(session=session)))
    store = services.toolkit.store
    m.synth_segments.set(store.synthesised if store is not None else 0)
    m.workers_replaced.set(getattr(services.synth, "replaced", 0))
    pool = services.render_pool
    m.render_workers.set(pool.alive if pool is not None else 0)
    m.render_worker_renders.set(pool.answered if pool is not None else 0)
    return Response(m.exposition(), media_type=CONTENT_TYPE_LATEST)
