"""The dialler API under load on loopback: the claim-and-outcome cycle and the render endpoint
against a trivial endpoint (``/healthz``) of the same app, in the same run.

A server process serves the real app (SQLite in WAL mode by default, or ``--database-url``; the
real engine and renderer) with the gate's clock pinned inside the calling window, over a
campaign of ``--customers`` calls (the shipped demo customers under new ids, built before the
load starts; without audio: the claim hands out audio URLs, it never touches audio). A client
process then drives 50 keep-alive connections through two modes, each with three workloads:

  * trivial: ``GET /healthz``;
  * cycle: ``POST /v1/campaigns/{id}/calls/claim`` (limit 1), then a signed
    ``POST /v1/calls/{id}/outcome`` with an ``Idempotency-Key`` (two requests a cycle);
  * render: ``POST /v1/scripts/render`` for a stored customer.

Mode 1, **closed loop (saturating)**: every client sends its next request as soon as the last
one is answered, ``--requests`` requests a workload (twice as many for /healthz, after a
warm-up of every workload that is not counted). This measures throughput (requests/s).
The three workloads run in ``--rounds`` interleaved rounds (/healthz, cycle, render, then
again): each round's share is a workload's throughput over that round's /healthz, and the
share reported is the median of the rounds'. One /healthz phase is over in about a second,
and on this shared machine one such second can be a fifth faster or slower than the next.
Its latencies are reported too, but with 50 clients that never pause they are the queue length
over the throughput (Little's law), not a service time: /healthz's own p99 is far above 100 ms
in this mode on two shared cores.

Mode 2, **paced (open loop, bounded load)**: the 50 clients together offer a fixed rate, equal to
40% of /healthz's closed-loop throughput (the median of the rounds; ``--paced-share``), evenly spaced
(a cycle counts as its two requests). A request's latency runs from its scheduled time, so a
server that falls behind is charged for the wait (no coordinated omission); the outcome of a
cycle is timed from when it is sent, right after its claim's answer. The achieved rate says
whether the server kept up with the offered one.

Targets (the issue's): at least 40% of the trivial endpoint's throughput (closed loop) and p99
latency under 100 ms (paced, at that 40% rate, with the server keeping up). Prints the figures
and, last, one line of JSON.

    python benchmarks/bench_api.py [--clients 50] [--requests 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: 10:00 in Shanghai (every demo customer is in UTC+8)
PINNED = "2026-05-12T02:00:00+00:00"


def serve(state: Path, port: int, customers: int, model: Path, database_url: str | None) -> None:
    """The server process: prepare the database and the campaign, then serve."""
    import uvicorn

    app = prepare(state, customers, model, database_url)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                backlog=1024,
                timeout_keep_alive=120)  # fmt: skip


def reset_postgres(database_url: str) -> None:
    """Empty a PostgreSQL database (its public schema)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def prepare(state: Path, customers: int, model: Path, database_url: str | None) -> Any:
    """The app to serve (not started), over a database with ``customers`` stored customers
    (the demo customers under new ids ``B000000``...) and a built campaign of them; writes the
    campaign id and the keys to ``state/bench.json``."""
    import csv
    from dataclasses import replace
    from datetime import datetime

    from api import create_app
    from scripts_engine.campaigns import run_pending, start_campaign
    from scripts_engine.config import Settings
    from scripts_engine.db import repository as repo
    from scripts_engine.db.session import write_transaction
    from scripts_engine.signing import issue_secret

    now = datetime.fromisoformat(PINNED)
    # per-key rate limits off: one dialler key drives all 50 clients here
    settings = Settings(state_dir=state, model_path=model, service_synthesis="inline",
                        campaign_chunk_size=500, log_json=True, database_url=database_url,
                        rate_limit_per_s=0, compute_rate_per_s=0)  # fmt: skip
    if database_url and database_url.startswith("postgres"):
        reset_postgres(database_url)
    app = create_app(settings, clock=lambda: now, start_builder=False)
    with (ROOT / "data/demo/customers.csv").open(encoding="utf-8") as f:
        rows = [{k: v for k, v in r.items() if v != "" and k != "y"} for r in csv.DictReader(f)]
    # each copy on a number of its own: the gate counts numbers too (a household's line is
    # called once a day), and copies sharing their original's number would block each other
    records = [
        dict(rows[i % len(rows)], customer_id=f"B{i:06d}", phone=f"139{i:08d}", consent="true")
        for i in range(customers)
    ]

    # the lifespan migrates; then load customers and build the campaign in this process
    from scripts_engine.features import load_customers

    services_app = create_app(settings, clock=lambda: now, start_builder=False)
    from fastapi.testclient import TestClient

    with TestClient(services_app) as tc:
        services = services_app.state.services
        loaded = load_customers(records, services.toolkit.engine.grid)
        batch = loaded.batch
        plain = batch.stored_records()
        scoring = services.toolkit.engine.stored_scoring(batch)  # what POST /v1/customers stores
        version = services.toolkit.model_version
        write_transaction(services.db, lambda s: repo.upsert_customers(
            session=s, records=plain, now=now, scoring=scoring, model_version=version))  # fmt: skip
        options = {"channel": "call", "moment": "none", "voice": "auto", "min_hits": 0,
                   "holdout_pct": 10.0, "audio_formats": ["wav8k"], "customers": "all"}  # fmt: skip
        cid = start_campaign(db=services.db, name="bench", options=options,
                             customer_ids=[r["customer_id"] for r in plain], chunk_size=500,
                             created_by=None, now=now)  # fmt: skip
        run_pending(db=services.db, toolkit=replace(services.toolkit, store=None))
        keys = {
            role: write_transaction(services.db, lambda s, role=role: repo.create_api_key(
                session=s, role=role, name="bench", now=now))
            for role in ("dialler", "writer")
        }  # fmt: skip
        secret = write_transaction(services.db, lambda s: issue_secret(
            s, master=services.signing_master, api_key_id=keys["dialler"][0].id, now=now))  # fmt: skip
        keys = {role: key for role, (_row, key) in keys.items()} | {"signing": secret}
        del tc
    (state / "bench.json").write_text(json.dumps({"campaign": cid, "keys": keys}))
    return app


def quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


class Conn:
    """One keep-alive HTTP/1.1 connection (a minimal client: httpx's async pool, not the
    server, is the bottleneck at 50 concurrent connections on two cores)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        raw_body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        body = json.dumps(json_body).encode() if json_body is not None else b""
        if raw_body is not None:
            body, json_body = raw_body, True
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                 f"Content-Length: {len(body)}"]  # fmt: skip
        if json_body is not None:
            lines.append("Content-Type: application/json")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        assert self.reader is not None
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def timed(
    conn: Conn, method: str, path: str, *, due: float | None = None, **kwargs: Any
) -> tuple[float, int, bytes]:
    """One request: its latency (from ``due``, the scheduled start, when given), status, body."""
    t = time.perf_counter() if due is None else due
    status, body = await conn.request(method, path, **kwargs)
    return time.perf_counter() - t, status, body


def summary(latencies: list[float], errors: int, elapsed: float) -> dict[str, Any]:
    return {
        "requests": len(latencies), "errors": errors, "seconds": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(quantile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(quantile(latencies, 0.99) * 1000, 2),
    }  # fmt: skip


async def phase(
    base: str,
    clients: int,
    total: int,
    step: Any,
    *,
    rate: float | None = None,
    latencies: list[float] | None = None,
) -> dict[str, Any]:
    """Run ``step(conn, due)`` ``total`` times over ``clients`` concurrent connections; each
    step returns ``[(latency, status, body), ...]`` for the requests it made.

    Without ``rate``: closed loop, each connection starts its next step at once. With ``rate``
    (steps/s): open loop, step ``i`` is due at ``start + i / rate`` and its first request is
    timed from then; the first free connection takes it. The latencies are also appended to
    ``latencies``, when given."""
    host, port = base.split("//")[1].split(":")
    latencies = [] if latencies is None else latencies
    first = len(latencies)
    errors = 0
    slots = iter(range(total))
    start = time.perf_counter() + 0.05

    async def worker() -> None:
        nonlocal errors
        conn = Conn(host, int(port))
        try:
            for i in slots:
                due = None
                if rate is not None:
                    due = start + i / rate
                    if (wait := due - time.perf_counter()) > 0:
                        await asyncio.sleep(wait)
                for latency, status, _body in await step(conn, due):
                    latencies.append(latency)
                    errors += status >= 400
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(clients)))
    return summary(latencies[first:], errors, time.perf_counter() - start)


async def load(
    base: str, clients: int, requests: int, share: float, info: dict[str, Any], rounds: int
) -> dict[str, Any]:
    from scripts_engine.signing import sign

    dialler = {"Authorization": f"Bearer {info['keys']['dialler']}"}
    writer = {"Authorization": f"Bearer {info['keys']['writer']}"}
    cid, n_customers = info["campaign"], info["customers"]
    counter = iter(range(10**9))
    handed: list[str] = []

    async def trivial(client: Any, due: float | None) -> list[Any]:
        return [await timed(client, "GET", "/healthz", due=due)]

    async def cycle(client: Any, due: float | None) -> list[Any]:
        claim = await timed(client, "POST", f"/v1/campaigns/{cid}/calls/claim",
                            json_body={"limit": 1}, headers=dialler, due=due)  # fmt: skip
        calls = json.loads(claim[2]).get("calls", []) if claim[1] == 200 else []
        if not calls:
            return [claim]
        handed.append(calls[0]["id"])
        body = {"status": "connected", "intent_grade": "C", "duration_s": 40}
        raw = json.dumps(body).encode()
        key = {**dialler, "Idempotency-Key": str(uuid.uuid4()),
               "X-Signature": sign(info["keys"]["signing"], int(time.time()), raw)}  # fmt: skip
        outcome = await timed(client, "POST", f"/v1/calls/{calls[0]['id']}/outcome",
                              raw_body=raw, headers=key)  # fmt: skip
        return [claim, outcome]

    async def render(client: Any, due: float | None) -> list[Any]:
        i = next(counter) % n_customers
        return [await timed(client, "POST", "/v1/scripts/render", due=due,
                            json_body={"customer_id": f"B{i:06d}"}, headers=writer)]  # fmt: skip

    # warm-up, not counted: the first requests of a new process pay for lazy imports, caches
    # and the interpreter's specialisation of hot code, which would flatter whichever phase
    # came later against /healthz, which comes first
    for step, steps in ((trivial, 1000), (cycle, 100), (render, 200)):
        await phase(base, clients, steps, step)
    # /healthz, the baseline, twice as long as the others: it is over in about a second
    workloads = (("trivial", trivial, 2 * requests), ("cycle", cycle, requests // 2),
                 ("render", render, requests))  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _step, _n in workloads}
    kept: dict[str, list[float]] = {name: [] for name, _step, _n in workloads}
    handed_all: list[str] = []  # no call may be handed out twice in the whole run either
    for at in range(rounds):
        for name, step, steps in workloads:
            handed.clear()
            run = await phase(base, clients, steps, step, latencies=kept[name])
            if name == "cycle":
                handed_all += handed
                run |= {"calls_handed_out": len(handed),
                        "handed_out_twice": len(handed) - len(set(handed))}  # fmt: skip
            baseline = run if name == "trivial" else runs["trivial"][at]
            run["share_of_trivial"] = round(run["rps"] / baseline["rps"], 3)
            runs[name].append(run)
            print(f"closed loop, round {at + 1}:", name, run, file=sys.stderr)
    closed = {name: merged(runs[name], kept[name]) for name in runs}
    closed["cycle"] |= {"calls_handed_out": len(handed_all),
                        "handed_out_twice": len(handed_all) - len(set(handed_all))}  # fmt: skip
    offered = round(share * closed["trivial"]["rps"], 1)  # requests/s
    paced: dict[str, Any] = {"offered_rps": offered}
    for name, step, per_step in (("trivial", trivial, 1), ("cycle", cycle, 2),
                                 ("render", render, 1)):  # fmt: skip
        handed.clear()
        steps = requests // per_step
        paced[name] = await phase(base, clients, steps, step, rate=offered / per_step)
        if name == "cycle":
            paced[name] |= {"calls_handed_out": len(handed),
                            "handed_out_twice": len(handed) - len(set(handed))}  # fmt: skip
        print("paced", name, paced[name], file=sys.stderr)
    return {"closed_loop": closed, "paced": paced}


def merged(runs: list[dict[str, Any]], latencies: list[float]) -> dict[str, Any]:
    """A workload's closed-loop figures over its rounds: the median round's throughput and
    share of /healthz (each against its own round's), the latencies of all rounds, and each
    round's figures."""
    out = summary(latencies, sum(r["errors"] for r in runs), sum(r["seconds"] for r in runs))
    out["rps"] = statistics.median(r["rps"] for r in runs)
    out["share_of_trivial"] = statistics.median(r["share_of_trivial"] for r in runs)
    return out | {"rounds": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument(
        "--rounds", type=int, default=3, help="Interleaved rounds of the closed loop (default 3)."
    )
    parser.add_argument("--customers", type=int,
                        help="Calls in the campaign (each cycle uses one: the closed loop's "
                        "rounds and the paced mode need --requests / 2 each, the warm-up 100; "
                        "the default is that, and a little more).")  # fmt: skip
    parser.add_argument("--paced-share", type=float, default=0.4,
                        help="The paced mode's offered rate, as a share of /healthz's "
                        "closed-loop throughput (default 0.4: the throughput target).")  # fmt: skip
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help="A fitted model (default: train a small one).")
    parser.add_argument("--database-url", help="Serve from this database (default: SQLite "
                        "in a temporary folder). A PostgreSQL database is emptied first!")  # fmt: skip
    args = parser.parse_args()
    if args.customers is None:
        args.customers = 200 + (args.rounds + 1) * (args.requests // 2)
    if args.serve:
        serve(args.serve, args.port, args.customers, args.model, args.database_url)
        return
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        model = args.model or small_model(state)
        cmd = [sys.executable, __file__, "--serve", str(state), "--port", str(args.port),
               "--customers", str(args.customers), "--model", str(model)]  # fmt: skip
        if args.database_url:
            cmd += ["--database-url", args.database_url]
        server = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            base = f"http://127.0.0.1:{args.port}"
            wait_up(base, state, server)
            info = json.loads((state / "bench.json").read_text()) | {"customers": args.customers}
            result = asyncio.run(
                load(base, args.clients, args.requests, args.paced_share, info, args.rounds)
            )
        finally:
            server.terminate()
            server.wait(30)
    report(result, args)


def small_model(state: Path) -> Path:
    """A model fitted on a third of the shipped rows, without cross-validation (seconds)."""
    from scripts_engine import propensity as prop
    from scripts_engine.config import Settings
    from scripts_engine.features import load_customers
    from scripts_engine.grid import load_grid

    settings = Settings()
    grid = load_grid(settings.personas_dir / "grid.yaml")
    batch = load_customers(settings.training_file, grid, outcomes=True).batch
    path = state / "model" / "model.joblib"
    prop.save(prop.train(grid, batch.take(slice(0, None, 3)), cv_folds=0), path)
    return path


def wait_up(base: str, state: Path, server: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("the server process exited")
        if (state / "bench.json").exists():
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.5)
    raise SystemExit("the server did not come up")


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    closed, paced = result["closed_loop"], result["paced"]
    print(f"closed loop ({args.clients} clients, no pauses): throughput; latency is queueing")
    print(f"  (median of {args.rounds} interleaved rounds; each share against its round's trivial)")
    for name, r in closed.items():
        rounds = ", ".join(f"{x['share_of_trivial']:.1%}" for x in r["rounds"])
        print(
            f"  {name:<8} {r['requests']:>6} req  {r['rps']:>8.1f} req/s"
            f" ({r['share_of_trivial']:5.1%} of trivial; rounds {rounds})"
            f"  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:8.2f} ms  errors {r['errors']}"
        )
    offered = paced["offered_rps"]
    print(f"paced ({args.clients} clients offering {offered} req/s = {args.paced_share:.0%} of "
          f"trivial's throughput): latency from the scheduled start")  # fmt: skip
    for name in ("trivial", "cycle", "render"):
        r = paced[name]
        print(
            f"  {name:<8} {r['requests']:>6} req  {r['rps']:>8.1f} req/s achieved"
            f"  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:8.2f} ms  errors {r['errors']}"
        )
    targets = {
        name: {"share_of_trivial": closed[name]["share_of_trivial"],
               "throughput_ok": closed[name]["share_of_trivial"] >= 0.4,
               "paced_p99_ms": paced[name]["p99_ms"],
               "paced_kept_up": paced[name]["rps"] >= 0.95 * offered,
               "p99_ok": paced[name]["p99_ms"] < 100 and paced[name]["rps"] >= 0.95 * offered,
               "closed_loop_p99_ms": closed[name]["p99_ms"]}
        for name in ("cycle", "render")
    }  # fmt: skip
    print(json.dumps({"clients": args.clients, "rounds": args.rounds, "database": "postgresql" if args.database_url
                      else "sqlite", "results": result, "targets": targets}))  # fmt: skip


if __name__ == "__main__":
    main()
