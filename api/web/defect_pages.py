"""The defect report: per template version, the share of QA-reviewed calls that used it in
which a failed critical item was traced to it, with Wilson's 95 % interval, drawn as a chart
(a point on its interval) and listed, each version linked to its page and to its diff against
the version before it.

The figures are those of :func:`scripts_engine.reports.defect_report` (``GET
/v1/reports/templates``); this module only filters and lays them out.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import select

from api.deps import ServicesDep
from api.web import charts, i18n
from api.web.auth import WebUser
from api.web.pages import require
from api.web.render import page
from scripts_engine.db import repository as repo
from scripts_engine.db.models import TemplateVersion
from scripts_engine.reports import CONFIDENCE, defect_report

router = APIRouter(prefix="/web/reports", include_in_schema=False)
#: who reads reports (as ``GET /v1/reports/...``); the QA menu links here
Reader = Annotated[WebUser, require("admin", "writer", "qa")]
#: the chart's geometry (SVG units): labels on the left, the axis on the right
LABEL_W, AXIS_W, ROW = 232.0, 300.0, 30.0


def _previous_ids(rows: list[dict[str, Any]], services: ServicesDep) -> dict[int, int]:
    """For each version shown, the version of the same file saved just before it."""
    names = {r["template"] for r in rows}
    if not names:
        return {}
    with services.db.read() as session:
        found = session.execute(select(TemplateVersion.name, TemplateVersion.id)
                                .where(TemplateVersion.name.in_(names))
                                .order_by(TemplateVersion.id)).all()  # fmt: skip
    by_name: dict[str, list[int]] = {}
    for name, vid in found:
        by_name.setdefault(name, []).append(vid)
    out: dict[int, int] = {}
    for ids in by_name.values():
        for before, after in zip(ids, ids[1:], strict=False):
            out[after] = before
    return out


@router.get("/defects")
def defects_page(
    request: Request, user: Reader, services: ServicesDep, name: str = "", campaign: str = ""
) -> Response:
    """Defect rate per template version with its 95 % interval: a chart and a table."""
    t = i18n.Translator(i18n.pick(request)[0])
    with services.db.read() as session:
        campaigns = repo.list_campaigns(session=session, limit=200)
        names = sorted(session.scalars(select(TemplateVersion.name).distinct()))
    errors: dict[str, str] = {}
    if name and name not in names:
        errors["name"] = t("err.literal_error")
    if campaign and campaign not in {c.id for c in campaigns}:
        errors["campaign"] = t("err.literal_error")
    rows: list[dict[str, Any]] = []
    if not errors:
        with services.db.read() as session:
            rows = defect_report(session, name=name or None, campaign_id=campaign or None)
    rows.sort(key=lambda r: (r["template"], r["version_id"] or 0, r["version"]))
    previous = _previous_ids(rows, services)
    for r in rows:
        r["previous_id"] = previous.get(r["version_id"]) if r["version_id"] else None
    shown = [r for r in rows if r.get("ci95")]
    points, peak = charts.intervals(
        [(f"{r['template']} #{r['version_id'] or r['version'][:8]}", r["rate"], r["ci95"][0],
          r["ci95"][1]) for r in shown],
        left=LABEL_W, width=AXIS_W, row=ROW, top=8,
    )  # fmt: skip
    parts = 4 if round(peak * 100) % 4 == 0 else 2  # ticks at whole percents
    ticks = [(round(peak * k / parts, 4), round(LABEL_W + AXIS_W * k / parts, 1))
             for k in range(parts + 1)]  # fmt: skip
    return page(request, "defects.html", {
        "rows": rows, "points": list(zip(points, shown, strict=True)), "ticks": ticks,
        "level": round(CONFIDENCE * 100), "values": {"name": name, "campaign": campaign},
        "errors": errors, "names": names, "campaigns": campaigns, "quote": quote,
        "chart": {"label_w": LABEL_W, "axis_w": AXIS_W, "row": ROW,
                  "height": 8 + ROW * len(shown) + 24},
    }, user=user, status=422 if errors else 200)  # fmt: skip
