"""Dialect text: the script text as a voice should read it.

Two steps turn written script text into speech text, in this order:

1. :func:`normalize` writes numbers out as words in the voice's reading (Mandarin ``cmn`` or
   Cantonese ``yue``): money (``12,345.60元`` -> 一万二千三百四十五元六角), percentages, dates,
   times, ranges, mobile and service numbers (digit by digit, 幺 for 1 in Mandarin), masked card
   and phone numbers (``尾号1234`` -> 尾号一二三四). espeak-ng garbles long digit strings and reads
   ``2024年`` as a cardinal, so nothing with digits is left to the engine.
2. :func:`apply_lexicons` rewrites words with the voice's lexicons (``voices/lexicons/*.yaml``):
   written Mandarin to colloquial Cantonese, regional words for a Mandarin flavour, and fixes for
   engine misreadings (polyphones written as inline pinyin, e.g. 还款 -> huan2款). Matching is
   greedy longest-match from the left over ``replace`` keys and ``keep`` words, so a protected
   compound (目的, 的确, 不过) is consumed whole and its single characters are never rewritten.

Normalisation runs first so that lexicon output (inline pinyin carries tone digits) is never
re-read as a number.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Language = Literal["cmn", "yue"]

_DIGITS = "零一二三四五六七八九"
_SMALL_UNITS = ("", "十", "百", "千")
_BIG_UNITS = {"cmn": ("", "万", "亿", "万亿"), "yue": ("", "萬", "億", "萬億")}
_WORDS = {
    "cmn": {"two": "两", "point": "点", "yuan": "元", "jiao": "角", "fen": "分", "pct": "百分之",
            "permille": "千分之", "oclock": "整", "minus": "负", "tail": "尾号", "to": "到",
            "year": "年", "month": "月", "day": "日", "minute": "分", "second": "秒"},
    "yue": {"two": "兩", "point": "點", "yuan": "元", "jiao": "毫", "fen": "分", "pct": "百分之",
            "permille": "千分之", "oclock": "正", "minus": "負", "tail": "尾號", "to": "到",
            "year": "年", "month": "月", "day": "日", "minute": "分", "second": "秒"},
}  # fmt: skip


class Lexicon(BaseModel):
    """One word list (``voices/lexicons/<id>.yaml``): replacements plus protected words."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="File stem; voices refer to it.")
    description: str = Field(min_length=1, description="What the list is for, for editors.")
    language: Language = Field(description="The reading the list's output assumes.")
    replace: dict[str, str] = Field(default_factory=dict, description="Written -> spoken words.")
    keep: tuple[str, ...] = Field(default=(), description="Compounds never rewritten inside.")

    @field_validator("replace")
    @classmethod
    def _check_replace(cls, value: dict[str, str]) -> dict[str, str]:
        for key, spoken in value.items():
            if not key.strip() or key != key.strip():
                raise ValueError(f"word {key!r} is empty or has surrounding spaces")
            if not isinstance(spoken, str) or not spoken.strip():
                raise ValueError(f"word {key!r} has an empty replacement")
        return value

    @model_validator(mode="after")
    def _check_keep(self) -> Lexicon:
        both = sorted(set(self.keep) & set(self.replace))
        if both:
            raise ValueError(f"words both kept and replaced: {', '.join(both)}")
        return self

    @cached_property
    def _table(self) -> tuple[dict[str, str], int]:
        table = {word: word for word in self.keep}
        table.update(self.replace)
        return table, max((len(w) for w in table), default=0)

    def apply(self, text: str) -> str:
        """Rewrite ``text`` by greedy longest match (protected words are copied unchanged)."""
        table, longest = self._table
        if not longest:
            return text
        out: list[str] = []
        i, n = 0, len(text)
        while i < n:
            for size in range(min(longest, n - i), 0, -1):
                hit = table.get(text[i : i + size])
                if hit is not None:
                    out.append(hit)
                    i += size
                    break
            else:
                out.append(text[i])
                i += 1
        return "".join(out)


def apply_lexicons(text: str, lexicons: Iterable[Lexicon]) -> str:
    """Apply each lexicon in turn (a voice lists them in the order they must run)."""
    for lexicon in lexicons:
        text = lexicon.apply(text)
    return text


# --- numbers ---------------------------------------------------------------------------------


