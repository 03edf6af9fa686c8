"""API keys (admin only): create (the key is shown once), list, revoke (effective at once, in
every server process of the state folder: :mod:`scripts_engine.stamps`)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from api.deps import Admin, Now, ServicesDep
from api.errors import ERROR_RESPONSES, ApiError
from api.schemas import KeyCreate, KeyCreated, KeyOut, SigningSecretOut
from scripts_engine.db import repository as repo
from scripts_engine.db.session import write_transaction
from scripts_engine.signing import issue_secret

router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=ERROR_RESPONSES)


@router.post("", response_model=KeyCreated, status_code=201)
def create_key(body: KeyCreate, _: Admin, services: ServicesDep, now: Now) -> KeyCreated:
    """Create a key with a role; the response carries the key once."""

    def run(session):  # type: ignore[no-untyped-def]
        row, key = repo.create_api_key(session=session, role=body.role, name=body.name, now=now)
        secret = None
        if row.role == "dialler":
            secret = issue_secret(session, master=services.signing_master, api_key_id=row.id,
                                  now=now)  # fmt: skip
        return KeyCreated(**KeyOut.model_validate(row, from_attributes=True).model_dump(),
                          key=key, signing_secret=secret)  # fmt: skip

    return write_transaction(services.db, run)


@router.post("/{prefix}/signing-secret", response_model=SigningSecretOut, status_code=201)
def rotate_signing_secret(
    prefix: str, _: Admin, services: ServicesDep, now: Now
) -> SigningSecretOut:
    """A new outcome-signing secret for a dialler key (shown once); the key's older secrets
    keep working for `signing_rotation_hours` (default 24), then stop."""
    hours = services.settings.signing_rotation_hours

    def run(session):  # type: ignore[no-untyped-def]
        row = repo.get_api_key(session=session, ident=prefix)
        if row is None or row.revoked_at is not None:
            raise ApiError(404, f"no live key with prefix '{prefix}'")
        if row.role != "dialler":
            raise ApiError(422, "only dialler keys sign outcomes", code="not_a_dialler_key")
        secret = issue_secret(session, master=services.signing_master, api_key_id=row.id,
                              now=now, overlap_hours=hours)  # fmt: skip
        return SigningSecretOut(prefix=row.prefix, signing_secret=secret,
                                previous_valid_until=now + timedelta(hours=hours))  # fmt: skip

    out = write_transaction(services.db, run)
    if services.keys is not None:
        services.keys.changed()  # every server process verifies the key again
    return out


@router.get("", response_model=list[KeyOut])
def list_keys(_: Admin, services: ServicesDep) -> list[KeyOut]:
    """Every key (prefixes and roles; never the secrets)."""
    with services.db.read() as session:
        return [KeyOut.model_validate(k, from_attributes=True)
                for k in repo.list_api_keys(session=session)]  # fmt: skip


@router.delete("/{prefix}", response_model=KeyOut)
def revoke_key(prefix: str, _: Admin, services: ServicesDep, now: Now) -> KeyOut:
    """Revoke a key by its prefix; the next request with it gets 401."""

    def run(session):  # type: ignore[no-untyped-def]
        row = repo.revoke_api_key(session=session, ident=prefix, now=now)
        if row is None:
            raise ApiError(404, f"no key with prefix '{prefix}'")
        return KeyOut.model_validate(row, from_attributes=True)

    out = write_transaction(services.db, run)
    if services.keys is not None:
        services.keys.changed()  # every server process stops accepting the key now
    return out
