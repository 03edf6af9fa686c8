"""Segment assembly: which templates a script renders, in what order, rendered and memoised.

A call is ``opening`` + ``moment`` + ``value`` (five blocks, or the generic one) +
``disclosure, close, signoff, objections``; WeChat is up to three messages; SMS one. Each
``+`` separates a *group*: templates rendered and memoised together. Each template resolves
by the lookup order of :meth:`~scripts_engine.templates.TemplatePack.resolve` once per
(group, profile, lead): that is the group's *plan* (the value group's holds its templates in
tag-name order and serves every speaking order). A script's plans are found once per
(channel, profile, lead, close, moment).

Memoisation: a template of the dialect cannot bind names or call anything but ``range()``,
so its output is a pure function of the context paths it reads
(:func:`~scripts_engine.templates.dependencies`). A plan compiles those paths into one key
function (``operator.itemgetter`` per context object), and a group's segments are memoised,
with their content facts, on (plan, values read); the templates of a group of several also
one by one. Value blocks are memoised block by block, on the values read and the ``block``
fields the template reads: a whole value group (one speaking order and hit pattern of
thousands) is not kept, because every kept object is walked by each full pass of Python's
cyclic garbage collector, which cost a cold run more than the memo saved. A template that
binds names, or a value that cannot be a key (a list), is rendered every time. Memoised or
not, every script is checked: a segment's facts are found once per text (and kept with its
group), the script-level rules (disclosures, the opening's order, lengths) run on each.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from jinja2.exceptions import SecurityError, TemplateError, UndefinedError

from scripts_engine.compliance import ContentRules, GroupFacts
from scripts_engine.context import OBJECTIONS, WECHAT_MESSAGES
from scripts_engine.errors import ScriptRenderError, TemplateLimitExceeded
from scripts_engine.sandbox import Limits, reset_steps
from scripts_engine.script import Segment
from scripts_engine.templates import PackTemplate, TemplatePack

#: a memo entry that is not there (``None`` is a segment that rendered empty)
_MISSING: Any = object()
_LINES = re.compile(r"[ \t]*\n[ \t]*")
_OBJ_REPR = re.compile(r"<[^<>]*>")
#: (stage, key, stage path) of each template of a group
Item = tuple[str, str, str]
KeyFn = Callable[[Mapping[str, Any]], tuple[Any, ...] | None]
#: a rendered group as it is memoised: its content facts, then its segments (one object, not
#: a pair: every object a memo keeps is walked by each full pass of the garbage collector)
GroupEntry = tuple[Any, ...]
_CALL_TAIL: tuple[Item, ...] = (
    ("disclosure", "disclosure", "call/disclosure"),
    ("signoff", "signoff", "call/signoff"),
    *(("objection", o, f"call/objection/{o}") for o in OBJECTIONS),
)
_WECHAT: tuple[Item, ...] = tuple(("wechat", n, f"chat/wechat/{n}") for n in WECHAT_MESSAGES)
_SMS: tuple[Item, ...] = (("sms", "sms", "chat/sms"),)


def _items(group: str, variant: Any) -> tuple[Item, ...]:
    """The (stage, key, stage path) of each template of a group, in order."""
    if group == "opening":
        return (("opening", "opening", "call/opening"),)
    if group == "moment":
        return (("moment", variant, f"call/moment/{variant}"),)
    if group == "value":
        if variant is None:
            return (("value", "generic", "call/value"),)
        return tuple(("value", t, f"call/value/{t}") for t in variant)
    if group == "tail":
        return (_CALL_TAIL[0], ("close", variant, f"call/close/{variant}"), *_CALL_TAIL[1:])
    return _WECHAT if group == "wechat" else _SMS


def key_function(deps: Sequence[tuple[str, ...]] | None) -> KeyFn | None:
    """A function giving the values at ``deps`` as one hashable key (``None``: not memoisable).

    The key is ``None`` for a context without one of the paths, or with a list at one: the
    real render then runs, and raises its clear error if a path is missing.
    """
    if deps is None:
        return None
    fields: dict[str, list[str]] = {}
    deep: list[tuple[str, ...]] = []
    for path in deps:
        if len(path) == 2:
            fields.setdefault(path[0], []).append(path[1])
        else:
            deep.append(path)
    getters = tuple((top, itemgetter(*names)) for top, names in sorted(fields.items()))

    def key(variables: Mapping[str, Any]) -> tuple[Any, ...] | None:
        try:
            out = tuple([get(variables[top]) for top, get in getters])
            for path in deep:
                value: Any = variables
                for part in path:
                    value = value[part]
                out += (value,)
            hash(out)
        except (KeyError, TypeError, IndexError):
            return None
        return out

    return key


class _Plan:
    """A group's resolved templates and the key functions of what they read.

    ``key`` reads everything the group's templates read but ``block``; ``template_keys``
    what each template reads; ``block_keys`` the ``block`` fields each template reads.
    """

    __slots__ = (
        "ident", "items", "templates", "key", "template_keys", "block_keys", "blocks", "index",
    )  # fmt: skip

    def __init__(
        self,
        ident: int,
        items: tuple[Item, ...],
        templates: tuple[PackTemplate, ...],
        key: KeyFn | None,
        template_keys: tuple[KeyFn | None, ...],
        block_keys: tuple[Callable[[Mapping[str, Any]], Any], ...],
        blocks: bool,
    ):
        #: the same for every plan with the same items and template versions (profiles
        #: without overrides share their groups' memo entries)
        self.ident = ident
        self.items = items
        self.templates = templates
        self.key = key
        self.template_keys = template_keys
        self.block_keys = block_keys
        #: whether each template gets its own value block (``block``)
        self.blocks = blocks
        #: the position of each item by its key (a value block's tag)
        self.index = {item[1]: n for n, item in enumerate(items)}


def _block_fields(tpl: PackTemplate) -> Callable[[Mapping[str, Any]], Any]:
    """The getter of the ``block`` values a template reads (all of them when it reads
    ``block`` otherwise than as ``block.field``, e.g. ``block['next']``)."""
    paths = [p for p in (tpl.deps or ()) if p[0] == "block"]
    if any(len(p) != 2 for p in paths):
        return lambda block: tuple(block.items())
    if not paths:
        return lambda block: None
    return itemgetter(*sorted({p[1] for p in paths}))


def shared_deps(templates: Sequence[PackTemplate]) -> tuple[tuple[str, ...], ...] | None:
    """What a group of templates reads, ``block`` left out (its values come with the order)."""
    if any(t.deps is None for t in templates):
        return None
    return tuple(sorted({p for t in templates for p in (t.deps or ()) if p[0] != "block"}))


class SegmentAssembly:
    """The part of :class:`~scripts_engine.render.Renderer` that renders segments.

    It uses the renderer's loaded ``pack`` and ``rules``, ``limits``, and the caches
    ``_plans`` and ``_memo`` that every (re)load empties.
    """

    pack: TemplatePack
    rules: ContentRules
    limits: Limits
    memoize: bool
    memo_size: int
    _memo: dict[Any, Any]
    _plans: dict[Any, Any]

    def _segments(
        self,
        channel: str,
        base: dict[str, Any],
        tags: tuple[str, ...],
        hits: tuple[bool, ...],
        pid: str | None,
        close: str,
        moment: str,
        blocks: list[dict[str, Any]] | None,
    ) -> tuple[list[Segment], list[GroupFacts]]:
        """The script's segments in order, and the content facts of each group of them."""
        lead = tags[0] if tags else None
        sig = (channel, pid, lead, close, moment, blocks is None)
        plans: tuple[_Plan, ...] | None = self._plans.get(sig)
        if plans is None:
            plans = self._plans[sig] = self._script_plans(sig, tags)
        segments: list[Segment] = []
        parts: list[GroupFacts] = []
        for plan in plans:
            if plan.blocks and blocks is not None:
                entry = self._value_group(plan, base, tags, blocks)
            else:
                entry = self._group(plan, base)
            parts.append(entry[0])
            segments += entry[1:]
        return segments, parts

    def _script_plans(self, sig: tuple[Any, ...], tags: tuple[str, ...]) -> tuple[_Plan, ...]:
        """The plans of a script's groups, for ``sig`` as :meth:`_segments` builds it.

        The value group's plan holds the blocks' templates in tag-name order: one plan, and
        one group key function, serves every speaking order of the same tags.
        """
        channel, pid, lead, close, moment, no_blocks = sig
        if channel == "sms":
            return (self._plan(("sms", None, pid, lead)),)
        if channel == "wechat":
            return (self._plan(("wechat", None, pid, lead)),)
        # the opening (it names the customer) and the moment (dates) change with different
        # customers: two groups, so that each is memoised on its own values
        value = (
            ("value", None, pid, lead) if no_blocks else ("value", tuple(sorted(tags)), pid, lead)
        )
        return (
            self._plan(("opening", None, pid, lead)),
            self._plan(("moment", moment, pid, lead)),
            self._plan(value, blocks=not no_blocks),
            self._plan(("tail", close, pid, lead)),
        )

    def _plan(self, sig: tuple[Any, ...], *, blocks: bool = False) -> _Plan:
        """The plan of a group ``sig``: (group, variant, profile id, lead tag); ``blocks``:
        its templates get one value block each."""
        plan: _Plan | None = self._plans.get((*sig, blocks))
        if plan is None:
            items = _items(sig[0], sig[1])
            pid, lead = sig[2], sig[3]
            tpls = tuple(self._resolve(i[2], pid, lead) for i in items)
            # the same templates in another order (value blocks) share one group key
            versions = frozenset(t.version for t in tpls)
            shared = self._plans.get(("shared", versions))
            if shared is None:
                shared = self._plans[("shared", versions)] = self._key_function(shared_deps(tpls))
            per_template = [self._per_template(t) for t in tpls]
            same = ("ident", items, tuple(t.version for t in tpls))
            ident = self._plans.get(same)
            if ident is None:
                ident = self._plans[same] = len(self._plans)
            plan = self._plans[(*sig, blocks)] = _Plan(
                ident,
                items,
                tpls,
                shared,
                # a group of one template is memoised as a group only
                tuple(p[0] for p in per_template) if len(tpls) > 1 else (None,),
                tuple(p[1] for p in per_template),
                blocks,
            )
        return plan

    def _per_template(
        self, tpl: PackTemplate
    ) -> tuple[KeyFn | None, Callable[[Mapping[str, Any]], Any]]:
        """A template's key function and the getter of the ``block`` fields it reads."""
        slot = ("template", tpl.version)
        found = self._plans.get(slot)
        if found is None:
            found = self._plans[slot] = (self._key_function(tpl.deps), _block_fields(tpl))
        return found

    def _resolve(self, path: str, pid: str | None, lead: str | None) -> PackTemplate:
        sig = ("resolve", path, pid, lead)
        found: PackTemplate | None = self._plans.get(sig)
        if found is None:
            found = self._plans[sig] = self.pack.resolve(path, profile_id=pid, lead=lead)
        return found

    def _key_function(self, deps: tuple[tuple[str, ...], ...] | None) -> KeyFn | None:
        """One key function per distinct set of paths (value groups share theirs)."""
        if deps is None:
            return None
        sig = ("key", deps)
        if sig not in self._plans:
            self._plans[sig] = key_function(deps)
        fn: KeyFn | None = self._plans[sig]
        return fn

    def _group(self, plan: _Plan, base: dict[str, Any]) -> GroupEntry:
        """Render templates that see the same variables: the content facts and the segments.

        Memoised on the plan and the values its templates read.
        """
        key = None
        if plan.key is not None and self.memoize:
            values = plan.key(base)
            if values is not None:
                key = (plan.ident, values)
                found: GroupEntry | None = self._memo.get(key)
                if found is not None:
                    return found
        out = []
        for n, item in enumerate(plan.items):
            seg = self._segment(item, plan.templates[n], plan.template_keys[n], base)
            if seg is not None:
                out.append(seg)
        return self._keep_group(key, out)

    def _value_group(
        self,
        plan: _Plan,
        base: dict[str, Any],
        tags: tuple[str, ...],
        blocks: list[dict[str, Any]],
    ) -> GroupEntry:
        """The value blocks in speaking order (``tags``), each template with its ``block``.

        Each block is memoised on the values its template reads but ``block`` and the
        ``block`` fields it reads. The group is not: a speaking order with its hit pattern
        is one of thousands, and keeping each would cost more than it saves.
        """
        values = plan.key(base) if plan.key is not None and self.memoize else None
        out = []
        for block, tag in zip(blocks, tags, strict=True):
            n = plan.index[tag]
            item, tpl = plan.items[n], plan.templates[n]
            if values is not None:
                # a block's text is a function of the group's values and its block fields
                sub = (tpl.version, item, values, plan.block_keys[n](block))
                seg = self._memo.get(sub, _MISSING)
                if seg is _MISSING:
                    seg = self._segment(item, tpl, None, {**base, "block": block})
                    self._memorise(sub, seg)
            else:
                seg = self._segment(item, tpl, None, {**base, "block": block})
            if seg is not None:
                out.append(seg)
        return (self.rules.facts(out), *out)

    def _keep_group(self, key: tuple[Any, ...] | None, group: list[Segment]) -> GroupEntry:
        """A rendered group's entry, memoised under ``key`` (if any)."""
        result = (self.rules.facts(group), *group)
        if key is not None:
            self._memorise(key, result)
        return result

    def _memorise(self, key: tuple[Any, ...], value: Any) -> None:
        """Keep ``value`` under ``key`` (the memo is emptied when it is full)."""
        if len(self._memo) >= self.memo_size:
            self._memo.clear()
        self._memo[key] = value

    def _segment(
        self, item: Item, tpl: PackTemplate, key_fn: KeyFn | None, variables: dict[str, Any]
    ) -> Segment | None:
        """One template's segment (``None`` when it renders empty), memoised on what it reads."""
        key = None
        if key_fn is not None and self.memoize:
            values = key_fn(variables)
            if values is not None:
                key = (tpl.version, item, values)
                found: Segment | None = self._memo.get(key, _MISSING)
                if found is not _MISSING:
                    return found
        text = self._render_now(tpl, variables)
        seg = Segment(item[0], item[1], text, tpl.name, tpl.version) if text else None
        if key is not None:
            self._memorise(key, seg)
        return seg

    def _render_now(self, tpl: PackTemplate, variables: dict[str, Any]) -> str:
        """Render one template now, under the output cap and a fresh step allowance."""
        reset_steps()
        try:
            ctx = tpl.template.new_context(variables, shared=True)
            parts, n, cap = [], 0, self.limits.max_output_chars
            for chunk in tpl.template.root_render_func(ctx):
                n += len(chunk)
                if n > cap:
                    raise TemplateLimitExceeded(f"output is longer than {cap} characters")
                parts.append(chunk)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one clear error
            raise _wrap(exc, tpl) from None
        return _LINES.sub("", "".join(parts)).strip()


def _wrap(exc: BaseException, tpl: PackTemplate) -> ScriptRenderError:
    """One clear error for any failure of a render: what, in which template, at which line."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == str(tpl.path):
            line = tpl.template.get_corresponding_lineno(tb.tb_lineno)
        tb = tb.tb_next
    if isinstance(exc, TemplateLimitExceeded):
        return TemplateLimitExceeded(exc.message, template=tpl.name, line=line)
    if isinstance(exc, SecurityError):
        msg = f"refused by the sandbox: {exc}"
    elif isinstance(exc, UndefinedError):
        msg = f"missing variable: {exc}"
    elif isinstance(exc, TemplateError | ScriptRenderError):
        msg = str(exc)
    elif isinstance(exc, RecursionError | MemoryError | OverflowError):
        return TemplateLimitExceeded(
            f"render bomb stopped ({type(exc).__name__})", template=tpl.name, line=line
        )
    else:
        msg = f"{type(exc).__name__}: {exc}"
    return ScriptRenderError(_OBJ_REPR.sub("<...>", msg)[:300], template=tpl.name, line=line)
