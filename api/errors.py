"""One JSON error shape for every failure, and the handlers that produce it.

Every error response, whatever raised it (our routes, FastAPI's validation, Starlette's 404
and 405, an engine error, a crash), has this body::

    {"ok": false, "status": 422, "code": "validation_error", "message": "...",
     "errors": [{"field": "body.customers[0].age", "error": "..."}], "request_id": "..."}

``code`` is machine-readable and stable; ``errors`` lists field-level problems (validation, or
rejected rows). A 500 says only that something failed and gives the request id to quote: no
stack trace or exception text reaches a client (it goes to the log).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DataError as SQLDataError
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from scripts_engine.db.errors import Busy, Conflict, Forbidden, NotFound
from scripts_engine.errors import (
    DataError,
    PersonaNotFound,
    ScriptRenderError,
    ScriptsEngineError,
    SynthesisError,
    VoiceUnavailable,
)

log = logging.getLogger("scripts_engine.api")

_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 413: "too_large",
    415: "unsupported_media_type", 422: "validation_error", 429: "rate_limited",
    500: "internal_error", 503: "unavailable",
}  # fmt: skip


class FieldError(BaseModel):
    field: str = Field(description="Where: body/query/path/header, then the path inside it.")
    error: str = Field(description="What is wrong.")
    row: int | None = Field(default=None, description="1-based input row, for uploads.")


class ErrorBody(BaseModel):
    """The body of every error response."""

    ok: bool = Field(default=False, description="Always false for errors.")
    status: int = Field(description="The HTTP status code.")
    code: str = Field(description="Machine-readable error code.", examples=["not_found"])
    message: str = Field(description="What went wrong, for people.")
    errors: list[FieldError] = Field(default_factory=list, description="Field-level problems.")
    request_id: str | None = Field(default=None, description="Quote it when reporting a bug.")


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before sending the same "
                                               "request again.", "schema": {"type": "integer"}}}  # fmt: skip

#: Documented on every route (the OpenAPI lists the error shape for each status).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody, "description": d}
    for s, d in {
        400: "Bad request", 401: "Missing, unknown or revoked API key", 403: "Role not allowed",
        404: "Not found", 409: "Conflict", 422: "Invalid input", 500: "Internal error",
    }.items()
} | {
    429: {"model": ErrorBody, "headers": _RETRY_AFTER,
          "description": "Rate limit reached for this key: nothing was done; send the same "
                         "request again after `Retry-After` seconds."},
    503: {"model": ErrorBody, "headers": _RETRY_AFTER,
          "description": "Temporarily unavailable (the database is busy or unreachable): nothing "
                         "was written; retry after `Retry-After` seconds."},
}  # fmt: skip


class ApiError(Exception):
    """Raise from a route to answer with the error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ):
        self.status, self.message = status, message
        self.code = code or _CODES.get(status, "error")
        self.errors, self.headers = errors or [], headers
        super().__init__(message)


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "customers", 0, "age")`` -> ``body.customers[0].age``. A tagged union's
    member tag (``~ids``, see api.schemas) is not part of the path."""
    out = ""
    for part in loc:
        if isinstance(part, str) and part.startswith("~"):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def error_response(
    request: Request,
    status: int,
    message: str,
    *,
    code: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(
        status=status,
        code=code or _CODES.get(status, "error"),
        message=message,
        errors=[FieldError(**e) for e in errors or []],
        request_id=getattr(request.state, "request_id", None),
    )
    headers = dict(headers or {})
    if body.request_id:
        headers["X-Request-ID"] = body.request_id  # also on 500s, sent outside the middleware
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _json_error(error: dict[str, Any], document: Any) -> dict[str, Any]:
    """A JSON syntax error (FastAPI's ``json_invalid``, located by its character offset) as
    a field error on ``body`` that says what and where, by line and column."""
    loc = error.get("loc", ())
    pos = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
    what = str((error.get("ctx") or {}).get("error") or error.get("msg") or "invalid JSON")
    if pos is None:
        return {"field": "body", "error": f"not valid JSON: {what}"}
    if isinstance(document, bytes | str):
        before = document[:pos]
        newline = "\n" if isinstance(before, str) else b"\n"
        line = before.count(newline) + 1  # type: ignore[arg-type]
        column = pos - (before.rfind(newline) + 1)  # type: ignore[arg-type]
        return {"field": "body",
                "error": f"not valid JSON: {what} at line {line}, column {column + 1} "
                         f"(character {pos})"}  # fmt: skip
    return {"field": "body", "error": f"not valid JSON: {what} at character {pos}"}


def _not_json(request: Request, error: dict[str, Any]) -> str | None:
    """What to say when a body sent without a JSON content type was read as bytes, and so is
    not the object the route takes (FastAPI says "Input should be a valid dictionary")."""
    if tuple(error.get("loc", ())) != ("body",) or not isinstance(error.get("input"), bytes):
        return None
    sent = request.headers.get("content-type") or "none"
    return f"send the body as JSON, with Content-Type: application/json (it came as: {sent})"


def _unreadable_body(exc: StarletteHTTPException) -> str | None:
    """What made a body unreadable, for the 400 FastAPI (and :mod:`api.lean`) raise from the
    exception that stopped the JSON decoder (it says only "There was an error parsing the
    body"); None for any other HTTP error."""
    cause = exc.__cause__
    if exc.status_code != 400 or cause is None:
        return None
    if isinstance(cause, UnicodeDecodeError):
        byte = cause.object[cause.start : cause.start + 1]
        return f"not UTF-8: byte 0x{byte.hex()} at offset {cause.start} (JSON must be UTF-8)"
    if isinstance(cause, RecursionError):
        return "JSON nested too deeply"
    return None


def _engine_status(exc: ScriptsEngineError) -> tuple[int, str]:
    if isinstance(exc, NotFound | PersonaNotFound):
        return 404, "not_found"
    if isinstance(exc, Conflict):
        return 409, exc.code
    if isinstance(exc, Forbidden):
        return 403, exc.code
    if isinstance(exc, Busy):
        return 503, "busy"
    if isinstance(exc, VoiceUnavailable):
        return 422, "voice_unavailable"
    if isinstance(exc, SynthesisError):
        return 503, "synthesis_failed"
    if isinstance(exc, ScriptRenderError):
        return 422, "render_failed"
    if isinstance(exc, DataError):
        return 422, "bad_data"
    return 422, "engine_error"


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.status, exc.message, code=exc.code,
                              errors=exc.errors, headers=exc.headers)  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            _json_error(e, exc.body) if e.get("type") == "json_invalid" else
            {"field": field_path(e.get("loc", ())), "error": _not_json(request, e) or
             str(e.get("msg", "invalid"))}
            for e in exc.errors()
        ]  # fmt: skip
        return error_response(request, 422, "the request is not valid", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        unreadable = _unreadable_body(exc)
        if unreadable is not None:
            return error_response(request, 400, "the request body cannot be read as JSON",
                                  errors=[{"field": "body", "error": unreadable}])  # fmt: skip
        message = exc.detail if isinstance(exc.detail, str) else _CODES.get(exc.status_code, "")
        return error_response(request, exc.status_code, message or "error",
                              headers=getattr(exc, "headers", None))  # fmt: skip

    @app.exception_handler(ScriptsEngineError)
    async def _engine(request: Request, exc: ScriptsEngineError) -> JSONResponse:
        status, code = _engine_status(exc)
        headers = {"Retry-After": "1"} if status == 503 else None
        return error_response(request, status, str(exc), code=code, headers=headers)

    @app.exception_handler(SQLDataError)
    async def _sql_data(request: Request, exc: SQLDataError) -> JSONResponse:
        # a value the database cannot store (a NUL character, say): the transaction rolled back
        return error_response(request, 422, "a value cannot be stored (invalid characters?)",
                              code="invalid_value")  # fmt: skip

    @app.exception_handler(IntegrityError)
    async def _integrity(request: Request, exc: IntegrityError) -> JSONResponse:
        return error_response(request, 409, "the request conflicts with stored data")

    @app.exception_handler(OperationalError)
    async def _unavailable(request: Request, exc: OperationalError) -> JSONResponse:
        # the database cannot be reached, or dropped the connection mid-request (its pool is
        # renewed for the next request): nothing was written, and a retry may well succeed
        log.warning(
            "database unavailable: %s",
            type(exc.orig).__name__ if exc.orig is not None else "OperationalError",
            extra={"request_id": getattr(request.state, "request_id", None)},
        )
        return error_response(request, 503, "the database is unavailable; retry shortly",
                              code="database_unavailable", headers={"Retry-After": "1"})  # fmt: skip

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "unhandled error",
            exc_info=exc,
            extra={"request_id": getattr(request.state, "request_id", None)},
        )
        return error_response(request, 500, "internal error; quote the request id if reporting")
