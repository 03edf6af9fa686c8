"""The claim-time compliance gate (COMPLIANCE.md 5 A): may this customer be called now?

Rules and limits come from the ``calling`` section of ``personas/compliance.yaml``. The gate
is a pure function of the customer's facts, the suppressions in force, the attempts already
made and the time: the caller (the claim, :mod:`scripts_engine.claims`) reads those under a
lock and records the :class:`Decision`. It fails closed: a missing consent is a refusal, an
unreadable time zone or any error is a block.

Checks, in order (every one is evaluated and recorded; the first failure decides):

====================  =======  ================================================================
rule                  id       blocks when
====================  =======  ================================================================
``consent``           CR-01    no marketing-call consent (missing counts as no)
``number``            CR-00    no phone number on file (the service's own check: nothing to dial)
``opt_out``           CR-03    an opt-out outcome, ever (until re-consent: not modelled here)
``refusal``           CR-02    a refusal less than ``refusal_cooldown_days`` ago
``dnc_list``          CR-02    the number is on the bank's do-not-call list (``/v1/dnc``)
``window``            CR-04    outside the calling window in the customer's time zone
``daily_cap``         CR-05    ``max_attempts_per_day`` attempts already on the local day
``weekly_cap``        CR-05    ``max_attempts_per_7_days`` attempts in the last 7 local days
====================  =======  ================================================================

Suppressions and attempts count for the customer and for the customer's phone number (the
do-not-call list holds numbers, COMPLIANCE.md [C7]; Hong Kong caps calls to a number [HK1]):
an opt-out said on a line stops the calls to every customer on file with that number, and a
household's number is called at most as often as one customer. The claim reads both
(:mod:`scripts_engine.claims`); a check's detail says when it was another customer's.

Blocks by ``consent``, ``number``, ``opt_out`` and a ``dnc_list`` entry without an end are
final for the call; the others say when to retry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from scripts_engine.compliance import Calling, load_rules

RULE_IDS = {
    "consent": "CR-01",
    "number": "CR-00",  # not a law's: the service's own, as a gate error is
    "opt_out": "CR-03",
    "refusal": "CR-02",
    "dnc_list": "CR-02",
    "window": "CR-04",
    "daily_cap": "CR-05",
    "weekly_cap": "CR-05",
    "gate_error": "CR-00",
}
FINAL_RULES = frozenset({"consent", "number", "opt_out", "gate_error"})


@dataclass(frozen=True)
class CallingRules:
    """The dial-time limits, with a content hash recorded beside every decision."""

    consent_required: bool = True
    start: time = time(9, 0)
    end: time = time(21, 0)
    default_timezone: str = "Asia/Shanghai"
    max_per_day: int = 1
    max_per_7_days: int = 3
    refusal_cooldown_days: int = 180
    version: str = "default"

    @classmethod
    def from_calling(cls, calling: Calling) -> CallingRules:
        w = calling.window
        blob = json.dumps(calling.model_dump(mode="json"), sort_keys=True)
        if not w.get("end_exclusive", True):
            raise ValueError("calling.window.end_exclusive must be true")
        return cls(
            consent_required=calling.consent_required,
            start=time.fromisoformat(str(w.get("start", "09:00"))),
            end=time.fromisoformat(str(w.get("end", "21:00"))),
            default_timezone=str(w.get("default_timezone", "Asia/Shanghai")),
            max_per_day=calling.max_attempts_per_day,
            max_per_7_days=calling.max_attempts_per_7_days,
            refusal_cooldown_days=calling.refusal_cooldown_days,
            version=hashlib.sha256(blob.encode()).hexdigest()[:12],
        )

    @classmethod
    def load(cls, personas_dir: Path) -> CallingRules:
        """The rules of ``<personas_dir>/compliance.yaml``."""
        return cls.from_calling(load_rules(personas_dir / "compliance.yaml").calling)


@dataclass(frozen=True)
class Subject:
    """What the gate needs to know about one customer at claim time."""

    customer_id: str
    consent: bool | None
    timezone: str | None
    opted_out: bool = False
    refused_until: datetime | None = None
    attempt_days: Sequence[date] = ()  # local days of earlier attempts (any campaign)
    has_number: bool = True  # a phone number on file to dial
    #: what of the above was another customer's on the same phone number: the suppression
    #: kinds (``opt_out``, ``refusal``) and the attempts' local days
    #: the customer's number is on the do-not-call list, until when (None: no end)
    dnc_listed: bool = False
    dnc_until: datetime | None = None
    #: its number's other customers' opt-outs and refusals ``(kind, customer id)`` (counted
    #: above too), and attempts ``(time, customer id)``, counted on this customer's local day
    #: (not in ``attempt_days``); both named in the checks' details
    number_blocks: Sequence[tuple[str, str]] = ()
    number_attempts: Sequence[tuple[datetime, str]] = ()
    #: the number on file as the record shows it (masked), for the audit record
    number_shown: str = ""


class Check(NamedTuple):
    """One rule's check (a tuple: a claim makes six a candidate)."""

    rule: str
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "id": RULE_IDS[self.rule], "passed": self.passed,
                "detail": self.detail}  # fmt: skip


