"""The routers, in the order the OpenAPI lists them."""

from api.routes import (
    audio,
    calls,
    campaigns,
    customers,
    health,
    keys,
    previews,
    reports,
    reviews,
    scripts,
    stats,
    templates,
    voices,
)

ROUTERS = (
    health.router, keys.router, customers.router, scripts.router, campaigns.router,
    calls.router, audio.router, voices.router, stats.router, templates.router, previews.router,
    reviews.router, reports.router,
)  # fmt: skip

__all__ = ["ROUTERS"]
