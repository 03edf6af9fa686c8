"""The audio store: every format on disk, segment reuse, crash-safe and concurrent writes."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from scripts_engine import audio
from scripts_engine.audiostore import AudioStore, atomic_write, synthesize_script
from scripts_engine.config import ROOT
from scripts_engine.errors import SynthesisError
from scripts_engine.speech import Pyttsx3Synthesizer
from scripts_engine.voice import VoiceCatalog, load_voices

SEGMENTS = [
    "您好，我是银行的人工智能合成语音客服。",
    "王女士，您好！",
    "您尾号1234的信用卡本期账单12,345.60元，最后还款日2026-11-23。",
]


@pytest.fixture(scope="module")
def catalog() -> VoiceCatalog:
    return load_voices(ROOT / "voices")


@pytest.fixture
def store(tmp_path: Path, catalog: VoiceCatalog) -> AudioStore:
    return AudioStore(tmp_path / "audio", catalog=catalog, synth=Pyttsx3Synthesizer())


def _samples(path: Path, fmt: audio.AudioFormat) -> np.ndarray:
    blob = path.read_bytes()
    data = audio.read_wav(blob).data if fmt.wav else blob
    if fmt.encoding == "alaw":
        return audio.alaw2lin(np.frombuffer(data, np.uint8))
    if fmt.encoding == "ulaw":
        return audio.ulaw2lin(np.frombuffer(data, np.uint8))
    return np.frombuffer(data, "<i2")


@pytest.mark.parametrize("voice_id", sorted(load_voices(ROOT / "voices").profiles))
@pytest.mark.parametrize("fmt_name", list(audio.FORMATS))
def test_every_format_for_every_voice(
    store: AudioStore, catalog: VoiceCatalog, fmt_name: str, voice_id: str
) -> None:
    fmt = audio.FORMATS[fmt_name]
    stored = store.synthesize_segments(SEGMENTS, catalog.get(voice_id), fmt_name)
    assert stored.path.exists() and stored.path.suffix == fmt.ext
    if fmt.wav:
        wav = audio.read_wav(stored.path.read_bytes())
        assert (wav.tag, wav.channels, wav.rate) == (
            {"pcm16": 1, "alaw": 6, "ulaw": 7}[fmt.encoding],
            1,
            fmt.rate,
        )
        label = json.loads(wav.info["ICMT"])
        assert stored.label_path is None
    else:
        assert stored.label_path is not None
        sidecar = json.loads(stored.label_path.read_text())
        label = {"AIGC": sidecar["AIGC"]}
        assert (sidecar["sample_rate"], sidecar["encoding"]) == (fmt.rate, fmt.encoding)
    assert label["AIGC"]["Label"] == "1" and label["AIGC"]["ProduceID"] == stored.key
    x = _samples(stored.path, fmt).astype(np.float64)
    seconds = len(x) / fmt.rate
    assert abs(seconds - stored.duration_s) < 0.01
    # 60 spoken characters at ~4 syllables per second, plus pauses: 11-22 s is plausible
    assert 11 < seconds < 22, seconds
    rms_db = 20 * np.log10(np.sqrt(np.mean(x**2)) / 32768)
    assert rms_db > -30, rms_db
    assert np.max(np.abs(x)) < 32767 * 0.9  # -1 dBFS peak: no clipping
    _sox_reads(stored.path, fmt, seconds)


#: how sox is told what a raw file holds (it has no header; diallers know it by extension)
SOX_RAW = {"pcm16": ["-t", "raw", "-e", "signed", "-b", "16"], "alaw": ["-t", "al"],
           "ulaw": ["-t", "ul"]}  # fmt: skip
SOX_ENCODING = {"pcm16": "16-bit Signed Integer PCM", "alaw": "8-bit A-law", "ulaw": "8-bit u-law"}


def _sox_reads(path: Path, fmt: audio.AudioFormat, seconds: float) -> None:
    """sox (what dialler admins check prompts with) reads the file as we wrote it: a WAV's
    header says the rate, channels, encoding and length; a raw file decodes to our samples."""
    if shutil.which("sox") is None:
        pytest.skip("sox is not installed (.ci/run installs it)")
    if fmt.wav:
        run = subprocess.run(["sox", "--i", str(path)], capture_output=True, text=True, check=True)
        pairs = (line.split(":", 1) for line in run.stdout.splitlines() if ":" in line)
        info = {k.strip(): v.strip() for k, v in pairs}
        assert info["Channels"] == "1" and info["Sample Rate"] == str(fmt.rate), info
        assert info["Sample Encoding"] == SOX_ENCODING[fmt.encoding], info
        samples = int(info["Duration"].split("=")[1].split()[0])
        assert abs(samples / fmt.rate - seconds) < 0.01, info
        return
    source = [*SOX_RAW[fmt.encoding], "-r", str(fmt.rate), "-c", "1", str(path)]
    target = ["-t", "raw", "-e", "signed", "-b", "16", "-"]
    run = subprocess.run(["sox", *source, *target], capture_output=True, check=True)
    assert np.array_equal(np.frombuffer(run.stdout, "<i2"), _samples(path, fmt))


def test_shared_segments_are_synthesised_once(store: AudioStore, catalog: VoiceCatalog) -> None:
    voice = catalog.get("cmn-female")
    shared = ["您好，我是银行的人工智能合成语音客服。", "本期账单已出，请及时还款。"]
    names = ["王女士，您好！", "李先生，您好！", "王女士，您好！"]
    stored = store.synthesize_prompts([([shared[0], n, shared[1]], voice) for n in names])
    assert store.synthesised == 4  # 2 shared + 2 distinct greetings
    assert stored[0].key == stored[2].key and stored[0].key != stored[1].key
    again = store.synthesize_segments([shared[0], "赵先生，您好！", shared[1]], voice)
    assert store.synthesised == 5 and again.path.exists()
    # every 8 kHz format reuses the segments; a fresh store on the same folder reads them
    fresh = AudioStore(store.root, catalog=catalog, synth=store.synth)
    for fmt in ("sln", "alaw", "ulaw-wav"):
        fresh.synthesize_segments([shared[0], names[0], shared[1]], voice, fmt)
    assert fresh.synthesised == 0
    fresh.synthesize_segments([shared[0]], voice, "wav16k")  # another rate: synthesised anew
    assert fresh.synthesised == 1


def test_assembled_prompt_equals_its_segments(store: AudioStore, catalog: VoiceCatalog) -> None:
    voice = catalog.get("yue-female")
    fmt = audio.FORMATS["alaw"]
    one = store.synthesize_segments(SEGMENTS[:1], voice, "alaw")
    two = store.synthesize_segments(SEGMENTS[:2], voice, "alaw")
    head = one.path.read_bytes()
    blob = two.path.read_bytes()
    assert blob.startswith(head) and blob[len(head) :].startswith(
        audio.silence(fmt, store.pause_ms)
    )


def test_synthesize_script_accepts_segment_objects(
    store: AudioStore, catalog: VoiceCatalog
) -> None:
    class Segment:
        def __init__(self, text: str) -> None:
            self.text = text

    path = synthesize_script(
        [Segment(SEGMENTS[0]), SEGMENTS[1]], catalog.get("cmn-male"), store=store
    )
    assert path.exists()
    with pytest.raises(SynthesisError, match="no text"):
        synthesize_script([Segment("  ")], catalog.get("cmn-male"), store=store)


def test_atomic_write_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "a" / "x.wav"
    atomic_write(target, b"old")
    atomic_write(target, [b"new", b"er"])
    assert target.read_bytes() == b"newer"
    assert [p.name for p in target.parent.iterdir()] == ["x.wav"]


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def chunks():
        yield b"half"
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(tmp_path / "y.wav", chunks())
    assert list(tmp_path.iterdir()) == []


WRITER = """
import sys, time
from pathlib import Path
from scripts_engine.audiostore import atomic_write
def chunks():
    for _ in range(1000):
        yield b"x" * 65536
        time.sleep(0.01)
