"""The persona grid: declared customer fields and the tags scored over them (``grid.yaml``).

The grid is data. This module defines its schema (frozen pydantic models), loads it with
file/key/line errors, and checks the cross-references a schema cannot: every field a tag
reads exists and is known before the call, category values are declared, codes are unique.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from scripts_engine._yaml import KeyPath, dotted, line_of, load_yaml, validate
from scripts_engine.errors import CatalogError

FieldType = Literal["int", "float", "category", "bool", "string", "date", "timezone", "phone"]
TagKind = Literal["quantitative", "qualitative", "propensity"]
NUMERIC_TYPES = ("int", "float")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class FieldSpec(_Frozen):
    """One customer field: its type, allowed values or range, and whether it is post-call."""

    type: FieldType
    values: tuple[str, ...] | None = Field(default=None, description="Allowed categories.")
    min: float | None = None
    max: float | None = None
    unit: str | None = None
    pattern: str | None = Field(default=None, description="Regular expression for strings.")
    max_length: int | None = Field(default=None, ge=1, description="Longest string accepted.")
    required: bool = Field(default=False, description="A row without it is rejected.")
    post_call: bool = Field(default=False, description="Known only after the call.")
    outcome: bool = Field(default=False, description="The outcome a propensity model learns.")
    label_zh: str
    label_en: str
    description: str | None = None

    @model_validator(mode="after")
    def _check(self) -> FieldSpec:
        if self.type == "category" and not self.values:
            raise ValueError("a category field needs a non-empty 'values' list")
        if self.values is not None and self.type != "category":
            raise ValueError("'values' is only for category fields")
        if self.values is not None and len(set(self.values)) != len(self.values):
            raise ValueError("'values' has duplicates")
        if (self.min is not None or self.max is not None) and self.type not in NUMERIC_TYPES:
            raise ValueError("'min'/'max' are only for int and float fields")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"'pattern' is not a valid regular expression: {exc}") from None
        return self

    @property
    def numeric(self) -> bool:
        return self.type in NUMERIC_TYPES


class Condition(_Frozen):
    """A test on one field: membership for categories, bounds for numbers (all must hold)."""

    field: str
    in_: tuple[str, ...] | None = Field(default=None, alias="in")
    not_in: tuple[str, ...] | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    @model_validator(mode="after")
    def _check(self) -> Condition:
        if all(v is None for v in (self.in_, self.not_in, self.ge, self.gt, self.le, self.lt)):
            raise ValueError("a condition needs one of: in, not_in, ge, gt, le, lt")
        return self

    @property
    def categorical(self) -> bool:
        return self.in_ is not None or self.not_in is not None

    @property
    def bounded(self) -> bool:
        return any(v is not None for v in (self.ge, self.gt, self.le, self.lt))


class Rule(_Frozen):
    """A qualitative rule: when ``all`` (or ``any``) of its conditions hold, the tag scores ``score``."""

    score: float = Field(ge=0.0, le=1.0)
    all_: tuple[Condition, ...] | None = Field(default=None, alias="all")
    any_: tuple[Condition, ...] | None = Field(default=None, alias="any")

    @model_validator(mode="after")
    def _check(self) -> Rule:
        if (self.all_ is None) == (self.any_ is None):
            raise ValueError("a rule needs exactly one of 'all' or 'any'")
        if not (self.all_ or self.any_):
            raise ValueError("a rule needs at least one condition")
        return self

    @property
    def conditions(self) -> tuple[Condition, ...]:
        return self.all_ or self.any_ or ()


class TagSpec(_Frozen):
    """One tag of the grid."""

    code: str = Field(pattern=r"^[A-Z]$", description="One capital letter, used in profile ids.")
    kind: TagKind
    label_zh: str
    label_en: str
    description: str = Field(description="What the tag means and how it is scored, in English.")
    description_zh: str | None = Field(
        default=None, description="The same in Chinese (optional: grids without it show the "
        "English description in both languages)."
    )  # fmt: skip
    threshold: float = Field(gt=0.0, le=1.0, description="A score at or above it is a hit.")
    # quantitative
    field: str | None = None
    low: float | None = None
    high: float | None = None
    scale: Literal["linear", "log"] = "linear"
    # qualitative
    rules: tuple[Rule, ...] | None = None
    # propensity
    inputs: tuple[str, ...] | None = None
    target: str | None = None
    positive: str | None = None

    @model_validator(mode="after")
    def _check(self) -> TagSpec:
        need: dict[TagKind, tuple[str, ...]] = {
            "quantitative": ("field", "low", "high"),
            "qualitative": ("rules",),
            "propensity": ("inputs", "target", "positive"),
        }
        allowed = {
            "quantitative": {"field", "low", "high", "scale"},
            "qualitative": {"rules"},
            "propensity": {"inputs", "target", "positive"},
        }
        for key in need[self.kind]:
            if getattr(self, key) is None:
                raise ValueError(f"a {self.kind} tag needs '{key}'")
        for key in {"field", "low", "high", "rules", "inputs", "target", "positive"}:
            if key not in allowed[self.kind] and getattr(self, key) is not None:
                raise ValueError(f"'{key}' does not apply to a {self.kind} tag")
        if self.kind == "quantitative" and self.low == self.high:
            raise ValueError("'low' and 'high' must differ")
        if self.scale == "log" and self.kind == "quantitative":
            if min(self.low or 0.0, self.high or 0.0) < 0:
                raise ValueError("a log scale needs non-negative 'low' and 'high'")
        return self

    def label(self, lang: str) -> str:
        """The tag's name in ``lang`` (``zh-CN`` or ``zh``: Chinese; anything else: English)."""
        return self.label_zh if lang.lower().startswith("zh") else self.label_en

    def describe(self, lang: str) -> str:
        """The description in ``lang``; the English one when the grid has no Chinese one."""
        if lang.lower().startswith("zh") and self.description_zh:
            return self.description_zh
        return self.description

    @property
    def input_fields(self) -> tuple[str, ...]:
        """The customer fields this tag reads."""
        if self.kind == "quantitative":
            return (self.field,) if self.field else ()
        if self.kind == "propensity":
            return self.inputs or ()
        seen: dict[str, None] = {}
        for rule in self.rules or ():
            for cond in rule.conditions:
                seen[cond.field] = None
        return tuple(seen)


