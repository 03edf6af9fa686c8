"""Speech synthesis: pyttsx3 driving the espeak-ng that the ``espeakng-loader`` wheel bundles.

``pip install pyttsx3 espeakng-loader`` is all a machine needs (no system espeak). Every trap
measured in ``VOICE-NOTES.md`` is handled here:

- bootstrap (lazy, once per process): preload the bundled ``libespeak-ng.so`` with ctypes and
  set ``ESPEAK_DATA_PATH`` before pyttsx3 is imported (without it the library exits the
  process, P12);
- P1, the first ``runAndWait()`` returns early: wait for our own finished-utterance event;
- P2, parameter changes are cancelled by ``driver.stop()``: ``stop`` is patched to a no-op (a
  batch service never stops), and an utterance that did not complete raises;
- P3/P4: one ``save_to_file`` per ``runAndWait``, never ``say``;
- P5/P6: exactly one engine per process, created with ``init('espeak')``, behind a lock;
- P7, no fork after init: the engine is created lazily in the process that uses it, pools
  start workers with *spawn*, and a forked copy refuses to use an inherited engine;
- P8, an unwritable output path hangs the engine: there is no path; the driver's WAV writer
  (``wave.open``, which takes any file object) writes into an in-memory buffer of ours, which
  also spares a file write, read and unlink per prompt;
- P9, bad voice ids are ignored silently: ids and variants are checked against the engine;
- P11 (prints) silenced; P13 (empty text) and P15 (quadratic buffer) refused up front;
- the driver polls every 10 ms for the end of the utterance: its sleep is replaced by a wait
  on our finished event, so the loop ends as soon as the audio is complete (no poll ticks).

The pool (:mod:`scripts_engine.speechpool`) runs this in worker processes with timeouts.
"""

from __future__ import annotations

import ctypes
import io
import multiprocessing
import os
import threading
import time
import types
import wave
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from scripts_engine.errors import SynthesisError, VoiceUnavailable
from scripts_engine.voice import VoiceProfile

#: Sample rate of every espeak-ng voice (the driver hard-codes it in the WAV header, P14).
ENGINE_RATE = 22050
#: Longer texts hit the driver's quadratic buffer (P15); prompts are split into segments.
MAX_CHARS = 1000
_INSTALL_HINT = "install the speech extras: pip install 'pyttsx3>=2.99' 'espeakng-loader>=0.2.4'"


@runtime_checkable
class Synthesizer(Protocol):
    """Turns text into mono 16-bit little-endian PCM at ``sample_rate``."""

    sample_rate: int

    def synthesize(self, text: str, voice: VoiceProfile) -> bytes:
        """Speak ``text`` (already in speech form, see :mod:`dialect`) with ``voice``."""
        ...


@lru_cache(maxsize=1)
def engine_version() -> str:
    """Versions of pyttsx3, espeak-ng and the wheel that bundles it (part of cache keys).

    Read from package metadata and the library's file name, without loading the library.
    """
    try:
        import espeakng_loader

        lib = Path(espeakng_loader.get_library_path())
        names = sorted(p.name for p in lib.parent.glob(lib.name + ".*.*"))  # libespeak-ng.so.1.52.0
        espeak = names[-1].split(".so.")[-1] if names else "unknown"
        loader = metadata.version("espeakng-loader")
        tts = metadata.version("pyttsx3")
    except (ImportError, metadata.PackageNotFoundError):
        return "unavailable"
    return f"pyttsx3 {tts}; espeak-ng {espeak} (espeakng-loader {loader})"


def _bootstrap() -> Any:
    """Load the bundled espeak-ng, then import and patch pyttsx3; return the pyttsx3 module."""
    try:
        import espeakng_loader
    except ImportError:
        raise VoiceUnavailable(f"espeakng-loader is not installed; {_INSTALL_HINT}") from None
    try:
        ctypes.CDLL(espeakng_loader.get_library_path())
        data_path = espeakng_loader.get_data_path()
    except (OSError, RuntimeError) as exc:
        # e.g. glibc older than 2.29 (RHEL 8): the wheel installs but cannot load
        raise VoiceUnavailable(f"the bundled espeak-ng library cannot be loaded: {exc}") from None
    # must be set before the library initialises, or it exits the process (P12)
    os.environ["ESPEAK_DATA_PATH"] = data_path
    try:
        import pyttsx3
        import pyttsx3.drivers.espeak as driver
    except (ImportError, RuntimeError) as exc:
        raise VoiceUnavailable(f"pyttsx3 cannot use espeak-ng: {exc}; {_INSTALL_HINT}") from None
    driver.EspeakDriver.stop = lambda self: None  # P2
    driver.print = lambda *args, **kwargs: None  # P11
    driver._espeak.Synth = _synth_exact_size
    return pyttsx3


