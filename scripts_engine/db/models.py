"""SQLAlchemy 2 typed ORM models: the service's record of customers, campaigns and calls.

Every table is written through :mod:`scripts_engine.db.repository`; routes never query. Times
are stored as timezone-aware UTC. JSON columns hold engine output as it was at the time (tag
scores, the rendered script, the context snapshot), so a call record can be replayed later
even after the model or the templates changed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime stored as UTC (SQLite keeps no zone: it is re-attached)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of every table."""

    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}


class ApiKey(Base):
    """An API key: only its public prefix and the sha256 of its secret are stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Customer(Base):
    """A customer as the bank sent it (validated), with the scores from the last upsert."""

    __tablename__ = "customers"

    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    record: Mapped[dict[str, Any]]
    phone: Mapped[str | None] = mapped_column(String(32))
    #: the number's E.164 form (:func:`scripts_engine.phones.phone_key`): the do-not-call
    #: list and the frequency caps count numbers as well as customers
    phone_key: Mapped[str | None] = mapped_column(String(32), index=True)
    timezone: Mapped[str | None] = mapped_column(String(64))
    consent: Mapped[bool] = mapped_column(Boolean, default=False)
    profiling_opt_out: Mapped[bool] = mapped_column(Boolean, default=False)
    #: tag scores and profile from the upsert (None: opted out of profiling, or not scored)
    scoring: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    model_version: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime]


class Block(Base):
    """A suppression: an opt-out (no end) or a refusal (until a date), from an outcome. It
    suppresses the customer and the number the customer had then (``phone_key``)."""

    __tablename__ = "blocks"
    __table_args__ = (
        Index("ix_blocks_customer", "customer_id"),
        Index("ix_blocks_phone_key", "phone_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # opt_out | refusal
    since: Mapped[datetime]
    until: Mapped[datetime | None]
    call_id: Mapped[str | None] = mapped_column(String(64))
    phone_key: Mapped[str | None] = mapped_column(String(32))


class DncNumber(Base):
    """A number on the bank's do-not-call list (COMPLIANCE.md CR-02: the bank's own list and
    the lists it must honour, such as a regulator's or an industry's 禁呼名单), whoever it is on
    file for. One row a number (its E.164 form); lifting it keeps the row (``lifted_at``)."""

    __tablename__ = "dnc_numbers"
    # one entry a number and source: a list never weakens another's (a bank's entry with an
    # end does not replace a regulator's without one)
    __table_args__ = (UniqueConstraint("phone_key", "source", name="uq_dnc_numbers_number_source"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    phone_key: Mapped[str] = mapped_column(String(32))
    phone: Mapped[str] = mapped_column(String(64))  # as it was given
    source: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(200), default="")
    since: Mapped[datetime]
    until: Mapped[datetime | None]
    lifted_at: Mapped[datetime | None]
    added_by: Mapped[int | None] = mapped_column(Integer)  # the API key's id
    lifted_by: Mapped[int | None] = mapped_column(Integer)


class Campaign(Base):
    """A campaign: its options, status and progress (the sum of its done chunks)."""

    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    options: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16))  # building | ready | failed
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Chunk(Base):
    """One planned chunk of a campaign build; ``attempt`` fences late duplicate results."""

    __tablename__ = "campaign_chunks"

    campaign_id: Mapped[str] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_ids: Mapped[list[Any]]
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|done|failed
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[dict[str, Any] | None]
    updated_at: Mapped[datetime]


class Call(Base):
    """One planned call: who, with what script and audio, why (the audit record), and state."""

    __tablename__ = "calls"
    __table_args__ = (
        UniqueConstraint("campaign_id", "customer_id", name="uq_calls_campaign_customer"),
        # the claim's scans (repository._PICKS): calls by when they may be handed out
        # (``not_before``), then id (migration 0009); the refresh's: ready calls by id.
        # PostgreSQL: the ids in byte order ("C"), an order the primary key cannot give, so a
        # scan can only be these indexes' ranges (migrations 0008 and 0009)
        Index(
            "ix_calls_claim",
            "campaign_id",
            "status",
            "not_before",
            "id",
            postgresql_ops={"id": 'COLLATE "C"'},
        ),
        Index("ix_calls_pick", "campaign_id", "status", "id", postgresql_ops={"id": 'COLLATE "C"'}),
        Index("ix_calls_customer", "customer_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(String(64))
    chunk: Mapped[int] = mapped_column(Integer)
    group: Mapped[str] = mapped_column(String(8))  # model | control
    profile_id: Mapped[str | None] = mapped_column(String(16))
    audio: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(12), default="ready")  # ready|leased|blocked|done
    #: when the call may be handed out (again): none (at once), the time the gate put it
    #: back until, or, while leased, the lease's end
    not_before: Mapped[datetime | None]
    leased_by: Mapped[int | None] = mapped_column(Integer)
    lease_until: Mapped[datetime | None]
    claims: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    #: digest of the template pack and styles.yaml the script was rendered with
    #: (:func:`scripts_engine.campaigns.live_set`); differs from the renderer's when a live
    #: change may have made the script stale (None: built before it was recorded)
    live_set: Mapped[str | None] = mapped_column(String(16))


class CallDocument(Base):
    """The large, write-once part of a call: its script, its audit record and what a claim
    hands out. Kept apart from ``calls`` so the claim's and the outcome's updates of a call's
    state rewrite a narrow row, not tens of kilobytes of JSON."""

    __tablename__ = "call_documents"

    call_id: Mapped[str] = mapped_column(
        ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True
    )
    script: Mapped[dict[str, Any]] = mapped_column(JSON)
    record: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: JSON text made at build time (group, profile, script): a claim splices it into its
    #: answer instead of loading, re-validating and re-encoding it
    payload: Mapped[str | None] = mapped_column(Text)


class Attempt(Base):
    """A call attempt handed to a dialler: what the frequency cap counts, across campaigns."""

    __tablename__ = "attempts"
    __table_args__ = (
        Index("ix_attempts_customer_day", "customer_id", "local_day"),
        Index("ix_attempts_phone_day", "phone_key", "local_day"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64))
    call_id: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime]
    local_day: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD in the customer's zone
    #: the number called (its E.164 form), which the caps count too
    phone_key: Mapped[str | None] = mapped_column(String(32))


class GateDecision(Base):
    """One claim-time compliance evaluation: the deciding rule and every check made."""

    __tablename__ = "gate_decisions"
    __table_args__ = (Index("ix_gate_call", "call_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(String(40))
    customer_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]
    allowed: Mapped[bool] = mapped_column(Boolean)
    rule: Mapped[str] = mapped_column(String(32))
    checks: Mapped[list[Any]]
    ruleset: Mapped[str] = mapped_column(String(16))
    api_key_id: Mapped[int | None] = mapped_column(Integer)


class Outcome(Base):
    """A dialler's result for one call (one per call)."""

    __tablename__ = "outcomes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(String(40), unique=True)
    campaign_id: Mapped[str] = mapped_column(String(40), index=True)
    customer_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    converted: Mapped[bool] = mapped_column(Boolean, default=False)
    intent_grade: Mapped[str | None] = mapped_column(String(1))
    opt_out: Mapped[bool] = mapped_column(Boolean, default=False)
    refused: Mapped[bool] = mapped_column(Boolean, default=False)
    duration_s: Mapped[float | None] = mapped_column(Float)
    notes: Mapped[str | None] = mapped_column(Text)
    #: the customer complained (reported by the dialler): a must-review call for QA
    complaint: Mapped[bool] = mapped_column(Boolean, default=False)
    api_key_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]


