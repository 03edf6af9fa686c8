"""The do-not-call list (admin; QA may look a number up): numbers that must not be called,
whoever they are on file for (COMPLIANCE.md CR-02: the bank's own list, and the lists it must
honour, such as a regulator's or an industry's 禁呼名单). A claim's gate reads it with the
customers' own suppressions (rule ``dnc_list``). Numbers are compared in their E.164 form
(:mod:`scripts_engine.phones`): ``13800001234`` and ``+86 138 0000 1234`` are one number."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import TypeAdapter, ValidationError

from api.deps import Admin, Analyst, Now, ServicesDep
from api.errors import ERROR_RESPONSES, ApiError, field_path
from api.schemas import (
    DncEntryOut,
    DncIn,
    DncNumberIn,
    DncResult,
    DncStatus,
    NumberSuppressionOut,
    RowErrorOut,
)
from scripts_engine.db import repository as repo
from scripts_engine.db.session import write_transaction
from scripts_engine.phones import check_phone, phone_key

router = APIRouter(prefix="/v1/dnc", tags=["do-not-call"], responses=ERROR_RESPONSES)


def _key(phone: str) -> str:
    key = phone_key(phone)
    if key is None:
        raise ApiError(422, f"'{phone}' does not read as a phone number", code="not_a_number",
                       errors=[{"field": "path.phone", "error": "not a phone number"}])  # fmt: skip
    return key


_ROW = TypeAdapter(DncNumberIn)


@router.post("", response_model=DncResult)
def add_numbers(body: DncIn, principal: Admin, services: ServicesDep, now: Now) -> DncResult:
    """Put numbers on a source's do-not-call list: from the next claim on, no customer on file
    with one of them is called (in any campaign), until the entry's `until` or until it is
    lifted. A number already on that source's list takes the new entry; other sources'
    entries stay (a bank's entry with an end never shortens a regulator's without one). A row
    that is not valid (its number is no phone number, its `until` has passed or has no time
    zone, the same number as an earlier row, ...) is rejected with its row (1-based) and field;
    the others are stored."""
    rejected: list[RowErrorOut] = []
    entries: dict[str, dict[str, Any]] = {}
    rows: dict[str, int] = {}
    for row, raw in enumerate(body.numbers, start=1):
        try:
            item = _ROW.validate_python(raw)
        except ValidationError as exc:
            rejected += [RowErrorOut(row=row, field=field_path(e["loc"]) or "numbers",
                                     error=e["msg"]) for e in exc.errors()]  # fmt: skip
            continue
        text, key = check_phone(item.phone)
        error = None
        if text is None:
            error = ("phone", f"'{item.phone}' is not a phone number ({key})")
        elif key in rows:
            error = ("phone", f"the same number as row {rows[key]} ({key})")
        elif item.until is not None and item.until <= now:
            error = ("until", "has passed: an entry must end in the future (or never: null)")
        if error is not None:
            rejected.append(RowErrorOut(row=row, field=error[0], error=error[1]))
            continue
        assert key is not None
        rows[key] = row
        entries[key] = {"phone_key": key, "phone": text, "source": body.source,
                        "reason": item.reason, "until": item.until}  # fmt: skip
    accepted = write_transaction(services.db, lambda s: repo.add_dnc_numbers(
        session=s, entries=list(entries.values()), now=now, added_by=principal.key_id))  # fmt: skip
    return DncResult(accepted=accepted, rejected=rejected)


@router.get("/{phone}", response_model=DncStatus)
def number_status(
    phone: str,
    _: Analyst,
    services: ServicesDep,
    now: Now,
    history: Annotated[bool, Query(description="Also every entry it has had.")] = False,
) -> DncStatus:
    """Whether a number may be called now as far as the do-not-call list goes: its entries in
    force (one a source), and the opt-outs and refusals said on it (by whichever customer);
    with `history=true`, every entry it has had (who listed and lifted each, and when)."""
    key = _key(phone)
    with services.db.read() as session:
        entries = repo.dnc_entries(session=session, phone_key=key, now=now)
        blocks = repo.number_blocks(session=session, phone_key=key, now=now)
        past = repo.dnc_history(session=session, phone_key=key) if history else None
        return DncStatus(
            phone_key=key, blocked=bool(entries or blocks),
            entries=[DncEntryOut.model_validate(e, from_attributes=True) for e in entries],
            suppressions=[NumberSuppressionOut.model_validate(b, from_attributes=True)
                          for b in blocks],
            history=None if past is None else [DncEntryOut.model_validate(e, from_attributes=True)
                                               for e in past],
        )  # fmt: skip


@router.delete("/{phone}", response_model=DncEntryOut)
def lift_number(
    phone: str,
    principal: Admin,
    services: ServicesDep,
    now: Now,
    source: Annotated[
        str | None,
        Query(
            max_length=64, description="Whose list to take it off (needed when several list it)."
        ),
    ] = None,
) -> DncEntryOut:
    """Take a number off a source's do-not-call list (its entry is kept, with `lifted_at` and
    `lifted_by`); other sources' entries stay. Opt-outs and refusals said on the number stay:
    they are the customers' own. Calls an entry without an end closed are not reopened; a new
    campaign calls the number again."""
    key = _key(phone)

    def run(session):  # type: ignore[no-untyped-def]
        found = repo.lift_dnc_number(session=session, phone_key=key, source=source, now=now,
                                     lifted_by=principal.key_id)  # fmt: skip
        if not found:
            where = f"the '{source}' do-not-call list" if source else "the do-not-call list"
            raise ApiError(404, f"{key} is not on {where}")
        if len(found) > 1:
            raise ApiError(409, f"{key} is on the lists of {', '.join(e.source for e in found)}: "
                           "say which to take it off (?source=...)", code="several_sources")  # fmt: skip
        return DncEntryOut.model_validate(found[0], from_attributes=True)

    return write_transaction(services.db, run)
