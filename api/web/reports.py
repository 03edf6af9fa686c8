"""What the campaign page shows, taken from the shared reports module
(:func:`scripts_engine.reports.campaign_report`, the figures of ``GET /v1/reports/campaigns/
{id}`` and ``scripts-engine report``): one source of truth for the funnel, conversion and lift.
This module only reshapes them for the page's templates; it computes no statistics.

Conversion is ``converted / calls with an outcome``. The lift is shown as the model group's
rate minus the control group's (Newcombe's 95 % interval, defined even before a group has a
conversion) and as the ratio of the rates (log-adjusted 95 % interval).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from scripts_engine.db.models import Campaign
from scripts_engine.reports import CONFIDENCE, campaign_report


def _both(row: dict[str, Any]) -> dict[str, Any]:
    """A report row's model and control cells taken together: outcomes, converted, rate."""
    n = row["model"]["n"] + row["control"]["n"]
    conv = row["model"]["count"] + row["control"]["count"]
    return {"outcomes": n, "converted": conv, "rate": conv / n if n else None}


def lift_view(report: dict[str, Any]) -> dict[str, Any]:
    """The report's conversion and lift as the page's lift card reads them.

    ``status`` says why there is no ratio: ``no_data`` (a group has no outcomes) or
    ``no_conversions`` (a group has none: the ratio or its interval is unbounded)."""
    conv, lift = report["conversion"], report["lift"]
    model, control = conv["model"], conv["control"]
    difference = lift["difference"]
    if model["n"] and control["n"]:
        # from the counts: the report's value is rounded to 4 digits, and the page rounding it
        # again to 0.1 point could land a step off (0.361538 -> 0.3615 -> "+36.1", not +36.2)
        difference = model["count"] / model["n"] - control["count"] / control["n"]
    out: dict[str, Any] = {
        "model": {"outcomes": model["n"], "converted": model["count"], "rate": model["rate"]},
        "control": {"outcomes": control["n"], "converted": control["count"],
                    "rate": control["rate"]},
        "level": CONFIDENCE, "difference": difference, "diff_low": None,
        "diff_high": None, "lift": lift["ratio"], "low": None, "high": None, "status": "ok",
    }  # fmt: skip
    if lift["difference_ci95"]:
        out["diff_low"], out["diff_high"] = lift["difference_ci95"]
    if lift["ratio_ci95"]:
        out["low"], out["high"] = lift["ratio_ci95"]
    if not model["n"] or not control["n"]:
        out["status"] = "no_data"
    elif not model["count"] or not control["count"] or None in (out["lift"], out["low"],
                                                                out["high"]):  # fmt: skip
        out["status"] = "no_conversions"
    return out


def page_report(*, session: Session, campaign: Campaign) -> dict[str, Any]:
    """Every figure of one campaign's page, from the shared report."""
    report = campaign_report(session, campaign.id)
    funnel = report["funnel"]["all"]
    profiles = [{"profile_id": str(r["profile_id"]), **_both(r),
                 "model": r["model"], "control": r["control"]}
                for r in report["by_profile"]]  # fmt: skip
    profiles.sort(key=lambda r: (-r["outcomes"], r["profile_id"]))
    return {
        "funnel": [
            {"stage": "planned", "count": campaign.total},
            {"stage": "selected", "count": funnel["built"]},
            {"stage": "dialled", "count": funnel["claimed"]},
            {"stage": "reported", "count": funnel["reported"]},
            {"stage": "connected", "count": funnel["connected"]},
            {"stage": "converted", "count": funnel["converted"]},
        ],
        "by_hits": [{"hits": str(r["hits"]), **_both(r)} for r in report["by_hit_count"]],
        "by_profile": profiles,
        "lift": lift_view(report),
    }
