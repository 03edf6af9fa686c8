"""Styles: 27 base characters, data-driven choice, explicit override, closes, moments."""

from __future__ import annotations

from datetime import date

import pytest

from scripts_engine.config import ROOT
from scripts_engine.errors import CatalogError, ScriptRenderError
from scripts_engine.styles import Styles, load_styles


@pytest.fixture(scope="module")
def styles() -> Styles:
    return load_styles(ROOT / "personas" / "styles.yaml")


def test_27_base_characters(styles: Styles) -> None:
    chars = styles.base_characters
    assert len(chars) == 27 and len(set(chars)) == 27
    for char in chars:
        info = styles.choose_style({}, char)
        assert info.id == char and info.hook and 1 <= info.detail <= 3


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"age": 66, "job": "retired", "education": "tertiary"}, "analytical.culture"),
        ({"age": 70, "job": "retired", "education": "primary"}, "amiable.health"),
        ({"age": 22, "job": "student", "education": "secondary"}, "amiable.digital"),
        ({"age": 28, "job": "services", "marital": "single"}, "amiable.travel"),
        ({"age": 40, "job": "management", "marital": "married"}, "driver.family"),
        ({"age": 52, "job": "entrepreneur", "marital": "divorced"}, "driver.finance_news"),
        ({"age": 45, "job": "blue-collar", "marital": "divorced"}, "amiable.food"),
        ({}, "amiable.home"),
    ],
)
def test_choice_is_data_driven(styles: Styles, record: dict, expected: str) -> None:
    assert styles.choose_style(record).id == expected


def test_override_parts(styles: Styles) -> None:
    record = {"age": 70, "job": "retired"}
    assert styles.choose_style(record, "driver").id == "driver.health"
    assert styles.choose_style(record, ".travel").id == "amiable.travel"
    with pytest.raises(ScriptRenderError, match="temperament"):
        styles.choose_style(record, "grumpy.travel")
    with pytest.raises(ScriptRenderError, match="interest"):
        styles.choose_style(record, "driver.golf")
    with pytest.raises(ScriptRenderError):
        styles.choose_style(record, "neutral.travel")


def test_neutral_for_generic(styles: Styles) -> None:
    info = styles.neutral_style()
    assert info.temperament == "neutral" and info.hook == ""


def test_temperament_changes_length(styles: Styles) -> None:
    from scripts_engine.lint import SAMPLE_CUSTOMERS, SAMPLE_DATE, SAMPLE_SCORES
    from scripts_engine.render import Renderer

    r = Renderer(ROOT / "personas", reload_interval=1e9)
    lengths = {
        t: len(
            r.render_script(
                SAMPLE_CUSTOMERS[0], "P-ABDEH", SAMPLE_SCORES[0], style=f"{t}.travel",
                moment="maturity", as_of=SAMPLE_DATE,
            ).text
        )
        for t in ("driver", "amiable", "analytical")
    }  # fmt: skip
    assert lengths["driver"] < lengths["amiable"] <= lengths["analytical"] + 40


def test_closes_and_calendar(styles: Styles) -> None:
    assert styles.choose_close(["silver", "educated"]) == "appointment"
    assert styles.choose_close(["educated", "mobile"]) == "sms"
    assert styles.choose_close(["debt_free", "mobile"]) == "wechat"
    assert styles.choose_close(["debt_free", "timing"]) == "transfer"
    assert styles.choose_close(None) == "transfer"
    holiday = styles.next_holiday(date(2026, 9, 20))
    assert holiday is not None and holiday.name == "中秋节"
    assert styles.event_name("silver") == "健康养老讲座" and styles.event_name(None) == "客户答谢会"


def test_broken_styles_name_file_and_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = (ROOT / "personas" / "styles.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "styles.yaml"
    bad.write_text(text.replace("    detail: 1 ", "    detail: 9 "), encoding="utf-8")
    with pytest.raises(CatalogError) as info:
        load_styles(bad)
    assert info.value.line is not None and "detail" in str(info.value)
