"""Campaign builds: chunks, resume after a restart without duplicates, attempt fencing,
idempotent build_chunk, the stable hash-chosen control group, min_hits."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from scripts_engine import campaigns as camp
from scripts_engine.config import ROOT, Settings
from scripts_engine.db import repository as repo
from scripts_engine.db.models import Call, Campaign
from scripts_engine.db.session import Database, open_database, write_transaction
from scripts_engine.render import Renderer
from scripts_engine.scoring import Engine
from scripts_engine.voice import get_catalog
from tests.api.conftest import demo_records

NOW = datetime(2026, 5, 12, 2, 0, tzinfo=UTC)
OPTIONS = {"channel": "call", "moment": "none", "voice": "auto", "min_hits": 0,
           "holdout_pct": 25.0, "audio_formats": ["wav8k"]}  # fmt: skip


@pytest.fixture(scope="module")
def toolkit(engine: Engine) -> camp.Toolkit:
    renderer = Renderer(ROOT / "personas", grid=engine.grid)
    return camp.Toolkit(engine, renderer, get_catalog(ROOT / "voices"), store=None)


def load(db: Database, toolkit: camp.Toolkit, n: int) -> list[str]:
    from scripts_engine.features import load_customers

    batch = load_customers(demo_records(n), toolkit.engine.grid).batch

    records = batch.stored_records()
    write_transaction(db, lambda s: repo.upsert_customers(session=s, records=records, now=NOW))
    return [r["customer_id"] for r in records]


def count_calls(db: Database, campaign_id: str) -> tuple[int, int]:
    with db.read() as s:
        n = s.scalar(select(func.count()).where(Call.campaign_id == campaign_id).select_from(Call))
        distinct = s.scalar(select(func.count(func.distinct(Call.customer_id))).where(
            Call.campaign_id == campaign_id))  # fmt: skip
    return int(n or 0), int(distinct or 0)


def test_resume_after_restart_without_duplicates(db: Database, toolkit: camp.Toolkit, db_url: str):
    ids = load(db, toolkit, 20)
    cid = camp.start_campaign(db=db, name="r", options=OPTIONS, customer_ids=ids, chunk_size=6,
                              created_by=None, now=NOW)  # fmt: skip
    assert camp.run_pending(db=db, toolkit=toolkit, max_chunks=2) == 2
    assert count_calls(db, cid) == (12, 12)
    # a "restart": a new process opens the database and resumes the chunks not done
    again = open_database(Settings(state_dir=Path("/nonexistent")), url=db_url)
    try:
        assert camp.run_pending(db=again, toolkit=toolkit) == 2
        assert camp.run_pending(db=again, toolkit=toolkit) == 0
    finally:
        again.dispose()
    assert count_calls(db, cid) == (20, 20)
    with db.read() as s:
        c = s.get(Campaign, cid)
        assert c is not None and (c.status, c.total, c.done, c.failed) == ("ready", 20, 20, 0)


def test_a_late_duplicate_never_overwrites(db: Database, toolkit: camp.Toolkit) -> None:
    ids = load(db, toolkit, 4)
    cid = camp.start_campaign(db=db, name="f", options=OPTIONS, customer_ids=ids, chunk_size=10,
                              created_by=None, now=NOW)  # fmt: skip
    first = camp._begin_attempt(db, cid, 0)  # a worker that stalls ...
    assert first is not None
    assert camp.run_chunk(db=db, toolkit=toolkit, campaign_id=cid, index=0)  # ... is overtaken
    attempt, options, chunk_ids = first
    late = camp.build_chunk(toolkit, cid, options, [{"customer_id": i} for i in chunk_ids])
    assert camp._finish(db, cid, 0, attempt, late, None) is False
    assert count_calls(db, cid) == (4, 4)


def test_build_chunk_is_pure_and_idempotent(db: Database, toolkit: camp.Toolkit) -> None:
    ids = load(db, toolkit, 8)
    with db.read() as s:
        records = [r.record for r in repo.get_customers(session=s, customer_ids=ids).values()]
    opts = {**OPTIONS, "as_of": "2026-05-12"}
    a = camp.build_chunk(toolkit, "C-same", opts, records)
    b = camp.build_chunk(toolkit, "C-same", opts, records)
    strip = [{k: v for k, v in c.items() if k != "created_at"} for c in a.calls]
    assert strip == [{k: v for k, v in c.items() if k != "created_at"} for c in b.calls]
    rec = a.calls[0]["record"]
    assert {"scoring", "templates", "context", "voice", "model_version", "audio"} <= set(rec)


def test_min_hits_filters(db: Database, toolkit: camp.Toolkit) -> None:
    ids = load(db, toolkit, 30)
    with db.read() as s:
        records = [r.record for r in repo.get_customers(session=s, customer_ids=ids).values()]
    opts = {**OPTIONS, "as_of": "2026-05-12", "min_hits": 3}
    result = camp.build_chunk(toolkit, "C-m", opts, records)
    assert all(len(c["record"]["scoring"]["hits"]) >= 3 for c in result.calls)
    assert result.filtered + len(result.calls) == 30


def test_holdout_is_stable_and_about_the_share() -> None:
    ids = [f"c{i}" for i in range(20_000)]
    picks = [camp.in_control("C-1", i, 10.0) for i in ids]
    assert picks == [camp.in_control("C-1", i, 10.0) for i in ids]
    assert 0.09 < sum(picks) / len(ids) < 0.11
    assert not any(camp.in_control("C-1", i, 0.0) for i in ids[:100])


_HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(600)
"""


def test_one_builder_among_the_processes_of_a_state_folder(
    db: Database, toolkit: camp.Toolkit, tmp_path: Path
) -> None:
    """Server processes sharing a state folder (``serve --workers N``) build with one builder:
    the one holding the folder's lease. The others build nothing; when the holder ends,
    however it ends, one of them takes over."""
    path = tmp_path / "builder.lock"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    builder = None
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        ids = load(db, toolkit, 8)
        cid = camp.start_campaign(db=db, name="lease", options=OPTIONS, customer_ids=ids,
                                  chunk_size=4, created_by=None, now=NOW)  # fmt: skip
        lease = camp.Lease(path)
        builder = camp.Builder(db, toolkit, lease=lease)
        builder.start()
        time.sleep(1.0)
        builder.wake()
        time.sleep(1.0)
        assert not lease.held() and count_calls(db, cid) == (0, 0)  # another process builds
        holder.kill()  # it ends without a word: the system drops its lock
        holder.wait(10)
        builder.wake()
        deadline = time.monotonic() + 60
        while count_calls(db, cid) != (8, 8) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert count_calls(db, cid) == (8, 8) and lease.held()
        other = camp.Lease(path)
        assert not other.held()  # and it keeps it, from any other taker
    finally:
        holder.kill()
        holder.communicate()
        if builder is not None:
            builder.stop()
    again = camp.Lease(path)
    assert again.held()  # a stopped builder lets go
    again.release()


def test_a_lease_that_cannot_be_locked_lets_the_process_build(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A state folder where no lock file can be made: the process builds (as every process
    did before leases), and says so once."""
    (tmp_path / "file").write_text("not a folder")
    lease = camp.Lease(tmp_path / "file" / "builder.lock")
    with caplog.at_level("WARNING", logger="scripts_engine"):
        assert lease.held() and lease.held()
    said = [r.getMessage() for r in caplog.records if "cannot lock" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(
        f"campaign builder: cannot lock {tmp_path / 'file' / 'builder.lock'} ([Errno 17] File exists"
    ), said
