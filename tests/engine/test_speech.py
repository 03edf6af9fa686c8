"""Real pyttsx3 + bundled espeak-ng synthesis, and the spawn pool's timeouts and retries."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from scripts_engine.config import ROOT
from scripts_engine.errors import SynthesisError, VoiceUnavailable
from scripts_engine.speech import (
    ENGINE_RATE,
    Pyttsx3Synthesizer,
    SynthesisPool,
    Synthesizer,
    engine_version,
)
from scripts_engine.voice import VoiceCatalog, VoiceProfile, load_voices

TEXT = "您好，这里是银行客服中心，您本月的信用卡账单已经出来了，请您及时还款，谢谢。"


@pytest.fixture(scope="module")
def catalog() -> VoiceCatalog:
    return load_voices(ROOT / "voices")


@pytest.fixture(scope="module")
def synth() -> Pyttsx3Synthesizer:
    return Pyttsx3Synthesizer()


def _stats(pcm: bytes) -> tuple[float, float, float]:
    x = np.frombuffer(pcm, "<i2").astype(np.float64)
    frames = x[: len(x) // 441 * 441].reshape(-1, 441)  # 20 ms
    loud = np.mean(20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) / 32768 + 1e-12) > -40)
    return len(x) / ENGINE_RATE, 20 * np.log10(np.sqrt(np.mean(x**2)) / 32768), float(loud)


def test_engine_version_names_the_bundled_library() -> None:
    assert "pyttsx3 2." in engine_version() and "espeak-ng 1.52" in engine_version()


def test_it_is_a_synthesizer(synth: Pyttsx3Synthesizer) -> None:
    assert isinstance(synth, Synthesizer)


@pytest.mark.parametrize(
    "voice_id", ["cmn-female", "cmn-male", "yue-female", "yue-male", "cmn-sichuan", "cmn-northeast"]
)
def test_every_voice_speaks(
    catalog: VoiceCatalog, synth: Pyttsx3Synthesizer, voice_id: str
) -> None:
    voice = catalog.get(voice_id)
    spoken = catalog.speech_text(TEXT, voice)
    seconds, rms_db, loud = _stats(synth.synthesize(spoken, voice))
    # ~4 syllables/s at rate 175: 38 characters are 7-13 s at these profiles' rates
    assert 6.0 < seconds < 14.0, seconds
    assert rms_db > -30 and loud > 0.6, (rms_db, loud)


def test_rate_changes_are_not_lost(catalog: VoiceCatalog, synth: Pyttsx3Synthesizer) -> None:
    """P2: per-prompt parameter changes used to be cancelled 35-46 % of the time."""
    base = catalog.get("cmn-male")
    slow, fast = base.model_copy(update={"rate": 120}), base.model_copy(update={"rate": 240})
    lengths = [len(synth.synthesize("请您及时还款。", v)) for v in (slow, fast) * 6]
    slows, fasts = lengths[0::2], lengths[1::2]
    assert min(slows) > 1.5 * max(fasts), lengths


def test_first_call_waits_for_the_audio(catalog: VoiceCatalog) -> None:
    """P1: in a fresh process the first runAndWait returned before the file was written."""
    with SynthesisPool(1, timeout=20) as pool:
        [result] = pool.run([("一二三四五六七八九十" * 10, catalog.get("cmn-female"))])
    assert result.pcm is not None and len(result.pcm) / 2 / ENGINE_RATE > 15


def test_bad_input_is_refused(catalog: VoiceCatalog, synth: Pyttsx3Synthesizer) -> None:
    voice = catalog.get("cmn-female")
    with pytest.raises(SynthesisError, match="empty"):
        synth.synthesize("  ", voice)
    with pytest.raises(SynthesisError, match="split it"):
        synth.synthesize("好" * 5000, voice)
    with pytest.raises(VoiceUnavailable, match="no variant 'nosuch'"):
        synth.synthesize("你好", voice.model_copy(update={"variant": "nosuch"}))


def test_lexicon_output_is_read_as_chinese(
    catalog: VoiceCatalog, synth: Pyttsx3Synthesizer
) -> None:
    """Every lexicon word and every normalised sample is read in the voice's language: a
    ``(en)`` switch means espeak-ng fell back to English letters (as it does for 这儿)."""
    for voice in catalog.profiles.values():
        words = [w for lex in catalog.lexicons_for(voice) for w in lex.replace.values()]
        sample = catalog.speech_text("尾号1234，12,345.60元，3.5%，2026-11-23 14:30，95511", voice)
        phonemes = synth.phonemes("，".join([*words, sample]), voice)
        assert "(en)" not in phonemes, (voice.id, phonemes)
    fixed = synth.phonemes(
        catalog.speech_text("还款", catalog.get("cmn-female")), catalog.get("cmn-female")
    )
    assert "χˈuaɜn" in fixed  # huan2, not hai2


_GUARD_PAGE_CHILD = """
import ctypes, mmap, sys
from scripts_engine.speech import Pyttsx3Synthesizer
from scripts_engine.voice import load_voices
from scripts_engine.config import ROOT

synth = Pyttsx3Synthesizer()
synth.warm()
from pyttsx3.drivers import _espeak

page = mmap.PAGESIZE
area = mmap.mmap(-1, 2 * page, prot=mmap.PROT_READ | mmap.PROT_WRITE)
base = ctypes.addressof(ctypes.c_char.from_buffer(area))
libc = ctypes.CDLL(None)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
assert libc.mprotect(base + page, page, 0) == 0  # the page after the text: no access
real, sizes = _espeak.cSynth, []

