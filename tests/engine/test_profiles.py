"""The 56 profiles and the selection policy, with property-based tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from scripts_engine.errors import PersonaNotFound
from scripts_engine.grid import Grid
from scripts_engine.profiles import ProfileCatalog, TopScoringHits


@pytest.fixture(scope="module")
def catalog(grid: Grid) -> ProfileCatalog:
    return ProfileCatalog(grid)


def test_56_profiles_stable_ids_and_names(catalog: ProfileCatalog, grid: Grid) -> None:
    assert len(catalog) == math.comb(8, 5) == 56
    ids = [p.id for p in catalog]
    assert len(set(ids)) == 56
    assert ids[0] == "P-ABCDE" and ids[-1] == "P-DEFGH"
    assert ids == sorted(ids)  # lexicographic over grid order, and codes follow grid order
    for p in catalog:
        assert len(set(p.tags)) == 5
        assert p.name_zh.count("·") == 4 and p.name_en.count(" · ") == 4
        assert catalog.get(p.id) is p
    # a second catalog from the same grid has the same ids in the same order
    assert [p.id for p in ProfileCatalog(grid)] == ids


def test_unknown_profile_id(catalog: ProfileCatalog) -> None:
    with pytest.raises(PersonaNotFound, match="no persona profile 'P-XYZ'"):
        catalog.get("P-XYZ")


score_rows = arrays(
    np.float32,
    st.tuples(st.integers(1, 40), st.just(8)),
    elements=st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.6, 0.75, 0.8, 0.9, 1.0])
    | st.floats(0, 1, width=32),
)


@settings(max_examples=200, deadline=None)
@given(scores=score_rows)
def test_selection_properties(catalog: ProfileCatalog, grid: Grid, scores: np.ndarray) -> None:
    thresholds = np.asarray(grid.thresholds, dtype=np.float32)
    hits = scores >= thresholds
    a = catalog.assign(scores, hits)
    # exactly five distinct tags, and the profile is the one made of them
    assert (a.chosen.sum(axis=1) == 5).all()
    for i in range(len(scores)):
        profile = catalog.profiles[a.profile_index[i]]
        chosen = {grid.tag_names[j] for j in np.flatnonzero(a.chosen[i])}
        assert set(profile.tags) == chosen
        n_hits = int(hits[i].sum())
        if n_hits >= 5:
            # a full match only from hits: the five highest-scoring hits
            assert a.full[i] and not a.substituted[i].any()
            assert hits[i][a.chosen[i]].all()
            assert scores[i][a.chosen[i]].min() >= scores[i][hits[i] & ~a.chosen[i]].max(initial=-1)
        else:
            # every hit is used, and the substitutes are the misses nearest their threshold
            assert not a.full[i]
            assert a.chosen[i][hits[i]].all()
            assert a.substituted[i].sum() == 5 - n_hits
            closeness = scores[i] / thresholds
            subs = closeness[a.substituted[i]]
            rest = closeness[~hits[i] & ~a.chosen[i]]
            assert subs.min() >= rest.max(initial=-1) - TopScoringHits.TIE_WEIGHT
    # same input, same output
    again = catalog.assign(scores.copy(), hits.copy())
    assert (again.profile_index == a.profile_index).all()


def test_ties_go_to_the_earlier_tag(catalog: ProfileCatalog) -> None:
    scores = np.ones((1, 8), dtype=np.float32)
    a = catalog.assign(scores, scores > 0)
    assert catalog.profiles[a.profile_index[0]].id == "P-ABCDE"


class FirstFive:
    """A stand-in learned policy: proves the interface lets another policy plug in."""

    name = "first-five"

    def choose(self, scores: np.ndarray, hits: np.ndarray, k: int) -> np.ndarray:
        out = np.zeros(scores.shape, dtype=bool)
        out[:, -k:] = True
        return out


def test_policy_is_replaceable(catalog: ProfileCatalog, grid: Grid) -> None:
    scores = np.random.default_rng(0).random((10, 8), dtype=np.float32)
    a = catalog.assign(scores, scores > 0.5, FirstFive())
    assert a.policy == "first-five"
    assert {catalog.profiles[i].id for i in a.profile_index} == {"P-DEFGH"}
    default = catalog.assign(scores, scores > 0.5, TopScoringHits(grid.thresholds))
    assert default.policy == "top-scoring-hits"


def test_equally_close_misses_go_to_the_most_similar_tag(grid: Grid) -> None:
    catalog = ProfileCatalog(grid)
    t = len(grid.tags)
    # tag 6 goes with tag 0 three times as often as chance; every other pair is independent
    affinity = np.ones((t, t), dtype=np.float32)
    affinity[6, 0] = affinity[0, 6] = 3.0
    policy = TopScoringHits(grid.thresholds, affinity=affinity, base_rate=np.full(t, 0.2))
    scores = np.zeros((1, t), dtype=np.float32)
    scores[0, 0] = 1.0  # one hit (tag 0), every miss at 0
    hits = scores >= np.asarray(grid.thresholds, dtype=np.float32)
    a = catalog.assign(scores, hits, policy)
    assert a.chosen[0, 6], "the tag most similar to the hit fills in first"
    assert a.substituted[0].sum() == 4
    # closeness still comes first: a miss nearer its threshold beats similarity
    scores[0, 7] = 0.2
    a = catalog.assign(scores, scores >= np.asarray(grid.thresholds, dtype=np.float32), policy)
    assert a.chosen[0, 7] and a.chosen[0, 6]


def test_trained_model_carries_tag_affinity(model) -> None:  # type: ignore[no-untyped-def]
    assert model.tag_affinity.shape == (8, 8)
    assert (model.tag_base_rate > 0).all() and (model.tag_base_rate < 1).all()
    # silver and educated hardly go together in the bank's data; debt-free and silver do
    names = [
        "affluent",
        "silver",
        "educated",
        "debt_free",
        "warm",
        "mobile",
        "timing",
        "propensity",
    ]
    silver, educated = names.index("silver"), names.index("educated")
    assert model.tag_affinity[silver, educated] < 1.0
