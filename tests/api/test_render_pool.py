"""Render workers (``render_workers``): the service's renders of stored customers run in
worker processes, and the answers are the service's own, through a live change, a render that
fails, a worker that dies and the service's shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import pytest
from fastapi.testclient import TestClient

from scripts_engine import workers
from scripts_engine.config import Settings
from scripts_engine.render_pool import RenderArgs, RenderPool
from tests.api.conftest import Clock, auth, create_keys, demo_records, make_client
from tests.api.test_live_refresh import NEW_LINE, publish_change, signoff


def wait_for(what: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def pooled(api_settings: Settings, clock: Clock) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """A service with one render worker (ready), its keys and five stored customers
    (:data:`STORED`)."""
    settings = api_settings.model_copy(update={"render_workers": 1})
    with make_client(settings, clock, start_builder=False) as client:
        keys = create_keys(settings)
        records = [r for r in demo_records(12) if r.get("consent") == "true"][:5]
        r = client.post("/v1/customers", json=records, headers=auth(keys["admin"]))
        assert r.json()["accepted"] == 5
        STORED[:] = [rec["customer_id"] for rec in records]
        wait_for(lambda: pool_of(client).alive == 1)
        yield client, keys


STORED: list[str] = []


def pool_of(client: TestClient) -> RenderPool:
    pool = client.app.state.services.render_pool  # type: ignore[attr-defined]
    assert isinstance(pool, RenderPool)
    return pool


def render(client: TestClient, keys: dict[str, str], **body: Any) -> Any:
    r = client.post("/v1/scripts/render", json=body, headers=auth(keys["writer"]))
    assert r.status_code == 200, r.text
    return r


def in_service(client: TestClient, keys: dict[str, str], **body: Any) -> Any:
    """The same render with the workers set aside: the service's own answer."""
    services = client.app.state.services  # type: ignore[attr-defined]
    pool, services.render_pool = services.render_pool, None
    try:
        return render(client, keys, **body)
    finally:
        services.render_pool = pool


def test_workers_answer_what_the_service_renders(pooled: tuple[TestClient, dict[str, str]]):
    client, keys = pooled
    pool = pool_of(client)
    before = pool.answered
    asked = [{"customer_id": c} for c in STORED]
    asked += [{**asked[0], "channel": "wechat"}, {**asked[1], "moment": "auto"},
              {**asked[2], "as_of": "2026-06-01"},
              {"customer": demo_records(1, start=40)[0]}]  # scored here, rendered there  # fmt: skip
    for body in asked:
        assert render(client, keys, **body).content == in_service(client, keys, **body).content
    assert pool.answered - before == len(asked)  # the workers rendered every one of them
    scraped = client.get("/metrics").text
    assert "render_workers_ready 1.0" in scraped
    assert f"render_worker_renders {float(pool.answered)}" in scraped


def test_a_live_change_reaches_the_workers_before_their_next_render(
    pooled: tuple[TestClient, dict[str, str]],
):
    client, keys = pooled
    body = {"customer_id": STORED[0]}
    assert NEW_LINE not in signoff(render(client, keys, **body).json())["text"]
    publish_change(client, keys)
    answered = pool_of(client).answered
    assert NEW_LINE in signoff(render(client, keys, **body).json())["text"]
    assert pool_of(client).answered == answered + 1  # by the worker, not the service


def test_a_render_that_fails_in_a_worker_is_the_service_s_to_answer(
    pooled: tuple[TestClient, dict[str, str]],
):
    client, _keys = pooled
    pool = pool_of(client)
    record = {"customer_id": "X1", "age": 40}

    async def bad() -> Any:  # an unknown channel: the renderer raises
        return await pool.render(RenderArgs(record, None, None, "fax", "none", date(2026, 5, 12)))

    assert client.portal.call(bad) is None  # type: ignore[union-attr]
    assert pool.alive == 1  # and the worker goes on


def test_a_dead_worker_s_renders_come_back_and_it_is_replaced(
    pooled: tuple[TestClient, dict[str, str]], monkeypatch: pytest.MonkeyPatch
):
    client, keys = pooled
    monkeypatch.setattr(workers, "RESTART_INTERVAL_S", 0.2)
    pool = pool_of(client)
    first = pool.workers[0].process
    body = {"customer_id": STORED[0]}
    wanted = in_service(client, keys, **body).content
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)
    wait_for(lambda: pool.alive == 0)
    assert render(client, keys, **body).content == wanted  # rendered in the service
    wait_for(lambda: pool.alive == 1 and pool.workers[0].process is not first)
    answered = pool.answered
    assert render(client, keys, **body).content == wanted
    assert pool.answered == answered + 1


def test_a_worker_that_does_not_answer_is_replaced(
    pooled: tuple[TestClient, dict[str, str]], monkeypatch: pytest.MonkeyPatch
):
    client, keys = pooled
    monkeypatch.setattr(workers, "RESTART_INTERVAL_S", 0.2)
    monkeypatch.setattr(RenderPool, "timeout_s", 1.0)
    pool = pool_of(client)
    stuck = pool.workers[0].process
    assert stuck.pid is not None
    os.kill(stuck.pid, signal.SIGSTOP)  # alive, but answers nothing
    try:
        body = {"customer_id": STORED[0]}
        assert render(client, keys, **body).content == in_service(client, keys, **body).content
        wait_for(lambda: pool.alive == 1 and pool.workers[0].process is not stuck)
        answered = pool.answered
        render(client, keys, **body)
        assert pool.answered == answered + 1
    finally:
        if stuck.is_alive():
            os.kill(stuck.pid, signal.SIGKILL)


def test_the_workers_stop_with_the_service(api_settings: Settings, clock: Clock):
    settings = api_settings.model_copy(update={"render_workers": 2})
    with make_client(settings, clock, start_builder=False) as client:
        pool = pool_of(client)
        wait_for(lambda: pool.alive == 2)
        processes = [w.process for w in pool.workers]
    assert not any(p.is_alive() for p in processes)
    assert [p.exitcode for p in processes] == [0, 0]  # each left on its own, not killed


def test_the_default_counts_the_cpus_the_service_may_use():
    """One worker fewer than the CPUs this process may run on (a container's CPU set), so
    none on one CPU."""
    code = ("import os; os.sched_setaffinity(0, {0}); "
            "from scripts_engine.workers import auto_workers; print(auto_workers())")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"
    assert workers.auto_workers() == max(0, min(4, len(os.sched_getaffinity(0)) - 1))
