"""Audio files for diallers, by the sha256 of their bytes: ``GET`` and ``HEAD``, with the
ETag, conditional requests (``If-None-Match``, weak comparison as RFC 9110 says) and a single
byte range (``Range``, with ``If-Range``) for a player that fetches part of a file."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Response

from api.deps import AnyRole, ServicesDep
from api.errors import ERROR_RESPONSES, ApiError, ErrorBody
from scripts_engine.db import repository as repo

router = APIRouter(prefix="/v1/audio", tags=["audio"], responses=ERROR_RESPONSES)

#: ``bytes=FIRST-LAST``, ``bytes=FIRST-`` or ``bytes=-SUFFIX`` (one range; RFC 9110 14.1.2)
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_TYPES = {"audio/wav": {}, "audio/PCMA": {}, "audio/PCMU": {}, "application/octet-stream": {}}


def matches(if_none_match: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` list names ``etag``: ``*``, or any entity tag equal to it
    by weak comparison (a ``W/`` prefix does not matter)."""
    tags = [t.strip() for t in if_none_match.split(",")]
    return "*" in tags or etag in [t.removeprefix("W/") for t in tags]


def byte_range(spec: str, size: int) -> tuple[int, int] | None:
    """The ``(first, last)`` bytes (inclusive) one ``Range`` asks for; None for what is served
    whole (a list of ranges, another unit, a malformed value: RFC 9110 lets a server ignore
    those). Raises ``ApiError`` 416 when the range lies beyond the file."""
    m = _RANGE.fullmatch(spec.strip())
    if m is None or not (m[1] or m[2]):
        return None
    if not m[1]:  # the last N bytes
        suffix = int(m[2])
        if suffix == 0:
            raise _unsatisfiable(spec, size)
        return max(size - suffix, 0), size - 1
    first = int(m[1])
    last = min(int(m[2]), size - 1) if m[2] else size - 1
    if m[2] and int(m[2]) < first:
        return None  # invalid: ignored
    if first >= size:
        raise _unsatisfiable(spec, size)
    return first, last


def _unsatisfiable(spec: str, size: int) -> ApiError:
    return ApiError(416, f"range '{spec}' is outside the file ({size} bytes)",
                    code="range_not_satisfiable", headers={"Content-Range": f"bytes */{size}"})  # fmt: skip


_ETAG = {"ETag": {"description": "The sha256 of the file's bytes, quoted: send it in "
                                 "If-None-Match to get a 304.", "schema": {"type": "string"}}}  # fmt: skip
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": _TYPES, "headers": _ETAG,
          "description": "The audio file (HEAD: its headers only)."},
    206: {"content": _TYPES, "description": "The byte range asked for (`Range`).",
          "headers": _ETAG | {"Content-Range": {"description": "bytes FIRST-LAST/SIZE",
                                                "schema": {"type": "string"}}}},
    304: {"description": "Not modified (If-None-Match matched the ETag).", "headers": _ETAG},
    416: {"model": ErrorBody, "description": "The range lies beyond the file."},
}  # fmt: skip


@router.head("/{name}", response_class=Response, responses=_RESPONSES, operation_id="head_audio",
             summary="The audio file's headers")  # fmt: skip
@router.get("/{name}", response_class=Response, responses=_RESPONSES)
def get_audio(
    name: str,
    _: AnyRole,
    services: ServicesDep,
    if_none_match: Annotated[str | None, Header(max_length=200)] = None,
    range_: Annotated[str | None, Header(alias="Range", max_length=200)] = None,
    if_range: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    """`GET /v1/audio/{sha256}.{ext}`: the file, its content type, ETag (the sha256, quoted)
    and immutable caching. `If-None-Match` with the ETag answers 304; `Range: bytes=0-1023`
    (one range) answers 206 with that part, unless `If-Range` names another ETag. `HEAD`
    answers the same headers without the body."""
    sha, _dot, ext = name.partition(".")
    with services.db.read() as session:
        row = repo.get_audio_file(session=session, sha256=sha.lower())
    if row is None or row.ext != ext:
        raise ApiError(404, f"no audio file '{name}'")
    etag = f'"{row.sha256}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=31536000, immutable",
               "Accept-Ranges": "bytes"}  # fmt: skip
    if if_none_match and matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    store = services.toolkit.store
    if store is None:
        raise ApiError(503, "the audio store is not available")
    try:
        data = (store.root / row.path).read_bytes()
    except FileNotFoundError:
        raise ApiError(404, f"audio file '{name}' is missing from the store") from None
    part = byte_range(range_, len(data)) if range_ and if_range in (None, etag) else None
    if part is None:
        return Response(data, media_type=row.content_type, headers=headers)
    first, last = part
    headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
    return Response(data[first : last + 1], status_code=206, media_type=row.content_type,
                    headers=headers)  # fmt: skip
