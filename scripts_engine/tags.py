"""Tag scores, vectorised: N customers x T tags, each score in [0, 1].

Quantitative tags ramp a numeric field from ``low`` to ``high``; qualitative tags take the
highest score among their matching rules; the propensity tag is a fitted model's probability
(see :mod:`scripts_engine.propensity`). A tag whose inputs a customer lacks is *inferred*
from the customer's other fields by a model fitted at training time (倒推标签), and flagged.

Rules compile once into numpy operations over the batch's columns: category tests become
table look-ups on the int16 codes, numeric tests plain comparisons.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from scripts_engine.features import Batch
from scripts_engine.grid import Condition, Grid, Rule, TagSpec

Scores = npt.NDArray[np.float32]
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class TagScores:
    """Scores, hits and inference flags for a batch, each of shape (N, T)."""

    scores: Scores
    hits: Mask
    inferred: Mask


def _compile_condition(grid: Grid, cond: Condition) -> Callable[[Batch], Mask]:
    spec = grid.fields[cond.field]
    name = cond.field
    if cond.categorical:
        if cond.bounded:
            raise AssertionError("validated by the grid: bounds need a numeric field")
        values = spec.values or ()
        wanted = (
            [values.index(v) for v in cond.in_]
            if cond.in_ is not None
            else [i for i, v in enumerate(values) if v not in (cond.not_in or ())]
        )
        if len(wanted) <= 6:
            # a few equality tests beat a table look-up by 3-5x; -1 (missing) never matches
            codes_wanted = [np.int16(c) for c in wanted]

            def equal_any(b: Batch) -> Mask:
                col = b.columns[name]
                out = col == codes_wanted[0] if codes_wanted else np.zeros(len(col), np.bool_)
                for c in codes_wanted[1:]:
                    out |= col == c
                return out

            return equal_any
        # one extra slot at the end: code -1 (missing) indexes it and never matches
        table = np.zeros(len(values) + 1, dtype=np.bool_)
        table[wanted] = True
        return lambda b: np.take(table, b.columns[name])

    tests: list[tuple[Callable[[np.ndarray, float], Mask], float]] = []
    for op, fn in (
        ("ge", np.greater_equal),
        ("gt", np.greater),
        ("le", np.less_equal),
        ("lt", np.less),
    ):
        bound = getattr(cond, op)
        if bound is not None:
            tests.append((fn, float(bound)))

    def numeric(b: Batch) -> Mask:
        col = b.columns[name]
        out = tests[0][0](col, tests[0][1])  # NaN compares False: missing never matches
        for fn, bound in tests[1:]:
            out &= fn(col, bound)
        return out

    return numeric


def _compile_rule(grid: Grid, rule: Rule) -> Callable[[Batch], Mask]:
    conds = [_compile_condition(grid, c) for c in rule.conditions]
    combine = np.logical_and if rule.all_ is not None else np.logical_or

    def match(b: Batch) -> Mask:
        out = conds[0](b)  # every condition returns a fresh array: safe to update in place
        for c in conds[1:]:
            combine(out, c(b), out=out)
        return out

    return match


def compile_rule_tag(grid: Grid, tag: TagSpec) -> Callable[[Batch], Scores]:
    """A function from a batch to this (quantitative or qualitative) tag's scores."""
    if tag.kind == "quantitative":
        field, low, high = tag.field or "", float(tag.low or 0), float(tag.high or 0)
        if tag.scale == "log":
            low, high = float(np.log1p(low)), float(np.log1p(high))
        span = high - low
        log = tag.scale == "log"

        def ramp(b: Batch) -> Scores:
            x = b.columns[field]
            if log:
                x = np.log1p(np.maximum(x, 0.0))
            s = ((x - low) / span).astype(np.float32)
            return np.clip(s, 0.0, 1.0, out=s)

        return ramp
    if tag.kind == "qualitative":
        # lowest score first: a later (higher) matching rule overwrites, so each row ends with
        # the highest score among the rules it matches
        ordered = sorted(tag.rules or (), key=lambda r: r.score)
        rules = [(np.float32(r.score), _compile_rule(grid, r)) for r in ordered]

        def best_rule(b: Batch) -> Scores:
            out = np.zeros(len(b), dtype=np.float32)
            for score, match in rules:
                np.copyto(out, score, where=match(b))
            return out

        return best_rule
    raise ValueError(f"tag kind {tag.kind} is scored by a fitted model, not rules")


class RuleTags:
    """The grid's rule-based (quantitative and qualitative) tags, compiled."""

    def __init__(self, grid: Grid):
        self.grid = grid
        self.index = [i for i, t in enumerate(grid.tags.values()) if t.kind != "propensity"]
        self.names = [grid.tag_names[i] for i in self.index]
        self._fns = [compile_rule_tag(grid, grid.tags[n]) for n in self.names]
        self._inputs = [grid.tags[n].input_fields for n in self.names]

    def score_into(self, batch: Batch, scores_t: Scores, missing_t: Mask) -> None:
        """Fill the rule tags' rows of tag-major (T, N) ``scores_t`` and missing-input mask."""
        miss_cache: dict[str, Mask] = {}
        for j, fn, inputs in zip(self.index, self._fns, self._inputs, strict=True):
            scores_t[j] = fn(batch)
            m = missing_t[j]
            m[:] = False
            for f in inputs:
                if f not in miss_cache:
                    miss_cache[f] = batch.missing(f)
                m |= miss_cache[f]
            # a ramp over NaN gives NaN: leave 0 until inference fills it in
            if m.any():
                scores_t[j, m] = 0.0
