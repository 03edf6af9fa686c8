"""Audio for diallers: telephony conditioning, G.711, WAV writing and the AIGC label.

Formats (``FORMATS``): ``wav8k`` (default; RIFF PCM tag 1, 8 kHz mono 16-bit, what Asterisk's
``.wav`` needs), ``sln`` (raw s16le 8 kHz), ``alaw`` / ``ulaw`` (raw G.711 for Asterisk; the same
bytes are FreeSWITCH's ``.PCMA`` / ``.PCMU``), ``alaw-wav`` / ``ulaw-wav`` (WAV format tags 6/7
with a ``fact`` chunk, for FreeSWITCH/libsndfile; Asterisk rejects them) and ``wav16k`` (16 kHz
PCM WAV for browser preview).

Conditioning (:func:`condition`): trim leading and trailing silence, resample with libsoxr
(``soxr``, high quality: steep anti-aliasing, a quarter of the CPU time of scipy's polyphase
``resample_poly``), band-limit with a 4th-order Butterworth band-pass (300-3400 Hz at 8 kHz,
100-7000 Hz at 16 kHz; one causal pass: its phase shift is inaudible in speech, and running it
backwards too doubled the cost), then normalise the peak to -1 dBFS so G.711 never clips.

G.711 encoders follow the ITU-T G.191 software tools reference (``alaw_compress`` /
``ulaw_compress``: truncation, one's complement for negative samples) bit for bit. Note that
CPython's old ``audioop.lin2ulaw`` (Sun's code) differs from the ITU reference for 508 negative
inputs; A-law is identical in both.

Every file carries the implicit AIGC label of GB 45438-2025 Annex E (COMPLIANCE.md CR-21): in
WAV files a ``LIST``/``INFO`` chunk after the audio whose ``ICMT`` holds the one Annex E JSON
block (``ISFT`` names the engine, ``INAM`` says AI-generated and the voice); raw formats get a
``.json`` sidecar with the same block.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import soxr
from numpy.typing import NDArray
from scipy.signal import butter, sosfilt

from scripts_engine.errors import SynthesisError

Encoding = Literal["pcm16", "alaw", "ulaw"]
Int16 = NDArray[np.int16]

#: Bump when conditioning or encoding changes what a file contains (part of cache keys).
AUDIO_VERSION = "2"


@dataclass(frozen=True)
class AudioFormat:
    """One output format: file extension, sample rate, sample encoding, container."""

    name: str
    ext: str
    rate: int
    encoding: Encoding
    wav: bool
    mime: str

    @property
    def segment_format(self) -> AudioFormat:
        """The 16-bit PCM WAV format at this rate (segments are cached in it, then encoded)."""
        return FORMATS["wav16k" if self.rate == 16000 else "wav8k"]


FORMATS: dict[str, AudioFormat] = {
    f.name: f
    for f in (
        AudioFormat("wav8k", ".wav", 8000, "pcm16", True, "audio/wav"),
        AudioFormat("sln", ".sln", 8000, "pcm16", False, "audio/L16;rate=8000"),
        AudioFormat("alaw", ".alaw", 8000, "alaw", False, "audio/PCMA"),
        AudioFormat("ulaw", ".ulaw", 8000, "ulaw", False, "audio/PCMU"),
        AudioFormat("alaw-wav", ".wav", 8000, "alaw", True, "audio/wav"),
        AudioFormat("ulaw-wav", ".wav", 8000, "ulaw", True, "audio/wav"),
        AudioFormat("wav16k", ".wav", 16000, "pcm16", True, "audio/wav"),
        AudioFormat("sln16", ".sln16", 16000, "pcm16", False, "audio/L16;rate=16000"),
    )
}
_BANDS = {8000: (300.0, 3400.0), 16000: (100.0, 7000.0)}
_SILENCE_BYTE = {"pcm16": b"\x00\x00", "alaw": b"\xd5", "ulaw": b"\xff"}
_WAV_TAG = {"pcm16": 1, "alaw": 6, "ulaw": 7}


def get_format(name: str) -> AudioFormat:
    """The format called ``name``.

    Raises:
        SynthesisError: unknown format (the message lists the known ones).
    """
    try:
        return FORMATS[name]
    except KeyError:
        raise SynthesisError(
            f"unknown audio format '{name}'; use one of {', '.join(FORMATS)}"
        ) from None


# --- conditioning ----------------------------------------------------------------------------


def trim_silence(x: NDArray[np.float64], rate: int, *, floor_db: float = -50.0, pad_ms: int = 60):
    """Drop leading and trailing 10 ms frames quieter than ``floor_db`` dBFS (keep a pad)."""
    frame = max(1, rate // 100)
    n = len(x) // frame
    if n == 0:
        return x
    rms = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-20)
    loud = np.flatnonzero(20 * np.log10(rms) > floor_db)
    if loud.size == 0:
        return x[:0]
    pad = rate * pad_ms // 1000
    return x[max(0, loud[0] * frame - pad) : min(len(x), (loud[-1] + 1) * frame + pad)]


@lru_cache(maxsize=8)
def _bandpass(rate: int) -> NDArray[np.float64]:
    low, high = _BANDS[rate]
    return butter(4, [low, high], btype="bandpass", fs=rate, output="sos")


def condition(pcm: bytes | Int16, src_rate: int, rate: int, *, peak_dbfs: float = -1.0) -> Int16:
    """Engine PCM -> trimmed, resampled, band-limited, peak-normalised int16 at ``rate``.

    Raises:
        SynthesisError: the audio is empty or silent.
    """
    samples = np.frombuffer(pcm, dtype="<i2") if isinstance(pcm, bytes) else pcm
    x = trim_silence(samples.astype(np.float64) / 32768.0, src_rate)
    if x.size == 0:
        raise SynthesisError("the synthesised audio is silent")
    if rate != src_rate:
        x = soxr.resample(x, src_rate, rate, quality="HQ")
    if rate in _BANDS:
        x = sosfilt(_bandpass(rate), x)
    peak = float(np.max(np.abs(x)))
    if peak <= 1e-6:
        raise SynthesisError("the synthesised audio is silent")
    x = x * (10 ** (peak_dbfs / 20) / peak)
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


# --- G.711 (ITU-T G.191 reference algorithm, vectorised) -------------------------------------


def lin2alaw(x: Int16) -> NDArray[np.uint8]:
    """16-bit linear -> A-law bytes (only the 12 most significant bits count)."""
    x = np.asarray(x, dtype=np.int16).astype(np.int32)
    ix = np.where(x < 0, (~x) >> 4, x >> 4)  # one's complement for negatives: 0..2047
    exp = np.zeros_like(ix)
    big = ix > 15
    # exponent = position of the leading one above bit 4 (ix in 16..2047 -> 1..7)
    exp[big] = np.floor(np.log2(ix[big])).astype(np.int32) - 3
    mant = np.where(big, (ix >> np.maximum(exp - 1, 0)) - 16, ix)
    code = np.where(big, mant + (exp << 4), ix)
    code = np.where(x >= 0, code | 0x80, code)
    return (code ^ 0x55).astype(np.uint8)


def lin2ulaw(x: Int16) -> NDArray[np.uint8]:
    """16-bit linear -> mu-law bytes (only the 14 most significant bits count)."""
    x = np.asarray(x, dtype=np.int16).astype(np.int32)
    absno = np.minimum(np.where(x < 0, ((~x) >> 2) + 33, (x >> 2) + 33), 0x1FFF)
    segno = np.floor(np.log2(absno)).astype(np.int32) - 4  # absno >= 33: segno 1..8
    low = 0x0F - ((absno >> segno) & 0x0F)
    code = ((8 - segno) << 4) | low
    code = np.where(x >= 0, code | 0x80, code)
    return code.astype(np.uint8)


@lru_cache(maxsize=2)
def _expand_table(law: str) -> Int16:
    """The 256 decoded values (G.191 ``alaw_expand`` / ``ulaw_expand``)."""
    codes = np.arange(256, dtype=np.int32)
    if law == "alaw":
        ix = (codes ^ 0x55) & 0x7F
        exp = ix >> 4
        mant = np.where(exp > 0, (ix & 0x0F) + 16, ix & 0x0F)
        mant = (mant << 4) + 8
        mant = np.where(exp > 1, mant << np.maximum(exp - 1, 0), mant)
        y = np.where(codes > 127, mant, -mant)
    else:
        inv = ~codes
        exp = (inv >> 4) & 0x07
        step = 4 << (exp + 1)
        y = (0x80 << exp) + step * (inv & 0x0F) + step // 2 - 4 * 33
        y = np.where(codes < 0x80, -y, y)
    return y.astype(np.int16)


def alaw2lin(codes: NDArray[np.uint8]) -> Int16:
    """A-law bytes -> 16-bit linear (decision-interval midpoints)."""
    return _expand_table("alaw")[np.asarray(codes, dtype=np.uint8)]


def ulaw2lin(codes: NDArray[np.uint8]) -> Int16:
    """mu-law bytes -> 16-bit linear."""
    return _expand_table("ulaw")[np.asarray(codes, dtype=np.uint8)]


def encode_samples(samples: Int16, encoding: Encoding) -> bytes:
    """int16 samples -> the bytes of one encoding (s16le, A-law or mu-law)."""
    if encoding == "alaw":
        return lin2alaw(samples).tobytes()
    if encoding == "ulaw":
        return lin2ulaw(samples).tobytes()
    return np.asarray(samples, dtype="<i2").tobytes()


def silence(fmt: AudioFormat, ms: int) -> bytes:
    """``ms`` of digital silence in the format's encoding."""
    return _SILENCE_BYTE[fmt.encoding] * (fmt.rate * ms // 1000)


# --- the AIGC label and the WAV container ----------------------------------------------------


def aigc_label(*, produce_id: str, producer: str = "scripts-engine", detail: str = "") -> dict:
    """The GB 45438-2025 Annex E implicit label: one ``AIGC`` block of printable-ASCII strings."""
    block = {
        "Label": "1",
        "ContentProducer": producer,
        "ProduceID": produce_id,
        "ReservedCode1": detail,
        "ContentPropagator": "",
        "PropagateID": "",
        "ReservedCode2": "",
    }
    for key, value in block.items():
        if not (isinstance(value, str) and value.isascii() and value.isprintable()):
            raise SynthesisError(f"AIGC label field {key} must be printable ASCII: {value!r}")
    return {"AIGC": block}


def _chunk(tag: bytes, payload: bytes) -> bytes:
    return tag + struct.pack("<I", len(payload)) + payload + (b"\x00" if len(payload) % 2 else b"")


def _info(fields: dict[str, str]) -> bytes:
    body = b"INFO" + b"".join(
        _chunk(tag.encode("ascii"), text.encode("ascii", "replace") + b"\x00")
        for tag, text in fields.items()
    )
    return _chunk(b"LIST", body)


def wav_bytes(data: bytes, fmt: AudioFormat, info: dict[str, str]) -> bytes:
    """A RIFF/WAVE file: ``fmt `` (16 bytes for PCM; 18 + ``fact`` for G.711), ``data``, then
    a ``LIST``/``INFO`` chunk (after the audio, where Asterisk and libsndfile skip it)."""
    tag = _WAV_TAG[fmt.encoding]
    width = 2 if fmt.encoding == "pcm16" else 1
    head = struct.pack("<HHIIHH", tag, 1, fmt.rate, fmt.rate * width, width, 8 * width)
    chunks = [_chunk(b"fmt ", head)] if tag == 1 else [
        _chunk(b"fmt ", head + struct.pack("<H", 0)),
        _chunk(b"fact", struct.pack("<I", len(data) // width)),
    ]  # fmt: skip
    chunks += [_chunk(b"data", data), _info(info)]
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def wav_info(label: dict, *, voice: str, engine: str) -> dict[str, str]:
    """INFO fields: ICMT = the Annex E JSON (the only AIGC block), INAM, ISFT."""
    return {
        "INAM": f"AI-generated synthetic speech (voice {voice})",
        "ICMT": json.dumps(label, separators=(",", ":"), sort_keys=False),
        "ISFT": f"scripts-engine; {engine}",
    }


@dataclass(frozen=True)
class ParsedWav:
    """What :func:`read_wav` found in a file."""

    tag: int
    channels: int
    rate: int
    bits: int
    data: bytes
    info: dict[str, str]
    chunks: tuple[str, ...]


def read_wav(blob: bytes) -> ParsedWav:
    """Parse our WAV files (and plain ones): format, data and INFO fields.

    Raises:
        SynthesisError: not a RIFF/WAVE file, or no ``fmt ``/``data`` chunk.
    """
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise SynthesisError("not a RIFF/WAVE file")
    pos, chunks, info = 12, [], {}
    fmt_chunk = data = None
    while pos + 8 <= len(blob):
        tag, size = blob[pos : pos + 4], struct.unpack("<I", blob[pos + 4 : pos + 8])[0]
        payload = blob[pos + 8 : pos + 8 + size]
        chunks.append(tag.decode("latin-1"))
        if tag == b"fmt ":
            fmt_chunk = payload
        elif tag == b"data":
            data = payload
        elif tag == b"LIST" and payload[:4] == b"INFO":
            i = 4
            while i + 8 <= len(payload):
                sub, n = payload[i : i + 4], struct.unpack("<I", payload[i + 4 : i + 8])[0]
                info[sub.decode("latin-1")] = payload[i + 8 : i + 8 + n].rstrip(b"\x00").decode()
                i += 8 + n + (n % 2)
        pos += 8 + size + (size % 2)
    if fmt_chunk is None or data is None:
        raise SynthesisError("WAV file without fmt or data chunk")
    tag_, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt_chunk[:16])
    return ParsedWav(tag_, channels, rate, bits, data, info, tuple(chunks))
