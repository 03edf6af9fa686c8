"""Voices: the catalog, and synthesis of a text for preview."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.deps import AnyRole, Author, ServicesDep
from api.errors import ERROR_RESPONSES, ApiError
from api.schemas import AudioOut, SynthesizeRequest, VoiceOut
from scripts_engine.campaigns import audio_row
from scripts_engine.db import repository as repo
from scripts_engine.db.session import write_transaction
from scripts_engine.errors import SynthesisError, VoiceUnavailable

router = APIRouter(prefix="/v1/voices", tags=["voices"], responses=ERROR_RESPONSES)


@router.get("", response_model=list[VoiceOut])
def list_voices(_: AnyRole, services: ServicesDep) -> list[VoiceOut]:
    """Every voice profile with the provinces and cities it serves."""
    voices = services.toolkit.voices
    out = []
    for vid, v in sorted(voices.profiles.items()):
        provinces, cities = voices.served(vid)
        out.append(VoiceOut(id=vid, label=v.label, language=v.language, provinces=provinces,
                            cities=cities))  # fmt: skip
    return out


@router.post("/synthesize", response_model=AudioOut, status_code=201)
def synthesize(
    body: SynthesizeRequest, _: Author, services: ServicesDep, request: Request
) -> AudioOut:
    """Synthesise a text (up to 1000 characters) in a voice; answers the audio's URL."""
    tk = services.toolkit
    try:
        voice = tk.voices.profiles[tk.voices.default] if body.voice == "auto" else (
            tk.voices.get(body.voice))  # fmt: skip
    except VoiceUnavailable as exc:
        raise ApiError(422, str(exc), errors=[{"field": "body.voice", "error": str(exc)}]) from None
    if tk.store is None:
        raise ApiError(503, "the audio store is not available")
    if not tk.voices.speech_text(body.text, voice).strip():
        raise ApiError(422, "the text has nothing to say", errors=[
            {"field": "body.text", "error": "nothing to say"}])  # fmt: skip
    try:
        with tk.store_lock:
            stored = tk.store.synthesize_segments([body.text], voice, body.format)
    except SynthesisError as exc:
        raise ApiError(422, f"cannot synthesise this text: {exc}", code="synthesis_failed",
                       errors=[{"field": "body.text", "error": str(exc)}]) from None  # fmt: skip
    row = audio_row(stored.path, tk.store.root, body.format, stored.duration_s)
    write_transaction(services.db, lambda s: repo.insert_audio_files(session=s, files=[row]))
    base = str(request.base_url).rstrip("/")
    return AudioOut(sha256=row["sha256"], url=f"{base}/v1/audio/{row['sha256']}.{row['ext']}",
                    format=body.format, duration_s=row["duration_s"])  # fmt: skip
