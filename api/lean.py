"""A lean request handler for the dialler's hot routes (claim, outcome, render).

FastAPI's own handler does, on every request, work these routes never need: it resolves the
dependency tree level by level (for each level: path, query, header and cookie parameters,
cache keys, a look at whether each dependency is a generator), parses the content type with
the ``email`` package, records telemetry and builds an error context. On two cores that is
about as much CPU as the claim's database work. :class:`LeanRoute` is an ``APIRoute`` (so
the OpenAPI schema, the validation and the errors stay FastAPI's) whose handler, for an
endpoint of a simple shape, does only what that endpoint needs, in FastAPI's order:

1. read the body and decode it as JSON (a JSON syntax error is a 422, a body that is not
   UTF-8 or nests too deeply a 400, before anything else, as in FastAPI);
2. run the route's one access dependency (a :class:`~api.deps.KeyGuard`: 400/401/403/429);
3. validate the path and header parameters and the body with FastAPI's own functions
   (``request_params_to_args``, ``request_body_to_args``: the same values, the same errors);
4. call the endpoint, which answers with a ``Response`` of its own.

An endpoint of any other shape (query or cookie parameters, more dependencies, a return
value for FastAPI to serialise, a body size limit, ...) gets FastAPI's handler, as does every
request while ``app.dependency_overrides`` is set or a body size limit applies.
"""

from __future__ import annotations

import email.message
import inspect
import json
from collections.abc import Callable, Coroutine
from typing import Any, get_args

from fastapi import HTTPException, Request, Response
from fastapi import routing as fastapi_routing
from fastapi.dependencies.utils import request_body_to_args, request_params_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic_core import PydanticUndefined
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY

from api.deps import KeyGuard

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
_JSON_TYPES = {"application/json", "application/json; charset=utf-8"}


def _is_json(content_type: str) -> bool:
    """FastAPI's test: an ``application/json`` or ``application/*+json`` content type."""
    if content_type in _JSON_TYPES:
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


def _plain_str(field: Any) -> bool:
    """A path parameter declared as a bare ``str`` (no constraints, no alias)."""
    info = field.field_info
    return info.annotation is str and not info.metadata and field.alias == field.name


def _optional_str_header(field: Any) -> bool:
    """A header declared as ``str | None = None`` with an explicit alias (constraints such
    as a maximum length are fine: its field validates it)."""
    info = field.field_info
    return (
        bool(info.alias)
        and set(get_args(info.annotation)) == {str, type(None)}
        and not info.is_required()
        and info.default is None
        and info.default_factory is None
        and callable(getattr(field, "validate", None))
    )


class LeanRoute(APIRoute):
    """An ``APIRoute`` with the lean handler when its endpoint has a simple shape (see the
    module docstring); FastAPI's otherwise."""

    def get_route_handler(self) -> Handler:
        standard = super().get_route_handler()
        lean = self._lean_handler(standard)
        return lean if lean is not None else standard

    def _lean_handler(self, standard: Handler) -> Handler | None:
        # an included route is handled through its context in the including router (its
        # dependant then has the router's dependencies too): FastAPI builds that handler with
        # the context in this variable
        route: Any = self
        context_var = getattr(fastapi_routing, "_effective_route_context_var", None)
        context = context_var.get() if context_var is not None else None
        if context is not None and context.original_route is self:
            route = context
        d = route.dependant
        strict = getattr(route.strict_content_type, "value", route.strict_content_type)
        returns = inspect.signature(self.endpoint, eval_str=True).return_annotation
        simple = (
            d is not None
            and strict is True
            and len(d.dependencies) == 1
            and isinstance(d.dependencies[0].call, KeyGuard)
            and not d.dependencies[0].dependencies
            and d.dependencies[0].name is not None
            and not (d.query_params or d.cookie_params)
            and len(d.body_params) <= 1
            and not route._embed_body_fields
            and d.request_param_name is not None
            and not (d.http_connection_param_name or d.websocket_param_name)
            and not (d.background_tasks_param_name or d.response_param_name)
            and not d.security_scopes_param_name
            and isinstance(returns, type)
            and issubclass(returns, Response)
            and getattr(route, "max_body_size", None) is None
            and inspect.iscoroutinefunction(self.endpoint)
        )
        if not simple:
            return None
        guard = d.dependencies[0].call
        assert isinstance(guard, KeyGuard) and d.dependencies[0].name is not None
        guard_name, request_name = d.dependencies[0].name, d.request_param_name
        body_fields = d.body_params
        endpoint, overrides = self.endpoint, route.dependency_overrides_provider
        # FastAPI's parameter extraction costs more than the rest of this handler: a plain
        # ``str`` path parameter (any segment the path matched is valid) is taken as it is;
        # an optional ``str`` header with an explicit alias takes its default when absent and
        # is validated by its field (as FastAPI does, same errors) when present; every other
        # parameter goes through FastAPI's function
        plain_path = [f.name for f in d.path_params if _plain_str(f)]
        path_fields = [f for f in d.path_params if not _plain_str(f)]
        simple_headers = [(f.name, f.field_info.alias, f) for f in d.header_params
                          if _optional_str_header(f)]  # fmt: skip
        header_fields = [f for f in d.header_params if not _optional_str_header(f)]

        async def handle(request: Request) -> Response:
            if MAX_BODY_SIZE_SCOPE_KEY in request.scope or (
                overrides is not None and getattr(overrides, "dependency_overrides", None)
            ):
                return await standard(request)
            body: Any = PydanticUndefined
            if body_fields:
                try:
                    raw = await request.body()
                except StarletteHTTPException:  # over the size limit (RequestMiddleware): 413
                    raise
                except Exception as exc:  # as FastAPI answers it (no body limit applies here)
                    raise HTTPException(400, "There was an error parsing the body") from exc
                if raw:
                    body = raw
                    content_type = request.headers.get("content-type")
                    if content_type and _is_json(content_type):
                        try:
                            body = json.loads(raw)
                        except json.JSONDecodeError as exc:
                            raise RequestValidationError(
                                [{"type": "json_invalid", "loc": ("body", exc.pos),
                                  "msg": "JSON decode error", "input": {},
                                  "ctx": {"error": exc.msg}}],
                                body=exc.doc,
                            ) from exc  # fmt: skip
                        except Exception as exc:  # not UTF-8, nested too deeply: as FastAPI
                            raise HTTPException(400, "There was an error parsing the body") from exc
            values: dict[str, Any] = {guard_name: await guard(request), request_name: request}
            errors: list[Any] = []
            path_params = request.path_params
            for name in plain_path:
                values[name] = path_params[name]
            headers = request.headers
            for name, alias, field in simple_headers:
                value = headers.get(alias)
                if value is None:
                    values[name] = None
                    continue
                values[name], errs = field.validate(value, values, loc=("header", alias))
                errors += errs
            for fields, received in ((path_fields, path_params), (header_fields, headers)):
                if fields:
                    got, errs = request_params_to_args(fields, received)
                    values.update(got)
                    errors += errs
            if body_fields:
                got, errs = await request_body_to_args(body_fields, body, False)
                values.update(got)
                errors += errs
            if errors:
                raise RequestValidationError(
                    errors, body=None if body is PydanticUndefined else body
                )
            response = await endpoint(**values)
            assert isinstance(response, Response)
            return response

        return handle
