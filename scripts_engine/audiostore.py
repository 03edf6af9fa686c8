"""The audio store: content-addressed, crash-safe files, and prompts assembled from segments.

Every file is named by a sha256 of what determines its content: for a segment, the voice's
sound settings, the speech text (after dialect processing), the format, the engine version and
:data:`audio.AUDIO_VERSION`; for an assembled prompt, the format, the pause and the keys of its
segments. So a cache hit is always safe, and a retry writes the same name.

Writes are atomic (COMPLIANCE.md 2.4): a temporary file in the same folder, fsync, rename,
fsync of the folder. Readers see a whole file or none, concurrent writers of one key both
succeed (the last rename wins, both files are complete) and a crash leaves at most a
``.tmp-*`` file, which :meth:`AudioStore.sweep` removes.

A call prompt is a list of segments: the parts shared by many customers (stage texts) are
synthesised once per voice and format and reused; only new segments (a greeting with a name)
are synthesised. Segments are cached conditioned, as labelled 16-bit WAV files at the
format's rate (one synthesis serves every 8 kHz format), and encoded per format in memory, so
assembling a prompt is joining bytes with short pauses. G.711 and PCM are sample-by-sample
codes, and every segment starts and ends in trimmed silence, so the joins are clean.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scripts_engine import audio
from scripts_engine._files import atomic_write
from scripts_engine.audio import AudioFormat, get_format
from scripts_engine.config import Settings
from scripts_engine.errors import SynthesisError
from scripts_engine.speech import SynthesisPool, Synthesizer, engine_version
from scripts_engine.voice import VoiceCatalog, VoiceProfile

#: Silence between segments of one prompt.
PAUSE_MS = 250


@dataclass(frozen=True)
class StoredAudio:
    """A file in the store: its content key, path, format and duration."""

    key: str
    path: Path
    format: str
    duration_s: float
    label_path: Path | None = None


_SENTENCE_END = re.compile(r"(?<=[。！？；!?;])")


def split_sentences(texts: Sequence[str]) -> list[str]:
    """Script segments -> sentences (the unit of the cache: a sentence without personal data
    is shared by every customer whose script contains it). Empty pieces are dropped."""
    out: list[str] = []
    for text in texts:
        for piece in _SENTENCE_END.split(text):
            piece = piece.strip()
            if piece and out and len(piece) < 2:  # a stray mark: keep it with its sentence
                out[-1] += piece
            elif piece:
                out.append(piece)
    return out


def _sha(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


class AudioStore:
    """Segment cache and prompt files under ``root`` (``<root>/segments``, ``<root>/prompts``).

    ``synth`` is a :class:`Synthesizer` (in-process) or a :class:`SynthesisPool`.
    """

    def __init__(
        self,
        root: Path,
        *,
        catalog: VoiceCatalog,
        synth: Synthesizer | SynthesisPool,
        pause_ms: int = PAUSE_MS,
        memory_bytes: int = 128 * 2**20,
    ) -> None:
        self.root, self.catalog, self.synth, self.pause_ms = Path(root), catalog, synth, pause_ms
        self.engine = engine_version()
        self._memory: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._memory_bytes, self._memory_used = memory_bytes, 0
        self.synthesised = 0  #: segments synthesised by this store (not found in the cache)

    # -- keys and paths --
    def segment_key(self, spoken: str, voice: VoiceProfile, fmt: AudioFormat) -> str:
        """The content key of one segment."""
        seg = fmt.segment_format
        return _sha(
            "segment", voice.settings_json(), spoken, seg.name, self.engine, audio.AUDIO_VERSION
        )

    def _segment_path(self, key: str, fmt: AudioFormat) -> Path:
        return self.root / "segments" / key[:2] / f"{key}-{fmt.segment_format.name}.wav"

    def prompt_path(self, key: str, fmt: AudioFormat) -> Path:
        """Where the prompt with this key is stored: ``prompts/<k[:2]>/<key>-<format><ext>``."""
        return self.root / "prompts" / key[:2] / f"{key}-{fmt.name}{fmt.ext}"

    # -- segments --
    def _remember(self, key: tuple[str, str], data: bytes) -> None:
        """Keep recent segment samples in memory (least recently used out past the budget)."""
        old = self._memory.pop(key, None)
        self._memory_used += len(data) - (len(old) if old is not None else 0)
        self._memory[key] = data
        while self._memory_used > self._memory_bytes and len(self._memory) > 1:
            self._memory_used -= len(self._memory.popitem(last=False)[1])

    def _cached(self, key: str, fmt: AudioFormat) -> bytes | None:
        """The segment's samples in ``fmt``'s encoding (from memory, else from disk)."""
        if (key, fmt.encoding) in self._memory:
            self._memory.move_to_end((key, fmt.encoding))
            return self._memory[key, fmt.encoding]
        pcm = self._memory.get((key, "pcm16"))
        if pcm is None:
            try:
                blob = self._segment_path(key, fmt).read_bytes()
            except FileNotFoundError:
                return None
            pcm = audio.read_wav(blob).data
            self._remember((key, "pcm16"), pcm)
        if fmt.encoding == "pcm16":
            return pcm
        data = audio.encode_samples(np.frombuffer(pcm, "<i2"), fmt.encoding)
        self._remember((key, fmt.encoding), data)
        return data

    def _synthesize(
        self, jobs: list[tuple[str, VoiceProfile]], progress: Callable[[int], None] | None
    ) -> list[bytes | str]:
        """PCM per job, or the error text of a job that failed (pool: after its retry)."""
        if isinstance(self.synth, SynthesisPool):
            return [
                r.pcm if r.pcm is not None else str(r.error) for r in self.synth.run(jobs, progress)
            ]
        out: list[bytes | str] = []
        for text, voice in jobs:
            out.append(self.synth.synthesize(text, voice))
            if progress:
                progress(1)
        return out

    def ensure_segments(
        self,
        items: Sequence[tuple[str, VoiceProfile]],
        fmt: AudioFormat,
        progress: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Make sure every ``(script text, voice)`` segment is cached; return their keys.

        Each distinct segment is synthesised at most once, and only if not already stored.
        """
        keys, todo = [], {}
        for text, voice in items:
            spoken = self.catalog.speech_text(text, voice)
            if not spoken.strip():
                raise SynthesisError(f"segment {text!r} has nothing to say")
            key = self.segment_key(spoken, voice, fmt)
            keys.append(key)
            if key not in todo and self._cached(key, fmt) is None:
                todo[key] = (spoken, voice)
        if todo:
            rate = getattr(self.synth, "sample_rate", 22050)
            pcms = self._synthesize(list(todo.values()), progress)
            seg, failed = fmt.segment_format, []
            for (key, (spoken, voice)), pcm in zip(todo.items(), pcms, strict=True):
                if isinstance(pcm, str):
                    failed.append(f"{spoken[:24]!r} ({voice.id}): {pcm}")
                    continue
                data = audio.encode_samples(audio.condition(pcm, rate, seg.rate), "pcm16")
                info = self._info(key, voice, "segment")
                atomic_write(self._segment_path(key, fmt), audio.wav_bytes(data, seg, info))
                self._remember((key, "pcm16"), data)
                self.synthesised += 1
            if failed:  # the others are stored: a rerun only retries these
                raise SynthesisError(f"{len(failed)} segments failed: " + "; ".join(failed))
        return keys

    def _info(self, key: str, voice: VoiceProfile, kind: str) -> dict[str, str]:
        label = audio.aigc_label(produce_id=key, detail=f"tts;{kind};voice={voice.id}")
        return audio.wav_info(label, voice=voice.id, engine=self.engine)

    # -- prompts --
    def assemble(self, keys: Sequence[str], voice: VoiceProfile, fmt: AudioFormat) -> StoredAudio:
        """Join cached segments with pauses into one prompt file (written once per content)."""
        key = _sha("prompt", fmt.name, str(self.pause_ms), *keys)
        path = self.prompt_path(key, fmt)
        label_path = None if fmt.wav else path.with_name(path.name + ".json")
        width = 2 if fmt.encoding == "pcm16" else 1
        if path.exists() and (label_path is None or label_path.exists()):
            frames = (
                path.stat().st_size if label_path else len(audio.read_wav(path.read_bytes()).data)
            ) // width
            return StoredAudio(key, path, fmt.name, frames / fmt.rate, label_path)
        pause = audio.silence(fmt, self.pause_ms)
        parts: list[bytes] = []
        for i, seg_key in enumerate(keys):
            data = self._cached(seg_key, fmt)
            if data is None:
                raise SynthesisError(f"segment {seg_key[:12]} vanished from the store")
            parts += [pause, data] if i else [data]
        data = b"".join(parts)
        if fmt.wav:
            atomic_write(path, audio.wav_bytes(data, fmt, self._info(key, voice, "prompt")))
        else:
            assert label_path is not None
            label = audio.aigc_label(produce_id=key, detail=f"tts;prompt;voice={voice.id}")
            sidecar = {**label, "format": fmt.name, "sample_rate": fmt.rate, "encoding": fmt.encoding,
                       "voice": voice.id, "engine": self.engine, "ai_generated": True}  # fmt: skip
            atomic_write(label_path, json.dumps(sidecar, ensure_ascii=False, indent=1).encode())
            atomic_write(path, data)
        return StoredAudio(key, path, fmt.name, len(data) / width / fmt.rate, label_path)

    def synthesize_segments(
        self, texts: Sequence[str], voice: VoiceProfile, fmt: str = "wav8k"
    ) -> StoredAudio:
        """One prompt from script segments, sentence by sentence: cached sentences are reused,
        new ones synthesised."""
        audio_format = get_format(fmt)
        keys = self.ensure_segments([(t, voice) for t in split_sentences(texts)], audio_format)
        return self.assemble(keys, voice, audio_format)

    def synthesize_prompts(
        self,
        prompts: Sequence[tuple[Sequence[str], VoiceProfile]],
        fmt: str = "wav8k",
        progress: Callable[[int], None] | None = None,
        segment_progress: Callable[[int], None] | None = None,
    ) -> list[StoredAudio]:
        """Many prompts at once: all their distinct new segments go to the synthesizer in one
        batch (in parallel with a pool), then each prompt is assembled.

        ``segment_progress(1)`` is called per new segment, ``progress(1)`` per prompt.
        """
        audio_format = get_format(fmt)
        units = [(split_sentences(texts), voice) for texts, voice in prompts]
        flat = [(text, voice) for texts, voice in units for text in texts]
        keys = self.ensure_segments(flat, audio_format, segment_progress)
        out, pos = [], 0
        for texts, voice in units:
            out.append(self.assemble(keys[pos : pos + len(texts)], voice, audio_format))
            pos += len(texts)
            if progress:
                progress(1)
        return out

    def sweep(self, older_than_s: float = 3600.0) -> int:
        """Delete ``.tmp-*`` files left by crashed writers; return how many were removed."""
        cutoff, removed = time.time() - older_than_s, 0
        for tmp in self.root.rglob(".tmp-*"):
            try:
                if tmp.stat().st_mtime <= cutoff:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed


def default_store(
    *, settings: Settings | None = None, synth: Synthesizer | SynthesisPool | None = None
) -> AudioStore:
    """The store in the settings' audio folder, with the settings' voices (in-process engine
    unless a synthesizer or pool is given)."""
    from scripts_engine.config import get_settings
    from scripts_engine.speech import Pyttsx3Synthesizer
    from scripts_engine.voice import get_catalog

    settings = settings or get_settings()
    return AudioStore(
        settings.resolved_audio_dir,
        catalog=get_catalog(settings.voices_dir),
        synth=synth or Pyttsx3Synthesizer(timeout=settings.synth_timeout_s),
    )


def synthesize_script(
    script_segments: Sequence[str | object],
    voice: VoiceProfile,
    fmt: str = "wav8k",
    *,
    store: AudioStore | None = None,
) -> Path:
    """Synthesise a rendered script's segments (strings, or objects with a ``text``) into one
    prompt file for the dialler; return its path."""
    texts = [s if isinstance(s, str) else str(getattr(s, "text", "")) for s in script_segments]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise SynthesisError("the script has no text to speak")
    return (store or default_store()).synthesize_segments(texts, voice, fmt).path
