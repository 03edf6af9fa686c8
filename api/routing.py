"""The app's routes as one flat table.

FastAPI (0.165) includes a router as one entry of the app's table (an ``_IncludedRouter``)
that resolves its routes on each request: a request is matched against every route of every
router before its own, through a context per route, and its own router matches it twice
(once to find it, once to handle it). For the dialler's render, the fifth router, that was
about a sixth of the request's CPU. :func:`include_flat` adds each route of a router to the
app itself instead, the way FastAPI's ``include_router`` did before: the app's table is then
a plain list of ``APIRoute`` s, each matched once by its path's regular expression, with the
app as its provider of ``dependency_overrides``. The routes, their order and the OpenAPI
schema are those ``include_router`` gives (``tests/api/test_routing.py`` compares them).
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute


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
