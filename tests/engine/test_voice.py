"""Voice profiles, lexicon files and region routing (voices/), with file/key/line errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from scripts_engine.config import ROOT
from scripts_engine.errors import CatalogError, VoiceUnavailable
from scripts_engine.voice import VoiceCatalog, choose_voice, load_voices

VOICES = ROOT / "voices"


@pytest.fixture(scope="module")
def catalog() -> VoiceCatalog:
    return load_voices(VOICES)


def test_shipped_profiles(catalog: VoiceCatalog) -> None:
    required = {"cmn-female", "cmn-male", "yue-female", "cmn-sichuan", "cmn-northeast"}
    assert required <= set(catalog.profiles)
    assert catalog.get("yue-female").engine_voice == "sit/yue"
    assert catalog.get("cmn-female").espeak_id == "sit/cmn+f3"


def test_flavours_are_labelled_honestly(catalog: VoiceCatalog) -> None:
    for voice_id in ("cmn-sichuan", "cmn-northeast"):
        voice = catalog.get(voice_id)
        assert voice.kind == "flavour" and voice.engine_voice == "sit/cmn"
        assert voice.flavour and "Not" in voice.flavour
        assert voice.label.endswith("[flavour]")
    assert catalog.get("yue-female").kind == "native"


@pytest.mark.parametrize(
    ("province", "city", "voice"),
    [
        ("广东省", "广州市", "yue-female"),
        ("广东", "深圳", "yue-female"),
        ("香港特别行政区", None, "yue-female"),
        (None, "澳门", "yue-female"),
        ("Guangdong", None, "yue-female"),
        ("廣東省", None, "yue-female"),
        ("广东", "汕头", "cmn-female"),  # Teochew area: no engine voice, standard Mandarin
        ("四川省", "成都市", "cmn-sichuan"),
        ("重庆市", None, "cmn-sichuan"),
        ("黑龙江省", "哈尔滨市", "cmn-northeast"),
        ("吉林", None, "cmn-northeast"),
        ("辽宁省", "沈阳", "cmn-northeast"),
        (None, "长春", "cmn-northeast"),
        ("北京市", "北京市", "cmn-female"),
        ("", "", "cmn-female"),
        (None, None, "cmn-female"),
    ],
)
def test_choose_voice(
    catalog: VoiceCatalog, province: str | None, city: str | None, voice: str
) -> None:
    assert choose_voice(province, city, catalog=catalog).id == voice


def test_served_regions(catalog: VoiceCatalog) -> None:
    provinces, cities = catalog.served("yue-female")
    assert {"广东", "香港", "澳门"} <= set(provinces) and "广州" in cities


def test_unknown_voice(catalog: VoiceCatalog) -> None:
    with pytest.raises(VoiceUnavailable, match="known: cmn-female"):
        catalog.get("klingon")


def test_speech_text_per_voice(catalog: VoiceCatalog) -> None:
    text = "您好，这是您的账单12,345.60元，没有问题吧？请及时还款。"
    yue = catalog.speech_text(text, catalog.get("yue-female"))
    assert "係" in yue and "嘅" in yue and "冇" in yue and "一萬二千三百四十五元六毫" in yue
    cmn = catalog.speech_text(text, catalog.get("cmn-female"))
    assert "一万二千三百四十五元六角" in cmn and "huan2款" in cmn
    assert "没得" in catalog.speech_text(text, catalog.get("cmn-sichuan"))
    assert "啥" in catalog.speech_text("这是什么？", catalog.get("cmn-northeast"))


def test_version_is_stable(catalog: VoiceCatalog) -> None:
    assert catalog.version() == load_voices(VOICES).version()


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    target = tmp_path / "voices"
    shutil.copytree(VOICES, target)
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_bad_rate_names_file_key_line(broken: Path) -> None:
    path = broken / "cmn-male.yaml"
    _edit(path, "rate: 165", "rate: 9000")
    with pytest.raises(CatalogError) as info:
        load_voices(broken)
    assert info.value.path.endswith("cmn-male.yaml") and info.value.key == "rate"
    assert info.value.line == _line_of(path, "rate:")


def test_zh_voice_is_refused(broken: Path) -> None:
    _edit(broken / "cmn-male.yaml", "engine_voice: sit/cmn", "engine_voice: zh")
    with pytest.raises(CatalogError, match="'zh' means Cantonese"):
        load_voices(broken)


def test_flavour_without_note_is_refused(broken: Path) -> None:
    path = broken / "cmn-sichuan.yaml"
    text = path.read_text(encoding="utf-8")
    start = text.index("flavour: >-")
    end = text.index("language:")
    path.write_text(text[:start] + text[end:], encoding="utf-8")
    with pytest.raises(CatalogError, match="a flavour must say what it is"):
        load_voices(broken)


def test_unknown_lexicon(broken: Path) -> None:
    path = broken / "yue-male.yaml"
    _edit(path, "lexicons: [yue]", "lexicons: [yue-typo]")
    with pytest.raises(CatalogError, match="unknown lexicon 'yue-typo'") as info:
        load_voices(broken)
    assert info.value.key == "lexicons[0]" and info.value.line == _line_of(path, "lexicons:")


def test_region_with_unknown_voice(broken: Path) -> None:
    path = broken / "regions.yaml"
    _edit(path, "  cmn-sichuan:\n", "  cmn-sichuna:\n")
    with pytest.raises(CatalogError, match="unknown voice 'cmn-sichuna'") as info:
        load_voices(broken)
    assert info.value.line == _line_of(path, "cmn-sichuna:")


def test_region_routed_twice(broken: Path) -> None:
    path = broken / "regions.yaml"
    _edit(path, "cities: [汕头,", "cities: [成都, 汕头,")
    with pytest.raises(CatalogError, match="'成都' is already routed to 'cmn-sichuan'") as info:
        load_voices(broken)
    assert info.value.line == _line_of(path, "cities: [成都, 汕头")


def test_id_must_match_file_name(broken: Path) -> None:
    _edit(broken / "cmn-male.yaml", "id: cmn-male", "id: cmn-man")
    with pytest.raises(CatalogError, match="must equal the file name"):
        load_voices(broken)


def test_broken_yaml_line(broken: Path) -> None:
    (broken / "lexicons" / "yue.yaml").write_text("id: yue\nreplace: [unclosed\n", encoding="utf-8")
    with pytest.raises(CatalogError) as info:
        load_voices(broken)
    assert "not valid YAML" in str(info.value) and info.value.line is not None


def test_cli_voices_lists_profiles_and_regions() -> None:
    from click.testing import CliRunner

    from scripts_engine.cli import main

    result = CliRunner().invoke(main, ["voices"])
    assert result.exit_code == 0, result.output
    assert (
        "cmn-sichuan" in result.output and "flavour:" in result.output and "成都" in result.output
    )
    assert "default for every other region" in result.output
