"""The app factory: ``create_app(settings)`` wires settings, storage, engine and routes.

The lifespan builds everything once: it opens the database and applies the migrations, loads
the scorer, the renderer, the voice catalog and the compliance gate, starts the synthesis
workers and the campaign builder (which resumes unfinished builds and, after a live template
change, refreshes the calls still waiting), and stops them on exit.
"""

from __future__ import annotations

import gc
import hashlib
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from fastapi import FastAPI
from prometheus_client import multiprocess

from api import errors, web
from api.deps import KeyCache, Services, utcnow
from api.limits import RateLimiter
from api.observability import Metrics, RequestMiddleware, configure_logging
from api.routes import ROUTERS, TAGS
from api.routing import include_flat, index_routes
from scripts_engine.audiostore import AudioStore
from scripts_engine.campaigns import Builder, Lease, Toolkit
from scripts_engine.config import Settings, get_settings
from scripts_engine.db.migrate import upgrade
from scripts_engine.db.session import database_url, open_database
from scripts_engine.executors import make_executor
from scripts_engine.gate import CallingRules, Gate
from scripts_engine.refresh import WaitingRefresher
from scripts_engine.render import Renderer
from scripts_engine.render_pool import RenderPool
from scripts_engine.scoring import Engine, model_version
from scripts_engine.signing import master_key
from scripts_engine.speech import Pyttsx3Synthesizer, SynthesisPool
from scripts_engine.stamps import key_stamp
from scripts_engine.versions import VersionStore
from scripts_engine.voice import get_catalog
from scripts_engine.workers import auto_workers

DESCRIPTION = """\
Persona-tailored call scripts and dialect audio for outbound diallers.

**Authentication**: `Authorization: Bearer <api key>` on every `/v1` route (create keys with
`scripts-engine keys create --role ROLE`). Roles: `admin` (keys, customers, campaigns),
`dialler` (claim calls, report outcomes, fetch audio), `writer` (render, score, synthesise;
edit templates as new versions, preview and submit them), `qa` (read scores, scripts, call
records and statistics; approve or reject other people's template versions; review calls).

**Writers and QA**: `PUT /v1/templates/{name}` saves a linted version;
`POST /v1/previews` renders and speaks drafts; `.../submit`, `.../approve` (a qa or admin user
who is not the author), `.../publish`; `/v1/reviews` is the QA queue and scorecards;
`/v1/reports` the funnel, lift against the control group and defect rates.

**Errors** have one shape: `{ok: false, status, code, message, errors: [{field, error}],
request_id}`.

**The dialler loop**: `POST /v1/campaigns/{id}/calls/claim` leases calls that passed the
compliance gate just now (consent, opt-out, refusal cool-down, calling window in the customer's
time zone, frequency caps); dial before `window.not_after`; then
`POST /v1/calls/{id}/outcome` with an `Idempotency-Key` header.
"""


def build_services(settings: Settings, clock: Callable[[], datetime]) -> Services:
    db = open_database(settings)
    upgrade(db)
    engine = Engine.load(settings)
    version = model_version(settings)
    versions = VersionStore(db, settings.personas_dir, engine.grid)
    source = None
    if settings.templates_source == "database":
        versions.seed(clock())
        source = versions.source()
    renderer = Renderer(settings.personas_dir, grid=engine.grid, source=source)
    voices = get_catalog(settings.voices_dir)
    synth: Any
    if settings.service_synthesis == "pool":
        synth = SynthesisPool(settings.synth_workers, timeout=settings.synth_timeout_s)
    else:
        synth = Pyttsx3Synthesizer(timeout=settings.synth_timeout_s)
    store = AudioStore(settings.resolved_audio_dir, catalog=voices, synth=synth)
    toolkit = Toolkit(engine, renderer, voices, store, model_version=version)
    gate = Gate(CallingRules.load(settings.personas_dir))
    metrics = Metrics()
    executor = None
    if settings.campaign_executor != "inline":
        executor = make_executor(settings, db, toolkit)
    refresher = WaitingRefresher(db, toolkit, clock)
    # one builder among the server processes of this state folder and database (serve
    # --workers N; a lock file per database: servers of two databases in one folder each build)
    url_digest = hashlib.sha256(database_url(settings).encode()).hexdigest()[:12]
    builder = Builder(db, toolkit, executor=executor, refresher=refresher.step,
                      lease=Lease(settings.state_dir / f"builder-{url_digest}.lock"))  # fmt: skip

    services: Services | None = None

    def on_live_change() -> None:
        # the next render uses the change at once (in the render workers too: they reload
        # before their next render); waiting calls follow in the background
        renderer.refresh(force=True)
        if services is not None and services.render_pool is not None:
            services.render_pool.loop.call_soon_threadsafe(services.render_pool.refresh)
        builder.wake()

    versions.on_live_change = on_live_change
    services = Services(settings=settings, db=db, toolkit=toolkit, gate=gate, builder=builder,
                        metrics=metrics, clock=clock, synth=synth, versions=versions,
                        limiter=RateLimiter(settings),
                        keys=KeyCache(settings.auth_cache_s, key_stamp(settings.state_dir)),
                        signing_master=master_key(settings))  # fmt: skip
    return services


