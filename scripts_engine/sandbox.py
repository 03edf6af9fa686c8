"""The locked-down Jinja2 environment script templates run in.

Script writers edit templates, and a stolen writer account must not reach the server, so a
template is treated as untrusted code (COMPLIANCE.md 1.2). Three layers:

1. **A small dialect, checked on load** (:func:`check_policy`): no macros, imports, includes,
   ``{% set %}`` of computed values, method calls or underscore names; ``range()`` is the only
   callable; loops nest at most two deep. A template outside the dialect never compiles.
2. **Jinja's** ``ImmutableSandboxedEnvironment`` **with** ``StrictUndefined``: a missing
   variable is an error, never a blank. Attribute access is narrowed further: context values
   are plain dicts, lists, strings and numbers, and ``x.y`` only ever reads a dict key (so
   ``customer.items`` cannot print a bound method).
3. **Work limits per render** (:class:`Limits`): output characters, loop steps, a wall-clock
   deadline, ``range()`` length, and the size of ``*``, ``+`` and ``**`` results. The sandbox
   alone stops none of these bombs.

Filters are an allowlist (see :mod:`scripts_engine.filters`); the environment has no globals
but ``range`` (no ``lipsum``, ``cycler``, ``joiner``, ``namespace``, ``dict``).
"""

from __future__ import annotations

import operator
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, nodes
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from scripts_engine.errors import TemplateLimitExceeded
from scripts_engine.filters import FILTERS, TESTS


@dataclass(frozen=True)
class Limits:
    """How much work one render may do. Defaults suit call scripts of a few hundred characters."""

    max_template_chars: int = 20_000  #: refuse larger template sources on load
    max_output_chars: int = 4_000  #: per template render
    max_script_chars: int = 20_000  #: all segments of one script together
    max_range: int = 1_000  #: the longest ``range()`` a template may build
    max_steps: int = 20_000  #: loop iterations and intercepted operations per render
    max_seconds: float = 0.5  #: wall-clock deadline per script
    max_value_chars: int = 2_000  #: the longest string or list ``*``/``+`` may produce
    max_power_bits: int = 256  #: the largest integer ``**`` may produce, in bits
    max_loop_depth: int = 2  #: nested ``{% for %}`` levels


class _Budget(threading.local):
    """Per-thread work meter of the render in progress (renders do not nest)."""

    steps: int = 0
    deadline: float = float("inf")
    limits: Limits = Limits()


_budget = _Budget()


def start_budget(limits: Limits) -> None:
    """Arm the work meter for one script (all its segments share the deadline)."""
    _budget.limits = limits
    _budget.steps = limits.max_steps
    _budget.deadline = time.perf_counter() + limits.max_seconds


def reset_steps() -> None:
    """Give the next template render a fresh step allowance (the deadline stays)."""
    _budget.steps = _budget.limits.max_steps


def charge(n: int = 1) -> None:
    """Spend ``n`` steps; raise once the allowance or the deadline is used up."""
    _budget.steps -= n
    if _budget.steps < 0:
        raise TemplateLimitExceeded(
            f"the template did more than {_budget.limits.max_steps} loop steps or operations"
        )
    if _budget.steps % 256 == 0 and time.perf_counter() > _budget.deadline:
        raise TemplateLimitExceeded(f"rendering took longer than {_budget.limits.max_seconds} s")


def _metered(n: int) -> Iterator[int]:
    for i in range(n):
        charge()
        yield i


class _MeteredRange:
    """What ``range()`` returns in a template: capped, and every iteration is charged."""

    __slots__ = ("_n",)

    def __init__(self, n: int):
        self._n = n

    def __iter__(self) -> Iterator[int]:
        return _metered(self._n)

    def __len__(self) -> int:
        return self._n


def safe_range(*args: int) -> _MeteredRange:
    """``range(stop)`` / ``range(start, stop[, step])`` capped at ``Limits.max_range`` items."""
    if not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
        raise SecurityError("range() takes whole numbers only")
    n = len(range(*args))
    if n > _budget.limits.max_range:
        raise TemplateLimitExceeded(
            f"range() of {n} items is above the limit of {_budget.limits.max_range}"
        )
    return _MeteredRange(n)


_LOOP_ATTRS = frozenset(
    {"index", "index0", "revindex", "revindex0", "first", "last", "length", "previtem", "nextitem"}
)
_BINOPS = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "%": operator.mod,
    "**": operator.pow,
}


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple) else 0


