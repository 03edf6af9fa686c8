"""Tag scores on hand-made customers, and inference of tags whose inputs are missing."""

from __future__ import annotations

import numpy as np
import pytest

from scripts_engine.features import load_customers
from scripts_engine.grid import Grid
from scripts_engine.scoring import Engine

BASE = {
    "age": 45,
    "job": "technician",
    "marital": "married",
    "education": "secondary",
    "default": "no",
    "balance": 0,
    "housing": "yes",
    "loan": "yes",
    "contact": "unknown",
    "day": 5,
    "month": "may",
    "campaign": 2,
    "pdays": -1,
    "previous": 0,
    "poutcome": "unknown",
}


def _score(engine: Engine, grid: Grid, **changes):  # type: ignore[no-untyped-def]
    batch = load_customers([BASE | {"customer_id": "x"} | changes], grid).batch
    assert len(batch) == 1
    res = engine.score(batch)
    return dict(zip(grid.tag_names, res.tags.scores[0].tolist(), strict=True)), res


@pytest.mark.parametrize(
    ("changes", "tag", "expected"),
    [
        ({"balance": 0}, "affluent", 0.0),
        ({"balance": 1500}, "affluent", 0.5),
        ({"balance": 3000}, "affluent", 1.0),
        ({"balance": 90000}, "affluent", 1.0),
        ({"balance": -500}, "affluent", 0.0),
        ({"age": 61}, "silver", 1.0),
        ({"job": "retired"}, "silver", 1.0),
        ({"age": 57}, "silver", 0.6),
        ({"education": "tertiary"}, "educated", 1.0),
        ({"education": "secondary"}, "educated", 0.3),
        ({"education": "primary"}, "educated", 0.0),
        ({"education": "unknown"}, "educated", 0.0),
        ({"housing": "no", "loan": "no"}, "debt_free", 1.0),
        ({"housing": "no"}, "debt_free", 0.5),
        ({"housing": "no", "loan": "no", "default": "yes"}, "debt_free", 0.0),
        ({"loan": "no"}, "debt_free", 0.5),
        ({"poutcome": "success", "previous": 2, "pdays": 400}, "warm", 1.0),
        ({"previous": 1, "pdays": 90, "poutcome": "failure"}, "warm", 0.8),
        ({"previous": 3, "pdays": 500, "poutcome": "failure"}, "warm", 0.4),
        ({"contact": "cellular"}, "mobile", 1.0),
        ({"contact": "telephone"}, "mobile", 0.5),
        ({"month": "oct"}, "timing", 1.0),
        ({"month": "apr"}, "timing", 0.8),
        ({"month": "may"}, "timing", 0.0),
        ({"month": "jul"}, "timing", 0.3),
    ],
)
def test_rule_tag_scores(
    engine: Engine, grid: Grid, changes: dict, tag: str, expected: float
) -> None:
    scores, res = _score(engine, grid, **changes)
    assert scores[tag] == pytest.approx(expected, abs=1e-6)
    assert not res.tags.inferred[0][grid.tag_index(tag)]
    assert res.tags.hits[0][grid.tag_index(tag)] == (expected >= grid.tags[tag].threshold)


def test_scores_in_unit_interval_on_real_customers(engine: Engine, train_batch) -> None:  # type: ignore[no-untyped-def]
    res = engine.score(train_batch)
    assert res.tags.scores.shape == (len(train_batch), 8)
    assert (res.tags.scores >= 0).all() and (res.tags.scores <= 1).all()
    assert not res.tags.inferred.any()  # the UCI rows are complete


def test_missing_inputs_are_inferred_and_flagged(engine: Engine, grid: Grid, train_batch) -> None:  # type: ignore[no-untyped-def]
    scores, res = _score(engine, grid, balance=None, age=None)
    flagged = {grid.tag_names[j] for j in np.flatnonzero(res.tags.inferred[0])}
    assert flagged == {"affluent", "silver", "propensity"}
    assert all(0.0 <= scores[t] <= 1.0 for t in flagged)
    explained = res.explain(0)
    assert set(explained["inferred"]) == flagged
    assert "倒推" in explained["reason_zh"] or not set(explained["profile"]["tags"]) & flagged

    # the inference is informative: on real customers whose age is hidden, the inferred
    # silver score ranks true retirees far above others
    sample = train_batch.take(slice(0, 6000))
    truth = engine.score(sample).tags.scores[:, grid.tag_index("silver")] >= 0.75
    hidden = sample.take(slice(None))
    hidden.columns = dict(hidden.columns)
    hidden.columns["age"] = np.full(len(hidden), np.nan)
    hidden.columns["job"] = np.full(len(hidden), -1, dtype=np.int16)
    inferred = engine.score(hidden).tags.scores[:, grid.tag_index("silver")]
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(truth, inferred) > 0.75
