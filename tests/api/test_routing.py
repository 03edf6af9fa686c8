"""The app's flat route table (api/routing.py) is what FastAPI's ``include_router`` gives: the
same routes in the same order, the same OpenAPI schema, and ``app.dependency_overrides``
reaches every route. Its index picks the route the whole table would."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Match, Route

from api import create_app, web
from api.deps import get_services
from api.errors import ApiError
from api.main import _require_checked_headers
from api.routes import ROUTERS, TAGS
from api.routing import RouteIndex, _key
from scripts_engine.config import Settings
from tests.api.conftest import auth, demo_records


def test_the_flat_table_has_include_routers_routes_and_schema(api_settings: Settings) -> None:
    app = create_app(api_settings, start_builder=False)
    included = FastAPI(title=app.title, version=app.version, description=app.description,
                       openapi_tags=TAGS)  # fmt: skip
    for router in (*ROUTERS, *web.ROUTERS):
        included.include_router(router)
    _require_checked_headers(included, api_settings)  # what create_app adds to the schema
    # the routers' routes (the API's, then the web workspace's), in the order a request is
    # matched against them
    endpoints = {r.endpoint for router in (*ROUTERS, *web.ROUTERS) for r in router.routes}
    flat = [(r.path, sorted(r.methods), r.name, type(r).__name__) for r in app.router.routes
            if isinstance(r, APIRoute) and r.endpoint in endpoints]  # fmt: skip
    assert len(flat) > 40
    wanted = [(c.path, sorted(c.methods), c.name, type(c.original_route).__name__)
              for r in included.router.routes
              for c in getattr(r, "effective_route_contexts", lambda: [])()]  # fmt: skip
    assert flat == wanted
    ours, theirs = app.openapi(), included.openapi()
    assert ours["paths"]  # documented routes only: /web/ is not in either
    assert json.dumps(ours, sort_keys=True) == json.dumps(theirs, sort_keys=True)


def test_dependency_overrides_reach_the_flat_routes(
    client: TestClient, keys: dict[str, str]
) -> None:
    w = auth(keys["writer"])
    body = {"customers": demo_records(1)}
    assert client.post("/v1/score", json=body, headers=w).status_code == 200

    def unavailable() -> None:
        raise ApiError(503, "overridden for the test")

    client.app.dependency_overrides[get_services] = unavailable  # type: ignore[attr-defined]
    try:
        r = client.post("/v1/score", json=body, headers=w)
    finally:
        client.app.dependency_overrides.clear()  # type: ignore[attr-defined]
    assert (r.status_code, r.json()["message"]) == (503, "overridden for the test")
    assert client.post("/v1/score", json=body, headers=w).status_code == 200


def _first_match(routes: list[Any], scope: dict[str, Any]) -> Any:
    """The route Starlette's table picks: the first full match, else the first partial."""
    partial = None
    for route in routes:
        match, _ = route.matches(dict(scope))
        if match == Match.FULL:
            return route
        if match == Match.PARTIAL and partial is None:
            partial = route
    return partial


def test_the_route_index_picks_the_route_the_whole_table_picks(api_settings: Settings) -> None:
    app = create_app(api_settings, start_builder=False)
    index = app.router.middleware_stack
    assert isinstance(index, RouteIndex)
    table = list(app.router.routes)
    paths = {"/", "/nowhere", "/v1", "/v1/", "/v1/nowhere/x", "/web/static/app.css",
             "/web/static", "/v1/templates/a/b/c.md", "/v1/scripts/render/", "/healthz/",
             "/docs/oauth2-redirect", "/v1/calls/K-1/outcome/extra"}  # fmt: skip
    for route in table:
        if isinstance(route, APIRoute | Route):
            example = route.path_format.replace("{name}", "a/b.md")
            example = re.sub(r"\{[^}]+\}", "x1", example)
            paths |= {example, example + "/", example.rstrip("/") + "/more"}
    index._index()
    checked = 0
    for path in sorted(paths):
        for method in ("GET", "POST", "PUT", "DELETE", "HEAD"):
            scope = {"type": "http", "path": path, "method": method, "root_path": "",
                     "headers": [], "query_string": b""}  # fmt: skip
            view = index._views.get(_key(path), index._wild)
            wanted = _first_match(table, scope)
            got = _first_match(view.routes, scope)
            # a path the index's routes do not match goes to the whole table
            assert got is wanted or (got is None and view.default == app.router.app), (
                path, method, got, wanted)  # fmt: skip
            checked += wanted is not None
    assert checked > 100


def test_the_schema_says_which_headers_are_required_and_what_comes_back(
    api_settings: Settings,
) -> None:
    """A dialler writing a client from the schema alone sees the outcome's Idempotency-Key and
    X-Signature as required (the route checks them itself, so FastAPI listed them as
    optional), the Idempotent-Replayed answer header, 429 and 503 with Retry-After, and the
    audio's GET and HEAD with their content types and ETag. With outcome signatures optional,
    X-Signature is."""

    def schema(settings: Settings) -> Any:
        return create_app(settings, start_builder=False).openapi()

    paths = schema(api_settings)["paths"]
    outcome = paths["/v1/calls/{call_id}/outcome"]["post"]
    headers = {p["name"]: p.get("required") for p in outcome["parameters"] if p["in"] == "header"}
    assert headers == {"Idempotency-Key": True, "X-Signature": True}
    assert set(outcome["responses"]["201"]["headers"]) == {"Idempotent-Replayed"}
    for status in ("429", "503"):
        assert set(outcome["responses"][status]["headers"]) == {"Retry-After"}, status
    audio = paths["/v1/audio/{name}"]
    assert set(audio) == {"get", "head"}
    assert "audio/PCMA" in audio["get"]["responses"]["200"]["content"]
    assert "ETag" in audio["get"]["responses"]["200"]["headers"]
    assert {"206", "304", "416"} <= set(audio["get"]["responses"])
    relaxed = schema(api_settings.model_copy(update={"outcome_signatures": "optional"}))
    outcome = relaxed["paths"]["/v1/calls/{call_id}/outcome"]["post"]
    headers = {p["name"]: p.get("required") for p in outcome["parameters"] if p["in"] == "header"}
    assert headers == {"Idempotency-Key": True, "X-Signature": False}
