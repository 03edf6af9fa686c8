"""Template versions: every writer-editable file as immutable, content-hashed versions with a
four-eyes workflow and an append-only, hash-chained audit log (COMPLIANCE.md CR-40, CR-41).

Writer-editable files are the templates under ``personas/templates`` (named by their path
without ``.j2``, e.g. ``call/opening``) and ``styles.yaml``. ``grid.yaml`` and
``compliance.yaml`` are not: they are rules, changed by code review.

A version's ``version`` is the SHA-256 prefix of its source, the same hash the renderer
writes on every segment it makes, so a call record or a QA finding names exactly the text.
Its life::

    draft --submit--> submitted --approve--> approved --publish--> live --(next live)--> superseded
                                 \\--reject--> rejected
    any version approved once (approved, superseded) --rollback--> live

Saving lints the version against the live set (the same checks as ``scripts-engine lint``:
syntax with line, undeclared variables, banned phrases, then every profile, channel, moment
and style rendered through the content rules: disclosures, opening order, SMS length). A
version with errors is kept as a draft but cannot be submitted or approved; approval lints
again against the live set of that moment. The approver must be a ``qa`` or ``admin`` user
other than the author (users are API keys' names). Each step appends an event whose hash
covers the previous event's hash, so editing or deleting a past event breaks the chain.

On first start the files under ``personas/`` are seeded as live versions by ``system``. A
file whose content later differs from every stored version (a deployment shipped a change) is
imported as a draft by ``system``: it still needs an approval to go live.

:class:`LiveSource` is the renderer's :class:`~scripts_engine.templates.PackSource` for the
service: it renders from the live set and notices a change by the last event's id.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from scripts_engine.compliance import Finding, load_rules
from scripts_engine.db.errors import Conflict, Forbidden, NotFound
from scripts_engine.db.models import TemplateEvent, TemplateVersion
from scripts_engine.db.session import Database, write_transaction
from scripts_engine.errors import CatalogError, ScriptsEngineError
from scripts_engine.grid import Grid
from scripts_engine.lint import LintReport, _render_matrix, check_template
from scripts_engine.render import Renderer
from scripts_engine.sandbox import ScriptSandbox
from scripts_engine.styles import Styles, parse_styles
from scripts_engine.templates import _NAME, SUFFIX, PackTemplate, TemplatePack, compile_template

STYLES = "styles.yaml"
SYSTEM = "system"
STATUSES = ("draft", "submitted", "approved", "rejected", "live", "superseded")
#: the largest file a writer may save (characters)
MAX_SOURCE = 200_000
#: compiled templates kept by (name, version); the oldest is dropped first
MAX_COMPILED = 1024
_GENESIS = "0" * 64


@dataclass(frozen=True)
class Actor:
    """Who takes a step: the user's name (an API key's name) and role."""

    name: str
    role: str
    key_id: int | None = None


def content_version(source: str) -> str:
    """The version of a source text: what the renderer writes on its segments."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]


def kind_of(name: str) -> str:
    return "styles" if name == STYLES else "template"


def check_name(name: str) -> str:
    """A valid version name (``styles.yaml`` or a template path), or ValueError."""
    if name != STYLES and (len(name) > 200 or not _NAME.match(name)):
        raise ValueError(
            "a template name is a path of letters, digits, '_' and '-' (e.g. call/opening), "
            f"or {STYLES}"
        )
    return name


def seed_files(personas_dir: Path) -> dict[str, str]:
    """The writer-editable files under ``personas_dir``: name -> source."""
    root = personas_dir / "templates"
    out = {
        p.relative_to(root).as_posix()[: -len(SUFFIX)]: p.read_text(encoding="utf-8")
        for p in sorted(root.rglob(f"*{SUFFIX}"))
        if p.is_file()
    }
    out[STYLES] = (personas_dir / STYLES).read_text(encoding="utf-8")
    return out


# --- the audit log ------------------------------------------------------------------------------


