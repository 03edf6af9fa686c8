"""Audio files for diallers, by the sha256 of their bytes, with ETag and conditional GET."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response

from api.deps import AnyRole, ServicesDep
from api.errors import ERROR_RESPONSES, ApiError
from scripts_engine.db import repository as repo

router = APIRouter(prefix="/v1/audio", tags=["audio"], responses=ERROR_RESPONSES)


@router.get(
    "/{name}",
    response_class=Response,
    responses={200: {"content": {"audio/wav": {}, "application/octet-stream": {}},
                     "description": "The audio file."},
               304: {"description": "Not modified (If-None-Match matched the ETag)."}},
)  # fmt: skip
def get_audio(
    name: str,
    _: AnyRole,
    services: ServicesDep,
    if_none_match: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    """`GET /v1/audio/{sha256}.{ext}`: the file, its content type, ETag and immutable caching."""
    sha, _dot, ext = name.partition(".")
    with services.db.read() as session:
        row = repo.get_audio_file(session=session, sha256=sha.lower())
    if row is None or row.ext != ext:
        raise ApiError(404, f"no audio file '{name}'")
    etag = f'"{row.sha256}"'
    headers = {"ETag": etag, "Cache-Control": "public, max-age=31536000, immutable"}
    if if_none_match and (if_none_match.strip() == "*" or etag in if_none_match.split(",")
                          or etag in [t.strip() for t in if_none_match.split(",")]):  # fmt: skip
        return Response(status_code=304, headers=headers)
    store = services.toolkit.store
    if store is None:
        raise ApiError(503, "the audio store is not available")
    try:
        data = (store.root / row.path).read_bytes()
    except FileNotFoundError:
        raise ApiError(404, f"audio file '{name}' is missing from the store") from None
    return Response(data, media_type=row.content_type, headers=headers)
