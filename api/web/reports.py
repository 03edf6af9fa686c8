"""What the campaign page shows: the funnel, conversion by hit count and by profile, and the
model group's lift over the control group with its 95% confidence interval (as a ratio of
the conversion rates and as their difference).

Computed here from the data the service already keeps (calls, their audit records, outcomes,
:func:`scripts_engine.outcomes.profile_stats`). The writers-and-QA API adds
``GET /v1/reports/...`` with the same figures; when its module lands, :func:`campaign_report`
should call it and keep returning this shape (the templates read only this dict).

Conversion is ``converted / calls with an outcome`` (every reported call counts, whether or
not it connected). The lift is the ratio of the two groups' conversion rates (the relative
risk); its interval is the usual log (Katz) interval from
:func:`scipy.stats.contingency.relative_risk`. The difference of the rates gets Newcombe's
hybrid score interval (built from the two Wilson intervals), which stays defined when a group
has no conversions.
"""

from __future__ import annotations

import math
from typing import Any

from scipy.stats import binomtest
from scipy.stats.contingency import relative_risk
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from scripts_engine.db import repository as repo
from scripts_engine.db.models import Call, CallDocument, Campaign, Outcome
from scripts_engine.outcomes import profile_stats


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def newcombe(
    conv1: int, n1: int, conv0: int, n0: int, *, level: float = 0.95
) -> tuple[float, float, float]:
    """The difference of two conversion rates with Newcombe's hybrid score interval (from
    the two Wilson intervals); defined even when a group has no conversions."""
    p1, p0 = conv1 / n1, conv0 / n0
    l1, u1 = binomtest(conv1, n1).proportion_ci(confidence_level=level, method="wilson")
    l0, u0 = binomtest(conv0, n0).proportion_ci(confidence_level=level, method="wilson")
    d = p1 - p0
    return (d, d - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2),
            d + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2))  # fmt: skip


def lift_interval(
    model_conv: int, model_n: int, control_conv: int, control_n: int, *, level: float = 0.95
) -> dict[str, Any]:
    """Model-vs-control lift (ratio of conversion rates) with its confidence interval.

    ``status`` says why there is no figure: ``no_data`` (a group has no outcomes) or
    ``no_conversions`` (a group has none: the ratio or its interval is unbounded)."""
    out: dict[str, Any] = {
        "model": {"outcomes": model_n, "converted": model_conv,
                  "rate": _rate(model_conv, model_n)},
        "control": {"outcomes": control_n, "converted": control_conv,
                    "rate": _rate(control_conv, control_n)},
        "lift": None, "low": None, "high": None, "level": level, "status": "ok",
        "difference": None, "diff_low": None, "diff_high": None,
    }  # fmt: skip
    if not model_n or not control_n:
        out["status"] = "no_data"
        return out
    out["difference"], out["diff_low"], out["diff_high"] = newcombe(
        model_conv, model_n, control_conv, control_n, level=level
    )
    if not model_conv or not control_conv:
        out["status"] = "no_conversions"
        return out
    rr = relative_risk(model_conv, model_n, control_conv, control_n)
    ci = rr.confidence_interval(confidence_level=level)
    out["lift"], out["low"], out["high"] = float(rr.relative_risk), float(ci.low), float(ci.high)
    if not all(math.isfinite(v) for v in (out["lift"], out["low"], out["high"])):
        out["status"] = "no_conversions"
    return out


def _sum(condition: Any) -> Any:
    return func.sum(case((condition, 1), else_=0))


def _hit_count(session: Session) -> Any:
    """How many tags the call's customer hit, from its audit record, computed in the database
    (NULL when the customer was not profiled): records are large, so they are not loaded."""
    if session.get_bind().dialect.name == "postgresql":
        return func.json_array_length(
            func.json_extract_path(CallDocument.record, "scoring", "hits")
        )
    return func.json_array_length(CallDocument.record, "$.scoring.hits")


def campaign_report(*, session: Session, campaign: Campaign) -> dict[str, Any]:
    """Every figure of one campaign's page (see the module docstring)."""
    cid = campaign.id
    calls = int(session.scalar(select(func.count()).where(Call.campaign_id == cid)) or 0)
    dialled = int(
        session.scalar(select(func.count()).where(Call.campaign_id == cid, Call.claims > 0)) or 0
    )
    by_hits: dict[str, dict[str, int]] = {}
    connected = converted = reported = 0
    hits = _hit_count(session)
    stmt = (
        select(hits, func.count(), _sum(Outcome.status == "connected"), _sum(Outcome.converted))
        .join(Outcome, Outcome.call_id == Call.id)
        .join(CallDocument, CallDocument.call_id == Call.id)
        .where(Call.campaign_id == cid)
        .group_by(hits)
    )
    for n_hits, n, conn, conv in session.execute(stmt):
        key = "-" if n_hits is None else str(int(n_hits))
        cell = by_hits.setdefault(key, {"outcomes": 0, "converted": 0})
        cell["outcomes"] += int(n)
        cell["converted"] += int(conv or 0)
        reported += int(n)
        connected += int(conn or 0)
        converted += int(conv or 0)
    hits_rows = [
        {"hits": k, **v, "rate": _rate(v["converted"], v["outcomes"])}
        for k, v in sorted(by_hits.items(), key=lambda kv: (kv[0] == "-", kv[0]))
    ]
    stats = profile_stats(session=session, campaign_id=cid)
    counts = repo.profile_counts(session=session, campaign_id=cid)
    profiles: dict[str, dict[str, Any]] = {
        p: {"profile_id": p, "calls": n, "outcomes": 0, "converted": 0} for p, n in counts.items()
    }
    for row in stats["profiles"]:
        pid = str(row["profile_id"] or "generic")
        cell = profiles.setdefault(pid, {"profile_id": pid, "calls": 0, "outcomes": 0,
                                         "converted": 0})  # fmt: skip
        cell["outcomes"] += row["outcomes"]
        cell["converted"] += row["converted"]
    profile_rows = sorted(profiles.values(), key=lambda r: (-r["calls"], r["profile_id"]))
    for r in profile_rows:
        r["rate"] = _rate(r["converted"], r["outcomes"])
    groups = stats["groups"]
    model, control = groups.get("model", {}), groups.get("control", {})
    lift = lift_interval(int(model.get("converted", 0)), int(model.get("outcomes", 0)),
                         int(control.get("converted", 0)), int(control.get("outcomes", 0)))  # fmt: skip
    return {
        "funnel": [
            {"stage": "planned", "count": campaign.total},
            {"stage": "selected", "count": calls},
            {"stage": "dialled", "count": dialled},
            {"stage": "reported", "count": reported},
            {"stage": "connected", "count": connected},
            {"stage": "converted", "count": converted},
        ],
        "by_hits": hits_rows,
        "by_profile": profile_rows,
        "lift": lift,
        "calls_by_status": repo.status_counts(session=session, campaign_id=cid),
    }
