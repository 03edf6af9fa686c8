"""Repository: plain functions with keyword-only arguments over the ORM models.

No business rules here (the gate, the claim and the outcome rules live in their modules);
callers own the transaction (``with db.write.begin() as session``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from scripts_engine.db.models import (
    ApiKey,
    AudioFile,
    Block,
    Call,
    CallDocument,
    Campaign,
    Chunk,
    Customer,
    Outcome,
    SigningSecret,
)

ROLES = ("admin", "dialler", "writer", "qa")
KEY_PREFIX = "se"


def _insert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def _locking(session: Session, stmt: Select[Any], *, skip_locked: bool = False) -> Select[Any]:
    """``FOR UPDATE`` on PostgreSQL; SQLite's IMMEDIATE transactions already serialise."""
    if session.get_bind().dialect.name == "postgresql":
        return stmt.with_for_update(skip_locked=skip_locked)
    return stmt


# --- API keys -------------------------------------------------------------------------------


def hash_secret(secret: str) -> str:
    """sha256 of a key's secret part (keys are 256-bit random: no slow hash needed)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_api_key(*, session: Session, role: str, name: str, now: datetime) -> tuple[ApiKey, str]:
    """A new key; returns the row and the plaintext key (shown once, never stored)."""
    if role not in ROLES:
        raise ValueError(f"unknown role '{role}'; use one of {', '.join(ROLES)}")
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    row = ApiKey(
        prefix=prefix, secret_hash=hash_secret(secret), role=role, name=name, created_at=now
    )
    session.add(row)
    session.flush()
    return row, f"{KEY_PREFIX}_{prefix}_{secret}"


def authenticate(*, session: Session, key: str) -> ApiKey | None:
    """The live key matching ``key`` (constant-time compare), or None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX:
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == parts[1]))
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.secret_hash, hash_secret(parts[2])):
        return None
    return row


def revoke_api_key(*, session: Session, ident: str, now: datetime) -> ApiKey | None:
    """Revoke by id or prefix (or a whole key); returns the key, None if unknown."""
    prefix = ident.split("_")[1] if ident.startswith(f"{KEY_PREFIX}_") else ident
    stmt = select(ApiKey).where(ApiKey.prefix == prefix)
    if ident.isdigit():
        stmt = select(ApiKey).where((ApiKey.id == int(ident)) | (ApiKey.prefix == ident))
    row = session.scalar(stmt)
    if row is not None and row.revoked_at is None:
        row.revoked_at = now
    return row


def add_signing_secret(
    *, session: Session, api_key_id: int, salt: str, now: datetime, overlap_until: datetime | None
) -> None:
    """A new signing secret for a key; the key's older live secrets stop at ``overlap_until``
    (None: they stay live until their own expiry)."""
    if overlap_until is not None:
        session.execute(
            update(SigningSecret)
            .where(SigningSecret.api_key_id == api_key_id)
            .where(
                (SigningSecret.expires_at.is_(None)) | (SigningSecret.expires_at > overlap_until)
            )
            .values(expires_at=overlap_until)
        )
    session.add(SigningSecret(api_key_id=api_key_id, salt=salt, created_at=now, expires_at=None))
    session.flush()


def live_signing_salts(*, session: Session, api_key_id: int, now: datetime) -> list[str]:
    stmt = select(SigningSecret.salt).where(
        SigningSecret.api_key_id == api_key_id,
        (SigningSecret.expires_at.is_(None)) | (SigningSecret.expires_at > now),
    )
    return [str(s) for s in session.scalars(stmt.order_by(SigningSecret.id))]


def get_api_key(*, session: Session, ident: str) -> ApiKey | None:
    """A key by prefix, id or whole key."""
    prefix = ident.split("_")[1] if ident.startswith(f"{KEY_PREFIX}_") else ident
    stmt = select(ApiKey).where(ApiKey.prefix == prefix)
    if ident.isdigit():
        stmt = select(ApiKey).where((ApiKey.id == int(ident)) | (ApiKey.prefix == ident))
    return session.scalar(stmt)


