"""API keys (admin only): create (the key is shown once), list, revoke (effective at once)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Admin, Now, ServicesDep
from api.errors import ERROR_RESPONSES, ApiError
from api.schemas import KeyCreate, KeyCreated, KeyOut
from scripts_engine.db import repository as repo
from scripts_engine.db.session import write_transaction

router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=ERROR_RESPONSES)


@router.post("", response_model=KeyCreated, status_code=201)
def create_key(body: KeyCreate, _: Admin, services: ServicesDep, now: Now) -> KeyCreated:
    """Create a key with a role; the response carries the key once."""

    def run(session):  # type: ignore[no-untyped-def]
        row, key = repo.create_api_key(session=session, role=body.role, name=body.name, now=now)
        return KeyCreated(**KeyOut.model_validate(row, from_attributes=True).model_dump(), key=key)

    return write_transaction(services.db, run)


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

    return write_transaction(services.db, run)
