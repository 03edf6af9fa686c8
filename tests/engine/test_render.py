"""Rendering: every profile x channel x temperament, the sandbox, limits, determinism."""

from __future__ import annotations

import json
import shutil
from dataclasses import fields
from datetime import date
from pathlib import Path

import pytest

from scripts_engine.compliance import Finding
from scripts_engine.config import ROOT
from scripts_engine.context import CHANNELS
from scripts_engine.errors import ScriptComplianceError, ScriptRenderError, TemplateLimitExceeded
from scripts_engine.lint import SAMPLE_CUSTOMERS, SAMPLE_DATE, SAMPLE_SCORES
from scripts_engine.render import Renderer
from scripts_engine.sandbox import safe_range, start_budget
from scripts_engine.script import Script, Segment
from scripts_engine.templates import compile_template

PERSONAS = ROOT / "personas"
LEAKS = (
    "<class",
    "<module",
    "<built-in",
    "<Template",
    "posix",
    "object at 0x",
    "os.popen",
    "/usr/",
)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(PERSONAS, reload_interval=1e9)


@pytest.mark.parametrize("temperament", ["analytical", "amiable", "driver"])
@pytest.mark.parametrize("channel", CHANNELS)
def test_every_profile_renders(renderer: Renderer, channel: str, temperament: str) -> None:
    for customer, scores in zip(SAMPLE_CUSTOMERS, SAMPLE_SCORES, strict=True):
        for profile in renderer.profiles:
            script = renderer.render_script(
                customer, profile, scores, channel=channel, moment="auto",
                style=f"{temperament}.", as_of=SAMPLE_DATE,
            )  # fmt: skip
            assert script.segments and script.text
            assert script.style.startswith(temperament)
            assert "{{" not in script.text and "None" not in script.text


def test_call_structure(renderer: Renderer) -> None:
    s = renderer.render_script(SAMPLE_CUSTOMERS[0], "P-ABDEH", SAMPLE_SCORES[0], as_of=SAMPLE_DATE)
    stages = [seg.stage for seg in s.segments]
    assert stages[0] == "opening" and stages.count("value") == 5
    # hits by score (propensity 0.4 reaches its 0.3 threshold), then the substituted warm
    # (0.7 < 0.75) although it scores higher than propensity
    assert [seg.key for seg in s.segments if seg.stage == "value"] == [
        "silver",
        "affluent",
        "debt_free",
        "propensity",
        "warm",
    ]
    assert {seg.key for seg in s.segments if seg.stage == "objection"} >= {
        "busy",
        "not_interested",
        "already_have",
        "is_it_safe",
        "how_got_number",
        "call_later",
    }
    assert all(len(seg.version) == 16 for seg in s.segments)
    assert s.branch("is_it_safe").template == "tags/silver/call/objection/is_it_safe"
    assert s.segments[stages.index("close")].template == "profiles/P-ABDEH/call/close/appointment"
    assert "欧阳女士" in s.text and "13812345678" not in s.to_json()
    assert '<break time="300ms"/>' in s.speech


def test_same_inputs_same_bytes(renderer: Renderer) -> None:
    a = renderer.render_script(SAMPLE_CUSTOMERS[1], "P-CDFGH", SAMPLE_SCORES[1], as_of=SAMPLE_DATE)
    fresh = Renderer(PERSONAS, memoize=False)
    b = fresh.render_script(SAMPLE_CUSTOMERS[1], "P-CDFGH", SAMPLE_SCORES[1], as_of=SAMPLE_DATE)
    assert a.to_json() == b.to_json() and a.id == b.id
    # the JSON holds every field of the script and of each segment, and nothing else
    data = json.loads(a.to_json_bytes())
    assert set(data) == {f.name for f in fields(Script)} | {"text", "speech"}
    assert all(set(seg) == {f.name for f in fields(Segment)} for seg in data["segments"])
    assert [s["text"] for s in data["segments"]] == [s.text for s in a.segments]
    c = renderer.render_script(
        SAMPLE_CUSTOMERS[1], "P-CDFGH", SAMPLE_SCORES[1], moment="payday", as_of=SAMPLE_DATE
    )
    assert c.id != a.id