def list_api_keys(*, session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


# --- customers ------------------------------------------------------------------------------


def upsert_customers(
    *,
    session: Session,
    records: Sequence[dict[str, Any]],
    now: datetime,
    scoring: Sequence[dict[str, Any] | None] | None = None,
    model_version: str | None = None,
) -> int:
    """Insert or replace customers by ``customer_id`` (with their scores, when given);
    returns how many were written."""
    if not records:
        return 0
    rows = [
        {
            "customer_id": str(r["customer_id"]),
            "record": r,
            "phone": r.get("phone"),
            "timezone": r.get("timezone"),
            "consent": bool(r.get("consent") or False),
            "profiling_opt_out": bool(r.get("profiling_opt_out") or False),
            "scoring": scoring[i] if scoring is not None else None,
            "model_version": model_version if scoring is not None else None,
            "updated_at": now,
        }
        for i, r in enumerate(records)
    ]
    insert = _insert(session)
    for start in range(0, len(rows), 500):
        stmt = insert(Customer).values(rows[start : start + 500])
        stmt = stmt.on_conflict_do_update(
            index_elements=[Customer.customer_id],
            set_={
                c: stmt.excluded[c]
                for c in (
                    "record",
                    "phone",
                    "timezone",
                    "consent",
                    "profiling_opt_out",
                    "scoring",
                    "model_version",
                )  # fmt: skip
            }
            | {"updated_at": stmt.excluded.updated_at},
        )
        session.execute(stmt)
    return len(rows)


def get_customer(*, session: Session, customer_id: str) -> Customer | None:
    return session.get(Customer, customer_id)


def get_customers(*, session: Session, customer_ids: Iterable[str]) -> dict[str, Customer]:
    ids = list(customer_ids)
    out: dict[str, Customer] = {}
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        for row in session.scalars(select(Customer).where(Customer.customer_id.in_(part))):
            out[row.customer_id] = row
    return out


def lock_customers(*, session: Session, customer_ids: Iterable[str]) -> None:
    """Row-lock customers in id order (PostgreSQL), so concurrent claims and outcomes for the
    same customer run one after another and never deadlock."""
    ids = sorted(set(customer_ids))
    if ids and session.get_bind().dialect.name == "postgresql":
        stmt = select(Customer.customer_id).where(Customer.customer_id.in_(ids))
        session.execute(stmt.order_by(Customer.customer_id).with_for_update())


def all_customer_ids(*, session: Session) -> list[str]:
    return list(session.scalars(select(Customer.customer_id).order_by(Customer.customer_id)))


def count_customers(*, session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Customer)) or 0)


def active_blocks(
    *, session: Session, customer_ids: Iterable[str], now: datetime
) -> dict[str, list[Block]]:
    ids = list(customer_ids)
    out: dict[str, list[Block]] = {}
    stmt = select(Block).where(
        Block.customer_id.in_(ids), (Block.until.is_(None)) | (Block.until > now)
    )
    for row in session.scalars(stmt):
        out.setdefault(row.customer_id, []).append(row)
    return out


# --- campaigns and chunks ----------------------------------------------------------------------


def create_campaign(
    *,
    session: Session,
    campaign_id: str,
    name: str,
    options: dict[str, Any],
    chunks: Sequence[Sequence[str]],
    created_by: int | None,
    now: datetime,
) -> Campaign:
    row = Campaign(
        id=campaign_id, name=name, options=options, status="building" if chunks else "ready",
        total=sum(len(c) for c in chunks), done=0, failed=0, created_by=created_by,
        created_at=now, updated_at=now,
    )  # fmt: skip
    session.add(row)
    session.flush()
    session.add_all(
        Chunk(campaign_id=campaign_id, index=i, customer_ids=list(ids), updated_at=now)
        for i, ids in enumerate(chunks)
    )
    return row


