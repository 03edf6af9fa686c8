"""The persona grid's figures for the workspace: customers and conversion per profile.

Customers per profile are the stored customers (those who did not opt out of profiling),
scored with the service's engine; the result is cached until a customer changes. Conversion
comes from two sources, never mixed:

- ``outcomes``: call outcomes the diallers reported (converted / calls with an outcome), per
  profile, over every campaign;
- ``history``: the shipped demo customers' real UCI outcome (``y``), out-of-sample (the
  default model is trained without them): what the grid would have predicted.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from sqlalchemy import func, select

from api.deps import Services
from scripts_engine import propensity as prop
from scripts_engine.db.models import Customer
from scripts_engine.evaluation import summarise
from scripts_engine.features import load_customers
from scripts_engine.outcomes import profile_stats

SAMPLES = 8


@dataclass(frozen=True)
class Scored:
    """Stored customers' profiles: counts per profile and a few samples of each."""

    customers: int
    counts: dict[str, int]
    hit_counts: dict[int, int]
    samples: dict[str, list[dict[str, Any]]]


_lock = threading.Lock()


def _cache(services: Services) -> dict[str, Any]:
    """The cache of one app (kept on its services: apps in one process differ in engine and
    database)."""
    with _lock:
        cache = getattr(services, "_web_cache", None)
        if cache is None:
            cache = {}
            setattr(services, "_web_cache", cache)  # noqa: B010 - not a declared field
        return cast(dict[str, Any], cache)


def _fingerprint(services: Services) -> tuple[Any, ...]:
    with services.db.read() as session:
        n, last = session.execute(
            select(func.count(), func.max(Customer.updated_at)).where(
                Customer.profiling_opt_out.is_(False)
            )
        ).one()
    return (int(n or 0), str(last), services.toolkit.model_version)


def stored_profiles(services: Services) -> Scored:
    """Profiles of every stored customer (cached until a customer changes)."""
    key = _fingerprint(services)
    cache = _cache(services)
    with _lock:
        hit = cache.get("stored")
        if hit is not None and hit[0] == key:
            return hit[1]
    engine = services.toolkit.engine
    with services.db.read() as session:
        records = list(
            session.scalars(
                select(Customer.record)
                .where(Customer.profiling_opt_out.is_(False))
                .order_by(Customer.customer_id)
            )
        )
    counts: dict[str, int] = {}
    hit_counts: dict[int, int] = {}
    samples: dict[str, list[dict[str, Any]]] = {}
    loaded = load_customers(records, engine.grid) if records else None
    if loaded is not None and len(loaded.batch):
        result = engine.score(loaded.batch)
        ids = [p.id for p in engine.profiles]
        idx = result.assignment.profile_index
        for p, n in zip(ids, np.bincount(idx, minlength=len(ids)), strict=True):
            counts[p] = int(n)
        for h, n in enumerate(np.bincount(result.hit_counts, minlength=9)):
            hit_counts[h] = int(n)
        for i in range(len(loaded.batch)):
            pid = ids[int(idx[i])]
            if len(samples.setdefault(pid, [])) < SAMPLES:
                samples[pid].append({"record": loaded.batch.record(i), **result.explain(i)})
    scored = Scored(customers=len(records), counts=counts, hit_counts=hit_counts,
                    samples=samples)  # fmt: skip
    with _lock:
        cache["stored"] = (key, scored)
    return scored


def outcome_rates(services: Services) -> dict[str, dict[str, Any]]:
    """Per profile, over every campaign: calls with an outcome, conversions, the rate."""
    with services.db.read() as session:
        stats = profile_stats(session=session)
    out: dict[str, dict[str, Any]] = {}
    for row in stats["profiles"]:
        if row["profile_id"] is None:
            continue
        cell = out.setdefault(row["profile_id"], {"outcomes": 0, "converted": 0})
        cell["outcomes"] += row["outcomes"]
        cell["converted"] += row["converted"]
    for cell in out.values():
        cell["rate"] = cell["converted"] / cell["outcomes"] if cell["outcomes"] else None
    return out


def history(services: Services) -> dict[str, Any]:
    """The shipped demo customers' real outcomes, by profile and by hit count (cached)."""
    cache = _cache(services)
    with _lock:
        if "history" in cache:
            return cast(dict[str, Any], cache["history"])
    engine = services.toolkit.engine
    path = services.settings.demo_customers_file
    loaded = load_customers(path, engine.grid, outcomes=True)
    tag = next(t for t, s in engine.grid.tags.items() if s.kind == "propensity")
    result = engine.score(loaded.batch)
    summary = summarise(result, prop.target_vector(engine.grid, loaded.batch, tag))
    out = {
        "customers": summary["customers"],
        "base_rate": summary["base_rate"],
        "profiles": {
            p["id"]: {"customers": p["customers"], "rate": p["rate"] if p["customers"] else None}
            for p in summary["profiles"]
        },
        "by_hits": summary["by_hits"],
    }
    with _lock:
        cache["history"] = out
    return out


def mask_name(name: Any) -> str:
    """``王芳`` -> ``王*``; the surname is enough to tell samples apart."""
    text = str(name or "").strip()
    return text[:1] + "*" * max(len(text) - 1, 1) if text else "—"
