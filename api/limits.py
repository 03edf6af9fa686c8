"""Per-key rate limits: token buckets in this process (COMPLIANCE.md 2.1, OWASP API4).

Every authenticated request takes a token from its key's ``default`` bucket; synthesis and
the compute routes (score, render) also take one from their own, smaller bucket. An empty
bucket answers 429 with ``Retry-After`` (whole seconds until a token is back) before the
route runs, so a 429 has no side effects. Buckets live in the process: with N server
processes a key gets up to N times the rate (put a shared limiter in front to cap it
exactly).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from scripts_engine.config import Settings

#: route template -> extra bucket
ROUTE_BUCKETS = {
    "/v1/voices/synthesize": "synthesis",
    "/v1/score": "compute",
    "/v1/scripts/render": "compute",
}


class RateLimiter:
    """Token buckets per (key, bucket); :meth:`take` is thread-safe."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic):
        self.rates: dict[str, tuple[float, float]] = {
            "default": (settings.rate_limit_per_s, float(settings.rate_limit_burst)),
            "synthesis": (settings.synth_rate_per_min / 60.0, float(settings.synth_burst)),
            "compute": (settings.compute_rate_per_s, float(settings.compute_burst)),
        }
        self.clock = clock
        self._buckets: dict[tuple[int, str], tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key_id: int, route: str | None) -> float | None:
        """Take one token from each bucket this request needs; None when allowed, else the
        seconds until it would be (and no bucket is charged)."""
        names = ["default"] + ([ROUTE_BUCKETS[route]] if route in ROUTE_BUCKETS else [])
        now = self.clock()
        with self._lock:
            states, wait = [], 0.0
            for name in names:
                rate, burst = self.rates[name]
                if rate <= 0:
                    continue
                tokens, last = self._buckets.get((key_id, name), (burst, now))
                tokens = min(burst, tokens + (now - last) * rate)
                states.append(((key_id, name), tokens))
                if tokens < 1.0:
                    wait = max(wait, (1.0 - tokens) / rate)
            if wait > 0:
                return wait
            for slot, tokens in states:
                self._buckets[slot] = (tokens - 1.0, now)
        return None


def retry_after(seconds: float) -> str:
    """``Retry-After`` in whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
