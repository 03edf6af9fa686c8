"""The served app with its campaigns built off the server process: by spawned worker processes
(``campaign_executor="local"``) and by a Dask cluster (``"dask"``). Over HTTP against a real
uvicorn server, a dialler's journey runs as it does with the inline builder: customers in, a
campaign built in chunks with progress, a call claimed with its audio, the audio fetched, the
outcome reported."""

from __future__ import annotations

import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from typing import Any

import httpx
import pytest

from api import create_app
from scripts_engine import executors as ex
from scripts_engine.config import Settings
from tests.api.conftest import Clock, auth, create_keys, demo_records, outcome
from tests.api.server import running

pytestmark = pytest.mark.slow

CUSTOMERS = 10


@contextmanager
def executor_settings(api_settings: Settings, kind: str) -> Iterator[Settings]:
    if kind == "local":
        yield api_settings.model_copy(update={"campaign_executor": "local", "campaign_workers": 2,
                                              "campaign_chunk_size": 4})  # fmt: skip
        return
    with ex.local_cluster(2) as cluster:
        yield api_settings.model_copy(update={"campaign_executor": "dask", "campaign_chunk_size": 4,
                                              "dask_address": cluster.scheduler_address})  # fmt: skip


def wait_ready(c: httpx.Client, cid: str, key: str) -> dict[str, Any]:
    """Poll the campaign until it is built; progress never goes backwards."""
    deadline, last = time.monotonic() + 300, -1
    while time.monotonic() < deadline:
        body = c.get(f"/v1/campaigns/{cid}", headers=auth(key)).json()
        assert body["progress"]["done"] >= last
        last = body["progress"]["done"]
        if body["status"] != "building":
            return dict(body)
        time.sleep(0.5)
    raise AssertionError(f"campaign {cid} still building after 300 s: {body}")


@pytest.mark.parametrize("kind", ["local", "dask"])
def test_a_campaign_built_off_the_server_process_serves_the_journey(
    api_settings: Settings, clock: Clock, kind: str
) -> None:
    with executor_settings(api_settings, kind) as settings:
        app = create_app(settings, clock=clock)
        with running(app) as base, httpx.Client(base_url=base, timeout=60) as c:
            keys = create_keys(settings)
            records = [dict(r, consent="true") for r in demo_records(CUSTOMERS)]
            r = c.post("/v1/customers", json=records, headers=auth(keys["admin"]))
            assert r.status_code == 200 and r.json()["accepted"] == CUSTOMERS, r.text
            r = c.post("/v1/campaigns", json={"name": kind, "min_hits": 0, "holdout_pct": 20},
                       headers=auth(keys["admin"]))  # fmt: skip
            assert r.status_code == 202, r.text
            cid = r.json()["id"]

            built = wait_ready(c, cid, keys["admin"])
            assert built["status"] == "ready"
            assert built["progress"] == {
                "total": CUSTOMERS,
                "done": CUSTOMERS,
                "failed": 0,
                "filtered": 0,
            }

            r = c.post(f"/v1/campaigns/{cid}/calls/claim", json={"limit": 1},
                       headers=auth(keys["dialler"]))  # fmt: skip
            assert r.status_code == 200, r.text
            (call,) = r.json()["calls"]
            assert call["script"]["text"] and call["audio"]["wav8k"].endswith(".wav")
            audio = c.get(call["audio"]["wav8k"], headers=auth(keys["dialler"]))
            assert audio.status_code == 200
            with wave.open(BytesIO(audio.content)) as w:
                assert w.getframerate() == 8000 and w.getnframes() > 8000  # over a second

            r = outcome(c, call["id"], keys["dialler"], {"status": "connected", "converted": True},
                        idem=f"{kind}-1")  # fmt: skip
            assert r.status_code == 201 and r.json()["converted"] is True, r.text
