"""Liveness does not depend on the worker threads."""

from __future__ import annotations

import gc
import threading

import anyio
import anyio.to_thread
import pytest
from fastapi.testclient import TestClient

from api.main import GC_YOUNG_THRESHOLD, native_telemetry
from scripts_engine.config import Settings
from tests.api.conftest import Clock, make_client


def test_liveness_answers_while_every_worker_thread_is_busy(client: TestClient) -> None:
    """``/healthz`` answers from the event loop: with every worker thread taken (slow
    blocking work piling up), an orchestrator's liveness probe still gets its answer at once
    instead of queueing for a thread until it times out and the service is restarted."""
    release, taken = threading.Event(), threading.Event()
    answers: list[int] = []

    async def occupy() -> None:
        limiter = anyio.to_thread.current_default_thread_limiter()
        tokens, limiter.total_tokens = limiter.total_tokens, 1
        try:
            await anyio.to_thread.run_sync(lambda: (taken.set(), release.wait(30)))
        finally:
            limiter.total_tokens = tokens

    assert client.portal is not None
    client.portal.start_task_soon(occupy)
    try:
        assert taken.wait(10)
        probe = threading.Thread(target=lambda: answers.append(client.get("/healthz").status_code))
        probe.start()
        probe.join(5)
        assert answers == [200], "the liveness probe waited for a worker thread"
    finally:
        release.set()
        probe.join(30)


def test_requests_are_counted_by_route_also_for_the_docs_and_static_files(
    client: TestClient,
) -> None:
    """Dashboards group requests by route: the docs, the schema and static files get their
    own path template, not ``unmatched`` (which stays for requests no route took)."""
    for path in ("/openapi.json", "/docs", "/web/static/web.css", "/no/such/page"):
        client.get(path)
    metrics = client.get("/metrics").text
    for route in ("/openapi.json", "/docs", "/web/static/{path}", "unmatched"):
        assert f'method="GET",route="{route}"' in metrics, route


def test_the_serving_app_runs_the_young_collector_rarely_and_gives_it_back(
    api_settings: Settings, clock: Clock
) -> None:
    """While the app serves, the cyclic collector's young generation waits for
    ``GC_YOUNG_THRESHOLD`` allocations (its passes under a dialler's load walked the requests in
    flight and found nothing); when the app stops, the process gets its own thresholds back."""
    before = gc.get_threshold()
    with make_client(api_settings, clock) as c:
        assert c.get("/healthz").status_code == 200
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
    assert gc.get_threshold() == before


def test_fastapi_telemetry_is_off_unless_opentelemetry_is_set_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no OpenTelemetry SDK in the process, FastAPI's native telemetry is off (it would
    ask the OpenTelemetry API on every request); asking for FastAPI's auto-configuration in
    the environment leaves it as FastAPI sets it up."""
    assert native_telemetry() == {"tracing": False, "metrics": False, "logs": False}
    monkeypatch.setenv("FASTAPI_OTEL_AUTO_CONFIGURE", "true")
    assert native_telemetry() is None
