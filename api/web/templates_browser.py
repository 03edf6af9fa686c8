"""The script templates (``personas/templates`` and ``styles.yaml``): the list, with the
versions waiting for approval or to go live, and one template's source with Jinja
highlighted and lint findings at their lines (with versions, the editor: :mod:`api.web.editor`).

Names in URLs are looked up among the stored versions (a database query) or in the list of
files the server found itself; a name in neither is a 404 (no path from a request ever reaches
the file system).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy import select

from api.deps import ServicesDep
from api.web.auth import WebUser
from api.web.pages import require
from api.web.render import page
from scripts_engine import versions as vs
from scripts_engine.compliance import load_rules
from scripts_engine.db.models import TemplateVersion
from scripts_engine.errors import CatalogError
from scripts_engine.lint import check_template
from scripts_engine.sandbox import ScriptSandbox
from scripts_engine.templates import SUFFIX

router = APIRouter(prefix="/web/templates", include_in_schema=False)
Reader = Annotated[WebUser, require("admin", "writer", "qa")]
_TOKEN = re.compile(r"(\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\})", re.S)


def template_files(personas_dir: Path) -> dict[str, Path]:
    root = personas_dir / "templates"
    return {p.relative_to(root).as_posix()[: -len(SUFFIX)]: p
            for p in sorted(root.rglob(f"*{SUFFIX}"))}  # fmt: skip


def highlight(source: str) -> list[list[tuple[str, str]]]:
    """The source as lines of ``(kind, text)`` pieces: ``text``, ``expr``, ``stmt``, ``comment``."""
    lines: list[list[tuple[str, str]]] = [[]]
    for i, piece in enumerate(_TOKEN.split(source)):
        if not piece:
            continue
        kind = "text"
        if i % 2:
            kind = {"{{": "expr", "{%": "stmt", "{#": "comment"}[piece[:2]]
        for j, part in enumerate(piece.split("\n")):
            if j:
                lines.append([])
            if part:
                lines[-1].append((kind, part))
    return lines


@router.get("")
def templates_page(request: Request, user: Reader, services: ServicesDep) -> Response:
    """Every template of the pack, grouped by folder."""
    groups: dict[str, list[str]] = {}
    for name in template_files(services.settings.personas_dir):
        folder = name.rsplit("/", 1)[0] if "/" in name else ""
        groups.setdefault(folder, []).append(name)
    with services.db.read() as session:
        summaries = vs.summaries(session)
        pending = list(session.scalars(select(TemplateVersion).where(
            TemplateVersion.status.in_(("submitted", "approved"))).order_by(TemplateVersion.id)))  # fmt: skip
        for row in pending:
            session.expunge(row)
    if any(s["name"] == vs.STYLES for s in summaries):
        groups.setdefault("", []).append(vs.STYLES)
    drafts = {s["name"]: sum(s["counts"].get(k, 0) for k in ("draft", "submitted", "approved"))
              for s in summaries}  # fmt: skip
    return page(request, "templates.html", {"groups": groups, "pending": pending,
                                            "drafts": drafts}, user=user)  # fmt: skip


@router.get("/{name:path}")
def template_page(
    request: Request, name: str, user: Reader, services: ServicesDep,
    v: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None,
    saved: str = "", done: str = "",
) -> Response:  # fmt: skip
    """One template: highlighted source and lint findings at their lines; with versions (the
    service renders from the database), the editor (:mod:`api.web.editor`)."""
    from api.web.editor import editor_context

    ctx = editor_context(services, name, v, user)
    if ctx is not None:
        if saved:
            ctx["notice"] = "editor.saved"
        elif done in ("submit", "approve", "reject", "publish", "rollback"):
            ctx["notice"] = f"editor.done.{done}"
        return page(request, "editor.html", ctx, user=user)
    personas_dir = services.settings.personas_dir
    path = template_files(personas_dir).get(name)
    if path is None:
        return page(request, "error.html", {"message": "error.no_template"}, user=user,
                    status=404)  # fmt: skip
    source = path.read_text(encoding="utf-8")
    try:
        rules = load_rules(personas_dir / "compliance.yaml")
    except CatalogError:
        rules = None
    findings = check_template(ScriptSandbox(), name, source, rules, path)
    by_line: dict[int, list[Any]] = {}
    general = []
    for f in findings:
        if f.line:
            by_line.setdefault(int(f.line), []).append(f)
        else:
            general.append(f)
    return page(request, "template.html", {
        "name": name, "lines": highlight(source), "by_line": by_line, "general": general,
        "findings": findings,
    }, user=user)  # fmt: skip
