"""What routes depend on, as ``Annotated`` aliases: the services built once per app, the
caller's key (authenticated, with its role checked and its rate limit taken), the clock, and
the outcome signature check.

Keys travel only in ``Authorization: Bearer <key>``; a request that carries something
key-like in its URL is refused (400), so keys do not end up in proxy and server logs.

A verified key is remembered for ``auth_cache_s`` (default 1 s; the cache holds sha256 of the
key, never the key): most requests then need no database look-up. A revocation or a new signing
secret, through the API in any server process of this machine or through the CLI, bumps the
state folder's key stamp (:mod:`scripts_engine.stamps`), and every process's cache forgets what
it verified on its next request: the revocation takes effect at once. On other machines it
takes effect within ``auth_cache_s``. Set it to 0 to look the key up on every request.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool

from api.errors import ApiError
from api.limits import RateLimiter, retry_after
from api.observability import Metrics
from scripts_engine.campaigns import Builder, Toolkit
from scripts_engine.config import Settings
from scripts_engine.db import repository as repo
from scripts_engine.db.session import Database
from scripts_engine.gate import Gate
from scripts_engine.render_pool import RenderPool
from scripts_engine.signing import HEADER, SignatureError, derive, verify
from scripts_engine.stamps import Stamp
from scripts_engine.versions import Actor, VersionStore

_URL_KEY_NAMES = {"api_key", "apikey", "key", "token", "access_token", "authorization"}


@dataclass
class Services:
    """Everything built once in the app's lifespan."""

    settings: Settings
    db: Database
    toolkit: Toolkit
    gate: Gate
    builder: Builder | None
    metrics: Metrics
    clock: Callable[[], datetime]
    synth: Any = None
    versions: VersionStore | None = None
    render_lock: threading.Lock = field(default_factory=threading.Lock)
    limiter: RateLimiter | None = None
    keys: KeyCache | None = None
    signing_master: bytes = b""
    #: the render workers (started in the lifespan; None: renders run in the service process)
    render_pool: RenderPool | None = None


@dataclass(frozen=True)
class Principal:
    """The authenticated caller (``signing``: its live outcome-signing secrets)."""

    key_id: int
    role: str
    prefix: str
    signing: tuple[str, ...] = ()
    #: the user the key belongs to (its name; ``key:<prefix>`` for an unnamed key)
    name: str = ""

    @property
    def actor(self) -> Actor:
        """The caller as the workflows (template versions, reviews) know users."""
        return Actor(name=self.name or f"key:{self.prefix}", role=self.role, key_id=self.key_id)


class KeyCache:
    """Verified keys for a short while: sha256(key) -> (principal, monotonic expiry). With a
    ``stamp`` (the state folder's key stamp), it forgets them all when the stamp moves."""

    def __init__(self, ttl: float, stamp: Stamp | None = None):
        self.ttl, self.stamp = ttl, stamp
        self._items: dict[str, tuple[Principal, float]] = {}
        self._seen = stamp.value() if stamp is not None else 0
        #: look-ups under way: when an entry expires under load, the requests that arrive
        #: meanwhile with the same key wait for one database look-up instead of each making one
        self.pending: dict[str, asyncio.Future[Principal | None]] = {}

    def mark(self) -> int:
        """The stamp now, to give :meth:`put` for a look-up that starts now."""
        return self.stamp.value() if self.stamp is not None else 0

    def get(self, digest: str) -> Principal | None:
        if self.stamp is not None and (now := self.stamp.value()) != self._seen:
            self.clear()  # a key changed somewhere: verify again
            self._seen = now
        hit = self._items.get(digest)
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def put(self, digest: str, principal: Principal, mark: int | None = None) -> None:
        """Remember a verified key, unless the stamp moved since ``mark`` (a look-up that
        began before a revocation may have read the key live)."""
        if mark is not None and mark != self.mark():
            return
        if self.ttl > 0:
            if len(self._items) > 10_000:
                self._items.clear()
            self._items[digest] = (principal, time.monotonic() + self.ttl)

    def clear(self) -> None:
        self._items.clear()
        self.pending.clear()  # a look-up under way may predate a revocation: not shared

    def changed(self) -> None:
        """A key changed (after its commit): every process of the state folder verifies
        again, this one included."""
        if self.stamp is not None:
            self.stamp.bump()
        self.clear()


# the small dependencies are coroutines: FastAPI runs a plain function in its thread pool,
# and a hand-off there costs more than they do
async def get_services(request: Request) -> Services:
    return services_of(request)


def services_of(request: Request) -> Services:
    """The app's services, for a route that takes ``request`` rather than ``ServicesDep`` (the
    dialler's hot routes: a dependency is resolved anew on every request)."""
    return request.app.state.services  # type: ignore[no-any-return]


# the key and clock dependencies below take the services from the request, not through
# Depends(get_services): on the dialler's hot routes each level of dependencies FastAPI
# resolves costs about as much as the statements the route runs


ServicesDep = Annotated[Services, Depends(get_services)]


def _lookup(services: Services, key: str) -> Principal | None:
    now = services.clock()
    with services.db.read() as session:
        row = repo.authenticate(session=session, key=key)
        if row is None:
            return None
        salts = []
        if row.role == "dialler":
            salts = repo.live_signing_salts(session=session, api_key_id=row.id, now=now)
    signing = tuple(derive(services.signing_master, salt) for salt in salts)
    return Principal(
        key_id=row.id, role=row.role, prefix=row.prefix, signing=signing, name=row.name.strip()
    )