def _four(n: int) -> str:
    """Read 1..9999 with 千百十 and inner zeros (1005 -> 一千零五)."""
    out, zero = "", False
    for power in (3, 2, 1, 0):
        digit = n // 10**power % 10
        if digit == 0:
            zero = bool(out)
            continue
        if zero:
            out += "零"
            zero = False
        out += _DIGITS[digit] + _SMALL_UNITS[power]
    return out


def cardinal(n: int, lang: Language = "cmn") -> str:
    """An integer in words: 12345 -> 一万二千三百四十五, 2000 -> 两千, 10 -> 十.

    Raises:
        ValueError: the number is negative or 10^16 or more.
    """
    if n < 0 or n >= 10**16:
        raise ValueError(f"cannot read {n} as a cardinal")
    if n == 0:
        return "零"
    groups = []
    while n:
        groups.append(n % 10000)
        n //= 10000
    out, gap = "", False
    for index in range(len(groups) - 1, -1, -1):
        group = groups[index]
        if group == 0:
            gap = bool(out)
            continue
        if out and (gap or group < 1000):
            out += "零"
        out += _four(group) + _BIG_UNITS[lang][index]
        gap = False
    if out.startswith("一十"):
        out = out[1:]
    if out.startswith("二") and len(out) > 1 and out[1] in "百千万亿萬億":
        out = _WORDS[lang]["two"] + out[1:]
    return out


def digits(text: str, lang: Language = "cmn", *, phone: bool = False) -> str:
    """Digit by digit: 1234 -> 一二三四; with ``phone`` Mandarin reads 1 as 幺."""
    table = _DIGITS.replace("一", "幺") if phone and lang == "cmn" else _DIGITS
    return "".join(table[int(c)] for c in text if c.isdigit())


def decimal(text: str, lang: Language = "cmn") -> str:
    """``3.50`` -> 三点五零 (the integer part as a cardinal, the fraction digit by digit)."""
    whole, _, frac = text.replace(",", "").partition(".")
    out = cardinal(int(whole or "0"), lang)
    return out + (_WORDS[lang]["point"] + digits(frac, lang) if frac else "")


def money(amount: str, lang: Language = "cmn") -> str:
    """``12,345.60`` -> 一万二千三百四十五元六角 (rounded to the fen)."""
    words = _WORDS[lang]
    cents = round(float(amount.replace(",", "")) * 100)
    yuan, jiao, fen = cents // 100, cents // 10 % 10, cents % 10
    out = cardinal(yuan, lang) + words["yuan"] if yuan or not (jiao or fen) else ""
    if jiao:
        out += _DIGITS[jiao] + words["jiao"]
    if fen:
        out += ("零" if yuan and not jiao else "") + _DIGITS[fen] + words["fen"]
    return out


# Each pass turns its matches into Hanzi, so later passes never see those digits again.
_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_DATE = re.compile(r"(?<!\d)(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})(?!\d)\s*[日号號]?")
_YEAR = re.compile(r"(?<!\d)(\d{4})(?=\s*年)")
_TAIL = re.compile(r"(尾号|尾號|末四位|后四位|後四位)((?:为|是|為)?)\s*[*＊]*(\d{3,6})(?!\d)")
_MASKED = re.compile(r"(?<![\d*＊])(\d{0,6})[ -]?((?:[*＊]+[ -]?)+)(\d{3,4})(?![\d*＊])")
_MOBILE = re.compile(r"(?<![\d.])(?:\+?86[ -]?)?(1[3-9]\d)[ -]?(\d{4})[ -]?(\d{4})(?![\d.])")
_SERVICE = re.compile(
    r"(?<![\d.,])(400[ -]?\d{3}[ -]?\d{4}|800[ -]?\d{3}[ -]?\d{4}|0\d{2,3}[ -]\d{7,8}"
    r"|9[56]\d{3}|1(?:00|23)\d{2})(?![\d.,])(?!\s*(?:[元圆块万亿萬億%％‰个位笔]))"
)
_RANGE = re.compile(r"(?<=[\d%％])\s*[-~～—–至]\s*(?=\d)")
_TIME = re.compile(r"(?<!\d)([01]?\d|2[0-3])[:：]([0-5]\d)(?:[:：]([0-5]\d))?(?!\d)")
_MONEY = re.compile(
    rf"(?:[¥￥]\s*|RMB\s*)(?P<a>{_NUM})\s*(?P<u>[万亿萬億])?(?:元|圆)?|(?P<b>{_NUM})\s*(?P<v>[万亿萬億])?\s*(?:元|圆)"
)
_PERCENT = re.compile(rf"(-)?({_NUM})\s*([%％‰])")
_LONG = re.compile(r"(?<![\d.,])\d{7,}(?![\d.,])")
_MEASURE = "个|個|位|张|張|次|天|笔|筆|项|份|种|件|条|台|本|块|塊|小时|分钟|周|个月"
_NUMBER = re.compile(
    rf"(?<![\d.,])((?<![0-9A-Za-z\u4e00-\u9fff])-)?({_NUM})(?P<m>(?=\s*(?:{_MEASURE})))?"
)
_LEFTOVER = re.compile(r"[*＊#_|^<>{}\[\]\\]+")


