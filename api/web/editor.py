"""The template editor: one template's versions, the edit form (a new version, linted on
save, findings at their lines), the workflow's steps (submit, approve or reject, publish,
roll back), a side-by-side diff of two versions and the preview of a version rendered for
sample customers, with its voice.

Every step goes through :class:`scripts_engine.versions.VersionStore`, the same object the
API's routes use: the same lint, the same four-eyes check, the same audit log. The roles are
those of the API's routes (save and submit: writer, admin; approve, reject, roll back: qa,
admin; publish: anyone signed in; the store refuses the author's own approval whatever the
role). Errors come back next to the form that caused them.
"""

from __future__ import annotations

import difflib
from datetime import date
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import RedirectResponse, Response

from api.deps import ServicesDep
from api.routes.templates import MAX_ID
from api.web import i18n, pages
from api.web.auth import WebUser
from api.web.pages import check_csrf, require
from api.web.render import fragment, page
from api.web.templates_browser import highlight
from scripts_engine import versions as vs
from scripts_engine.context import MOMENTS
from scripts_engine.db import repository as repo
from scripts_engine.db.errors import Conflict, Forbidden, NotFound
from scripts_engine.db.models import TemplateVersion
from scripts_engine.db.session import write_transaction
from scripts_engine.errors import CatalogError, ScriptsEngineError
from scripts_engine.preview import SAMPLES, Preview, PreviewRequest, preview
from scripts_engine.reports import defect_report
from scripts_engine.styles import parse_styles

router = APIRouter(prefix="/web", include_in_schema=False)
Reader = Annotated[WebUser, require("admin", "writer", "qa")]
Author = Annotated[WebUser, require("admin", "writer")]
Approver = Annotated[WebUser, require("admin", "qa")]
#: ids are 32-bit integers in every database (as the API's routes check)
Id = Annotated[int, Path(ge=1, le=MAX_ID)]
QueryId = Annotated[int, Query(ge=1, le=MAX_ID)]
CHANNELS = ("call", "wechat", "sms")
AUDIO = ("changed", "script", "none")
#: the workflow's steps and the roles that may ask for each (the store checks four eyes)
STEPS = {"submit": ("admin", "writer"), "approve": ("admin", "qa"), "reject": ("admin", "qa"),
         "publish": ("admin", "writer", "qa"), "rollback": ("admin", "qa")}  # fmt: skip


def actor(user: WebUser) -> vs.Actor:
    """The signed-in user as the workflows know users (as :attr:`api.deps.Principal.actor`)."""
    return vs.Actor(name=user.name.strip() or f"key:{user.prefix}", role=user.role,
                    key_id=user.key_id)  # fmt: skip


def store(services: ServicesDep) -> vs.VersionStore:
    if services.versions is None:
        raise NotFound("template versions are not available")
    return services.versions


def allowed_steps(row: TemplateVersion, user: WebUser) -> list[str]:
    """The steps this user may offer on this version (the store decides in the end)."""
    me = actor(user).name
    own = me == row.author or user.key_id == row.author_key_id
    steps = []
    if row.status in ("draft", "rejected") and not row.lint_errors and user.can(*STEPS["submit"]):
        steps.append("submit")
    if row.status == "submitted" and user.can(*STEPS["approve"]) and not own:
        steps += ["approve", "reject"]
    if row.status == "approved" and user.can(*STEPS["publish"]):
        steps.append("publish")
    if (row.status in ("approved", "superseded") and row.approved_at is not None
            and user.can(*STEPS["rollback"])):  # fmt: skip
        steps.append("rollback")
    return steps


def _own_submitted(row: TemplateVersion, user: WebUser) -> bool:
    """A reviewer looking at their own submitted version: they cannot decide it."""
    own = actor(user).name == row.author or user.key_id == row.author_key_id
    return own and row.status == "submitted" and user.can(*STEPS["approve"])


def side_by_side(a: str, b: str) -> list[dict[str, Any]]:
    """Rows ``{kind, left, right, ln, rn}`` of a side-by-side diff (kind: same, change,
    delete, insert); unchanged runs longer than 6 lines are folded to 3 at each end."""
    left, right = a.splitlines(), b.splitlines()
    rows: list[dict[str, Any]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, left, right).get_opcodes():
        if tag == "equal":
            span = list(range(i2 - i1))
            if len(span) > 6:
                span = [*span[:3], -1, *span[-3:]]
            for k in span:
                if k < 0:
                    rows.append({"kind": "fold", "left": "", "right": "", "ln": None, "rn": None})
                else:
                    rows.append({"kind": "same", "left": left[i1 + k], "right": right[j1 + k],
                                 "ln": i1 + k + 1, "rn": j1 + k + 1})  # fmt: skip
            continue
        for k in range(max(i2 - i1, j2 - j1)):
            li, rj = i1 + k, j1 + k
            row = {
                "kind": {"replace": "change", "delete": "delete", "insert": "insert"}[tag],
                "left": left[li] if li < i2 else None, "ln": li + 1 if li < i2 else None,
                "right": right[rj] if rj < j2 else None, "rn": rj + 1 if rj < j2 else None,
            }  # fmt: skip
            if row["left"] is not None and row["right"] is not None:
                row["lparts"], row["rparts"] = _changed_spans(row["left"], row["right"])
            rows.append(row)
    return rows


