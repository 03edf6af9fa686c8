"""What routes depend on, as ``Annotated`` aliases: the services built once per app, the
caller's key (authenticated, with its role checked), the clock.

Keys travel only in ``Authorization: Bearer <key>``; a request that carries something
key-like in its URL is refused (400), so keys do not end up in proxy and server logs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError
from api.observability import Metrics
from scripts_engine.campaigns import Builder, Toolkit
from scripts_engine.config import Settings
from scripts_engine.db import repository as repo
from scripts_engine.db.session import Database
from scripts_engine.gate import Gate
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


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    key_id: int
    role: str
    prefix: str
    #: the user the key belongs to (its name; ``key:<prefix>`` for an unnamed key)
    name: str = ""

    @property
    def actor(self) -> Actor:
        """The caller as the workflows (template versions, reviews) know users."""
        return Actor(name=self.name or f"key:{self.prefix}", role=self.role, key_id=self.key_id)


def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer se_...`")


def get_principal(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller's live key, or 401. A key in the URL is refused with 400."""
    for name, value in request.query_params.multi_items():
        if name.lower() in _URL_KEY_NAMES or value.startswith(f"{repo.KEY_PREFIX}_"):
            raise ApiError(400, "API keys are accepted only in the Authorization header",
                           code="key_in_url")  # fmt: skip
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(401, "missing API key: send Authorization: Bearer <key>",
                       headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    with services.db.read() as session:
        row = repo.authenticate(session=session, key=credentials.credentials)
    if row is None:
        raise ApiError(401, "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    request.state.key_prefix = row.prefix
    return Principal(key_id=row.id, role=row.role, prefix=row.prefix, name=row.name.strip())


def require(*roles: str) -> Callable[..., Principal]:
    """A dependency that lets only ``roles`` through (403 for the others)."""

    def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if principal.role not in roles:
            raise ApiError(403, f"this route needs one of the roles: {', '.join(roles)}")
        return principal

    check.__name__ = "require_" + "_".join(roles)
    return check


def now(services: ServicesDep) -> datetime:
    return services.clock()


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


def utcnow() -> datetime:
    return datetime.now(UTC)