def normalize(text: str, lang: Language = "cmn") -> str:
    """Write every number in ``text`` as words in the given reading; drop symbols read literally."""
    w = _WORDS[lang]

    def date(m: re.Match[str]) -> str:
        year, month, day = m.group(1), int(m.group(2)), int(m.group(3))
        if not (1 <= month <= 12 and 1 <= day <= 31):
            return m.group(0).replace("-", " ")
        return f"{digits(year, lang)}{w['year']}{cardinal(month, lang)}{w['month']}{cardinal(day, lang)}{w['day']}"

    def masked(m: re.Match[str]) -> str:
        lead, tail = m.group(1), m.group(3)
        is_phone = len(lead) == 3 and lead.startswith("1")
        before = text_so_far(m)
        prefix = "" if before.endswith(("尾号", "尾號")) else w["tail"]
        return prefix + digits(tail, lang, phone=is_phone)

    def text_so_far(m: re.Match[str]) -> str:
        return m.string[: m.start()].rstrip()

    def time(m: re.Match[str]) -> str:
        hour, minute, second = int(m.group(1)), int(m.group(2)), m.group(3)
        out = (w["two"] if hour == 2 else cardinal(hour, lang)) + w["point"]
        if minute == 0 and not second:
            return out + w["oclock"]
        out += ("零" if minute < 10 else "") + cardinal(minute, lang) + w["minute"]
        if second:
            out += cardinal(int(second), lang) + w["second"]
        return out

    def money_(m: re.Match[str]) -> str:
        amount, unit = (
            (m.group("a"), m.group("u")) if m.group("a") else (m.group("b"), m.group("v"))
        )
        if unit:  # 1.5万元 -> 一点五万元
            return decimal(amount, lang) + _BIG_UNITS[lang][1 if unit in "万萬" else 2] + w["yuan"]
        return money(amount, lang)

    def percent(m: re.Match[str]) -> str:
        head = w["permille"] if m.group(3) == "‰" else w["pct"]
        return (w["minus"] if m.group(1) else "") + head + decimal(m.group(2), lang)

    def number(m: re.Match[str]) -> str:
        value = m.group(2)
        if m.group("m") is not None and value == "2":
            words = w["two"]
        else:
            words = decimal(value, lang)
        return (w["minus"] if m.group(1) else "") + words

    text = _DATE.sub(date, text)
    text = _YEAR.sub(lambda m: digits(m.group(1), lang), text)
    text = _TAIL.sub(lambda m: m.group(1) + m.group(2) + digits(m.group(3), lang), text)
    text = _MASKED.sub(masked, text)
    text = _MOBILE.sub(lambda m: digits("".join(m.groups()), lang, phone=True), text)
    text = _SERVICE.sub(lambda m: digits(m.group(1), lang, phone=True), text)
    text = _RANGE.sub(w["to"], text)
    text = _TIME.sub(time, text)
    text = _MONEY.sub(money_, text)
    text = _PERCENT.sub(percent, text)
    text = _LONG.sub(lambda m: digits(m.group(0), lang), text)
    text = _NUMBER.sub(number, text)
    text = _LEFTOVER.sub("", text)
    return re.sub(r"\s+", " ", text).strip()


def speech_text(text: str, *, lang: Language, lexicons: Iterable[Lexicon] = ()) -> str:
    """The text a voice reads: numbers in words in its reading, then its lexicons applied."""
    return apply_lexicons(normalize(text, lang), lexicons)