#: how long a thread may hold the interpreter lock while another waits for it (Python's
#: default: 5 ms). The database writer thread lets go of the lock in every SQLite call and
#: must get it back from the event loop after each; under load, waiting up to 5 ms each time
#: made the writer the bottleneck: bench_api's paced claim-and-outcome cycle fell 4-15 %
#: short of the offered rate with p50 60-71 ms (two runs of three); at 1 ms it kept up with
#: p50 7-8 ms and p99 27-45 ms (see "Figures" in README.md)
SWITCH_INTERVAL_S = 0.001


def native_telemetry() -> dict[str, Any] | None:
    """FastAPI's native OpenTelemetry: as FastAPI sets it up when this process has an
    OpenTelemetry SDK (a tracer, meter or logger provider configured before the app is made,
    or ``FASTAPI_OTEL_AUTO_CONFIGURE=true``), off otherwise. Left on with nothing configured,
    FastAPI asks the OpenTelemetry API on every request whether a provider has appeared since,
    reading the environment each time: 2-3 % of the event loop's CPU under a dialler's load,
    for nothing. (The service's own metrics are Prometheus's, at ``/metrics``.)"""
    if os.getenv("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true":
        return None
    from fastapi.telemetry._api import _unconfigured
    from opentelemetry import _logs, metrics, trace

    providers = (trace.get_tracer_provider(), metrics.get_meter_provider(),
                 _logs.get_logger_provider())  # fmt: skip
    if not all(_unconfigured(p) for p in providers):
        return None
    return {"tracing": False, "metrics": False, "logs": False}


#: allocations (net of frees) between two young-generation passes of the cyclic collector
#: while the app serves (Python's default: 700). Under a dialler's load each pass found no
#: garbage at all and walked the 6,000 or so objects of the requests in flight (0.7-1.7 ms a
#: pass, about 25 us of the event loop's CPU a claim-or-outcome request); a request's objects
#: are freed by reference counting when it ends, so a rarer pass finds the same nothing
GC_YOUNG_THRESHOLD = 50_000


def create_app(
    settings: Settings | None = None,
    *,
    clock: Callable[[], datetime] = utcnow,
    start_builder: bool = True,
) -> FastAPI:
    """The service. ``clock`` gives the time the gate uses (tests pin it); without
    ``start_builder`` campaigns are only planned (tests build chunks themselves)."""
    settings = settings or get_settings()
    metrics_holder: dict[str, Metrics] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings, clock)
        services.metrics = metrics_holder["m"]
        if not start_builder:
            services.builder = None
        app.state.services = services
        if services.builder is not None:
            services.builder.start()
        workers = settings.render_workers
        workers = auto_workers() if workers is None else workers
        if workers:
            services.render_pool = RenderPool(settings, workers)
        # what start-up built (model, grid, compiled templates, catalog) lives as long as the
        # app: out of the cyclic collector's sight, its full passes stop walking it on every
        # request burst (see "Figures" in README.md)
        gc.collect()
        gc.freeze()
        thresholds = gc.get_threshold()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *thresholds[1:])
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        try:
            yield
        finally:
            sys.setswitchinterval(switch_interval)
            if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # this process's live values go
                multiprocess.mark_process_dead(os.getpid())
            if services.render_pool is not None:
                services.render_pool.close()
            if services.builder is not None:
                services.builder.stop()
            if isinstance(services.synth, SynthesisPool):
                services.synth.close()
            services.db.dispose()
            gc.set_threshold(*thresholds)
            gc.unfreeze()  # back in sight: what this app leaves behind can be collected

    app = FastAPI(
        title="scripts-engine",
        version="1",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        telemetry=native_telemetry(),
        docs_url="/docs" if settings.api_docs else None,
        redoc_url="/redoc" if settings.api_docs else None,
    )
    metrics_holder["m"] = Metrics()
    errors.install(app)
    for router in ROUTERS:
        include_flat(app, router)
    web.install(app)  # the web workspace under /web/
    index_routes(app)
    app.add_middleware(RequestMiddleware, metrics=metrics_holder["m"],
                       max_body=settings.max_body_bytes,
                       bulk_body=settings.max_upload_bytes + 2**20)  # fmt: skip
    _require_checked_headers(app, settings)
    return app


def _require_checked_headers(app: FastAPI, settings: Settings) -> None:
    """Mark in the OpenAPI schema the headers a route requires but checks itself, so that a
    missing one gets the route's own error (``Idempotency-Key``: 400
    ``idempotency_key_missing``; ``X-Signature``: 401 ``bad_signature``, unless this server
    runs with ``outcome_signatures=optional``): FastAPI lists them as optional."""
    required = {"Idempotency-Key"}
    if settings.outcome_signatures == "required":
        required.add("X-Signature")
    schema_of = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            for operations in schema_of()["paths"].values():
                for operation in operations.values():
                    for param in operation.get("parameters", []):
                        if param["in"] == "header" and param["name"] in required:
                            param["required"] = True
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_served_app() -> FastAPI:
    """The app as each process of ``serve --workers N`` starts it (a fresh interpreter):
    logging set up as the serve command sets it up in its own process, then
    :func:`create_app`."""
    settings = get_settings()
    configure_logging(json_logs=settings.log_json)
    return create_app(settings)
