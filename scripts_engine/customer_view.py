"""The customer as a script template sees them: allowlisted, cleaned and masked fields.

A template never sees the customer record: only :class:`~scripts_engine.context.CustomerInfo`
fields, built here from the record as a plain dict (the renderer builds one per script, so
this avoids pydantic on the hot path; ``tests/engine/test_context.py`` validates the result
against the model). Control characters, template and markup characters are dropped from
every value, so a customer field can neither carry template syntax nor SSML into a script.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scripts_engine.filters import honorific_with, mask_phone, surname_of, to_date

#: characters a customer value may not carry into a script: controls, template and markup
_DROP = str.maketrans("", "", "".join(map(chr, range(32))) + "\x7f{}<>")


def clean(value: Any, limit: int = 40) -> str:
    """A customer value as safe, bounded text (``""`` for None and NaN)."""
    if value is None or value != value:  # None or NaN
        return ""
    return str(value).translate(_DROP).strip()[:limit]


def _iso_date(value: Any) -> str:
    try:
        day = to_date(value)
    except ValueError:
        day = None
    return day.isoformat() if day else ""


def customer_info(customer: Mapping[str, Any]) -> dict[str, Any]:
    """The allowlisted, masked view of a customer record (the ``customer`` variable)."""
    name = clean(customer.get("name"))
    gender = clean(customer.get("gender")).upper()
    if gender not in ("F", "M"):
        gender = ""
    age = customer.get("age")
    try:
        age_years = int(age) if age is not None and age == age else 0
    except (TypeError, ValueError):
        age_years = 0
    name = name.strip()  # clean() cut it to length after stripping
    surname = surname_of(name)
    return {
        "honorific": honorific_with(name, surname, gender),
        "surname": surname,
        "gender": gender,
        "age": age_years,
        "city": clean(customer.get("city"), 20),
        "province": clean(customer.get("province"), 20),
        "phone_masked": mask_phone(customer.get("phone")),
        "birthday": _iso_date(customer.get("birthday")),
        "maturity_date": _iso_date(customer.get("maturity_date")),
    }
