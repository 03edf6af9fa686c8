"""CLI commands of the scripts subsystem: ``lint`` and ``render``.

``lint [PATH] [--json]`` checks the template pack (see :mod:`scripts_engine.lint`) and exits
non-zero on any finding. ``render --customers FILE`` scores the customers (for their profiles
and the order of the value blocks) and prints their scripts; ``--profile ID`` or
``--profile all`` chooses the profile instead (with ``all``: every profile for each customer).
"""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

import click

from scripts_engine.config import Settings, get_settings
from scripts_engine.context import CHANNELS, MOMENTS
from scripts_engine.errors import DataError, ModelError, ScriptsEngineError
from scripts_engine.features import load_customers, source_format
from scripts_engine.lint import lint as lint_pack
from scripts_engine.render import Renderer
from scripts_engine.script import Script


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj if isinstance(ctx.obj, Settings) else get_settings()


def register(group: click.Group) -> None:
    group.add_command(lint)
    group.add_command(render)


@click.command()
@click.argument("path", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def lint(ctx: click.Context, path: Path | None, as_json: bool) -> None:
    """Check script templates (default: the personas folder); exit 1 on any finding."""
    settings = _settings(ctx)
    report = lint_pack(path or settings.personas_dir, default_personas=settings.personas_dir)
    if as_json:
        click.echo(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        for finding in report.findings:
            click.secho(f"{report.path}: {finding}", fg="red")
        state = "ok" if report.ok else f"{len(report.findings)} problem(s)"
        click.echo(f"lint {report.path}: {state}; {report.rendered} scripts rendered and checked")
    if not report.ok:
        sys.exit(1)


def _print_script(script: Script, name_zh: str) -> None:
    click.secho(
        f"# {script.customer_id or '-'} · {script.profile_id or 'generic'} {name_zh} · "
        f"{script.channel} · {script.moment} · {script.style} · {script.offer} · {script.id}",
        fg="cyan",
    )
    click.echo(script.text)
    for seg in script.segments:
        if seg.stage == "objection":
            click.echo(f"  [{seg.key}] {seg.text}")
    click.echo("")


@click.command()
@click.option(
    "--customers", "customers_file", required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Customers (CSV, Parquet or JSON lines).",
)  # fmt: skip
@click.option("--profile", help="A profile id (P-ABDEH) or 'all'; default: the scored profile.")
@click.option("--channel", type=click.Choice(CHANNELS), default="call", show_default=True)
@click.option(
    "--moment", type=click.Choice(("auto", *MOMENTS)), default="auto", show_default=True,
    help="The moment that opens the call; auto picks it from the customer's dates.",
)  # fmt: skip
@click.option("--style", help="temperament.interest (e.g. driver.travel); default: from data.")
@click.option("--as-of", "as_of", type=click.DateTime(["%Y-%m-%d"]), help="Script date.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many customers.")
@click.option("--generic", is_flag=True, help="The non-persona script (control group).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per script (JSON lines).")
@click.pass_context
def render(
    ctx: click.Context, customers_file: Path, profile: str | None, channel: str, moment: str,
    style: str | None, as_of: Any, limit: int | None, generic: bool, as_json: bool,
) -> None:  # fmt: skip
    """Render call or chat scripts for customers."""
    settings = _settings(ctx)
    renderer = Renderer(settings.personas_dir)
    loaded = load_customers(customers_file, renderer.grid)
    fmt = source_format(customers_file)
    for e in loaded.errors[:20]:
        where = (
            f"{customers_file}:{e.row + 1}" if fmt == "csv" else f"{customers_file}: row {e.row}"
        )
        click.secho(f"{where}: {e.field}: {e.error}", fg="red", err=True)
    batch = loaded.batch
    if len(batch) == 0:
        raise DataError(f"{customers_file}: no usable customers")
    n = min(len(batch), limit or (1 if profile == "all" else len(batch)))
    day: date = as_of.date() if as_of else date.today()
    scores: Any = None
    try:
        from scripts_engine.cli_core import load_engine

        scores = load_engine(settings).score(batch.take(slice(0, n)))
    except (ModelError, FileNotFoundError, ScriptsEngineError) as exc:
        if profile is None and not generic:
            raise ModelError(
                f"scoring is needed to choose profiles ({exc}); run `scripts-engine train` "
                "or pass --profile ID"
            ) from None
        click.secho(f"note: no scores ({exc}); value blocks keep the grid order", err=True)
    failures = 0
    for i in range(n):
        record = batch.record(i)
        explained = scores.explain(i) if scores is not None else None
        tag_scores = explained["tags"] if explained else None
        if profile == "all":
            targets: list[Any] = list(renderer.profiles)
        elif profile:
            targets = [renderer.profiles.get(profile)]
        else:
            targets = [explained["profile"]["id"] if explained else None]
        for target in targets:
            try:
                script = renderer.render_script(
                    record, target, tag_scores, channel=channel, moment=moment, style=style,
                    as_of=day, generic=generic,
                )  # fmt: skip
            except ScriptsEngineError as exc:
                failures += 1
                click.secho(f"{record.get('customer_id')}: {exc}", fg="red", err=True)
                continue
            if as_json:
                click.echo(script.to_json())
            else:
                pid = script.profile_id
                name = renderer.profiles.get(pid).name_zh if pid else ""
                _print_script(script, name)
    if failures:
        sys.exit(1)
