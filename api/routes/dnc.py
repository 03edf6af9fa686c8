"""The do-not-call list (admin; QA may look a number up): numbers that must not be called,
whoever they are on file for (COMPLIANCE.md CR-02: the bank's own list, and the lists it must
honour, such as a regulator's or an industry's 禁呼名单). A claim's gate reads it with the
customers' own suppressions (rule ``dnc_list``). Numbers are compared in their E.164 form
(:mod:`scripts_engine.phones`): ``13800001234`` and ``+86 138 0000 1234`` are one number."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import Admin, Analyst, Now, ServicesDep
from api.errors import ERROR_RESPONSES, ApiError
from api.schemas import (
    DncEntryOut,
    DncIn,
    DncResult,
    DncStatus,
    NumberSuppressionOut,
    RowErrorOut,
)
from scripts_engine.db import repository as repo
from scripts_engine.db.session import write_transaction
from scripts_engine.phones import phone_key

router = APIRouter(prefix="/v1/dnc", tags=["do-not-call"], responses=ERROR_RESPONSES)


def _key(phone: str) -> str:
    key = phone_key(phone)
    if key is None:
        raise ApiError(422, f"'{phone}' does not read as a phone number", code="not_a_number",
                       errors=[{"field": "path.phone", "error": "not a phone number"}])  # fmt: skip
    return key


@router.post("", response_model=DncResult)
def add_numbers(body: DncIn, principal: Admin, services: ServicesDep, now: Now) -> DncResult:
    """Put numbers on the do-not-call list: from the next claim on, no customer on file with
    one of them is called (in any campaign), until the entry's `until` or until it is lifted.
    A number already on the list takes the new entry. A row whose number does not read as a
    phone number, or whose `until` has passed, is rejected with its row; the others are
    stored."""
    rejected: list[RowErrorOut] = []
    entries: dict[str, dict[str, Any]] = {}
    rows: dict[str, int] = {}
    for row, item in enumerate(body.numbers, start=1):
        key = phone_key(item.phone)
        error = None
        if key is None:
            error = ("phone", f"'{item.phone}' does not read as a phone number")
        elif key in rows:
            error = ("phone", f"the same number as row {rows[key]} ({key})")
        elif item.until is not None and item.until <= now:
            error = ("until", "has passed: an entry must end in the future (or never: null)")
        if error is not None:
            rejected.append(RowErrorOut(row=row, field=error[0], error=error[1]))
            continue
        assert key is not None
        rows[key] = row
        entries[key] = {"phone_key": key, "phone": item.phone, "source": body.source,
                        "reason": item.reason, "until": item.until}  # fmt: skip
    accepted = write_transaction(services.db, lambda s: repo.add_dnc_numbers(
        session=s, entries=list(entries.values()), now=now, added_by=principal.key_id))  # fmt: skip
    return DncResult(accepted=accepted, rejected=rejected)


@router.get("/{phone}", response_model=DncStatus)
def number_status(phone: str, _: Analyst, services: ServicesDep, now: Now) -> DncStatus:
    """Whether a number may be called now as far as the do-not-call list goes: its list entry
    in force, and the opt-outs and refusals said on it (by whichever customer)."""
    key = _key(phone)
    with services.db.read() as session:
        entry = repo.dnc_number(session=session, phone_key=key, now=now)
        blocks = repo.number_blocks(session=session, phone_key=key, now=now)
        return DncStatus(
            phone_key=key, blocked=entry is not None or bool(blocks),
            entry=DncEntryOut.model_validate(entry, from_attributes=True) if entry else None,
            suppressions=[NumberSuppressionOut.model_validate(b, from_attributes=True)
                          for b in blocks],
        )  # fmt: skip


@router.delete("/{phone}", response_model=DncEntryOut)
def lift_number(phone: str, _: Admin, services: ServicesDep, now: Now) -> DncEntryOut:
    """Take a number off the do-not-call list (its entry is kept, with `lifted_at`). Opt-outs
    and refusals said on the number stay: they are the customers' own. Calls the list held
    back for good (an entry without an end closes them) are not reopened; a new campaign
    calls the number again."""
    key = _key(phone)

    def run(session):  # type: ignore[no-untyped-def]
        row = repo.lift_dnc_number(session=session, phone_key=key, now=now)
        if row is None:
            raise ApiError(404, f"{key} is not on the do-not-call list")
        return DncEntryOut.model_validate(row, from_attributes=True)

    return write_transaction(services.db, run)