def test_generic_for_opt_out_and_control(renderer: Renderer) -> None:
    opted = {**SAMPLE_CUSTOMERS[0], "profiling_opt_out": True}
    base, meta = renderer.build_context(opted, "P-ABDEH", SAMPLE_SCORES[0], as_of=SAMPLE_DATE)
    assert "profile" not in base and meta["profile"] is None
    assert base["style"]["temperament"] == "neutral" and base["style"]["hook"] == ""
    s = renderer.render_script(opted, "P-ABDEH", SAMPLE_SCORES[0], as_of=SAMPLE_DATE)
    assert not s.persona and s.profile_id is None
    assert [seg.template for seg in s.segments if seg.stage == "value"] == ["generic/call/value"]
    control = renderer.render_script(
        SAMPLE_CUSTOMERS[0], "P-ABDEH", SAMPLE_SCORES[0], generic=True, as_of=SAMPLE_DATE
    )
    assert control.text == s.text


def test_wealth_only_when_suitable(renderer: Renderer) -> None:
    young = SAMPLE_CUSTOMERS[1]  # R3, not silver
    s = renderer.render_script(young, "P-ACDFH", SAMPLE_SCORES[1], as_of=SAMPLE_DATE)
    assert s.offer == "wealth" and "理财非存款" in s.text and "业绩比较基准不构成收益承诺" in s.text
    low = {**young, "risk_rating": "R1"}
    assert (
        renderer.render_script(low, "P-ACDFH", SAMPLE_SCORES[1], as_of=SAMPLE_DATE).offer
        == "deposit"
    )


@pytest.mark.parametrize(
    "name", ["保本保收益", "稳赚不赔", "零风险"], ids=["guarantee", "guarantee2", "risk"]
)
def test_customer_value_cannot_inject(renderer: Renderer, name: str) -> None:
    customer = {**SAMPLE_CUSTOMERS[0], "name": name, "gender": None}
    with pytest.raises(ScriptComplianceError) as info:
        renderer.render_script(customer, "P-ABDEH", SAMPLE_SCORES[0], as_of=SAMPLE_DATE)
    first = info.value.findings[0]
    assert isinstance(first, Finding) and first.code == "banned-phrase"
    assert (first.profile, first.channel, first.stage, first.template) == (
        "P-ABDEH",
        "call",
        "opening",
        "call/opening",
    )
    assert first.version and first.moment == "none" and first.style and first.customer == "S-1"
    assert "call/opening.j2@" in str(info.value) and "profile P-ABDEH" in str(info.value)


def test_customer_markup_is_neutralised(renderer: Renderer) -> None:
    customer = {**SAMPLE_CUSTOMERS[0], "name": '{{7*7}}<break time="30s"/>', "gender": "M"}
    s = renderer.render_script(customer, "P-ABDEH", SAMPLE_SCORES[0], as_of=SAMPLE_DATE)
    assert "49" not in s.text and '<break time="30s"/>' not in s.speech


def _render_source(renderer: Renderer, source: str, variables: dict | None = None) -> str:
    compiled, findings = compile_template(renderer.env, "t", source)
    if findings:
        raise ScriptRenderError(str(findings[0]))
    assert compiled is not None
    start_budget(renderer.limits)
    return renderer._render_now(
        compiled, {"range": safe_range, **(variables or {"customer": {"name": "x"}})}
    )


HOSTILE = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ self.__init__.__globals__.__builtins__ }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ namespace.__init__.__globals__.os }}",
    "{{ config }}",
    "{{ self }}",
    "{{ ''|attr('__class__') }}",
    "{{ ''|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "{{ 'a{0.__class__}b'.format(42) }}",
    "{{ 'a{x.__class__}b'.format_map({'x':1}) }}",
    '{{ "{0.__call__.__builtins__[__import__]}" | attr("format")(not_here) }}',
    '{% set ns = namespace(run="{0.__call__.__builtins__}".format) %}{{ ns }}',
    "{% debug %}",
    "{% include '/etc/passwd' %}",
    "{% import 'os' as os %}",
    "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
    "{{ customer.items }}",
    "{{ customer.name.upper }}",
    "{{ customer['__class__'] }}",
    "{{ [].append(1) }}",
]
BOMBS = [
    "{{ 'x' * 100000000 }}",
    "{{ ('x' * 1000) * 1000 }}",
    "{{ 9 ** 9 ** 9 }}",
    "{{ range(100000)|length }}",
    "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
    "{% for i in range(1000) %}xxxxxxxxxx{% endfor %}",
    "{% for i in range(3) %}{% for j in range(3) %}{% for k in range(3) %}x{% endfor %}{% endfor %}{% endfor %}",
    "{{ [1, 2, 3] * 100000 }}",
]