def _synth_exact_size(text: bytes | str, flags: int = 0) -> int:
    """``espeak_Synth`` told the true size of the text (the driver passes text and flags only).

    pyttsx3's ``_espeak.Synth`` passes ``size = len(text) * 10``. In the asynchronous mode the
    driver uses, espeak-ng copies ``size`` bytes from the text (``memcpy`` in
    ``create_espeak_text``). It read up to nine times the text's length past the end of a
    Python bytes object, and crashed the process (SIGSEGV in ``Synth``) when that ran past
    mapped memory. A bytes object always ends with a NUL, so ``len + 1`` bytes is exact.
    """
    from pyttsx3.drivers import _espeak

    data = text.encode("utf-8") if isinstance(text, str) else text
    return _espeak.cSynth(data, len(data) + 1, 0, _espeak.POS_CHARACTER, 0, flags, None, None)


@dataclass
class _Engine:
    """The process's only pyttsx3 engine and what we track about it."""

    engine: Any
    pid: int
    voice_ids: frozenset[str]
    variants: frozenset[str]
    library: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)
    completed: bool | None = None
    errors: list[str] = field(default_factory=list)


_ENGINE: _Engine | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Engine:
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is not None:
            if _ENGINE.pid != os.getpid():
                raise SynthesisError(
                    "the speech engine was created before this process was forked (it would "
                    "hang); create it in the worker, or start workers with 'spawn'"
                )
            return _ENGINE
        pyttsx3 = _bootstrap()
        try:
            engine = pyttsx3.init("espeak")
        except RuntimeError as exc:
            raise VoiceUnavailable(f"espeak-ng did not initialise: {exc}") from None
        data = Path(os.environ["ESPEAK_DATA_PATH"])
        variants = frozenset(p.name for p in (data / "voices" / "!v").iterdir())
        ids = frozenset(v.id for v in engine.getProperty("voices"))
        from pyttsx3.drivers import _espeak

        info = _espeak.dll.espeak_Info
        info.restype, info.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
        library = (info(None) or b"").decode("ascii", "replace")
        state = _Engine(
            engine=engine,
            pid=os.getpid(),
            voice_ids=ids,
            variants=variants,
            library=library,
        )

        def finished(name: str | None = None, completed: bool = True, **_: Any) -> None:
            state.completed = completed
            state.done.set()

        def error(exception: BaseException | None = None, **_: Any) -> None:
            state.errors.append(str(exception))

        engine.connect("finished-utterance", finished)
        engine.connect("error", error)
        # the driver's run loop sleeps 10 ms between checks of the end of the utterance: wake
        # it when our finished event fires instead (it is set before the loop is ended)
        import pyttsx3.drivers.espeak as driver

        driver.time = types.SimpleNamespace(sleep=lambda s: state.done.wait(min(s, 0.01)))
        _ENGINE = state
        return state


