"""Customers: upsert a JSON list, or import a CSV or Parquet file. Per-row errors; a rejected
row changes nothing. The good rows are stored in transactions of :data:`STORE_ROWS`, and a
file is read, checked and scored in chunks of :data:`READ_ROWS`: an import of 100,000 rows
held the database's write lock (and, on PostgreSQL, its customers' row locks) for the whole
of it, and every claim waited 17-25 s behind it; its memory grew with the file."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, File, UploadFile

from api.deps import Admin, Analyst, Now, ServicesDep
from api.errors import ERROR_RESPONSES, ApiError, ErrorBody
from api.schemas import CustomerRow, UpsertResult, not_scalar
from scripts_engine.db import repository as repo
from scripts_engine.db.session import write_transaction
from scripts_engine.errors import DataError
from scripts_engine.features import LoadResult, iter_customers, load_customers

log = logging.getLogger("scripts_engine.api")
router = APIRouter(
    prefix="/v1/customers",
    tags=["customers"],
    responses=ERROR_RESPONSES | {415: {"model": ErrorBody, "description": "Not CSV or Parquet"}},
)
_SUFFIX = {"csv": ".csv", "tsv": ".csv", "txt": ".csv", "parquet": ".parquet", "pq": ".parquet",
           "jsonl": ".jsonl", "ndjson": ".jsonl"}  # fmt: skip
#: rows a write transaction stores (a claim waits for at most one of them)
STORE_ROWS = 400
#: rows of a file read, checked and scored at a time
READ_ROWS = 10_000


def _store(
    services: ServicesDep,
    parts: Iterable[LoadResult],
    now: Any,
    rejected: list[dict[str, Any]],
    stored: list[int] | None = None,
) -> UpsertResult:
    """Score and store the good rows of each part, :data:`STORE_ROWS` a transaction (counted
    in ``stored[0]`` as they are committed)."""
    version = services.toolkit.model_version
    accepted, ignored = 0, None
    stored = [0] if stored is None else stored
    for loaded in parts:
        ignored = loaded.ignored if ignored is None else ignored
        rejected += [{"row": e.row, "field": e.field, "error": e.error} for e in loaded.errors]
        for start in range(0, len(loaded.batch), STORE_ROWS):
            batch = loaded.batch.take(slice(start, start + STORE_ROWS))
            records = batch.stored_records()
            scoring = services.toolkit.engine.stored_scoring(batch)
            write_transaction(services.db, lambda s, r=records, c=scoring: repo.upsert_customers(
                session=s, records=r, now=now, scoring=c, model_version=version))  # fmt: skip
            accepted += len(records)
            stored[0] = accepted
    rejected.sort(key=lambda r: r["row"])
    return UpsertResult.model_validate(
        {"accepted": accepted, "rejected": rejected, "ignored": ignored or {}}
    )


@router.post("", response_model=UpsertResult)
def upsert_customers(
    records: Annotated[list[CustomerRow], Body(max_length=10_000)],
    _: Admin,
    services: ServicesDep,
    now: Now,
) -> UpsertResult:
    """Insert or replace customers by `customer_id`; answers which rows were rejected (a bad
    value rejects its row only)."""
    pre, keep, positions = [], [], []
    for i, rec in enumerate(records):
        cid = rec.get("customer_id")
        wrong = next(((k, e) for k, v in rec.items() if (e := not_scalar(v))), None)
        if wrong is not None:
            pre.append({"row": i + 1, "field": wrong[0], "error": wrong[1]})
        elif cid is None or isinstance(cid, bool) or not str(cid).strip():
            pre.append({"row": i + 1, "field": "customer_id", "error": "missing customer_id"})
        else:
            keep.append(rec)
            positions.append(i + 1)
    try:
        loaded = load_customers(keep, services.toolkit.engine.grid) if keep else None
    except DataError as exc:
        raise ApiError(422, str(exc), code="bad_data") from None
    if loaded is None:
        return UpsertResult(accepted=0, rejected=pre)  # type: ignore[arg-type]
    for e in loaded.errors:  # rows of the kept list -> rows of the request
        row = positions[e.row - 1] if 0 < e.row <= len(positions) else e.row
        pre.append({"row": row, "field": e.field, "error": e.error})
    return _store(services, [replace(loaded, errors=[])], now, pre)


@router.post("/import", response_model=UpsertResult)
def import_customers(
    file: Annotated[
        UploadFile, File(description="A .csv (.tsv), .parquet or .jsonl file of customers.")
    ],
    _: Admin,
    services: ServicesDep,
    now: Now,
) -> UpsertResult:
    """Upsert customers from a CSV, Parquet or JSON-lines upload (the format comes from the
    file name). A CSV may be UTF-8, GBK/GB18030 or UTF-16, delimited by `,` `;` tab or `|`.
    Stored a few hundred rows a transaction: claims go on meanwhile; a file cut off midway keeps
    what was stored (send it again: customers are upserted)."""
    name = (file.filename or "").lower()
    ext = name.rsplit(".", 1)[-1] if "." in name else ""
    if ext not in _SUFFIX:
        ctype = (file.content_type or "").lower()
        ext = "parquet" if "parquet" in ctype else "csv" if "csv" in ctype else ""
    if ext not in _SUFFIX:
        raise ApiError(415, "upload a .csv, .tsv, .parquet or .jsonl file",
                       code="unsupported_media_type")  # fmt: skip
    limit = services.settings.max_upload_bytes
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{_SUFFIX[ext]}"
        size = 0
        with path.open("wb") as out:
            while chunk := file.file.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"the file is larger than {limit} bytes")
                out.write(chunk)
        parts = iter_customers(path, services.toolkit.engine.grid, chunk_rows=READ_ROWS,
                               require_id=True)  # fmt: skip
        stored = [0]
        try:  # a database error while storing is answered as any other (503, ...)
            return _store(services, _readable(parts, ext), now, [], stored)
        except DataError as exc:
            message = str(exc).replace(str(path), file.filename or "upload")
            if stored[0]:  # customers are upserted: the fixed file can be sent again
                message += f" ({stored[0]} customers before it were stored)"
            raise ApiError(422, message, code="bad_data") from None


def _readable(parts: Iterator[LoadResult], ext: str) -> Iterator[LoadResult]:
    """The parts of a file; an error of the readers that is not a :class:`DataError` (a file
    they cannot parse at all) becomes one."""
    try:
        yield from parts
    except DataError:
        raise
    except Exception as exc:
        log.exception("customer import: unreadable file")
        raise DataError(f"the file cannot be read as {ext.upper()}") from exc


# ``:path``: a bank's ids may hold a "/" ("BR01/000123"), which a path segment cannot
@router.get("/{customer_id:path}", response_model=dict[str, Any])
def get_customer(customer_id: str, _: Analyst, services: ServicesDep) -> dict[str, Any]:
    """One stored customer's record (an id with a `/` is sent as it is, or as `%2F`)."""
    with services.db.read() as session:
        row = repo.get_customer(session=session, customer_id=customer_id)
    if row is None:
        raise ApiError(404, f"no customer '{customer_id}'")
    return row.record
