"""The core commands as a user runs them: clear errors, never a stack trace."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from scripts_engine import propensity as prop
from scripts_engine.cli import main
from scripts_engine.config import Settings
from tests.conftest import DEMO_CSV, TRAIN_CSV


def run(settings: Settings, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args), obj=settings, catch_exceptions=False)


def test_train_on_a_file(tmp_path: Path) -> None:
    small = tmp_path / "small.csv"
    lines = TRAIN_CSV.read_text(encoding="utf-8").splitlines()
    small.write_text("\n".join([lines[0], *lines[1::10]]) + "\n", encoding="utf-8")
    settings = Settings(state_dir=tmp_path / "state")
    res = run(settings, "train", "--data", str(small), "--json")
    assert res.exit_code == 0, res.output
    manifest = json.loads(res.stdout)
    assert manifest["rows"] == 3617
    assert 0.5 < manifest["cross_validation"]["propensity"]["auc"] <= 1.0
    assert manifest["data_sha256"] == prop.file_sha256(small)
    assert settings.resolved_model_path.exists()


@pytest.mark.parametrize("ext", ["csv", "parquet", "jsonl"])
def test_score_writes_every_format(state: Settings, tmp_path: Path, ext: str) -> None:
    out = tmp_path / f"out.{ext}"
    res = run(state, "score", str(DEMO_CSV), "-o", str(out))
    assert res.exit_code == 0, res.output
    frame = {"csv": pd.read_csv, "parquet": pd.read_parquet}.get(
        ext, lambda p: pd.read_json(p, lines=True)
    )(out)
    assert len(frame) == 2009
    assert {
        "customer_id",
        "score_propensity",
        "hit_count",
        "profile_id",
        "match",
        "substituted",
    } <= set(frame.columns)
    assert frame["profile_id"].str.match(r"^P-[A-H]{5}$").all()
    assert "scored 2009 customers" in res.stderr


def test_score_reports_bad_rows_and_keeps_good_ones(state: Settings, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    frame = pd.read_csv(DEMO_CSV, dtype=str, keep_default_na=False).head(5)
    frame["duration"] = 100
    frame.loc[1, "age"] = "old"
    frame.loc[3, "month"] = "smarch"
    frame.to_csv(src, index=False)
    out = tmp_path / "out.csv"
    errors = tmp_path / "errors.csv"
    res = run(state, "score", str(src), "-o", str(out), "--errors", str(errors))
    assert res.exit_code == 0
    assert f"{src}:3: age: expected a number, got 'old'" in res.stderr
    assert f"{src}:5: month: unknown value 'smarch'" in res.stderr
    assert "column 'duration' not used" in res.stderr
    assert len(pd.read_csv(out)) == 3
    assert list(pd.read_csv(errors)["row"]) == [2, 4]


def test_evaluate_json_shape(state: Settings) -> None:
    res = run(state, "evaluate", str(DEMO_CSV), "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out) >= {"auc", "base_rate", "by_hits", "ge5", "profiles"}
    assert set(out["by_hits"]) == {str(h) for h in range(9)}
    assert all(set(v) == {"customers", "rate"} for v in out["by_hits"].values())
    assert set(out["ge5"]) == {"share", "rate", "lift"}
    assert all({"id", "name", "customers", "rate"} <= set(p) for p in out["profiles"])
    assert isinstance(out["auc"], float) and 0.5 < out["auc"] < 1.0


def test_demo_prints_the_profile_table(state: Settings) -> None:
    res = run(state, "demo")
    assert res.exit_code == 0, res.output
    assert "2009 demo customers" in res.stdout
    assert "profile   customers conversion" in res.stdout
    assert ">=5 hits:" in res.stdout


def test_errors_are_one_clear_line(state: Settings, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        main, ["score", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "o.csv")], obj=state
    )
    assert res.exit_code == 2
    assert "error:" in res.stderr and "file not found" in res.stderr
    assert "Traceback" not in res.output
    broken = Settings(state_dir=state.state_dir, personas_dir=tmp_path / "personas")
    (tmp_path / "personas").mkdir()
    (tmp_path / "personas" / "grid.yaml").write_text("tags: [\n", encoding="utf-8")
    res = CliRunner().invoke(main, ["evaluate", str(DEMO_CSV)], obj=broken)
    assert res.exit_code == 2
    assert "grid.yaml, line" in res.stderr and "not valid YAML" in res.stderr


def test_missing_explicit_model_says_how_to_fix(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        main,
        [
            "score",
            str(DEMO_CSV),
            "-o",
            str(tmp_path / "o.csv"),
            "--model",
            str(tmp_path / "m.joblib"),
        ],
        obj=Settings(state_dir=tmp_path / "empty"),
    )
    assert res.exit_code == 2
    assert "run `scripts-engine train`" in res.stderr


def test_stale_default_model_is_retrained(state: Settings, tmp_path: Path) -> None:
    manifest_file = prop.manifest_path(state.resolved_model_path)
    manifest = json.loads(manifest_file.read_text())
    manifest["format"] = 1  # saved by an older scripts-engine
    manifest_file.write_text(json.dumps(manifest))
    res = run(state, "score", str(DEMO_CSV), "-o", str(tmp_path / "o.csv"))
    assert res.exit_code == 0, res.output
    assert "the saved model is not usable" in res.stderr
    assert prop.read_manifest(state.resolved_model_path)["format"] == prop.FORMAT_VERSION


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SCRIPTS_ENGINE_CAMPAIGN_EXECUTOR": "daskx"},
         "error: SCRIPTS_ENGINE_CAMPAIGN_EXECUTOR: Input should be 'inline', 'local' or 'dask'"),
        ({"SCRIPTS_ENGINE_CAMPAIGN_EXECUTOR": "dask"},
         "error: settings: campaign_executor is 'dask' but dask_address is not set"),
    ],
)  # fmt: skip
def test_a_bad_setting_is_one_clear_line(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "SCRIPTS_ENGINE_STATE_DIR": str(tmp_path), **env}
    cmd = [str(Path(sys.executable).with_name("scripts-engine")), "serve"]
    res = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.startswith(expected) and "Traceback" not in res.stderr


def test_the_key_command_shown_to_people_runs_from_here() -> None:
    import shlex
    import subprocess

    from scripts_engine.config import cli_command

    for shown in (cli_command(), cli_command(absolute=False)):
        res = subprocess.run([*shlex.split(shown), "keys", "create", "--help"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert res.returncode == 0 and "--role" in res.stdout, (shown, res.stderr)


def test_the_demo_customers_are_stored_scored_as_an_upsert_stores_them(state: Settings) -> None:
    """`make run`'s demo load keeps each customer's scores under the model's version, as
    `POST /v1/customers` does: rendering a demo customer then needs no re-scoring."""
    from sqlalchemy import select

    from scripts_engine.cli_service import prepare_demo
    from scripts_engine.db.migrate import upgrade
    from scripts_engine.db.models import Customer
    from scripts_engine.db.session import open_database
    from scripts_engine.features import load_customers
    from scripts_engine.scoring import Engine, model_version

    db = open_database(state)
    try:
        upgrade(db)
        engine = Engine.load(state)
        assert prepare_demo(state, db, engine)  # the demo campaign's id
        with db.read() as session:
            stored = {c.customer_id: c for c in session.scalars(select(Customer))}
    finally:
        db.dispose()
    loaded = load_customers(state.demo_customers_file, engine.grid)
    wanted = engine.stored_scoring(loaded.batch)
    assert len(stored) == len(wanted) > 0
    version = model_version(state)
    assert version
    for i, scoring in enumerate(wanted):
        customer = stored[str(loaded.batch.record(i)["customer_id"])]
        assert customer.scoring == scoring
        assert customer.model_version == version
    assert sum(s is not None for s in wanted) > len(wanted) // 2


def test_a_database_that_cannot_be_reached_is_one_line_with_no_password(tmp_path: Path) -> None:
    """A wrong address or password at start-up: which database (its password hidden) and
    why, exit code 1; it was a traceback of 136 lines."""
    settings = Settings(state_dir=tmp_path,
                        database_url="postgresql://engine:s3cret@127.0.0.1:1/nowhere")  # fmt: skip
    res = CliRunner().invoke(main, ["keys", "create", "--role", "admin"], obj=settings)
    assert res.exit_code == 1, res.output
    assert res.output.startswith(
        "Error: cannot use the database postgresql+psycopg://engine:***@127.0.0.1:1/nowhere: "
    ), res.output
    assert "s3cret" not in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