class Pyttsx3Synthesizer:
    """pyttsx3 + bundled espeak-ng; one shared engine per process, used under a lock."""

    sample_rate = ENGINE_RATE

    def __init__(self, *, timeout: float = 60.0) -> None:
        self.timeout = timeout

    def warm(self) -> None:
        """Create the engine now (pool workers do this before taking jobs)."""
        _engine()

    def check_voice(self, voice: VoiceProfile) -> None:
        """Raise :class:`VoiceUnavailable` if the engine lacks the voice or its variant (P9)."""
        state = _engine()
        if voice.engine_voice not in state.voice_ids:
            raise VoiceUnavailable(
                f"voice '{voice.id}': the engine has no voice '{voice.engine_voice}'"
            )
        if voice.variant and voice.variant not in state.variants:
            raise VoiceUnavailable(
                f"voice '{voice.id}': the engine has no variant '{voice.variant}'"
            )

    def synthesize(self, text: str, voice: VoiceProfile) -> bytes:
        """Speak ``text``; return mono s16le PCM at 22050 Hz.

        Raises:
            SynthesisError: empty or over-long text, a timeout, an incomplete utterance, or no
                audio.
            VoiceUnavailable: the engine or the voice is missing.
        """
        if not text or not text.strip():
            raise SynthesisError("nothing to say: the text is empty")  # P13
        if len(text) > MAX_CHARS:
            raise SynthesisError(f"text of {len(text)} characters; split it (max {MAX_CHARS})")
        self.check_voice(voice)
        state = _engine()
        sink = io.BytesIO()  # P8: no output path that could be unwritable
        with state.lock:
            engine = state.engine
            engine.setProperty("voice", self._engine_id(voice, state))
            engine.setProperty("rate", voice.rate)
            engine.setProperty("pitch", voice.pitch)
            engine.setProperty("volume", voice.volume)
            state.done.clear()
            state.completed, state.errors = None, []
            engine.save_to_file(text, sink)
            engine.runAndWait()
            if not state.done.wait(self.timeout):  # P1
                raise SynthesisError(f"no finished event within {self.timeout:.0f} s")
            if state.errors:
                raise SynthesisError(f"engine error: {'; '.join(state.errors)}")
            if not state.completed:
                raise SynthesisError("the utterance was cancelled")  # P2
            return self._read(sink)

    @staticmethod
    def _engine_id(voice: VoiceProfile, state: _Engine) -> str:
        """espeak-ng 1.51 (a system library that was loaded first) reads Hanzi with sit/cmn as
        English pinyin; its sit/cmn-latn-pinyin voice reads them correctly."""
        if state.library.startswith("1.51") and voice.engine_voice == "sit/cmn":
            return voice.espeak_id.replace("sit/cmn", "sit/cmn-latn-pinyin", 1)
        return voice.espeak_id

    def _read(self, sink: io.BytesIO) -> bytes:
        sink.seek(0)
        try:
            with wave.open(sink, "rb") as wav:
                if (wav.getnchannels(), wav.getsampwidth()) != (1, 2):
                    raise SynthesisError("engine output is not mono 16-bit")
                if wav.getframerate() != ENGINE_RATE:
                    raise SynthesisError(f"engine output at {wav.getframerate()} Hz")
                pcm = wav.readframes(wav.getnframes())
        except (wave.Error, EOFError) as exc:
            raise SynthesisError(f"engine wrote no valid audio: {exc}") from None
        if not pcm:
            raise SynthesisError("engine wrote no audio")
        return pcm

    def phonemes(self, text: str, voice: VoiceProfile) -> str:
        """The engine's phonemes for ``text`` (to check lexicons and normalisation).

        A ``(en)`` switch in the result means the engine fell back to reading English.
        """
        self.check_voice(voice)
        state = _engine()
        from pyttsx3.drivers import _espeak

        fn = _espeak.dll.espeak_TextToPhonemes
        fn.restype = ctypes.c_char_p
        fn.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        raw = ctypes.create_string_buffer(text.encode("utf-8"))
        pointer = ctypes.c_void_p(ctypes.addressof(raw))
        out = []
        with state.lock:
            _espeak.SetVoiceByName(voice.engine_voice.encode())
            while pointer.value:
                chunk = fn(ctypes.byref(pointer), 1, 0x02)  # UTF-8 in, IPA out
                out.append((chunk or b"").decode("utf-8", "replace"))
        return " | ".join(out)


# --- the worker pool -------------------------------------------------------------------------

SynthesizerFactory = Callable[[], Synthesizer]


@dataclass
class JobResult:
    """One job's outcome: PCM, or the error of its last attempt (never both, never neither)."""

    index: int
    pcm: bytes | None
    error: str | None
    attempts: int


def _worker_main(conn: Connection, factory: SynthesizerFactory) -> None:
    """A spawned worker: build the synthesizer (engine created here, after spawn), say ready,
    then answer ``(index, text, voice)`` jobs until it receives ``None``."""
    try:
        synth = factory()
        warm = getattr(synth, "warm", None)
        if warm is not None:
            warm()
        conn.send(("ready", os.getpid()))
    except Exception as exc:  # reported to the parent, which gives up on this worker
        conn.send(("broken", f"{type(exc).__name__}: {exc}"))
        return
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        index, text, voice = job
        try:
            conn.send((index, synth.synthesize(text, voice), None))
        except Exception as exc:
            conn.send((index, None, f"{type(exc).__name__}: {exc}"))


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    ready: bool = False
    job: int | None = None
    deadline: float = 0.0