def get_campaign(*, session: Session, campaign_id: str, lock: bool = False) -> Campaign | None:
    """A campaign; ``lock``: row-locked on PostgreSQL (chunks finishing at once in several
    workers then add their progress one after another, never over each other)."""
    if lock:
        stmt = select(Campaign).where(Campaign.id == campaign_id)
        return session.scalar(_locking(session, stmt).execution_options(populate_existing=True))
    return session.get(Campaign, campaign_id)


def list_campaigns(*, session: Session, limit: int = 100) -> list[Campaign]:
    stmt = select(Campaign).order_by(Campaign.created_at.desc()).limit(limit)
    return list(session.scalars(stmt))


def pending_chunks(*, session: Session) -> list[tuple[str, int]]:
    """Chunks not done or failed yet, oldest campaign first."""
    stmt = (
        select(Chunk.campaign_id, Chunk.index)
        .join(Campaign, Campaign.id == Chunk.campaign_id)
        .where(Chunk.status == "pending")
        .order_by(Campaign.created_at, Chunk.campaign_id, Chunk.index)
    )
    return [(c, i) for c, i in session.execute(stmt)]


def pending_chunks_of(*, session: Session, campaign_id: str) -> int:
    stmt = select(func.count()).where(Chunk.campaign_id == campaign_id, Chunk.status == "pending")
    return int(session.scalar(stmt.select_from(Chunk)) or 0)


def get_chunk(
    *, session: Session, campaign_id: str, index: int, lock: bool = False
) -> Chunk | None:
    stmt = select(Chunk).where(Chunk.campaign_id == campaign_id, Chunk.index == index)
    return session.scalar(_locking(session, stmt) if lock else stmt)


_DOCUMENT = ("script", "record", "payload")


def insert_calls(*, session: Session, calls: Sequence[dict[str, Any]]) -> None:
    """Insert calls (state and document); a call that already exists (same campaign and
    customer, so the same id) is kept as it is."""
    if not calls:
        return
    state = [{k: v for k, v in c.items() if k not in _DOCUMENT} for c in calls]
    session.execute(_insert(session)(Call).values(state).on_conflict_do_nothing())
    docs = [{"call_id": c["id"], **{k: c.get(k) for k in _DOCUMENT}} for c in calls]
    session.execute(_insert(session)(CallDocument).values(docs).on_conflict_do_nothing())


def get_call_document(*, session: Session, call_id: str) -> CallDocument | None:
    return session.get(CallDocument, call_id)


def insert_audio_files(*, session: Session, files: Sequence[dict[str, Any]]) -> None:
    if not files:
        return
    unique = list({f["sha256"]: f for f in files}.values())
    stmt = _insert(session)(AudioFile).values(unique)
    session.execute(stmt.on_conflict_do_nothing())


def get_audio_file(*, session: Session, sha256: str) -> AudioFile | None:
    return session.get(AudioFile, sha256)


def profile_counts(*, session: Session, campaign_id: str) -> dict[str, int]:
    stmt = (
        select(Call.profile_id, func.count())
        .where(Call.campaign_id == campaign_id)
        .group_by(Call.profile_id)
    )
    return {str(p or "generic"): int(n) for p, n in session.execute(stmt)}


def status_counts(*, session: Session, campaign_id: str) -> dict[str, int]:
    stmt = (
        select(Call.status, func.count())
        .where(Call.campaign_id == campaign_id)
        .group_by(Call.status)
    )
    return {str(s): int(n) for s, n in session.execute(stmt)}


# --- calls and outcomes -----------------------------------------------------------------------