@pytest.mark.parametrize("source", HOSTILE)
def test_hostile_template_fails_closed(renderer: Renderer, source: str) -> None:
    with pytest.raises(ScriptRenderError) as info:
        _render_source(renderer, source)
    message = str(info.value)
    assert not any(leak in message for leak in LEAKS), message


@pytest.mark.parametrize("source", BOMBS)
def test_render_bombs_are_stopped(renderer: Renderer, source: str) -> None:
    with pytest.raises(ScriptRenderError) as info:
        _render_source(renderer, source)
    # stopped by a work limit, or (nested loops) refused by the dialect before running
    assert isinstance(info.value, TemplateLimitExceeded) or "nest" in str(info.value)


def test_computing_in_set_is_refused(renderer: Renderer) -> None:
    with pytest.raises(ScriptRenderError, match="set"):
        _render_source(renderer, "{% set a = 'xx' ~ 'xx' %}{% set a = a ~ a %}{{ a }}")


def test_limits_are_limit_errors(renderer: Renderer) -> None:
    with pytest.raises(TemplateLimitExceeded):
        _render_source(
            renderer, "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}"
        )
    with pytest.raises(TemplateLimitExceeded):
        _render_source(renderer, "{{ 'x' * 100000000 }}")


def test_missing_variable_is_an_error_never_blank(renderer: Renderer) -> None:
    with pytest.raises(ScriptRenderError, match="missing variable"):
        _render_source(renderer, "您好{{ customer.nmae }}")
    with pytest.raises(ScriptRenderError):
        _render_source(renderer, "您好{{ nobody }}")


@pytest.fixture()
def pack_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "personas"
    shutil.copytree(PERSONAS, dest, ignore=shutil.ignore_patterns("README.md"))
    return dest


def test_missing_variable_in_pack_names_template_and_line(pack_copy: Path) -> None:
    opening = pack_copy / "templates" / "call" / "signoff.j2"
    text = opening.read_text(encoding="utf-8")
    opening.write_text(text + "{{ customer.nmae }}\n", encoding="utf-8")
    r = Renderer(pack_copy)
    with pytest.raises(ScriptRenderError) as info:
        r.render_script(SAMPLE_CUSTOMERS[0], "P-ABDEH", SAMPLE_SCORES[0], as_of=SAMPLE_DATE)
    assert info.value.template == "call/signoff"
    assert info.value.line == len(text.splitlines()) + 1


def test_reloads_when_a_file_changes(pack_copy: Path) -> None:
    r = Renderer(pack_copy, reload_interval=0.0)
    before = r.render_script(
        SAMPLE_CUSTOMERS[0], "P-ABDEH", SAMPLE_SCORES[0], as_of=date(2026, 3, 10)
    )
    signoff = pack_copy / "templates" / "call" / "signoff.j2"
    signoff.write_text(signoff.read_text().replace("再见！", "再见，祝您愉快！"), encoding="utf-8")
    assert r.refresh(force=True)
    after = r.render_script(
        SAMPLE_CUSTOMERS[0], "P-ABDEH", SAMPLE_SCORES[0], as_of=date(2026, 3, 10)
    )
    assert "祝您愉快" in after.text and after.id != before.id


def test_distinctness_target(renderer: Renderer) -> None:
    d = renderer.distinctness(SAMPLE_CUSTOMERS[0], SAMPLE_SCORES[0], as_of=SAMPLE_DATE)
    assert d.profiles == 56 and d.min_distance >= 0.3


#: phrases with which a value block asserts its tag of the customer (hit wording only)
CLAIMS = {
    "affluent": ("您活期", "您账户里", "您手头", "您的活期", "您有一笔钱"),
    "silver": ("退休", "年纪相仿"),
    "educated": ("您做决定看重数据", "您习惯先算清楚"),
    "debt_free": ("没有贷款", "不用还贷", "没有还贷", "不背房贷"),
    "warm": ("老朋友", "这些年", "一直支持", "之前", "一直以来", "上回"),
    "mobile": ("常用手机", "您习惯用手机", "您用手机", "用惯了手机"),
    "timing": ("眼下正是", "这段时间我们"),
    "propensity": ("您对存款", "您一直关注", "您对储蓄", "您比较看重稳妥", "您平时注重储蓄",
                   "看得出您", "您一直留意"),
}  # fmt: skip


