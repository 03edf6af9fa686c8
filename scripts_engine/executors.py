"""Executors: where campaign chunks are built (DESIGN.md "Defaults and scale").

An executor runs :func:`scripts_engine.campaigns.run_chunk` for ``(campaign, chunk)`` pairs and
reports which committed. Three, chosen by the setting ``campaign_executor``:

- ``inline``: in the calling thread (unit tests, small installs);
- ``local``: worker processes on this machine (``spawn`` start method, no server);
- ``dask``: a Dask cluster at ``dask_address``; a worker plugin builds the speech engine and
  the rest of the toolkit once per worker process.

Every engine may run a task more than once (a retried task, a replaced worker, a late
duplicate), so the database is the record: ``run_chunk`` bumps the chunk's attempt before
building and commits calls, audio rows, the chunk's ``done`` and the campaign's progress in
one transaction only if its attempt is still the latest. A killed worker therefore loses
nothing (its chunk stays pending and runs again) and duplicates nothing. Each worker holds at
most one database connection.

Worker processes are started with ``spawn`` (never ``fork`` after the speech engine exists).
Set ``MALLOC_TOP_PAD_=67108864`` for Dask workers (the local executor and a ``LocalCluster``
started by :func:`local_cluster` set it for theirs): glibc's default made chunk work 1.4 to
1.7x slower there.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

from scripts_engine.config import Settings

log = logging.getLogger("scripts_engine.executors")
MALLOC_TOP_PAD = "67108864"
Task = tuple[str, int]


class Executor(Protocol):
    """Runs chunks; returns how many committed (a duplicate or a failed attempt: not)."""

    def run(self, tasks: Sequence[Task]) -> int: ...

    def close(self) -> None: ...


# --- what a worker process holds: its own database handle and toolkit, built once ---------

_WORKER: dict[str, Any] = {}


def _settings_blob(settings: Settings) -> dict[str, Any]:
    return settings.model_dump(mode="json")


def worker_state(blob: dict[str, Any]) -> tuple[Any, Any]:
    """``(Database, Toolkit)`` of this worker process for these settings (built on first use:
    the speech engine is created here, once per process). The renderer renders the live set
    from the database, as the service does, and notices a live change within its reload
    interval."""
    key = repr(sorted(blob.items()))
    if _WORKER.get("key") != key:
        from scripts_engine.audiostore import AudioStore
        from scripts_engine.campaigns import Toolkit
        from scripts_engine.db.session import open_database
        from scripts_engine.propensity import read_manifest
        from scripts_engine.render import Renderer
        from scripts_engine.scoring import Engine
        from scripts_engine.speech import Pyttsx3Synthesizer
        from scripts_engine.voice import get_catalog

        settings = Settings(**{**blob, "db_pool_size": 1})
        db = open_database(settings)
        engine = Engine.load(settings)
        try:
            version = str(read_manifest(settings.resolved_model_path).get("model_sha256", ""))
        except Exception:  # noqa: BLE001 - the version is informative only
            version = ""
        voices = get_catalog(settings.voices_dir)
        synth = Pyttsx3Synthesizer(timeout=settings.synth_timeout_s)
        store = None
        if blob.get("_audio", True):
            store = AudioStore(settings.resolved_audio_dir, catalog=voices, synth=synth)
        source = None
        if settings.templates_source == "database":  # the live set, as the service renders
            from datetime import UTC, datetime

            from scripts_engine.versions import VersionStore

            versions = VersionStore(db, settings.personas_dir, engine.grid)
            versions.seed(datetime.now(UTC))  # idempotent; the service seeds on start too
            source = versions.source()
        renderer = Renderer(settings.personas_dir, grid=engine.grid, source=source)
        _WORKER.update(key=key, db=db, toolkit=Toolkit(engine, renderer, voices, store,
                                                       model_version=version))  # fmt: skip
    return _WORKER["db"], _WORKER["toolkit"]


def run_task(blob: dict[str, Any], campaign_id: str, index: int) -> bool:
    """One chunk in a worker process (the function the local and dask executors ship)."""
    from scripts_engine.campaigns import run_chunk

    db, toolkit = worker_state(blob)
    return run_chunk(db=db, toolkit=toolkit, campaign_id=campaign_id, index=index)


# --- the executors ----------------------------------------------------------------------------


class InlineExecutor:
    """Chunks in the calling thread, with the caller's toolkit."""

    def __init__(self, db: Any, toolkit: Any):
        self.db, self.toolkit = db, toolkit

    def run(self, tasks: Sequence[Task]) -> int:
        from scripts_engine.campaigns import run_chunk

        return sum(
            run_chunk(db=self.db, toolkit=self.toolkit, campaign_id=c, index=i) for c, i in tasks
        )

    def close(self) -> None:
        pass


