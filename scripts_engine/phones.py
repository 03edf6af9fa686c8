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

import functools
import re
import unicodedata
from typing import Any

import phonenumbers

#: the region of a number written without a country code
DEFAULT_REGION = "CN"
_NANP = re.compile(r"1[ \-.(]")
#: what a phone number as a record gives it may hold (after NFKC: full-width digits and
#: spaces are plain ones): digits, spaces, a leading +, - ( ) and .
_SPELLING = re.compile(r"\+?[0-9(][0-9 ()\-.]*")
_DECIMAL = re.compile(r"[0-9]+\.0+")


def check_phone(value: Any) -> tuple[str, str] | tuple[None, str]:
    """A phone number as a customer record or the do-not-call list takes one: ``(the text,
    its key)``, the text with full-width digits and spaces made plain; or ``(None, why
    not)``. Stricter than :func:`phone_key`: only digits and the usual separators (no
    letters, extensions or second numbers, which a dialler would not dial as the number
    judged), no spreadsheet decimal (``13916104304.0``), and a valid number, not merely one of
    a possible length."""
    text = unicodedata.normalize("NFKC", str(value)).strip()
    if not _SPELLING.fullmatch(text):
        return None, "only digits, spaces, a leading +, - ( ) and . belong in a phone number"
    if _DECIMAL.fullmatch(text):
        return None, "a number saved as a decimal (as a spreadsheet does): give its digits only"
    key, valid = _read(text)
    if key is None or not valid:
        return None, "no valid number of its country"
    return text, key


def phone_key(value: Any) -> str | None:
    """The number's E.164 form (``+8613800001234``), or None when ``value`` is empty or
    does not read as a phone number at all (it then suppresses and counts nothing beyond its
    customer)."""
    if value is None:
        return None
    text = str(value).strip()
    return _read(text)[0] if text else None


@functools.lru_cache(maxsize=1 << 16)
def _read(text: str) -> tuple[str | None, bool]:
    """The number ``text`` reads as (E.164) and whether it is a valid one (not only of a
    possible length). Cached: an import checks a record's number, then stores its key."""
    # "1 (510) 555-0123", "1-312-555-0123": a lone 1 first is how North American numbers are
    # written; no Chinese number is (a mobile's 1 is part of its first group of three)
    if _NANP.match(text) and (nanp := _parsed("+" + text, None)) is not None:
        if phonenumbers.is_valid_number(nanp):
            return _e164(nanp), True
    number = _parsed(text, DEFAULT_REGION)
    if number is not None and phonenumbers.is_valid_number(number):
        return _e164(number), True
    # not a Chinese number as written: an international one without its "+" or "00"
    # ("852 9188 3001", "1-646-555-0199") when it reads as a valid number so
    if text[:1] != "+" and (foreign := _parsed("+" + text, None)) is not None:
        if phonenumbers.is_valid_number(foreign):
            return _e164(foreign), True
    if number is not None and phonenumbers.is_possible_number(number):
        return _e164(number), False
    return None, False


def _parsed(text: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None


def _e164(number: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