@dataclass(frozen=True)
class Decision:
    """The gate's answer: allowed or not, the deciding rule, every check, and the timing."""

    allowed: bool
    rule: str  # the first failed check, or "allowed"
    checks: tuple[Check, ...]
    final: bool = False  # a block that no waiting lifts (for this call)
    retry_at: datetime | None = None  # when a temporary block lifts (UTC)
    local_day: date | None = None
    window_end: datetime | None = None  # when today's window closes (UTC)
    extra: dict[str, Any] = field(default_factory=dict)

    def checks_json(self) -> list[dict[str, Any]]:
        return [c.to_dict() for c in self.checks]


def _whose(customers: Iterable[str]) -> str:
    """``customer C2``, ``customers C2, C3``, ``customers C2, C3, C4 and 2 more``."""
    ids = sorted(set(customers))
    if len(ids) == 1:
        return f"customer {ids[0]}"
    more = f" and {len(ids) - 3} more" if len(ids) > 3 else ""
    return f"customers {', '.join(ids[:3])}{more}"


def _said(kind: str, s: Subject) -> str:
    """Whose opt-out or refusal it was, when it was another customer's on the same number."""
    whose = [c for k, c in s.number_blocks if k == kind]
    return f" (said on this number by {_whose(whose)})" if whose else ""


def _others(attempts: list[tuple[date, str]]) -> str:  # (local day, customer id)
    if not attempts:
        return ""
    return f" ({len(attempts)} to this number, for {_whose(c for _d, c in attempts)})"


