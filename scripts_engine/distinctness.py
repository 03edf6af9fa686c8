"""Distinctness: how different the profiles' call scripts are for one customer (issue 3).

For one customer, render the call script of every profile and compare their value stages
pairwise by normalised Levenshtein distance (0 identical, 1 nothing in common). The target is
a smallest distance of at least 0.3. ``benchmarks/distinct_scripts.py`` prints it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scripts_engine.profiles import Profile
    from scripts_engine.render import Renderer


@dataclass(frozen=True)
class Distinctness:
    """How different the value stages of all profiles are for one customer."""

    min_distance: float
    mean_distance: float
    closest: tuple[str, str]
    profiles: int


def measure(
    renderer: Renderer,
    customer: Mapping[str, Any],
    tag_scores: Mapping[str, float] | None,
    *,
    profiles: Iterable[Profile] | None = None,
    **options: Any,
) -> Distinctness:
    """Smallest and mean pairwise normalised edit distance of the profiles' value stages."""
    from rapidfuzz.distance import Levenshtein
    from rapidfuzz.process import cdist

    chosen = list(profiles or renderer.profiles)
    texts = [
        renderer.render_script(customer, p, tag_scores, channel="call", **options).stage_text(
            "value"
        )
        for p in chosen
    ]
    matrix = cdist(texts, texts, scorer=Levenshtein.normalized_distance, workers=1)
    n = len(texts)
    best, pair, total = 2.0, ("", ""), 0.0
    for i in range(n):
        for j in range(i + 1, n):
            d = float(matrix[i, j])
            total += d
            if d < best:
                best, pair = d, (chosen[i].id, chosen[j].id)
    pairs = n * (n - 1) // 2
    return Distinctness(best if pairs else 0.0, total / pairs if pairs else 0.0, pair, n)
