"""Script styles (``personas/styles.yaml``): 27 base characters, closes and the moment calendar.

A style is a temperament (tone and length) and an interest (the opening hook). Both are chosen
from the customer's fields by ordered rules in the YAML, or set explicitly. The same file says
how a persona call closes (by the profile's tags) and holds the calendar the moments use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from scripts_engine._yaml import load_yaml, parse_yaml, validate
from scripts_engine.context import CLOSES, MOMENTS, StyleInfo
from scripts_engine.errors import ScriptRenderError

NEUTRAL = "neutral"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Temperament(_Frozen):
    """Tone and length: how this kind of person likes to be spoken to."""

    label_zh: str
    detail: int = Field(ge=1, le=3, description="1 brief, 2 standard, 3 detailed.")
    greeting: str
    ask: str
    reassure: str
    thanks: str


class Interest(_Frozen):
    """What the opening hook talks about."""

    label_zh: str
    hook: str


class Cond(_Frozen):
    """One test on one customer field; a missing field never matches."""

    field: str
    in_: tuple[str, ...] | None = Field(default=None, alias="in")
    ge: float | None = None
    lt: float | None = None

    def test(self, record: Mapping[str, Any]) -> bool:
        value = record.get(self.field)
        if value is None or value == "" or value != value:  # None, empty, NaN
            return False
        if self.in_ is not None and str(value) not in self.in_:
            return False
        try:
            if self.ge is not None and not float(value) >= self.ge:
                return False
            if self.lt is not None and not float(value) < self.lt:
                return False
        except (TypeError, ValueError):
            return False
        return True


class _Rule(_Frozen):
    all_: tuple[Cond, ...] = Field(default=(), alias="all")
    any_: tuple[Cond, ...] = Field(default=(), alias="any")

    @model_validator(mode="after")
    def _one(self) -> _Rule:
        if not self.all_ and not self.any_:
            raise ValueError("a rule needs 'all' or 'any' conditions")
        return self

    def matches(self, record: Mapping[str, Any]) -> bool:
        ok_all = all(c.test(record) for c in self.all_)
        ok_any = any(c.test(record) for c in self.any_) if self.any_ else True
        return ok_all and ok_any


class TemperamentRule(_Rule):
    temperament: str


class InterestRule(_Rule):
    interest: str


class TemperamentChoice(_Frozen):
    rules: tuple[TemperamentRule, ...] = ()
    default: str


class InterestChoice(_Frozen):
    rules: tuple[InterestRule, ...] = ()
    default: str


class Choose(_Frozen):
    temperament: TemperamentChoice
    interest: InterestChoice


class CloseRule(_Frozen):
    close: str
    lead_in: tuple[str, ...] | None = None
    tags_all: tuple[str, ...] | None = None

    def matches(self, tags: Sequence[str]) -> bool:
        if self.lead_in is not None and (not tags or tags[0] not in self.lead_in):
            return False
        return self.tags_all is None or all(t in tags for t in self.tags_all)


class Closes(_Frozen):
    rules: tuple[CloseRule, ...] = ()
    default: str
    generic: str


class Holiday(_Frozen):
    date: date
    name: str


class AutoMoment(_Frozen):
    maturity_within_days: int = 30
    birthday_within_days: int = 7
    holiday_within_days: int = 10


class Events(_Frozen):
    default: str
    by_lead: dict[str, str] = {}


class Moments(_Frozen):
    labels: dict[str, str]
    auto: AutoMoment = AutoMoment()
    holidays: tuple[Holiday, ...] = ()
    events: Events


class Agent(_Frozen):
    name: str
    ai_label: str


class Styles(_Frozen):
    """The whole of ``styles.yaml``."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, ignored_types=(cached_property,)
    )

    version: int
    agent: Agent
    temperaments: dict[str, Temperament]
    interests: dict[str, Interest]
    choose: Choose
    closes: Closes
    moments: Moments

    @model_validator(mode="after")
    def _refs(self) -> Styles:
        temps = set(self.temperaments)
        if NEUTRAL not in temps:
            raise ValueError("temperaments: 'neutral' (the generic script's) is required")
        for name in [r.temperament for r in self.choose.temperament.rules] + [
            self.choose.temperament.default
        ]:
            if name not in temps or name == NEUTRAL:
                raise ValueError(f"choose.temperament: unknown or neutral temperament '{name}'")
        for name in [r.interest for r in self.choose.interest.rules] + [
            self.choose.interest.default
        ]:
            if name not in self.interests:
                raise ValueError(f"choose.interest: unknown interest '{name}'")
        for name in [r.close for r in self.closes.rules] + [
            self.closes.default,
            self.closes.generic,
        ]:
            if name not in CLOSES:
                raise ValueError(f"closes: unknown close '{name}'; use one of {CLOSES}")
        missing = [m for m in MOMENTS if m not in self.moments.labels]
        if missing:
            raise ValueError(f"moments.labels: missing {missing}")
        return self

    @cached_property
    def fields_used(self) -> tuple[str, ...]:
        """The customer fields the temperament and interest rules read."""
        rules = (*self.choose.temperament.rules, *self.choose.interest.rules)
        return tuple(sorted({c.field for r in rules for c in (*r.all_, *r.any_)}))

    @property
    def base_characters(self) -> list[str]:
        """The 27 (temperaments x interests) style ids, neutral excluded."""
        return [f"{t}.{i}" for t in self.temperaments if t != NEUTRAL for i in self.interests]

    def choose_style(self, record: Mapping[str, Any], override: str | None = None) -> StyleInfo:
        """The customer's character: explicit ``temperament.interest`` parts win, else rules.

        Raises:
            ScriptRenderError: the override names an unknown temperament or interest.
        """
        return self.info(*self.pick(record, override))

    @cached_property
    def _picks(self) -> dict[tuple[Any, ...], tuple[str, str]]:
        """Memo of :meth:`pick` on the values of :attr:`fields_used` (bounded)."""
        return {}

    def pick(self, record: Mapping[str, Any], override: str | None = None) -> tuple[str, str]:
        """``(temperament, interest)`` for a customer; see :meth:`choose_style`."""
        key = (override, *(record.get(f) for f in self.fields_used))
        try:
            return self._picks[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable value: choose without the memo
            return self._pick(record, override)
        picked = self._pick(record, override)
        if len(self._picks) >= 100_000:
            self._picks.clear()
        self._picks[key] = picked
        return picked

    def _pick(self, record: Mapping[str, Any], override: str | None) -> tuple[str, str]:
        temp_o, _, int_o = (override or "").partition(".")
        temp = temp_o or next(
            (r.temperament for r in self.choose.temperament.rules if r.matches(record)),
            self.choose.temperament.default,
        )
        interest = int_o or next(
            (r.interest for r in self.choose.interest.rules if r.matches(record)),
            self.choose.interest.default,
        )
        if temp not in self.temperaments or temp == NEUTRAL:
            raise ScriptRenderError(
                f"unknown temperament '{temp}'; use one of "
                + ", ".join(t for t in self.temperaments if t != NEUTRAL)
            )
        if interest not in self.interests:
            raise ScriptRenderError(
                f"unknown interest '{interest}'; use one of {', '.join(self.interests)}"
            )
        return temp, interest

    def neutral_style(self) -> StyleInfo:
        """The style of generic scripts: not derived from the customer, no hook."""
        return self.info(NEUTRAL, None)

    def info(self, temp: str, interest: str | None) -> StyleInfo:
        """The context view of one character (``interest=None``: no hook)."""
        t = self.temperaments[temp]
        i = self.interests[interest] if interest else None
        return StyleInfo(
            id=f"{temp}.{interest or 'none'}",
            temperament=temp,
            temperament_zh=t.label_zh,
            interest=interest or "none",
            interest_zh=i.label_zh if i else "",
            detail=t.detail,
            greeting=t.greeting,
            hook=i.hook if i else "",
            ask=t.ask,
            reassure=t.reassure,
            thanks=t.thanks,
        )

    def choose_close(self, tags: Sequence[str] | None) -> str:
        """How a call with these profile tags (score order) closes; generic without tags."""
        if not tags:
            return self.closes.generic
        return next((r.close for r in self.closes.rules if r.matches(tags)), self.closes.default)

    def next_holiday(self, as_of: date) -> Holiday | None:
        """The first holiday on or after ``as_of``, if the calendar has one."""
        upcoming = [h for h in self.moments.holidays if h.date >= as_of]
        return min(upcoming, key=lambda h: h.date) if upcoming else None

    def event_name(self, lead: str | None) -> str:
        """The event a customer is invited to (by lead tag for persona calls)."""
        return self.moments.events.by_lead.get(lead or "", self.moments.events.default)


def load_styles(path: Path) -> Styles:
    """Load and validate ``styles.yaml``.

    Raises:
        CatalogError: with file, key and line.
    """
    data, lines = load_yaml(path)
    return validate(Styles, data, path=path, lines=lines)


def parse_styles(text: str, path: Path = Path("styles.yaml")) -> Styles:
    """Validate ``styles.yaml`` content given as text (a stored version); see :func:`load_styles`.

    Raises:
        CatalogError: with key and line.
    """
    data, lines = parse_yaml(text, path)
    return validate(Styles, data, path=path, lines=lines)
