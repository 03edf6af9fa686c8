"""Telephony audio: G.711 against an independent ITU reference, conditioning, WAV and labels."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from scripts_engine import audio
from scripts_engine.audio import FORMATS, condition, read_wav, wav_bytes
from scripts_engine.errors import SynthesisError

# --- an independent scalar transcription of ITU-T G.191 (STL) g711.c ---------------------------


def _g191_alaw_compress(x: int) -> int:
    ix = (~x) >> 4 if x < 0 else x >> 4
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16
        ix += iexp << 4
    if x >= 0:
        ix |= 0x80
    return ix ^ 0x55


def _g191_ulaw_compress(x: int) -> int:
    absno = ((~x) >> 2) + 33 if x < 0 else (x >> 2) + 33
    absno = min(absno, 0x1FFF)
    i, segno = absno >> 6, 1
    while i != 0:
        segno += 1
        i >>= 1
    high = 0x08 - segno
    low = 0x0F - ((absno >> segno) & 0x0F)
    out = (high << 4) | low
    return out | 0x80 if x >= 0 else out


def _g191_alaw_expand(code: int) -> int:
    ix = (code ^ 0x55) & 0x7F
    iexp, mant = ix >> 4, ix & 0x0F
    if iexp > 0:
        mant += 16
    mant = (mant << 4) + 0x08
    if iexp > 1:
        mant <<= iexp - 1
    return mant if code > 127 else -mant


def _g191_ulaw_expand(code: int) -> int:
    sign = -1 if code < 0x80 else 1
    mantissa = ~code
    exponent = (mantissa >> 4) & 0x07
    step = 4 << (exponent + 1)
    mantissa &= 0x0F
    return sign * ((0x80 << exponent) + step * mantissa + step // 2 - 4 * 33)


ALL = np.arange(-32768, 32768, dtype=np.int16)
CODES = np.arange(256, dtype=np.uint8)


def test_alaw_encoder_matches_itu_reference_for_all_inputs() -> None:
    expected = np.array([_g191_alaw_compress(int(x)) for x in ALL], dtype=np.uint8)
    assert np.array_equal(audio.lin2alaw(ALL), expected)


def test_ulaw_encoder_matches_itu_reference_for_all_inputs() -> None:
    expected = np.array([_g191_ulaw_compress(int(x)) for x in ALL], dtype=np.uint8)
    assert np.array_equal(audio.lin2ulaw(ALL), expected)


def test_decoders_match_itu_reference() -> None:
    assert audio.alaw2lin(CODES).tolist() == [_g191_alaw_expand(int(c)) for c in CODES]
    assert audio.ulaw2lin(CODES).tolist() == [_g191_ulaw_expand(int(c)) for c in CODES]


@pytest.mark.parametrize("law", ["alaw", "ulaw"])
def test_g711_round_trip_snr(law: str) -> None:
    t = np.arange(8000) / 8000
    x = (np.sin(2 * np.pi * 440 * t) * 20000).astype(np.int16)
    enc, dec = (
        (audio.lin2alaw, audio.alaw2lin) if law == "alaw" else (audio.lin2ulaw, audio.ulaw2lin)
    )
    y = dec(enc(x)).astype(np.float64)
    snr = 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum((x - y) ** 2))
    assert snr > 35  # G.711 gives ~37-38 dB on a loud tone


def _tone(freq: float, rate: int = 22050, seconds: float = 1.0, amp: float = 0.3) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * amp * 32767).astype("<i2").tobytes()


def test_condition_resamples_and_normalises() -> None:
    out = condition(_tone(1000), 22050, 8000)
    assert out.dtype == np.int16
    assert abs(len(out) - 8000) <= 10 * 8  # 1 s (trimming keeps a loud tone whole)
    assert abs(np.max(np.abs(out)) / 32767 - 10 ** (-1 / 20)) < 0.01  # -1 dBFS peak


def test_condition_band_limits_telephony() -> None:
    mix = np.frombuffer(_tone(100), "<i2") // 2 + np.frombuffer(_tone(1000), "<i2") // 2
    out = condition(mix.astype("<i2").tobytes(), 22050, 8000)
    spectrum = np.abs(np.fft.rfft(out.astype(np.float64)))
    freqs = np.fft.rfftfreq(len(out), 1 / 8000)
    hum = spectrum[(freqs > 80) & (freqs < 120)].max()
    voice = spectrum[(freqs > 950) & (freqs < 1050)].max()
    assert 20 * np.log10(voice / hum) > 20  # 100 Hz is at least 20 dB below the passband


def test_condition_trims_silence() -> None:
    quiet = np.zeros(22050, dtype="<i2").tobytes()
    out = condition(quiet + _tone(800, seconds=0.5) + quiet, 22050, 8000)
    assert 0.5 <= len(out) / 8000 <= 0.5 + 2 * 0.06 + 0.02  # tone plus two 60 ms pads


def test_condition_refuses_silence() -> None:
    with pytest.raises(SynthesisError, match="silent"):
        condition(np.zeros(22050, dtype="<i2").tobytes(), 22050, 8000)


LABEL = audio.aigc_label(produce_id="abc123", detail="tts;test;voice=cmn-female")
INFO = audio.wav_info(LABEL, voice="cmn-female", engine="pyttsx3 2.99; espeak-ng 1.52.0")


@pytest.mark.parametrize("name", [n for n, f in FORMATS.items() if f.wav])
def test_wav_headers(name: str) -> None:
    fmt = FORMATS[name]
    samples = condition(_tone(700), 22050, fmt.rate)
    data = audio.encode_samples(samples, fmt.encoding)
    blob = wav_bytes(data, fmt, INFO)
    assert struct.unpack("<I", blob[4:8])[0] == len(blob) - 8
    wav = read_wav(blob)
    assert (wav.channels, wav.rate) == (1, fmt.rate)
    assert wav.tag == {"pcm16": 1, "alaw": 6, "ulaw": 7}[fmt.encoding]
    assert wav.bits == (16 if fmt.encoding == "pcm16" else 8)
    expected = ("fmt ", "data", "LIST") if wav.tag == 1 else ("fmt ", "fact", "data", "LIST")
    assert wav.chunks == expected  # Asterisk needs tag 1 with a 16-byte fmt; LIST after data
    fmt_size = struct.unpack("<I", blob[16:20])[0]
    assert fmt_size == (16 if wav.tag == 1 else 18)
    if wav.tag != 1:
        fact = blob.index(b"fact")
        assert struct.unpack("<I", blob[fact + 8 : fact + 12])[0] == len(data)
    assert abs(len(wav.data) / (2 if wav.tag == 1 else 1) / fmt.rate - 1.0) < 0.02


def test_wav_label_is_one_annex_e_block() -> None:
    wav = read_wav(wav_bytes(b"\x00\x00" * 80, FORMATS["wav8k"], INFO))
    label = json.loads(wav.info["ICMT"])
    assert list(label) == ["AIGC"] and label["AIGC"]["Label"] == "1"
    assert all(isinstance(v, str) for v in label["AIGC"].values())
    assert sum("AIGC" in value for value in wav.info.values()) == 1  # exactly one block
    assert "AI-generated" in wav.info["INAM"] and "espeak-ng" in wav.info["ISFT"]


def test_label_refuses_non_ascii() -> None:
    with pytest.raises(SynthesisError, match="printable ASCII"):
        audio.aigc_label(produce_id="语音")


def test_odd_sized_chunks_are_padded() -> None:
    blob = wav_bytes(b"\xd5" * 101, FORMATS["alaw-wav"], INFO)
    assert len(blob) % 2 == 0
    assert read_wav(blob).data == b"\xd5" * 101


def test_unknown_format() -> None:
    with pytest.raises(SynthesisError, match="wav8k"):
        audio.get_format("mp3")


def test_read_wav_refuses_other_files() -> None:
    with pytest.raises(SynthesisError, match="RIFF"):
        read_wav(b"ID3 not a wav")
