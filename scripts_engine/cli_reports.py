"""``scripts-engine report --campaign ID [--json]``: the figures of ``GET /v1/reports/...``."""

from __future__ import annotations

import json

import click

from scripts_engine.config import Settings, get_settings
from scripts_engine.db.migrate import upgrade
from scripts_engine.db.session import open_database
from scripts_engine.reports import campaign_report, defect_report, format_report


def register(group: click.Group) -> None:
    group.add_command(report)


@click.command()
@click.option("--campaign", "campaign_id", required=True, help="The campaign's id (C-...).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@click.pass_context
def report(ctx: click.Context, campaign_id: str, as_json: bool) -> None:
    """A campaign's funnel, conversion by profile, tag and hit count, model-vs-control lift
    with 95% intervals, and defect rates per template version from QA reviews."""
    settings = ctx.obj if isinstance(ctx.obj, Settings) else get_settings()
    db = open_database(settings)
    try:
        upgrade(db)
        with db.read() as session:
            data = campaign_report(session, campaign_id)
            data["defects"] = defect_report(session, campaign_id=campaign_id)
    finally:
        db.dispose()
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))
    else:
        click.echo(format_report(data, data["defects"]))
