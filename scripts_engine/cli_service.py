"""Service commands: ``serve``, ``keys create|list|revoke``, ``db upgrade``, ``campaign``.

``serve --demo`` is what ``make run`` does: migrate, train the model if there is none, load
the shipped demo customers, plan a demo campaign (built in the background by the server),
then serve the API with its interactive docs on 127.0.0.1 and say how to get a key.
The web layer is imported only inside ``serve`` (the engine never imports it at module level).
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from scripts_engine.config import Settings, cli_command, get_settings
from scripts_engine.db import repository as repo
from scripts_engine.db.migrate import upgrade
from scripts_engine.db.session import Database, database_url, open_database, write_transaction
from scripts_engine.stamps import key_stamp

if TYPE_CHECKING:
    from scripts_engine.scoring import Engine

DEMO_CAMPAIGN = "Demo: shipped customers"


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj if isinstance(ctx.obj, Settings) else get_settings()


def _db(settings: Settings) -> Database:
    """The database, migrated; a database that cannot be reached is one line that says which
    (its password hidden) and why, not a traceback."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    db = open_database(settings)
    try:
        upgrade(db)
    except OperationalError as exc:
        db.dispose()
        where = make_url(database_url(settings)).render_as_string(hide_password=True)
        why = str(exc.orig or exc).strip().splitlines()[0]
        raise click.ClickException(f"cannot use the database {where}: {why}") from None
    return db


def register(group: click.Group) -> None:
    group.add_command(serve)
    group.add_command(keys)
    group.add_command(db_group)
    group.add_command(campaign)


def ensure_model(settings: Settings) -> Engine:
    """The engine with the saved model; the default one is trained first if there is none,
    or if the saved one no longer fits."""
    from scripts_engine.cli_core import load_engine

    return load_engine(settings)


