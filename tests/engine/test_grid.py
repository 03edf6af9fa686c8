"""The grid file: the shipped one is valid; broken ones fail naming file, key and line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scripts_engine.config import ROOT
from scripts_engine.errors import CatalogError
from scripts_engine.grid import Grid, load_grid

SHIPPED = (ROOT / "personas" / "grid.yaml").read_text(encoding="utf-8")


def test_shipped_grid_has_eight_distinct_tags_of_all_three_kinds(grid: Grid) -> None:
    assert len(grid.tags) == 8
    kinds = {t.kind for t in grid.tags.values()}
    assert kinds == {"quantitative", "qualitative", "propensity"}
    # eight business concepts, not thresholds of one model: at most one tag is a model
    assert sum(t.kind == "propensity" for t in grid.tags.values()) == 1
    assert len({t.input_fields for t in grid.tags.values()}) >= 7
    for tag in grid.tags.values():
        assert tag.label_zh and tag.label_en and tag.description
    assert grid.fields["duration"].post_call
    assert "duration" not in grid.scoring_fields


def _broken(tmp_path: Path, old: str, new: str) -> Path:
    assert old in SHIPPED, old
    path = tmp_path / "grid.yaml"
    path.write_text(SHIPPED.replace(old, new, 1), encoding="utf-8")
    return path


def _line_of(text: str, needle: str) -> int:
    return text.splitlines().index(next(ln for ln in text.splitlines() if needle in ln)) + 1


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        pytest.param(
            "    field: balance\n",
            "    field: duration\n",
            "tags.affluent.field",
            "known only after the call",
            id="post-call-input",
        ),
        pytest.param(
            "    field: balance\n",
            "    field: salary\n",
            "tags.affluent.field",
            "unknown field 'salary'",
            id="unknown-field",
        ),
        pytest.param(
            "{field: job, in: [retired]}",
            "{field: job, in: [pensioner]}",
            "tags.silver.rules[0].any[1]",
            "'pensioner' is not a value of 'job'",
            id="unknown-category",
        ),
        pytest.param(
            "    code: B\n",
            "    code: A\n",
            "tags.silver.code",
            "already used",
            id="duplicate-code",
        ),
        pytest.param(
            "    threshold: 0.5\n",
            "    threshold: 1.5\n",
            "tags.affluent.threshold",
            "less than or equal to 1",
            id="threshold-range",
        ),
        pytest.param(
            "{field: age, ge: 60}",
            "{field: job, ge: 60}",
            "tags.silver.rules[0].any[0]",
            "bounds need a numeric field",
            id="bound-on-category",
        ),
        pytest.param(
            "    kind: quantitative\n",
            "    kind: quantitive\n",
            "tags.affluent.kind",
            "Input should be",
            id="unknown-kind",
        ),
    ],
)
def test_broken_grid_names_file_key_and_line(
    tmp_path: Path, old: str, new: str, key: str, message: str
) -> None:
    path = _broken(tmp_path, old, new)
    with pytest.raises(CatalogError) as info:
        load_grid(path)
    err = info.value
    assert err.path == str(path)
    assert err.key == key
    assert message in str(err)
    assert err.line is not None
    line_text = path.read_text(encoding="utf-8").splitlines()[err.line - 1]
    assert (
        new.strip().split(":")[0].strip("{ ") in line_text
        or key.split(".")[-1].split("[")[0] in line_text
    )


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    path = _broken(tmp_path, "  silver:\n    code: B\n", "  silver:\n    code: [B\n")
    with pytest.raises(CatalogError) as info:
        load_grid(path)
    assert info.value.line is not None
    assert "not valid YAML" in str(info.value)
    assert str(path) in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="file not found"):
        load_grid(tmp_path / "nope.yaml")


def test_digest_is_stable_and_changes_with_content(grid: Grid, tmp_path: Path) -> None:
    assert load_grid(ROOT / "personas" / "grid.yaml").digest == grid.digest
    other = load_grid(_broken(tmp_path, "    threshold: 0.5\n", "    threshold: 0.6\n"))
    assert other.digest != grid.digest


def test_tags_are_described_in_chinese_and_english(grid: Grid) -> None:
    for tag in grid.tags.values():
        assert tag.description_zh and tag.describe("zh-CN") == tag.description_zh
        assert tag.describe("en") == tag.description != tag.description_zh
        assert tag.label("zh-CN") == tag.label_zh and tag.label("en") == tag.label_en
        assert any("\u4e00" <= ch <= "\u9fff" for ch in tag.description_zh)


def test_a_grid_without_chinese_descriptions_still_loads(grid: Grid, tmp_path: Path) -> None:
    english_only = re.sub(r"    description_zh: >-\n      .*\n", "", SHIPPED)
    assert "description_zh" not in english_only
    path = tmp_path / "grid.yaml"
    path.write_text(english_only, encoding="utf-8")
    old = load_grid(path)
    assert all(t.description_zh is None for t in old.tags.values())
    affluent = old.tags["affluent"]
    assert affluent.describe("zh-CN") == affluent.description == grid.tags["affluent"].description
