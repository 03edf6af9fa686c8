"""Content rules for scripts (``personas/compliance.yaml``) and the checks that apply them.

The same :meth:`ContentRules.check` runs when the pack is linted and on every rendered
script, after customer values are filled in (COMPLIANCE.md 5 B: "checked when a template is
published and again after variables are filled in"). It covers banned phrases (negation-aware),
required disclosures per product, the opening's order, SMS and WeChat limits, and leaks (raw
phone/card/ID numbers, template syntax, Python values). The calling rules (window, caps,
cool-down) are declared in the same file for the eligibility gate; they are data here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from scripts_engine._yaml import load_yaml, validate
from scripts_engine.context import BankInfo

_PUNCT = re.compile(r"[，。！？；：、,.!?;:\s（）()“”\"'…—-]")
RISK_ORDER = ("R1", "R2", "R3", "R4", "R5")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def _check_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


class Pattern(_Frozen):
    name: str
    pattern: str

    _valid = field_validator("pattern")(_check_regex)


class LeakPattern(Pattern):
    #: ``digits``: matched against each run of 10+ digits (with X), not the whole text
    scope: Literal["text", "digits"] = "text"


_DIGIT_RUN = re.compile(r"[0-9][0-9Xx]{9,}")


class BannedPhrase(_Frozen):
    phrase: str = Field(min_length=1)
    category: str
    except_in: tuple[str, ...] = ()


class Banned(_Frozen):
    negation_window: int = Field(default=3, ge=0, le=10)
    negators: tuple[str, ...]
    phrases: tuple[BannedPhrase, ...]


class Product(_Frozen):
    name_zh: str
    risk_level: Literal["R1", "R2", "R3", "R4", "R5"]
    triggers: tuple[str, ...]
    required: tuple[str, ...] = ()
    required_on: tuple[str, ...] = ("call",)
    forbidden_on: tuple[str, ...] = ()

    @field_validator("triggers")
    @classmethod
    def _regexes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_regex(v) for v in value)


class OfferRule(_Frozen):
    offer: str
    tags_all: tuple[str, ...] = ()
    tags_none: tuple[str, ...] = ()
    min_risk_rating: Literal["R1", "R2", "R3", "R4", "R5"] | None = None


class Offers(_Frozen):
    rules: tuple[OfferRule, ...] = ()
    default: str


class Opening(_Frozen):
    stage: str = "opening"
    required_in_order: tuple[Pattern, ...]


class Sms(_Frozen):
    max_segment_chars: int = 70
    max_segments: int = 1
    required: tuple[Pattern, ...] = ()


class Wechat(_Frozen):
    max_messages: int = 3
    max_message_chars: int = 120
    required: tuple[Pattern, ...] = ()


class Calling(_Frozen):
    """Dial-time rules, declared for the eligibility gate (not used by the renderer)."""

    consent_required: bool = True
    window: dict[str, Any]
    max_attempts_per_day: int
    max_attempts_per_7_days: int
    refusal_cooldown_days: int
    opt_out_effective_seconds: int


@dataclass(frozen=True)
class Finding:
    """One broken rule: a code, what is wrong, and where.

    Where, as far as it is known: the template (name, version, line) and, for a rendered
    script, the stage and segment key (``value``/``silver``), the profile, channel, moment and
    style of the script, and the customer. Lint of the rendered matrix reports each problem
    once, with the first script it was seen in and ``scripts``, how many scripts had it.
    """

    code: str
    message: str
    template: str | None = None
    line: int | None = None
    stage: str | None = None
    key: str | None = None
    version: str | None = None
    profile: str | None = None
    channel: str | None = None
    moment: str | None = None
    style: str | None = None
    customer: str | None = None
    scripts: int | None = None

    def __str__(self) -> str:
        where = ""
        if self.template:
            where = f"{self.template}.j2" + (f"@{self.version}" if self.version else "")
            where += (f":{self.line}" if self.line else "") + ": "
        script = [
            f"{label} {value}"
            for label, value in (
                ("customer", self.customer), ("profile", self.profile),
                ("channel", self.channel), ("moment", self.moment), ("style", self.style),
            )
            if value
        ]  # fmt: skip
        if self.stage:
            script.append("stage " + self.stage + (f"/{self.key}" if self.key else ""))
        if script:
            where += "[" + ", ".join(script) + "] "
        more = f" (in {self.scripts} scripts)" if self.scripts and self.scripts > 1 else ""
        return f"{where}{self.code}: {self.message}{more}"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class SegmentText:
    """What the checks need of a rendered segment (a :class:`~scripts_engine.script.Segment`
    has the same attributes and is checked as it is)."""

    stage: str
    text: str
    template: str | None = None


@dataclass(frozen=True)
class SegmentFacts:
    """Rule-relevant facts of one segment's text."""

    banned: tuple[tuple[str, str], ...]
    leaks: tuple[tuple[str, str], ...]
    triggered: frozenset[str]
    present: frozenset[str]


