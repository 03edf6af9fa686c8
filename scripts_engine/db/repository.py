"""Repository: plain functions with keyword-only arguments over the ORM models.

No business rules here (the gate, the claim and the outcome rules live in their modules);
callers own the transaction (``with db.write.begin() as session``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, cast

from sqlalchemy import (
    BindParameter,
    CompoundSelect,
    Connection,
    Integer,
    LargeBinary,
    Select,
    String,
    Table,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal_column,
    null,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy import cast as cast_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from scripts_engine.db.models import (
    ApiKey,
    Attempt,
    AudioFile,
    Block,
    Call,
    CallDocument,
    Campaign,
    Chunk,
    Customer,
    DncNumber,
    GateDecision,
    IdempotencyKey,
    Outcome,
    SigningSecret,
)
from scripts_engine.db.prepared import Prepared, pipelined
from scripts_engine.phones import phone_key

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
            "phone_key": phone_key(r.get("phone")),
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
                    "phone_key",
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


_RENDER_FIELDS = select(
    Customer.__table__.c.customer_id, Customer.__table__.c.record,
    Customer.__table__.c.scoring, Customer.__table__.c.model_version,
).where(Customer.__table__.c.customer_id.in_(bindparam("ids", expanding=True)))  # fmt: skip
_P_RENDER_FIELDS = Prepared(_RENDER_FIELDS)
#: ``(record, scoring, model version)`` of a stored customer: what rendering needs
RenderFields = tuple[dict[str, Any], dict[str, Any] | None, str | None]


def customers_for_render(
    *, conn: Connection, customer_ids: Iterable[str]
) -> dict[str, RenderFields]:
    """What rendering needs of the stored customers among ``customer_ids``, by id: read with
    one prebuilt statement (no ORM object) for up to 512 ids. The ids go in lists of a power
    of two (the last id repeated): a few statement shapes, each prepared once per
    connection."""
    ids = sorted(set(customer_ids))
    found: dict[str, RenderFields] = {}
    for start in range(0, len(ids), 512):
        part = ids[start : start + 512]
        part += part[-1:] * ((1 << (len(part) - 1).bit_length()) - len(part))
        for customer_id, *fields in _P_RENDER_FIELDS.rows(conn, {"ids": part}):
            found[customer_id] = (fields[0], fields[1], fields[2])
    return found


def customer_for_render(*, conn: Connection, customer_id: str) -> RenderFields | None:
    """What rendering needs of one stored customer, or None."""
    return customers_for_render(conn=conn, customer_ids=[customer_id]).get(customer_id)


@dataclass(frozen=True)
class CustomerForRender:
    """A read of :func:`customer_for_render`, as a :class:`~scripts_engine.db.session.Batchable`:
    the reads that coroutines queue together are one statement."""

    customer_id: str
    batch_key: ClassVar[str] = "customer_for_render"

    def __call__(self, conn: Connection) -> RenderFields | None:
        return customer_for_render(conn=conn, customer_id=self.customer_id)

    @staticmethod
    def together(conn: Connection, reads: Sequence[CustomerForRender]) -> list[RenderFields | None]:
        """Each read's answer, in order."""
        found = customers_for_render(conn=conn, customer_ids=[r.customer_id for r in reads])
        return [found.get(r.customer_id) for r in reads]


def get_customers(*, session: Session, customer_ids: Iterable[str]) -> dict[str, Customer]:
    ids = list(customer_ids)
    out: dict[str, Customer] = {}
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        for row in session.scalars(select(Customer).where(Customer.customer_id.in_(part))):
            out[row.customer_id] = row
    return out


def all_customer_ids(*, session: Session) -> list[str]:
    return list(session.scalars(select(Customer.customer_id).order_by(Customer.customer_id)))


def count_customers(*, session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Customer)) or 0)


def active_blocks(
    *, session: Session, customer_ids: Iterable[str], now: datetime
) -> dict[str, list[Block]]:
    ids = list(customer_ids)
    out: dict[str, list[Block]] = {}
    stmt = select(Block).where(Block.customer_id.in_(ids), _block_in_force(now))
    for row in session.scalars(stmt):
        out.setdefault(row.customer_id, []).append(row)
    return out


# --- the do-not-call list ----------------------------------------------------------------------


