"""The moment that opens a call (MOT, DOMAIN.md): chosen from the customer's dates or given.

``auto`` picks the first moment that applies: a product maturing within
``maturity_within_days``, a birthday within ``birthday_within_days``, a holiday of the
calendar in ``styles.yaml`` within ``holiday_within_days``; else ``none``. The result is the
``moment`` variable of every template (:class:`~scripts_engine.context.MomentInfo`).
"""

from __future__ import annotations

from datetime import date

from scripts_engine.context import MOMENTS, MomentInfo
from scripts_engine.errors import ScriptRenderError
from scripts_engine.filters import to_date
from scripts_engine.styles import Styles


def next_anniversary(day: date, as_of: date) -> date:
    """The next date on or after ``as_of`` with ``day``'s month and day (29 Feb: 1 Mar)."""
    for year in (as_of.year, as_of.year + 1):
        try:
            candidate = day.replace(year=year)
        except ValueError:  # 29 February
            candidate = date(year, 3, 1)
        if candidate >= as_of:
            return candidate
    return as_of


def auto_moment(styles: Styles, maturity: date | None, birthday: date | None, as_of: date) -> str:
    """The moment ``auto`` stands for, from the customer's dates and the calendar."""
    auto = styles.moments.auto
    holiday = styles.next_holiday(as_of)
    if maturity and 0 <= (maturity - as_of).days <= auto.maturity_within_days:
        return "maturity"
    if birthday and (next_anniversary(birthday, as_of) - as_of).days <= auto.birthday_within_days:
        return "birthday"
    if holiday and (holiday.date - as_of).days <= auto.holiday_within_days:
        return "holiday"
    return "none"


def resolve_moment(
    styles: Styles,
    kind: str,
    *,
    maturity_date: str,
    birthday: str,
    as_of: date,
    lead: str | None,
) -> MomentInfo:
    """The ``moment`` variable for ``kind`` (or ``auto``).

    Raises:
        ScriptRenderError: an unknown moment.
    """
    mature, born = to_date(maturity_date), to_date(birthday)
    if kind == "auto":
        kind = auto_moment(styles, mature, born, as_of)
    if kind not in MOMENTS:
        raise ScriptRenderError(f"unknown moment '{kind}'; use auto or one of {', '.join(MOMENTS)}")
    day: date | None = None
    holiday_zh = event_zh = ""
    if kind == "maturity":
        day = mature
    elif kind == "birthday":
        day = next_anniversary(born, as_of) if born else None
    elif kind == "holiday":
        h = styles.next_holiday(as_of)
        day, holiday_zh = (h.date, h.name) if h else (None, "节日")
    elif kind == "event":
        event_zh = styles.event_name(lead)
    return MomentInfo(
        kind=kind,
        label_zh=styles.moments.labels[kind],
        date=day.isoformat() if day else "",
        days=(day - as_of).days if day else -1,
        holiday_zh=holiday_zh,
        event_zh=event_zh,
    )