atomic_write(Path(sys.argv[1]), chunks())
"""


def test_killed_writer_leaves_no_partial_file(tmp_path: Path, store: AudioStore) -> None:
    target = tmp_path / "audio" / "prompts" / "ab" / "killed.wav"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], cwd=ROOT)
    deadline = time.monotonic() + 30
    while not any(target.parent.glob(".tmp-*")) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # mid-write: some chunks are on disk
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    [tmp] = list(target.parent.glob(".tmp-*"))
    assert tmp.stat().st_size > 0 and not target.exists()
    assert store.sweep(older_than_s=0) == 1 and list(target.parent.iterdir()) == []


def test_concurrent_writers_of_one_key(tmp_path: Path) -> None:
    target = tmp_path / "same.wav"
    payloads = [bytes([i]) * 300_000 for i in range(8)]
    threads = [threading.Thread(target=atomic_write, args=(target, p)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert target.read_bytes() in payloads  # one whole version, never a mix
    assert [p.name for p in tmp_path.iterdir()] == ["same.wav"]


def test_cli_synth_writes_each_format(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from scripts_engine.cli import main
    from scripts_engine.config import Settings

    settings = Settings(state_dir=tmp_path / "var")
    runner = CliRunner()
    for fmt in audio.FORMATS:
        out = tmp_path / f"p-{fmt}{audio.FORMATS[fmt].ext}"
        args = [
            "synth",
            "您好。请于2026-11-23前还款。",
            "--province",
            "广东",
            "--format",
            fmt,
            "-o",
            str(out),
        ]
        result = runner.invoke(main, args, obj=settings)
        assert result.exit_code == 0, result.output
        assert "yue-female" in result.output and out.stat().st_size > 8000
        assert audio.FORMATS[fmt].wav or out.with_name(out.name + ".json").exists()
    bare = runner.invoke(
        main, ["synth", "你好。", "--format", "alaw", "-o", str(tmp_path / "bare")], obj=settings
    )
    assert bare.exit_code == 0 and (tmp_path / "bare.alaw").stat().st_size > 800, bare.output
    bad = runner.invoke(
        main, ["synth", "你好", "--voice", "nosuch", "-o", str(tmp_path / "x.wav")], obj=settings
    )
    assert bad.exit_code == 2 and "no voice profile 'nosuch'" in bad.output
    assert "Traceback" not in bad.output