def at_the_edge(text, size, *rest):
    # the driver's text, moved so that its last byte (the NUL) ends the readable page
    data = bytes(text) + b"\\0"
    start = base + page - len(data)
    ctypes.memmove(start, data, len(data))
    sizes.append((size, len(data)))
    return real(ctypes.c_char_p(start), size, *rest)

_espeak.cSynth = at_the_edge
voice = load_voices(ROOT / "voices").get("cmn-female")
pcm = synth.synthesize("您好，这里是银行客服中心。", voice)
print(len(pcm), sizes)
"""


def test_the_engine_reads_no_byte_past_the_text() -> None:
    """pyttsx3 told espeak-ng the text was ten times its length, and espeak-ng copies that many
    bytes: a text that ended next to unmapped memory crashed the process (SIGSEGV in Synth).
    Here the text ends exactly at an inaccessible page; the child must speak, not crash."""
    child = subprocess.run(
        [sys.executable, "-c", _GUARD_PAGE_CHILD], capture_output=True, text=True, timeout=60
    )
    assert child.returncode == 0, (child.returncode, child.stderr[-2000:])
    samples, sizes = child.stdout.split(" ", 1)
    assert int(samples) > ENGINE_RATE  # more than half a second of audio
    assert sizes.strip() == str([(len("您好，这里是银行客服中心。".encode()) + 1,) * 2])


def test_forked_child_refuses_the_inherited_engine(
    catalog: VoiceCatalog, synth: Pyttsx3Synthesizer
) -> None:
    """P7: a fork after init would hang; the copy must refuse instead."""
    synth.warm()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            synth.synthesize("你好", catalog.get("cmn-female"))
            os.write(write, b"spoke")
        except SynthesisError as exc:
            os.write(write, b"refused" if "forked" in str(exc) else b"other")
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 100) == b"refused"
    os.close(read)


# --- the pool, with a test synthesizer that misbehaves on marked texts ------------------------


class FlakySynth:
    """Test-only synthesizer: 'HANG' sleeps forever, 'HANG-ONCE' hangs on the first attempt
    only (a marker file remembers it across processes), 'DIE' kills its worker, 'FAIL' raises;
    anything else is spoken by the real engine."""

    sample_rate = ENGINE_RATE

    def __init__(self, marker_dir: str) -> None:
        self.marker_dir = Path(marker_dir)
        self.real = Pyttsx3Synthesizer()

    def synthesize(self, text: str, voice: VoiceProfile) -> bytes:
        if text == "HANG" or (text == "HANG-ONCE" and not self._seen(text)):
            time.sleep(3600)
        if text == "DIE" and not self._seen(text):
            os._exit(3)
        if text == "FAIL":
            raise SynthesisError("refused on purpose")
        return self.real.synthesize("你好" if text.isupper() else text, voice)

    def _seen(self, name: str) -> bool:
        marker = self.marker_dir / name
        if marker.exists():
            return True
        marker.touch()
        return False


def test_pool_synthesises_in_order(catalog: VoiceCatalog) -> None:
    jobs = [(f"第{i}句，您好。", catalog.get(v)) for i, v in enumerate(sorted(catalog.profiles))]
    with SynthesisPool(2, timeout=20) as pool:
        pcms = pool.synthesize_all(jobs)
        assert pool.replaced == 0
    assert len(pcms) == len(jobs) and all(len(p) > ENGINE_RATE for p in pcms)


def test_pool_recovers_hung_and_dead_workers(catalog: VoiceCatalog, tmp_path: Path) -> None:
    voice = catalog.get("cmn-female")
    jobs = [(t, voice) for t in ["你好", "HANG-ONCE", "谢谢", "DIE", "再见", "HANG", "FAIL"]]
    factory = functools.partial(FlakySynth, str(tmp_path))
    started = time.monotonic()
    with SynthesisPool(2, timeout=2.0, factory=factory) as pool:
        results = pool.run(jobs)
        replaced = pool.replaced
        with pytest.raises(SynthesisError, match=r"1 of 2 prompts failed twice: job 0 \('FAIL'\)"):
            pool.synthesize_all([("FAIL", voice), ("你好", voice)])
    assert time.monotonic() - started < 40
    by_text = {jobs[r.index][0]: r for r in results}
    for text in ("你好", "谢谢", "再见", "HANG-ONCE", "DIE"):  # retried once, then fine
        assert by_text[text].pcm and by_text[text].error is None, (text, by_text[text])
    assert by_text["HANG-ONCE"].attempts == 2 and by_text["DIE"].attempts == 2
    hung = by_text["HANG"]
    assert hung.pcm is None and "timed out" in str(hung.error) and hung.attempts == 2
    assert by_text["FAIL"].pcm is None and "refused on purpose" in str(by_text["FAIL"].error)
    assert replaced == 4  # HANG-ONCE once, DIE once, HANG on both attempts


def test_system_espeak_151_falls_back_to_pinyin_voice(catalog: VoiceCatalog) -> None:
    """VOICE-NOTES 3: 1.51's sit/cmn reads Hanzi as English pinyin; use cmn-latn-pinyin."""
    from types import SimpleNamespace

    voice = catalog.get("cmn-female")
    old = SimpleNamespace(library="1.51+dfsg")
    new = SimpleNamespace(library="1.52.0")
    assert Pyttsx3Synthesizer._engine_id(voice, old) == "sit/cmn-latn-pinyin+f3"  # type: ignore[arg-type]
    assert Pyttsx3Synthesizer._engine_id(voice, new) == "sit/cmn+f3"  # type: ignore[arg-type]
    assert Pyttsx3Synthesizer._engine_id(catalog.get("yue-female"), old) == "sit/yue+f3"  # type: ignore[arg-type]
