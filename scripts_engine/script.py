"""The rendered script: a structured, reproducible record of what will be said or sent.

A :class:`Script` names its inputs (customer, profile, channel, moment, style, offer, date)
and, for every segment, the stage, the template and the template's version (content hash);
``styles_version`` is the content hash of the ``styles.yaml`` its style lines came from.
Its id is a hash of the inputs and the pack version, so the same inputs give the same id and
the same bytes (:meth:`Script.to_json`), and a template edit gives a new id.

Two text views:

- :attr:`Script.text`: the spoken main path (or the messages), plain text, one segment a line;
- :attr:`Script.speech`: the same for the speech engine, with pause marks between sentences
  and segments (SSML ``<break/>``) and the text XML-escaped, so a customer value such as
  ``<break time="30s"/>`` is read as text and cannot change the audio.

Objection answers are branches: they are segments (stage ``objection``) but not in ``text``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cached_property, lru_cache
from typing import Any
from xml.sax.saxutils import escape

import orjson

#: Pause between sentences and between segments, in the speech text.
SENTENCE_PAUSE = '<break time="300ms"/>'
SEGMENT_PAUSE = '<break time="700ms"/>'
#: Stages that are answers to the customer, not part of the main path.
BRANCH_STAGES = frozenset({"objection"})
_SENTENCE_END = re.compile(r"(?<=[。！？；])")


@dataclass(frozen=True)
class Segment:
    """One rendered piece: a call stage (or one of its blocks), a WeChat message, an SMS."""

    stage: str
    key: str
    text: str
    template: str
    version: str


@dataclass(frozen=True)
class Script:
    """A call or chat script for one customer."""

    id: str
    customer_id: str | None
    profile_id: str | None
    persona: bool
    channel: str
    moment: str
    style: str
    offer: str
    close: str
    as_of: str
    pack_version: str
    segments: tuple[Segment, ...]
    #: content hash of the ``styles.yaml`` text the style lines came from (None: unknown)
    styles_version: str | None = None

    @cached_property
    def main(self) -> tuple[Segment, ...]:
        """Segments on the main path, in order (objection branches left out)."""
        return tuple(s for s in self.segments if s.stage not in BRANCH_STAGES)

    @property
    def text(self) -> str:
        """Plain text of the main path, one segment a line."""
        return "\n".join(s.text for s in self.main)

    @property
    def speech(self) -> str:
        """The main path for the speech engine: escaped text with pause marks.

        Segments of one stage (the five value blocks) flow as one paragraph: a sentence
        pause between them, a segment pause between stages.
        """
        out: list[str] = []
        stage = None
        for seg in self.main:
            if out:
                out.append(SENTENCE_PAUSE if seg.stage == stage else SEGMENT_PAUSE)
            out.append(speech_text(seg.text))
            stage = seg.stage
        return "".join(out)

    def stage_text(self, stage: str) -> str:
        """All text of one stage (e.g. the five value blocks), joined without separators."""
        return "".join(s.text for s in self.segments if s.stage == stage)

    def branch(self, key: str) -> Segment | None:
        """The answer to one objection, e.g. ``busy``."""
        return next((s for s in self.segments if s.stage == "objection" and s.key == key), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, with both text views."""
        # field by field, not dataclasses.asdict (which deep-copies every value: a third of a
        # render request's time); the values are text, flags and None. A segment's fields
        # are its instance dict (a frozen dataclass with no other attributes), copied
        data = {k: getattr(self, k) for k in _SCRIPT_FIELDS}
        data["segments"] = [dict(vars(s)) for s in self.segments]
        data["text"] = self.text
        data["speech"] = self.speech
        return data

    def to_json_bytes(self) -> bytes:
        """Canonical JSON as UTF-8: the same script always gives the same bytes (keys sorted,
        no spaces, text unescaped)."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)

    def to_json(self) -> str:
        """:meth:`to_json_bytes` as text."""
        return self.to_json_bytes().decode()


_SCRIPT_FIELDS = tuple(f.name for f in fields(Script) if f.name != "segments")


@lru_cache(maxsize=8192)
def speech_text(text: str) -> str:
    """One segment for speech: XML-escaped, a short pause after each sentence (remembered:
    most segments are shared by many customers' scripts)."""
    parts = [p for p in _SENTENCE_END.split(text.strip()) if p]
    return SENTENCE_PAUSE.join(escape(p) for p in parts)


def script_id(inputs: Mapping[str, str | None]) -> str:
    """Stable id of a script: a hash of its inputs.

    ``inputs`` maps names to text (or ``None``). The canonical form joins the sorted items
    with ASCII separators (record, unit) that no input can contain: customer values are
    cleaned of control characters, the rest are ids. Independent of the order the caller
    built the mapping in, and much cheaper than canonical JSON.
    """
    blob = "\x1e".join(
        [f"{k}\x1f\x1f1" if v is None else f"{k}\x1f{v}\x1f0" for k, v in sorted(inputs.items())]
    )
    return "S-" + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


#: the inputs of a rendered script's id (:func:`rendered_script_id`), in canonical order
RENDER_INPUTS = (
    "as_of", "channel", "close", "customer", "customer_id", "hits", "moment", "offer", "pack",
    "profile", "style", "styles", "tags",
)  # fmt: skip
_RENDER_BLOB = "\x1e".join(f"{k}\x1f{{}}\x1f0" for k in RENDER_INPUTS)
_NO_PROFILE = _RENDER_BLOB.replace("profile\x1f{}\x1f0", "profile\x1f\x1f1")


def rendered_script_id(
    *,
    as_of: str,
    channel: str,
    close: str,
    customer: str,
    customer_id: str,
    hits: str,
    moment: str,
    offer: str,
    pack: str,
    profile: str | None,
    style: str,
    styles: str,
    tags: str,
) -> str:
    """:func:`script_id` of the renderer's inputs (:data:`RENDER_INPUTS`), without sorting
    them each time: only ``profile`` may be ``None`` (a generic script)."""
    if profile is None:
        blob = _NO_PROFILE.format(
            as_of, channel, close, customer, customer_id, hits, moment, offer, pack, style, styles,
            tags,
        )  # fmt: skip
    else:
        blob = _RENDER_BLOB.format(
            as_of, channel, close, customer, customer_id, hits, moment, offer, pack, profile,
            style, styles, tags,
        )  # fmt: skip
    return "S-" + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]
