"""Outcome statistics per profile and group (model vs control), and the lift."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import Analyst, ServicesDep
from api.errors import ERROR_RESPONSES
from scripts_engine.outcomes import profile_stats

router = APIRouter(prefix="/v1/stats", tags=["statistics"], responses=ERROR_RESPONSES)


@router.get("/profiles", response_model=dict[str, Any])
def stats_by_profile(
    _: Analyst,
    services: ServicesDep,
    campaign_id: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Outcomes, connects and conversions per profile and group; model-vs-control lift."""
    with services.db.read() as session:
        return profile_stats(session=session, campaign_id=campaign_id)
