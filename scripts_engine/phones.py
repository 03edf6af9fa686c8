"""Phone numbers as one key per line: what the do-not-call list and the frequency caps count.

A number reaches the product in many spellings (``13800001234``, ``+86 138 0000 1234``,
``0086-138-0000-1234``, ``(010) 1234 5678``), and one line may be on file for several
customers (a household's landline, a parent's mobile given by a child). The law speaks of
numbers: a refusal puts *the number* on the do-not-call list (COMPLIANCE.md [C7], [C8]), and
Hong Kong counts unsolicited calls *to the same number* [HK1]. So every stored customer keeps
its number's key, its E.164 form (``+8613800001234``): the claim counts the suppressions and
attempts of the customer *and* of its number (:mod:`scripts_engine.claims`).

Numbers without a country code are read as Chinese (:data:`DEFAULT_REGION`: the product is
China first; ``0`` is the trunk prefix, as in ``010-...``), unless they are no valid Chinese
number but a valid one with a ``+`` in front: ``852 9188 3001`` and ``1-646-555-0199`` are a
Hong Kong and a US number written without it. Parsing is Google's libphonenumber rules (the
``phonenumbers`` package), not a hand-made normaliser.
"""

from __future__ import annotations

from typing import Any

import phonenumbers

#: the region of a number written without a country code
DEFAULT_REGION = "CN"


def phone_key(value: Any) -> str | None:
    """The number's E.164 form (``+8613800001234``), or None when ``value`` is empty or
    does not read as a phone number at all (it then suppresses and counts nothing beyond its
    customer)."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    number = _parsed(text, DEFAULT_REGION)
    if number is not None and phonenumbers.is_valid_number(number):
        return _e164(number)
    # not a Chinese number as written: an international one without its "+" or "00"
    # ("852 9188 3001", "1-646-555-0199") when it reads as a valid number so
    if text[:1] != "+" and (foreign := _parsed("+" + text, None)) is not None:
        if phonenumbers.is_valid_number(foreign):
            return _e164(foreign)
    if number is not None and phonenumbers.is_possible_number(number):
        return _e164(number)
    return None


def _parsed(text: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None


def _e164(number: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
