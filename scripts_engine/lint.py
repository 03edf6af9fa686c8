"""Lint for the script pack: ``scripts-engine lint [PATH]``.

Checks, each finding naming file and line where there is one:

1. ``styles.yaml`` and ``compliance.yaml`` load and validate;
2. every template parses, stays inside the dialect and uses only allowlisted filters;
3. every variable a template reads is in its stage's context model (``customer.nmae`` is an
   error at lint time, not a blank at call time);
4. no banned phrase in a template's own text (negation-aware);
5. every template the engine needs exists (stages, moments, the grid's tags, objections,
   closes, chat, generic);
6. the pack renders for sample customers across all profiles, channels, moments and the 27
   styles, and every rendered script passes the content rules (disclosures, opening order,
   SMS length, leaks) - the same checks as at render time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

from jinja2 import meta, nodes
from pydantic import BaseModel

from scripts_engine.compliance import ContentRules, Finding, load_rules
from scripts_engine.context import CHANNELS, CLOSES, MOMENTS, OBJECTIONS, WECHAT_MESSAGES, model_for
from scripts_engine.errors import CatalogError, ScriptComplianceError, ScriptRenderError
from scripts_engine.grid import load_grid
from scripts_engine.render import Renderer
from scripts_engine.sandbox import ScriptSandbox
from scripts_engine.styles import load_styles
from scripts_engine.templates import SUFFIX, compile_template

#: Customers the pack is rendered for in lint and tests: a retiree with every field, a young
#: man with few, and a customer with no name, gender or dates.
SAMPLE_CUSTOMERS: tuple[dict[str, Any], ...] = (
    {"customer_id": "S-1", "name": "欧阳秀兰", "gender": "F", "phone": "13812345678", "age": 66,
     "job": "retired", "marital": "married", "education": "tertiary", "risk_rating": "R2",
     "birthday": "1960-03-14", "maturity_date": "2026-03-20", "city": "广州", "province": "广东"},
    {"customer_id": "S-2", "name": "李强", "gender": "M", "phone": "13987654321", "age": 26,
     "job": "technician", "marital": "single", "education": "secondary", "risk_rating": "R3"},
    {"customer_id": "S-3", "name": None, "gender": None, "phone": None, "age": None,
     "job": "unknown", "risk_rating": None},
)  # fmt: skip
SAMPLE_SCORES: tuple[dict[str, float], ...] = (
    {"silver": 1.0, "affluent": 0.9, "debt_free": 0.8, "warm": 0.7, "timing": 0.6,
     "mobile": 0.5, "propensity": 0.4, "educated": 1.0},
    {"educated": 0.3, "mobile": 1.0, "propensity": 0.5, "debt_free": 0.5, "timing": 0.3,
     "warm": 0.2, "affluent": 0.1, "silver": 0.0},
    {},
)  # fmt: skip
SAMPLE_DATE = date(2026, 3, 10)


@dataclass
class LintReport:
    """What lint found; ``ok`` when nothing."""

    path: str
    findings: list[Finding] = field(default_factory=list)
    rendered: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "rendered": self.rendered,
            "findings": [f.to_dict() for f in self.findings],
        }


def _paths(model: type[BaseModel]) -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()
    for name, info in model.model_fields.items():
        out.add((name,))
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out |= {(name, *p) for p in _paths(sub)}
    return out


def _getattr_chains(tree: nodes.Template) -> Iterator[tuple[tuple[str, ...], int]]:
    for node in tree.find_all(nodes.Getattr):
        chain: list[str] = []
        cur: nodes.Node = node
        while isinstance(cur, nodes.Getattr):
            chain.append(cur.attr)
            cur = cur.node
        if isinstance(cur, nodes.Name) and cur.ctx == "load":
            yield (cur.name, *reversed(chain)), node.lineno


def check_template(
    env: ScriptSandbox, name: str, source: str, rules: ContentRules | None, path: Path | None = None
) -> list[Finding]:
    """Static checks of one template (steps 2-4 of the module docstring)."""
    compiled, findings = compile_template(env, name, source, path)
    if compiled is None:
        return findings
    tree = env.parse(source, name, str(path) if path else None)
    model = model_for(name)
    allowed = _paths(model)
    top = {p[0] for p in allowed} | {"range", "loop"}
    local = {n.name for n in tree.find_all(nodes.Name) if n.ctx == "store"}
    for var in sorted(meta.find_undeclared_variables(tree) - top - local):
        line = next((n.lineno for n in tree.find_all(nodes.Name) if n.name == var), None)
        findings.append(
            Finding("undeclared", f"'{var}' is not a {model.__name__} variable", name, line)
        )
    reported: set[tuple[str, ...]] = set()
    for chain, line in _getattr_chains(tree):
        if chain[0] not in top or chain[0] in local or chain[0] in ("loop", "range"):
            continue
        for i in range(2, len(chain) + 1):
            if chain[:i] not in allowed:
                if chain[:i] not in reported:
                    reported.add(chain[:i])
                    dotted = ".".join(chain[:i])
                    findings.append(
                        Finding(
                            "undeclared", f"'{dotted}' is not a {model.__name__} field", name, line
                        )
                    )
                break
    if rules is not None:
        for data in tree.find_all(nodes.TemplateData | nodes.Const):  # type: ignore[arg-type]
            text = (
                getattr(data, "data", None) if isinstance(data, nodes.TemplateData) else data.value
            )
            if isinstance(text, str):
                for phrase, category, at in rules.banned_hits(text):
                    line = data.lineno + text.count("\n", 0, at)
                    findings.append(
                        Finding("banned-phrase", f"'{phrase}' ({category})", name, line)
                    )
    return findings


def _required(tag_names: tuple[str, ...]) -> list[str]:
    return [
        "call/opening", "call/disclosure", "call/signoff", "chat/sms", "generic/call/value",
        "generic/chat/sms",
        *(f"call/moment/{m}" for m in MOMENTS), *(f"call/value/{t}" for t in tag_names),
        *(f"call/objection/{o}" for o in OBJECTIONS), *(f"call/close/{c}" for c in CLOSES),
        *(f"chat/wechat/{n}" for n in WECHAT_MESSAGES),
        *(f"generic/chat/wechat/{n}" for n in WECHAT_MESSAGES),
    ]  # fmt: skip


def lint(path: Path, *, default_personas: Path | None = None) -> LintReport:
    """Lint a personas folder, a templates folder or one ``.j2`` file."""
    path = Path(path)
    report = LintReport(str(path))
    personas = path if (path / "templates").is_dir() else None
    rules_dir = personas or default_personas
    rules: ContentRules | None = None
    if rules_dir is not None:
        try:
            rules = load_rules(rules_dir / "compliance.yaml")
            load_styles(rules_dir / "styles.yaml")
        except CatalogError as exc:
            report.findings.append(Finding("data", exc.message, exc.path, exc.line))
    env = ScriptSandbox()
    if path.is_file():
        root = next((p for p in path.parents if p.name == "templates"), path.parent)
        files = [path]
    else:
        root = path / "templates" if personas else path
        files = sorted(root.rglob(f"*{SUFFIX}"))
    names = set()
    for file in files:
        name = file.relative_to(root).as_posix()[: -len(SUFFIX)]
        names.add(name)
        try:
            source = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            report.findings.append(Finding("unreadable", str(exc), name))
            continue
        report.findings += check_template(env, name, source, rules, file)
    if personas is None:
        return report
    try:
        grid = load_grid(personas / "grid.yaml")
    except CatalogError as exc:
        report.findings.append(Finding("data", exc.message, exc.path, exc.line))
        return report
    for name in _required(grid.tag_names):
        if name not in names:
            report.findings.append(Finding("missing-template", "the engine needs it", name))
    if report.findings:
        return report  # rendering a broken pack only repeats the errors
    _render_matrix(Renderer(personas, grid=grid, reload_interval=1e9), report)
    return report


def _render_matrix(renderer: Renderer, report: LintReport) -> None:
    """Render the sample matrix; each problem is reported once, where it was first seen.

    A rendered script's finding names the customer, profile, channel, moment, style, stage
    and template (with version); ``scripts`` counts the scripts that had the same problem.
    """
    seen: dict[tuple[Any, ...], int] = {}

    def add(finding: Finding) -> None:
        key = (finding.code, finding.message, finding.template, finding.stage, finding.key)
        if key in seen:
            i = seen[key]
            report.findings[i] = replace(
                report.findings[i], scripts=(report.findings[i].scripts or 1) + 1
            )
        else:
            seen[key] = len(report.findings)
            report.findings.append(finding)

    def attempt(
        customer: dict[str, Any], profile: Any, scores: dict[str, float], **kw: Any
    ) -> None:
        try:
            renderer.render_script(customer, profile, scores, as_of=SAMPLE_DATE, **kw)
            report.rendered += 1
        except ScriptComplianceError as exc:
            for f in exc.findings:
                if isinstance(f, Finding):
                    add(f)
        except ScriptRenderError as exc:
            pid = getattr(profile, "id", profile) or "generic"
            where = {k: v for k, v in kw.items() if k in ("channel", "moment", "style")}
            add(
                Finding(
                    "render", exc.message, exc.template, exc.line, profile=pid,
                    customer=customer.get("customer_id"), **where,
                )
            )  # fmt: skip

    for customer, scores in zip(SAMPLE_CUSTOMERS, SAMPLE_SCORES, strict=True):
        for channel in CHANNELS:
            for moment in MOMENTS:
                attempt(customer, None, scores, channel=channel, moment=moment)
                for profile in renderer.profiles:
                    attempt(customer, profile, scores, channel=channel, moment=moment)
    first = renderer.profiles.profiles[0]
    for style in renderer.styles.base_characters:
        for channel in CHANNELS:
            attempt(SAMPLE_CUSTOMERS[0], first, SAMPLE_SCORES[0], channel=channel, style=style)
