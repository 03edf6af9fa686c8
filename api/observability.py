"""Metrics, request ids and structured logs with personal data masked (COMPLIANCE.md CR-33).

- Prometheus metrics live in a registry per app (tests build many apps): requests and
  latencies by route template, campaign progress, synthesis work and failures, gate decisions
  by rule.
- :class:`RequestMiddleware` (plain ASGI, cheap) gives every request an id (``X-Request-ID``),
  times it, counts it and writes one access-log line: method, route template, status,
  duration and the key's public prefix. Never the query string or a body.
- :class:`JsonFormatter` writes one JSON object a line; :func:`mask` replaces mobile numbers,
  ID numbers and card numbers in every message and field: ``138****1234``,
  ``1****************X``, first 6 and last 4 digits of a card.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import time
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import ErrorBody

_MOBILE = re.compile(r"(?<!\d)(\+?86[- ]?)?(1[3-9]\d)(\d{4})(\d{4})(?!\d)")
_ID = re.compile(r"(?<![\dA-Za-z])(\d)(\d{16})([\dXx])(?![\dA-Za-z])")
_CARD = re.compile(r"(?<!\d)(\d{6})(\d{6,9})(\d{4})(?!\d)")

log = logging.getLogger("scripts_engine.api.access")


def mask(text: str) -> str:
    """``text`` with mobiles, ID numbers and card numbers masked."""
    text = _ID.sub(lambda m: m.group(1) + "*" * 16 + m.group(3), text)
    text = _CARD.sub(lambda m: m.group(1) + "*" * len(m.group(2)) + m.group(3), text)
    return _MOBILE.sub(lambda m: (m.group(1) or "") + m.group(2) + "****" + m.group(4), text)


_STD = set(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    """One JSON object a line, with personal data masked."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,  # which server process (serve --workers N), or worker
            "msg": mask(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STD and not key.startswith("_") and key != "color_message":
                out[key] = mask(value) if isinstance(value, str) else value
        if record.exc_info:
            out["exc"] = mask(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False, default=str)


class MaskingFilter(logging.Filter):
    """For plain-text handlers: mask the formatted message in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = mask(record.getMessage()), None
        return True


def configure_logging(*, json_logs: bool, level: int = logging.INFO) -> None:
    """Our loggers and uvicorn's write through one masked handler (idempotent)."""
    handler = logging.StreamHandler()
    if json_logs:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        handler.addFilter(MaskingFilter())
    for name in ("scripts_engine", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level)
        logger.propagate = False
    logging.getLogger("uvicorn.access").disabled = True  # ours logs the route, not the URL


class Metrics:
    """The app's Prometheus metrics."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("http_requests_total", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=r)  # fmt: skip
        self.latency = Histogram(
            "http_request_duration_seconds", "Request latency by route", ["method", "route"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )  # fmt: skip
        # with several server processes (serve --workers N: prometheus_client's
        # multiprocess mode), what a scrape sets is the latest any process set, and what
        # each process counts is summed over the live ones. (Gauges set from a count kept
        # elsewhere have no ``_total``: Prometheus keeps that suffix for counters.)
        self.campaign = Gauge("campaign_customers", "Campaign build progress in customers",
                              ["campaign", "state"], registry=r,
                              multiprocess_mode="mostrecent")  # fmt: skip
        self.gate = Counter("gate_decisions_total", "Claim-time gate decisions by rule",
                            ["rule", "allowed"], registry=r)  # fmt: skip
        self.synth_segments = Gauge("synthesis_segments",
                                    "Segments synthesised by the service's audio store",
                                    registry=r, multiprocess_mode="livesum")  # fmt: skip
        self.synth_queue = Gauge("synthesis_queue_chunks", "Campaign chunks waiting to build",
                                 registry=r, multiprocess_mode="mostrecent")  # fmt: skip
        self.synth_failures = Counter("synthesis_failures_total",
                                      "Campaign chunks whose build failed", registry=r)  # fmt: skip
        self.workers_replaced = Gauge("synthesis_workers_replaced",
                                      "Synthesis workers killed and replaced", registry=r,
                                      multiprocess_mode="livesum")  # fmt: skip
        self.render_workers = Gauge("render_workers_ready",
                                    "Render worker processes ready to render", registry=r,
                                    multiprocess_mode="livesum")  # fmt: skip
        self.render_worker_renders = Gauge("render_worker_renders",
                                           "Renders the render workers answered", registry=r,
                                           multiprocess_mode="livesum")  # fmt: skip
        #: labelled children already made, per metric: ``labels()`` checks and joins its
        #: arguments under a lock on every call, and the hot routes count on every request
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format: this process's, or, in prometheus_client's
        multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set by ``serve --workers N``),
        every server process's."""
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, made once."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found


#: request ids: a random prefix per process and a counter (unique, and no call into the OS's
#: random source on every request: that call lets go of the interpreter lock, and getting it
#: back behind the database thread cost the event loop more than anything else a request did)
_RID_PREFIX = os.urandom(4).hex()
_rid_counter = itertools.count(1)


def _plain_route(scope: Scope, root_path: str) -> str:
    """The path template of the plain Starlette route or mount that answered (the API docs,
    the OpenAPI schema, static files): unlike FastAPI's routes they do not put themselves in
    the scope. ``unmatched`` when no route took the request. (``root_path``: the scope's as
    the request came in; a mount extends it.)"""
    router = getattr(scope.get("app"), "router", None)
    asked = {"type": "http", "path": scope["path"], "root_path": root_path,
             "method": scope.get("method", "")}  # fmt: skip
    for route in getattr(router, "routes", ()):
        if isinstance(route, Route | Mount) and route.matches(asked)[0] is not Match.NONE:
            return route.path + "/{path}" if isinstance(route, Mount) else route.path
    return "unmatched"


#: the routes whose bodies may be as large as an upload (``max_upload_bytes``, and 1 MiB)
BULK_PATHS = frozenset(
    {"/v1/customers", "/v1/customers/import", "/v1/score", "/v1/campaigns", "/v1/dnc"}
)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class BodyTooLarge(StarletteHTTPException):
    """A request body over its route's limit (its stream was cut off as it came in)."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than {limit} bytes")


def _capped(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises :class:`BodyTooLarge` once the body passes ``limit`` bytes
    (for a body sent without a Content-Length)."""
    seen = 0

    async def capped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return capped


class RequestMiddleware:
    """Request id, timing, metrics and the access log, as plain ASGI; and the body's size
    limit (``max_body``; ``bulk_body`` for :data:`BULK_PATHS`): a body with a Content-Length
    over it is a 413 before anything reads it, and one without is cut off as it passes the
    limit. (Without it, a dialler key could send a gigabyte of whitespace as a claim: the
    service read it all, and its memory grew by 1.4 GB.)"""

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body: int, bulk_body: int):
        self.app, self.metrics = app, metrics
        self.max_body, self.bulk_body = max_body, bulk_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = f"{_RID_PREFIX}{next(_rid_counter):08x}"
        scope.setdefault("state", {})["request_id"] = rid
        start = time.perf_counter()
        status = 500
        root_path = scope.get("root_path", "")
        if scope["method"] in _BODY_METHODS:
            path = scope["path"]  # with the root path in front (uvicorn --root-path)
            if root_path and path.startswith(root_path):
                path = path[len(root_path) :]
            limit = self.bulk_body if path in BULK_PATHS else self.max_body
            length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
            if length is None:
                receive = _capped(receive, limit)
            elif not length.isdigit() or int(length) > limit:
                await _too_large(send, rid, limit)
                status = 413
                self._done(scope, root_path, rid, start, status)
                return

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.setdefault("headers", [])
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self._done(scope, root_path, rid, start, status)

    def _done(self, scope: Scope, root_path: str, rid: str, start: float, status: int) -> None:
        """The request's metrics and access log line."""
        elapsed = time.perf_counter() - start
        path = getattr(scope.get("route"), "path", None) or _plain_route(scope, root_path)
        method = scope.get("method", "")
        metrics = self.metrics
        metrics.child(metrics.requests, method, path, str(status)).inc()
        metrics.child(metrics.latency, method, path).observe(elapsed)
        log.info(
            "request",
            extra={"request_id": rid, "method": method, "route": path, "status": status,
                   "duration_ms": round(elapsed * 1000, 2),
                   "key": scope.get("state", {}).get("key_prefix")},
        )  # fmt: skip


async def _too_large(send: Send, rid: str, limit: int) -> None:
    """The 413 of a body announced over its limit, in the error shape (before any route, so
    outside the app's exception handlers)."""
    body = ErrorBody(status=413, code="too_large", message=BodyTooLarge(limit).detail,
                     request_id=rid).model_dump_json().encode()  # fmt: skip
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"x-request-id", rid.encode()), (b"connection", b"close")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