class IdempotencyKey(Base):
    """The first answer to an idempotent request, replayed for the same key and body."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("api_key_id", "key", name="uq_idempotency_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    api_key_id: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class AudioFile(Base):
    """A prompt file in the audio folder, addressed by the sha256 of its bytes."""

    __tablename__ = "audio_files"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    format: Mapped[str] = mapped_column(String(16))
    ext: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(300))  # relative to the audio folder
    content_type: Mapped[str] = mapped_column(String(40))
    size: Mapped[int] = mapped_column(Integer)
    duration_s: Mapped[float] = mapped_column(Float)


class SigningSecret(Base):
    """A dialler key's outcome-signing secret: HMAC-SHA256(master key, ``salt``); only the
    salt is stored, so the database alone cannot forge a signature. Several are live during a
    rotation; a rotated-out one stops working at ``expires_at``."""

    __tablename__ = "signing_secrets"
    __table_args__ = (Index("ix_signing_secrets_key", "api_key_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    salt: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]


class TemplateVersion(Base):
    """One immutable version of a writer-editable file (a template or ``styles.yaml``).

    ``version`` is the content hash the renderer puts on every segment; ``source`` never
    changes after insert. Only the workflow columns (status, decisions, flags) move.
    """

    __tablename__ = "template_versions"
    __table_args__ = (
        UniqueConstraint("name", "version", name="uq_template_versions_name_version"),
        Index("ix_template_versions_name_status", "name", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(12))  # template | styles
    version: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(Text)
    #: draft | submitted | approved | rejected | live | superseded
    status: Mapped[str] = mapped_column(String(12))
    author: Mapped[str] = mapped_column(String(200))
    author_key_id: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text, default="")
    parent: Mapped[str | None] = mapped_column(String(16))
    lint: Mapped[list[Any]]
    lint_errors: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    submitted_at: Mapped[datetime | None]
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime | None]
    decision_note: Mapped[str | None] = mapped_column(Text)
    approved_at: Mapped[datetime | None]
    live_at: Mapped[datetime | None]
    #: failed QA reviews that named this version
    flags: Mapped[int] = mapped_column(Integer, default=0)


class TemplateEvent(Base):
    """The append-only, hash-chained audit log of the template workflow (CR-40, CR-41)."""

    __tablename__ = "template_events"
    __table_args__ = (Index("ix_template_events_name", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime]
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(16))
    #: seed | import | save | submit | approve | reject | publish | rollback | flag
    action: Mapped[str] = mapped_column(String(12))
    actor: Mapped[str] = mapped_column(String(200))
    actor_key_id: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class ReviewItem(Base):
    """A call in the QA queue (``batch`` "queue") or in a calibration session (its id)."""

    __tablename__ = "review_items"
    __table_args__ = (
        UniqueConstraint("call_id", "batch", name="uq_review_items_call_batch"),
        Index("ix_review_items_campaign", "campaign_id", "status", "id"),
        Index("ix_review_items_campaign_id", "campaign_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch: Mapped[str] = mapped_column(String(40))
    call_id: Mapped[str] = mapped_column(String(40))
    campaign_id: Mapped[str] = mapped_column(String(40))
    profile_id: Mapped[str | None] = mapped_column(String(16))
    pack_version: Mapped[str | None] = mapped_column(String(16))
    #: [{template, version}] of every segment of the call's script
    templates: Mapped[list[Any]]
    #: the authors of those versions (a reviewer may not be one of them)
    authors: Mapped[list[Any]]
    #: why it is here: sample, opt_out, complaint, new_version, wealth, age_60
    reasons: Mapped[list[Any]]
    #: calibration: the reviewers it is sent to, blind (empty: anyone eligible)
    assignees: Mapped[list[Any]]
    status: Mapped[str] = mapped_column(String(8), default="open")  # open | done
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class ReviewResult(Base):
    """One reviewer's scorecard for one review item."""

    __tablename__ = "review_results"
    __table_args__ = (
        UniqueConstraint("item_id", "reviewer", name="uq_review_results_item_reviewer"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id", ondelete="CASCADE"))
    reviewer: Mapped[str] = mapped_column(String(200))
    reviewer_key_id: Mapped[int | None] = mapped_column(Integer)
    critical: Mapped[dict[str, Any]]
    quality: Mapped[dict[str, Any]]
    score: Mapped[float] = mapped_column(Float)
    passed: Mapped[bool] = mapped_column(Boolean)
    #: [{template, version, item, note}]: the template versions the failures are traced to
    defects: Mapped[list[Any]]
    notes: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]


class WebSessionRevocation(Base):
    """A web workspace session ended by logging out: its cookie is refused by every server
    process until ``expires_at``, when the cookie would have expired anyway and the row may go
    (each logout deletes the expired rows, so the table holds at most a day's logouts)."""

    __tablename__ = "web_session_revocations"
    __table_args__ = (Index("ix_web_session_revocations_expires_at", "expires_at"),)

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime]