def _lock_numbers(session: Session, keys: Iterable[str]) -> None:
    """PostgreSQL: row-lock the customers on file with these numbers, in id order, as a claim
    locks a candidate's (so a claim reading the list waits for a change to it, and the other
    way round)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            select(Customer.customer_id).where(Customer.phone_key.in_(sorted(set(keys))))
            .order_by(Customer.customer_id).with_for_update()
        ).all()  # fmt: skip


def add_dnc_numbers(
    *, session: Session, entries: Sequence[dict[str, Any]], now: datetime, added_by: int | None
) -> int:
    """Put numbers on the do-not-call list (``phone_key``, ``phone``, ``source``, ``reason``,
    ``until``): a number already on the source's list takes the new entry (and a lifted one
    is in force again); other sources' entries stay as they are. Returns how many were
    written."""
    if not entries:
        return 0
    _lock_numbers(session, [e["phone_key"] for e in entries])
    insert = _insert(session)
    rows = [{**e, "since": now, "lifted_at": None, "added_by": added_by, "lifted_by": None}
            for e in entries]  # fmt: skip
    for start in range(0, len(rows), 500):
        stmt = insert(DncNumber).values(rows[start : start + 500])
        stmt = stmt.on_conflict_do_update(
            index_elements=[DncNumber.phone_key, DncNumber.source],
            set_={c: stmt.excluded[c] for c in ("phone", "reason", "since", "until",
                                                 "lifted_at", "added_by", "lifted_by")},
        )  # fmt: skip
        session.execute(stmt)
    return len(rows)


def _block_in_force(now: Any) -> Any:
    """A suppression in force at ``now`` (a time, or the claim's bind parameter)."""
    return Block.until.is_(None) | (Block.until > now)


def _dnc_in_force(now: Any) -> Any:
    """A do-not-call entry in force at ``now``: not lifted, not ended."""
    return DncNumber.lifted_at.is_(None) & (DncNumber.until.is_(None) | (DncNumber.until > now))


def dnc_entries(*, session: Session, phone_key: str, now: datetime) -> list[DncNumber]:
    """The number's do-not-call entries in force (one a source), by source."""
    return list(session.scalars(
        select(DncNumber).where(DncNumber.phone_key == phone_key, _dnc_in_force(now))
        .order_by(DncNumber.source)
    ))  # fmt: skip


def dnc_history(*, session: Session, phone_key: str) -> list[DncNumber]:
    """Every do-not-call entry the number has had, one a source (in force, ended or
    lifted), oldest listing first."""
    return list(session.scalars(
        select(DncNumber).where(DncNumber.phone_key == phone_key).order_by(DncNumber.id)
    ))  # fmt: skip


def lift_dnc_number(
    *, session: Session, phone_key: str, source: str | None, now: datetime, lifted_by: int | None
) -> list[DncNumber]:
    """Take a number off the do-not-call list of ``source`` (None: of its one source in
    force): its entry is kept, lifted now. Returns the entries in force that matched (lifted
    when exactly one did; none or several: nothing was lifted)."""
    _lock_numbers(session, [phone_key])
    found = [e for e in dnc_entries(session=session, phone_key=phone_key, now=now)
             if source is None or e.source == source]  # fmt: skip
    if len(found) == 1:
        found[0].lifted_at, found[0].lifted_by = now, lifted_by
    return found


def number_blocks(*, session: Session, phone_key: str, now: datetime) -> list[Block]:
    """The suppressions in force for a number: the opt-outs and refusals of the customers on
    file with it when they were said."""
    stmt = (
        select(Block).where(Block.phone_key == phone_key, _block_in_force(now)).order_by(Block.id)
    )
    return list(session.scalars(stmt))


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


def status_counts(
    *, session: Session, campaign_id: str, now: datetime | None = None
) -> dict[str, int]:
    """A campaign's calls by state; with ``now``, a lease that ended counts as ``ready``
    (the next claim takes the call back: until then its row still says ``leased``)."""
    state: Any = Call.status
    if now is not None:
        state = case((and_(Call.status == "leased", Call.lease_until < now), "ready"),
                     else_=Call.status)  # fmt: skip
    stmt = select(state, func.count()).where(Call.campaign_id == campaign_id).group_by(state)
    counts: dict[str, int] = {}
    for s, n in session.execute(stmt):
        counts[str(s)] = counts.get(str(s), 0) + int(n)
    return counts


def filtered_count(*, session: Session, campaign_id: str) -> int:
    """Customers a campaign's built chunks left out (fewer tag hits than its ``min_hits``, or
    opted out of profiling while ``min_hits`` is above 0)."""
    stmt = select(Chunk.result).where(Chunk.campaign_id == campaign_id, Chunk.status == "done")
    return sum(int((r or {}).get("filtered", 0)) for r in session.scalars(stmt))


# --- calls and outcomes -----------------------------------------------------------------------
#
# The claim and the outcome are the dialler's hot path. Their statements are built once, here,
# with bind parameters, and run on the session's Connection: SQLAlchemy then finds each one in
# its compiled cache by a memoised key and skips the ORM layer (measured on this machine:
# about 130 us a statement instead of 400-700 us for one built per call and run through the
# Session). PostgreSQL variants add the row locks; SQLite's IMMEDIATE transactions serialise.

_calls, _docs = cast(Table, Call.__table__), cast(Table, CallDocument.__table__)
_customers, _blocks = cast(Table, Customer.__table__), cast(Table, Block.__table__)
_attempts, _outcomes = cast(Table, Attempt.__table__), cast(Table, Outcome.__table__)
_idem = cast(Table, IdempotencyKey.__table__)
_ADD_DECISIONS, _ADD_ATTEMPTS = insert(cast(Table, GateDecision.__table__)), insert(_attempts)
#: a suppression of a customer and of the number the call was dialled on: the last attempt's
#: (``call_of``: the call id; ``number_of``: the customer id), or the customer's number on file
#: when the call has no attempt. Not simply the number on file now: the customer may have a
#: new one since the claim, and "stop calling" was said on the one dialled.
_dialled, _last = _attempts.alias("dialled"), _attempts.alias("last_attempt")
_ADD_BLOCKS = insert(_blocks).values(
    phone_key=func.coalesce(
        select(_dialled.c.phone_key).where(_dialled.c.id == (
            select(func.max(_last.c.id))
            .where(_last.c.customer_id == bindparam("number_of"),
                   _last.c.call_id == bindparam("call_of"))
            .scalar_subquery()
        )).scalar_subquery(),
        select(_customers.c.phone_key)
        .where(_customers.c.customer_id == bindparam("number_of")).scalar_subquery(),
    )
)  # fmt: skip
_ADD_IDEM = insert(_idem)
_IDS: BindParameter[list[str]] = bindparam("ids", expanding=True)


def _pick(*where: Any, by: tuple[Any, ...] = (), pg: bool = False) -> Select[Any]:
    """Candidates of one kind, ordered by ``by`` and then the call id."""
    c, d = _calls.c, _docs.c
    # The payload by a subquery per candidate, not a join: with statistics taken when most
    # calls were ready (a campaign just built), PostgreSQL's planner merge-joined the
    # documents' whole primary key from its start, walking every call already done (2.3 ms
    # of server time a claim at 3,100 done calls, 0.14 ms with the subquery)
    # SQLite hands the payload over as bytes (a BLOB of the stored UTF-8): it goes into the
    # answer as it is, not decoded to a str (about 7 us for a script's 7 kB) to be encoded again
    text_ = d.payload if pg else cast_(d.payload, LargeBinary)
    payload = select(text_).where(d.call_id == c.id).scalar_subquery().label("payload")
    return (
        select(c.id, c.customer_id, c.status, payload, c.audio, c.live_set)
        .where(c.campaign_id == bindparam("campaign_id"), *where)
        # PostgreSQL: in byte order, which only the claim's indexes give (see migrations 0008
        # and 0009): the primary key's order is the database's collation, so the planner
        # cannot walk it
        .order_by(*by, c.id.collate("C") if pg else c.id)
        .limit(bindparam("limit", type_=Integer))
    )


#: The three kinds of candidates, each one range of ``ix_calls_claim`` (campaign, status,
#: ``not_before``, id), read in its order. A call's ``not_before`` is when it may be handed
#: out (again): none for a ready call never put back, the time the gate put it back until,
#: or a leased call's lease end. So: ready calls never put back (by id), ready calls put back
#: until a time now past (by that time, then id), and leased calls whose lease ended (by that
#: end, then id). A call put back or leased until later is in none of the ranges: a scan that
#: had to filter those out (one range by id, testing each call's time) read every one of
#: them on every claim: 24 ms a claim with 20,000 calls waiting for the next morning's
#: calling window, the write lock held; and every lease still out, on every claim. Each scan
#: orders by ``not_before`` first, an order ``ix_calls_pick`` cannot give: PostgreSQL's
#: planner, sure from its statistics that no ready call had a ``not_before``, had otherwise
#: read them through that index, filtering.
_PICKS = (
    ((_calls.c.status == "ready", _calls.c.not_before.is_(None)), (_calls.c.not_before,)),
    ((_calls.c.status == "ready", _calls.c.not_before <= bindparam("now")),
     (_calls.c.not_before,)),
    ((_calls.c.status == "leased", _calls.c.not_before < bindparam("now")),
     (_calls.c.not_before,)),
)  # fmt: skip


def _both(*, pg: bool) -> CompoundSelect[Any]:
    """Every kind of candidate in one statement; on PostgreSQL each scan locks the rows it
    picks."""
    scans = [_pick(*where, by=by, pg=pg) for where, by in _PICKS]
    if pg:
        scans = [scan.with_for_update(skip_locked=True, of=_calls) for scan in scans]
    return union_all(*(select(scan.subquery()) for scan in scans))


_BOTH, _BOTH_PG = _both(pg=False), _both(pg=True)
_SUBJECTS = select(
    _customers.c.customer_id,
    _customers.c.consent,
    _customers.c.timezone,
    _customers.c.phone,
    _customers.c.phone_key,
).where(_customers.c.customer_id.in_(_IDS))
#: the numbers of these customers (a customer without one has none: NULL matches nothing)
_numbers = _customers.alias("numbers")  # not correlated with the customers of a statement
_NUMBERS = select(_numbers.c.phone_key).where(_numbers.c.customer_id.in_(_IDS))
#: PostgreSQL: the customers, and every other customer on file with one of their numbers,
#: row-locked in id order: a claim and an outcome for the same number (whichever customer's)
#: run one after the other, as they do for the same customer
#: (as the ids of a union: with an ``OR`` PostgreSQL cannot use an index for the numbers'
#: subquery and walked every customer, 8 ms a claim at 6,000 customers against 0.4)
_same, _other = _customers.alias("same_id"), _customers.alias("same_number")
_SAME_NUMBER = _customers.c.customer_id.in_(union_all(
    select(_same.c.customer_id).where(_same.c.customer_id.in_(_IDS)),
    select(_other.c.customer_id).where(_other.c.phone_key.in_(_NUMBERS)),
))  # fmt: skip
_SUBJECTS_PG = (
    select(*_SUBJECTS.selected_columns).where(_SAME_NUMBER)
    .order_by(_customers.c.customer_id).with_for_update()
)  # fmt: skip
_ACTIVE = _block_in_force(bindparam("now"))
# ``since_day`` bounds the index's range (a local day is within a day of the UTC date), so a
# claim reads a customer's recent attempts, not every attempt ever made
_RECENT = (_attempts.c.local_day >= bindparam("since_day"), _attempts.c.at > bindparam("since"))
_BLOCK_FACTS = select(literal_column("'b'"), _blocks.c.id, _blocks.c.customer_id,
                      _blocks.c.phone_key, _blocks.c.kind, _blocks.c.until,
                      cast_(null(), String).label("day"))  # fmt: skip
_dnc = cast(Table, DncNumber.__table__)
#: the do-not-call list's entries in force for the numbers (no customer: the number's own)
_DNC_FACTS = select(literal_column("'d'"), _dnc.c.id, cast_(null(), String), _dnc.c.phone_key,
                    literal_column("'dnc'"), _dnc.c.until, cast_(null(), String))  # fmt: skip
_DNC_ACTIVE = _dnc_in_force(bindparam("now"))
_ATTEMPT_FACTS = select(literal_column("'a'"), _attempts.c.id, _attempts.c.customer_id,
                        _attempts.c.phone_key, literal_column("'attempt'"), _attempts.c.at,
                        _attempts.c.local_day)  # fmt: skip
#: suppressions in force and recent attempts of these customers and of their numbers, in one
#: statement: (table, row id, customer, number, kind, until, day). SQLite reads each table by
#: its two indexes at once (its "MULTI-INDEX OR": each row once), with the numbers as
#: parameters (``nums``: read with the customers just before): 31 us a claim round for its
#: people and facts, against 37 with the numbers by a subquery and 42 for a union of four
#: reads (24 before numbers counted). PostgreSQL reads them in the same round trip as the
#: customers, so by a subquery, and cannot put a subquery into an index scan of an ``OR``: it
#: gets the four reads (a fact of the customer and of its number comes twice)
_NUMS: BindParameter[list[str]] = bindparam("nums", expanding=True)
_FACTS = union_all(
    _BLOCK_FACTS.where(_blocks.c.customer_id.in_(_IDS) | _blocks.c.phone_key.in_(_NUMS), _ACTIVE),
    _ATTEMPT_FACTS.where(_attempts.c.customer_id.in_(_IDS) | _attempts.c.phone_key.in_(_NUMS),
                         *_RECENT),
    _DNC_FACTS.where(_dnc.c.phone_key.in_(_NUMS), _DNC_ACTIVE),
)  # fmt: skip
_FACTS_PG = union_all(
    _BLOCK_FACTS.where(_blocks.c.customer_id.in_(_IDS), _ACTIVE),
    _BLOCK_FACTS.where(_blocks.c.phone_key.in_(_NUMBERS), _ACTIVE),
    _ATTEMPT_FACTS.where(_attempts.c.customer_id.in_(_IDS), *_RECENT),
    _ATTEMPT_FACTS.where(_attempts.c.phone_key.in_(_NUMBERS), *_RECENT),
    _DNC_FACTS.where(_dnc.c.phone_key.in_(_NUMBERS), _DNC_ACTIVE),
)


def _lease(which: Any) -> Any:
    return (
        update(_calls)
        .where(which)
        # not before the lease ends may the call be handed out again (_PICKS)
        .values(status="leased", leased_by=bindparam("key_id"), lease_until=bindparam("until"),
                claims=_calls.c.claims + 1, not_before=bindparam("until"))
    )  # fmt: skip


_LEASE, _LEASE_ONE = _lease(_calls.c.id.in_(_IDS)), _lease(_calls.c.id == bindparam("call_id"))
_PUT_BACK = (
    update(_calls)
    .where(_calls.c.id == bindparam("b_call_id"))
    .values(status=bindparam("b_status"), lease_until=None, not_before=bindparam("b_retry"))
)
_OLD_DOCS = select(_docs.c.call_id, _docs.c.script, _docs.c.record).where(_docs.c.call_id.in_(_IDS))
_CAMPAIGN = select(Campaign.__table__.c.status).where(Campaign.__table__.c.id == bindparam("id"))


def _earliest(status: str) -> Any:
    # the first entry of an index range, not min(): PostgreSQL's planner, its statistics
    # saying one row, aggregated the whole range (every call waiting, 3,000 in the test)
    return (
        select(_calls.c.not_before)
        .where(_calls.c.campaign_id == bindparam("campaign_id"), _calls.c.status == status,
               _calls.c.not_before.is_not(None))
        .order_by(_calls.c.not_before)
        .limit(1)
        .scalar_subquery()
    )  # fmt: skip


#: when a call put back by the gate becomes due, and when the first lease out ends (a leased
#: call's ``not_before`` is its lease's end): each one entry of ``ix_calls_claim``
_NEXT_DUE = select(_earliest("ready"), _earliest("leased"))


def _pg(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def claim_candidates(
    *, conn: Connection, campaign_id: str, now: datetime, limit: int
) -> list[tuple[str, str, str, bytes | None, dict[str, Any] | None, str | None]]:
    """``(call id, customer id, status, payload, audio, live set)`` of calls that may be handed out
    now: ready (and due), or leased with the lease expired; at most ``limit``, in call id
    order. The payload comes as UTF-8 bytes.

    Three index range scans (:data:`_PICKS`), each reading at most ``limit`` calls, never a
    scan of the campaign; of what they read, the ``limit`` lowest ids. (That is the lowest ids
    of all calls due, except when more than ``limit`` calls put back are due at once: then
    those due longest come first.) On PostgreSQL the call rows are locked, skipping rows
    another claim holds, so two concurrent claims never see the same call. The payload comes along: most
    candidates are handed out, and a second query for it would cost more than the bytes."""
    params = {"campaign_id": campaign_id, "now": now, "limit": limit}
    found = (_P_BOTH_PG if _pg(conn) else _P_BOTH).rows(conn, params)
    rows = [(str(i), str(cid), str(st), p.encode() if isinstance(p, str) else p, a, ls)
            for i, cid, st, p, a, ls in found]  # fmt: skip
    return sorted(rows, key=lambda r: r[0])[:limit]


def attempts_from(since: datetime) -> str:
    """The earliest local day (``attempts.local_day``) an attempt made after ``since`` can
    have: time zones run from 12 hours behind UTC to 14 ahead."""
    return (since.astimezone(UTC) - timedelta(days=1)).date().isoformat()


#: a suppression or an attempt the gate counts: (table ``a``/``b``/``d`` and row id: the same
#: fact read for a customer and for its number is one), customer (None: a do-not-call list
#: entry, the number's own), number, kind (``opt_out``, ``refusal``, ``dnc``, ``attempt``),
#: until (a suppression's end; an attempt's time), local day (an attempt's, in its customer's
#: time zone)
Fact = tuple[tuple[str, int], str | None, str | None, str, datetime | None, str | None]


def claim_people(
    *, conn: Connection, customer_ids: Iterable[str], now: datetime, since: datetime
) -> tuple[dict[str, tuple[bool, str | None, str | None, str | None]], list[Fact]]:
    """What the gate needs of these customers: ``customer id -> (consent, timezone, phone,
    number)`` (the number: :func:`~scripts_engine.phones.phone_key`), and the
    :data:`Fact` s of the customers and of their numbers: the suppressions in force and the
    attempts made after ``since``. On PostgreSQL the customers, and the other customers of
    their numbers, are row-locked in id order first (so concurrent claims and outcomes for one
    customer or one number run one after another), then their facts are read, by a second
    statement (a statement of its own: it sees what a transaction that held the lock before
    committed)."""
    wanted = set(customer_ids)
    ids = sorted(wanted)
    if not ids:
        return {}, []
    at = {"ids": ids, "now": now, "since": since, "since_day": attempts_from(since)}
    if _pg(conn):  # one round trip, the locks first
        subjects, facts = pipelined(conn, [(_P_SUBJECTS_PG, [{"ids": ids}]), (_P_FACTS_PG, [at])])
    else:
        subjects = _P_SUBJECTS.rows(conn, {"ids": ids})
        facts = _P_FACTS.rows(conn, at | {"nums": sorted({r[4] for r in subjects if r[4]})})
    return (
        # (PostgreSQL also returns the other customers of their numbers: locked, not asked for)
        {i: (bool(k), tz, ph, key) for i, k, tz, ph, key in subjects if i in wanted},
        [((str(t), int(n)), c, key, str(kind), until, day)
         for t, n, c, key, kind, until, day in facts],
    )  # fmt: skip


def claim_writes(
    *,
    conn: Connection,
    ruleset: str,
    leases: Sequence[tuple[str, int, datetime]],
    put_back: Sequence[tuple[str, str, datetime | None]],
    decisions: Sequence[tuple[str, str, bool, str, list[Any], datetime, int]],
    attempts: Sequence[tuple[str, str, str, datetime, str | None]],
) -> None:
    """What a claim round decided, for one claim or several claimed together: lease ``(call
    id, key id, until)`` (and count the claim); put back ``(call id, status, not before)``
    (blocked calls closed or returned to the pool; the last lease holder is kept: it may still
    report); store the gate's ``(call id, customer id, allowed, rule, checks, at, key id)``
    under ``ruleset`` and the attempts ``(customer id, call id, local day, at, number)``. Leases to one
    holder until one time (a single claim's) are one statement; otherwise one ``executemany``.
    (One data-modifying statement on PostgreSQL, the rows as unnested arrays, was measured
    slower: no less client CPU, and 150 us more of the server's than these.)"""
    holders = {(key_id, until) for _call_id, key_id, until in leases}
    if len(holders) == 1:
        ((key_id, until),) = holders
        lease: tuple[Prepared, list[dict[str, Any]]] = (_P_LEASE, [
            {"ids": [i for i, _k, _u in leases], "key_id": key_id, "until": until}])  # fmt: skip
    else:
        lease = (_P_LEASE_ONE, [{"call_id": i, "key_id": k, "until": u} for i, k, u in leases])
    pipelined(conn, [  # on PostgreSQL one round trip, with the next statement or the COMMIT
        lease,
        (_P_PUT_BACK, [{"b_call_id": i, "b_status": s, "b_retry": r} for i, s, r in put_back]),
        (_P_ADD_DECISIONS, [
            {"call_id": call_id, "customer_id": customer_id, "at": at, "allowed": allowed,
             "rule": rule, "checks": checks, "ruleset": ruleset, "api_key_id": key_id}
            for call_id, customer_id, allowed, rule, checks, at, key_id in decisions
        ]),
        (_P_ADD_ATTEMPTS, [{"customer_id": c, "call_id": k, "at": at, "local_day": d,
                        "phone_key": p} for c, k, d, at, p in attempts]),
    ], later=True)  # fmt: skip


def old_call_documents(
    *, conn: Connection, call_ids: Sequence[str]
) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """``call id -> (script, record)`` of calls built before payloads were made at build
    time."""
    if not call_ids:
        return {}
    return {str(i): (s, r) for i, s, r in _P_OLD_DOCS.rows(conn, {"ids": list(call_ids)})}


def campaign_status(*, conn: Connection, campaign_id: str) -> str | None:
    """``building``, ``ready`` or ``failed``; None for no such campaign."""
    rows = _P_CAMPAIGN.rows(conn, {"id": campaign_id})
    return str(rows[0][0]) if rows else None


def next_due(*, conn: Connection, campaign_id: str) -> datetime | None:
    """When a call of the campaign may next be handed out: the earliest of its calls put back
    until a time and of its leases' ends; None when none waits (each is done or blocked)."""
    times = [t for t in _P_NEXT_DUE.rows(conn, {"campaign_id": campaign_id})[0] if t is not None]
    return min(times) if times else None


_SEEN = select(_idem.c.request_hash, _idem.c.status_code, _idem.c.response).where(
    _idem.c.api_key_id == bindparam("key_id"), _idem.c.key == bindparam("key")
)


def _outcome_calls(which: Any) -> Select[Any]:
    return select(
        _calls.c.campaign_id, _calls.c.customer_id, _calls.c.leased_by,
        select(_outcomes.c.id).where(_outcomes.c.call_id == _calls.c.id).scalar_subquery(),
    ).where(which)  # fmt: skip


_OUTCOME_CALL = _outcome_calls(_calls.c.id == bindparam("call_id"))
#: several reports' calls (their ids last), and the answers stored under their keys (the
#: unique index's both columns by IN lists: the pairs asked for are picked out after)
_OUTCOME_CALLS = _outcome_calls(_calls.c.id.in_(_IDS)).add_columns(_calls.c.id)
_ANSWERS = select(
    _idem.c.api_key_id, _idem.c.key, _idem.c.request_hash, _idem.c.status_code,
    _idem.c.response,
).where(_idem.c.api_key_id.in_(bindparam("key_ids", expanding=True)),
        _idem.c.key.in_(bindparam("keys", expanding=True)))  # fmt: skip
#: PostgreSQL: the same, the calls row-locked in id order (so that batches never deadlock)
_OUTCOME_CALLS_PG = _OUTCOME_CALLS.order_by(_calls.c.id).with_for_update(of=_calls)
#: PostgreSQL: the pairs asked for, as one row-value IN: a probe of the unique index by both
#: columns for each. The two IN lists above, planned generically while the table was small,
#: were read as the index's first column and a filter: every answer stored under the dialler
#: key, 3-60 ms a batch after 1,000-100,000 outcomes of one key. (SQLite scans the table for
#: a row-value IN, its VALUES list, and probes the index by both lists above.)
_ANSWERS_PG = select(*_ANSWERS.selected_columns).where(
    tuple_(_idem.c.api_key_id, _idem.c.key).in_(bindparam("pairs", expanding=True))
)
_LAST_OUTCOME = select(func.max(_outcomes.c.id))
#: PostgreSQL: the ids ``n`` new outcomes will have (the sequence's next values)
_NEXT_OUTCOME_IDS_PG = select(
    func.nextval(func.pg_get_serial_sequence("outcomes", "id"))
).select_from(func.generate_series(1, bindparam("n", type_=Integer)))
#: the call with the answer stored under the idempotency key (one statement instead of two);
#: on PostgreSQL the call row-locked, and the id the new outcome will have
_OUTCOME_STATE = (
    select(*_OUTCOME_CALL.selected_columns, _idem.c.request_hash, _idem.c.status_code,
           _idem.c.response)
    .select_from(_calls.outerjoin(_idem, and_(_idem.c.api_key_id == bindparam("key_id"),
                                              _idem.c.key == bindparam("key"))))
    .where(_calls.c.id == bindparam("call_id"))
)  # fmt: skip
_OUTCOME_STATE_PG = _OUTCOME_STATE.add_columns(
    func.nextval(func.pg_get_serial_sequence("outcomes", "id"))
).with_for_update(of=_calls)
_LOCK_CUSTOMERS = (  # with the other customers of their numbers, as a claim locks them
    select(_customers.c.customer_id)
    .where(_SAME_NUMBER)
    .order_by(_customers.c.customer_id)
    .with_for_update()
)
_ADD_OUTCOME = insert(_outcomes).returning(_outcomes.c.id)
_CLOSE_CALL = (
    update(_calls)
    .where(_calls.c.id == bindparam("call_id"))
    .values(status=literal_column("'done'"), lease_until=null(), not_before=null())
)
_OUTCOME_COLUMNS = ("id", "call_id", "campaign_id", "customer_id", "status", "converted",
                    "intent_grade", "opt_out", "refused", "duration_s", "complaint", "notes",
                    "api_key_id", "created_at")  # fmt: skip
_ANSWER_COLUMNS = ("api_key_id", "key", "request_hash", "status_code", "response", "created_at")
#: PostgreSQL: the outcome (its id known), its call closed and the answer stored, one statement
_OUTCOME_WRITES_PG = (
    insert(_idem).values({c: bindparam(f"i_{c}") for c in _ANSWER_COLUMNS})
    .add_cte(insert(_outcomes).values({c: bindparam(f"o_{c}") for c in _OUTCOME_COLUMNS})
             .cte("new_outcome"))
    .add_cte(_CLOSE_CALL.cte("closed_call"))
)  # fmt: skip

#: the claim's and the outcome's statements, run below SQLAlchemy's machinery (db/prepared.py)
_P_BOTH, _P_BOTH_PG = Prepared(_BOTH), Prepared(_BOTH_PG)
_P_OLD_DOCS, _P_CAMPAIGN, _P_NEXT_DUE = (
    Prepared(_OLD_DOCS),
    Prepared(_CAMPAIGN),
    Prepared(_NEXT_DUE),
)
_P_SUBJECTS, _P_SUBJECTS_PG = Prepared(_SUBJECTS), Prepared(_SUBJECTS_PG)
_P_FACTS, _P_FACTS_PG = Prepared(_FACTS), Prepared(_FACTS_PG)
_P_LEASE, _P_LEASE_ONE = Prepared(_LEASE), Prepared(_LEASE_ONE)
_P_PUT_BACK = Prepared(_PUT_BACK)
_P_ADD_DECISIONS, _P_ADD_ATTEMPTS = Prepared(_ADD_DECISIONS), Prepared(_ADD_ATTEMPTS)
_P_SEEN, _P_OUTCOME_STATE = Prepared(_SEEN), Prepared(_OUTCOME_STATE)
_P_OUTCOME_STATE_PG = Prepared(_OUTCOME_STATE_PG)
_P_ADD_OUTCOME, _P_CLOSE_CALL = Prepared(_ADD_OUTCOME), Prepared(_CLOSE_CALL)
_P_OUTCOME_WRITES_PG = Prepared(_OUTCOME_WRITES_PG)
_P_ADD_BLOCKS, _P_ADD_IDEM = Prepared(_ADD_BLOCKS), Prepared(_ADD_IDEM)
_P_OUTCOME_CALLS, _P_ANSWERS = Prepared(_OUTCOME_CALLS), Prepared(_ANSWERS)
_P_ANSWERS_PG = Prepared(_ANSWERS_PG)
_P_OUTCOME_CALLS_PG, _P_LOCK_CUSTOMERS = Prepared(_OUTCOME_CALLS_PG), Prepared(_LOCK_CUSTOMERS)
_P_NEXT_OUTCOME_IDS_PG = Prepared(_NEXT_OUTCOME_IDS_PG)
_P_LAST_OUTCOME, _P_ADD_OUTCOMES = Prepared(_LAST_OUTCOME), Prepared(insert(_outcomes))


def outcome_state(
    *, conn: Connection, api_key_id: int, key: str, call_id: str
) -> tuple[
    tuple[str, int, dict[str, Any]] | None, tuple[str, str, int | None, Any] | None, int | None
]:
    """What an outcome report needs to know: the answer stored under the key's idempotency
    key, ``(request_hash, status_code, response)``; the call, ``(campaign_id, customer_id,
    leased_by, outcome id or None)``, row-locked on PostgreSQL; and on PostgreSQL the id the
    new outcome will have (the sequence's next value; None on SQLite, where the insert gives
    it). They come from one statement."""
    pg = _pg(conn)
    rows = (_P_OUTCOME_STATE_PG if pg else _P_OUTCOME_STATE).rows(
        conn, {"key_id": api_key_id, "key": key, "call_id": call_id}
    )
    if not rows:  # no such call; the key may still hold an answer (reused with another call)
        return idempotent_answer(conn=conn, api_key_id=api_key_id, key=key), None, None
    campaign_id, customer_id, leased_by, existing, request_hash, status, response = rows[0][:7]
    seen = None if request_hash is None else (request_hash, status, response)
    return seen, (campaign_id, customer_id, leased_by, existing), int(rows[0][7]) if pg else None


def idempotent_answer(
    *, conn: Connection, api_key_id: int, key: str
) -> tuple[str, int, dict[str, Any]] | None:
    """``(request_hash, status_code, response)`` stored under a key's idempotency key."""
    rows = _P_SEEN.rows(conn, {"key_id": api_key_id, "key": key})
    return (rows[0][0], rows[0][1], rows[0][2]) if rows else None


def add_outcome(*, conn: Connection, values: dict[str, Any]) -> int:
    """Store an outcome; returns its id (SQLite; see :func:`finish_outcome`)."""
    return int(_P_ADD_OUTCOME.rows(conn, values)[0][0])


def finish_outcome(
    *,
    conn: Connection,
    call_id: str,
    customer_id: str,
    outcome: dict[str, Any] | None,
    blocks: Sequence[dict[str, Any]],
    answer: dict[str, Any],
) -> None:
    """Close the call, add the suppressions ``blocks`` ask for (``kind``, ``since``,
    ``until``) and store ``answer`` (the idempotency key's row); with ``outcome`` (PostgreSQL:
    its id came from :func:`outcome_state`), store the outcome too. A suppression first
    row-locks the customer on PostgreSQL, as a claim does before it reads suppressions; on
    PostgreSQL the rest is one statement, and all of it goes with the ``COMMIT``."""
    rows = [{"customer_id": customer_id, "call_id": call_id, **b, "number_of": customer_id,
             "call_of": call_id} for b in blocks]  # fmt: skip
    if outcome is not None:
        pipelined(conn, [
            (_P_LOCK_CUSTOMERS, [{"ids": [customer_id]}] if blocks else []),
            (_P_ADD_BLOCKS, rows),
            (_P_OUTCOME_WRITES_PG, [{"call_id": call_id,
                                     **{f"o_{k}": outcome[k] for k in _OUTCOME_COLUMNS},
                                     **{f"i_{k}": answer[k] for k in _ANSWER_COLUMNS}}]),
        ], later=True)  # fmt: skip
        return
    _P_ADD_BLOCKS.many(conn, rows)
    _P_CLOSE_CALL.rows(conn, {"call_id": call_id})
    _P_ADD_IDEM.rows(conn, answer)


def outcome_states(
    *, conn: Connection, call_ids: Sequence[str], keys: Sequence[tuple[int, str]], ids: int = 0
) -> tuple[
    dict[str, tuple[str, str, int | None, Any]],
    dict[tuple[int, str], tuple[str, int, Any]],
    list[int],
]:
    """:func:`outcome_state` of several reports: ``call id -> (campaign_id, customer_id,
    leased_by, outcome id or None)`` of the calls that exist (row-locked in id order on
    PostgreSQL; SQLite's group commit holds the database's write lock); ``(api key id,
    idempotency key) -> (request_hash, status_code, response)`` of the keys that hold an
    answer (read after the calls' locks were granted); and the ids ``ids`` new outcomes would
    get (:func:`next_outcome_ids`). On PostgreSQL the three statements go in one round trip
    (:func:`~scripts_engine.db.prepared.pipelined`); the ids a batch does not use are gaps in
    the sequence, as a rollback leaves."""
    wanted = set(keys)
    if _pg(conn):
        read, found, fresh = pipelined(conn, [
            (_P_OUTCOME_CALLS_PG, [{"ids": sorted(call_ids)}]),
            (_P_ANSWERS_PG, [{"pairs": sorted(wanted)}]),
            (_P_NEXT_OUTCOME_IDS_PG, [{"n": ids}] if ids else []),
        ])  # fmt: skip
        new_ids = [int(row[0]) for row in fresh]
    else:
        read = _P_OUTCOME_CALLS.rows(conn, {"ids": sorted(call_ids)})
        found = _P_ANSWERS.rows(conn, {"key_ids": sorted({k for k, _ in wanted}),
                                       "keys": sorted({key for _, key in wanted})})  # fmt: skip
        new_ids = next_outcome_ids(conn=conn, n=ids) if ids else []
    calls = {str(row[4]): (row[0], row[1], row[2], row[3]) for row in read}
    answers = {(k, key): (h, st, r) for k, key, h, st, r in found if (k, key) in wanted}
    return calls, answers, new_ids


def next_outcome_ids(*, conn: Connection, n: int) -> list[int]:
    """The ids the next ``n`` outcomes get: on PostgreSQL the sequence's next values; on
    SQLite (in a write transaction: no one else inserts) the ones after the last."""
    if _pg(conn):
        return [int(row[0]) for row in _P_NEXT_OUTCOME_IDS_PG.rows(conn, {"n": n})]
    first = int(_P_LAST_OUTCOME.rows(conn, {})[0][0] or 0) + 1
    return list(range(first, first + n))


def add_outcomes(
    *,
    conn: Connection,
    outcomes: Sequence[dict[str, Any]],
    blocks: Sequence[dict[str, Any]],
    answers: Sequence[dict[str, Any]],
) -> None:
    """Several new outcomes (with their ids), their calls closed, the suppressions they ask
    for (``customer_id``, ``call_id``, ``kind``, ``since``, ``until``) and the answers stored
    under their keys: one ``executemany`` each. On PostgreSQL the outcome, its call's close
    and its answer are one statement (run for every outcome, pipelined), and the suppressions'
    customers are row-locked first, in id order, as a claim locks them before it reads their
    suppressions."""
    blocks = [{**b, "number_of": b["customer_id"], "call_of": b["call_id"]} for b in blocks]
    if _pg(conn):  # in one round trip, in this order, with the COMMIT
        locks = [{"ids": sorted({b["customer_id"] for b in blocks})}] if blocks else []
        pipelined(conn, [
            (_P_LOCK_CUSTOMERS, locks),
            (_P_OUTCOME_WRITES_PG, [
                {"call_id": o["call_id"], **{f"o_{k}": o[k] for k in _OUTCOME_COLUMNS},
                 **{f"i_{k}": a[k] for k in _ANSWER_COLUMNS}}
                for o, a in zip(outcomes, answers, strict=True)
            ]),
            (_P_ADD_BLOCKS, blocks),
        ], later=True)  # fmt: skip
        return
    _P_ADD_OUTCOMES.many(conn, outcomes)
    _P_CLOSE_CALL.many(conn, [{"call_id": o["call_id"]} for o in outcomes])
    _P_ADD_BLOCKS.many(conn, blocks)
    _P_ADD_IDEM.many(conn, answers)


def list_calls(
    *,
    session: Session,
    campaign_id: str | None,
    customer_id: str | None,
    status: str | None,
    after: str | None,
    limit: int,
) -> list[tuple[Call, GateDecision | None]]:
    """Calls by id (after ``after``), of a campaign and/or a customer, in a status, each with
    the gate's last decision on it."""
    stmt = select(Call).order_by(Call.id).limit(limit)
    if campaign_id is not None:
        stmt = stmt.where(Call.campaign_id == campaign_id)
    if customer_id is not None:
        stmt = stmt.where(Call.customer_id == customer_id)
    if status is not None:
        stmt = stmt.where(Call.status == status)
    if after is not None:
        stmt = stmt.where(Call.id > after)
    calls = list(session.scalars(stmt))
    last = (
        select(func.max(GateDecision.id))
        .where(GateDecision.call_id.in_([c.id for c in calls]))
        .group_by(GateDecision.call_id)
    )
    decided = {d.call_id: d for d in session.scalars(select(GateDecision).where(
        GateDecision.id.in_(last.scalar_subquery())))} if calls else {}  # fmt: skip
    return [(c, decided.get(c.id)) for c in calls]


def get_call(*, session: Session, call_id: str, lock: bool = False) -> Call | None:
    stmt = select(Call).where(Call.id == call_id)
    return session.scalar(_locking(session, stmt) if lock else stmt)


def get_outcome(*, session: Session, call_id: str) -> Outcome | None:
    return session.scalar(select(Outcome).where(Outcome.call_id == call_id))
