"""The propensity estimator contract, model save/load, and refusal of altered or foreign models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from scripts_engine import propensity as prop
from scripts_engine.errors import ModelError
from scripts_engine.grid import Grid, load_grid
from scripts_engine.scoring import Engine


@parametrize_with_checks([prop.PropensityModel(max_iter=10)])
def test_estimator_contract(estimator, check) -> None:  # type: ignore[no-untyped-def]
    check(estimator)


def test_same_seed_same_model(grid: Grid, train_batch) -> None:  # type: ignore[no-untyped-def]
    sample = train_batch.take(slice(0, 4000))
    a = prop.train(grid, sample, cv_folds=0, random_state=7)
    b = prop.train(grid, sample, cv_folds=0, random_state=7)
    sa = Engine(grid, a).score(sample).tags.scores
    sb = Engine(grid, b).score(sample).tags.scores
    assert np.array_equal(sa, sb)


def test_save_load_round_trip(
    grid: Grid, model: prop.TrainedModel, saved_model: Path, demo_batch
) -> None:  # type: ignore[no-untyped-def]
    loaded = prop.load(saved_model, grid)
    before = Engine(grid, model).score(demo_batch)
    after = Engine(grid, loaded).score(demo_batch)
    assert np.array_equal(before.tags.scores, after.tags.scores)
    assert np.array_equal(before.assignment.profile_index, after.assignment.profile_index)
    manifest = prop.read_manifest(saved_model)
    assert manifest["features"]["propensity"] == list(grid.tags["propensity"].inputs or ())
    assert "duration" not in manifest["features"]["propensity"]
    assert set(manifest["versions"]) >= {"python", "numpy", "scikit-learn"}


def test_altered_model_file_is_refused(grid: Grid, saved_model: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model.joblib"
    shutil.copy(saved_model, copy)
    shutil.copy(prop.manifest_path(saved_model), prop.manifest_path(copy))
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="altered"):
        prop.load(copy, grid)


def test_missing_model_and_manifest(grid: Grid, saved_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="run `scripts-engine train`"):
        prop.load(tmp_path / "none.joblib", grid)
    lone = tmp_path / "lone.joblib"
    shutil.copy(saved_model, lone)
    with pytest.raises(ModelError, match="manifest is missing"):
        prop.load(lone, grid)


def test_model_for_another_grid_is_refused(saved_model: Path, tmp_path: Path) -> None:
    text = (Path(__file__).parents[2] / "personas" / "grid.yaml").read_text(encoding="utf-8")
    path = tmp_path / "grid.yaml"
    path.write_text(text.replace("    high: 3000\n", "    high: 5000\n"), encoding="utf-8")
    other = load_grid(path)
    with pytest.raises(ModelError, match="different persona grid"):
        prop.load(saved_model, other)
    # a label or threshold edit does not invalidate the model
    path.write_text(text.replace("    threshold: 0.5\n", "    threshold: 0.55\n"), encoding="utf-8")
    prop.load(saved_model, load_grid(path))


def test_manifest_tampering_with_versions_is_refused(
    grid: Grid, saved_model: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "model.joblib"
    shutil.copy(saved_model, copy)
    manifest = prop.read_manifest(saved_model)
    manifest["versions"]["scikit-learn"] = "0.24.2"
    prop.manifest_path(copy).write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="scikit-learn 0.24.2"):
        prop.load(copy, grid)
    manifest["format"] = 1
    prop.manifest_path(copy).write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="model format 1"):
        prop.load(copy, grid)
