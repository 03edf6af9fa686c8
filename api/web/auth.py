"""Sign-in for the web workspace: an API key is exchanged for a signed session cookie.

The key itself never travels in a URL and is never stored in the browser: the sign-in form
POSTs it once, the server checks it (:func:`repo.authenticate`) and answers with a cookie
``se_session`` = ``base64(json{key id, nonce, issued at}) . hmac-sha256``. The cookie is
``HttpOnly``, ``SameSite=Strict``, ``Secure`` when the request came over https, and expires
after :data:`MAX_AGE_S`.

Every request re-reads the key row, so revoking the key (``scripts-engine keys revoke``)
ends its sessions at once. Logging out deletes the cookie and records its nonce in the
database (``web_session_revocations``) until the cookie would have expired anyway, so every
server process on that database refuses a copy of it from then on; each logout also deletes
the rows that have expired.

Forms that change something carry a CSRF token derived from the session nonce (and the sign-in
form a double-submit token from a pre-session cookie); a POST without the right token is
refused. SameSite=Strict already keeps other sites' forms from sending the cookie: the token is
the second line.

The signing secret lives in ``<state_dir>/web-session.key`` (created 0600 on first use; all
server processes on one machine share it); deleting the file signs everyone out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from fastapi import Request, Response
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import Services
from scripts_engine.db.models import ApiKey, WebSessionRevocation
from scripts_engine.db.session import write_transaction

COOKIE = "se_session"
LOGIN_CSRF_COOKIE = "se_login_csrf"
MAX_AGE_S = 12 * 3600
#: Roles that may sign in to the workspace (dialler keys are for machines).
WEB_ROLES = ("admin", "writer", "qa")
_UNSET = object()


@dataclass(frozen=True)
class WebUser:
    """The signed-in person: their key's id, role and name, and the session's nonce."""

    key_id: int
    role: str
    name: str
    prefix: str
    nonce: str
    #: when the session began (unix seconds): it ends MAX_AGE_S later
    issued_at: float = 0.0

    def can(self, *roles: str) -> bool:
        return self.role in roles


class SessionSigner:
    """Signs and checks session cookies (a logged-out one is refused by :func:`current_user`,
    which reads the database)."""

    def __init__(self, secret: bytes):
        self._secret = secret

    @classmethod
    def for_state_dir(cls, state_dir: Path) -> SessionSigner:
        path = Path(state_dir) / "web-session.key"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls(path.read_bytes())
        secret = secrets.token_bytes(32)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secret)
        return cls(secret)

    def _mac(self, payload: bytes) -> str:
        return hmac.new(self._secret, payload, hashlib.sha256).hexdigest()

    def issue(self, key_id: int) -> tuple[str, str]:
        """A new cookie value for ``key_id``, and its nonce."""
        nonce = secrets.token_urlsafe(16)
        body = json.dumps({"k": key_id, "n": nonce, "t": int(time.time())}).encode()
        payload = base64.urlsafe_b64encode(body).rstrip(b"=")
        return f"{payload.decode()}.{self._mac(payload)}", nonce

    def read(self, value: str | None) -> dict[str, Any] | None:
        """The cookie's content if it is genuine and unexpired; else None."""
        if not value or "." not in value:
            return None
        payload, mac = value.rsplit(".", 1)
        if not hmac.compare_digest(mac, self._mac(payload.encode())):
            return None
        try:
            data = json.loads(
                base64.urlsafe_b64decode(payload.encode() + b"=" * (-len(payload) % 4))
            )
        except ValueError:
            return None
        if not isinstance(data, dict) or time.time() - float(data.get("t", 0)) > MAX_AGE_S:
            return None
        return data

    def csrf_token(self, nonce: str) -> str:
        return self._mac(f"csrf:{nonce}".encode())[:32]

    def check_csrf(self, nonce: str, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf_token(nonce), token or "")


def signer(request: Request) -> SessionSigner:
    """The app's signer, made on first use from the state folder."""
    state = request.app.state
    existing = getattr(state, "web_signer", None)
    if existing is None:
        services: Services = state.services
        existing = SessionSigner.for_state_dir(services.settings.state_dir)
        state.web_signer = existing
    return cast(SessionSigner, existing)


def current_user(request: Request) -> WebUser | None:
    """The signed-in user of this request, or None (no, bad, expired or revoked session)."""
    cached = getattr(request.state, "web_user", _UNSET)
    if cached is not _UNSET:
        return cast("WebUser | None", cached)
    user = None
    data = signer(request).read(request.cookies.get(COOKIE))
    if data is not None:
        services: Services = request.app.state.services
        with services.db.read() as session:
            row = session.get(ApiKey, int(data["k"]))
            ended = session.get(WebSessionRevocation, str(data["n"])[:64]) is not None
        if row is not None and row.revoked_at is None and row.role in WEB_ROLES and not ended:
            user = WebUser(key_id=row.id, role=row.role, name=row.name, prefix=row.prefix,
                           nonce=str(data["n"]), issued_at=float(data.get("t", 0)))  # fmt: skip
    request.state.web_user = user
    return user


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session(request: Request, response: Response, key_id: int) -> None:
    value, _ = signer(request).issue(key_id)
    response.set_cookie(COOKIE, value, max_age=MAX_AGE_S, httponly=True, samesite="strict",
                        secure=_secure(request), path="/")  # fmt: skip


def end_session(services: Services, user: WebUser, *, now: float | None = None) -> None:
    """Record that ``user``'s session has ended, for every process on the database; and
    delete the records of sessions whose cookies have expired since."""
    at = time.time() if now is None else now
    expires = datetime.fromtimestamp(max(user.issued_at, at - MAX_AGE_S) + MAX_AGE_S, UTC)

    def run(session: Session) -> None:
        session.execute(delete(WebSessionRevocation)
                        .where(WebSessionRevocation.expires_at < datetime.fromtimestamp(at, UTC)))  # fmt: skip
        if session.get(WebSessionRevocation, user.nonce) is None:
            session.add(WebSessionRevocation(nonce=user.nonce, expires_at=expires))

    try:
        write_transaction(services.db, run)
    except IntegrityError:  # the same session ended twice at once: it is recorded
        pass


def clear_session(request: Request, response: Response, user: WebUser | None) -> None:
    if user is not None:
        end_session(request.app.state.services, user)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                           secure=_secure(request))  # fmt: skip


def login_csrf(request: Request) -> str:
    """The pre-session double-submit token (from its cookie, or a new one)."""
    token = request.cookies.get(LOGIN_CSRF_COOKIE)
    return token if token and len(token) == 32 else secrets.token_hex(16)


def set_login_csrf(request: Request, response: Response, token: str) -> None:
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, httponly=True,
                        samesite="strict", secure=_secure(request), path="/web")  # fmt: skip
