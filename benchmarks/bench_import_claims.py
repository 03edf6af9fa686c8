"""Claims while a large customer import runs: a dialler must not wait for an admin's upload.

A server process serves the real app (``bench_api.py``'s set-up: SQLite by default, or
``--database-url``; a built campaign of 3,000 calls, the clock inside the calling window). One
client uploads a CSV of ``--rows`` customers (the shipped demo customers under the campaign's
ids and new ones: the import rewrites the campaign's customers, whose rows a claim locks) with
``POST /v1/customers/import``, while another claims one call every 0.3 s until the import
answers. Prints the import's time and the claims' latencies, p50 and max; last line JSON.

Before imports were stored a chunk at a time, one claim waited 16.4 s (SQLite) and 27.2 s
(PostgreSQL) behind a 100,000-row import.

    python benchmarks/bench_import_claims.py [--rows 100000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_api  # noqa: E402


def customers_csv(rows: int) -> bytes:
    with (ROOT / "data/demo/customers.csv").open(encoding="utf-8") as f:
        demo = list(csv.DictReader(f))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[k for k in demo[0] if k != "y"],
                            extrasaction="ignore")  # fmt: skip
    writer.writeheader()
    for i in range(rows):
        writer.writerow(dict(demo[i % len(demo)], customer_id=f"B{i:06d}", phone=f"139{i:08d}",
                             consent="true"))  # fmt: skip
    return out.getvalue().encode()


def measure(base: str, info: dict[str, Any], admin: str, data: bytes) -> dict[str, Any]:
    answer: dict[str, Any] = {}
    done = threading.Event()

    def upload() -> None:
        with httpx.Client(base_url=base, timeout=3600) as c:
            t = time.perf_counter()
            r = c.post("/v1/customers/import", files={"file": ("big.csv", data)},
                       headers={"Authorization": f"Bearer {admin}"})  # fmt: skip
            answer.update(status=r.status_code, accepted=r.json().get("accepted"),
                          seconds=round(time.perf_counter() - t, 1))  # fmt: skip
        done.set()

    thread = threading.Thread(target=upload)
    thread.start()
    latencies: list[float] = []
    claim = f"/v1/campaigns/{info['campaign']}/calls/claim"
    dialler = {"Authorization": f"Bearer {info['keys']['dialler']}"}
    with httpx.Client(base_url=base, timeout=3600) as c:
        while not done.is_set():
            t = time.perf_counter()
            r = c.post(claim, json={"limit": 1}, headers=dialler)
            latencies.append(time.perf_counter() - t)
            if r.status_code != 200:
                raise SystemExit(f"a claim failed: {r.status_code} {r.text}")
            time.sleep(0.3)
    thread.join()
    latencies.sort()
    return {"import": answer, "claims": len(latencies),
            "claim_p50_ms": round(bench_api.quantile(latencies, 0.5) * 1000, 1),
            "claim_max_ms": round(latencies[-1] * 1000, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--model", type=Path, help="A fitted model (default: train a small one).")
    parser.add_argument("--database-url", help="PostgreSQL to use instead of SQLite (emptied).")
    args = parser.parse_args()
    data = customers_csv(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        model = args.model or bench_api.small_model(state)
        cmd = [sys.executable, str(ROOT / "benchmarks/bench_api.py"), "--serve", str(state),
               "--port", "8797", "--customers", "3000", "--model", str(model)]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT), "SCRIPTS_ENGINE_STATE_DIR": str(state)}
        if args.database_url:
            cmd += ["--database-url", args.database_url]
            env["SCRIPTS_ENGINE_DATABASE_URL"] = args.database_url
        server = subprocess.Popen(cmd, env=env)
        try:
            base = "http://127.0.0.1:8797"
            bench_api.wait_up(base, state, server)
            info = json.loads((state / "bench.json").read_text())
            keys = subprocess.run(
                [str(Path(sys.executable).parent / "scripts-engine"), "keys", "create", "--role",
                 "admin", "--name", "bench"], env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            result = measure(base, info, keys.stdout.split()[0], data)
        finally:
            server.terminate()
            server.wait(30)
    print(f"import of {args.rows} rows: {result['import']}", file=sys.stderr)
    print(f"{result['claims']} claims meanwhile: p50 {result['claim_p50_ms']} ms, "
          f"max {result['claim_max_ms']} ms", file=sys.stderr)  # fmt: skip
    print(json.dumps({"rows": args.rows, "database": "postgresql" if args.database_url else
                      "sqlite", **result}))  # fmt: skip


if __name__ == "__main__":
    main()