def prepare_demo(settings: Settings, db: Database, engine: Engine) -> str | None:
    """Load the demo customers (scored, as an upsert stores them), plan the demo campaign
    (once)."""
    from scripts_engine.campaigns import start_campaign
    from scripts_engine.features import load_customers
    from scripts_engine.scoring import model_version

    now = datetime.now(UTC)
    with db.read() as session:
        have = repo.count_customers(session=session)
        existing = [c for c in repo.list_campaigns(session=session) if c.name == DEMO_CAMPAIGN]
    if not have:
        loaded = load_customers(settings.demo_customers_file, engine.grid)
        records = loaded.batch.stored_records()
        scoring = engine.stored_scoring(loaded.batch)
        version = model_version(settings)
        write_transaction(db, lambda s: repo.upsert_customers(
            session=s, records=records, now=now, scoring=scoring, model_version=version))  # fmt: skip
        click.echo(f"loaded {len(records)} demo customers from {settings.demo_customers_file}")
    if existing:
        return existing[0].id
    with db.read() as session:
        ids = repo.all_customer_ids(session=session)
    options = {"channel": "call", "moment": "auto", "voice": "auto", "min_hits": 5,
               "holdout_pct": 10.0, "audio_formats": ["wav8k"], "customers": "all"}  # fmt: skip
    return start_campaign(db=db, name=DEMO_CAMPAIGN, options=options, customer_ids=ids,
                          chunk_size=settings.campaign_chunk_size, created_by=None, now=now)  # fmt: skip


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--demo", is_flag=True, help="Load the demo customers and plan a demo campaign.")
@click.option("--workers", default=1, show_default=True, type=int, help="Server processes.")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, demo: bool, workers: int) -> None:
    """Serve the dialler REST API (migrates the database first)."""
    settings = _settings(ctx)
    db = _db(settings)
    engine = ensure_model(settings)
    demo_id = prepare_demo(settings, db, engine) if demo else None
    demo_state = None
    if demo_id:
        with db.read() as session:
            found = repo.get_campaign(session=session, campaign_id=demo_id)
        demo_state = "builds now" if found is None or found.status == "building" else found.status
    db.dispose()
    uvicorn: Any = importlib.import_module("uvicorn")
    observability: Any = importlib.import_module("api.observability")
    main: Any = importlib.import_module("api.main")
    observability.configure_logging(json_logs=settings.log_json)
    # a wildcard address is where the server listens, not where a browser can go
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, host)
    base = f"http://{shown}:{port}"
    where = f" (listening on {host}:{port})" if shown != host else ""
    click.echo(f"\nscripts-engine API on {base}{where}  (interactive docs: {base}/docs)")
    click.echo(f"web workspace: {base}/web/  (sign in with an admin, writer or qa key)")
    cli = cli_command()
    click.echo(f"get a key:   {cli} keys create --role admin   (admin|dialler|writer|qa)")
    click.echo("             a dialler key prints its outcome-signing secret on a second line")
    if demo_id:
        click.echo(f"demo campaign {demo_id}: GET {base}/v1/campaigns/{demo_id} ({demo_state})")
    click.echo("calls are handed out only 09:00-21:00 in each customer's time zone\n")
    if workers > 1:
        if settings.render_workers is None:
            # the server processes use the cores already: each renders in-process
            os.environ["SCRIPTS_ENGINE_RENDER_WORKERS"] = "0"
        # every process's metrics in each scrape of /metrics (prometheus_client's
        # multiprocess mode: each process writes its values to files in this folder)
        metrics_dir = tempfile.mkdtemp(prefix="scripts-engine-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        try:
            uvicorn.run("api.main:create_served_app", factory=True, host=host, port=port,
                        workers=workers, log_config=None, access_log=False)  # fmt: skip
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    else:
        uvicorn.run(main.create_app(settings), host=host, port=port, log_config=None,
                    access_log=False)  # fmt: skip


@click.group()
def keys() -> None:
    """API keys: create (shown once), list, revoke."""


@keys.command("create")
@click.option("--role", required=True, type=click.Choice(repo.ROLES))
@click.option("--name", default="", help="Who or what uses the key.")
@click.pass_context
def keys_create(ctx: click.Context, role: str, name: str) -> None:
    """Create a key and print it (only its hash is stored: keep it now). A dialler key also
    gets its outcome-signing secret, printed on the second line (shown once too)."""
    from scripts_engine.signing import issue_secret, master_key

    settings = _settings(ctx)
    db = _db(settings)
    now = datetime.now(UTC)
    master = master_key(settings)

    def run(s: Any) -> tuple[str, str | None]:
        row, key = repo.create_api_key(session=s, role=role, name=name, now=now)
        secret = None
        if role == "dialler":
            secret = issue_secret(s, master=master, api_key_id=row.id, now=now)
        return key, secret

    key, secret = write_transaction(db, run)
    db.dispose()
    click.echo(key)
    if secret is not None:
        click.echo(secret)


@keys.command("rotate-signing")
@click.argument("prefix")
@click.pass_context
def keys_rotate_signing(ctx: click.Context, prefix: str) -> None:
    """Print a new outcome-signing secret for a dialler key; its older secrets keep working
    for signing_rotation_hours (default 24), then stop."""
    from datetime import timedelta

    from scripts_engine.signing import issue_secret, master_key

    settings = _settings(ctx)
    db = _db(settings)
    now = datetime.now(UTC)
    master = master_key(settings)
    hours = settings.signing_rotation_hours

    def run(s: Any) -> str | None:
        row = repo.get_api_key(session=s, ident=prefix)
        if row is None or row.revoked_at is not None or row.role != "dialler":
            return None
        return issue_secret(s, master=master, api_key_id=row.id, now=now, overlap_hours=hours)

    secret = write_transaction(db, run)
    db.dispose()
    if secret is None:
        raise click.ClickException(f"no live dialler key '{prefix}'")
    key_stamp(settings.state_dir).bump()  # the servers verify the key again
    click.echo(secret)
    until = now + timedelta(hours=hours)
    click.echo(f"older secrets of {prefix} work until {until:%Y-%m-%d %H:%M} UTC", err=True)


@keys.command("list")
@click.pass_context
def keys_list(ctx: click.Context) -> None:
    """Every key's prefix, role, name and state."""
    db = _db(_settings(ctx))
    with db.read() as session:
        for k in repo.list_api_keys(session=session):
            state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
            click.echo(f"{k.id:>4}  {k.prefix}  {k.role:<8} {state:<18} {k.name}")
    db.dispose()


@keys.command("revoke")
@click.argument("prefix")
@click.pass_context
def keys_revoke(ctx: click.Context, prefix: str) -> None:
    """Revoke a key by prefix (or id); effective for the next request (at once in the server
    processes of this state folder, within auth_cache_s elsewhere)."""
    settings = _settings(ctx)
    db = _db(settings)
    now = datetime.now(UTC)
    found = write_transaction(
        db, lambda s: repo.revoke_api_key(session=s, ident=prefix, now=now) is not None
    )
    db.dispose()
    if not found:
        raise click.ClickException(f"no key '{prefix}'")
    key_stamp(settings.state_dir).bump()  # the servers forget the key now
    click.echo(f"revoked {prefix}")


@click.group("db")
def db_group() -> None:
    """The database."""


@db_group.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply the migrations (the server does this on start too)."""
    settings = _settings(ctx)
    _db(settings).dispose()
    click.echo("database is up to date")


@click.group()
def campaign() -> None:
    """Campaigns without the server."""


@campaign.command("status")
@click.argument("campaign_id", required=False)
@click.pass_context
def campaign_status(ctx: click.Context, campaign_id: str | None) -> None:
    """Progress of one campaign, or of the latest ones."""
    db = _db(_settings(ctx))
    with db.read() as session:
        rows = repo.list_campaigns(session=session)
        for c in rows:
            if campaign_id and c.id != campaign_id:
                continue
            counts = repo.status_counts(session=session, campaign_id=c.id)
            click.echo(f"{c.id}  {c.status:<9} {c.done}/{c.total} done, {c.failed} failed  "
                       f"calls {counts}  {c.name}")  # fmt: skip
    db.dispose()
