"""Request and response models of the dialler contract (DESIGN.md), separate from the ORM.

Request models forbid unknown fields (a typo or a mass-assignment attempt is a 422, never
silently ignored). Examples here become the OpenAPI examples.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    StringConstraints,
    Tag,
    TypeAdapter,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from scripts_engine.audio import FORMATS
from scripts_engine.context import MOMENTS

_JSON_TYPES = {dict: "an object", list: "a list"}


def not_scalar(value: Any) -> str | None:
    """What is wrong with a customer field's value as JSON gave it, if it is not a string, a
    number, true/false or null; None when it is one."""
    if value is None or isinstance(value, str | int | float | bool):
        return None
    kind = _JSON_TYPES.get(type(value), type(value).__name__)
    return f"expected a string, a number, true/false or null, got {kind}"


def _scalar(value: Any) -> Any:
    """A field's value as JSON gave it (:func:`not_scalar`): anything else is one error that
    says what came (validated as the union ``str | int | float | bool | None``, it was one
    error per member of the union, each at a path of its own: ``body[0].age.str``, ...)."""
    problem = not_scalar(value)
    if problem is not None:
        raise PydanticCustomError("scalar_type", problem)
    return value


Scalar = Annotated[
    Any,
    PlainValidator(_scalar),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "number"},
                              {"type": "boolean"}, {"type": "null"}]}),
]  # fmt: skip
CustomerRecord = Annotated[
    dict[Annotated[str, StringConstraints(max_length=64)], Scalar],
    Field(
        description="One customer: the grid's scoring fields plus the contact and consent "
        "fields (customer_id, name, gender, phone, province, city, timezone, consent, "
        "profiling_opt_out, risk_rating, birthday, maturity_date).",
        max_length=80,
        examples=[
            {"customer_id": "C001", "name": "王芳", "gender": "F", "phone": "13800001234",
             "province": "广东", "city": "广州", "timezone": "Asia/Shanghai", "consent": True,
             "risk_rating": "R3", "age": 45, "job": "management", "marital": "married",
             "education": "tertiary", "default": "no", "balance": 12000, "housing": "yes",
             "loan": "no", "contact": "cellular", "day": 5, "month": "may", "campaign": 1,
             "pdays": -1, "previous": 0, "poutcome": "unknown"}
        ],
    ),
]  # fmt: skip
#: a customer record whose values are checked row by row (the upsert's): a value of the wrong
#: JSON type rejects its row, not the request; documented as :data:`CustomerRecord`
CustomerRow = Annotated[
    dict[Annotated[str, StringConstraints(max_length=64)], Any],
    Field(max_length=80),
    WithJsonSchema(TypeAdapter(CustomerRecord).json_schema()),
]
Channel = Literal["call", "wechat", "sms"]
Moment = Literal[MOMENTS + ("auto",)]  # type: ignore[valid-type]
AudioFormatName = Literal[tuple(FORMATS)]  # type: ignore[valid-type]
Id = Annotated[str, StringConstraints(min_length=1, max_length=64)]


def _ids_or_all(value: Any) -> str | None:
    return "~ids" if isinstance(value, list) else "~all" if value == "all" else None


#: customer ids, or "all": a tagged union, so a wrong value is one error at the field (not one
#: per member); the tags (``~``) are left out of an error's field path (api.errors.field_path)
IdsOrAll = Annotated[
    Annotated[list[Id], Field(max_length=200_000), Tag("~ids")]
    | Annotated[Literal["all"], Tag("~all")],
    Discriminator(_ids_or_all, custom_error_type="ids_or_all",
                  custom_error_message='expected a list of customer ids, or "all"'),
]  # fmt: skip


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RowErrorOut(BaseModel):
    row: int = Field(description="1-based position of the record in the request or file.")
    field: str
    error: str


class UpsertResult(BaseModel):
    accepted: int = Field(description="Customers inserted or replaced.")
    rejected: list[RowErrorOut] = Field(description="Rejected rows (they changed nothing).")
    ignored: dict[str, str] = Field(default_factory=dict, description="Columns not used, why.")


class ScoreRequest(_In):
    customers: list[CustomerRecord] = Field(min_length=1, max_length=1000)


class ProfileOut(BaseModel):
    id: str = Field(examples=["P07"])
    name: str = Field(description="The profile's name (Chinese).")
    name_zh: str
    name_en: str
    tags: list[str]
    match: Literal["full", "partial"]
    substituted: list[str]


class ScoreItem(BaseModel):
    customer_id: str
    tags: dict[str, float] = Field(description="Score per tag, in [0, 1].")
    hits: list[str] = Field(description="Tags at or above their threshold.")
    inferred: list[str] = Field(description="Tags inferred because their inputs were missing.")
    profile: ProfileOut
    reason: str = Field(description="Why this profile (Chinese).")
    reason_en: str


class ScoreResponse(BaseModel):
    results: list[ScoreItem]
    rejected: list[RowErrorOut]


class SegmentOut(BaseModel):
    stage: str
    key: str
    text: str
    template: str = Field(description="The template that made the segment.")
    version: str = Field(description="The template's content hash.")


class ScriptOut(BaseModel):
    id: str = Field(description="Hash of the script's inputs: same inputs, same id.")
    customer_id: str | None
    profile_id: str | None
    persona: bool = Field(description="False for the generic (control / opt-out) script.")
    channel: Channel
    moment: str
    style: str
    offer: str
    close: str
    as_of: str
    pack_version: str
    segments: list[SegmentOut]
    styles_version: str | None = Field(
        default=None, description="Content hash of the styles.yaml its style lines came from."
    )
    text: str = Field(description="The spoken main path, one segment a line.")
    speech: str = Field(description="The same for a speech engine (escaped, with pauses).")


class RenderRequest(_In):
    customer: CustomerRecord | None = Field(default=None, description="An inline customer.")
    customer_id: Id | None = Field(default=None, description="Or a stored customer's id.")
    channel: Channel = "call"
    moment: Moment = "none"  # type: ignore[valid-type]
    profile_id: Annotated[str, StringConstraints(max_length=16)] | None = Field(
        default=None, description="Render for this profile instead of the scored one."
    )
    as_of: date | None = Field(default=None, description="The script's date (default today).")


class CampaignCreate(_In):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        examples=["May deposits"]
    )
    customers: IdsOrAll = Field(
        default="all", description='Customer ids, or "all" stored customers.'
    )
    channel: Channel = "call"
    moment: Moment = "none"  # type: ignore[valid-type]
    voice: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        default="auto", description='"auto" (by province and city) or a voice id.'
    )
    min_hits: int = Field(
        default=5, ge=0, le=8, strict=True, description="Fewest tag hits to be called."
    )
    holdout_pct: float = Field(
        default=0.0,
        ge=0,
        le=50,
        strict=True,
        description="Percent of customers in the control group.",
    )
    audio_formats: list[AudioFormatName] = Field(  # type: ignore[valid-type]
        default=["wav8k"], min_length=1, max_length=7
    )
    as_of: date | None = Field(default=None, description="Scripts' date (default: today).")


class Progress(BaseModel):
    total: int = Field(description="Customers the campaign was started with.")
    done: int = Field(description="Customers built (each a call, or left out: `filtered`).")
    failed: int = Field(description="Customers whose build failed.")
    filtered: int = Field(
        default=0,
        description="Customers built but left out: fewer tag hits than `min_hits`, or opted "
        "out of profiling while `min_hits` is above 0.",
    )


class CampaignOut(BaseModel):
    id: str = Field(examples=["C-3f2a9c0d1e2b4a5f"])
    name: str
    status: Literal["building", "ready", "failed"]
    progress: Progress
    by_profile: dict[str, int] = Field(description="Calls per profile (generic: none).")
    calls: dict[str, int] = Field(description="Calls per state: ready, leased, blocked, done.")
    options: dict[str, Any]
    created_at: datetime


class CampaignAccepted(BaseModel):
    id: str
    status: str


class ClaimRequest(_In):
    # strict: a number, not ``true`` (1) or ``"5"``
    limit: int = Field(default=1, ge=1, le=100, strict=True, description="Most calls to lease.")
    lease_seconds: int = Field(
        default=300, ge=10, le=3600, strict=True, description="Lease length."
    )


class Window(BaseModel):
    not_before: datetime
    not_after: datetime = Field(description="Dial before this (window end or lease end).")


class ClaimedCallOut(BaseModel):
    id: str = Field(examples=["K-0a1b2c3d4e5f60718293a4b5"])
    campaign_id: str
    customer_id: str
    phone: str | None = Field(description="The number as the bank's record gives it.")
    phone_e164: str | None = Field(
        description="The same number in E.164 form, as the compliance rules judged it "
        "(`+8613800001234`): dial this one when your trunk takes E.164.",
        examples=["+8613800001234"],
    )
    group: Literal["model", "control"]
    profile: ProfileOut | None
    script: ScriptOut
    audio: dict[str, str] = Field(description="Audio URL per format.")
    window: Window
    lease_until: datetime


class ClaimResponse(BaseModel):
    calls: list[ClaimedCallOut]
    next_due: datetime | None = Field(
        default=None,
        description=(
            "With no calls: when to ask again (a call the gate put back becomes due, a lease "
            "out ends, or, while the campaign is still being built, in 2 s). null: nothing is "
            "left to hand out (every call has its outcome or is blocked for good): the "
            "campaign is finished for this dialler."
        ),
    )


class OutcomeIn(_In):
    status: Literal["connected", "no_answer", "busy", "voicemail", "failed"]
    converted: bool = False
    intent_grade: Literal["A", "B", "C", "D"] | None = None
    opt_out: bool = Field(default=False, description="Stop all marketing calls (at once).")
    refused: bool = Field(default=False, description="Declined: no calls for 180 days.")
    duration_s: float | None = Field(
        default=None, ge=0, le=86_400, allow_inf_nan=False, strict=True
    )
    complaint: bool = Field(
        default=False,
        description="The customer complained about the call (to the agent, or said they would "
        "complain to the bank or a regulator): QA must review the call. Counted in the "
        "report's funnel as `complaints`.",
        examples=[True],
    )
    notes: Annotated[str, StringConstraints(max_length=2000)] | None = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [
            {"status": "connected", "converted": True, "intent_grade": "A", "duration_s": 74.5},
            {"status": "connected", "converted": False, "intent_grade": "D", "complaint": True,
             "duration_s": 41.0, "notes": "客户表示来电太频繁"},
        ]},
    )  # fmt: skip

    @field_validator("converted", "intent_grade", "refused")
    @classmethod
    def _said_on_the_phone(cls, value: Any, info: ValidationInfo) -> Any:
        """A sale, an intent grade or a refusal is what a customer said: the call must have
        been ``connected``. (An opt-out and a complaint are kept whatever the status: neither
        may be lost.)"""
        status = info.data.get("status")
        if value and status not in (None, "connected"):
            raise PydanticCustomError(
                "needs_connected",
                "{field} needs status 'connected' (this call was '{status}')",
                {"field": info.field_name, "status": status},
            )
        return value


class OutcomeOut(BaseModel):
    id: int
    call_id: str
    campaign_id: str
    status: str
    converted: bool
    intent_grade: str | None
    opt_out: bool
    refused: bool
    duration_s: float | None
    complaint: bool
    notes: str | None
    recorded_at: str


class CallRecordOut(BaseModel):
    id: str
    campaign_id: str
    customer_id: str
    group: str
    profile_id: str | None
    status: str
    claims: int
    script: dict[str, Any]
    record: dict[str, Any] = Field(description="The audit record: why and how (see README).")
    audio: dict[str, str]
    decisions: list[dict[str, Any]] = Field(description="Every gate decision, oldest first.")
    outcome: OutcomeOut | None


class DecisionBrief(BaseModel):
    at: datetime
    allowed: bool
    rule: str = Field(description="The deciding rule (`allowed` when it was allowed).")


class CallRow(BaseModel):
    id: str
    campaign_id: str
    customer_id: str
    group: str
    profile_id: str | None
    status: Literal["ready", "leased", "blocked", "done"]
    claims: int = Field(description="How many times it was leased.")
    not_before: datetime | None = Field(
        description="When it may be handed out (again): put back by the gate, or leased until."
    )
    last_decision: DecisionBrief | None = Field(
        description="The gate's last decision on it (`GET /v1/calls/{id}` has every check)."
    )


class CallPage(BaseModel):
    calls: list[CallRow]
    next_after: str | None = Field(
        description="Pass as `after` for the next page; null on the last page."
    )


class KeyCreate(_In):
    role: Literal["admin", "dialler", "writer", "qa"]
    name: Annotated[str, StringConstraints(max_length=200)] = ""


class KeyOut(BaseModel):
    id: int
    prefix: str
    role: str
    name: str
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="The key itself: shown once, stored only as a hash.")
    signing_secret: str | None = Field(
        default=None,
        description="Dialler keys: the secret that signs outcome reports (X-Signature), "
        "shown once.",
    )


class SigningSecretOut(BaseModel):
    prefix: str
    signing_secret: str = Field(description="The new outcome-signing secret, shown once.")
    previous_valid_until: datetime = Field(description="When the older secrets stop working.")


class VoiceOut(BaseModel):
    id: str
    label: str
    language: str
    provinces: list[str]
    cities: list[str]


class SynthesizeRequest(_In):
    text: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    voice: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "auto"
    format: AudioFormatName = "wav8k"  # type: ignore[valid-type]


class AudioOut(BaseModel):
    sha256: str
    url: str
    format: str
    duration_s: float


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class DncNumberIn(_In):
    phone: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        examples=["+86 138 0000 1234"],
        description="The number, in any usual spelling (without a country code: Chinese).",
    )
    reason: Annotated[str, StringConstraints(max_length=200)] = Field(
        default="", examples=["complained about marketing calls"]
    )
    until: AwareDatetime | None = Field(
        default=None, description="When the entry ends (null: it stays until lifted)."
    )


class DncIn(_In):
    source: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        default="bank",
        description="Whose list the numbers come from (the bank's own, a regulator's, ...).",
        examples=["bank", "industry"],
    )
    # each row checked on its own (a bad one is rejected with its row, the others stored):
    # documented as DncNumberIn, taken as any object
    numbers: Annotated[
        list[dict[Annotated[str, StringConstraints(max_length=64)], Any]],
        Field(min_length=1, max_length=10_000),
        WithJsonSchema({"type": "array", "minItems": 1, "maxItems": 10_000,
                        "items": TypeAdapter(DncNumberIn).json_schema()}),
    ]  # fmt: skip


class DncResult(BaseModel):
    accepted: int = Field(description="Numbers put on the list (or whose entry was replaced).")
    rejected: list[RowErrorOut] = Field(description="Rejected rows (they changed nothing).")


class DncEntryOut(BaseModel):
    phone_key: str = Field(description="The number in E.164 form.", examples=["+8613800001234"])
    phone: str = Field(description="The number as it was given.")
    source: str
    reason: str
    since: datetime
    until: datetime | None
    lifted_at: datetime | None = Field(description="When it was taken off the list.")
    added_by: int | None = Field(description="The id of the API key that listed it.")
    lifted_by: int | None = Field(description="The id of the API key that lifted it.")


class NumberSuppressionOut(BaseModel):
    kind: Literal["opt_out", "refusal"]
    customer_id: str = Field(description="Whose outcome it was.")
    since: datetime
    until: datetime | None


class DncStatus(BaseModel):
    phone_key: str = Field(examples=["+8613800001234"])
    blocked: bool = Field(
        description="Whether a claim holds back every call to this number now: a list entry "
        "or an opt-out or refusal said on it."
    )
    entries: list[DncEntryOut] = Field(
        description="Its do-not-call list entries in force, one a source."
    )
    suppressions: list[NumberSuppressionOut] = Field(
        description="Opt-outs and refusals in force said on this number (by any customer)."
    )
    history: list[DncEntryOut] | None = Field(
        default=None,
        description="With `?history=true`: every entry it has had, one a source (in force, "
        "ended or lifted; a source's newer entry replaced its older one).",
    )
