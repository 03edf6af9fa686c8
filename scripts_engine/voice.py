"""Voice profiles and the regions they serve (``voices/``).

A :class:`VoiceProfile` names the espeak-ng voice and variant, rate, pitch, volume, the reading
its numbers use (``cmn`` or ``yue``) and its lexicons. ``kind: flavour`` marks a profile the
engine cannot truly produce (Sichuan or Northeast Mandarin): it is the Mandarin voice with
regional words and prosody, and its ``flavour`` text says so wherever the profile is listed.

``voices/regions.yaml`` maps provinces and cities to voices (a city beats its province; the
default is standard Mandarin). :func:`load_voices` validates every file and cross-reference
and raises :class:`CatalogError` naming the file, key and line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from scripts_engine._yaml import KeyPath, line_of, load_yaml, validate
from scripts_engine.dialect import Language, Lexicon, speech_text
from scripts_engine.errors import CatalogError, VoiceUnavailable

#: espeak-ng voices that read Hanzi, and the reading each one needs. ``zh`` is missing on
#: purpose (it resolves to Cantonese); ``sit/hak`` reads Hanzi as English letters.
ENGINE_VOICES: dict[str, Language] = {
    "sit/cmn": "cmn",
    "sit/cmn-latn-pinyin": "cmn",
    "sit/yue": "yue",
    "sit/yue-latn-jyutping": "yue",
}

_PROVINCE_SUFFIXES = (
    "特别行政区",
    "维吾尔自治区",
    "壮族自治区",
    "回族自治区",
    "自治区",
    "省",
    "市",
)
_CITY_SUFFIXES = ("自治州", "地区", "市", "盟")


class VoiceProfile(BaseModel):
    """One voice a customer can hear (``voices/<id>.yaml``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="Equals the file stem.")
    name: str = Field(min_length=1, description="Display name, Chinese first.")
    kind: Literal["native", "flavour"] = Field(
        description="native: the engine speaks this variety; flavour: words and prosody only."
    )
    flavour: str | None = Field(
        default=None, description="For a flavour: what it is and is not, shown with the voice."
    )
    language: Language = Field(description="Reading of numbers and lexicons: cmn or yue.")
    gender: Literal["female", "male"]
    engine_voice: str = Field(description="espeak-ng voice id, e.g. sit/cmn.")
    variant: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_-]+$", description="espeak-ng variant, e.g. f3."
    )
    rate: int = Field(ge=80, le=400, description="Words per minute (espeak-ng default 175).")
    pitch: int = Field(ge=0, le=99, description="espeak-ng pitch, 0-99 (default 50).")
    volume: float = Field(gt=0, le=1.0, description="0-1; above 1 risks clipping.")
    lexicons: tuple[str, ...] = Field(default=(), description="Lexicon ids, applied in order.")

    @model_validator(mode="after")
    def _check(self) -> VoiceProfile:
        if self.engine_voice not in ENGINE_VOICES:
            known = ", ".join(ENGINE_VOICES)
            raise ValueError(
                f"engine_voice '{self.engine_voice}' cannot read Chinese script here; use one of "
                f"{known} ('zh' means Cantonese in espeak-ng, sit/hak needs romanised text)"
            )
        if ENGINE_VOICES[self.engine_voice] != self.language:
            raise ValueError(
                f"language '{self.language}' does not match engine_voice '{self.engine_voice}'"
            )
        if self.kind == "flavour" and not (self.flavour and self.flavour.strip()):
            raise ValueError("a flavour must say what it is in 'flavour'")
        if self.kind == "native" and self.flavour:
            raise ValueError("'flavour' is only for kind: flavour")
        return self

    @property
    def espeak_id(self) -> str:
        """The id given to the engine: ``sit/cmn+f3``."""
        return f"{self.engine_voice}+{self.variant}" if self.variant else self.engine_voice

    @property
    def label(self) -> str:
        """Name plus an honest note for flavours (for lists, metadata and the CLI)."""
        return f"{self.name} [flavour]" if self.kind == "flavour" else self.name

    def settings_json(self) -> str:
        """The settings that change the sound, as canonical JSON (part of every cache key)."""
        keys = ("engine_voice", "variant", "rate", "pitch", "volume", "language")
        return json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True)