def _event_hash(prev: str, fields: Mapping[str, Any]) -> str:
    blob = json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(f"{prev}\n{blob}".encode()).hexdigest()


def _event_fields(e: TemplateEvent) -> dict[str, Any]:
    return {"at": e.at.isoformat(), "name": e.name, "version": e.version, "action": e.action,
            "actor": e.actor, "actor_key_id": e.actor_key_id, "detail": e.detail}  # fmt: skip


#: PostgreSQL advisory lock key: the workflow's writers run one at a time, so the audit chain
#: never forks and a name never has two live versions (SQLite writers are serial already)
_LOCK_KEY = 0x5E_7E_4510


def serialize(session: Session) -> None:
    """Take the workflow's transaction-scoped lock (PostgreSQL; a no-op on SQLite)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})


def append_event(
    session: Session, *, name: str, version: str, action: str, actor: Actor, now: datetime,
    detail: dict[str, Any] | None = None,
) -> TemplateEvent:  # fmt: skip
    """Append one event, chained to the last one (callers hold the write transaction)."""
    serialize(session)
    last = session.scalar(select(TemplateEvent).order_by(TemplateEvent.id.desc()).limit(1))
    prev = last.hash if last is not None else _GENESIS
    row = TemplateEvent(at=now, name=name, version=version, action=action, actor=actor.name,
                        actor_key_id=actor.key_id, detail=detail or {}, prev_hash=prev, hash="")  # fmt: skip
    row.hash = _event_hash(prev, _event_fields(row))
    session.add(row)
    session.flush()
    return row


def verify_chain(session: Session) -> tuple[bool, int | None]:
    """``(True, None)`` if every event's hash is right and chained; else the first bad id."""
    prev = _GENESIS
    for e in session.scalars(select(TemplateEvent).order_by(TemplateEvent.id)):
        if e.prev_hash != prev or _event_hash(prev, _event_fields(e)) != e.hash:
            return False, e.id
        prev = e.hash
    return True, None


def events(session: Session, *, name: str | None = None, limit: int = 200) -> list[TemplateEvent]:
    stmt = select(TemplateEvent).order_by(TemplateEvent.id.desc()).limit(limit)
    if name is not None:
        stmt = stmt.where(TemplateEvent.name == name)
    return list(session.scalars(stmt))


def last_event_id(session: Session) -> int:
    return int(session.scalar(select(func.max(TemplateEvent.id))) or 0)


# --- reading ------------------------------------------------------------------------------------


def live_versions(session: Session) -> dict[str, TemplateVersion]:
    """The live set: each name's live version."""
    rows = session.scalars(select(TemplateVersion).where(TemplateVersion.status == "live"))
    return {r.name: r for r in rows}


def get_version(session: Session, version_id: int, *, lock: bool = False) -> TemplateVersion:
    stmt = select(TemplateVersion).where(TemplateVersion.id == version_id)
    if lock and session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = session.scalar(stmt)
    if row is None:
        raise NotFound(f"no template version {version_id}")
    return row


def versions_of(session: Session, name: str) -> list[TemplateVersion]:
    stmt = select(TemplateVersion).where(TemplateVersion.name == name)
    return list(session.scalars(stmt.order_by(TemplateVersion.id.desc())))


def find_versions(
    session: Session, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], TemplateVersion]:
    """Stored versions by ``(name, version hash)``, e.g. those a call's segments name."""
    wanted = set(pairs)
    if not wanted:
        return {}
    names = {n for n, _ in wanted}
    stmt = select(TemplateVersion).where(TemplateVersion.name.in_(names))
    return {(r.name, r.version): r for r in session.scalars(stmt) if (r.name, r.version) in wanted}