def _pool_init() -> None:
    os.environ.setdefault("MALLOC_TOP_PAD_", MALLOC_TOP_PAD)


class LocalExecutor:
    """Worker processes on this machine (spawned). A dead worker breaks the pool: the pool is
    replaced and the chunks not committed run again (the attempt numbers keep that safe)."""

    def __init__(self, settings: Settings, *, workers: int = 2, audio: bool = True):
        self.blob = {**_settings_blob(settings), "_audio": audio}
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_pool_init)
        return self._pool

    def run(self, tasks: Sequence[Task], *, rounds: int = 3) -> int:
        committed, todo = 0, list(tasks)
        for _ in range(rounds):
            if not todo:
                break
            pool = self._get_pool()
            futures: dict[Future[bool], Task] = {
                pool.submit(run_task, self.blob, c, i): (c, i) for c, i in todo
            }
            todo = []
            for future in as_completed(futures):
                try:
                    committed += bool(future.result())
                except BrokenProcessPool:
                    todo.append(futures[future])
                except Exception:  # noqa: BLE001 - recorded on the chunk by run_chunk
                    log.exception("chunk %s failed in a worker", futures[future])
            if todo:
                log.warning("a campaign worker died; %d chunks run again", len(todo))
                self._pool.shutdown(wait=False, cancel_futures=True) if self._pool else None
                self._pool = None
        return committed

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class DaskExecutor:
    """Chunks on a Dask cluster. The scheduler reruns the tasks of a worker that died."""

    def __init__(self, settings: Settings, *, address: str | Any, audio: bool = True):
        from distributed import Client

        self.blob = {**_settings_blob(settings), "_audio": audio}
        self.client = Client(address, set_as_default=False)
        self.client.register_plugin(ToolkitPlugin(self.blob), name="scripts-engine-toolkit")

    def run(self, tasks: Sequence[Task]) -> int:
        futures = [
            self.client.submit(run_task, self.blob, c, i, key=f"chunk-{c}-{i}-{os.urandom(4).hex()}",
                               retries=2, pure=False)
            for c, i in tasks
        ]  # fmt: skip
        committed = 0
        for future in futures:
            try:
                committed += bool(future.result())
            except Exception:  # noqa: BLE001 - the chunk stays pending; the next pass retries
                log.exception("chunk failed on the cluster")
        return committed

    def close(self) -> None:
        self.client.close()


def _toolkit_plugin_base() -> type:
    try:
        from distributed.diagnostics.plugin import WorkerPlugin
    except ImportError:  # pragma: no cover - dask is a dependency
        return object
    return WorkerPlugin


class ToolkitPlugin(_toolkit_plugin_base()):  # type: ignore[misc]
    """Builds the worker's toolkit (and so its speech engine) once, when the worker starts."""

    def __init__(self, blob: dict[str, Any]):
        self.blob = blob

    def setup(self, worker: Any) -> None:
        worker_state(self.blob)


def local_cluster(workers: int = 2) -> Any:
    """A small ``LocalCluster`` of spawned worker processes (tests, one machine)."""
    import dask
    from distributed import LocalCluster

    os.environ.setdefault("MALLOC_TOP_PAD_", MALLOC_TOP_PAD)
    dask.config.set({"distributed.worker.multiprocessing-method": "spawn"})
    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                        dashboard_address=None)  # fmt: skip


def make_executor(settings: Settings, db: Any, toolkit: Any) -> Executor:
    """The executor the settings choose."""
    if settings.campaign_executor == "local":
        return LocalExecutor(settings, workers=settings.campaign_workers)
    if settings.campaign_executor == "dask":
        if not settings.dask_address:
            raise ValueError("campaign_executor is 'dask' but dask_address is not set")
        return DaskExecutor(settings, address=settings.dask_address)
    return InlineExecutor(db, toolkit)


def run_all(executor: Executor, tasks: Iterable[Task]) -> int:
    return executor.run(list(tasks))
