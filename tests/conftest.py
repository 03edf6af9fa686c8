"""Shared fixtures: the shipped grid, a small model fitted once per session, sample customers."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from threadpoolctl import threadpool_limits

from scripts_engine import propensity as prop
from scripts_engine.config import ROOT, Settings
from scripts_engine.features import Batch, load_customers
from scripts_engine.grid import Grid, load_grid
from scripts_engine.scoring import Engine

# the apps tests build render in-process (each would otherwise spawn its render workers);
# tests/api/test_render_pool.py turns them on
os.environ.setdefault("SCRIPTS_ENGINE_RENDER_WORKERS", "0")

TRAIN_CSV = ROOT / "data" / "bank-marketing" / "bank-train.csv"
DEMO_CSV = ROOT / "data" / "demo" / "customers.csv"


@pytest.fixture(scope="session", autouse=True)
def _one_thread_per_native_pool() -> Iterator[None]:
    """One OpenMP/BLAS thread per process: the boosted-tree fits otherwise spin-wait against
    every other process on a 2-core machine and run several times slower."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="session")
def grid() -> Grid:
    """The shipped persona grid."""
    return load_grid(ROOT / "personas" / "grid.yaml")


@pytest.fixture(scope="session")
def train_batch(grid: Grid) -> Batch:
    """The shipped UCI training rows, with outcomes."""
    return load_customers(TRAIN_CSV, grid, outcomes=True).batch


@pytest.fixture(scope="session")
def model(grid: Grid, train_batch: Batch) -> prop.TrainedModel:
    """A model fitted once on a third of the shipped rows (no cross-validation: fast)."""
    return prop.train(grid, train_batch.take(slice(0, None, 3)), cv_folds=0)


@pytest.fixture(scope="session")
def engine(grid: Grid, model: prop.TrainedModel) -> Engine:
    return Engine(grid, model)


@pytest.fixture(scope="session")
def demo_batch(grid: Grid) -> Batch:
    return load_customers(DEMO_CSV, grid, outcomes=True).batch


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with the shipped data and a private state folder."""
    return Settings(state_dir=tmp_path / "state")


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory: pytest.TempPathFactory, model: prop.TrainedModel) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.joblib"
    prop.save(model, path)
    return path


@pytest.fixture
def state(tmp_path: Path, saved_model: Path) -> Settings:
    """Settings whose state folder already holds the session's fitted model."""
    settings = Settings(state_dir=tmp_path / "state")
    settings.state_dir.mkdir()
    shutil.copy(saved_model, settings.resolved_model_path)
    shutil.copy(prop.manifest_path(saved_model), prop.manifest_path(settings.resolved_model_path))
    return settings
