"""Outcome signatures (COMPLIANCE.md 1.4): ``X-Signature: t=<unix>,v1=<hex>``.

``v1`` is HMAC-SHA256 over ``t + "." + raw_body`` keyed with the dialler key's signing secret
(the secret's text, UTF-8). A signature is good when ``t`` is within ``tolerance_s`` of the
server's clock and any ``v1`` matches any live secret of the key (several are live during a
rotation), compared in constant time.

Secrets are derived, not stored: ``secret = "whsec_" + hex(HMAC-SHA256(master, salt))`` with a
random salt per secret kept in ``signing_secrets``. The master key comes from the setting
``signing_key`` or, when that is unset, from ``<state_dir>/signing.key`` (32 random bytes,
created on first use, mode 0600); every process that verifies must share it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session

from scripts_engine.config import Settings
from scripts_engine.errors import ScriptsEngineError

HEADER = "X-Signature"
PREFIX = "whsec_"


class SignatureError(ScriptsEngineError):
    """The request's signature is missing, malformed, stale or wrong (the message says which)."""


def master_key(settings: Settings) -> bytes:
    """The master key that secrets are derived from (see the module docstring)."""
    if settings.signing_key is not None:
        return settings.signing_key.get_secret_value().encode("utf-8")
    path = Path(settings.state_dir) / "signing.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".signing.key.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)  # first writer wins; a racing process reads the winner's key
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text(encoding="utf-8").strip().encode("utf-8")


def new_salt() -> str:
    return secrets.token_hex(16)


def derive(master: bytes, salt: str) -> str:
    """The signing secret for ``salt``, as handed to the dialler."""
    return PREFIX + hmac.new(master, salt.encode("ascii"), hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Signature`` value for ``body`` at ``timestamp`` (what a dialler computes)."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    header: str | None, body: bytes, secrets_: Iterable[str], *, now: float, tolerance_s: int
) -> None:
    """Raise :class:`SignatureError` unless ``header`` signs ``body`` with one of ``secrets_``."""
    if not header:
        raise SignatureError(f"missing {HEADER} header (t=<unix>,v1=<hex hmac-sha256>)")
    stamp, macs = None, []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            stamp = int(value)
        elif name == "v1" and value:
            macs.append(value.strip().lower())
    if stamp is None or not macs:
        raise SignatureError(f"malformed {HEADER} header: expected t=<unix>,v1=<hex>")
    if abs(now - stamp) > tolerance_s:
        raise SignatureError(f"{HEADER} timestamp is more than {tolerance_s} s from server time")
    signed = f"{stamp}.".encode() + body
    good = False
    for secret in secrets_:
        expected = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
        for mac in macs:
            good |= hmac.compare_digest(expected, mac)
    if not good:
        raise SignatureError(f"{HEADER} does not match the body and this key's signing secrets")


def issue_secret(
    session: Session,
    *,
    master: bytes,
    api_key_id: int,
    now: datetime,
    overlap_hours: float | None = None,
) -> str:
    """Create a signing secret for a key and return it (shown once). With ``overlap_hours``
    (a rotation) the key's older secrets keep working that long, then stop."""
    from scripts_engine.db import repository as repo

    salt = new_salt()
    until = None if overlap_hours is None else now + timedelta(hours=overlap_hours)
    repo.add_signing_secret(
        session=session, api_key_id=api_key_id, salt=salt, now=now, overlap_until=until
    )
    return derive(master, salt)
