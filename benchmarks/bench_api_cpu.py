"""The dialler API's CPU per request, in-process: what one claim-and-outcome cycle and one
render cost the event loop, against ``GET /healthz`` of the same app, in the same run.

``bench_api.py`` measures the service the way a dialler sees it (HTTP on loopback, a
separate client process), and on a shared two-core machine its figures swing by a third
between runs: too much to see a change of 10 %. This one calls the ASGI app directly (no
sockets, no client process; the app, database and engine are real: the same set-up as
``bench_api.py``), 50 requests at a time, and takes the CPU time of the event loop's thread
(the service's bottleneck) and of the whole process, per request, as the **minimum over
rounds** (``--rounds``): noise from other tenants only ever adds time. The shares printed are
/healthz's CPU per request over the workload's: the share of /healthz's throughput the
workload would reach if that CPU were all that limited it. They are what to compare between
versions. Last line JSON.

    python benchmarks/bench_api_cpu.py [--rounds 6] [--requests 1000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_api  # noqa: E402

CLIENTS = 50


class Caller:
    """Requests straight into an ASGI app (one HTTP/1.1 request a call)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, bytes]:
        raw = [(b"host", b"127.0.0.1:8799"), (b"content-length", str(len(body)).encode())]
        raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
                 "query_string": b"", "root_path": "", "headers": raw,
                 "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8799), "state": {}}  # fmt: skip
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)  # the client stays connected
            return {"type": "http.disconnect"}

        status, chunks = 0, []

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, b"".join(chunks)


async def measure(app: Any, info: dict[str, Any], rounds: int, requests: int) -> dict[str, Any]:
    from scripts_engine.signing import sign

    call = Caller(app)
    dialler = {"Authorization": f"Bearer {info['keys']['dialler']}",
               "Content-Type": "application/json"}  # fmt: skip
    writer = {"Authorization": f"Bearer {info['keys']['writer']}",
              "Content-Type": "application/json"}  # fmt: skip
    claim_path = f"/v1/campaigns/{info['campaign']}/calls/claim"
    outcome_body = json.dumps({"status": "connected", "intent_grade": "C", "duration_s": 40})
    counter = iter(range(10**9))

    async def trivial() -> int:
        status, _ = await call("GET", "/healthz", {})
        return 1 if status == 200 else 0

    async def cycle() -> int:
        status, body = await call("POST", claim_path, dialler, b'{"limit": 1}')
        calls = json.loads(body)["calls"] if status == 200 else []
        if not calls:
            raise SystemExit(f"the claim handed out nothing ({status}): give more --customers")
        raw = outcome_body.encode()
        headers = {**dialler, "Idempotency-Key": str(uuid.uuid4()),
                   "X-Signature": sign(info["keys"]["signing"], int(time.time()), raw)}  # fmt: skip
        status, _ = await call("POST", f"/v1/calls/{calls[0]['id']}/outcome", headers, raw)
        return 2 if status == 201 else 1

    async def render() -> int:
        body = json.dumps({"customer_id": f"B{next(counter) % info['customers']:06d}"})
        status, _ = await call("POST", "/v1/scripts/render", writer, body.encode())
        return 1 if status == 200 else 0

    async def run(step: Any, steps: int) -> tuple[float, float, int]:
        """Event-loop and process CPU seconds for ``steps`` steps, and the requests that
        succeeded."""
        slots = iter(range(steps))
        ok = 0

        async def client() -> None:
            nonlocal ok
            for _ in slots:
                done = await step()  # (``ok += await ...`` would read ok before the wait)
                ok += done

        loop0, proc0 = time.thread_time(), time.process_time()
        await asyncio.gather(*(client() for _ in range(CLIENTS)))
        return time.thread_time() - loop0, time.process_time() - proc0, ok

    workloads = {"trivial": (trivial, requests, 1), "cycle": (cycle, requests // 2, 2),
                 "render": (render, requests, 1)}  # fmt: skip
    for step, steps, _per in workloads.values():  # warm-up
        await run(step, min(steps, 200))
    best: dict[str, dict[str, float]] = {}
    for _ in range(rounds):
        for name, (step, steps, per) in workloads.items():
            loop_s, proc_s, ok = await run(step, steps)
            if ok != steps * per:
                raise SystemExit(f"{name}: {steps * per - ok} requests failed")
            n = steps * per
            got = {"loop_us": loop_s * 1e6 / n, "process_us": proc_s * 1e6 / n}
            best[name] = {k: min(v, best.get(name, {}).get(k, v)) for k, v in got.items()}
    return {name: {k: round(v, 1) for k, v in b.items()} for name, b in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=1000,
                        help="Requests a workload a round (a cycle is two).")  # fmt: skip
    parser.add_argument("--model", type=Path, help="A fitted model (default: train a small one).")
    parser.add_argument("--database-url", help="PostgreSQL to use instead of SQLite (emptied).")
    args = parser.parse_args()
    customers = (args.rounds + 1) * args.requests // 2 + 200
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        model = args.model or bench_api.small_model(state)
        app = bench_api.prepare(state, customers, model, args.database_url)
        info = json.loads((state / "bench.json").read_text()) | {"customers": customers}

        async def go() -> dict[str, Any]:
            async with app.router.lifespan_context(app):
                return await measure(app, info, args.rounds, args.requests)

        best = asyncio.run(go())
    base = best["trivial"]
    print(f"CPU per request, minimum of {args.rounds} rounds ({CLIENTS} at a time, in-process)")
    for name, b in best.items():
        print(f"  {name:<8} event loop {b['loop_us']:7.1f} us (share {base['loop_us'] / b['loop_us']:5.1%})"
              f"  whole process {b['process_us']:7.1f} us"
              f" (share {base['process_us'] / b['process_us']:5.1%})")  # fmt: skip
    shares = {name: {"loop": round(base["loop_us"] / b["loop_us"], 3),
                     "process": round(base["process_us"] / b["process_us"], 3)}
              for name, b in best.items()}  # fmt: skip
    print(json.dumps({"rounds": args.rounds, "requests": args.requests, "cpu_us": best,
                      "share_of_trivial": shares}))  # fmt: skip


if __name__ == "__main__":
    main()
