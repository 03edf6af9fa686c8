"""The claim-time gate: every rule, the window boundaries, time zones, caps, fail-closed."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from scripts_engine.config import ROOT
from scripts_engine.gate import CallingRules, Gate, Subject

SH = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def gate() -> Gate:
    return Gate(CallingRules.load(ROOT / "personas"))


def at(hh: int, mm: int = 0, ss: int = 0, zone: ZoneInfo = SH, day: int = 12) -> datetime:
    return datetime(2026, 5, day, hh, mm, ss, tzinfo=zone).astimezone(UTC)


def ok(**kw: object) -> Subject:
    base: dict[str, object] = {"customer_id": "c1", "consent": True, "timezone": "Asia/Shanghai"}
    return Subject(**(base | kw))  # type: ignore[arg-type]


def test_rules_come_from_compliance_yaml(gate: Gate) -> None:
    r = gate.rules
    assert (r.max_per_day, r.max_per_7_days, r.refusal_cooldown_days) == (1, 3, 180)
    assert (r.start.hour, r.end.hour) == (9, 21)
    assert len(r.version) == 12


@pytest.mark.parametrize(
    ("hh", "mm", "ss", "allowed"),
    [(8, 59, 59, False), (9, 0, 0, True), (20, 59, 59, True), (21, 0, 0, False)],
    ids=["08:59:59", "09:00:00", "20:59:59", "21:00:00"],
)
def test_window_boundaries_end_exclusive(gate: Gate, hh: int, mm: int, ss: int, allowed: bool):
    d = gate.evaluate(ok(), at(hh, mm, ss))
    assert d.allowed is allowed
    if not allowed:
        assert d.rule == "window" and not d.final
        assert d.retry_at is not None and d.retry_at.astimezone(SH).hour == 9


def test_window_uses_the_customers_zone_not_the_servers(gate: Gate) -> None:
    now = at(10)  # 10:00 in Shanghai is 03:00 in London and 22:00 (day before) in New York
    assert gate.evaluate(ok(timezone="Europe/London"), now).rule == "window"
    assert gate.evaluate(ok(timezone="America/New_York"), now).rule == "window"
    assert gate.evaluate(ok(timezone=None), now).allowed  # default Asia/Shanghai


def test_us_dst_day(gate: Gate) -> None:
    ny = ZoneInfo("America/New_York")
    now = datetime(2026, 3, 8, 9, 30, tzinfo=ny)  # the morning DST starts
    assert gate.evaluate(ok(timezone="America/New_York"), now.astimezone(UTC)).allowed


@pytest.mark.parametrize("consent", [False, None], ids=["refused", "missing"])
def test_no_consent_is_a_final_block(gate: Gate, consent: bool | None) -> None:
    d = gate.evaluate(ok(consent=consent), at(10))
    assert (d.allowed, d.rule, d.final, d.retry_at) == (False, "consent", True, None)


def test_opt_out_blocks_for_good(gate: Gate) -> None:
    d = gate.evaluate(ok(opted_out=True), at(10))
    assert (d.allowed, d.rule, d.final) == (False, "opt_out", True)


def test_refusal_blocks_until_its_end(gate: Gate) -> None:
    now = at(10)
    until = now + timedelta(days=180)
    d = gate.evaluate(ok(refused_until=until), now + timedelta(days=179))
    assert d.rule == "refusal" and not d.final and d.retry_at is not None
    assert d.retry_at >= until
    assert gate.evaluate(ok(refused_until=until), until + timedelta(days=1)).allowed


def test_daily_and_weekly_caps(gate: Gate) -> None:
    today = date(2026, 5, 12)
    d = gate.evaluate(ok(attempt_days=[today]), at(15))
    assert d.rule == "daily_cap" and d.retry_at is not None
    assert d.retry_at.astimezone(SH).date() == today + timedelta(days=1)
    three = [today - timedelta(days=k) for k in (1, 3, 5)]
    d = gate.evaluate(ok(attempt_days=three), at(15))
    assert d.rule == "weekly_cap" and d.retry_at is not None
    # the oldest of the three (day -5) leaves the 7-day span on day +2
    assert d.retry_at.astimezone(SH).date() == today + timedelta(days=2)
    old = [today - timedelta(days=k) for k in (7, 8, 9)]
    assert gate.evaluate(ok(attempt_days=old), at(15)).allowed


def test_every_check_is_recorded_with_its_rule_id(gate: Gate) -> None:
    d = gate.evaluate(ok(consent=False, opted_out=True), at(22))
    rules = [c["rule"] for c in d.checks_json()]
    assert rules == [
        "consent",
        "number",
        "opt_out",
        "refusal",
        "dnc_list",
        "window",
        "daily_cap",
        "weekly_cap",
    ]
    assert d.rule == "consent"  # the first failure decides
    assert {c["id"] for c in d.checks_json()} >= {"CR-01", "CR-03", "CR-04", "CR-05"}


def test_fails_closed_on_errors(gate: Gate) -> None:
    d = gate.evaluate(ok(timezone="Not/AZone"), at(10))
    assert (d.allowed, d.rule, d.final) == (False, "gate_error", True)


def test_a_numbers_facts_count_and_say_whose_they_were(gate: Gate) -> None:
    """Suppressions and attempts of another customer on the same phone number block as the
    customer's own do, and the check's detail names whose they were (the audit record shows
    why); every decision records the number checked, masked."""
    today = date(2026, 5, 12)
    d = gate.evaluate(ok(opted_out=True, number_blocks=[("opt_out", "C2")],
                         number_shown="138****1234"), at(10))  # fmt: skip
    assert (d.rule, d.final) == ("opt_out", True)
    assert [c.detail for c in d.checks[1:3]] == [
        "a phone number on file (138****1234)",
        "opted out (said on this number by customer C2)",
    ]
    until = at(10) + timedelta(days=30)
    d = gate.evaluate(ok(refused_until=until, number_blocks=[("refusal", "C3"), ("refusal", "C2"),
                                                             ("opt_out", "C9")]), at(10))  # fmt: skip
    assert d.rule == "refusal"
    assert d.checks[3].detail.endswith("(said on this number by customers C2, C3)")
    prior = [today - timedelta(days=2)]
    d = gate.evaluate(ok(attempt_days=prior, number_attempts=[(at(10), "C7")]), at(15))
    assert d.rule == "daily_cap"
    assert [c.detail for c in d.checks[6:]] == [
        "1 of 1 attempts today (1 to this number, for customer C7)",
        "2 of 3 attempts in 7 days (1 to this number, for customer C7)",
    ]
    # another customer's attempt counts on this customer's local day: 08:00 in Shanghai on
    # the 13th is still the 12th in New York
    ny = ok(timezone="America/New_York", number_attempts=[(at(8, day=13), "C7")])
    assert gate.evaluate(ny, at(20, zone=ZoneInfo("America/New_York"))).rule == "daily_cap"
    assert gate.evaluate(ok(attempt_days=prior), at(15)).checks[6].detail == "0 of 1 attempts today"


def test_no_number_to_dial_is_a_final_block(gate: Gate) -> None:
    d = gate.evaluate(ok(has_number=False), at(10))
    assert (d.allowed, d.rule, d.final) == (False, "number", True)
    assert d.checks[1].detail == "no phone number on file: nothing to dial"


def test_a_number_on_the_do_not_call_list_is_not_called(gate: Gate) -> None:
    """An entry without an end closes the call; one with an end holds it back until then."""
    d = gate.evaluate(ok(dnc_listed=True), at(10))
    assert (d.allowed, d.rule, d.final) == (False, "dnc_list", True)
    assert d.checks[4].to_dict() == {"rule": "dnc_list", "id": "CR-02", "passed": False,
                                     "detail": "the number is on the do-not-call list"}  # fmt: skip
    until = at(10) + timedelta(days=30)
    d = gate.evaluate(ok(dnc_listed=True, dnc_until=until), at(10))
    assert (d.rule, d.final, d.retry_at) == ("dnc_list", False, until)
    assert gate.evaluate(ok(dnc_listed=True, dnc_until=until), until + timedelta(hours=1)).allowed