class ScriptSandbox(ImmutableSandboxedEnvironment):
    """The environment every script template is compiled and rendered in."""

    #: operators routed through :meth:`call_binop`, so their result size can be capped
    intercepted_binops = frozenset({"*", "**", "+"})

    def __init__(self, limits: Limits | None = None, **options: Any):
        super().__init__(
            undefined=StrictUndefined,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            auto_reload=False,
            cache_size=0,
            **options,
        )
        self.limits = limits or Limits()
        self.filters = dict(FILTERS)
        self.tests = dict(TESTS)
        self.globals = {"range": safe_range}

    # -- operators -------------------------------------------------------------------------
    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """Cap what ``*``, ``+`` and ``**`` may build before building it."""
        charge()
        lim = self.limits
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    if len(seq) * max(times, 0) > lim.max_value_chars:
                        raise TemplateLimitExceeded(
                            f"'*' would build a value longer than {lim.max_value_chars}"
                        )
        elif operator == "+":
            if _size(left) + _size(right) > lim.max_value_chars:
                raise TemplateLimitExceeded(
                    f"'+' would build a value longer than {lim.max_value_chars}"
                )
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int):
                if (
                    right > 0
                    and abs(left) > 1
                    and abs(left).bit_length() * right > lim.max_power_bits
                ):
                    raise TemplateLimitExceeded(
                        f"'**' would build a number above {lim.max_power_bits} bits"
                    )
            elif isinstance(right, int | float) and abs(right) > lim.max_power_bits:
                raise TemplateLimitExceeded("'**' exponent is too large")
        return _BINOPS[operator](left, right)

    # -- attribute and item access: dict keys, sequence indexes, loop info; nothing else -----
    def getattr(self, obj: Any, attribute: str) -> Any:
        """``x.y``: a dict key, or a ``loop`` attribute. Never a Python attribute."""
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        if isinstance(obj, LoopContext) and attribute in _LOOP_ATTRS:
            return getattr(obj, attribute)
        if isinstance(obj, StrictUndefined):
            return obj
        raise SecurityError(
            f"attribute '{attribute}' of a {type(obj).__name__} value is not available to templates"
        )

    def getitem(self, obj: Any, argument: Any) -> Any:
        """``x[k]``: a dict key or a sequence index/slice."""
        if type(obj) is dict:
            if isinstance(argument, str) and argument in obj:
                return obj[argument]
            return self.undefined(obj=obj, name=argument)
        if isinstance(obj, list | tuple | str) and isinstance(argument, int | slice):
            try:
                return obj[argument]
            except IndexError:
                return self.undefined(obj=obj, name=str(argument))
        if isinstance(obj, StrictUndefined):
            return obj
        raise SecurityError(f"a {type(obj).__name__} value cannot be indexed in a template")

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        """Only ``range()`` may be called from a template."""
        if __obj is not safe_range:
            raise SecurityError("templates may not call functions or methods (only range())")
        # Jinja passes the loop's/block's local names along with calls made inside them
        kwargs.pop("_loop_vars", None)
        kwargs.pop("_block_vars", None)
        if kwargs:
            raise SecurityError("range() takes no keyword arguments")
        return safe_range(*args)


# -- the template dialect ----------------------------------------------------------------------
_ALLOWED = (
    nodes.Template, nodes.Output, nodes.TemplateData, nodes.Const, nodes.Name, nodes.Getattr,
    nodes.Getitem, nodes.Filter, nodes.Test, nodes.If, nodes.CondExpr, nodes.Compare,
    nodes.Operand, nodes.And, nodes.Or, nodes.Not, nodes.Neg, nodes.Pos, nodes.Concat,
    nodes.BinExpr, nodes.For, nodes.Assign, nodes.With, nodes.Call, nodes.Keyword, nodes.List,
    nodes.Tuple, nodes.Slice,
)  # fmt: skip
#: Jinja's special names: template references and macro internals
_RESERVED = frozenset({"self", "caller", "varargs", "kwargs", "super"})
_REFUSED_HINT = {
    nodes.Macro: "macros are not allowed",
    nodes.CallBlock: "call blocks are not allowed",
    nodes.Include: "include is not allowed: the engine composes stages itself",
    nodes.Import: "import is not allowed",
    nodes.FromImport: "import is not allowed",
    nodes.Extends: "extends is not allowed: put an override file at the same path instead",
    nodes.Block: "blocks are not allowed",
    nodes.FilterBlock: "filter blocks are not allowed",
    nodes.AssignBlock: "block assignments are not allowed",
    nodes.Dict: "dict literals are not allowed",
}


@dataclass(frozen=True)
class PolicyViolation:
    """A construct outside the script-template dialect, at a template line."""

    line: int
    message: str


def check_policy(tree: nodes.Template, limits: Limits | None = None) -> list[PolicyViolation]:
    """Every construct of a parsed template that the dialect does not allow."""
    limits = limits or Limits()
    found: list[PolicyViolation] = []

    def bad(node: nodes.Node, message: str) -> None:
        found.append(PolicyViolation(getattr(node, "lineno", 0) or 0, message))

    def walk(node: nodes.Node, depth: int, in_assign: bool) -> None:
        if not isinstance(node, _ALLOWED):
            bad(node, _REFUSED_HINT.get(type(node), f"'{type(node).__name__}' is not allowed"))
            return
        if isinstance(node, nodes.Name | nodes.Getattr):
            name = node.name if isinstance(node, nodes.Name) else node.attr
            if name.startswith("_"):
                bad(node, f"names starting with '_' are not allowed ('{name}')")
            elif isinstance(node, nodes.Name) and name in _RESERVED:
                bad(node, f"'{name}' is reserved and not available to templates")
        if isinstance(node, nodes.Getitem) and not isinstance(
            node.arg, nodes.Const | nodes.Name | nodes.Slice
        ):
            bad(node, "only constant or variable subscripts are allowed")
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            if isinstance(node.arg.value, str) and node.arg.value.startswith("_"):
                bad(node, f"names starting with '_' are not allowed ('{node.arg.value}')")
        if isinstance(node, nodes.Call):
            if not (isinstance(node.node, nodes.Name) and node.node.name == "range"):
                bad(node, "only range() may be called; use filters for formatting")
            if node.dyn_args is not None or node.dyn_kwargs is not None:
                bad(node, "*args and **kwargs are not allowed")
        if in_assign and isinstance(node, nodes.Concat | nodes.BinExpr | nodes.Call):
            bad(node, "{% set %} may only name a value, not compute one (no ~, +, *, calls)")
        if isinstance(node, nodes.For):
            if node.recursive:
                bad(node, "recursive loops are not allowed")
            if depth + 1 > limits.max_loop_depth:
                bad(node, f"loops may nest at most {limits.max_loop_depth} deep")
        for child in node.iter_child_nodes():
            in_body = isinstance(node, nodes.For) and any(child is b for b in node.body)
            child_depth = depth + 1 if in_body else depth
            walk(child, child_depth, in_assign or isinstance(node, nodes.Assign))

    walk(tree, 0, False)
    return found