def _value_blocks(script: object) -> list[tuple[str, str]]:
    return [(s.key, s.text) for s in script.segments if s.stage == "value"]  # type: ignore[attr-defined]


def test_hits_lead_and_substituted_tags_claim_nothing(renderer: Renderer) -> None:
    # S-2 hits mobile and propensity only: those lead; the three others are substituted
    base, meta = renderer.build_context(SAMPLE_CUSTOMERS[1], "P-ACDFH", SAMPLE_SCORES[1])
    assert (
        meta["tags"][:2] == ["mobile", "propensity"] and meta["hits"] == [True, True] + [False] * 3
    )
    assert base["profile"]["substituted"] == meta["tags"][2:]
    for customer, scores in zip(SAMPLE_CUSTOMERS, SAMPLE_SCORES, strict=True):
        for profile in renderer.profiles:
            s = renderer.render_script(customer, profile, scores, as_of=SAMPLE_DATE)
            _, meta = renderer.build_context(customer, profile, scores)
            hit = dict(zip(meta["tags"], meta["hits"], strict=True))
            for tag, text in _value_blocks(s):
                if not hit[tag]:
                    assert not [c for c in CLAIMS[tag] if c in text], (profile.id, tag, text)


def test_without_scores_every_block_is_substituted(renderer: Renderer) -> None:
    hit_all = dict.fromkeys(renderer.grid.tag_names, 1.0)
    sure = renderer.render_script(SAMPLE_CUSTOMERS[0], "P-ABDEH", hit_all, as_of=SAMPLE_DATE)
    unsure = renderer.render_script(SAMPLE_CUSTOMERS[0], "P-ABDEH", None, as_of=SAMPLE_DATE)
    assert [k for k, _ in _value_blocks(unsure)] == ["affluent", "silver", "debt_free", "warm",
                                                     "propensity"]  # fmt: skip
    for tag, soft in _value_blocks(unsure):
        assert not [c for c in CLAIMS[tag] if c in soft], soft
    assert any(c in sure.text for c in CLAIMS["silver"])
    assert unsure.id != sure.id


def test_speech_reads_the_value_stage_as_one_paragraph(renderer: Renderer) -> None:
    s = renderer.render_script(SAMPLE_CUSTOMERS[0], "P-ABDEH", SAMPLE_SCORES[0], as_of=SAMPLE_DATE)
    values = [seg.text for seg in s.main if seg.stage == "value"]
    assert f'{values[0]}<break time="300ms"/>{values[1]}' in s.speech
    assert s.speech.count('<break time="700ms"/>') == len({seg.stage for seg in s.main}) - 1


def test_no_wealth_offer_to_a_retiree_whose_profile_left_silver_out(renderer: Renderer) -> None:
    retiree = {**SAMPLE_CUSTOMERS[0], "risk_rating": "R3"}
    scores = dict.fromkeys(renderer.grid.tag_names, 1.0)  # hits all eight, silver included
    assert renderer.render_script(retiree, "P-ACDFH", scores, as_of=SAMPLE_DATE).offer == "deposit"
    scores["silver"] = 0.0
    assert renderer.render_script(retiree, "P-ACDFH", scores, as_of=SAMPLE_DATE).offer == "wealth"


def test_block_memo_keys_on_what_a_template_reads(renderer: Renderer) -> None:
    from scripts_engine.assembly import _block_fields

    block = {"tag": "silver", "next": "warm", "hit": True, "rank": 1}
    for source, expected in (
        ("{{ block.next }}{% if block.hit %}!{% endif %}", (True, "warm")),  # hit, next
        ("{{ block['next'] }}", tuple(block.items())),  # not a plain field read: all of it
        ("没有变量", None),
    ):
        compiled, findings = compile_template(renderer.env, "t", source)
        assert compiled is not None and not findings
        assert _block_fields(compiled)(block) == expected
