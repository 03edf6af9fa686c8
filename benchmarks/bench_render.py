"""Benchmark: call scripts for 10,000 customers across all 56 profiles, on one core.

Three timings over the same customers, profiles, score orders and template sources:

- ``engine``: ``Renderer.render_script`` as shipped: sandbox, work limits, validated context,
  compliance checks on every script, ``Script`` with ids and versions, memoised segments;
- ``engine_no_memo``: the same with memoisation off (every template rendered every time);
- ``plain``: only ``template.render(variables)`` of the same templates with the same
  variables in a plain ``jinja2.Environment`` (no sandbox, no checks, no Script).

Targets (issue 3): engine >= 5,000 scripts/s, engine <= 1.5x plain. Times are CPU seconds of
this process (``time.process_time``); the engine's wall-clock rate is printed beside. On a
loaded machine CPU time still inflates (shared caches and cores), so compare the ratio, which
is measured in the same run, and use ``--repeat`` (best of N cold runs). The last line is JSON.

    .venv/bin/python benchmarks/bench_render.py [--customers 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import date
from typing import Any

import jinja2

from scripts_engine.composition import value_blocks
from scripts_engine.config import ROOT
from scripts_engine.features import load_customers
from scripts_engine.filters import FILTERS
from scripts_engine.render import Renderer
from scripts_engine.sandbox import safe_range, start_budget

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤欧阳"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国志红梅玉"
AS_OF = date(2026, 3, 10)


def customers(n: int) -> list[dict[str, Any]]:
    """``n`` real UCI rows with deterministic synthetic contact fields."""
    renderer_grid = Renderer(ROOT / "personas").grid
    batch = load_customers(ROOT / "data" / "bank-marketing" / "bank-train.csv", renderer_grid).batch
    rng = random.Random(7)
    out = []
    for i in range(n):
        rec = batch.record(i % len(batch))
        rec["customer_id"] = f"B{i:05d}"
        rec["name"] = rng.choice(SURNAMES) + "".join(rng.choices(GIVEN, k=rng.choice((1, 2))))
        rec["gender"] = rng.choice(("F", "M", None))
        rec["phone"] = f"13{rng.randrange(10**9):09d}"
        rec["risk_rating"] = rng.choice(("R1", "R2", "R3", "R4", None))
        if rng.random() < 0.3:
            rec["maturity_date"] = f"2026-03-{rng.randrange(11, 31):02d}"
        out.append(rec)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument(
        "--repeat", type=int, default=1, help="best of N cold runs (engine and plain)"
    )
    args = parser.parse_args()
    people = customers(args.customers)
    engine = Renderer(ROOT / "personas", reload_interval=1e9)
    profiles = list(engine.profiles)
    tag_names = engine.grid.tag_names
    rng = random.Random(11)
    scores = [{t: rng.random() for t in tag_names} for _ in people]
    jobs = [
        (c, profiles[i % len(profiles)], s)
        for i, (c, s) in enumerate(zip(people, scores, strict=True))
    ]

    def run(memoize: bool) -> tuple[float, float]:
        """(CPU s, wall s) of the whole job list on a fresh renderer (cold memo)."""
        renderer = Renderer(ROOT / "personas", reload_interval=1e9, memoize=memoize)
        t0, w0 = time.process_time(), time.perf_counter()
        for customer, profile, s in jobs:
            renderer.render_script(customer, profile, s, moment="auto", as_of=AS_OF)
        return time.process_time() - t0, time.perf_counter() - w0

    engine_s, engine_wall = min(run(True) for _ in range(args.repeat))
    no_memo = Renderer(ROOT / "personas", reload_interval=1e9, memoize=False)
    no_memo_s, _ = run(False)

    # the plain baseline: the same templates, the same variables, plain Environment.render
    plain_env = jinja2.Environment(
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False
    )
    plain_env.filters.update(FILTERS)
    plain_tpl = {t.name: plain_env.from_string(t.source) for t in engine.pack}
    plan: list[tuple[jinja2.Template, dict[str, Any]]] = []
    sandboxed: list[tuple[Any, dict[str, Any]]] = []
    for customer, profile, s in jobs:
        base, meta = no_memo.build_context(customer, profile, s, moment="auto", as_of=AS_OF)
        script = no_memo.render_script(customer, profile, s, moment="auto", as_of=AS_OF)
        blocks = {b["tag"]: b for b in value_blocks(no_memo.grid, meta["tags"], meta["hits"])}
        for seg in script.segments:
            variables = {**base, "block": blocks[seg.key]} if seg.key in blocks else base
            plan.append((plain_tpl[seg.template], variables))
            sandboxed.append((engine.pack.templates[seg.template], variables))

    def run_plain() -> float:
        t0 = time.process_time()
        for tpl, variables in plan:
            tpl.render(variables)
        return time.process_time() - t0

    plain_s = min(run_plain() for _ in range(args.repeat))
    start_budget(engine.limits)
    t0 = time.process_time()
    for ptpl, variables in sandboxed:
        no_memo._render_now(ptpl, {**variables, "range": safe_range})
    sandbox_raw_s = time.process_time() - t0

    n = len(jobs)
    result = {
        "scripts": n,
        "renders_per_script": round(len(plan) / n, 1),
        "engine_s": round(engine_s, 3),
        "engine_scripts_per_s": round(n / engine_s),
        "engine_wall_s": round(engine_wall, 3),
        "engine_wall_scripts_per_s": round(n / engine_wall),
        "plain_scripts_per_s": round(n / plain_s),
        "engine_no_memo_s": round(no_memo_s, 3),
        "engine_no_memo_scripts_per_s": round(n / no_memo_s),
        "plain_jinja_s": round(plain_s, 3),
        "sandbox_render_only_s": round(sandbox_raw_s, 3),
        "ratio_engine_vs_plain": round(engine_s / plain_s, 2),
        "ratio_engine_no_memo_vs_plain": round(no_memo_s / plain_s, 2),
        "ratio_sandbox_render_vs_plain": round(sandbox_raw_s / plain_s, 2),
    }
    print(f"{n} call scripts, {result['renders_per_script']} template renders each (CPU time)")
    print(
        f"engine (sandbox, limits, checks, memo): {engine_s:.3f} s = {result['engine_scripts_per_s']} scripts/s"
        f" (wall clock {engine_wall:.3f} s = {result['engine_wall_scripts_per_s']} scripts/s)"
    )
    print(
        f"engine without memo:                    {no_memo_s:.3f} s = {result['engine_no_memo_scripts_per_s']} scripts/s"
    )
    print(
        f"plain jinja2.Environment render only:   {plain_s:.3f} s = {result['plain_scripts_per_s']} scripts/s"
    )
    print(f"sandbox render only (no memo/checks):   {sandbox_raw_s:.3f} s")
    print(
        f"engine / plain = {result['ratio_engine_vs_plain']} (target <= 1.5); "
        f"no-memo engine / plain = {result['ratio_engine_no_memo_vs_plain']}; "
        f"sandbox render / plain render = {result['ratio_sandbox_render_vs_plain']}"
    )
    sys.stdout.flush()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
