"""The routers, in the order a request is matched against them, and the tags in the order the
OpenAPI (and so /docs) lists them."""

from api.routes import (
    audio,
    calls,
    campaigns,
    customers,
    dnc,
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

#: a request is tried against the app's routes in this order (api/routing.py), each at the
#: cost of a regular expression: the probes and the dialler's loop (outcome, claim, audio) come
#: first, then render and score (the dialler's and the writers' frequent calls), then the admin's
ROUTERS = (
    health.router, calls.router, campaigns.router, audio.router, scripts.router,
    keys.router, customers.router, dnc.router, voices.router, stats.router, templates.router,
    previews.router, reviews.router, reports.router,
)  # fmt: skip

#: the tags, in the order the docs show them (a newcomer's path: keys, customers, scripts,
#: campaigns, the dialler's calls)
TAGS = [
    {"name": "operations", "description": "Liveness, readiness and Prometheus metrics (no key)."},
    {"name": "keys", "description": "API keys and their roles (admin)."},
    {"name": "customers", "description": "Upsert by JSON, import by CSV or Parquet (admin)."},
    {
        "name": "do-not-call",
        "description": "Numbers never to call, whoever they are on file "
        "for (admin; QA may look one up).",
    },
    {"name": "scoring and scripts", "description": "Tag scores, persona profiles and scripts."},
    {"name": "campaigns", "description": "Build a campaign, follow it, claim its calls."},
    {"name": "calls", "description": "Report a call's outcome; read its audit record."},
    {"name": "audio", "description": "Voice prompts by content hash (ETag, conditional GET)."},
    {"name": "voices", "description": "The voice profiles and where each one is used."},
    {"name": "statistics", "description": "Conversion by persona profile, from outcomes."},
    {"name": "templates", "description": "Template versions, previews and approvals."},
    {"name": "reviews", "description": "The QA queue, scorecards and calibration."},
    {"name": "reports", "description": "Funnels, lift against control, defect rates."},
]

__all__ = ["ROUTERS", "TAGS"]