def summaries(session: Session, prefix: str | None = None) -> list[dict[str, Any]]:
    """One line per name: live version, newest version, count by status."""
    stmt = select(TemplateVersion.name, TemplateVersion.status, func.count(),
                  func.max(TemplateVersion.id)).group_by(TemplateVersion.name,
                                                         TemplateVersion.status)  # fmt: skip
    if prefix:
        stmt = stmt.where(TemplateVersion.name.startswith(prefix, autoescape=True))
    out: dict[str, dict[str, Any]] = {}
    for name, status, n, newest in session.execute(stmt):
        item = out.setdefault(name, {"name": name, "kind": kind_of(name), "counts": {},
                                     "newest_id": 0})  # fmt: skip
        item["counts"][status] = int(n)
        item["newest_id"] = max(item["newest_id"], int(newest))
    live = live_versions(session)
    for name, item in out.items():
        row = live.get(name)
        item["live"] = {"id": row.id, "version": row.version} if row else None
    return [out[n] for n in sorted(out)]


def diff(a: TemplateVersion, b: TemplateVersion, *, context: int = 3) -> str:
    """A unified diff from ``a`` to ``b``."""
    lines = difflib.unified_diff(
        a.source.splitlines(keepends=True), b.source.splitlines(keepends=True),
        fromfile=f"{a.name}@{a.version}", tofile=f"{b.name}@{b.version}", n=context,
    )  # fmt: skip
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


# --- packs from versions ------------------------------------------------------------------------


class PackBuilder:
    """Compiles sources into packs, each version once (compiled templates are kept by hash)."""

    def __init__(self, personas_dir: Path):
        self.personas_dir = Path(personas_dir)
        self._compiled: dict[tuple[str, str], PackTemplate] = {}
        self._styles: dict[str, Styles] = {}
        self._lock = threading.Lock()

    def build(self, env: ScriptSandbox, sources: Mapping[str, str]) -> tuple[TemplatePack, Styles]:
        """The pack and styles of a set of sources (name -> text).

        Raises:
            ScriptsEngineError: a source does not compile or the styles do not validate.
        """
        templates: dict[str, PackTemplate] = {}
        if STYLES not in sources:
            sources = {**sources, STYLES: (self.personas_dir / STYLES).read_text(encoding="utf-8")}
        styles: Styles | None = None
        for name, source in sources.items():
            version = content_version(source)
            if name == STYLES:
                with self._lock:
                    styles = self._styles.get(version)
                if styles is None:
                    styles = parse_styles(source)
                    with self._lock:
                        self._styles[version] = styles
                continue
            with self._lock:
                compiled = self._compiled.get((name, version))
            if compiled is None:
                compiled, problems = compile_template(env, name, source)
                if compiled is None:
                    first = problems[0]
                    raise ScriptsEngineError(f"{name}: {first}")
                with self._lock:
                    if len(self._compiled) >= MAX_COMPILED:  # live previews compile every edit
                        self._compiled.pop(next(iter(self._compiled)))
                    self._compiled[(name, version)] = compiled
            templates[name] = compiled
        assert styles is not None
        return TemplatePack(self.personas_dir / "templates", templates, []), styles

    def styles_version(self, styles: Styles) -> str | None:
        """The version of a :class:`Styles` this builder made (kept for the process's life,
        so the object identifies its text)."""
        with self._lock:
            return next((v for v, s in self._styles.items() if s is styles), None)


class StaticSource:
    """A fixed set of sources (a preview, a lint): the renderer never reloads it."""

    def __init__(self, builder: PackBuilder, sources: Mapping[str, str]):
        self.builder, self.sources = builder, dict(sources)

    def signature(self) -> Any:
        return tuple(sorted((n, content_version(s)) for n, s in self.sources.items()))

    def load(self, env: ScriptSandbox) -> tuple[TemplatePack, Styles]:
        return self.builder.build(env, self.sources)

    def styles_version(self, styles: Styles) -> str | None:
        return self.builder.styles_version(styles)


class LiveSource:
    """The live set in the database; changes are noticed by the last audit event's id."""

    def __init__(self, db: Database, builder: PackBuilder):
        self.db, self.builder = db, builder

    def signature(self) -> Any:
        with self.db.read() as session:
            return last_event_id(session)

    def load(self, env: ScriptSandbox) -> tuple[TemplatePack, Styles]:
        with self.db.read() as session:
            sources = {n: r.source for n, r in live_versions(session).items()}
        return self.builder.build(env, sources)

    def styles_version(self, styles: Styles) -> str | None:
        return self.builder.styles_version(styles)


