"""The filters and tests script templates may use: a short, audited allowlist.

Every filter here is a pure function of its arguments that returns a bounded string or number;
none calls its argument or returns an object with methods (COMPLIANCE.md 1.2: a filter that
calls its argument re-opens CVE-2024-56326). Builtin Jinja filters that can amplify output
(``center``, ``indent``, ``replace``, ``wordwrap``, ``batch``) or reach attributes (``attr``,
``map``, ``selectattr``, ``format``) are left out on purpose.

``honorific_of`` and the maskers are also used by the context builder, so a template that
prints ``customer.honorific`` and one that uses ``name|honorific(gender)`` agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from jinja2.filters import FILTERS as _JINJA_FILTERS
from jinja2.tests import TESTS as _JINJA_TESTS

#: Chinese two-character surnames (复姓) that the honorific keeps whole.
COMPOUND_SURNAMES = frozenset(
    "欧阳 司马 上官 诸葛 东方 皇甫 尉迟 公孙 慕容 长孙 宇文 司徒 夏侯 令狐 端木 西门 南宫 独孤".split()
)
_CJK = re.compile(r"^[\u4e00-\u9fff·]+$")
_WEEKDAYS = "一二三四五六日"
#: The longest honorific a script prints; longer (foreign, garbled) names fall back to neutral.
MAX_HONORIFIC_CHARS = 6
NEUTRAL_HONORIFIC = "您"


def surname_of(name: str | None) -> str:
    """The surname of a Chinese name (``欧阳娜娜`` -> ``欧阳``), or ``""``."""
    name = (name or "").strip()
    if not name or not _CJK.match(name):
        return ""
    return name[:2] if name[:2] in COMPOUND_SURNAMES and len(name) > 2 else name[0]


def honorific_of(name: str | None, gender: str | None) -> str:
    """How to address the customer: ``王女士``, ``王先生``; the full name if gender is unknown.

    Without a usable name (none, or not a Chinese name of reasonable length) the result is the
    neutral ``您``, so ``{{ customer.honorific }}好`` always reads naturally.
    """
    name = (name or "").strip()
    return honorific_with(name, surname_of(name), gender)


def honorific_with(name: str, surname: str, gender: str | None) -> str:
    """:func:`honorific_of` for a stripped ``name`` whose :func:`surname_of` is known."""
    if surname and gender in ("F", "M"):
        out = surname + ("女士" if gender == "F" else "先生")
    elif surname:
        out = name
    else:
        out = NEUTRAL_HONORIFIC
    return out if len(out) <= MAX_HONORIFIC_CHARS else NEUTRAL_HONORIFIC


def _strip_zeros(text: str) -> str:
    return text.rstrip("0").rstrip(".") if "." in text else text


def money(value: float | int, unit: str = "元", digits: int = 2) -> str:
    """An amount in Chinese style: ``1,234元``, ``3.5万元``, ``1.2亿元``."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"money needs a number, got {value!r}")
    digits = max(0, min(int(digits), 4))
    amount = float(value)
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    if amount >= 1e8:
        return f"{sign}{_strip_zeros(f'{amount / 1e8:.{digits}f}')}亿{unit}"
    if amount >= 1e4:
        return f"{sign}{_strip_zeros(f'{amount / 1e4:.{digits}f}')}万{unit}"
    return f"{sign}{_strip_zeros(f'{amount:,.{digits}f}')}{unit}"


def percent(value: float | int, digits: int = 2) -> str:
    """A fraction as a percentage: ``0.0215`` -> ``2.15%``."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"percent needs a number, got {value!r}")
    digits = max(0, min(int(digits), 4))
    return _strip_zeros(f"{float(value) * 100:.{digits}f}") + "%"


def to_date(value: Any) -> date | None:
    """A date from a ``date``, ``datetime`` or ISO string; ``None`` for empty values."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            raise ValueError(f"not an ISO date: {value!r}") from None
    raise ValueError(f"not a date: {value!r}")


def format_date(value: Any, fmt: str = "md") -> str:
    """A date in Chinese: ``md`` 3月15日, ``ymd`` 2025年3月15日, ``weekday`` 星期六, ``mdw``."""
    day = to_date(value)
    if day is None:
        raise ValueError("date of an empty value (test it with `if` first)")
    md = f"{day.month}月{day.day}日"
    week = "星期" + _WEEKDAYS[day.weekday()]
    formats = {"md": md, "ymd": f"{day.year}年{md}", "weekday": week, "mdw": f"{md}（{week}）"}
    if fmt not in formats:
        raise ValueError(f"unknown date format {fmt!r}; use one of {', '.join(formats)}")
    return formats[fmt]


_NOT_DIGIT = re.compile(r"\D")


def _digits(value: Any) -> str:
    text = str(value or "")
    if text.isascii() and text.isdecimal():  # digits only already (the usual phone number)
        return text
    return _NOT_DIGIT.sub("", text)


def mask_phone(value: Any) -> str:
    """``13812345678`` -> ``138****5678`` (JR/T 0171 style); short numbers keep the last 2."""
    digits = _digits(value)
    if len(digits) >= 11:
        digits = digits[-11:]
        return f"{digits[:3]}****{digits[-4:]}"
    if len(digits) >= 4:
        return "*" * (len(digits) - 2) + digits[-2:]
    return "*" * len(digits)


def mask_card(value: Any, style: str = "digits") -> str:
    """A card number: ``digits`` first 6 + last 4 (``622588******1234``); ``tail`` 尾号1234."""
    digits = _digits(value)
    if len(digits) < 10:
        raise ValueError("mask_card needs a card number of 10 or more digits")
    if style == "tail":
        return f"尾号{digits[-4:]}"
    if style != "digits":
        raise ValueError("mask_card style is 'digits' or 'tail'")
    return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]


def _honorific_filter(value: Any, gender: str | None = None) -> str:
    if isinstance(value, dict):
        if "honorific" in value:
            return str(value["honorific"])
        return honorific_of(value.get("name"), value.get("gender"))
    return honorific_of(str(value) if value is not None else None, gender)


_SAFE_BUILTINS = (
    "default", "join", "length", "first", "last", "trim", "truncate", "int", "round", "lower",
    "upper", "string", "abs",
)  # fmt: skip

#: The filters templates may use, by name.
FILTERS: dict[str, Callable[..., Any]] = {
    **{name: _JINJA_FILTERS[name] for name in _SAFE_BUILTINS},
    "money": money,
    "percent": percent,
    "date": format_date,
    "honorific": _honorific_filter,
    "mask_phone": mask_phone,
    "mask_card": mask_card,
}

_SAFE_TESTS = (
    "defined", "undefined", "none", "number", "string", "sequence", "mapping", "odd", "even",
    "divisibleby", "eq", "ne", "lt", "le", "gt", "ge", "in", "true", "false", "boolean",
    "integer", "float",
)  # fmt: skip

#: The tests (``x is ...``) templates may use.
TESTS: dict[str, Callable[..., Any]] = {n: _JINJA_TESTS[n] for n in _SAFE_TESTS}  # type: ignore[misc]
