"""Worker processes beside the service's event loop, and the pipe between them.

The service is one interpreter: its event loop answers every request on one core. A
:class:`WorkerPool` hands a piece of a request's work (a render:
:mod:`scripts_engine.render_pool`) to spawned processes, so the rest of the machine's cores do
it while the loop goes on with other requests.

The loop writes each message down the pipe with a sequence number, and a worker answers with
the same number (``(seq, ok, value)``), in whatever order its work finishes. A pool never
stands between a request and its answer: :meth:`WorkerPool.call` raises :class:`Unavailable`
when no worker is ready (one starts in a second or two), when the work failed there, when the
worker died (its other waiting calls fail the same way, and it is started again, at most every
:data:`RESTART_INTERVAL_S`), or when it did not answer within the pool's ``timeout_s`` (it is
killed and replaced). The caller then does the work itself, as it did before the pool.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import os
import pickle
import socket
import struct
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

log = logging.getLogger("scripts_engine.workers")
_HEADER = struct.Struct("!i")  # multiprocessing.Connection's frame: a signed 4-byte length
#: a worker that died is started again at most this often (s)
RESTART_INTERVAL_S = 5.0
#: the sequence number of a worker's "ready" (the first thing it sends)
READY = -1

#: a worker process's body: its end of the pipe and the pool's settings blob
Target = Callable[[Any, dict[str, Any]], None]


class Unavailable(Exception):
    """No worker could answer (none ready, it died, the work failed there, or it timed out):
    the caller does the work itself."""


def auto_workers() -> int:
    """The default number of worker processes of a kind: one core fewer than this process may
    run on (the event loop keeps one; a container's CPU set counts, not the host's cores), at
    most four; none on a single core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(4, (cores or 1) - 1))


def _frame(message: Any) -> bytes:
    """``message`` as the pipe carries it (pickled, after its length)."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


class _Worker:
    """One worker process and the loop's end of its pipe."""

    def __init__(self, pool: WorkerPool, slot: int):
        self.pool, self.slot = pool, slot
        #: seq -> (the caller's future, when it was sent)
        self.pending: dict[int, tuple[asyncio.Future[Any], float]] = {}
        self.ready = False
        self.started = time.monotonic()
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=pool.target, args=(child, pool.blob), name=f"{pool.name}-{slot}", daemon=True
        )
        self.process.start()
        child.close()
        self._conn = parent  # kept open: the streams below use a duplicate of its descriptor
        self.writer: asyncio.StreamWriter | None = None
        self._sock: socket.socket | None = None
        self.task = pool.loop.create_task(self._read(os.dup(parent.fileno())))

    async def _read(self, fd: int) -> None:
        try:
            sock = self._sock = socket.socket(fileno=fd)
            reader, self.writer = await asyncio.open_unix_connection(sock=sock)
            while True:
                (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
                seq, ok, value = pickle.loads(await reader.readexactly(size))
                if seq == READY:
                    self.ready = True
                    continue
                future, _sent = self.pending.pop(seq, (None, 0.0))
                if future is not None and not future.done():
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(Unavailable(value))
        except Exception as exc:  # noqa: BLE001 - the pipe closed (or worse): replace the worker
            if not self.pool.closing:
                log.error("%s worker %s stopped (%s); its work runs in the service",
                          self.pool.name, self.slot, type(exc).__name__)  # fmt: skip
        finally:
            self.ready = False
            for future, _sent in self.pending.values():
                if not future.done():
                    future.set_exception(Unavailable(f"the {self.pool.name} worker stopped"))
            self.pending.clear()
            if self.writer is not None:
                self.writer.close()
            self._conn.close()
            self.pool.stopped(self)

    def send(self, seq: int | None, message: Any) -> None:
        assert self.writer is not None
        self.writer.write(_frame((seq, message)))

    def overdue(self, now: float) -> bool:
        """A call waited longer than the pool's timeout."""
        return any(now - sent > self.pool.timeout_s for _f, sent in self.pending.values())

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


class WorkerPool:
    """``workers`` processes running ``target`` for the event loop it is created on (see the
    module docstring)."""

    #: what the processes are called (``<name>-<slot>``) and the logs say
    name = "worker"
    #: a call not answered by then is the caller's to do, and its worker is replaced (s)
    timeout_s = 10.0

    def __init__(self, target: Target, blob: dict[str, Any], workers: int):
        self.target, self.blob = target, blob
        self.loop = asyncio.get_running_loop()
        self.closing = False
        #: calls the workers answered
        self.answered = 0
        self._seq = itertools.count()
        self.workers = [_Worker(self, slot) for slot in range(workers)]
        self._watch = self.loop.call_later(1.0, self._watchdog)

    @property
    def alive(self) -> int:
        """Workers ready to answer."""
        return sum(w.ready for w in self.workers)

    async def call(self, message: Any) -> Any:
        """The answer of the least busy ready worker to ``message``.

        Raises:
            Unavailable: no worker could answer it (see the module docstring).
        """
        worker = None
        for candidate in self.workers:
            if candidate.ready and (worker is None or len(candidate.pending) < len(worker.pending)):
                worker = candidate
        if worker is None:
            raise Unavailable(f"no {self.name} worker is ready")
        seq = next(self._seq)
        future: asyncio.Future[Any] = self.loop.create_future()
        try:
            worker.send(seq, message)
        except Exception as exc:  # noqa: BLE001 - a pipe closing under us
            raise Unavailable(f"the {self.name} worker's pipe is closing") from exc
        worker.pending[seq] = (future, time.monotonic())
        answer = await future
        self.answered += 1
        return answer

    def tell(self, message: Any) -> None:
        """Send ``message`` to every worker, which handles it before anything sent later and
        answers nothing."""
        for worker in self.workers:
            if worker.writer is not None:
                try:
                    worker.send(None, message)
                except Exception:  # noqa: BLE001 - it is stopping: its calls come back here
                    log.warning("%s worker %s missed %r", self.name, worker.slot, message)

    def _watchdog(self) -> None:
        """Kill a worker that left a call unanswered past the timeout (its pipe closes, its
        calls fail over to their callers, and it is replaced)."""
        if self.closing:
            return
        now = time.monotonic()
        for worker in self.workers:
            if worker.process.is_alive() and worker.overdue(now):
                log.error("%s worker %s did not answer in %s s: replacing it",
                          self.name, worker.slot, self.timeout_s)  # fmt: skip
                worker.process.kill()
        self._watch = self.loop.call_later(1.0, self._watchdog)

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
        """Stop the workers (calls still waiting come back to their callers)."""
        self.closing = True
        self._watch.cancel()
        for worker in self.workers:
            worker.hang_up()
        for worker in self.workers:
            worker.join()


def serve(conn: Any, handle: Callable[[Any], Any]) -> None:
    """A synchronous worker's loop: say it is ready, then answer each message with
    ``handle(message)`` in order (a message sent by :meth:`WorkerPool.tell` is handled and
    not answered), until the pipe closes. A pool that hung up (the service stopping, even
    while this worker was still starting) ends the loop quietly: nobody is left to answer."""
    try:
        conn.send_bytes(pickle.dumps((READY, True, None)))
        while True:
            try:
                seq, message = pickle.loads(conn.recv_bytes())
            except EOFError:
                return
            try:
                answer: tuple[int, bool, Any] = (seq, True, handle(message))
            except Exception as exc:  # noqa: BLE001 - the caller does it again, and raises
                answer = (seq, False, f"{type(exc).__name__}: {exc}")
            if seq is not None:
                conn.send_bytes(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
    except OSError:  # the pipe broke (BrokenPipeError, ConnectionResetError...)
        return
