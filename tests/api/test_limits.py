"""Rate limits (COMPLIANCE.md 2.1 and 7.7): 429 with Retry-After, per key, no side effects;
synthesis has its own smaller quota."""

from __future__ import annotations

from typing import Any

from api.limits import RateLimiter
from scripts_engine.config import Settings
from tests.api.conftest import Clock, auth, create_keys, make_client, outcome
from tests.api.test_calls import claim, setup_campaign


def test_bucket_refills_and_charges_nothing_when_refused() -> None:
    t = [0.0]
    limiter = RateLimiter(Settings(rate_limit_per_s=2, rate_limit_burst=2, synth_rate_per_min=60,
                                   synth_burst=1), clock=lambda: t[0])  # fmt: skip
    assert limiter.take(1, "/v1/voices/synthesize") is None
    wait = limiter.take(1, "/v1/voices/synthesize")  # synthesis bucket empty
    assert wait is not None and 0.9 < wait <= 1.0
    assert limiter.take(1, "/v1/campaigns") is None  # the refused one took no default token
    assert limiter.take(1, "/v1/campaigns") is not None
    assert limiter.take(2, "/v1/campaigns") is None  # per key
    t[0] += 0.5
    assert limiter.take(1, "/v1/campaigns") is None


def test_429_has_retry_after_and_no_side_effects(api_settings: Settings, clock: Clock) -> None:
    settings = api_settings.model_copy(update={"rate_limit_per_s": 0.01, "rate_limit_burst": 4})
    with make_client(settings, clock, start_builder=False) as c:
        keys = create_keys(settings)
        cid = setup_campaign(c, keys, 2)  # the admin's 2 requests
        d = keys["dialler"]
        (call,) = claim(c, d, cid)
        status: list[Any] = []
        for i in range(4):
            r = outcome(c, call["id"], d, {"status": "busy"}, f"x{i}")
            status.append(r.status_code)
        assert status[:1] == [201] and 429 in status
        limited = outcome(c, call["id"], d, {"status": "connected"}, "new-key")
        assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
        r = c.post(f"/v1/campaigns/{cid}/calls/claim", json={"limit": 1}, headers=auth(d))
        assert r.status_code == 429
        # nothing happened: one outcome, and the other call was never leased
        other = create_keys(settings)["qa"]
        rec = c.get(f"/v1/campaigns/{cid}", headers=auth(other)).json()
        assert rec["calls"] == {"done": 1, "ready": 1}


def test_synthesis_quota(api_settings: Settings, clock: Clock) -> None:
    settings = api_settings.model_copy(update={"synth_rate_per_min": 1, "synth_burst": 1})
    with make_client(settings, clock, start_builder=False) as c:
        writer = auth(create_keys(settings)["writer"])
        body = {"text": "您好", "voice": "auto"}
        assert c.post("/v1/voices/synthesize", json=body, headers=writer).status_code == 201
        r = c.post("/v1/voices/synthesize", json=body, headers=writer)
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
        assert c.get("/v1/voices", headers=writer).status_code == 200  # other routes still go