class Gate:
    """Evaluates :class:`Subject` s against :class:`CallingRules`."""

    def __init__(self, rules: CallingRules):
        self.rules = rules
        self._window = f"{rules.start:%H:%M}-{rules.end:%H:%M}"

    def zone(self, name: str | None) -> ZoneInfo:
        return ZoneInfo(name or self.rules.default_timezone)

    def local_day(self, now: datetime, tz: str | None) -> date:
        return now.astimezone(self.zone(tz)).date()

    def _at(self, day: date, t: time, zone: ZoneInfo) -> datetime:
        return datetime.combine(day, t, tzinfo=zone).astimezone(UTC)

    def next_window_start(
        self, now: datetime, zone: ZoneInfo, *, from_day: date | None = None
    ) -> datetime:
        """The first moment at or after ``now``, on or after ``from_day``, inside the window."""
        day = from_day or now.astimezone(zone).date()
        for _ in range(366):
            if now < self._at(day, self.rules.end, zone):
                return max(self._at(day, self.rules.start, zone), now)
            day += timedelta(days=1)
        raise ValueError("the calling window never opens")

    def evaluate(self, subject: Subject, now: datetime) -> Decision:
        """Decide for ``subject`` at ``now`` (timezone-aware). Never raises: errors block."""
        try:
            return self._evaluate(subject, now)
        except Exception as exc:  # fail closed, and say why
            check = Check("gate_error", False, f"{type(exc).__name__}: {exc}")
            return Decision(False, "gate_error", (check,), final=True)

    def _evaluate(self, s: Subject, now: datetime) -> Decision:
        r = self.rules
        checks: list[Check] = []
        retry: list[datetime] = []
        consent_ok = bool(s.consent) or not r.consent_required
        checks.append(Check("consent", consent_ok, "consent on file" if consent_ok
                            else "no marketing-call consent (missing counts as refusal)"))  # fmt: skip
        on_file = f"a phone number on file ({s.number_shown})" if s.number_shown else (
            "a phone number on file")  # fmt: skip
        checks.append(Check("number", s.has_number, on_file if s.has_number
                            else "no phone number on file: nothing to dial"))  # fmt: skip
        checks.append(Check("opt_out", not s.opted_out, "no opt-out" if not s.opted_out else
                            "opted out" + _said("opt_out", s)))  # fmt: skip
        refused = s.refused_until is not None and s.refused_until > now
        checks.append(Check("refusal", not refused, f"refused; blocked until "
                            f"{s.refused_until:%Y-%m-%d}"
                            + _said("refusal", s)
                            if refused else "no refusal in force"))  # fmt: skip
        if refused and s.refused_until is not None:
            retry.append(s.refused_until)
        listed = s.dnc_listed and (s.dnc_until is None or s.dnc_until > now)
        checks.append(Check("dnc_list", not listed, "not on the do-not-call list" if not listed
                            else "the number is on the do-not-call list" + (
                                f" until {s.dnc_until.isoformat()}" if s.dnc_until else "")))  # fmt: skip
        if listed and s.dnc_until is not None:
            retry.append(s.dnc_until)

        zone = self.zone(s.timezone)
        local = now.astimezone(zone)
        day = local.date()
        in_window = r.start <= local.time() < r.end
        window_end = self._at(day, r.end, zone)
        checks.append(Check("window", in_window, f"local time {local.hour:02d}:{local.minute:02d}"
                            f" ({zone.key}); window {self._window}"))  # fmt: skip
        if not in_window:
            retry.append(self.next_window_start(now, zone))

        others = [(at.astimezone(zone).date(), c) for at, c in s.number_attempts]
        days = [*s.attempt_days, *(d for d, _c in others)]
        today = sum(1 for d in days if d == day)
        week_days = sorted(d for d in days if day - timedelta(days=6) <= d <= day)
        day_ok = today < r.max_per_day
        week_ok = len(week_days) < r.max_per_7_days
        others_today = [(d, c) for d, c in others if d == day]
        others_week = [(d, c) for d, c in others if day - timedelta(days=6) <= d <= day]
        checks.append(Check("daily_cap", day_ok, f"{today} of {r.max_per_day} attempts today"
                            + _others(others_today)))  # fmt: skip
        checks.append(Check("weekly_cap", week_ok,
                            f"{len(week_days)} of {r.max_per_7_days} attempts in 7 days"
                            + _others(others_week)))  # fmt: skip
        if not day_ok:
            retry.append(self.next_window_start(now, zone, from_day=day + timedelta(days=1)))
        if not week_ok:
            # the oldest counted attempt leaves the 7-day span on its day + 7
            free = week_days[len(week_days) - r.max_per_7_days] + timedelta(days=7)
            retry.append(self.next_window_start(now, zone, from_day=max(free, day)))

        failed = [c for c in checks if not c.passed]
        if not failed:
            return Decision(True, "allowed", tuple(checks), local_day=day, window_end=window_end)
        final = any(c.rule in FINAL_RULES for c in failed) or (listed and s.dnc_until is None)
        return Decision(
            False,
            failed[0].rule,
            tuple(checks),
            final=final,
            retry_at=None if final else max(retry),
            local_day=day,
            window_end=window_end,
        )
