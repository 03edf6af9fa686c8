"""Render workers: the service's renders of stored customers, in processes of their own.

The service is one interpreter: its event loop answers every request on one core, and a
render (about 230 us of Python for the script and its JSON, out of some 550 us a request) is
the largest piece of work any dialler route does there. A :class:`RenderPool` hands that
piece to worker processes (``render_workers``, spawned): the loop sends the customer's record
and the render's options down a pipe and answers with the JSON bytes that come back, and is
free meanwhile for claims, outcomes and the next requests. The rest of the machine's cores
do the rendering.

What a worker renders is what the service would: the same templates (each worker renders the
live set from the database, as the service does, and reloads it when the service's renderer
is told of a live change: :meth:`RenderPool.refresh` queues a reload before any later
render), the same code (:func:`render_json`). A worker answers its requests in order.

The pool never stands between a request and its answer:

- until a worker has started (building its renderer takes a second or two) and after one has
  died, the loop renders in-process, as it did before the pool;
- a render that fails in a worker (a broken template, a content rule) is rendered again
  in-process, so the error the caller gets is the one the service's own renderer raises;
- a worker that dies fails its queued renders over to the loop, and is started again; so
  does one that does not answer a render within :data:`RENDER_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
import socket
import struct
import time
from collections import deque
from collections.abc import Mapping
from contextlib import suppress
from datetime import date
from typing import Any, NamedTuple

from scripts_engine.config import Settings
from scripts_engine.render import Renderer

log = logging.getLogger("scripts_engine.render_pool")
_HEADER = struct.Struct("!i")  # multiprocessing.Connection's frame: a signed 4-byte length
#: a worker that died is started again at most this often (s)
RESTART_INTERVAL_S = 5.0
#: a render not answered by then is rendered in the service, and its worker replaced (s): a
#: render takes well under a millisecond, and the renderer's own limits stop a runaway one
RENDER_TIMEOUT_S = 10.0


class RenderArgs(NamedTuple):
    """One render of the render route: the customer's record, the profile (None: the generic
    script), the customer's tag scores and the route's options."""

    record: Mapping[str, Any]
    profile_id: str | None
    tags: Mapping[str, float] | None
    channel: str
    moment: str
    as_of: date


def render_json(renderer: Renderer, args: RenderArgs) -> bytes:
    """One script as the render route answers it (JSON, UTF-8), in the service or a worker."""
    script = renderer.render_script(
        args.record, args.profile_id, args.tags, channel=args.channel, moment=args.moment,
        as_of=args.as_of,
    )  # fmt: skip
    return script.to_json_bytes()


def auto_workers() -> int:
    """The default number of render workers: one core fewer than this process may run on (the
    event loop keeps one; a container's CPU set counts, not the host's cores), at most four;
    none on a single core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(4, (cores or 1) - 1))


class _Failed(Exception):
    """A worker could not answer (it died, or the render raised there): render in-process."""


