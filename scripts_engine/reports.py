"""Closed-loop reports: does the persona model convert better than the control group, and which
template versions make defective calls.

Per campaign:

- **funnel** (all, model, control): calls built, claimed (handed to a dialler at least once),
  with an outcome, connected, converted, opted out, complaints (the dialler reported
  ``complaint: true``);
- **conversion** by profile, by tag (customers whose profile has the tag) and by hit count,
  for the model group and the control group side by side. Control customers are profiled
  like everyone (the call record keeps the profile they would have had) but heard the
  generic script, so each row compares like with like;
- **lift**: the model group's conversion rate minus the control group's, with Newcombe's
  95 % interval for a difference of two independent proportions, and the ratio of the
  rates with its log-adjusted interval (statsmodels ``confint_proportions_2indep``).

The conversion rate is converted calls over calls with an outcome (``reported``): a call
not yet reported is neither a success nor a failure.

Per template version: the **defect rate**, reviewed calls that used the version over those a
QA review traced a failed critical item to it, with Wilson's 95 % interval.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scripts_engine.db.errors import NotFound
from scripts_engine.db.models import (
    Call,
    CallDocument,
    Campaign,
    Outcome,
    ReviewItem,
    ReviewResult,
)
from scripts_engine.versions import find_versions

GROUPS = ("model", "control")
CONFIDENCE = 0.95


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def wilson(count: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (None when ``n`` is 0)."""
    if n <= 0:
        return None
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(count, n, alpha=1 - confidence, method="wilson")
    return float(low), float(high)


def rate(count: int, n: int) -> dict[str, Any]:
    """``{n, count, rate, ci}`` with the Wilson interval."""
    ci = wilson(count, n)
    return {"n": n, "count": count, "rate": _round(count / n) if n else None,
            "ci95": [_round(ci[0]), _round(ci[1])] if ci else None}  # fmt: skip


