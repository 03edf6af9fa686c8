"""The workspace's words: one catalog per language (``api/web/i18n/<lang>.yaml``).

Chinese (``zh-CN``) is the default; ``?lang=en`` on any page switches to English and keeps
the choice in a cookie (``?lang=zh-CN`` switches back). Every visible string comes from a
catalog: templates call ``t("key")`` (with ``{name}`` placeholders filled from keyword
arguments); a key missing from the catalog shows as the key itself and fails the tests.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from fastapi import Request

LANGS = ("zh-CN", "en")
DEFAULT = "zh-CN"
COOKIE = "se_lang"
CATALOG_DIR = Path(__file__).resolve().parent / "i18n"


@lru_cache
def catalog(lang: str) -> dict[str, str]:
    """The flat ``key: text`` catalog of ``lang``."""
    with (CATALOG_DIR / f"{lang}.yaml").open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    return {str(k): str(v) for k, v in data.items()}


def pick(request: Request) -> tuple[str, bool]:
    """The request's language, and whether the choice came in the URL (to be remembered)."""
    asked = request.query_params.get("lang")
    if asked in LANGS:
        return asked, True
    saved = request.cookies.get(COOKIE)
    return (saved if saved in LANGS else DEFAULT), False


class Translator:
    """``t(key, **values)`` for one language."""

    def __init__(self, lang: str):
        self.lang = lang
        self.words = catalog(lang)

    def __call__(self, key: str, **values: Any) -> str:
        text = self.words.get(key)
        if text is None:
            return key
        return text.format(**values) if values else text

    @property
    def zh(self) -> bool:
        return self.lang == "zh-CN"
