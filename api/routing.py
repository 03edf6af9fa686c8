"""The app's routes as one flat table, matched through an index.

FastAPI (0.165) includes a router as one entry of the app's table (an ``_IncludedRouter``)
that resolves its routes on each request: a request is matched against every route of every
router before its own, through a context per route, and its own router matches it twice
(once to find it, once to handle it). For the dialler's render, the fifth router, that was
about a sixth of the request's CPU. :func:`include_flat` adds each route of a router to the
app itself instead, the way FastAPI's ``include_router`` did before: the app's table is then
a plain list of ``APIRoute`` s, each matched once by its path's regular expression, with the
app as its provider of ``dependency_overrides``. The routes, their order and the OpenAPI
schema are those ``include_router`` gives (``tests/api/test_routing.py`` compares them).

Starlette then still tries a request against the routes one by one, a regular expression
each: render, the sixteenth route, paid 20 us to be found. :class:`RouteIndex` keeps the
routes by the first two segments of the paths they can match, so a request is tried only
against those (2 us), and picks the route the whole table would (the same test checks it for
every route).
"""

from __future__ import annotations

import copy

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send


def include_flat(app: FastAPI, router: APIRouter) -> None:
    """Add ``router``'s routes to ``app``, as they are (the router's prefix, tags, responses
    and dependencies are already each route's)."""
    for route in router.routes:
        if not isinstance(route, APIRoute):
            raise TypeError(f"{route!r} in {router.prefix or '/'}: only API routes are flattened")
        app.router.add_api_route(
            route.path,
            route.endpoint,
            response_model=route.response_model,
            status_code=route.status_code,
            tags=route.tags,
            dependencies=route.dependencies,
            summary=route.summary,
            description=route.description,
            response_description=route.response_description,
            responses=route.responses,
            deprecated=route.deprecated,
            methods=route.methods,
            operation_id=route.operation_id,
            response_model_include=route.response_model_include,
            response_model_exclude=route.response_model_exclude,
            response_model_by_alias=route.response_model_by_alias,
            response_model_exclude_unset=route.response_model_exclude_unset,
            response_model_exclude_defaults=route.response_model_exclude_defaults,
            response_model_exclude_none=route.response_model_exclude_none,
            include_in_schema=route.include_in_schema,
            response_class=route.response_class,
            name=route.name,
            route_class_override=type(route),
            callbacks=route.callbacks,
            openapi_extra=route.openapi_extra,
            generate_unique_id_function=route.generate_unique_id_function,
            strict_content_type=route.strict_content_type,
        )


def _literal_prefix(route: BaseRoute) -> str | None:
    """The text every path the route matches starts with (None: not known, e.g. a host route
    or an included router)."""
    path_format = getattr(route, "path_format", None)
    if not isinstance(route, Route | Mount) or not isinstance(path_format, str):
        return None
    return path_format.split("{", 1)[0]


def _key(path: str) -> str:
    """A request path's bucket: its first two segments (``/v1/scripts`` for
    ``/v1/scripts/render``, ``/healthz`` for itself)."""
    return "/".join(path.split("/", 3)[:3])


def _route_key(route: BaseRoute) -> str | None:
    """The one bucket of the paths the route can match, or None if they can fall in several."""
    prefix = _literal_prefix(route)
    if prefix is None:
        return None
    if "{" not in getattr(route, "path_format", "{"):  # a fixed path
        return _key(prefix)
    complete = prefix[: prefix.rfind("/") + 1]  # its segments that end before a parameter
    return _key(complete) if complete.count("/") >= 3 else None


class RouteIndex:
    """The app router's routes by the first two segments of the path, installed as the
    router's middleware stack: a request is matched only against the routes that can match
    its path, in the table's order, by FastAPI's own matching (a copy of the app's router that
    holds just those routes). A path that none of them matches goes to the whole router, which
    answers as it always does (a redirect to the path with or without its trailing slash, a
    404, a 405). The table is indexed again when routes are added."""

    def __init__(self, router: APIRouter):
        self.router = router
        self._size = -1
        self._views: dict[str, APIRouter] = {}
        self._wild: APIRouter = router

    def _index(self) -> None:
        routes = list(self.router.routes)
        keys = [_route_key(r) for r in routes]
        views: dict[str, APIRouter] = {}
        for key in {k for k in keys if k is not None}:
            view = copy.copy(self.router)
            view.routes = [r for r, k in zip(routes, keys, strict=True) if k in (key, None)]
            view.default = self.router.app  # what none of them matches: the whole table
            views[key] = view
        wild = copy.copy(self.router)
        wild.routes = [r for r, k in zip(routes, keys, strict=True) if k is None]
        wild.default = self.router.app
        self._views, self._wild, self._size = views, wild, len(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or scope.get("root_path"):
            await self.router.app(scope, receive, send)
            return
        if len(self.router.routes) != self._size:
            self._index()
        scope.setdefault("router", self.router)  # url_for sees every route
        view = self._views.get(_key(scope["path"]), self._wild)
        await view.app(scope, receive, send)


def index_routes(app: FastAPI) -> None:
    """Match the app's requests through a :class:`RouteIndex`."""
    app.router.middleware_stack = RouteIndex(app.router)