# --- lint -----------------------------------------------------------------------------------


def static_findings(name: str, source: str, *, personas_dir: Path) -> list[Finding]:
    """The checks of one file by itself, without rendering (fast enough for every keystroke):
    size, syntax (with its line), sandbox policy, undeclared variables and banned phrases of a
    template; the schema of ``styles.yaml``."""
    if len(source) > MAX_SOURCE:
        return [Finding("size", f"{len(source)} characters (at most {MAX_SOURCE})", name)]
    if name == STYLES:
        try:
            parse_styles(source)
        except CatalogError as exc:
            return [Finding("data", exc.message, name, exc.line)]
        return []
    rules = load_rules(personas_dir / "compliance.yaml")
    return check_template(ScriptSandbox(), name, source, rules)


def lint_sources(
    sources: Mapping[str, str], name: str, *, personas_dir: Path, grid: Grid, builder: PackBuilder
) -> list[Finding]:
    """Lint one file of a candidate set (the live set with this version in it).

    Static checks of the file itself first; if it is clean, the whole candidate set is
    rendered over the lint matrix through the content rules (scripts_engine.lint).
    """
    findings = static_findings(name, sources[name], personas_dir=personas_dir)
    if findings:
        return findings
    report = LintReport(name)
    renderer = Renderer(personas_dir, grid=grid, reload_interval=1e9,
                        source=StaticSource(builder, sources))  # fmt: skip
    _render_matrix(renderer, report)
    return report.findings


def findings_json(findings: Iterable[Finding]) -> list[dict[str, Any]]:
    return [{**f.to_dict(), "level": "error"} for f in findings]


# --- the workflow ---------------------------------------------------------------------------


