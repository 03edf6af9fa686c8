"""Core commands: ``train``, ``score``, ``evaluate`` and ``demo``."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import numpy as np
from tqdm import tqdm

from scripts_engine import propensity as prop
from scripts_engine.config import Settings, get_settings
from scripts_engine.demo import is_demo_row
from scripts_engine.errors import DataError, ModelError, RowError
from scripts_engine.evaluation import cross_validated, summarise
from scripts_engine.features import LoadResult, iter_customers, load_customers, source_format
from scripts_engine.grid import Grid, load_grid
from scripts_engine.output import ResultWriter
from scripts_engine.scoring import Engine

MAX_ERRORS_SHOWN = 20


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj if isinstance(ctx.obj, Settings) else get_settings()


def _grid(settings: Settings) -> Grid:
    return load_grid(settings.personas_dir / "grid.yaml")


def report_rejects(
    source: str, errors: list[RowError], ignored: dict[str, str], *, fmt: str
) -> None:
    """Tell the user, on stderr, which rows were rejected and which columns not used."""
    for col, why in ignored.items():
        click.secho(f"note: column '{col}' not used: {why}", fg="yellow", err=True)
    for e in errors[:MAX_ERRORS_SHOWN]:
        where = f"{source}:{e.row + 1}" if fmt == "csv" else f"{source}: row {e.row}"
        click.secho(f"{where}: {e.field}: {e.error}", fg="red", err=True)
    if len(errors) > MAX_ERRORS_SHOWN:
        click.secho(
            f"... and {len(errors) - MAX_ERRORS_SHOWN} more rejected values", fg="red", err=True
        )


def train_default(
    settings: Settings, *, data: Path | None = None, quiet: bool = False
) -> prop.TrainedModel:
    """Fit and save the model on ``data`` (default: the shipped UCI rows minus the demo rows)."""
    grid = _grid(settings)
    path = data or settings.training_file
    steps = tqdm(total=3, desc="train", unit="step", disable=quiet, file=sys.stderr)
    loaded = load_customers(path, grid, outcomes=True)
    if loaded.errors:
        report_rejects(str(path), loaded.errors, {}, fmt=source_format(path))
    batch = loaded.batch
    if data is None:
        keep = np.array([not is_demo_row(int(r)) for r in batch.rows], dtype=np.bool_)
        batch = batch.take(keep)
    if len(batch) < 100:
        raise DataError(f"{path}: only {len(batch)} usable rows; a model needs at least 100")
    steps.update()
    model = prop.train(
        grid, batch, data_hash=prop.file_sha256(path), random_state=settings.random_state
    )
    model.metadata["training_file"] = str(path)
    model.metadata["excluded_demo_rows"] = data is None
    steps.update()
    prop.save(model, settings.resolved_model_path)
    steps.update()
    steps.close()
    return model


def load_engine(settings: Settings, model_path: Path | None = None) -> Engine:
    """The engine with the saved model.

    The default model (no ``model_path``) is trained first when there is none or when the
    saved one no longer fits (another grid, an older model format); an explicit file is
    never replaced, its problem is reported.
    """
    if model_path is not None:
        return Engine.load(settings, model_path=model_path)
    try:
        return Engine.load(settings)
    except ModelError as exc:
        why = (
            "no model yet"
            if not settings.resolved_model_path.exists()
            else f"the saved model is not usable ({exc})"
        )
        click.echo(
            f"{why}: training the default one on the shipped UCI data "
            "(under a minute on an idle machine) ...",
            err=True,
        )
    train_default(settings, quiet=True)
    return Engine.load(settings)


def register(group: click.Group) -> None:
    group.add_command(train)
    group.add_command(score)
    group.add_command(evaluate)
    group.add_command(demo)


@click.command()
@click.option(
    "--data",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Historical outcomes (format of bank-train.csv); default: the shipped data.",
)
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Where to save the model (default: <state_dir>/model.joblib).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the model's manifest as JSON.")
@click.pass_context
def train(ctx: click.Context, data: Path | None, model_path: Path | None, as_json: bool) -> None:
    """Fit the propensity tag and the tag-inference models on past call outcomes."""
    settings = _settings(ctx)
    if model_path is not None:
        settings = settings.model_copy(update={"model_path": model_path})
    model = train_default(settings, data=data, quiet=as_json)
    manifest = prop.read_manifest(settings.resolved_model_path)
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
        return
    click.echo(f"model saved to {settings.resolved_model_path} ({model.metadata['rows']} rows)")
    for tag, cv in model.metadata["cross_validation"].items():
        folds = ", ".join(f"{a:.3f}" for a in cv["auc_folds"])
        click.echo(f"{tag}: cross-validated AUC {cv['auc']:.4f} ({cv['folds']} folds: {folds})")


@click.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Output file: .csv, .parquet or .jsonl.",
)
@click.option(
    "--model", "model_path", type=click.Path(path_type=Path, dir_okay=False), default=None
)
@click.option("--chunk-rows", type=click.IntRange(min=1000), default=131_072, show_default=True)
@click.option(
    "--errors",
    "errors_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also write every rejected value to this CSV (row, field, error).",
)
@click.pass_context
def score(
    ctx: click.Context,
    file: Path,
    output: Path,
    model_path: Path | None,
    chunk_rows: int,
    errors_path: Path | None,
) -> None:
    """Score customers: eight tag scores, hits and a persona profile with its reason each.

    Streams in chunks, so files larger than memory work.
    """
    settings = _settings(ctx)
    engine = load_engine(settings, model_path)
    fmt = source_format(file)
    out_fmt = source_format(output)
    total = _count_rows(file, fmt)
    bar = tqdm(total=total, desc="score", unit="row", unit_scale=True, file=sys.stderr)
    scored = rejected = 0
    all_errors: list[RowError] = []
    ignored: dict[str, str] = {}
    with ResultWriter(output, out_fmt, engine.grid) as writer:
        for part in _stream(file, engine.grid, chunk_rows):
            ignored = ignored or part.ignored
            if len(part.batch):
                writer.write(engine.score(part.batch))
            scored += len(part.batch)
            rejected += len({e.row for e in part.errors})
            all_errors.extend(part.errors)
            bar.update(part.rows_read)
    bar.close()
    report_rejects(str(file), all_errors, ignored, fmt=fmt)
    if errors_path is not None:
        _write_errors(errors_path, all_errors)
    click.echo(f"scored {scored} customers into {output}; rejected {rejected} rows", err=True)
    if scored == 0 and rejected:
        sys.exit(1)


def _stream(file: Path, grid: Grid, chunk_rows: int) -> Iterator[LoadResult]:
    return iter_customers(file, grid, chunk_rows=chunk_rows)


def _count_rows(file: Path, fmt: str) -> int | None:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return int(pq.ParquetFile(file).metadata.num_rows)
        except Exception:  # noqa: BLE001 - the reader reports a broken file properly later
            return None
    return None


def _write_errors(path: Path, errors: list[RowError]) -> None:
    import csv

    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["row", "field", "error"])
        for e in errors:
            w.writerow([e.row, e.field, e.error])


@click.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--cv",
    "cv_folds",
    type=click.IntRange(min=2),
    default=None,
    help="Cross-validate on FILE itself (out-of-fold models) instead of the saved model.",
)
@click.option(
    "--model", "model_path", type=click.Path(path_type=Path, dir_okay=False), default=None
)
@click.pass_context
def evaluate(
    ctx: click.Context, file: Path, as_json: bool, cv_folds: int | None, model_path: Path | None
) -> None:
    """Evaluate the grid on customers with known outcomes (format of bank-train.csv, column y)."""
    settings = _settings(ctx)
    grid = _grid(settings)
    loaded = load_customers(file, grid, outcomes=True)
    report_rejects(str(file), loaded.errors, {}, fmt=source_format(file))
    if len(loaded.batch) == 0:
        raise DataError(f"{file}: no usable rows to evaluate")
    if cv_folds:
        with tqdm(total=cv_folds, desc="cross-validate", unit="fold", file=sys.stderr) as bar:
            result, y = cross_validated(
                grid,
                loaded.batch,
                folds=cv_folds,
                random_state=settings.random_state,
                on_fold=bar.update,
            )
    else:
        engine = load_engine(settings, model_path)
        result = engine.score(loaded.batch)
        tag = next(t for t, s in grid.tags.items() if s.kind == "propensity")
        y = prop.target_vector(grid, loaded.batch, tag)
    summary = summarise(result, y)
    if as_json:
        click.echo(json.dumps(summary, ensure_ascii=False))
        return
    click.echo(render_summary(summary, source="cross-validated" if cv_folds else "saved model"))


def render_summary(summary: dict[str, Any], *, source: str) -> str:
    """A terminal report of an evaluation."""
    lines = [
        f"customers {summary['customers']}, base conversion {summary['base_rate']:.2%}, "
        f"propensity AUC {summary['auc']} ({source})",
        "",
        "hits  customers  conversion",
    ]
    for h, row in summary["by_hits"].items():
        lines.append(f"{h:>4}  {row['customers']:>9}  {row['rate']:>9.2%}")
    ge = next(v for k, v in summary.items() if k.startswith("ge"))
    lines += [
        "",
        f">=5 hits: {ge['share']:.2%} of customers convert at {ge['rate']:.2%}, "
        f"{ge['lift']:.2f}x the base rate",
    ]
    return "\n".join(lines)


def profile_table(summary: dict[str, Any], *, limit: int = 56) -> str:
    """The profiles with customers, sorted by customers, as a fixed-width table."""
    rows = sorted((p for p in summary["profiles"] if p["customers"]), key=lambda p: -p["customers"])
    out = [f"{'profile':<9} {'customers':>9} {'conversion':>10}  name"]
    for p in rows[:limit]:
        out.append(f"{p['id']:<9} {p['customers']:>9} {p['rate']:>10.2%}  {p['name']}")
    return "\n".join(out)


@click.command()
@click.option("--retrain", is_flag=True, help="Fit the model again even if one exists.")
@click.pass_context
def demo(ctx: click.Context, retrain: bool) -> None:
    """End to end on the shipped customers: train if needed, score, select, report."""
    settings = _settings(ctx)
    if retrain or not settings.resolved_model_path.exists():
        click.echo("no model yet: training on the shipped UCI data (demo customers held out) ...")
        model = train_default(settings)
        auc = model.metadata["cross_validation"]["propensity"]["auc"]
        click.echo(f"model saved to {settings.resolved_model_path}; cross-validated AUC {auc:.4f}")
    engine = load_engine(settings)
    path = settings.demo_customers_file
    loaded = load_customers(path, engine.grid, outcomes=True)
    report_rejects(str(path), loaded.errors, {}, fmt="csv")
    result = engine.score(loaded.batch)
    tag = next(t for t, s in engine.grid.tags.items() if s.kind == "propensity")
    summary = summarise(result, prop.target_vector(engine.grid, loaded.batch, tag))
    click.echo(
        f"\n{len(loaded.batch)} demo customers from {path} (real UCI rows, not trained on)\n"
    )
    click.echo(render_summary(summary, source="held-out demo customers"))
    click.echo("\n" + profile_table(summary))
    first = result.explain(int(np.argmax(result.hit_counts)))
    click.echo(f"\nexample: {first['customer_id']}: {first['reason_zh']}")
