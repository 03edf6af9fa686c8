"""Dialect text: number normalisation in Mandarin and Cantonese readings, lexicon matching."""

from __future__ import annotations

import re

import pytest

from scripts_engine.dialect import (
    Lexicon,
    apply_lexicons,
    cardinal,
    digits,
    money,
    normalize,
    speech_text,
)


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "零"),
        (10, "十"),
        (15, "十五"),
        (20, "二十"),
        (101, "一百零一"),
        (110, "一百一十"),
        (200, "两百"),
        (1005, "一千零五"),
        (2000, "两千"),
        (10050, "一万零五十"),
        (12000, "一万二千"),
        (100500, "十万零五百"),
        (12345, "一万二千三百四十五"),
        (100000000, "一亿"),
        (100005000, "一亿零五千"),
        (20000000, "两千万"),
    ],
)
def test_cardinal_mandarin(n: int, words: str) -> None:
    assert cardinal(n) == words


def test_cardinal_cantonese_uses_traditional_units() -> None:
    assert cardinal(12345, "yue") == "一萬二千三百四十五"
    assert cardinal(2000, "yue") == "兩千"


def test_cardinal_refuses_out_of_range() -> None:
    with pytest.raises(ValueError):
        cardinal(-1)


def test_digits_and_money() -> None:
    assert digits("13812345678", phone=True) == "幺三八幺二三四五六七八"
    assert digits("13812345678", "yue", phone=True) == "一三八一二三四五六七八"
    assert money("12,345.60") == "一万二千三百四十五元六角"
    assert money("12345.06") == "一万二千三百四十五元零六分"
    assert money("0.65") == "六角五分"
    assert money("100.00") == "一百元"
    assert money("12,345.60", "yue") == "一萬二千三百四十五元六毫"


@pytest.mark.parametrize(
    ("text", "cmn", "yue"),
    [
        ("12,345.60元", "一万二千三百四十五元六角", "一萬二千三百四十五元六毫"),
        ("¥1,000,000", "一百万元", "一百萬元"),
        ("1.5万元", "一点五万元", "一點五萬元"),
        ("3.5%", "百分之三点五", "百分之三點五"),
        ("-0.5%", "负百分之零点五", "負百分之零點五"),
        ("2026-11-23", "二零二六年十一月二十三日", "二零二六年十一月二十三日"),
        ("2026年11月23日", "二零二六年十一月二十三日", "二零二六年十一月二十三日"),
        ("14:05", "十四点零五分", "十四點零五分"),
        ("9:00-18:00", "九点整到十八点整", "九點正到十八點正"),
        ("2:00", "两点整", "兩點正"),
        ("13812345678", "幺三八幺二三四五六七八", "一三八一二三四五六七八"),
        ("138-1234-5678", "幺三八幺二三四五六七八", "一三八一二三四五六七八"),
        ("尾号1234", "尾号一二三四", "尾号一二三四"),
        ("6222 **** **** 1234", "尾号一二三四", "尾號一二三四"),
        ("138****1234", "尾号幺二三四", "尾號一二三四"),
        ("95511", "九五五幺幺", "九五五一一"),
        ("400-820-1234", "四零零八二零幺二三四", "四零零八二零一二三四"),
        ("3-5个工作日", "三到五个工作日", "三到五个工作日"),
        ("2个", "两个", "兩个"),
        ("第2期", "第二期", "第二期"),
        ("12345元", "一万二千三百四十五元", "一萬二千三百四十五元"),
        (
            "账号6222021234567890",
            "账号六二二二零二一二三四五六七八九零",
            "账号六二二二零二一二三四五六七八九零",
        ),
    ],
)
def test_normalize(text: str, cmn: str, yue: str) -> None:
    assert normalize(text, "cmn") == cmn
    assert normalize(text, "yue") == yue


def test_normalize_leaves_no_digits_in_a_bank_sentence() -> None:
    text = "您尾号1234的信用卡本期账单12,345.60元，年化利率3.85%，请于2026-11-23 18:00前还款，热线95511。"
    out = normalize(text)
    assert not re.search(r"[0-9*]", out), out
    assert "一万二千三百四十五元六角" in out and "百分之三点八五" in out


YUE = Lexicon(
    id="t",
    description="test",
    language="yue",
    replace={"是": "係", "的": "嘅", "不": "唔", "没有": "冇", "不是": "唔係"},
    keep=("目的", "的确", "不过"),
)


def test_longest_match_and_protected_words() -> None:
    assert YUE.apply("这是我的") == "这係我嘅"
    assert YUE.apply("不是没有") == "唔係冇"  # the two-character entries win over 不/没
    assert YUE.apply("目的的确不过如此") == "目的的确不过如此"  # kept compounds stay whole
    assert YUE.apply("") == ""


def test_lexicons_apply_in_order() -> None:
    first = Lexicon(id="a", description="a", language="cmn", replace={"什么": "啥子"})
    second = Lexicon(id="b", description="b", language="cmn", replace={"啥子": "啥"})
    assert apply_lexicons("是什么", [first, second]) == "是啥"


def test_lexicon_validation() -> None:
    with pytest.raises(ValueError, match="both kept and replaced"):
        Lexicon(id="x", description="x", language="cmn", replace={"的": "嘅"}, keep=("的",))
    with pytest.raises(ValueError, match="empty replacement"):
        Lexicon(id="x", description="x", language="cmn", replace={"的": " "})


def test_speech_text_normalises_before_lexicon() -> None:
    fix = Lexicon(id="f", description="f", language="cmn", replace={"还款": "huan2款"})
    # the tone digit the lexicon adds must not be read as a number afterwards
    assert speech_text("请还款2笔", lang="cmn", lexicons=[fix]) == "请huan2款两笔"
