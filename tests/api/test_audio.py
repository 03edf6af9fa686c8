"""``GET``/``HEAD /v1/audio/{sha256}.{ext}``: the file with its content type and ETag, 304 for
an ETag the client holds (weak comparison), one byte range as 206, 416 beyond the file."""

from __future__ import annotations

import io
import wave
from typing import Any

from fastapi.testclient import TestClient

from scripts_engine.campaigns import audio_row
from scripts_engine.db import repository as repo
from scripts_engine.db.session import write_transaction
from tests.api.conftest import auth
from tests.api.test_error_shape import check


def stored_wav(client: TestClient) -> tuple[str, bytes]:
    """A WAV file put in the audio store as a campaign build puts it; its URL path and bytes."""
    services: Any = client.app.state.services  # type: ignore[attr-defined]
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(bytes(range(256)) * 8)
    data = buffer.getvalue()
    root = services.toolkit.store.root
    (root / "test").mkdir(parents=True, exist_ok=True)
    (root / "test" / "p.wav").write_bytes(data)
    row = audio_row(root / "test" / "p.wav", root, "wav8k", 0.128)
    write_transaction(services.db, lambda s: repo.insert_audio_files(session=s, files=[row]))
    return f"/v1/audio/{row['sha256']}.wav", data


def test_audio_whole_head_conditional_and_ranges(client: TestClient, keys: dict[str, str]) -> None:
    url, data = stored_wav(client)
    h = auth(keys["dialler"])
    whole = client.get(url, headers=h)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "audio/wav"
    assert whole.headers["accept-ranges"] == "bytes"
    # behind a key, with a customer's name in it: no shared cache may keep it
    assert whole.headers["cache-control"] == "private, max-age=31536000, immutable"
    etag = whole.headers["etag"]

    head = client.head(url, headers=h)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(data)) and head.headers["etag"] == etag

    for held in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = client.get(url, headers={**h, "If-None-Match": held})
        assert again.status_code == 304 and again.content == b"", held
    assert client.get(url, headers={**h, "If-None-Match": '"other"'}).status_code == 200

    size = len(data)
    for spec, first, last in (("bytes=0-3", 0, 3), ("bytes=-4", size - 4, size - 1),
                              ("bytes=100-", 100, size - 1), ("bytes=10-99999", 10, size - 1),
                              ("bytes=-99999", 0, size - 1)):  # fmt: skip
        part = client.get(url, headers={**h, "Range": spec})
        assert part.status_code == 206, spec
        assert part.content == data[first : last + 1], spec
        assert part.headers["content-range"] == f"bytes {first}-{last}/{size}", spec
    assert client.get(url, headers={**h, "Range": "bytes=0-3"}).content == b"RIFF"
    # served whole: another unit, several ranges, a malformed one, If-Range for another file
    for extra in ({"Range": "items=0-3"}, {"Range": "bytes=0-1,4-5"}, {"Range": "bytes=5-2"},
                  {"Range": "bytes=0-3", "If-Range": '"other"'}):  # fmt: skip
        r = client.get(url, headers={**h, **extra})
        assert r.status_code == 200 and r.content == data, extra
    assert client.get(url, headers={**h, "Range": "bytes=0-3", "If-Range": etag}).status_code == 206
    beyond = client.get(url, headers={**h, "Range": f"bytes={size}-"})
    body = check(beyond, 416, "range_not_satisfiable")
    assert beyond.headers["content-range"] == f"bytes */{size}" and str(size) in body["message"]

    check(client.get(url.replace(".wav", ".mp3"), headers=h), 404, "not_found")
    check(client.get("/v1/audio/" + "0" * 64 + ".wav", headers=h), 404, "not_found")
    assert client.head(url).status_code == 401  # no key: no headers of the file either
