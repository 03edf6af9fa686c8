"""Compliance: negation-aware banned phrases, content rules, lint with file:line, the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from scripts_engine.cli import main
from scripts_engine.compliance import ContentRules, SegmentText, load_rules
from scripts_engine.config import ROOT
from scripts_engine.lint import lint

PERSONAS = ROOT / "personas"
BROKEN = ROOT / "tests" / "data" / "broken"


@pytest.fixture(scope="module")
def rules() -> ContentRules:
    return load_rules(PERSONAS / "compliance.yaml")


PASSES = [
    "本产品不保本，请您知悉。",
    "我们不承诺保本。",
    "理财产品并非无风险。",
    "理财非存款、产品有风险、投资须谨慎。",
    "业绩比较基准不构成收益承诺。",
    "过往业绩不代表未来表现。",
    "我们会确保本金安全地存入您的账户。",
    "您的存款受存款保险保护。",
    "定期存款的利率在存入时确定。",
    "理财产品并不是没有风险。",
    "这不是稳赚的事情。",
    "我们不会向您赠送任何东西。",
]
FAILS = [
    "保本保收益，您放心。",
    "这款产品稳赚不赔。",
    "零风险，收益有保障。",
    "本产品不保本保收益。",
    "不保本，但保证收益。",
    "预期收益率是百分之四。",
    "理财就相当于存款。",
    "这是国家担保的。",
    "现在办理还能参加抽奖。",
    "名额有限，错过就没有了。",
    "这个产品绝对安全。",
    "不，这个保本。",
]


@pytest.mark.parametrize("text", PASSES)
def test_negated_or_benign_passes(rules: ContentRules, text: str) -> None:
    assert rules.banned_hits(text) == []


@pytest.mark.parametrize("text", FAILS)
def test_affirmative_fails(rules: ContentRules, text: str) -> None:
    assert rules.banned_hits(text)


def _call(*texts: str) -> list[SegmentText]:
    stages = ["opening", "value", "disclosure"]
    return [SegmentText(stages[min(i, 2)], t, f"t{i}") for i, t in enumerate(texts)]


GOOD_OPENING = (
    "您好，这里是安和银行股份有限公司。今天来电是想做个回访。我是智能助手，本次通话由人工智能合成语音播报。"
    "如果您不方便，直接告诉我就好。"
)


def test_opening_order(rules: ContentRules) -> None:
    assert rules.check(_call(GOOD_OPENING, "您好。"), "call") == []
    swapped = "本次通话由人工智能合成语音播报。这里是安和银行股份有限公司。今天来电是想回访。如果不方便，告诉我就好。"
    codes = [f.code for f in rules.check(_call(swapped), "call")]
    assert "opening-order" in codes


def test_disclosures(rules: ContentRules) -> None:
    found = rules.check(_call(GOOD_OPENING, "可以看看稳健型理财产品。"), "call")
    assert {f.code for f in found} == {"missing-disclosure"}
    ok = "理财非存款、产品有风险、投资须谨慎。业绩比较基准不构成收益承诺，过往业绩不代表未来表现。"
    assert rules.check(_call(GOOD_OPENING, "可以看看稳健型理财产品。", ok), "call") == []
    deposit = rules.check(_call(GOOD_OPENING, "可以存定期存款。"), "call")
    assert [(f.code, f.message) for f in deposit] == [
        (
            "missing-disclosure",
            "deposit (mentioned here) needs the disclosure '存款保险' in the script",
        )
    ]
    sms = [SegmentText("sms", "【安和银行】理财产品上新，回T退订")]
    assert "product-channel" in {f.code for f in rules.check(sms, "sms")}


def test_sms_rules(rules: ContentRules) -> None:
    ok = [SegmentText("sms", "【安和银行】王女士好，祝您生日快乐！详询400-000-0000。回T退订")]
    assert rules.check(ok, "sms") == []
    long = [SegmentText("sms", "【安和银行】" + "很长的内容" * 14 + "回T退订")]
    assert "sms-length" in {f.code for f in rules.check(long, "sms")}
    bare = [SegmentText("sms", "王女士好，祝您生日快乐！")]
    assert {f.code for f in rules.check(bare, "sms")} == {"sms-required"}


def test_leaks(rules: ContentRules) -> None:
    for text in ("您的手机13812345678", "卡号6225880123456789", "{{ customer.name }}", "None您好"):
        assert any(f.code == "leak" for f in rules.check([SegmentText("value", text)], "wechat"))


def test_shipped_pack_passes_lint() -> None:
    report = lint(PERSONAS)
    assert report.ok, [str(f) for f in report.findings]
    assert report.rendered > 3000


@pytest.mark.parametrize(
    ("name", "code", "line"),
    [
        ("syntax_error", "syntax", 3),
        ("unknown_filter", "syntax", 2),
        ("undeclared", "undeclared", 3),
        ("banned_phrase", "banned-phrase", 2),
        ("hostile_attr", "dialect", 2),
        ("macro", "dialect", 1),
        ("format_string", "dialect", 1),
    ],
)
def test_broken_fixture_fails_with_line(name: str, code: str, line: int) -> None:
    report = lint(BROKEN / f"{name}.j2", default_personas=PERSONAS)
    assert not report.ok
    assert any(f.code == code and f.line == line for f in report.findings), [
        str(f) for f in report.findings
    ]


@pytest.fixture()
def pack(tmp_path: Path) -> Path:
    dest = tmp_path / "personas"
    shutil.copytree(PERSONAS, dest)
    return dest


def test_non_compliant_pack_is_caught_on_render(pack: Path) -> None:
    opening = pack / "templates" / "call" / "opening.j2"
    text = opening.read_text(encoding="utf-8")
    # move the AI disclosure to the end: the order rule must catch it
    ai = "我是{{ agent.name }}，{{ agent.ai_label }}。\n"
    opening.write_text(text.replace(ai, "") + ai, encoding="utf-8")
    sms = pack / "templates" / "chat" / "sms.j2"
    sms.write_text(
        sms.read_text(encoding="utf-8").replace(
            "，详询", "，欢迎您随时拨打我行客服热线咨询详细信息，详询"
        ),
        encoding="utf-8",
    )
    report = lint(pack)
    codes = {f.code for f in report.findings}
    assert {"opening-order", "sms-length"} <= codes
    # a rendered script's finding says where: customer, profile, channel, moment, style,
    # stage, template and its version
    order = next(f for f in report.findings if f.code == "opening-order")
    assert (order.template, order.stage, order.channel) == ("call/opening", "opening", "call")
    assert order.version and order.profile and order.moment and order.style and order.customer
    assert order.scripts and order.scripts > 1
    text = str(order)
    assert text.startswith(f"call/opening.j2@{order.version}: [customer ")
    assert f"profile {order.profile}, channel call, moment {order.moment}" in text
    sms_len = next(f for f in report.findings if f.code == "sms-length")
    assert sms_len.template == "chat/sms" and sms_len.channel == "sms" and sms_len.version


def test_missing_template_is_reported(pack: Path) -> None:
    (pack / "templates" / "call" / "objection" / "busy.j2").unlink()
    report = lint(pack)
    assert any(
        f.code == "missing-template" and f.template == "call/objection/busy"
        for f in report.findings
    )


def test_cli_lint_exit_status() -> None:
    runner = CliRunner()
    good = runner.invoke(main, ["lint", str(PERSONAS), "--json"])
    assert good.exit_code == 0 and json.loads(good.output)["ok"]
    bad = runner.invoke(main, ["lint", str(BROKEN)])
    assert bad.exit_code == 1
    assert "undeclared.j2:3" in bad.output and "Traceback" not in bad.output