class SynthesisPool:
    """Worker processes (started with *spawn*) that synthesise jobs with a per-job timeout.

    A worker that hangs past the timeout or dies is killed and replaced, and its job is retried
    (``retries`` times, once by default); a job whose every attempt failed comes back with an
    error. :meth:`run` returns one :class:`JobResult` per job, in order: nothing is dropped.
    """

    def __init__(
        self,
        workers: int = 2,
        *,
        timeout: float = 30.0,
        factory: SynthesizerFactory = Pyttsx3Synthesizer,
        retries: int = 1,
        start_timeout: float = 60.0,
    ) -> None:
        self.size, self.timeout, self.retries = workers, timeout, retries
        self.factory, self.start_timeout = factory, start_timeout
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self.replaced = 0  #: workers killed or lost and replaced so far (for logs and tests)

    def __enter__(self) -> SynthesisPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=_worker_main, args=(child, self.factory), daemon=True)
        process.start()
        child.close()
        worker = _Worker(process, parent, deadline=time.monotonic() + self.start_timeout)
        self._workers.append(worker)
        return worker

    def _kill(self, worker: _Worker) -> None:
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(5)
        worker.conn.close()
        self._workers.remove(worker)

    def run(
        self,
        jobs: Sequence[tuple[str, VoiceProfile]],
        progress: Callable[[int], None] | None = None,
    ) -> list[JobResult]:
        """Synthesise every ``(text, voice)``; call ``progress(1)`` as each job finishes."""
        results: dict[int, JobResult] = {}
        attempts = [0] * len(jobs)
        pending = deque(range(len(jobs)))
        failed_starts = 0

        def fail(worker: _Worker, reason: str) -> None:
            index = worker.job
            self._kill(worker)
            self.replaced += 1
            if index is not None:
                if attempts[index] > self.retries:
                    results[index] = JobResult(index, None, reason, attempts[index])
                    if progress:
                        progress(1)
                else:
                    pending.appendleft(index)

        while len(results) < len(jobs):
            while len(self._workers) < min(self.size, len(pending) + self._busy()):
                self._start()
            for worker in self._workers:
                if worker.ready and worker.job is None and pending:
                    index = pending.popleft()
                    attempts[index] += 1
                    worker.job, worker.deadline = index, time.monotonic() + self.timeout
                    worker.conn.send((index, *jobs[index]))
            waits = [w.conn for w in self._workers] + [w.process.sentinel for w in self._workers]
            now = time.monotonic()
            soonest = min(
                (w.deadline for w in self._workers if w.job is not None or not w.ready),
                default=now + 1,
            )
            ready = set(wait(waits, timeout=max(0.0, soonest - now)))
            for worker in list(self._workers):
                if worker.conn in ready:
                    try:
                        message = worker.conn.recv()
                    except (EOFError, OSError):
                        fail(worker, "worker process died")
                        continue
                    if message[0] == "ready":
                        worker.ready, failed_starts = True, 0
                    elif message[0] == "broken":
                        self._kill(worker)
                        raise SynthesisError(f"synthesis worker cannot start: {message[1]}")
                    else:
                        index, pcm, error = message
                        worker.job = None
                        if error is None or attempts[index] > self.retries:
                            results[index] = JobResult(index, pcm, error, attempts[index])
                            if progress:
                                progress(1)
                        else:
                            pending.appendleft(index)
                elif worker.process.sentinel in ready:
                    fail(worker, f"worker process died (exit code {worker.process.exitcode})")
                elif time.monotonic() >= worker.deadline and (
                    worker.job is not None or not worker.ready
                ):
                    if not worker.ready:
                        failed_starts += 1
                        if failed_starts >= 3:
                            self._kill(worker)
                            raise SynthesisError("synthesis workers do not start")
                    fail(worker, f"timed out after {self.timeout:g} s; worker replaced")
        return [results[i] for i in range(len(jobs))]

    def _busy(self) -> int:
        return sum(1 for w in self._workers if w.job is not None)

    def synthesize_all(
        self,
        jobs: Sequence[tuple[str, VoiceProfile]],
        progress: Callable[[int], None] | None = None,
    ) -> list[bytes]:
        """Like :meth:`run`, but return the PCM of every job.

        Raises:
            SynthesisError: some jobs failed on every attempt (all of them are listed).
        """
        results = self.run(jobs, progress)
        failed = [r for r in results if r.pcm is None]
        if failed:
            lines = "; ".join(
                f"job {r.index} ({jobs[r.index][0][:20]!r}): {r.error}" for r in failed
            )
            raise SynthesisError(f"{len(failed)} of {len(jobs)} prompts failed twice: {lines}")
        return [r.pcm for r in results if r.pcm is not None]

    def close(self) -> None:
        """Stop every worker (politely, then by force)."""
        for worker in list(self._workers):
            try:
                worker.conn.send(None)
            except OSError:
                pass
        for worker in list(self._workers):
            worker.process.join(2)
            self._kill(worker)
