"""Campaign executors: worker processes (spawn) and a Dask cluster build the same calls as
the inline executor, and a worker killed mid-build loses and duplicates nothing."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from scripts_engine import campaigns as camp
from scripts_engine import executors as ex
from scripts_engine.config import Settings
from scripts_engine.db import repository as repo
from scripts_engine.db.models import Call, CallDocument, Campaign, Chunk
from scripts_engine.db.session import Database
from tests.db.test_campaigns import NOW, OPTIONS, count_calls, load, toolkit

__all__ = ["toolkit"]

pytestmark = pytest.mark.slow


def settings_for(db_url: str, tmp_path: Path, saved_model: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state", database_url=db_url, model_path=saved_model)


def plan(db: Database, ids: list[str], size: int) -> str:
    """A campaign over ``ids`` whose hash-chosen control group is neither empty nor everyone
    (25% of 12 customers is empty 3% of the time: such a campaign is planned again)."""
    pct = float(OPTIONS["holdout_pct"])  # type: ignore[arg-type]
    for _ in range(100):
        cid = camp.start_campaign(db=db, name="x", options={**OPTIONS, "as_of": "2026-05-12"},
                                  customer_ids=ids, chunk_size=size, created_by=None, now=NOW)  # fmt: skip
        if len({camp.in_control(cid, c, pct) for c in ids}) == 2:
            return cid
    raise AssertionError("no campaign id gave a mixed control group")


def calls_of(db: Database, campaign_id: str) -> dict[str, Any]:
    """What was built, by customer, without the campaign-specific parts (ids, times)."""
    with db.read() as s:
        stmt = (
            select(Call.customer_id, Call.group, Call.profile_id, CallDocument.script)
            .join(CallDocument, CallDocument.call_id == Call.id)
            .where(Call.campaign_id == campaign_id)
        )
        return {c: (g, p, script["text"]) for c, g, p, script in s.execute(stmt)}


def finished(db: Database, campaign_id: str) -> tuple[str, int, int]:
    with db.read() as s:
        c = s.get(Campaign, campaign_id)
        assert c is not None
        return c.status, c.done, c.failed


def inline_build(db: Database, toolkit: camp.Toolkit, campaign_id: str) -> dict[str, Any]:
    """What the inline builder makes of the same campaign (build_chunk is pure)."""
    with db.read() as s:
        c = s.get(Campaign, campaign_id)
        assert c is not None
        options = dict(c.options)
        ids = [i for ch in s.scalars(select(Chunk).where(Chunk.campaign_id == campaign_id))
               for i in ch.customer_ids]  # fmt: skip
        records = [r.record for r in repo.get_customers(session=s, customer_ids=ids).values()]
    result = camp.build_chunk(toolkit, campaign_id, options, records)
    return {c["customer_id"]: (c["group"], c["profile_id"], c["script"]["text"])
            for c in result.calls}  # fmt: skip


@pytest.fixture
def inline_reference(db: Database, toolkit: camp.Toolkit) -> tuple[list[str], Any]:
    ids = load(db, toolkit, 12)
    return ids, lambda cid: inline_build(db, toolkit, cid)


def like_inline(db: Database, campaign_id: str, reference: Any) -> None:
    built = calls_of(db, campaign_id)
    assert built == reference(campaign_id) and len(built) == 12
    assert {g for g, *_ in built.values()} == {"model", "control"}
    assert finished(db, campaign_id) == ("ready", 12, 0)


def pending_tasks(db: Database, campaign_id: str) -> list[tuple[str, int]]:
    with db.read() as s:
        stmt = select(Chunk.index).where(Chunk.campaign_id == campaign_id)
        return [(campaign_id, int(i)) for i in s.scalars(stmt)]


def test_local_workers_build_what_inline_builds(
    db: Database, db_url: str, tmp_path: Path, saved_model: Path, inline_reference: Any
) -> None:
    ids, reference = inline_reference
    cid = plan(db, ids, 4)
    executor = ex.LocalExecutor(settings_for(db_url, tmp_path, saved_model), workers=2,
                                audio=False)  # fmt: skip
    try:
        assert executor.run(pending_tasks(db, cid)) == 3
        assert executor.run(pending_tasks(db, cid)) == 0  # done chunks are not built again
    finally:
        executor.close()
    like_inline(db, cid, reference)


def test_dask_cluster_builds_what_inline_builds(
    db: Database, db_url: str, tmp_path: Path, saved_model: Path, inline_reference: Any
) -> None:
    ids, reference = inline_reference
    cid = plan(db, ids, 4)
    settings = settings_for(db_url, tmp_path, saved_model)
    with ex.local_cluster(2) as cluster:
        executor = ex.DaskExecutor(settings, address=cluster, audio=False)
        try:
            assert executor.run(pending_tasks(db, cid)) == 3
        finally:
            executor.close()
    like_inline(db, cid, reference)


def test_a_killed_worker_loses_and_duplicates_nothing(
    db: Database, db_url: str, tmp_path: Path, saved_model: Path, toolkit: camp.Toolkit
) -> None:
    ids = load(db, toolkit, 24)
    cid = plan(db, ids, 2)  # 12 chunks
    executor = ex.LocalExecutor(settings_for(db_url, tmp_path, saved_model), workers=2,
                                audio=False)  # fmt: skip
    killed: list[int] = []

    def kill_one_worker() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            pool = executor._pool
            with db.read() as s:
                started = s.scalar(select(func.count()).where(
                    Chunk.campaign_id == cid, Chunk.attempt > 0).select_from(Chunk))  # fmt: skip
                pending = s.scalar(select(func.count()).where(
                    Chunk.campaign_id == cid, Chunk.status == "pending").select_from(Chunk))  # fmt: skip
            if pool is not None and started and pending and pool._processes:
                pid = next(iter(pool._processes))
                os.kill(pid, signal.SIGKILL)
                killed.append(int(pending or 0))
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    try:
        executor.run(pending_tasks(db, cid))
    finally:
        killer.join()
        executor.close()
    assert killed and killed[0] > 0  # a worker died while chunks were still pending
    if any(status == "pending" for status in _statuses(db, cid)):
        assert camp.run_pending(db=db, toolkit=toolkit) >= 0
    assert count_calls(db, cid) == (24, 24)
    assert finished(db, cid) == ("ready", 24, 0)


def _statuses(db: Database, campaign_id: str) -> list[str]:
    with db.read() as s:
        return list(s.scalars(select(Chunk.status).where(Chunk.campaign_id == campaign_id)))