class _Worker:
    """One worker process and the loop's end of its pipe."""

    def __init__(self, pool: RenderPool, slot: int):
        self.pool, self.slot = pool, slot
        self.pending: deque[asyncio.Future[bytes]] = deque()
        self.ready = False
        self.started = time.monotonic()
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=_serve, args=(child, pool.blob), name=f"render-{slot}", daemon=True
        )
        self.process.start()
        child.close()
        self._conn = parent  # kept open: the streams below use a duplicate of its descriptor
        self.writer: asyncio.StreamWriter | None = None
        self._sock: socket.socket | None = None
        self.task = pool.loop.create_task(self._read(os.dup(parent.fileno())))

    async def _read(self, fd: int) -> None:
        sock = self._sock = socket.socket(fileno=fd)
        try:
            reader, self.writer = await asyncio.open_unix_connection(sock=sock)
            while True:
                (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
                kind, value = pickle.loads(await reader.readexactly(size))
                if kind == "ready":
                    self.ready = True
                    continue
                future = self.pending.popleft()
                if not future.done():
                    if kind == "ok":
                        future.set_result(value)
                    else:
                        future.set_exception(_Failed(value))
        except Exception as exc:  # noqa: BLE001 - the pipe closed (or worse): replace the worker
            if not self.pool.closing:
                log.error("render worker %s stopped (%s); its renders run in the service",
                          self.slot, type(exc).__name__)  # fmt: skip
        finally:
            self.ready = False
            for future in self.pending:
                if not future.done():
                    future.set_exception(_Failed("the render worker stopped"))
            self.pending.clear()
            if self.writer is not None:
                self.writer.close()
            self._conn.close()
            self.pool.stopped(self)

    def send(self, message: tuple[Any, ...]) -> None:
        assert self.writer is not None
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self.writer.write(_HEADER.pack(len(data)) + data)

    def hang_up(self) -> None:
        """Close the pipe now (a transport's close waits for the loop's next turn): the
        worker sees its end and exits."""
        if self._sock is not None:
            with suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        self._conn.close()
        self.task.cancel()

    def join(self) -> None:
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


class RenderPool:
    """``workers`` render processes for the service's event loop (see the module docstring).
    Create it on the loop that will use it."""

    def __init__(self, settings: Settings, workers: int):
        self.blob = settings.model_dump(mode="json")
        self.loop = asyncio.get_running_loop()
        self.closing = False
        #: renders the workers answered
        self.rendered = 0
        self.workers = [_Worker(self, slot) for slot in range(workers)]

    @property
    def alive(self) -> int:
        """Workers ready to render."""
        return sum(w.ready for w in self.workers)

    async def render(self, args: RenderArgs) -> bytes | None:
        """The script's JSON from the least busy ready worker; None when none can take it or it
        failed there (the caller then renders in-process)."""
        ready = [w for w in self.workers if w.ready and w.writer is not None]
        if not ready:
            return None
        worker = min(ready, key=lambda w: len(w.pending))
        future: asyncio.Future[bytes] = self.loop.create_future()
        try:
            worker.send(("render", args._replace(record=dict(args.record))))
        except Exception:  # noqa: BLE001 - a pipe closing under us: render in-process
            return None
        worker.pending.append(future)
        try:
            answer = await asyncio.wait_for(future, RENDER_TIMEOUT_S)
        except _Failed:
            return None
        except TimeoutError:
            log.error("render worker %s did not answer in %s s: replacing it",
                      worker.slot, RENDER_TIMEOUT_S)  # fmt: skip
            worker.process.kill()  # its pipe closes; the pool starts another
            return None
        self.rendered += 1
        return answer

    def refresh(self) -> None:
        """Each worker reloads its templates before its next render (a live change)."""
        for worker in self.workers:
            if worker.writer is not None:
                try:
                    worker.send(("refresh", None))
                except Exception:  # noqa: BLE001 - it is stopping: its renders come back here
                    log.warning("render worker %s missed a refresh", worker.slot)

    def stopped(self, worker: _Worker) -> None:
        """A worker's pipe closed: start another in its slot, unless the pool is closing."""
        if self.closing or worker not in self.workers:
            return
        wait = max(0.0, worker.started + RESTART_INTERVAL_S - time.monotonic())
        self.loop.call_later(wait, self._restart, worker)

    def _restart(self, worker: _Worker) -> None:
        if self.closing or worker not in self.workers:
            return
        worker.process.join(0.1)
        self.workers[self.workers.index(worker)] = _Worker(self, worker.slot)

    def close(self) -> None:
        """Stop the workers (renders still queued come back to the loop)."""
        self.closing = True
        for worker in self.workers:
            worker.hang_up()
        for worker in self.workers:
            worker.join()


# --- the worker process ---------------------------------------------------------------------


def _renderer(blob: dict[str, Any]) -> Renderer:
    """The worker's renderer: the service's templates (the live set from the database, or the
    files), without the scorer, the voices or the audio store the service also builds."""
    from datetime import UTC, datetime

    from scripts_engine.db.session import open_database
    from scripts_engine.grid import load_grid
    from scripts_engine.versions import VersionStore

    settings = Settings(**{**blob, "db_pool_size": 1})
    grid = load_grid(settings.personas_dir / "grid.yaml")
    source = None
    if settings.templates_source == "database":
        versions = VersionStore(open_database(settings), settings.personas_dir, grid)
        versions.seed(datetime.now(UTC))  # idempotent; the service seeded it on start
        source = versions.source()
    return Renderer(settings.personas_dir, grid=grid, source=source)


def _serve(conn: Any, blob: dict[str, Any]) -> None:
    """A worker's life: build the renderer, say so, then answer renders in order until the
    pipe closes."""
    renderer = _renderer(blob)
    renderer.refresh(force=True)
    conn.send_bytes(pickle.dumps(("ready", None)))
    while True:
        try:
            kind, args = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        if kind == "refresh":
            renderer.refresh(force=True)
            continue
        try:
            answer: tuple[str, Any] = ("ok", render_json(renderer, args))
        except Exception as exc:  # noqa: BLE001 - the service renders it again, and raises
            answer = ("error", f"{type(exc).__name__}: {exc}")
        conn.send_bytes(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
