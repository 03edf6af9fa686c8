"""Value composition: which tags a persona call talks about, in which order, and how surely.

A profile has five tags. The customer *hits* a tag when their score reaches the tag's
threshold (``grid.yaml``); a profile tag the customer does not hit stands in for a near miss
(相近标签替代, DOMAIN.md): it is *substituted*. The value stage has one block per tag:

- order: hit tags first, then substituted ones, each by the customer's score (ties keep the
  grid order): a call never leads with something that is not true of the customer;
- ``block.hit`` tells the block which it is: a hit block may say what the data shows about
  the customer; a substituted block may not, and is written as a softer, shorter line that
  fits anyone (a question, or what "many customers" do).

Without scores no tag is known to hold: every block is a substituted one.

The builders return plain dicts (no pydantic: they run once per distinct order and are
memoised); ``tests/engine/test_context.py`` validates them against ``ProfileInfo`` and
``BlockInfo``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from scripts_engine.grid import Grid


def order_tags(
    grid: Grid, tags: Sequence[str], scores: Mapping[str, float] | None
) -> tuple[tuple[str, ...], tuple[bool, ...]]:
    """The profile's tags in speaking order, and for each whether the customer hits it."""
    if not scores:
        return tuple(tags), (False,) * len(tags)
    limits = _thresholds(grid)
    rows = []
    for i, tag in enumerate(tags):
        score = float(scores.get(tag) or 0.0)
        rows.append((score < limits[tag], -score, i, tag))
    rows.sort()
    return tuple([r[3] for r in rows]), tuple([not r[0] for r in rows])


_THRESHOLDS: dict[int, tuple[Grid, dict[str, float]]] = {}


def _thresholds(grid: Grid) -> dict[str, float]:
    """Each tag's threshold, by name (built once per grid object)."""
    entry = _THRESHOLDS.get(id(grid))
    if entry is None or entry[0] is not grid:
        entry = _THRESHOLDS[id(grid)] = (grid, {t: s.threshold for t, s in grid.tags.items()})
    return entry[1]


def hit_tags(grid: Grid, scores: Mapping[str, float] | None) -> frozenset[str]:
    """Every tag of the grid the customer hits (not only the profile's)."""
    if not scores:
        return frozenset()
    return frozenset(
        [t for t, limit in _thresholds(grid).items() if float(scores.get(t) or 0.0) >= limit]
    )


def profile_info(grid: Grid, pid: str, tags: Sequence[str], hits: Sequence[bool]) -> dict[str, Any]:
    """The ``profile`` variable (:class:`~scripts_engine.context.ProfileInfo`)."""
    labels = [grid.tags[t].label_zh for t in tags]
    return {
        "id": pid, "name_zh": "·".join(labels), "tags": list(tags), "labels_zh": labels,
        "lead": tags[0], "lead_zh": labels[0],
        "substituted": [t for t, hit in zip(tags, hits, strict=True) if not hit],
    }  # fmt: skip


def value_blocks(grid: Grid, tags: Sequence[str], hits: Sequence[bool]) -> list[dict[str, Any]]:
    """The ``block`` variable of each value block (:class:`~scripts_engine.context.BlockInfo`)."""
    n = len(tags)
    return [
        {
            "tag": tag, "label_zh": grid.tags[tag].label_zh, "rank": i + 1, "hit": hits[i],
            "is_lead": i == 0, "is_last": i == n - 1, "prev": tags[i - 1],
            "next": tags[(i + 1) % n], "lead": tags[0],
        }
        for i, tag in enumerate(tags)
    ]  # fmt: skip