class _Served(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provinces: list[str] = Field(default_factory=list)
    cities: list[str] = Field(default_factory=list)


class _RegionsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    default: str
    voices: dict[str, _Served] = Field(default_factory=dict)
    aliases: dict[str, str] = Field(default_factory=dict)


def _clean(name: str | None, suffixes: tuple[str, ...], aliases: dict[str, str]) -> str:
    if not name:
        return ""
    name = "".join(name.split())
    for candidate in (name, name.casefold()):
        if candidate in aliases:
            return aliases[candidate]
    for suffix in suffixes:
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return aliases.get(name, aliases.get(name.casefold(), name))


@dataclass(frozen=True)
class VoiceCatalog:
    """Every voice profile, lexicon and region rule, validated together."""

    profiles: dict[str, VoiceProfile]
    lexicons: dict[str, Lexicon]
    default: str
    provinces: dict[str, str]
    cities: dict[str, str]
    aliases: dict[str, str]

    def get(self, voice_id: str) -> VoiceProfile:
        """The profile with this id.

        Raises:
            VoiceUnavailable: no such profile (the message lists the known ids).
        """
        try:
            return self.profiles[voice_id]
        except KeyError:
            known = ", ".join(sorted(self.profiles))
            raise VoiceUnavailable(f"no voice profile '{voice_id}'; known: {known}") from None

    def choose(self, province: str | None, city: str | None = None) -> VoiceProfile:
        """The voice for a customer's province and city (city first, then province, default)."""
        city_key = _clean(city, _CITY_SUFFIXES, self.aliases)
        if city_key in self.cities:
            return self.profiles[self.cities[city_key]]
        province_key = _clean(province, _PROVINCE_SUFFIXES, self.aliases)
        if province_key in self.provinces:
            return self.profiles[self.provinces[province_key]]
        return self.profiles[self.default]

    def served(self, voice_id: str) -> tuple[list[str], list[str]]:
        """Provinces and cities routed to this voice (the default voice also gets the rest)."""
        return (
            [p for p, v in self.provinces.items() if v == voice_id],
            [c for c, v in self.cities.items() if v == voice_id],
        )

    def lexicons_for(self, voice: VoiceProfile) -> tuple[Lexicon, ...]:
        """The voice's lexicons in the order they apply."""
        return tuple(self.lexicons[name] for name in voice.lexicons)

    def speech_text(self, text: str, voice: VoiceProfile) -> str:
        """``text`` as this voice reads it (numbers in words, lexicons applied)."""
        return speech_text(text, lang=voice.language, lexicons=self.lexicons_for(voice))

    def version(self) -> str:
        """A short content hash of every profile and lexicon (for records and caches)."""
        blob = json.dumps(
            {
                "profiles": {
                    k: v.model_dump(mode="json") for k, v in sorted(self.profiles.items())
                },
                "lexicons": {
                    k: v.model_dump(mode="json") for k, v in sorted(self.lexicons.items())
                },
            },
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _load_model(path: Path, model: type[VoiceProfile] | type[Lexicon]) -> VoiceProfile | Lexicon:
    data, lines = load_yaml(path)
    if not isinstance(data, dict):
        raise CatalogError("expected a mapping of keys", path=str(path), line=1)
    item = validate(model, data, path=path, lines=lines)
    if item.id != path.stem:
        raise CatalogError(
            f"id '{item.id}' must equal the file name '{path.stem}'",
            path=str(path),
            key="id",
            line=line_of(lines, ("id",)),
        )
    return item


def load_voices(voices_dir: Path) -> VoiceCatalog:
    """Load and cross-check ``voices/*.yaml``, ``voices/lexicons/*.yaml`` and ``regions.yaml``.

    Raises:
        CatalogError: a file is missing or broken, or refers to an unknown voice or lexicon;
            the message names file, key and line.
    """
    if not voices_dir.is_dir():
        raise CatalogError("voices folder not found", path=str(voices_dir))
    lexicons: dict[str, Lexicon] = {}
    for path in sorted((voices_dir / "lexicons").glob("*.yaml")):
        lexicon = _load_model(path, Lexicon)
        assert isinstance(lexicon, Lexicon)
        lexicons[lexicon.id] = lexicon
    profiles: dict[str, VoiceProfile] = {}
    for path in sorted(voices_dir.glob("*.yaml")):
        if path.name == "regions.yaml":
            continue
        profile = _load_model(path, VoiceProfile)
        assert isinstance(profile, VoiceProfile)
        _, lines = load_yaml(path)
        for i, name in enumerate(profile.lexicons):
            if name not in lexicons:
                raise CatalogError(
                    f"unknown lexicon '{name}' (known: {', '.join(sorted(lexicons)) or 'none'})",
                    path=str(path),
                    key=f"lexicons[{i}]",
                    line=line_of(lines, ("lexicons", i)),
                )
            if lexicons[name].language != profile.language:
                raise CatalogError(
                    f"lexicon '{name}' is for {lexicons[name].language}, the voice reads "
                    f"{profile.language}",
                    path=str(path),
                    key=f"lexicons[{i}]",
                    line=line_of(lines, ("lexicons", i)),
                )
        profiles[profile.id] = profile
    if not profiles:
        raise CatalogError("no voice profiles (*.yaml)", path=str(voices_dir))
    return _load_regions(voices_dir / "regions.yaml", profiles, lexicons)


def _load_regions(
    path: Path, profiles: dict[str, VoiceProfile], lexicons: dict[str, Lexicon]
) -> VoiceCatalog:
    data, lines = load_yaml(path)
    regions = validate(_RegionsFile, data, path=path, lines=lines)

    def fail(message: str, key: KeyPath) -> CatalogError:
        return CatalogError(
            message, path=str(path), key=".".join(map(str, key)), line=line_of(lines, key)
        )

    known = ", ".join(sorted(profiles))
    if regions.default not in profiles:
        raise fail(f"unknown voice '{regions.default}' (known: {known})", ("default",))
    aliases = {k.casefold() if k.isascii() else k: v for k, v in regions.aliases.items()}
    provinces: dict[str, str] = {}
    cities: dict[str, str] = {}
    for voice_id, served in regions.voices.items():
        if voice_id not in profiles:
            raise fail(f"unknown voice '{voice_id}' (known: {known})", ("voices", voice_id))
        for kind, names, table, suffixes in (
            ("provinces", served.provinces, provinces, _PROVINCE_SUFFIXES),
            ("cities", served.cities, cities, _CITY_SUFFIXES),
        ):
            for i, raw in enumerate(names):
                name = _clean(raw, suffixes, aliases)
                if name in table and table[name] != voice_id:
                    raise fail(
                        f"'{raw}' is already routed to '{table[name]}'",
                        ("voices", voice_id, kind, i),
                    )
                table[name] = voice_id
    return VoiceCatalog(profiles, lexicons, regions.default, provinces, cities, aliases)


@lru_cache(maxsize=8)
def _cached_catalog(voices_dir: Path) -> VoiceCatalog:
    return load_voices(voices_dir)


def get_catalog(voices_dir: Path | None = None) -> VoiceCatalog:
    """The voice catalog of a folder (default: the settings' ``voices_dir``), loaded once."""
    if voices_dir is None:
        from scripts_engine.config import get_settings

        voices_dir = get_settings().voices_dir
    return _cached_catalog(Path(voices_dir).resolve())


def choose_voice(
    province: str | None, city: str | None = None, *, catalog: VoiceCatalog | None = None
) -> VoiceProfile:
    """The voice a customer in ``province``/``city`` hears (standard Mandarin when unknown)."""
    return (catalog or get_catalog()).choose(province, city)
