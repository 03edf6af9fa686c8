"""The grid on real customers: the figures the product promises, cross-validated."""

from __future__ import annotations

import numpy as np
import pytest

from scripts_engine.evaluation import cross_validated, summarise
from scripts_engine.grid import Grid


@pytest.fixture(scope="module")
def cv_summary(grid: Grid, train_batch) -> dict:  # type: ignore[no-untyped-def]
    result, y = cross_validated(grid, train_batch, folds=5, random_state=0)
    return summarise(result, y)


@pytest.mark.slow
def test_propensity_auc_without_duration(cv_summary: dict) -> None:
    assert cv_summary["customers"] == 36_169
    assert cv_summary["auc"] >= 0.80


@pytest.mark.slow
def test_five_of_eight_converts_at_four_times_the_base_rate(cv_summary: dict) -> None:
    ge5 = cv_summary["ge5"]
    assert ge5["share"] >= 0.05
    assert ge5["lift"] >= 4.0
    assert ge5["rate"] == pytest.approx(cv_summary["base_rate"] * ge5["lift"], rel=1e-2)


@pytest.mark.slow
def test_conversion_rises_with_hit_count(cv_summary: dict) -> None:
    rows = [cv_summary["by_hits"][str(h)] for h in range(9)]
    assert sum(r["customers"] for r in rows) == cv_summary["customers"]
    populated = [r["rate"] for r in rows if r["customers"] >= 300]
    assert populated == sorted(populated)  # strictly by every well-populated hit count
    rates = np.array([r["rate"] for r in rows if r["customers"]])
    weights = np.array([r["customers"] for r in rows if r["customers"]])
    assert np.corrcoef(np.arange(len(rates)), rates)[0, 1] > 0.9
    assert weights.sum() == cv_summary["customers"]


@pytest.mark.slow
def test_profiles_cover_everyone(cv_summary: dict) -> None:
    profiles = cv_summary["profiles"]
    assert len(profiles) == 56
    assert sum(p["customers"] for p in profiles) == cv_summary["customers"]
    assert all(set(p) == {"id", "name", "name_en", "customers", "rate"} for p in profiles)