class Grid(_Frozen):
    """The whole grid file."""

    version: int = 1
    profile_size: int = Field(default=5, ge=1, description="Tags per combined profile.")
    fields: dict[str, FieldSpec]
    contact_fields: dict[str, FieldSpec] = Field(default_factory=dict)
    tags: dict[str, TagSpec]

    @cached_property
    def tag_names(self) -> tuple[str, ...]:
        return tuple(self.tags)

    @cached_property
    def thresholds(self) -> tuple[float, ...]:
        return tuple(t.threshold for t in self.tags.values())

    @cached_property
    def scoring_fields(self) -> tuple[str, ...]:
        """Fields usable as scoring inputs (declared, not post-call)."""
        return tuple(n for n, f in self.fields.items() if not f.post_call)

    @cached_property
    def outcome_fields(self) -> tuple[str, ...]:
        return tuple(n for n, f in self.fields.items() if f.outcome)

    @cached_property
    def digest(self) -> str:
        """A content hash of the grid, so a saved model can tell whether it still fits."""
        blob = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def tag_index(self, name: str) -> int:
        return self.tag_names.index(name)


def _check_references(grid: Grid, path: Path, lines: dict[KeyPath, int]) -> None:
    def fail(msg: str, where: KeyPath) -> None:
        raise CatalogError(msg, path=str(path), key=dotted(where), line=line_of(lines, where))

    n = len(grid.tags)
    if n < grid.profile_size:
        fail(f"{n} tags cannot make profiles of {grid.profile_size}", ("tags",))
    if math.comb(n, grid.profile_size) > 10_000:
        fail(f"C({n},{grid.profile_size}) profiles is too many to write scripts for", ("tags",))
    overlap = set(grid.fields) & set(grid.contact_fields)
    if overlap:
        fail(
            f"declared both as a scoring and a contact field: {sorted(overlap)}",
            ("contact_fields",),
        )
    codes: dict[str, str] = {}
    for name, tag in grid.tags.items():
        where: KeyPath = ("tags", name)
        if tag.code in codes:
            fail(f"code '{tag.code}' is already used by tag '{codes[tag.code]}'", (*where, "code"))
        codes[tag.code] = name
        if tag.kind == "quantitative":
            _check_field(grid, tag.field or "", (*where, "field"), fail, numeric=True)
        elif tag.kind == "propensity":
            for i, fname in enumerate(tag.inputs or ()):
                _check_field(grid, fname, (*where, "inputs", i), fail, numeric=None)
            target = grid.fields.get(tag.target or "")
            if target is None or not target.outcome:
                fail(f"target '{tag.target}' is not a declared outcome field", (*where, "target"))
            elif target.values is not None and tag.positive not in target.values:
                fail(
                    f"positive '{tag.positive}' is not one of {list(target.values)}",
                    (*where, "positive"),
                )
        else:
            for r, rule in enumerate(tag.rules or ()):
                group = "all" if rule.all_ is not None else "any"
                for c, cond in enumerate(rule.conditions):
                    cwhere: KeyPath = (*where, "rules", r, group, c)
                    spec = _check_field(grid, cond.field, (*cwhere, "field"), fail, numeric=None)
                    if cond.categorical and spec.type != "category":
                        fail(
                            f"'in'/'not_in' need a category field; '{cond.field}' is {spec.type}",
                            cwhere,
                        )
                    if cond.bounded and not spec.numeric:
                        fail(f"bounds need a numeric field; '{cond.field}' is {spec.type}", cwhere)
                    for value in (cond.in_ or ()) + (cond.not_in or ()):
                        if spec.values is not None and value not in spec.values:
                            fail(
                                f"'{value}' is not a value of '{cond.field}' {list(spec.values)}",
                                cwhere,
                            )


def _check_field(
    grid: Grid, name: str, where: KeyPath, fail: Any, *, numeric: bool | None
) -> FieldSpec:
    spec = grid.fields.get(name)
    if spec is None:
        if name in grid.contact_fields:
            fail(f"'{name}' is a contact field and cannot be a scoring input", where)
        fail(f"unknown field '{name}' (declared: {', '.join(grid.fields)})", where)
    assert spec is not None
    if spec.post_call:
        fail(
            f"'{name}' is known only after the call (post_call) and cannot be a scoring input",
            where,
        )
    if numeric and not spec.numeric:
        fail(f"'{name}' is {spec.type}; a quantitative tag needs a numeric field", where)
    return spec


def load_grid(path: Path) -> Grid:
    """Load and validate ``grid.yaml``.

    Raises:
        CatalogError: naming the file, key and line of the first problem.
    """
    data, lines = load_yaml(path)
    grid = validate(Grid, data, path=path, lines=lines)
    _check_references(grid, path, lines)
    return grid
