"""Refresh waiting calls after a live change, so the next claimed call says the live text.

Calls are rendered and synthesised when a campaign is built, so a call built before a publish
or a rollback (of a template or of ``styles.yaml``) still carries the old text. Three paths
bring the live versions to it, all through :func:`scripts_engine.campaigns.build_chunk` (the
same pure function the build uses: same scoring, group and voice, the live templates):

- **in the background** (:class:`WaitingRefresher`, run by the campaign builder's thread after
  a live change and every few seconds): the ``ready`` calls of every campaign whose
  ``live_set`` (the digest of the pack and styles they were rendered with) differs from the
  renderer's, ``BATCH`` at a time. Each is compared exactly (:func:`is_stale`: a template
  version or the styles version it names is not the live one); a stale call is built again
  and replaced, the others only get the new digest. Progress is in the database (a call
  leaves the set once checked), so a restart resumes where it stopped;
  :func:`waiting_progress` counts what is left;
- **at claim time** (:func:`renew_leased`, called by :mod:`scripts_engine.claims` after the
  lease is committed and before the answer is sent): a claimed call whose digest differs is
  checked the same way and, if stale, rebuilt and handed out with the live text. This is the
  guarantee; the background pass makes it rare. It costs one primary-key read per claim when
  nothing changed;
- **on request** (:func:`refresh_campaign`, ``POST /v1/campaigns/{id}/refresh-scripts``).

Only ``ready`` calls (and, at claim time, the calls this claim just leased) are touched: a
call handed to a dialler keeps what it was given, since the record is what was said. A
replaced call's record keeps the id of the script it replaced and says which path replaced
it. A call that cannot be built again (its customer was deleted or no longer qualifies, a
render error) keeps its approved script and gets the new digest, so it is not retried on
every pass; it is counted as ``failed``.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from scripts_engine.campaigns import ChunkResult, Toolkit, build_chunk, renderer_live_set
from scripts_engine.db import repository as repo
from scripts_engine.db.errors import NotFound
from scripts_engine.db.models import Call, CallDocument, Campaign
from scripts_engine.db.session import Database, write_transaction

log = logging.getLogger("scripts_engine.refresh")
#: calls built again per transaction (and per background step)
BATCH = 100
#: a clean background check is trusted this long before the calls are looked at again
RECHECK_S = 60.0

#: (call id, customer id, record) of a call to check
Row = tuple[str, str, dict[str, Any]]


def live_of(toolkit: Toolkit) -> tuple[str, dict[str, str], str | None]:
    """``(digest, template versions by name, styles version)`` the renderer renders with now
    (it reloads first if the live set changed)."""
    renderer = toolkit.renderer
    renderer.refresh()
    return (renderer_live_set(renderer), {t.name: t.version for t in renderer.pack},
            renderer.styles_version)  # fmt: skip


def is_stale(
    record: Mapping[str, Any], live: Mapping[str, str], styles_version: str | None = None
) -> bool:
    """True if the call's script used a template version, or a ``styles.yaml`` version, that
    is not the live one. Records made before the styles version was recorded are judged on
    their templates only."""
    if any(
        live.get(str(t.get("template"))) not in (None, t.get("version"))
        for t in record.get("templates") or []
    ):
        return True
    used = record.get("styles_version")
    return bool(used and styles_version and used != styles_version)


def _rebuild(db: Database, toolkit: Toolkit, campaign_id: str, rows: Sequence[Row]) -> ChunkResult:
    """The calls of ``rows`` built again from their customers' current records."""
    with db.read() as session:
        campaign = repo.get_campaign(session=session, campaign_id=campaign_id)
        customers = repo.get_customers(session=session, customer_ids=[c for _, c, _ in rows])
    options = dict(campaign.options) if campaign is not None else {}
    records = [customers[c].record for _, c, _ in rows if c in customers]
    return build_chunk(toolkit, campaign_id, options, records)