def _changed_spans(a: str, b: str) -> tuple[list[tuple[bool, str]], list[tuple[bool, str]]]:
    """The two sides of a changed line as ``(changed, text)`` pieces (by character, so a
    Chinese sentence shows which words changed)."""
    left: list[tuple[bool, str]] = []
    right: list[tuple[bool, str]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if i2 > i1:
            left.append((tag != "equal", a[i1:i2]))
        if j2 > j1:
            right.append((tag != "equal", b[j1:j2]))
    return left, right


def _lint_by_line(findings: list[Any]) -> tuple[dict[int, list[Any]], list[Any]]:
    """Findings at their lines, and those of the whole text."""
    by_line: dict[int, list[Any]] = {}
    general: list[Any] = []
    for f in findings:
        line = f.get("line")
        if line:
            by_line.setdefault(int(line), []).append(f)
        else:
            general.append(f)
    return by_line, general


def _error_text(t: i18n.Translator, exc: Exception) -> str:
    code = getattr(exc, "code", "")
    text = t(f"editor.err.{code}") if code else ""
    return text if text and text != f"editor.err.{code}" else str(exc)


def editor_context(
    services: ServicesDep, name: str, version_id: int | None, user: WebUser
) -> dict[str, Any] | None:
    """Everything the template page shows, or None when the name has no versions."""
    with services.db.read() as session:
        rows = vs.versions_of(session, name)
        if not rows:
            return None
        shown = next((r for r in rows if r.id == version_id), None)
        live = next((r for r in rows if r.status == "live"), None)
        if shown is None:
            shown = live or rows[0]
        for r in rows:
            session.expunge(r)
        defects = {d["version_id"]: d for d in defect_report(session, name=name)}
    by_line, general = _lint_by_line(shown.lint or [])
    return {"name": name, "rows": rows, "shown": shown, "live": live,
            "by_line": by_line, "general": general, "findings": shown.lint or [],
            "steps": allowed_steps(shown, user), "own_version": _own_submitted(shown, user),
            "can_edit": user.can("admin", "writer"),
            "values": {"source": shown.source, "message": ""}, "errors": {},
            "step_error": None, "quote": quote, "lines": highlight(shown.source),
            "notice": None, "defects": defects,
            **(_choice_lists(services, _style_choices(services)) if user.can("admin", "writer")
               else {})}  # fmt: skip


@router.post("/templates/{name:path}")
async def save(request: Request, name: str, user: Author, services: ServicesDep) -> Response:
    """Save the edit form as a new version (linted); back to the template showing it."""
    form = await request.form()
    check_csrf(request, user, str(form.get("csrf") or ""))
    t = i18n.Translator(i18n.pick(request)[0])
    source = str(form.get("source") or "").replace("\r\n", "\n")
    message = str(form.get("message") or "").strip()
    parent = str(form.get("parent") or "") or None
    errors: dict[str, str] = {}
    if not source.strip():
        errors["source"] = t("err.missing")
    elif len(source) > vs.MAX_SOURCE:
        errors["source"] = t("err.string_too_long", max_length=vs.MAX_SOURCE)
    if len(message) > 500:
        errors["message"] = t("err.string_too_long", max_length=500)
    if not errors:
        try:
            vs.check_name(name)
            row, _ = store(services).save(name=name, source=source, actor=actor(user),
                                          message=message, now=services.clock(),
                                          parent=parent)  # fmt: skip
        except ValueError:
            return page(request, "error.html", {"message": "error.no_template"}, user=user,
                        status=404)  # fmt: skip
        if form.get("then") == "preview":
            return RedirectResponse(f"/web/template-versions/{row.id}/preview", status_code=303)
        return RedirectResponse(f"/web/templates/{quote(name)}?v={row.id}&saved=1",
                                status_code=303)  # fmt: skip
    ctx = editor_context(services, name, None, user)
    if ctx is None:
        return page(request, "error.html", {"message": "error.no_template"}, user=user,
                    status=404)  # fmt: skip
    ctx["values"] = {"source": source, "message": message}
    ctx["errors"] = errors
    return page(request, "editor.html", ctx, user=user, status=422)


@router.post("/template-versions/{version_id}/{step}")
async def step(
    request: Request, version_id: Id, step: str, user: Reader, services: ServicesDep
) -> Response:
    """One workflow step on a version: submit, approve, reject, publish or roll back."""
    form = await request.form()
    check_csrf(request, user, str(form.get("csrf") or ""))
    if step not in STEPS or not user.can(*STEPS[step]):
        raise pages.Forbidden()
    t = i18n.Translator(i18n.pick(request)[0])
    versions, now, who = store(services), services.clock(), actor(user)
    note = str(form.get("note") or "").strip()[:2000]
    errors: dict[str, str] = {}
    status = 422
    row: TemplateVersion | None = None
    try:
        if step == "submit":
            row = versions.submit(version_id, actor=who, now=now)
        elif step == "approve":
            row = versions.approve(version_id, actor=who, now=now, note=note,
                                   publish=form.get("publish") == "1")  # fmt: skip
        elif step == "reject":
            if not note:
                errors["note"] = t("editor.err.reason")
            else:
                row = versions.reject(version_id, actor=who, now=now, reasons=[note])
        elif step == "publish":
            row = versions.publish(version_id, actor=who, now=now)
        else:
            row = versions.rollback(version_id, actor=who, now=now, reason=note)
    except NotFound:
        return page(request, "error.html", {"message": "error.no_version"}, user=user,
                    status=404)  # fmt: skip
    except (Forbidden, Conflict) as exc:
        errors["step"] = _error_text(t, exc)
        status = 403 if isinstance(exc, Forbidden) else 409
    if row is not None and not errors:
        return RedirectResponse(f"/web/templates/{quote(row.name)}?v={row.id}&done={step}",
                                status_code=303)  # fmt: skip
    with services.db.read() as session:
        try:
            name = vs.get_version(session, version_id).name
        except NotFound:
            return page(request, "error.html", {"message": "error.no_version"}, user=user,
                        status=404)  # fmt: skip
    ctx = editor_context(services, name, version_id, user)
    assert ctx is not None
    ctx["errors"] = {f"{step}.{k}": v for k, v in errors.items()}
    ctx["step_error"] = step
    return page(request, "editor.html", ctx, user=user, status=status)


@router.get("/template-diff")
def diff_page(
    request: Request, user: Reader, services: ServicesDep, a: QueryId = 1, b: QueryId = 1
) -> Response:
    """Two versions of one file side by side (a: the older, b: the newer)."""
    with services.db.read() as session:
        try:
            left, right = vs.get_version(session, a), vs.get_version(session, b)
        except NotFound:
            return page(request, "error.html", {"message": "error.no_version"}, user=user,
                        status=404)  # fmt: skip
        rows = vs.versions_of(session, right.name)
        for r in [left, right, *rows]:
            if r in session:
                session.expunge(r)
    return page(request, "diff.html", {"a": left, "b": right, "rows": side_by_side(
        left.source, right.source), "versions": rows, "quote": quote}, user=user)  # fmt: skip


def _style_choices(services: ServicesDep) -> list[str]:
    with services.db.read() as session:
        live = vs.live_versions(session).get(vs.STYLES)
        text = live.source if live is not None else None
    if text is None:
        text = (services.settings.personas_dir / vs.STYLES).read_text(encoding="utf-8")
    try:
        return parse_styles(text).base_characters
    except CatalogError:
        return []


def _check_choices(
    t: i18n.Translator, services: ServicesDep, values: dict[str, Any]
) -> tuple[dict[str, str], list[str]]:
    """Errors (by field) of a preview's choices, and the style choices offered."""
    errors: dict[str, str] = {}
    if not values["samples"] or any(s not in SAMPLES for s in values["samples"]):
        errors["sample"] = t("err.literal_error")
    profile = values["profile"]
    if (
        profile
        and profile != "generic"
        and profile not in {p.id for p in services.toolkit.engine.profiles}
    ):
        errors["profile"] = t("err.literal_error")
    if values["moment"] not in (*MOMENTS, "auto"):
        errors["moment"] = t("err.literal_error")
    styles = _style_choices(services)
    if values["style"] and values["style"] not in styles:
        errors["style"] = t("err.literal_error")
    if values["audio"] not in AUDIO:
        errors["audio"] = t("err.literal_error")
    if not values["channels"]:
        errors["channel"] = t("err.missing")
    return errors, styles


def _run_preview(
    services: ServicesDep, values: dict[str, Any], *, version_ids: list[int],
    drafts: dict[str, str],
) -> Preview:  # fmt: skip
    """The preview of the form's choices; the audio it made is recorded for the player."""
    req = PreviewRequest(
        version_ids=version_ids, samples=values["samples"], customers=[],
        profiles=[values["profile"]] if values["profile"] else [], channels=values["channels"],
        moments=[values["moment"]], styles=[values["style"] or None],
        as_of=services.clock().date() or date.today(), audio=values["audio"], voice="auto",
        drafts=drafts,
    )  # fmt: skip
    result = preview(services.toolkit, store(services), req)
    if result.audio_rows:
        rows = result.audio_rows
        write_transaction(services.db, lambda s: repo.insert_audio_files(session=s, files=rows))
    return result


def _choice_lists(services: ServicesDep, styles: list[str]) -> dict[str, Any]:
    """What the preview forms offer."""
    return {"samples": SAMPLES, "profiles": [p.id for p in services.toolkit.engine.profiles],
            "moments": (*MOMENTS, "auto"), "styles": styles, "channels": CHANNELS,
            "audios": AUDIO}  # fmt: skip


@router.get("/template-versions/{version_id}/preview")
def preview_page(
    request: Request, version_id: Id, user: Reader, services: ServicesDep,
    profile: str = "", moment: str = "none", style: str = "",
    audio: str = "changed", run: str = "",
) -> Response:  # fmt: skip
    """A version rendered as call, WeChat and SMS scripts for sample customers, with the
    voice of the call (the segments it changed, or the whole call) to play."""
    channels = [c for c in request.query_params.getlist("channel") if c in CHANNELS]
    if not run:
        channels = list(CHANNELS)
    with services.db.read() as session:
        try:
            row = vs.get_version(session, version_id)
        except NotFound:
            return page(request, "error.html", {"message": "error.no_version"}, user=user,
                        status=404)  # fmt: skip
        session.expunge(row)
    t = i18n.Translator(i18n.pick(request)[0])
    samples = list(dict.fromkeys(request.query_params.getlist("sample"))) or ["S-1"]
    values = {"samples": samples, "profile": profile, "moment": moment, "style": style,
              "audio": audio, "channels": channels}  # fmt: skip
    errors, styles = _check_choices(t, services, values)
    items: list[dict[str, Any]] = []
    if run and not errors:
        try:
            items = _run_preview(services, values, version_ids=[row.id], drafts={}).items
        except ScriptsEngineError as exc:  # PreviewError among them
            errors["form"] = str(exc)
    return page(request, "preview.html", {
        "v": row, "values": values, "errors": errors, "items": items, "ran": bool(run),
        **_choice_lists(services, styles), "quote": quote,
    }, user=user, status=422 if errors else 200)  # fmt: skip


@router.post("/live-preview")
async def live_preview(request: Request, user: Author, services: ServicesDep) -> Response:
    """The editor's live preview: the unsaved text in the editor rendered for the chosen sample
    customer (no version is created), with its lint findings at their lines; an HTML fragment
    the page's script puts in place (``audio=changed`` also speaks what the text changed)."""
    form = await request.form()
    check_csrf(request, user, str(form.get("csrf") or ""))
    t = i18n.Translator(i18n.pick(request)[0])
    name = str(form.get("name") or "")
    source = str(form.get("source") or "").replace("\r\n", "\n")
    values = {"samples": [str(form.get("sample") or "S-1")],
              "profile": str(form.get("profile") or ""),
              "moment": str(form.get("moment") or "none"), "style": str(form.get("style") or ""),
              "audio": str(form.get("audio") or "none"),
              "channels": [c for c in (str(x) for x in form.getlist("channel")) if c in CHANNELS]}  # fmt: skip
    errors, _ = _check_choices(t, services, values)
    if values["audio"] == "script":
        errors["audio"] = t("err.literal_error")
    if len(source) > vs.MAX_SOURCE:
        errors["source"] = t("err.string_too_long", max_length=vs.MAX_SOURCE)
    result: Preview | None = None
    if not errors:
        try:
            result = _run_preview(services, values, version_ids=[], drafts={name: source})
        except ScriptsEngineError as exc:
            errors["form"] = str(exc)
    findings = (result.lint.get(name) or []) if result is not None else []
    by_line, general = _lint_by_line(findings)
    lines = source.splitlines()
    return fragment(request, "_live_preview.html", {
        "errors": errors, "items": result.items if result is not None else [],
        "findings": findings, "by_line": by_line, "general": general,
        "line_text": {n: lines[n - 1] if 0 < n <= len(lines) else "" for n in by_line},
        "broken": result is not None and not result.items and bool(findings),
    }, user=user, status=422 if errors else 200)  # fmt: skip


@router.get("/audio/{name}")
def audio_file(name: str, user: Reader, services: ServicesDep, request: Request) -> Response:
    """An audio file for the page's player (the API's route, behind the session)."""
    from api.deps import Principal
    from api.routes.audio import get_audio

    principal = Principal(key_id=user.key_id, role=user.role, prefix=user.prefix,
                          name=user.name.strip())  # fmt: skip
    return get_audio(name, principal, services, request.headers.get("if-none-match"))
