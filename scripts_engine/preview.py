"""Preview: render draft versions, laid over the live set, for synthetic customers and chosen
profiles, channels, moments and styles, and speak them, before they go live: the segments the
drafts changed (``audio="changed"``: up to 4 prompts, 600 characters).

Unsaved text (``drafts``: file name -> text, what a writer is typing) is laid over the live set
the same way, through the same sandbox, without creating a version; its static lint findings
(syntax with line, undeclared variables, banned phrases) come back in ``lint``. Text that does
not compile renders nothing: the findings say where it breaks.

Writers see synthetic customers only (COMPLIANCE.md 1.3): the three lint samples or records
they type in. A combination that breaks a content rule is shown with the reason, not dropped:
that is what a writer needs to see. Segments that differ from what the live set renders (made
by a previewed version, or changed by a previewed ``styles.yaml``) are marked, with the live
text beside them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from scripts_engine.campaigns import Toolkit, audio_row
from scripts_engine.context import MOMENTS
from scripts_engine.errors import ScriptsEngineError
from scripts_engine.features import load_customers
from scripts_engine.lint import SAMPLE_CUSTOMERS
from scripts_engine.versions import (
    VersionStore,
    content_version,
    findings_json,
    get_version,
    live_versions,
    static_findings,
)

MAX_RENDERS = 40
#: what one preview speaks at most: a few changed sentences, not whole calls (a whole call is
#: minutes of audio: the campaign build makes those)
MAX_AUDIO = 4
MAX_AUDIO_CHARS = 600
SAMPLES = {str(c["customer_id"]): c for c in SAMPLE_CUSTOMERS}


@dataclass
class PreviewRequest:
    version_ids: list[int]
    samples: list[str]
    customers: list[dict[str, Any]]
    profiles: list[str]
    channels: list[str]
    moments: list[str]
    styles: list[str | None]
    as_of: date
    #: "changed": speak the call segments that differ from the live set
    audio: str = "none"
    voice: str = "auto"
    #: unsaved text by file name, rendered in place of the live version
    drafts: dict[str, str] = field(default_factory=dict)


@dataclass
class Preview:
    versions: list[dict[str, Any]]
    items: list[dict[str, Any]] = field(default_factory=list)
    audio_rows: list[dict[str, Any]] = field(default_factory=list)
    #: static lint findings of each unsaved draft (empty list: clean)
    lint: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class PreviewError(ScriptsEngineError, ValueError):
    """The request names something that does not exist or asks for too much."""

    def __init__(self, message: str, *, field: str):
        self.field = field
        super().__init__(message)


def _customers(
    toolkit: Toolkit, req: PreviewRequest
) -> list[tuple[str, dict[str, Any], dict[str, float], str | None]]:
    """``(id, record, tag scores, own profile)`` per customer, scored like the service does."""
    key = id(toolkit.engine)
    if _SAMPLES_SCORED.get(key) is None:  # the samples never change: score them once
        _SAMPLES_SCORED.clear()
        _SAMPLES_SCORED[key] = _scored(toolkit, list(SAMPLES.values()), "samples")
    out = [x for x in _SAMPLES_SCORED[key] if x[0] in req.samples]
    records = [{"customer_id": f"custom-{i + 1}", **c} for i, c in enumerate(req.customers)]
    return out + (_scored(toolkit, records, "body.customers") if records else [])


_SAMPLES_SCORED: dict[int, list[tuple[str, dict[str, Any], dict[str, float], str | None]]] = {}


def _scored(
    toolkit: Toolkit, records: list[dict[str, Any]], where: str
) -> list[tuple[str, dict[str, Any], dict[str, float], str | None]]:
    loaded = load_customers(records, toolkit.engine.grid)
    if loaded.errors:
        e = loaded.errors[0]
        raise PreviewError(e.error, field=f"{where}[{e.row - 1}].{e.field}")
    out: list[tuple[str, dict[str, Any], dict[str, float], str | None]] = []
    scored = toolkit.engine.score(loaded.batch) if len(loaded.batch) else None
    for i in range(len(loaded.batch)):
        record = loaded.batch.record(i)
        if record.get("profiling_opt_out") or scored is None:
            out.append((str(record["customer_id"]), record, {}, None))
            continue
        explain = scored.explain(i)
        out.append((str(record["customer_id"]), record, explain["tags"],
                    explain["profile"]["id"]))  # fmt: skip
    return out


def preview(toolkit: Toolkit, versions: VersionStore, req: PreviewRequest) -> Preview:
    """Render (and speak) every combination asked for; see the module docstring.

    Raises:
        NotFound: a version id does not exist.
        PreviewError: unknown profile, moment or voice; too many combinations.
    """
    with versions.db.read() as session:
        rows = [get_version(session, vid) for vid in dict.fromkeys(req.version_ids)]
        live = {n: r.source for n, r in live_versions(session).items()}
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        raise PreviewError("preview one version per file", field="body.versions")
    for name in req.drafts:
        if name not in live:
            raise PreviewError(f"no template '{name}'", field=f"body.drafts.{name}")
        if name in names:
            raise PreviewError(f"'{name}' is both a version and a draft; send one",
                               field=f"body.drafts.{name}")  # fmt: skip
    sources = {**live, **{r.name: r.source for r in rows}, **req.drafts}
    draft = {(r.name, r.version) for r in rows}
    draft |= {(n, content_version(text)) for n, text in req.drafts.items() if text != live[n]}
    lint = {n: findings_json(static_findings(n, text, personas_dir=versions.personas_dir))
            for n, text in req.drafts.items()}  # fmt: skip
    out = Preview(versions=[{"id": r.id, "version": r.version} for r in rows], lint=lint)
    try:
        renderer = versions.renderer(sources)
    except ScriptsEngineError as exc:
        if any(lint.values()):  # the drafts' findings say where it breaks
            return out
        raise PreviewError(f"the previewed versions do not load: {exc}",
                           field="body.versions") from None  # fmt: skip
    base = versions.renderer(live)
    for i, p in enumerate(req.profiles):
        if p != "generic" and p not in {x.id for x in toolkit.engine.profiles}:
            raise PreviewError(f"unknown profile '{p}'", field=f"body.profiles[{i}]")
    for i, m in enumerate(req.moments):
        if m not in (*MOMENTS, "auto"):
            raise PreviewError(f"unknown moment '{m}'; use one of {', '.join(MOMENTS)} or auto",
                               field=f"body.moments[{i}]")  # fmt: skip
    customers = _customers(toolkit, req)
    profiles: list[str | None] = list(req.profiles) or [None]
    combos = list(itertools.product(customers, profiles, req.channels,
                                    req.moments, req.styles))  # fmt: skip
    if len(combos) > MAX_RENDERS:
        raise PreviewError(f"{len(combos)} combinations; at most {MAX_RENDERS}", field="body")
    voice = None
    if req.audio == "changed":
        voice = toolkit.voices.get(req.voice) if req.voice != "auto" else None
    spoken = chars = 0
    for (cid, record, scores, own_pid), profile, channel, moment, style in combos:
        pid = own_pid if profile is None else (None if profile == "generic" else profile)
        item: dict[str, Any] = {"customer": cid, "profile_id": pid, "channel": channel,
                                "moment": moment, "style": style, "script": None}  # fmt: skip
        kwargs = {"channel": channel, "moment": moment, "style": style, "as_of": req.as_of}
        try:
            script = renderer.render_script(record, pid, scores, **kwargs)
        except ScriptsEngineError as exc:
            item["error"] = str(exc)
            out.items.append(item)
            continue
        item["script"] = script.to_dict()
        try:
            before = base.render_script(record, pid, scores, **kwargs)
            live_by_key = {(x.stage, x.key): x.text for x in before.segments}
        except ScriptsEngineError:
            live_by_key = {}
        changed = [i for i, x in enumerate(script.segments)
                   if (x.template, x.version) in draft or live_by_key.get((x.stage, x.key))
                   != x.text]  # fmt: skip
        item["changed"] = changed
        item["live_text"] = {i: live_by_key.get((script.segments[i].stage,
                                                 script.segments[i].key), "") for i in changed}  # fmt: skip
        texts = [script.segments[i].text for i in changed if script.segments[i] in script.main]
        if (req.audio == "changed" and texts and channel == "call" and toolkit.store is not None
                and spoken < MAX_AUDIO and chars + len("".join(texts)) <= MAX_AUDIO_CHARS):  # fmt: skip
            v = voice or toolkit.voices.choose(record.get("province"), record.get("city"))
            with toolkit.store_lock:
                stored = toolkit.store.synthesize_segments(texts, v)
            row = audio_row(stored.path, toolkit.store.root, "wav8k", stored.duration_s)
            out.audio_rows.append(row)
            item["audio"] = {"sha256": row["sha256"], "ext": row["ext"],
                             "duration_s": row["duration_s"], "voice": v.id}  # fmt: skip
            spoken += 1
            chars += len("".join(texts))
        out.items.append(item)
    return out
