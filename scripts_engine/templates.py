"""The template pack: every ``.j2`` file under ``personas/templates``, compiled once.

A template's name is its path inside the pack without ``.j2`` (``call/opening``), derived by
the engine from the file tree: a name never comes from a request (CVE-2024-56201). Each
template is parsed, checked against the dialect (:func:`scripts_engine.sandbox.check_policy`)
and compiled in the sandbox; its version is the SHA-256 of its source, so a rendered segment
names exactly the text that made it.

Lookup order for a stage template ``S`` (DESIGN.md): a profile's own override
``profiles/<id>/S``, then the lead tag's variant ``tags/<tag>/S``, then the base ``S``.
Generic scripts look up ``generic/S``, then ``S``, never persona variants.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from jinja2 import Template, TemplateSyntaxError, nodes
from jinja2.exceptions import TemplateAssertionError

from scripts_engine.compliance import Finding
from scripts_engine.errors import ScriptRenderError
from scripts_engine.sandbox import ScriptSandbox, check_policy

if TYPE_CHECKING:
    from scripts_engine.styles import Styles

SUFFIX = ".j2"
_NAME = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*$")


@dataclass(frozen=True)
class PackTemplate:
    """One compiled template and where it came from."""

    name: str
    path: Path
    source: str
    version: str
    template: Template = field(repr=False, compare=False)
    #: the context paths the output depends on (``("moment", "kind")``), or ``None`` when the
    #: template binds names of its own (set/for/with) and its output is not memoised
    deps: tuple[tuple[str, ...], ...] | None = None


def dependencies(tree: nodes.Template) -> tuple[tuple[str, ...], ...] | None:
    """The context paths a template reads, when its output is a pure function of them.

    Templates cannot call anything but ``range()`` and the pure filters, so output depends only
    on the values at these paths: the renderer memoises on them. Templates that bind names
    (``set``, ``for``, ``with``) are not analysed and never memoised.
    """
    if any(n.ctx == "store" for n in tree.find_all(nodes.Name)):
        return None
    paths: set[tuple[str, ...]] = set()

    def visit(node: nodes.Node) -> None:
        if isinstance(node, nodes.Getattr | nodes.Name):
            chain: list[str] = []
            cur: nodes.Node = node
            while isinstance(cur, nodes.Getattr):
                chain.append(cur.attr)
                cur = cur.node
            if isinstance(cur, nodes.Name):
                if cur.name not in ("range", "loop"):
                    paths.add((cur.name, *reversed(chain)))
                return
        for child in node.iter_child_nodes():
            visit(child)

    visit(tree)
    return tuple(sorted(paths))


def _files(root: Path) -> Iterator[Path]:
    yield from sorted(p for p in root.rglob(f"*{SUFFIX}") if p.is_file())


def signature(*roots: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when a file of the pack changes: path, mtime, size of every file."""
    out = []
    for root in roots:
        paths = _files(root) if root.is_dir() else ([root] if root.exists() else [])
        for p in paths:
            st = p.stat()
            out.append((str(p), st.st_mtime_ns, st.st_size))
    return tuple(out)


def compile_template(
    env: ScriptSandbox, name: str, source: str, path: Path | None = None
) -> tuple[PackTemplate | None, list[Finding]]:
    """Parse, policy-check and compile one template; the findings say what is wrong where."""
    filename = str(path) if path else f"{name}{SUFFIX}"
    if not _NAME.match(name):
        return None, [Finding("template-name", "use letters, digits, '_' and '-' only", name)]
    if len(source) > env.limits.max_template_chars:
        return None, [
            Finding(
                "template-size",
                f"{len(source)} characters (at most {env.limits.max_template_chars})",
                name,
            )
        ]
    try:
        tree = env.parse(source, name, filename)
    except TemplateSyntaxError as exc:
        return None, [Finding("syntax", exc.message or str(exc), name, exc.lineno)]
    violations = check_policy(tree, env.limits)
    if violations:
        return None, [Finding("dialect", v.message, name, v.line) for v in violations]
    try:
        code = env.compile(tree, name, filename)
        # a plain dict of the sandbox's globals (only ``range``), not Jinja's ChainMap over
        # them: every render copies the globals' keys, and a ChainMap's are slow to list
        template = env.template_class.from_code(env, code, dict(env.make_globals(None)))
    except TemplateAssertionError as exc:  # e.g. an unknown filter
        return None, [Finding("syntax", exc.message or str(exc), name, exc.lineno)]
    version = hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]
    deps = dependencies(tree)
    return PackTemplate(name, path or Path(filename), source, version, template, deps), []


class PackSource(Protocol):
    """Where a renderer gets its templates and styles when not from the personas files."""

    def signature(self) -> Hashable:
        """Changes whenever :meth:`load` would return something else (checked often: cheap)."""

    def load(self, env: ScriptSandbox) -> tuple[TemplatePack, Styles]:
        """The pack and the styles to render with now."""

    def styles_version(self, styles: Styles) -> str | None:
        """The content hash of the ``styles.yaml`` text ``styles`` (from :meth:`load`) was
        parsed from (None if unknown)."""


class TemplatePack:
    """All templates of one pack directory, by name."""

    def __init__(self, root: Path, templates: dict[str, PackTemplate], findings: list[Finding]):
        self.root = root
        self.templates = templates
        #: problems found on load (only non-empty when loaded with ``strict=False``)
        self.findings = findings
        digest = hashlib.sha256()
        for name in sorted(templates):
            digest.update(f"{name}={templates[name].version};".encode())
        #: content hash of the whole pack
        self.version = digest.hexdigest()[:16]

    @classmethod
    def load(cls, root: Path, env: ScriptSandbox, *, strict: bool = True) -> TemplatePack:
        """Compile every ``.j2`` under ``root``.

        Raises:
            ScriptRenderError: (strict) the first broken template, with file and line.
        """
        if not root.is_dir():
            raise ScriptRenderError(f"template folder not found: {root}")
        templates: dict[str, PackTemplate] = {}
        findings: list[Finding] = []
        for path in _files(root):
            name = path.relative_to(root).as_posix()[: -len(SUFFIX)]
            try:
                source = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                findings.append(Finding("unreadable", str(exc), name))
                continue
            compiled, problems = compile_template(env, name, source, path)
            findings += problems
            if compiled is not None:
                templates[name] = compiled
        if strict and findings:
            first = findings[0]
            raise ScriptRenderError(
                f"{first.code}: {first.message}", template=first.template, line=first.line
            )
        return cls(root, templates, findings)

    def __contains__(self, name: str) -> bool:
        return name in self.templates

    def __iter__(self) -> Iterator[PackTemplate]:
        return iter(self.templates.values())

    def resolve(self, stage_path: str, *, profile_id: str | None, lead: str | None) -> PackTemplate:
        """The template for a stage path, by the lookup order (persona when ``profile_id``).

        Raises:
            ScriptRenderError: no template at any level.
        """
        candidates: tuple[str, ...]
        if profile_id is not None:
            candidates = (f"profiles/{profile_id}/{stage_path}", f"tags/{lead}/{stage_path}")
        else:
            candidates = (f"generic/{stage_path}",)
        for name in (*candidates, stage_path):
            found = self.templates.get(name)
            if found is not None:
                return found
        raise ScriptRenderError(f"the pack has no template '{stage_path}{SUFFIX}'")
