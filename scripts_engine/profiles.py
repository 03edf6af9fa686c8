"""The combined persona profiles: every choice of 5 of the grid's 8 tags, C(8,5) = 56.

Profiles are numbered in a stable order (lexicographic over the tags' grid order) and carry a
stable id made of the tags' one-letter codes (``P-ABDEH``), so an id survives re-ordering of
the file as long as the codes stay. Selection is vectorised and sits behind a policy
interface: the default takes the five highest-scoring hit tags and, when a customer has fewer
than five hits, fills in with the non-hit tags closest to their threshold (相近标签替代); such a
match is ``partial`` and names the substituted tags.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from scripts_engine.errors import PersonaNotFound
from scripts_engine.grid import Grid


@dataclass(frozen=True)
class Profile:
    """One combined persona profile."""

    index: int
    id: str
    tags: tuple[str, ...]
    name_zh: str
    name_en: str


class SelectionPolicy(Protocol):
    """Chooses, for every customer, exactly ``k`` tags that make their profile."""

    name: str

    def choose(
        self, scores: npt.NDArray[np.float32], hits: npt.NDArray[np.bool_], k: int
    ) -> npt.NDArray[np.bool_]:
        """Return an (N, T) mask with exactly ``k`` True per row."""
        ...


class TopScoringHits:
    """Default policy: the ``k`` highest-scoring hits; short of hits, the nearest misses.

    A hit ranks above every miss; hits rank by score, misses by how close they come to their
    threshold (score as a share of the threshold, so tags with different thresholds compare).
    Misses equally close (typically several tags at 0) are told apart by ``affinity``: how
    much more often each tag goes with the customer's hits than alone, a lift matrix fitted on
    the training customers (相近标签: the similar tag, not just the next one in the file).
    Remaining ties go to the tag earlier in the grid, so the choice is a pure function of the
    scores.

    Args:
        thresholds: each tag's hit threshold, shape (T,).
        affinity: optional (T, T) lift, ``affinity[j, i]`` = P(j hit | i hit) / P(j hit), and
            its last use, the base hit rate of each tag for customers without hits.
        base_rate: optional (T,) share of customers hitting each tag.
    """

    name = "top-scoring-hits"
    #: weight of affinity in a miss's key: below any real difference in closeness
    TIE_WEIGHT = np.float32(1e-3)

    def __init__(
        self,
        thresholds: npt.ArrayLike,
        affinity: npt.ArrayLike | None = None,
        base_rate: npt.ArrayLike | None = None,
    ):
        self.thresholds = np.asarray(thresholds, dtype=np.float32)
        self.affinity = None if affinity is None else np.asarray(affinity, dtype=np.float32)
        self.base_rate = None if base_rate is None else np.asarray(base_rate, dtype=np.float32)
        self._tie_t = self._tie_table() if affinity is not None and base_rate is not None else None

    def _tie_table(self) -> npt.NDArray[np.float32]:
        """(T, 2**T): for every set of hits, each missed tag's similarity to it, scaled into
        [0, TIE_WEIGHT); hit tags get 0. Looked up per customer by their hit bitmask."""
        assert self.affinity is not None and self.base_rate is not None
        t = len(self.thresholds)
        masks = np.arange(1 << t)
        hits = ((masks[None, :] >> np.arange(t)[:, None]) & 1).astype(np.float32)  # (T, M)
        counts = hits.sum(axis=0)
        sim = self.affinity @ hits / np.maximum(counts, 1.0)
        sim[:, counts == 0] = self.base_rate[:, None]  # no hits: the most common tags
        sim[hits > 0] = 0.0
        peak = sim.max(axis=0, keepdims=True)
        table = sim / (peak * np.float32(1.0001) + np.float32(1e-9)) * self.TIE_WEIGHT
        return np.ascontiguousarray(table, dtype=np.float32)

    def choose(
        self, scores: npt.NDArray[np.float32], hits: npt.NDArray[np.bool_], k: int
    ) -> npt.NDArray[np.bool_]:
        chosen: npt.NDArray[np.bool_] = self.choose_t(
            np.ascontiguousarray(scores.T), np.ascontiguousarray(hits.T), k
        ).T
        return chosen

    def choose_t(
        self, scores_t: npt.NDArray[np.float32], hits_t: npt.NDArray[np.bool_], k: int
    ) -> npt.NDArray[np.bool_]:
        """:meth:`choose` on tag-major (T, N) arrays, the layout the engine scores in."""
        n_tags = scores_t.shape[0]
        thr = self.thresholds[:, None]
        # hit keys in [2, 3], miss keys in [0, 1): score / threshold is in [0, 1) for a miss
        key_t = np.where(hits_t, scores_t + np.float32(2.0), scores_t / thr).astype(np.float32)
        if self._tie_t is not None:
            mask = np.zeros(key_t.shape[1], dtype=np.intp)
            for j in range(n_tags):
                mask |= hits_t[j].astype(np.intp) << j
            key_t += self._tie_t[:, mask]
        # rank[j] = how many tags beat tag j; on equal keys the earlier tag wins. Each pair
        # (i < j) is compared once: i beats j when key_i >= key_j, otherwise j beats i. So
        # rank[i] starts at the number of later tags and loses one for each it beats.
        rank = np.empty(key_t.shape, dtype=np.uint8)
        for i in range(n_tags):
            rank[i] = n_tags - 1 - i
        for i in range(n_tags):
            for j in range(i + 1, n_tags):
                i_wins = np.greater_equal(key_t[i], key_t[j]).view(np.uint8)
                rank[j] += i_wins
                rank[i] -= i_wins
        chosen_t: npt.NDArray[np.bool_] = np.less(rank, k)
        return chosen_t


@dataclass(frozen=True)
class Assignment:
    """Profiles chosen for a batch of customers, as arrays (one row per customer)."""

    profile_index: npt.NDArray[np.int16]
    chosen: npt.NDArray[np.bool_]
    substituted: npt.NDArray[np.bool_]
    policy: str

    @property
    def full(self) -> npt.NDArray[np.bool_]:
        """True where the profile is made only of hit tags."""
        full: npt.NDArray[np.bool_] = ~np.any(self.substituted, axis=1)
        return full


class ProfileCatalog:
    """All profiles of one grid, with the lookups selection needs."""

    def __init__(self, grid: Grid):
        self.grid = grid
        self.k = grid.profile_size
        names = grid.tag_names
        specs = grid.tags
        self.profiles: tuple[Profile, ...] = tuple(
            Profile(
                index=i,
                id="P-" + "".join(specs[names[j]].code for j in combo),
                tags=tuple(names[j] for j in combo),
                name_zh="·".join(specs[names[j]].label_zh for j in combo),
                name_en=" · ".join(specs[names[j]].label_en for j in combo),
            )
            for i, combo in enumerate(itertools.combinations(range(len(names)), self.k))
        )
        self._by_id = {p.id: p for p in self.profiles}
        # bitmask of chosen tags -> profile index (-1 for masks without exactly k bits)
        self._lut = np.full(1 << len(names), -1, dtype=np.int16)
        for p in self.profiles:
            mask = sum(1 << grid.tag_index(t) for t in p.tags)
            self._lut[mask] = p.index
        self._weights = (1 << np.arange(len(names), dtype=np.int64)).astype(np.int64)

    def __len__(self) -> int:
        return len(self.profiles)

    def __iter__(self) -> Iterator[Profile]:
        return iter(self.profiles)

    def get(self, profile_id: str) -> Profile:
        """The profile with this id.

        Raises:
            PersonaNotFound: no such profile in this grid.
        """
        try:
            return self._by_id[profile_id]
        except KeyError:
            raise PersonaNotFound(
                f"no persona profile '{profile_id}'; ids look like {self.profiles[0].id}"
            ) from None

    def from_chosen_t(self, chosen_t: npt.NDArray[np.bool_]) -> npt.NDArray[np.int16]:
        """Profile index of each column of a tag-major (T, N) chosen-tags mask."""
        mask = np.zeros(chosen_t.shape[1], dtype=np.int64)
        for j in range(chosen_t.shape[0]):
            mask |= chosen_t[j].astype(np.int64) << j
        out = self._lut[mask]
        if (out < 0).any():
            raise ValueError(
                "a selection policy chose a number of tags other than the profile size"
            )
        return out

    def from_chosen(self, chosen: npt.NDArray[np.bool_]) -> npt.NDArray[np.int16]:
        """Profile index of each row of an (N, T) chosen-tags mask."""
        mask = chosen.astype(np.int64) @ self._weights
        out = self._lut[mask]
        if (out < 0).any():
            raise ValueError(
                "a selection policy chose a number of tags other than the profile size"
            )
        return out

    def assign(
        self,
        scores: npt.NDArray[np.float32],
        hits: npt.NDArray[np.bool_],
        policy: SelectionPolicy | None = None,
    ) -> Assignment:
        """Pick one profile per customer."""
        policy = policy or TopScoringHits(self.grid.thresholds)
        chosen = policy.choose(scores, hits, self.k)
        return Assignment(
            profile_index=self.from_chosen(chosen),
            chosen=chosen,
            substituted=chosen & ~hits,
            policy=policy.name,
        )
