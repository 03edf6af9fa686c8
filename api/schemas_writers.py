"""Request and response models of the writers' and QA's routes: template versions, previews,
reviews and scorecards, reports."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from scripts_engine.versions import MAX_SOURCE

Channel = Literal["call", "wechat", "sms"]
Verdict = Literal["pass", "fail", "na"]
_HEX16 = r"^[0-9a-f]{16}$"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- template versions --------------------------------------------------------------------------


class LiveRef(BaseModel):
    id: int
    version: str = Field(description="Content hash (what rendered segments carry).")


class TemplateSummary(BaseModel):
    """One writer-editable file: its live version and how many versions it has by status."""

    name: str = Field(examples=["call/opening"])
    kind: Literal["template", "styles"]
    live: LiveRef | None
    counts: dict[str, int] = Field(examples=[{"live": 1, "superseded": 2, "draft": 1}])
    newest_id: int


class LintFinding(BaseModel):
    code: str = Field(examples=["banned-phrase"])
    message: str = Field(examples=["'保本' (guarantee)"])
    template: str | None = None
    line: int | None = None
    level: str = "error"


class VersionOut(BaseModel):
    """One immutable version and where it is in the workflow."""

    id: int
    name: str = Field(examples=["call/opening"])
    kind: str
    version: str = Field(description="SHA-256 prefix of the source.", examples=["3f9a0c2d1b7e4a55"])
    status: Literal["draft", "submitted", "approved", "rejected", "live", "superseded"]
    author: str = Field(examples=["alice"])
    message: str
    parent: str | None = Field(description="The version this one was edited from.")
    created_at: datetime
    submitted_at: datetime | None
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None
    approved_at: datetime | None
    live_at: datetime | None
    flags: int = Field(description="Failed QA reviews traced to this version.")
    lint_errors: int
    lint: list[LintFinding]


class EventOut(BaseModel):
    """One audit-log entry; ``hash`` covers the entry and the previous entry's hash."""

    id: int
    at: datetime
    name: str
    version: str
    action: str = Field(examples=["approve"])
    actor: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class VersionDetail(VersionOut):
    source: str
    events: list[EventOut] = []


class SavedVersion(VersionDetail):
    created: bool = Field(description="False when this exact text was already a version.")


class TemplateDetail(BaseModel):
    name: str
    kind: str
    live: VersionDetail | None
    versions: list[VersionOut] = Field(description="Every version, newest first.")


class VersionSave(_In):
    """A new version of a template (or of styles.yaml)."""

    source: str = Field(max_length=MAX_SOURCE, description="The whole new text of the file.",
                        examples=["{{ style.greeting }}，{{ customer.honorific }}。..."])  # fmt: skip
    message: str = Field(default="", max_length=500, examples=["shorter opening"])
    parent: str | None = Field(default=None, pattern=_HEX16,
                               description="The version this edit started from.")  # fmt: skip


class ApproveIn(_In):
    note: str = Field(default="", max_length=2000, examples=["checked against CR-13"])
    publish: bool = Field(default=False, description="Also make it live in the same step.")


class RejectIn(_In):
    reasons: list[str] = Field(min_length=1, max_length=20,
                               examples=[["the AI disclosure moved after the pitch"]])  # fmt: skip


class RollbackIn(_In):
    reason: str = Field(default="", max_length=2000, examples=["complaints after v3"])


class DiffOut(BaseModel):
    from_: VersionOut = Field(alias="from")
    to: VersionOut
    diff: str = Field(description="Unified diff.")

    model_config = ConfigDict(populate_by_name=True)


class AuditOut(BaseModel):
    chain_ok: bool = Field(description="Every event's hash checks and chains to the previous.")
    first_bad_id: int | None
    events: list[EventOut]


# --- preview --------------------------------------------------------------------------------


class PreviewIn(_In):
    """Render drafts (laid over the live set) for synthetic customers, with audio."""

    versions: list[Annotated[int, Field(ge=1, le=2_147_483_647)]] = Field(default=[], max_length=20,
                                description="Version ids to preview in place of the live ones.")  # fmt: skip
    samples: list[Literal["S-1", "S-2", "S-3"]] = Field(
        default=["S-1"],
        max_length=3,
        description="Built-in synthetic customers: S-1 a retiree with every field, S-2 a "
        "young man with few, S-3 no name, gender or dates.",
    )
    customers: list[dict[str, Any]] = Field(
        default=[], max_length=5, description="More synthetic customers (records, scored)."
    )
    profiles: list[str] = Field(
        default=[],
        max_length=10,
        description="Profile ids (or 'generic'); default: each customer's own profile.",
    )
    channels: list[Channel] = Field(default=["call"], min_length=1, max_length=3)
    moments: list[str] = Field(default=["none"], min_length=1, max_length=8)
    styles: list[str | None] = Field(default=[None], min_length=1, max_length=5,
                                     description="temperament.interest; null: chosen by rules.")  # fmt: skip
    as_of: date | None = None
    audio: Literal["none", "changed"] = Field(
        default="none",
        description="changed: speak the call segments that differ from the live set (up to 4 "
        "prompts, 600 characters).",
    )
    voice: str = Field(default="auto", max_length=64)
    drafts: dict[Annotated[str, Field(max_length=128)],
                 Annotated[str, Field(max_length=MAX_SOURCE)]] = Field(
        default={}, max_length=3,
        description="Unsaved text by file name (e.g. call/signoff), rendered in place of the "
        "live version without creating one; its static lint findings come back in `lint`.",
    )  # fmt: skip


