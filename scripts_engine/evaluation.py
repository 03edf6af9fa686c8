"""How well the grid separates converters: AUC, conversion by hit count, the 5-of-8 group.

The figures a bank analyst asks first (DOMAIN.md, reference/003): does a customer who hits
5 of the 8 tags convert much more often, is that group large enough to call, and does the
rate rise with every extra tag hit?
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from scripts_engine import propensity as prop
from scripts_engine.features import Batch
from scripts_engine.grid import Grid
from scripts_engine.scoring import Engine, ScoreResult
from scripts_engine.tags import TagScores


def summarise(
    result: ScoreResult, y: npt.NDArray[np.int8], *, propensity_tag: str | None = None
) -> dict[str, Any]:
    """The evaluation object for scored customers with known outcomes ``y`` (0/1)."""
    engine = result.engine
    names = engine.grid.tag_names
    n = len(y)
    base = float(y.mean()) if n else 0.0
    tag = propensity_tag or next(
        (t for t, s in engine.grid.tags.items() if s.kind == "propensity"), None
    )
    auc = None
    if tag is not None and 0 < y.sum() < n:
        auc = float(roc_auc_score(y, result.tags.scores[:, names.index(tag)]))
    hits = result.hit_counts
    by_hits = {}
    for h in range(len(names) + 1):
        sel = hits == h
        by_hits[str(h)] = {"customers": int(sel.sum()), "rate": _rate(y, sel)}
    k = engine.profiles.k
    top = hits >= k
    top_rate = _rate(y, top)
    profiles = []
    idx = result.assignment.profile_index
    counts = np.bincount(idx, minlength=len(engine.profiles))
    conv = np.bincount(idx, weights=y, minlength=len(engine.profiles))
    for p in engine.profiles:
        c = int(counts[p.index])
        profiles.append(
            {
                "id": p.id,
                "name": p.name_zh,
                "name_en": p.name_en,
                "customers": c,
                "rate": round(float(conv[p.index] / c), 4) if c else 0.0,
            }
        )
    return {
        "auc": round(auc, 4) if auc is not None else None,
        "base_rate": round(base, 4),
        "customers": n,
        "by_hits": by_hits,
        f"ge{k}": {
            "share": round(float(top.mean()), 4) if n else 0.0,
            "rate": top_rate,
            "lift": round(top_rate / base, 3) if base else 0.0,
        },
        "profiles": profiles,
    }


def _rate(y: np.ndarray, sel: np.ndarray) -> float:
    c = int(sel.sum())
    return round(float(y[sel].mean()), 4) if c else 0.0


def cross_validated(
    grid: Grid,
    batch: Batch,
    *,
    folds: int = 5,
    random_state: int = 0,
    on_fold: Callable[[], None] | None = None,
) -> tuple[ScoreResult, npt.NDArray[np.int8]]:
    """Score every customer with models fitted on the *other* folds (out-of-fold).

    Honest figures on the training data itself: no customer is scored by a model that saw
    their outcome.
    """
    tag = next(t for t, s in grid.tags.items() if s.kind == "propensity")
    y = prop.target_vector(grid, batch, tag)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=random_state)
    n, t = len(batch), len(grid.tags)
    scores = np.zeros((n, t), dtype=np.float32)
    inferred = np.zeros((n, t), dtype=np.bool_)
    for train_idx, test_idx in splitter.split(np.zeros(n), y):
        model = prop.train(grid, batch.take(train_idx), random_state=random_state, cv_folds=0)
        part = Engine(grid, model).score_tags(batch.take(test_idx))
        scores[test_idx] = part.scores
        inferred[test_idx] = part.inferred
        if on_fold is not None:
            on_fold()
    engine = Engine(grid)
    tags = TagScores(scores=scores, hits=scores >= engine.thresholds, inferred=inferred)
    result = ScoreResult(engine=engine, batch=batch, tags=tags, assignment=engine.assign(tags))
    return result, y