class VersionStore:
    """The workflow over the database; every step is one write transaction."""

    def __init__(self, db: Database, personas_dir: Path, grid: Grid, *,
                 on_live_change: Callable[[], object] = lambda: None):  # fmt: skip
        self.db, self.personas_dir, self.grid = db, Path(personas_dir), grid
        self.builder = PackBuilder(self.personas_dir)
        self.on_live_change = on_live_change
        self._renderers: dict[Any, Renderer] = {}
        self._lock = threading.Lock()

    def source(self) -> LiveSource:
        return LiveSource(self.db, self.builder)

    def renderer(self, sources: Mapping[str, str]) -> Renderer:
        """A renderer for a fixed set of sources (previews), kept for the next request."""
        source = StaticSource(self.builder, sources)
        key = source.signature()
        with self._lock:
            found = self._renderers.get(key)
        if found is None:
            found = Renderer(self.personas_dir, grid=self.grid, reload_interval=1e9,
                             source=source)  # fmt: skip
            with self._lock:
                if len(self._renderers) >= 8:
                    self._renderers.pop(next(iter(self._renderers)))
                self._renderers[key] = found
        return found

    # seeding
    def seed(self, now: datetime) -> int:
        """Store the personas files: live on first start, later changes as drafts (idempotent).
        Returns how many versions were added."""
        files = seed_files(self.personas_dir)
        system = Actor(SYSTEM, "admin")

        def run(session: Session) -> int:
            known: dict[str, set[str]] = {}
            for n, v in session.execute(select(TemplateVersion.name, TemplateVersion.version)):
                known.setdefault(n, set()).add(v)
            added = 0
            for name, source in files.items():
                version = content_version(source)
                if version in known.get(name, set()):
                    continue
                first = name not in known
                row = TemplateVersion(
                    name=name, kind=kind_of(name), version=version, source=source,
                    status="live" if first else "draft", author=SYSTEM, author_key_id=None,
                    message="initial version from personas/" if first
                    else "imported from personas/ (changed on disk)",
                    parent=None, lint=[], lint_errors=0, created_at=now,
                    approved_at=now if first else None, live_at=now if first else None, flags=0,
                )  # fmt: skip
                session.add(row)
                session.flush()
                append_event(session, name=name, version=version,
                             action="seed" if first else "import", actor=system, now=now)  # fmt: skip
                added += 1
            return added

        try:
            return write_transaction(self.db, run)
        except IntegrityError:  # another process seeded at the same moment
            return 0

    # candidate sets
    def _sources_with(self, session: Session, name: str, source: str) -> dict[str, str]:
        sources = {n: r.source for n, r in live_versions(session).items()}
        sources[name] = source
        return sources

    def lint(self, name: str, source: str) -> list[Finding]:
        """Lint ``source`` as ``name`` within the current live set."""
        with self.db.read() as session:
            sources = self._sources_with(session, name, source)
        return lint_sources(sources, name, personas_dir=self.personas_dir, grid=self.grid,
                            builder=self.builder)  # fmt: skip

    # steps
    def save(
        self, *, name: str, source: str, actor: Actor, message: str, now: datetime,
        parent: str | None = None,
    ) -> tuple[TemplateVersion, bool]:  # fmt: skip
        """A new draft version (linted); ``(row, created)``. Saving text that is already a
        version of this name answers that version (``created`` False)."""
        check_name(name)
        version = content_version(source)
        with self.db.read() as session:
            existing = find_versions(session, [(name, version)]).get((name, version))
            if existing is not None:
                return existing, False
        findings = self.lint(name, source)

        def run(session: Session) -> tuple[TemplateVersion, bool]:
            again = find_versions(session, [(name, version)]).get((name, version))
            if again is not None:
                return again, False
            row = TemplateVersion(
                name=name, kind=kind_of(name), version=version, source=source, status="draft",
                author=actor.name, author_key_id=actor.key_id, message=message, parent=parent,
                lint=findings_json(findings), lint_errors=len(findings), created_at=now, flags=0,
            )  # fmt: skip
            session.add(row)
            session.flush()
            append_event(session, name=name, version=version, action="save", actor=actor,
                         now=now, detail={"id": row.id, "message": message,
                                          "lint_errors": len(findings)})  # fmt: skip
            return row, True

        return write_transaction(self.db, run)

    def _step(
        self, version_id: int, action: str, actor: Actor, now: datetime,
        fn: Callable[[Session, TemplateVersion], dict[str, Any]], *, live_change: bool = False,
    ) -> TemplateVersion:  # fmt: skip
        def run(session: Session) -> TemplateVersion:
            serialize(session)
            row = get_version(session, version_id, lock=True)
            detail = fn(session, row)
            append_event(session, name=row.name, version=row.version, action=action,
                         actor=actor, now=now, detail={"id": row.id, **detail})  # fmt: skip
            return row

        row = write_transaction(self.db, run)
        if live_change:
            self.on_live_change()
        return row

    def submit(self, version_id: int, *, actor: Actor, now: datetime) -> TemplateVersion:
        def fn(session: Session, row: TemplateVersion) -> dict[str, Any]:
            if row.status not in ("draft", "rejected"):
                raise Conflict(f"a {row.status} version cannot be submitted", code="bad_state")
            if row.lint_errors:
                raise Conflict(f"the version has {row.lint_errors} lint errors; fix them in a "
                               "new version", code="lint_errors")  # fmt: skip
            row.status, row.submitted_at = "submitted", now
            return {}

        return self._step(version_id, "submit", actor, now, fn)

    def approve(
        self, version_id: int, *, actor: Actor, now: datetime, note: str = "",
        publish: bool = False,
    ) -> TemplateVersion:  # fmt: skip
        """Approve a submitted version (four eyes), after linting it again against the live
        set of now; with ``publish`` it goes live in the same step."""
        with self.db.read() as session:
            row = get_version(session, version_id)
            self._four_eyes(row, actor)
            if row.status != "submitted":
                raise Conflict(f"only a submitted version can be approved (this one is "
                               f"{row.status})", code="bad_state")  # fmt: skip
            sources = self._sources_with(session, row.name, row.source)
        findings = lint_sources(sources, row.name, personas_dir=self.personas_dir,
                                grid=self.grid, builder=self.builder)  # fmt: skip

        def fn(session: Session, row: TemplateVersion) -> dict[str, Any]:
            self._four_eyes(row, actor)
            if row.status != "submitted":
                raise Conflict(f"a {row.status} version cannot be approved", code="bad_state")
            if findings or row.lint_errors:
                row.lint, row.lint_errors = findings_json(findings), len(findings)
                raise Conflict("the version has lint errors against the live set; it cannot "
                               "be approved", code="lint_errors")  # fmt: skip
            row.status, row.decided_by, row.decided_at = "approved", actor.name, now
            row.decision_note, row.approved_at = note, now
            return {"note": note, "lint": {"errors": 0, "checked_against_live": True}}

        approved = self._step(version_id, "approve", actor, now, fn)
        if publish:
            return self.publish(version_id, actor=actor, now=now)
        return approved

    def _four_eyes(self, row: TemplateVersion, actor: Actor) -> None:
        if actor.role not in ("qa", "admin"):
            raise Forbidden("only a qa or admin user approves or rejects", code="role")
        same_key = actor.key_id is not None and actor.key_id == row.author_key_id
        if same_key or actor.name == row.author:
            raise Forbidden("four eyes: the author cannot approve or reject their own version",
                            code="own_version")  # fmt: skip

    def reject(
        self, version_id: int, *, actor: Actor, now: datetime, reasons: list[str]
    ) -> TemplateVersion:
        def fn(session: Session, row: TemplateVersion) -> dict[str, Any]:
            self._four_eyes(row, actor)
            if row.status != "submitted":
                raise Conflict(f"a {row.status} version cannot be rejected", code="bad_state")
            row.status, row.decided_by, row.decided_at = "rejected", actor.name, now
            row.decision_note = "\n".join(reasons)
            return {"reasons": reasons}

        return self._step(version_id, "reject", actor, now, fn)

    def _make_live(self, session: Session, row: TemplateVersion, now: datetime) -> str | None:
        current = live_versions(session).get(row.name)
        if current is not None and current.id != row.id:
            current.status = "superseded"
            session.flush()
        row.status, row.live_at = "live", now
        return current.version if current is not None else None

    def publish(self, version_id: int, *, actor: Actor, now: datetime) -> TemplateVersion:
        def fn(session: Session, row: TemplateVersion) -> dict[str, Any]:
            if row.status != "approved":
                raise Conflict(f"only an approved version goes live (this one is {row.status})",
                               code="bad_state")  # fmt: skip
            return {"replaces": self._make_live(session, row, now)}

        return self._step(version_id, "publish", actor, now, fn, live_change=True)

    def rollback(
        self, version_id: int, *, actor: Actor, now: datetime, reason: str = ""
    ) -> TemplateVersion:
        """Make an earlier approved version live again."""

        def fn(session: Session, row: TemplateVersion) -> dict[str, Any]:
            if row.approved_at is None or row.status not in ("approved", "superseded"):
                raise Conflict("only a version that was approved (and is not live) can be "
                               "rolled back to", code="bad_state")  # fmt: skip
            return {"replaces": self._make_live(session, row, now), "reason": reason}

        return self._step(version_id, "rollback", actor, now, fn, live_change=True)

    def flag(self, session: Session, pairs: Iterable[tuple[str, str]], *, actor: Actor,
             now: datetime, review_id: int) -> list[TemplateVersion]:  # fmt: skip
        """Count a failed QA review against these versions (in the caller's transaction)."""
        rows = list(find_versions(session, pairs).values())
        for row in rows:
            row.flags += 1
            append_event(session, name=row.name, version=row.version, action="flag",
                         actor=actor, now=now, detail={"id": row.id, "review": review_id})  # fmt: skip
        return rows