def lift(model: tuple[int, int], control: tuple[int, int]) -> dict[str, Any]:
    """Model minus control conversion (and their ratio), with 95 % intervals.

    ``model`` and ``control`` are ``(converted, reported)``.
    """
    (c1, n1), (c0, n0) = model, control
    out: dict[str, Any] = {
        "model_rate": _round(c1 / n1) if n1 else None,
        "control_rate": _round(c0 / n0) if n0 else None,
        "difference": None, "difference_ci95": None, "ratio": None, "ratio_ci95": None,
        "method": "difference: Newcombe (hybrid score); ratio: log-adjusted",
    }  # fmt: skip
    if not n1 or not n0:
        return out
    from statsmodels.stats.proportion import confint_proportions_2indep

    out["difference"] = _round(c1 / n1 - c0 / n0)
    low, high = confint_proportions_2indep(c1, n1, c0, n0, method="newcomb", compare="diff",
                                           alpha=1 - CONFIDENCE)  # fmt: skip
    out["difference_ci95"] = [_round(low), _round(high)]
    if c0:
        out["ratio"] = _round((c1 / n1) / (c0 / n0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            low, high = confint_proportions_2indep(c1, n1, c0, n0, method="log-adjusted",
                                                   compare="ratio", alpha=1 - CONFIDENCE)  # fmt: skip
        out["ratio_ci95"] = [_round(low), _round(high)]
    return out


def _cell() -> dict[str, list[int]]:
    return {g: [0, 0] for g in GROUPS}  # [reported, converted]


def _table(cells: dict[Any, dict[str, list[int]]], key: str) -> list[dict[str, Any]]:
    rows = []
    for k in sorted(cells, key=lambda x: (str(type(x)), x)):
        g = cells[k]
        rows.append({key: k, **{grp: rate(g[grp][1], g[grp][0]) for grp in GROUPS},
                     "lift": lift((g["model"][1], g["model"][0]),
                                  (g["control"][1], g["control"][0]))})  # fmt: skip
    return rows


def campaign_report(session: Session, campaign_id: str) -> dict[str, Any]:
    """Funnel, conversion by profile, tag and hit count, and lift, for one campaign.

    Raises:
        NotFound: no such campaign.
    """
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFound(f"no campaign '{campaign_id}'")
    # only the scoring fields of each record, extracted by the database, streamed: a large
    # campaign's context snapshots and scripts are never loaded
    rec = CallDocument.record
    calls = session.execute(
        select(Call.id, Call.group, Call.claims, rec[("scoring", "profile", "id")].as_string(),
               rec[("scoring", "profile", "tags")], rec[("scoring", "hits")])
        .join_from(Call, CallDocument)
        .where(Call.campaign_id == campaign_id)
        .execution_options(yield_per=2000)
    )  # fmt: skip
    outcomes = {o.call_id: o for o in session.execute(
        select(Outcome.call_id, Outcome.status, Outcome.converted, Outcome.opt_out,
               Outcome.complaint).where(Outcome.campaign_id == campaign_id))}  # fmt: skip
    funnel = {g: dict.fromkeys(("built", "claimed", "reported", "connected", "converted",
                                "opted_out", "complaints"), 0) for g in ("all", *GROUPS)}  # fmt: skip
    by_profile: dict[Any, dict[str, list[int]]] = defaultdict(_cell)
    by_tag: dict[Any, dict[str, list[int]]] = defaultdict(_cell)
    by_hits: dict[Any, dict[str, list[int]]] = defaultdict(_cell)
    for cid, group, claims, profile_id, profile_tags, hits in calls:
        group = group if group in GROUPS else "model"
        o = outcomes.get(cid)
        steps = {"built": True, "claimed": claims > 0, "reported": o is not None,
                 "connected": o is not None and o.status == "connected",
                 "converted": o is not None and o.converted,
                 "opted_out": o is not None and o.opt_out,
                 "complaints": o is not None and o.complaint}  # fmt: skip
        for step, hit in steps.items():
            if hit:
                funnel["all"][step] += 1
                funnel[group][step] += 1
        if o is None:
            continue
        converted = int(bool(o.converted))
        keys = [(by_profile, profile_id or "generic"), (by_hits, len(hits or []))]
        keys += [(by_tag, t) for t in profile_tags or []]
        for table, k in keys:
            table[k][group][0] += 1
            table[k][group][1] += converted
    m, c = funnel["model"], funnel["control"]
    return {
        "campaign_id": campaign_id, "name": campaign.name, "status": campaign.status,
        "holdout_pct": (campaign.options or {}).get("holdout_pct"),
        "funnel": funnel,
        "conversion": {g: rate(funnel[g]["converted"], funnel[g]["reported"])
                       for g in ("all", *GROUPS)},
        "lift": lift((m["converted"], m["reported"]), (c["converted"], c["reported"])),
        "by_profile": _table(by_profile, "profile_id"),
        "by_tag": _table(by_tag, "tag"),
        "by_hit_count": _table(by_hits, "hits"),
        "definitions": {
            "rate": "converted / reported (calls with an outcome)",
            "ci95": "Wilson score interval",
            "lift": "model rate - control rate (Newcombe 95% CI); ratio model/control "
                    "(log-adjusted 95% CI)",
        },
    }  # fmt: skip


def defect_report(
    session: Session, *, name: str | None = None, campaign_id: str | None = None
) -> list[dict[str, Any]]:
    """Per template version: reviewed calls that used it, defective ones, rate and interval.

    A call counts once however many reviewers scored it; it is defective for a version when
    any of its reviews traced a failed critical item to that version.
    """
    stmt = select(ReviewItem).where(ReviewItem.status == "done")
    if campaign_id:
        stmt = stmt.where(ReviewItem.campaign_id == campaign_id)
    items = list(session.scalars(stmt))
    results: dict[int, list[ReviewResult]] = defaultdict(list)
    ids = [i.id for i in items]
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        for r in session.scalars(select(ReviewResult).where(ReviewResult.item_id.in_(part))):
            results[r.item_id].append(r)
    reviewed: dict[tuple[str, str], set[str]] = defaultdict(set)
    defective: dict[tuple[str, str], set[str]] = defaultdict(set)
    for item in items:
        for t in item.templates:
            if name is None or t["template"] == name:
                reviewed[(t["template"], t["version"])].add(item.call_id)
        for r in results[item.id]:
            failed = {k for k, v in r.critical.items() if v == "fail"}
            for d in r.defects:
                if d.get("item") in failed and (name is None or d["template"] == name):
                    defective[(d["template"], d["version"])].add(item.call_id)
    stored = find_versions(session, reviewed)
    out = []
    for key in sorted(reviewed):
        n, bad = len(reviewed[key]), len(defective[key] & reviewed[key])
        v = stored.get(key)
        out.append({"template": key[0], "version": key[1], "version_id": v.id if v else None,
                    "status": v.status if v else None, "author": v.author if v else None,
                    "flags": v.flags if v else 0, "reviewed_calls": n, "defective_calls": bad,
                    **{k: val for k, val in rate(bad, n).items() if k in ("rate", "ci95")}})  # fmt: skip
    return out


def format_report(report: dict[str, Any], defects: Iterable[dict[str, Any]]) -> str:
    """The campaign report as text for the terminal."""

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    def ci(pair: list[float | None] | None) -> str:
        return "" if not pair else f" [{pct(pair[0])}, {pct(pair[1])}]"

    lines = [f"campaign {report['campaign_id']} ({report['name']}), {report['status']}", "",
             f"{'funnel':<10}" + "".join(f"{s:>11}" for s in report["funnel"]["all"])]  # fmt: skip
    for g, steps in report["funnel"].items():
        lines.append(f"{g:<10}" + "".join(f"{v:>11}" for v in steps.values()))
    lines.append("")
    for g, r in report["conversion"].items():
        lines.append(f"conversion {g:<8} {r['count']}/{r['n']} = {pct(r['rate'])}{ci(r['ci95'])}")
    lf = report["lift"]
    lines.append(f"lift (model - control): {pct(lf['difference'])}{ci(lf['difference_ci95'])}"
                 + (f"; ratio {lf['ratio']:.2f}" if lf["ratio"] is not None else ""))  # fmt: skip
    for title, key, rows in (("by profile", "profile_id", report["by_profile"]),
                             ("by tag", "tag", report["by_tag"]),
                             ("by hit count", "hits", report["by_hit_count"])):  # fmt: skip
        lines += ["", f"{title:<14}{'model':>22}{'control':>22}{'lift':>10}"]
        for row in rows:
            mo, co = row["model"], row["control"]
            lines.append(f"{row[key]!s:<14}{mo['count']:>6}/{mo['n']:<5}{pct(mo['rate']):>10}"
                         f"{co['count']:>6}/{co['n']:<5}{pct(co['rate']):>10}"
                         f"{pct(row['lift']['difference']):>10}")  # fmt: skip
    defects = list(defects)
    if defects:
        lines += ["", "defect rate per template version (QA reviews)"]
        for d in defects:
            lines.append(f"  {d['template']}@{d['version']}: {d['defective_calls']}/"
                         f"{d['reviewed_calls']} = {pct(d['rate'])}{ci(d['ci95'])}")  # fmt: skip
    return "\n".join(lines)
