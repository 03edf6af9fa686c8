"""The web workspace for script writers, QA reviewers and campaign managers, under ``/web/``.

Server-rendered pages (Jinja2, autoescaped) on the same app and the same engine as the API,
Chinese first (``?lang=en`` for English), with a little JavaScript for live progress only.
People sign in with their API key once and get a session cookie (:mod:`api.web.auth`).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from api.routing import include_flat
from api.web import (
    campaign_pages,
    defect_pages,
    editor,
    pages,
    review_pages,
    templates_browser,
)
from api.web.auth import current_user
from api.web.render import page

STATIC = Path(__file__).resolve().parent / "static"
#: the workspace's routers, in the order a request is tried against them
ROUTERS = (pages.router, campaign_pages.router, templates_browser.router, editor.router,
           review_pages.router, defect_pages.router)  # fmt: skip


def install(app: FastAPI) -> None:
    """Add the workspace's routes, static files and sign-in redirects to ``app``."""
    for router in ROUTERS:
        include_flat(app, router)
    app.mount("/web/static", StaticFiles(directory=STATIC), name="web-static")

    @app.get("/", include_in_schema=False)
    def root() -> Response:
        return RedirectResponse("/web/", status_code=307)

    @app.exception_handler(pages.LoginRequired)
    async def _login(request: Request, exc: pages.LoginRequired) -> Response:
        target = request.url.path
        if request.url.query:
            target += "?" + request.url.query
        from urllib.parse import quote

        return RedirectResponse(f"/web/login?next={quote(target, safe='')}", status_code=303)

    @app.exception_handler(pages.Forbidden)
    async def _forbidden(request: Request, exc: pages.Forbidden) -> Response:
        return page(request, "error.html", {"message": "error.forbidden"},
                    user=current_user(request), status=403)  # fmt: skip
