"""Refresh a built campaign's waiting calls after a template version went live.

Calls are rendered and synthesised when a campaign is built, so a call built before a change
still carries the old text. :func:`refresh_campaign` finds the campaign's calls that are still
``ready`` (never handed out, or handed back) whose script names a template version that is no
longer live, builds them again with :func:`scripts_engine.campaigns.build_chunk` (the same pure
function the build uses: same scoring, group and voice, the live templates) and replaces their
script, record and audio, only if the call is still ``ready`` when the new rows are written.
The record keeps the id of the script it replaced. Leased, blocked and done calls are never
touched: what was handed to a dialler is what the record says was said.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from scripts_engine.campaigns import Toolkit, build_chunk
from scripts_engine.db import repository as repo
from scripts_engine.db.errors import NotFound
from scripts_engine.db.models import Call
from scripts_engine.db.session import Database, write_transaction

BATCH = 100


def is_stale(record: Mapping[str, Any], live: Mapping[str, str]) -> bool:
    """True if the call's script used a template version that is not the live one."""
    return any(
        live.get(str(t.get("template"))) not in (None, t.get("version"))
        for t in record.get("templates") or []
    )


def refresh_campaign(
    *, db: Database, toolkit: Toolkit, campaign_id: str, now: datetime, every: bool = False
) -> dict[str, Any]:
    """Re-render the campaign's stale ready calls; returns counts (see the module docstring).

    Staleness is judged against the renderer's templates. A change of ``styles.yaml`` leaves
    no template version behind, so ``every`` re-renders every ready call.

    Raises:
        NotFound: no such campaign.
    """
    with db.read() as session:
        campaign = repo.get_campaign(session=session, campaign_id=campaign_id)
        if campaign is None:
            raise NotFound(f"no campaign '{campaign_id}'")
        options = dict(campaign.options)
        rows = session.execute(
            select(Call.id, Call.customer_id, Call.record).where(
                Call.campaign_id == campaign_id, Call.status == "ready")
        ).all()  # fmt: skip
    toolkit.renderer.refresh(force=True)
    live = {t.name: t.version for t in toolkit.renderer.pack}
    stale = {cid: (customer, rec) for cid, customer, rec in rows
             if every or is_stale(rec, live)}  # fmt: skip
    refreshed, failed = 0, []
    items = list(stale.items())
    for start in range(0, len(items), BATCH):
        part = items[start : start + BATCH]
        with db.read() as session:
            customers = repo.get_customers(session=session, customer_ids=[c for _, (c, _) in part])
        records = [customers[c].record for _, (c, _) in part if c in customers]
        result = build_chunk(toolkit, campaign_id, options, records)
        failed += result.failed
        previous = {cid: rec.get("script_id") for cid, (_, rec) in part}
        refreshed += write_transaction(db, partial(_replace, calls=result.calls,
                                                   audio=result.audio, previous=previous, now=now))  # fmt: skip
    return {"campaign_id": campaign_id, "ready": len(rows), "stale": len(stale),
            "refreshed": refreshed, "failed": failed}  # fmt: skip


def _replace(
    session: Session, *, calls: list[dict[str, Any]], audio: list[dict[str, Any]],
    previous: Mapping[str, Any], now: datetime,
) -> int:  # fmt: skip
    repo.insert_audio_files(session=session, files=audio)
    done = 0
    for call in calls:
        if call["id"] not in previous:
            continue
        record = {**call["record"], "replaces_script": previous[call["id"]],
                  "refreshed_at": now.isoformat()}  # fmt: skip
        result = session.execute(
            update(Call)
            .where(Call.id == call["id"], Call.status == "ready")
            .values(script=call["script"], record=record, audio=call["audio"],
                    profile_id=call["profile_id"], group=call["group"])
        )  # fmt: skip
        done += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return done