async def _verify(
    services: Services, cache: KeyCache | None, digest: str, key: str
) -> Principal | None:
    """The key's principal from the database, one look-up at a time per key."""
    if cache is None or cache.ttl <= 0:
        return await run_in_threadpool(_lookup, services, key)
    pending = cache.pending.get(digest)
    if pending is None:
        pending = asyncio.ensure_future(run_in_threadpool(_lookup, services, key))
        cache.pending[digest] = pending
        pending.add_done_callback(lambda done: cache.pending.pop(digest, None)
                                  if cache.pending.get(digest) is done else None)  # fmt: skip
    # shielded: a client that goes away must not cancel the look-up the others wait for
    return await asyncio.shield(pending)


def _bearer(request: Request) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, read as FastAPI's
    ``HTTPBearer`` reads it (scheme in any case, the key stripped), without the credentials
    model it builds on every request."""
    authorization = request.headers.get("authorization")
    if not authorization:
        return None
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


async def _principal(request: Request, key: str | None) -> Principal:
    """The caller's live key, or 401. A key in the URL is refused with 400."""
    services = services_of(request)
    if request.scope.get("query_string"):  # parsing an empty one costs more than the check
        for name, value in request.query_params.multi_items():
            if name.lower() in _URL_KEY_NAMES or value.startswith(f"{repo.KEY_PREFIX}_"):
                raise ApiError(400, "API keys are accepted only in the Authorization header",
                               code="key_in_url")  # fmt: skip
    if key is None:
        raise ApiError(401, "missing API key: send Authorization: Bearer <key>",
                       headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    cache = services.keys
    principal = cache.get(digest) if cache is not None else None
    if principal is None:
        mark = cache.mark() if cache is not None else 0
        principal = await _verify(services, cache, digest, key)
        if principal is None:
            raise ApiError(401, "unknown or revoked API key",
                           headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        if cache is not None:
            cache.put(digest, principal, mark)
    request.state.key_prefix = principal.prefix
    return principal


class KeyGuard(HTTPBearer):
    """A route's whole access check as one dependency: the bearer key (authenticated), its
    role (403 for the others), its rate-limit tokens (429 with ``Retry-After`` when there are
    none) and, with ``signed``, the body's ``X-Signature`` (401; with
    ``outcome_signatures: optional`` an unsigned body is let through, a bad signature not).

    One dependency, not a chain of three or four: FastAPI resolves each level of dependencies
    anew on every request, at about the cost of the statements a dialler route runs. Being an
    ``HTTPBearer``, it puts the bearer scheme in the OpenAPI schema like the plain one; it reads
    the header itself (:func:`_bearer`)."""

    def __init__(self, *roles: str, signed: bool = False):
        super().__init__(
            auto_error=False, scheme_name="HTTPBearer",
            description="An API key: `Authorization: Bearer se_...`",
        )  # fmt: skip
        self.roles, self.signed = roles, signed

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        principal = await _principal(request, _bearer(request))
        services = services_of(request)
        if principal.role not in self.roles:
            raise ApiError(403, f"this route needs one of the roles: {', '.join(self.roles)}")
        if services.limiter is not None:
            route = getattr(request.scope.get("route"), "path", None)
            wait = services.limiter.take(principal.key_id, route)
            if wait is not None:
                raise ApiError(429, "rate limit reached for this API key; retry later",
                               headers={"Retry-After": retry_after(wait)})  # fmt: skip
        if self.signed:
            await _check_signature(request, principal, services.settings)
        return principal


def require(*roles: str) -> KeyGuard:
    """A dependency that lets only ``roles`` through (see :class:`KeyGuard`)."""
    return KeyGuard(*roles)


async def now(request: Request) -> datetime:
    return services_of(request).clock()


Admin = Annotated[Principal, Depends(require("admin"))]
Dialler = Annotated[Principal, Depends(require("dialler"))]
Reader = Annotated[Principal, Depends(require("admin", "qa", "dialler"))]
Author = Annotated[Principal, Depends(require("admin", "writer", "qa"))]
Analyst = Annotated[Principal, Depends(require("admin", "qa"))]
Writer = Annotated[Principal, Depends(require("admin", "writer"))]
Approver = Annotated[Principal, Depends(require("admin", "qa"))]
Staff = Annotated[Principal, Depends(require("admin", "writer", "qa"))]
AnyRole = Annotated[Principal, Depends(require("admin", "dialler", "writer", "qa"))]
Now = Annotated[datetime, Depends(now)]


async def _check_signature(request: Request, principal: Principal, settings: Settings) -> None:
    header = request.headers.get(HEADER)
    if header is None and settings.outcome_signatures == "optional":
        return
    if not principal.signing:
        raise ApiError(401, "this key has no signing secret: create one with "
                       "scripts-engine keys rotate-signing PREFIX", code="bad_signature")  # fmt: skip
    body = await request.body()
    try:
        verify(header, body, principal.signing, now=time.time(),
               tolerance_s=settings.signature_tolerance_s)  # fmt: skip
    except SignatureError as exc:
        raise ApiError(401, str(exc), code="bad_signature") from None


#: a dialler whose request body carries a valid ``X-Signature``
SignedDialler = Annotated[Principal, Depends(KeyGuard("dialler", signed=True))]


def utcnow() -> datetime:
    return datetime.now(UTC)
