"""Benchmark: the QA review queue of a large campaign (issue 6), time and peak memory.

Builds a campaign of ``--calls`` call rows (default 100,000) whose records are real build
records (``build_chunk`` over demo customers, copied), with outcomes for 5 % of them (some
opt-outs and complaints) and a template version written by a writer used by 10 %, then
measures, each in a fresh process (so its peak RSS is its own):

- ``baseline``: reading every call's id and profile of the campaign (one plain query);
- ``queue``: :func:`scripts_engine.qa.build_queue` (the stratified sample and must-reviews);
- ``queue_again``: the same again (nothing new to add);
- ``list_first``: the first page of the campaign's queue listing (100 open items, as
  ``GET /v1/reviews?campaign_id=`` answers by default);
- ``list_all``: every page of it, 100 at a time, with the ``before`` cursor;
- ``report``: the campaign report (funnel, conversion by profile, tag and hits, lift).

Prints seconds and peak RSS per step and the time ratio to the baseline; the last line is
JSON. ``--database-url postgresql://...`` runs on PostgreSQL (it empties that database).

    .venv/bin/python benchmarks/bench_qa_queue.py [--calls 100000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CID = "C-bench-qa"
NOW = datetime(2026, 5, 12, 2, 0, tzinfo=UTC)


def open_db(url: str) -> Any:
    from scripts_engine.config import Settings
    from scripts_engine.db.session import open_database

    return open_database(Settings(state_dir=Path(tempfile.gettempdir())), url=url)


def setup(url: str, n: int) -> None:
    import csv

    from sqlalchemy import insert

    from scripts_engine.campaigns import Toolkit, build_chunk
    from scripts_engine.config import ROOT, Settings
    from scripts_engine.db import repository as repo
    from scripts_engine.db.migrate import upgrade
    from scripts_engine.db.models import Campaign, Outcome, TemplateVersion
    from scripts_engine.db.session import write_transaction
    from scripts_engine.render import Renderer
    from scripts_engine.scoring import Engine
    from scripts_engine.versions import VersionStore
    from scripts_engine.voice import get_catalog

    db = open_db(url)
    if url.startswith("postgresql"):  # start empty
        with db.write_engine.begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    upgrade(db)
    settings = Settings()
    engine = Engine.load(settings)
    store = VersionStore(db, settings.personas_dir, engine.grid)
    store.seed(NOW)
    toolkit = Toolkit(engine, Renderer(settings.personas_dir, grid=engine.grid, source=store.source()),
                      get_catalog(settings.voices_dir), None)  # fmt: skip
    with (ROOT / "data" / "demo" / "customers.csv").open(encoding="utf-8") as f:
        records = [{k: v for k, v in r.items() if v != "" and k != "y"}
                   for r in list(csv.DictReader(f))[:80]]  # fmt: skip
    options = {"min_hits": 0, "holdout_pct": 10, "channel": "call", "moment": "none",
               "voice": "auto", "as_of": "2026-05-12"}  # fmt: skip
    built = build_chunk(toolkit, CID, options, records).calls
    writer_version = "b" * 16

    def fill(s: Any) -> None:
        s.add(Campaign(id=CID, name="bench", options=options, status="ready", total=n, done=n,
                       failed=0, created_at=NOW, updated_at=NOW))  # fmt: skip
        s.add(TemplateVersion(name="call/signoff", kind="template", version=writer_version,
                              source="x", status="approved", author="alice", message="",
                              lint=[], lint_errors=0, created_at=NOW, flags=0))  # fmt: skip

    write_transaction(db, fill)
    batch = 2000
    for start in range(0, n, batch):
        calls, outcomes = [], []
        for i in range(start, min(n, start + batch)):
            src = built[i % len(built)]
            record = copy.deepcopy(src["record"])
            record["customer_id"] = cust = f"c{i:07d}"
            if i % 10 == 0:
                for t in record["templates"]:
                    if t["template"] == "call/signoff":
                        t["version"] = writer_version
            calls.append({**src, "id": f"K-{i:07d}", "customer_id": cust, "record": record,
                          "chunk": i // batch, "status": "done" if i % 20 == 0 else "ready",
                          "claims": int(i % 20 == 0)})  # fmt: skip
            if i % 20 == 0:
                outcomes.append({"call_id": f"K-{i:07d}", "campaign_id": CID,
                                 "customer_id": cust, "status": "connected",
                                 "converted": i % 60 == 0, "opt_out": i % 200 == 0,
                                 "refused": False, "complaint": i % 300 == 0,
                                 "notes": "客户说要投诉" if i % 700 == 0 else None,
                                 "api_key_id": 1, "created_at": NOW})  # fmt: skip

        def write(s: Any, calls: list[Any] = calls, outcomes: list[Any] = outcomes) -> None:
            repo.insert_calls(session=s, calls=calls)
            if outcomes:
                s.execute(insert(Outcome), outcomes)

        write_transaction(db, write)
    db.dispose()


def empty_queue(url: str) -> None:
    from sqlalchemy import delete

    from scripts_engine.db.models import ReviewItem
    from scripts_engine.db.session import write_transaction

    db = open_db(url)
    write_transaction(db, lambda s: s.execute(delete(ReviewItem)))
    db.dispose()


def measure(url: str, step: str) -> dict[str, Any]:
    from sqlalchemy import select

    from scripts_engine import qa
    from scripts_engine.db.models import Call
    from scripts_engine.versions import Actor

    db = open_db(url)
    bob = Actor("bob", "qa", 2)
    start = time.perf_counter()
    out: Any = None
    if step == "baseline":
        with db.read() as s:
            out = len(s.execute(select(Call.id, Call.profile_id)
                                .where(Call.campaign_id == CID)).all())  # fmt: skip
    elif step.startswith("queue"):
        out = qa.build_queue(db=db, campaign_id=CID, rate=0.02, new_version_renders=3, actor=bob,
                             now=NOW)  # fmt: skip
        out = {k: out[k] for k in ("calls", "added", "updated", "by_reason")}
    elif step == "report":
        from scripts_engine.reports import campaign_report

        with db.read() as s:
            out = campaign_report(s, CID)["funnel"]["all"]
    elif step == "list_first":
        with db.read() as s:
            out = len(qa.list_items(s, reviewer="bob", campaign_id=CID, status="open", limit=100))
    elif step == "list_all":
        seen, before = 0, None
        with db.read() as s:
            while page := qa.list_items(s, reviewer="bob", campaign_id=CID, status="open",
                                        limit=100, before=before):  # fmt: skip
                seen += len(page)
                before = page[-1][0].id
        out = seen
    seconds = time.perf_counter() - start
    db.dispose()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"step": step, "seconds": round(seconds, 3), "peak_rss_mb": round(rss_mb, 1),
            "result": out}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--steps", default="baseline,queue,queue_again,list_first,list_all,report")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="the database at --database-url is set up already: empty its queue",
    )
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure == "setup":
        setup(args.database_url, args.calls)
        return
    if args.measure:
        print(json.dumps(measure(args.database_url, args.measure), ensure_ascii=False))
        return
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp(prefix='bench-qa-')}/qa.db"
    t0 = time.perf_counter()
    if args.reuse:
        if "queue" in args.steps.split(","):
            empty_queue(url)
    else:  # in a child too: Linux keeps a process's peak RSS across fork and exec, so a big
        # parent would raise every measuring child's figure
        subprocess.run([sys.executable, __file__, "--measure", "setup", "--database-url", url,
                        "--calls", str(args.calls)], check=True)  # fmt: skip
    print(f"setup: {args.calls:,} calls in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    results = {}
    for step in args.steps.split(","):
        proc = subprocess.run([sys.executable, __file__, "--measure", step, "--database-url", url],
                              check=True, capture_output=True, text=True)  # fmt: skip
        results[step] = json.loads(proc.stdout.strip().splitlines()[-1])
    base = results["baseline"]["seconds"]
    for step, r in results.items():
        print(f"{step:<12} {r['seconds']:>8.2f} s  {r['seconds'] / base:>7.1f}x baseline  "
              f"peak RSS {r['peak_rss_mb']:>7.1f} MB  {r['result']}")  # fmt: skip
    print(json.dumps({"calls": args.calls, **{k: replace_none(v) for k, v in results.items()}},
                     ensure_ascii=False))  # fmt: skip


def replace_none(r: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in r.items() if k != "result"}


if __name__ == "__main__":
    main()
