"""Previews: drafts rendered and spoken for synthetic customers before they go live."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.deps import Now, ServicesDep, Staff
from api.errors import ERROR_RESPONSES, ApiError
from api.routes.templates import store
from api.schemas_writers import PreviewIn, PreviewOut
from scripts_engine.db import repository as repo
from scripts_engine.db.session import write_transaction
from scripts_engine.errors import SynthesisError, VoiceUnavailable
from scripts_engine.preview import PreviewError, PreviewRequest, preview

router = APIRouter(prefix="/v1", tags=["templates"], responses=ERROR_RESPONSES)


@router.post("/previews", response_model=PreviewOut)
def make_preview(
    body: PreviewIn, _: Staff, services: ServicesDep, now: Now, request: Request
) -> PreviewOut:
    """Render draft versions or unsaved text (`drafts`, in place of the live ones) for
    synthetic customers across profiles, channels, moments and styles. Segments
    that differ from the live set are listed in `changed`, with the live text beside them;
    `audio: "changed"` speaks them."""
    req = PreviewRequest(
        version_ids=body.versions, samples=list(dict.fromkeys(body.samples)),
        customers=body.customers, profiles=body.profiles, channels=list(dict.fromkeys(body.channels)),
        moments=list(dict.fromkeys(body.moments)), styles=list(dict.fromkeys(body.styles)),
        as_of=body.as_of or now.date(), audio=body.audio, voice=body.voice,
        drafts={n: t.replace("\r\n", "\n") for n, t in body.drafts.items()},
    )  # fmt: skip
    try:
        result = preview(services.toolkit, store(services), req)
    except PreviewError as exc:
        raise ApiError(422, str(exc), errors=[{"field": exc.field, "error": str(exc)}]) from None
    except VoiceUnavailable as exc:
        raise ApiError(422, str(exc), errors=[{"field": "body.voice", "error": str(exc)}]) from None
    except SynthesisError as exc:
        raise ApiError(422, f"cannot synthesise: {exc}", code="synthesis_failed") from None
    if result.audio_rows:
        rows = result.audio_rows
        write_transaction(services.db, lambda s: repo.insert_audio_files(session=s, files=rows))
    base = str(request.base_url).rstrip("/")
    for item in result.items:
        a = item.get("audio")
        if a:
            item["audio"] = {"url": f"{base}/v1/audio/{a['sha256']}.{a['ext']}",
                             "sha256": a["sha256"], "duration_s": a["duration_s"],
                             "voice": a["voice"]}  # fmt: skip
    return PreviewOut.model_validate({"versions": result.versions, "items": result.items,
                                      "lint": result.lint})  # fmt: skip