def _write(
    session: Session, *, result: ChunkResult, rows: Sequence[Row], digest: str, now: datetime,
    via: str, leases: Mapping[str, datetime] | None = None,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Replace the rebuilt calls still waiting (``ready``; with ``leases``: still held by this
    claim's lease) and give every other checked call the digest; returns the replaced calls."""
    repo.insert_audio_files(session=session, files=result.audio)
    previous = {cid: rec.get("script_id") for cid, _, rec in rows}
    built = {c["id"]: c for c in result.calls if c["id"] in previous}
    replaced: dict[str, dict[str, Any]] = {}
    for cid in previous:
        where = [Call.id == cid]
        if leases is None:
            where.append(Call.status == "ready")
        else:
            where += [Call.status == "leased", Call.lease_until == leases[cid]]
        call = built.get(cid)
        if call is None:  # could not be built again: keeps its approved script
            session.execute(update(Call).where(*where).values(live_set=digest))
            continue
        result_ = session.execute(
            update(Call).where(*where).values(
                audio=call["audio"], profile_id=call["profile_id"], group=call["group"],
                live_set=call["live_set"],
            )
        )  # fmt: skip
        if not result_.rowcount:  # type: ignore[attr-defined]
            continue  # handed out meanwhile: what the dialler got stays the record
        record = {**call["record"], "replaces_script": previous[cid], "refreshed_at":
                  now.isoformat(), "refreshed_by": via}  # fmt: skip
        session.execute(
            update(CallDocument)
            .where(CallDocument.call_id == cid)
            .values(script=call["script"], record=record, payload=call["payload"])
        )  # fmt: skip
        replaced[cid] = call
    return replaced


def _refresh_rows(
    db: Database, toolkit: Toolkit, rows_by_campaign: Mapping[str, Sequence[Row]], *,
    live: tuple[str, dict[str, str], str | None], now: datetime, via: str, every: bool = False,
    leases: Mapping[str, datetime] | None = None,
) -> tuple[int, dict[str, dict[str, Any]], list[dict[str, str]]]:  # fmt: skip
    """Check, rebuild and write the rows; ``(stale, replaced calls, failures)``."""
    digest, versions, styles = live
    stale_n, failed = 0, []
    replaced: dict[str, dict[str, Any]] = {}
    for campaign_id, rows in rows_by_campaign.items():
        for start in range(0, len(rows), BATCH):
            part = rows[start : start + BATCH]
            stale = [r for r in part if every or is_stale(r[2], versions, styles)]
            stale_n += len(stale)
            result = ChunkResult([], [], 0, [])
            if stale:
                result = _rebuild(db, toolkit, campaign_id, stale)
                failed += result.failed
                built = {c["id"] for c in result.calls} | {f["customer_id"] for f in result.failed}
                failed += [{"customer_id": c, "error": "not built again (customer deleted or "
                            "no longer selected)"} for i, c, _ in stale
                           if i not in built and c not in built]  # fmt: skip
            replaced |= write_transaction(db, partial(_write, result=result, rows=part,
                                                      digest=digest, now=now, via=via,
                                                      leases=leases))  # fmt: skip
    return stale_n, replaced, failed


def _by_campaign(rows: Sequence[Any]) -> dict[str, list[Row]]:
    """``(call id, campaign id, customer id, record)`` rows grouped by campaign."""
    out: dict[str, list[Row]] = defaultdict(list)
    for cid, campaign_id, customer_id, record in rows:
        out[str(campaign_id)].append((str(cid), str(customer_id), dict(record or {})))
    return out


# --- on request ---------------------------------------------------------------------------


def refresh_campaign(
    *, db: Database, toolkit: Toolkit, campaign_id: str, now: datetime, every: bool = False
) -> dict[str, Any]:
    """Re-render the campaign's stale ready calls now; returns counts.

    With ``every``, every ready call is rebuilt, stale or not.

    Raises:
        NotFound: no such campaign.
    """
    with db.read() as session:
        if repo.get_campaign(session=session, campaign_id=campaign_id) is None:
            raise NotFound(f"no campaign '{campaign_id}'")
        rows = session.execute(
            select(Call.id, Call.customer_id, CallDocument.record)
            .join_from(Call, CallDocument)
            .where(Call.campaign_id == campaign_id, Call.status == "ready")
            .order_by(Call.id)
        ).all()  # fmt: skip
    toolkit.renderer.refresh(force=True)
    stale, replaced, failed = _refresh_rows(
        db, toolkit, _by_campaign([(i, campaign_id, c, r) for i, c, r in rows]),
        live=live_of(toolkit), now=now, via="request", every=every,
    )  # fmt: skip
    return {"campaign_id": campaign_id, "ready": len(rows), "stale": stale,
            "refreshed": len(replaced), "failed": failed}  # fmt: skip


# --- in the background ----------------------------------------------------------------------


def _unchecked(digest: str) -> Any:
    return (Call.status == "ready") & or_(Call.live_set.is_(None), Call.live_set != digest)


def refresh_waiting(
    *, db: Database, toolkit: Toolkit, now: datetime, limit: int = BATCH
) -> dict[str, Any]:
    """One background step: up to ``limit`` waiting calls not yet checked against the live
    set, checked and (if stale) rebuilt; returns counts (``checked`` 0: nothing left)."""
    live = live_of(toolkit)
    with db.read() as session:
        rows = session.execute(
            select(Call.id, Call.campaign_id, Call.customer_id, CallDocument.record)
            .join_from(Call, CallDocument)
            .where(_unchecked(live[0]))
            .order_by(Call.id)
            .limit(limit)
        ).all()  # fmt: skip
    stale, replaced, failed = _refresh_rows(
        db, toolkit, _by_campaign(rows), live=live, now=now,
        via="background",
    )  # fmt: skip
    return {"live_set": live[0], "checked": len(rows), "stale": stale,
            "refreshed": len(replaced), "failed": failed}  # fmt: skip


def waiting_progress(*, db: Database, toolkit: Toolkit, campaign_id: str) -> dict[str, Any]:
    """A campaign's waiting calls and how many are not yet checked against the live set.

    Raises:
        NotFound: no such campaign.
    """
    digest = live_of(toolkit)[0]
    with db.read() as session:
        if session.get(Campaign, campaign_id) is None:
            raise NotFound(f"no campaign '{campaign_id}'")
        ready, unchecked = session.execute(
            select(func.count(), func.count().filter(or_(Call.live_set.is_(None),
                                                         Call.live_set != digest)))
            .where(Call.campaign_id == campaign_id, Call.status == "ready")
        ).one()  # fmt: skip
    return {"campaign_id": campaign_id, "live_set": digest, "ready": int(ready),
            "unchecked": int(unchecked)}  # fmt: skip


class WaitingRefresher:
    """The background refresh as the campaign builder runs it: :meth:`step` until it answers
    0. A clean check is remembered for the live set it was made against (for
    ``RECHECK_S`` s, since other processes' builds may lag a live change), so an idle builder
    does not scan the waiting calls every few seconds."""

    def __init__(self, db: Database, toolkit: Toolkit, clock: Any):
        self.db, self.toolkit, self.clock = db, toolkit, clock
        self._clean: tuple[str, float] | None = None
        #: totals since start: checked, stale, refreshed, failed
        self.totals: dict[str, int] = dict.fromkeys(("checked", "stale", "refreshed", "failed"), 0)

    def step(self) -> int:
        """Check one batch; returns how many calls it checked."""
        self.toolkit.renderer.refresh()
        digest = renderer_live_set(self.toolkit.renderer)
        if self._clean is not None and self._clean[0] == digest:
            if time.monotonic() - self._clean[1] < RECHECK_S:
                return 0
        out = refresh_waiting(db=self.db, toolkit=self.toolkit, now=self.clock())
        for k in ("checked", "stale", "refreshed"):
            self.totals[k] += int(out[k])
        self.totals["failed"] += len(out["failed"])
        if out["failed"]:
            log.warning("background refresh: %d calls kept their script: %s",
                        len(out["failed"]), out["failed"][:3])  # fmt: skip
        self._clean = (digest, time.monotonic()) if not out["checked"] else None
        return int(out["checked"])


# --- at claim time --------------------------------------------------------------------------


def renew_leased(
    *, db: Database, toolkit: Toolkit, leases: Mapping[str, datetime], now: datetime
) -> dict[str, dict[str, Any]]:
    """Rebuild the just-leased calls whose script is stale (see the module docstring);
    returns the new call rows (``payload``, ``audio``, ...) by id, for the claim's answer.

    ``leases``: call id -> the lease's end, as the claim wrote it (a call whose lease changed
    meanwhile is left alone)."""
    if not leases:
        return {}
    live = live_of(toolkit)
    with db.read() as session:
        stmt = select(Call.id, Call.live_set).where(Call.id.in_(list(leases)))
        marks = {str(i): m for i, m in session.execute(stmt)}
        suspects = [i for i in leases if i in marks and marks[i] != live[0]]
        if not suspects:
            return {}
        rows = session.execute(
            select(Call.id, Call.campaign_id, Call.customer_id, CallDocument.record)
            .join_from(Call, CallDocument)
            .where(Call.id.in_(suspects))
        ).all()  # fmt: skip
    _, replaced, failed = _refresh_rows(
        db, toolkit, _by_campaign(rows), live=live, now=now,
        via="claim", leases=leases,
    )  # fmt: skip
    if failed:
        log.warning("claim-time refresh: %d calls handed out with their approved script: %s",
                    len(failed), failed[:3])  # fmt: skip
    return replaced
