"""Reports: the campaign funnel, conversion by profile, tag and hit count, model-vs-control
lift with 95 % intervals; defect rates per template version."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import ServicesDep, Staff
from api.errors import ERROR_RESPONSES
from scripts_engine.reports import campaign_report, defect_report

router = APIRouter(prefix="/v1/reports", tags=["reports"], responses=ERROR_RESPONSES)

_LIFT_EXAMPLE = {
    "model_rate": 0.12, "control_rate": 0.08, "difference": 0.04,
    "difference_ci95": [-0.01, 0.09], "ratio": 1.5, "ratio_ci95": [0.9, 2.5],
    "method": "difference: Newcombe (hybrid score); ratio: log-adjusted",
}  # fmt: skip


@router.get(
    "/campaigns/{campaign_id}", response_model=dict[str, Any],
    responses={200: {"content": {"application/json": {"example": {
        "campaign_id": "C-0123456789abcdef", "name": "spring", "status": "ready",
        "funnel": {"all": {"built": 100, "claimed": 90, "reported": 80, "connected": 50,
                           "converted": 9, "opted_out": 2}},
        "conversion": {"model": {"n": 70, "count": 8, "rate": 0.1143,
                                 "ci95": [0.059, 0.21]}},
        "lift": _LIFT_EXAMPLE, "by_profile": [], "by_tag": [], "by_hit_count": [],
    }}}}},
)  # fmt: skip
def campaign(campaign_id: str, _: Staff, services: ServicesDep) -> dict[str, Any]:
    """Funnel (built, claimed, reported, connected, converted, opted out) per group;
    conversion by profile, tag and hit count; model-vs-control lift with 95 % intervals."""
    with services.db.read() as session:
        report = campaign_report(session, campaign_id)
        report["defects"] = defect_report(session, campaign_id=campaign_id)
        return report


@router.get("/templates", response_model=list[dict[str, Any]])
def templates(
    _: Staff, services: ServicesDep,
    name: Annotated[str | None, Query(max_length=200, examples=["call/opening"])] = None,
    campaign_id: Annotated[str | None, Query(max_length=64)] = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Defect rate per template version (reviewed calls that used it, those a failed critical
    item was traced to), with Wilson 95 % intervals."""
    with services.db.read() as session:
        return defect_report(session, name=name, campaign_id=campaign_id)