def claim_candidates(
    *, session: Session, campaign_id: str, now: datetime, limit: int
) -> list[tuple[str, str, str]]:
    """``(call id, customer id, status)`` of calls that may be handed out now: ready (and
    due), or leased with the lease expired; at most ``limit``, in call id order.

    Two index range scans on ``(campaign_id, status, id)`` (one per state), not one scan of
    the campaign. On PostgreSQL the rows are locked, skipping rows another claim holds, so two
    concurrent claims never see the same call."""
    c = Call.__table__.c
    ready = (
        select(c.id, c.customer_id, c.status)
        .where(c.campaign_id == campaign_id, c.status == "ready")
        .where((c.not_before.is_(None)) | (c.not_before <= now))
        .order_by(c.id)
        .limit(limit)
    )
    expired = (
        select(c.id, c.customer_id, c.status)
        .where(c.campaign_id == campaign_id, c.status == "leased", c.lease_until < now)
        .order_by(c.id)
        .limit(limit)
    )
    rows = [
        (str(i), str(cid), str(st))
        for stmt in (ready, expired)
        for i, cid, st in session.execute(_locking(session, stmt, skip_locked=True))
    ]
    return sorted(rows)[:limit]


def claim_subjects(
    *, session: Session, customer_ids: Iterable[str]
) -> dict[str, tuple[bool, str | None, str | None]]:
    """``customer id -> (consent, timezone, phone)``, row-locked in id order on PostgreSQL
    (so concurrent claims and outcomes for the same customer run one after another)."""
    ids = sorted(set(customer_ids))
    if not ids:
        return {}
    c = Customer.__table__.c
    stmt = select(c.customer_id, c.consent, c.timezone, c.phone).where(c.customer_id.in_(ids))
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.order_by(c.customer_id).with_for_update()
    return {str(i): (bool(k), tz, ph) for i, k, tz, ph in session.execute(stmt)}


def block_facts(
    *, session: Session, customer_ids: Iterable[str], now: datetime
) -> dict[str, list[tuple[str, datetime | None]]]:
    """``customer id -> [(kind, until), ...]`` of the suppressions in force."""
    b = Block.__table__.c
    stmt = select(b.customer_id, b.kind, b.until).where(
        b.customer_id.in_(list(customer_ids)), (b.until.is_(None)) | (b.until > now)
    )
    out: dict[str, list[tuple[str, datetime | None]]] = {}
    for cid, kind, until in session.execute(stmt):
        out.setdefault(str(cid), []).append((str(kind), until))
    return out


def call_payloads(*, session: Session, call_ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """``call id -> (payload, audio, script, record)`` for calls being handed out; the script
    and the record only where the payload was not made at build time (older calls)."""
    if not call_ids:
        return {}
    c, d = Call.__table__.c, CallDocument.__table__.c
    ids = list(call_ids)
    stmt = select(c.id, d.payload, c.audio).join_from(Call, CallDocument).where(c.id.in_(ids))
    out: dict[str, tuple[Any, ...]] = {
        str(i): (p, a, None, None) for i, p, a in session.execute(stmt)
    }
    old = [i for i, v in out.items() if v[0] is None]
    if old:
        stmt = select(d.call_id, d.script, d.record).where(d.call_id.in_(old))
        for i, script, record in session.execute(stmt):
            out[str(i)] = (None, out[str(i)][1], script, record)
    return out


def next_due(*, session: Session, campaign_id: str) -> datetime | None:
    """When the earliest waiting call of the campaign becomes due again."""
    stmt = select(func.min(Call.not_before)).where(
        Call.campaign_id == campaign_id, Call.status == "ready"
    )
    return session.scalar(stmt)


def get_call(*, session: Session, call_id: str, lock: bool = False) -> Call | None:
    stmt = select(Call).where(Call.id == call_id)
    return session.scalar(_locking(session, stmt) if lock else stmt)


def get_outcome(*, session: Session, call_id: str) -> Outcome | None:
    return session.scalar(select(Outcome).where(Outcome.call_id == call_id))


def release_lease(*, session: Session, call_id: str, status: str) -> None:
    session.execute(update(Call).where(Call.id == call_id).values(status=status, lease_until=None))
