"""A claim's candidate scan when most of a campaign's calls wait, against the same scan when
none waits, in the same run.

Outside the calling window the gate puts every call it examines back until the window opens,
so after a while nearly every ready call of a campaign waits; a dialler fleet also keeps many
leases out. A claim must still read only the calls it may hand out (migration 0009: each kind
of candidate is one index range). This builds a campaign of ``--calls`` calls on a fresh
database (SQLite by default, or ``--database-url``), times the claim's scan
(:func:`scripts_engine.db.repository.claim_candidates`, limit 3, in the claim's own kind of
transaction) with every call ready, then with all but 100 of them put back until tomorrow and
``--leased`` of those leased until later, and prints the ratio (the second over the first:
about 1 when the scan reads only what it may hand out; it grew with the waiting calls before:
24-44 ms a scan at 20,000 of them). Target: under 2. Last line JSON.

    python benchmarks/bench_claim_scan.py [--calls 20000] [--leased 2000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NOW = datetime(2026, 5, 12, 2, 0, tzinfo=UTC)


def _fill(db: Any, calls: int) -> list[str]:
    from sqlalchemy import insert

    from scripts_engine.db.models import Call, Campaign
    from scripts_engine.db.session import table

    ids = sorted(f"K-{i:024x}" for i in range(calls))
    with db.write_engine.begin() as conn:
        conn.execute(insert(table(Campaign)), [{
            "id": "cmp", "name": "bench", "options": {}, "status": "ready", "total": calls,
            "done": calls, "failed": 0, "created_by": None, "created_at": NOW,
            "updated_at": NOW}])  # fmt: skip
        for start in range(0, calls, 5000):
            conn.execute(insert(table(Call)), [
                {"id": i, "campaign_id": "cmp", "customer_id": f"c{start + n}", "chunk": 0,
                 "group": "model", "profile_id": "P01", "audio": {}, "status": "ready",
                 "claims": 0, "created_at": NOW}
                for n, i in enumerate(ids[start : start + 5000])
            ])  # fmt: skip
    return ids


def _time_scans(db: Any, runs: int) -> float:
    """Median seconds of one scan, each in a write transaction of its own (as a claim)."""
    from scripts_engine.db import repository as repo
    from scripts_engine.db.session import write_core

    times = []
    for _ in range(runs):

        def scan(conn: Any) -> float:
            start = time.perf_counter()
            repo.claim_candidates(conn=conn, campaign_id="cmp", now=NOW, limit=3)
            return time.perf_counter() - start

        times.append(write_core(db, scan))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--leased", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--database-url", help="PostgreSQL to use instead of SQLite (emptied).")
    args = parser.parse_args()
    from sqlalchemy import update

    from scripts_engine.config import Settings
    from scripts_engine.db.migrate import upgrade
    from scripts_engine.db.models import Call
    from scripts_engine.db.session import open_database, table

    with tempfile.TemporaryDirectory() as tmp:
        if args.database_url:
            sys.path.insert(0, str(ROOT / "benchmarks"))
            import bench_api

            bench_api.reset_postgres(args.database_url)
        db = open_database(Settings(state_dir=Path(tmp)), url=args.database_url)
        try:
            upgrade(db)
            ids = _fill(db, args.calls)
            _time_scans(db, 5)  # warm-up
            none_waiting = _time_scans(db, args.runs)
            calls = table(Call)
            waiting, leased = ids[: -100 - args.leased], ids[-100 - args.leased : -100]
            until = NOW + timedelta(minutes=10)
            with db.write_engine.begin() as conn:
                conn.execute(update(calls).where(calls.c.id.in_(waiting))
                             .values(not_before=NOW + timedelta(hours=12)))  # fmt: skip
                conn.execute(update(calls).where(calls.c.id.in_(leased)).values(
                    status="leased", leased_by=1, lease_until=until, not_before=until))  # fmt: skip
            _time_scans(db, 5)
            most_waiting = _time_scans(db, args.runs)
        finally:
            db.dispose()
    ratio = most_waiting / none_waiting
    print(f"claim scan, {args.calls} calls ({db.write_engine.dialect.name}), median of {args.runs}")
    print(f"  every call ready                            {none_waiting * 1e3:8.3f} ms")
    print(
        f"  {len(waiting)} put back until tomorrow, {len(leased)} leased  {most_waiting * 1e3:8.3f} ms"
    )
    print(f"  ratio {ratio:.2f} (target: under 2)")
    print(json.dumps({"calls": args.calls, "waiting": len(waiting), "leased": len(leased),
                      "database": db.write_engine.dialect.name,
                      "none_waiting_ms": round(none_waiting * 1e3, 3),
                      "most_waiting_ms": round(most_waiting * 1e3, 3), "ratio": round(ratio, 2),
                      "ok": ratio < 2}))  # fmt: skip


if __name__ == "__main__":
    main()