class PreviewAudio(BaseModel):
    url: str
    sha256: str
    duration_s: float
    voice: str


class PreviewItem(BaseModel):
    customer: str
    profile_id: str | None
    channel: str
    moment: str
    style: str | None
    script: dict[str, Any] | None = Field(description="The rendered Script (segments name "
                                          "their template and version).")  # fmt: skip
    changed: list[int] = Field(default=[], description="Segments that differ from the live set.")
    live_text: dict[int, str] = Field(default={},
                                      description="What the live set says in those segments.")  # fmt: skip
    error: str | None = Field(default=None, description="Why it did not render (a rule broken).")
    audio: PreviewAudio | None = None


class PreviewOut(BaseModel):
    versions: list[LiveRef]
    items: list[PreviewItem]
    lint: dict[str, list[dict[str, Any]]] = Field(
        default={}, description="Each draft's static lint findings (code, message, line); "
        "a draft that does not compile renders no items: its finding says where it breaks.",
    )  # fmt: skip


# --- reviews ------------------------------------------------------------------------------------


class QueueIn(_In):
    campaign_id: str = Field(max_length=64)
    rate: float | None = Field(
        default=None, ge=0, le=1, strict=True, description="Default: settings (0.02)."
    )
    new_version_renders: int | None = Field(default=None, ge=0, le=1000, strict=True)


class QueueOut(BaseModel):
    campaign_id: str
    calls: int
    added: int
    updated: int
    rate: float
    by_reason: dict[str, int]


class ReviewSummary(BaseModel):
    id: int
    batch: str
    call_id: str
    campaign_id: str
    profile_id: str | None
    reasons: list[str] = Field(examples=[["sample", "age_60"]])
    status: Literal["open", "done"]
    scored_by_me: bool
    created_at: datetime


class ReviewTemplate(BaseModel):
    template: str
    version: str
    version_id: int | None
    author: str | None
    status: str | None


class ResultOut(BaseModel):
    id: int
    review_id: int
    reviewer: str
    critical: dict[str, str]
    quality: dict[str, int]
    score: float = Field(description="Weighted quality, 0-100.")
    passed: bool
    defects: list[dict[str, Any]]
    notes: str
    created_at: datetime


class ReviewDetail(ReviewSummary):
    group: str
    script: dict[str, Any]
    audio: dict[str, str]
    scoring: dict[str, Any] | None
    templates: list[ReviewTemplate]
    outcome: dict[str, Any] | None
    results: list[ResultOut] = Field(description="Blind calibration: only yours until all "
                                     "assigned reviewers have scored.")  # fmt: skip


class CriticalIn(_In):
    """Critical compliance items: any fail fails the review."""

    opening_disclosure: Verdict
    risk_disclosure: Verdict
    no_banned_claims: Verdict
    opt_out_honoured: Verdict
    audio_ai_label: Verdict
    no_personal_data: Verdict


class QualityIn(_In):
    """Weighted quality items, 1 (poor) to 5 (excellent)."""

    clarity: int = Field(ge=1, le=5)
    persona_fit: int = Field(ge=1, le=5)
    dialect_naturalness: int = Field(ge=1, le=5)
    pacing: int = Field(ge=1, le=5)


class DefectIn(_In):
    template: str = Field(max_length=200, description="A template the call used.",
                          examples=["call/disclosure"])  # fmt: skip
    item: str = Field(
        max_length=40, description="The scorecard item.", examples=["risk_disclosure"]
    )
    note: str = Field(default="", max_length=2000)


class ScorecardIn(_In):
    critical: CriticalIn
    quality: QualityIn
    defects: list[DefectIn] = Field(default=[], max_length=50)
    notes: str = Field(default="", max_length=5000)


class CalibrationIn(_In):
    call_ids: list[str] = Field(min_length=1, max_length=20)
    reviewers: list[str] = Field(min_length=2, max_length=10,
                                 description="Names of the qa users (API key names).")  # fmt: skip


class CalibrationCreated(BaseModel):
    id: str
    reviews: int


class RefreshIn(_In):
    every: bool = Field(default=False, description="Re-render every waiting call, not only "
                        "those whose template or styles versions are no longer live.")  # fmt: skip


class RefreshProgress(BaseModel):
    campaign_id: str
    live_set: str = Field(description="Digest of the live templates and styles.yaml now.")
    ready: int = Field(description="Calls waiting to be claimed.")
    unchecked: int = Field(description="Of those, not yet checked against the live set by the "
                           "background refresh (a claim checks them anyway).")  # fmt: skip


class RefreshOut(BaseModel):
    campaign_id: str
    ready: int = Field(description="Calls waiting to be claimed.")
    stale: int = Field(description="Of those, made with a version no longer live.")
    refreshed: int
    failed: list[dict[str, str]]