@dataclass(frozen=True)
class GroupFacts:
    """The segment-level findings of some segments, the products they mention (each with the
    first segment that does) and the required phrases they carry."""

    findings: tuple[Finding, ...]
    mentioned: tuple[tuple[str, Any], ...]
    present: frozenset[str]


#: shared by every segment and group without such facts (they are kept in memos)
_NONE: frozenset[str] = frozenset()
_NO_FACTS = GroupFacts((), (), _NONE)
_CLEAN = SegmentFacts((), (), _NONE, _NONE)


class _Seg(Protocol):
    @property
    def stage(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def template(self) -> str | None: ...


def _at(seg: _Seg, code: str, message: str) -> Finding:
    """A finding about one segment: its stage, key, template and version."""
    return Finding(
        code,
        message,
        seg.template,
        stage=seg.stage,
        key=getattr(seg, "key", None),
        version=getattr(seg, "version", None),
    )


class ContentRules(_Frozen):
    """The whole of ``compliance.yaml``, with the content checks."""

    model_config = ConfigDict(frozen=True, extra="forbid", ignored_types=(cached_property,))

    version: int
    bank: BankInfo
    banned: Banned
    products: dict[str, Product]
    offers: Offers
    opening: Opening
    sms: Sms
    wechat: Wechat
    leaks: tuple[LeakPattern, ...] = ()
    calling: Calling

    @model_validator(mode="after")
    def _refs(self) -> ContentRules:
        for name in [r.offer for r in self.offers.rules] + [self.offers.default]:
            if name not in self.products:
                raise ValueError(f"offers: unknown product '{name}'")
        return self

    # -- compiled patterns (built once per loaded file) -------------------------------------
    @cached_property
    def _banned_re(self) -> re.Pattern[str]:
        phrases = sorted({p.phrase for p in self.banned.phrases}, key=len, reverse=True)
        return re.compile("|".join(re.escape(p) for p in phrases))

    @cached_property
    def _negator_re(self) -> re.Pattern[str]:
        negs = sorted(self.banned.negators, key=len, reverse=True)
        return re.compile("|".join(re.escape(n) for n in negs))

    @cached_property
    def _phrase_info(self) -> dict[str, BannedPhrase]:
        return {p.phrase: p for p in self.banned.phrases}

    @cached_property
    def _triggers(self) -> dict[str, re.Pattern[str]]:
        return {k: re.compile("|".join(p.triggers)) for k, p in self.products.items()}

    # -- banned phrases ---------------------------------------------------------------------
    def _negated(self, text: str, start: int) -> bool:
        reach = self.banned.negation_window + max(len(n) for n in self.banned.negators)
        lo = max(0, start - reach)
        for neg in self._negator_re.finditer(text, lo, start):
            gap = text[neg.end() : start]
            if len(gap) <= self.banned.negation_window and not _PUNCT.search(gap):
                if not self._banned_re.search(gap):
                    return True
        return False

    def banned_hits(self, text: str) -> list[tuple[str, str, int]]:
        """Banned phrases said affirmatively in ``text``: (phrase, category, offset)."""
        hits = []
        for m in self._banned_re.finditer(text):
            info = self._phrase_info[m.group()]
            if any(
                text.find(word, max(0, m.start() - len(word)), m.end() + len(word)) >= 0
                for word in info.except_in
            ):
                continue
            if not self._negated(text, m.start()):
                hits.append((m.group(), info.category, m.start()))
        return hits

    # -- whole-script checks ----------------------------------------------------------------
    @cached_property
    def _facts(self) -> dict[str, SegmentFacts]:
        return {}

    @cached_property
    def _leak_text(self) -> re.Pattern[str] | None:
        # one plain alternation: `|` is the loosest operator, so joining is the union. Groups
        # around the parts (named or not) slow the scan ~5x; the rule that matched is found
        # afterwards, on the rare hit
        alts = [p.pattern for p in self.leaks if p.scope == "text"]
        return re.compile("|".join(alts)) if alts else None

    @cached_property
    def _leak_digits(self) -> list[tuple[str, re.Pattern[str]]]:
        return [(p.name, re.compile(p.pattern)) for p in self.leaks if p.scope == "digits"]

    def _leak_hits(self, text: str) -> list[tuple[str, str, int]]:
        """Leaks in ``text``: (rule name, what matched, offset)."""
        hits = []
        if self._leak_text is not None:
            for m in self._leak_text.finditer(text):
                name = next(
                    (
                        p.name
                        for p in self.leaks
                        if p.scope == "text" and re.match(p.pattern, m.group())
                    ),
                    "leak",
                )
                hits.append((name, m.group(), m.start()))
        if self._leak_digits:
            for run in _DIGIT_RUN.finditer(text):
                for name, rx in self._leak_digits:
                    if rx.search(run.group()):
                        hits.append((name, run.group(), run.start()))
        return hits

    @cached_property
    def _opening_res(self) -> list[tuple[str, re.Pattern[str]]]:
        return [(p.name, re.compile(p.pattern)) for p in self.opening.required_in_order]

    def segment_facts(self, text: str) -> SegmentFacts:
        """What the rules need to know about one segment's text (memoised by text).

        Banned phrases and leaks cannot span segments (segments are joined with a newline,
        which ends a phrase and a negation), so a script's findings are the union of its
        segments' plus the script-level rules (disclosures, opening, lengths).
        """
        facts = self._facts.get(text)
        if facts is None:
            if len(self._facts) >= 50_000:
                self._facts.clear()
            banned = tuple((p, c) for p, c, _ in self.banned_hits(text))
            leaks = tuple((n, f) for n, f, _ in self._leak_hits(text))
            triggered = frozenset(k for k, rx in self._triggers.items() if rx.search(text))
            present = frozenset(
                ph for p in self.products.values() for ph in p.required if ph in text
            )
            if banned or leaks or triggered or present:
                facts = SegmentFacts(banned, leaks, triggered, present)
            else:
                facts = _CLEAN
            self._facts[text] = facts
        return facts

    def facts(self, segments: Sequence[_Seg]) -> GroupFacts:
        """What the segment-level rules find in some segments (a memoisable part of a script).

        Banned phrases and leaks cannot span segments (segments are joined with a newline,
        which ends a phrase and a negation), so a script's segment-level findings are the
        union of its parts'.
        """
        findings: list[Finding] = []
        mentioned: dict[str, _Seg] = {}
        present: set[str] = set()
        for seg in segments:
            facts = self.segment_facts(seg.text)
            if facts.banned or facts.leaks:
                findings += [
                    _at(seg, "banned-phrase", f"'{phrase}' ({category})")
                    for phrase, category in facts.banned
                ]
                findings += [_at(seg, "leak", f"{name}: '{found}'") for name, found in facts.leaks]
            for key in facts.triggered:
                mentioned.setdefault(key, seg)
            if facts.present:
                present |= facts.present
        if not (findings or mentioned or present):
            return _NO_FACTS
        return GroupFacts(tuple(findings), tuple(mentioned.items()), frozenset(present) or _NONE)

    def check(
        self,
        segments: Sequence[_Seg],
        channel: str,
        parts: Sequence[GroupFacts] | None = None,
    ) -> list[Finding]:
        """Every content rule a rendered script breaks (empty when it is compliant).

        A finding names the segment it is about (stage, key, template and version) where
        there is one; a missing disclosure names the segment that mentioned the product.
        ``parts``: the :meth:`facts` of consecutive slices of ``segments`` that cover them all
        (the renderer memoises them per segment group); default: computed here.
        """
        if parts is None:
            parts = (self.facts(segments),)
        out: list[Finding] = []
        mentioned: dict[str, _Seg] = {}
        present: frozenset[str] = frozenset()
        for part in parts:
            if part.findings:
                out += part.findings
            for key, seg in part.mentioned:
                mentioned.setdefault(key, seg)
            if part.present:
                present |= part.present
        for key in sorted(mentioned):
            product, seg = self.products[key], mentioned[key]
            if channel in product.forbidden_on:
                out.append(_at(seg, "product-channel", f"{key} may not be offered by {channel}"))
            elif channel in product.required_on:
                out += [
                    _at(seg, "missing-disclosure",
                        f"{key} (mentioned here) needs the disclosure '{phrase}' in the script")
                    for phrase in product.required
                    if phrase not in present
                ]  # fmt: skip
        if channel == "call":
            out += self._check_opening(segments)
        elif channel == "sms":
            out += self._check_sms(segments)
        elif channel == "wechat":
            out += self._check_wechat(segments, "\n".join(s.text for s in segments))
        return out

    def _check_opening(self, segments: Sequence[_Seg]) -> list[Finding]:
        first = segments[0] if segments else None
        if first is None or first.stage != self.opening.stage:
            where = _at(first, "opening-order", "") if first is not None else None
            return [
                replace(where, message="the call does not start with the opening")
                if where
                else Finding("opening-order", "the call does not start with the opening")
            ]
        cached = self._openings.get(first.text)
        if cached is None:
            cached = self._openings[first.text] = self._opening_problems(first.text)
        return [_at(first, "opening-order", message) for message in cached]

    @cached_property
    def _openings(self) -> dict[str, tuple[str, ...]]:
        return {}

    def _opening_problems(self, text: str) -> tuple[str, ...]:
        pos, out = 0, []
        for name, rx in self._opening_res:
            m = rx.search(text, pos)
            if m is None:
                where = "after the previous one" if rx.search(text) else ""
                out.append(f"the opening must say the {name} {where}".rstrip())
            else:
                pos = m.end()
        if len(self._openings) >= 10_000:
            self._openings.clear()
        return tuple(out)

    def _check_sms(self, segments: Sequence[_Seg]) -> list[Finding]:
        text = "\n".join(s.text for s in segments)
        first = segments[0] if segments else None

        def at(code: str, message: str) -> Finding:
            return _at(first, code, message) if first else Finding(code, message, stage="sms")

        out = []
        n = len(text)
        parts = 1 if n <= self.sms.max_segment_chars else math.ceil(n / 67)
        if parts > self.sms.max_segments:
            out.append(
                at(
                    "sms-length",
                    f"{n} characters make {parts} SMS segments "
                    f"(at most {self.sms.max_segments} of {self.sms.max_segment_chars})",
                )
            )
        for slot in self.sms.required:
            if not re.search(slot.pattern, text):
                out.append(at("sms-required", f"the SMS must carry the {slot.name}"))
        return out

    def _check_wechat(self, segments: Sequence[_Seg], full: str) -> list[Finding]:
        out = []
        if len(segments) > self.wechat.max_messages:
            out.append(
                Finding(
                    "wechat-length",
                    f"{len(segments)} messages (at most {self.wechat.max_messages})",
                    stage="wechat",
                )
            )
        for seg in segments:
            if len(seg.text) > self.wechat.max_message_chars:
                out.append(
                    _at(
                        seg,
                        "wechat-length",
                        f"a message of {len(seg.text)} characters "
                        f"(at most {self.wechat.max_message_chars})",
                    )
                )
        for slot in self.wechat.required:
            if not re.search(slot.pattern, full):
                out.append(
                    Finding(
                        "wechat-required",
                        f"the WeChat messages must carry the {slot.name}",
                        stage="wechat",
                    )
                )
        return out

    @cached_property
    def offer_barring_tags(self) -> frozenset[str]:
        """The tags that, hit by the customer, can bar an offer (every rule's ``tags_none``)."""
        return frozenset(t for rule in self.offers.rules for t in rule.tags_none)

    # -- offers -----------------------------------------------------------------------------
    def choose_offer(
        self,
        tags: Sequence[str] | None,
        risk_rating: str | None,
        hits: Collection[str] = (),
    ) -> str:
        """The product a call offers; suitability-gated on the customer's risk rating.

        ``tags_all`` tests the profile's tags; ``tags_none`` tests them and every tag the
        customer hits (``hits``), so a retiree whose profile left ``silver`` out is still
        not offered wealth by the AI.
        """
        if tags:
            rank = RISK_ORDER.index(risk_rating) if risk_rating in RISK_ORDER else -1
            for rule in self.offers.rules:
                if not all(t in tags for t in rule.tags_all):
                    continue
                if any(t in tags or t in hits for t in rule.tags_none):
                    continue
                if rule.min_risk_rating and rank < RISK_ORDER.index(rule.min_risk_rating):
                    continue
                return rule.offer
        return self.offers.default


def load_rules(path: Path) -> ContentRules:
    """Load and validate ``compliance.yaml``.

    Raises:
        CatalogError: with file, key and line.
    """
    data, lines = load_yaml(path)
    return validate(ContentRules, data, path=path, lines=lines)
