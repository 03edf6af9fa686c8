"""Database engines and sessions: SQLite (WAL, busy timeout) by default, PostgreSQL by URL.

SQLite allows one writer at a time. A transaction that reads and then writes (the claim: check
the frequency cap, then insert the attempt) must take the write lock when it *begins*, or a
concurrent writer makes it fail with ``SQLITE_BUSY`` instead of waiting. So :class:`Database`
has two session factories: ``write`` begins ``IMMEDIATE`` transactions (writers queue on the
busy timeout), ``read`` begins deferred ones (readers never wait for writers under WAL). On
PostgreSQL both are the same engine; row locks (``FOR UPDATE``) order concurrent writers.

On SQLite the writes of one process go through one :class:`Writer` thread that commits in
groups: it takes every write waiting in its queue (up to ``max_batch``), runs each inside its
own savepoint of one ``IMMEDIATE`` transaction and commits once. Each write sees the ones
before it, a write that raises rolls back to its savepoint (it wrote nothing) and gets its
exception, and nobody gets an answer before the commit that made it durable. SQLite has one
writer anyway; grouping shares its cost (BEGIN, COMMIT and the fsync of ``synchronous=FULL``)
and spares the waiting threads the lock hand-off. A Core write (:func:`write_core`: it runs
SQLAlchemy Core statements on a Connection and leaves the ORM's unit of work alone: the claim,
the outcome) gets a plain ``SAVEPOINT`` on the driver's connection instead of the Session's
nested transaction, which costs several times more; an ORM write needs the Session's, so that
its pending objects are discarded with it. On PostgreSQL a Core write runs on a Connection of
the engine, with no Session at all.
"""

from __future__ import annotations

import asyncio
import functools
import json
import queue
import random
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import orjson
from sqlalchemy import Connection, Engine, Table, create_engine, event, text
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from scripts_engine.config import Settings
from scripts_engine.db import prepared
from scripts_engine.db.errors import Busy

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


def table(model: Any) -> Table:
    """The Core table of an ORM model (typed, for Core statements)."""
    return cast(Table, model.__table__)


def database_url(settings: Settings) -> str:
    """The settings' URL, or the SQLite file in the state folder."""
    if settings.database_url:
        url = settings.database_url
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return url
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(settings.state_dir) / 'engine.db'}"


def load_json(text_: str | bytes) -> Any:
    """A JSON column's value: parsed by orjson (a customer's record three times faster than
    ``json.loads``), or by ``json.loads`` for what orjson refuses and Python's own writer can
    produce (``NaN``, integers beyond 64 bits)."""
    try:
        return orjson.loads(text_)
    except orjson.JSONDecodeError:
        return json.loads(text_)


#: SQLite's page cache a writing connection, and a reading one, in KiB (pages are allocated
#: as they are used). A write connection's pages are the claims' and outcomes' working set
#: (the calls and their indexes, the idempotency keys' index, written at random places); the
#: read pool holds many more connections, each doing a short read.
CACHE_KIB, READ_CACHE_KIB = 64 * 1024, 8 * 1024


def _sqlite_engine(url: str, *, immediate: bool, busy_ms: int, pool_size: int) -> Engine:
    engine = create_engine(
        url,
        json_deserializer=load_json,
        connect_args={"check_same_thread": False, "timeout": busy_ms / 1000},
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=busy_ms / 1000,
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
        cur.execute("PRAGMA foreign_keys=ON")
        # FULL, not NORMAL: under WAL, NORMAL survives an application crash but an OS crash or
        # a power cut may lose the last commits, and a dialler that got 201 for an opt-out
        # never sends it again. FULL costs an fsync a commit (3.4-3.8 ms on this machine's
        # disk, against 0.03-0.06 ms), shared by every write of a group commit; bench_api's
        # claim-and-outcome cycle measured 170 req/s with FULL, 206 with NORMAL (one run each).
        cur.execute("PRAGMA synchronous=FULL")
        # SQLite's default page cache is 2 MiB a connection: less than the pages one group of
        # claims and outcomes touches (each call's 7 kB payload alone is two pages), so the
        # loop's connection re-read pages from the OS on every group
        cur.execute(f"PRAGMA cache_size=-{CACHE_KIB if immediate else READ_CACHE_KIB}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@dataclass
class Database:
    """The engines and session factories of one database."""

    url: str
    write_engine: Engine
    read_engine: Engine
    write: sessionmaker[Session]
    read: sessionmaker[Session]
    #: SQLite: writers of this process queue here, not in SQLite's busy handler (which sleeps
    #: in steps of up to 100 ms); other processes still wait on the busy timeout
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    #: SQLite: the group-commit thread (started on first use)
    writer: Writer | None = None
    #: SQLite: held by whoever has the write transaction of this process's group commits (the
    #: :class:`Writer` thread blocks on it; a :class:`LoopWriter` only tries it)
    write_turn: threading.Lock = field(default_factory=threading.Lock)
    #: SQLite: the group commits run on event loops, one per loop (see :class:`LoopWriter`)
    loop_writers: dict[asyncio.AbstractEventLoop, LoopWriter] = field(default_factory=dict)
    #: PostgreSQL: the batches of the writes of coroutines, one per loop (:class:`LoopBatcher`)
    loop_batchers: dict[asyncio.AbstractEventLoop, LoopBatcher] = field(default_factory=dict)
    #: the batches of the reads of coroutines, one per loop (:func:`read_core_async`)
    loop_read_batchers: dict[asyncio.AbstractEventLoop, LoopBatcher] = field(default_factory=dict)
    #: SQLite: the read connection each event loop keeps for :meth:`one_read`
    loop_reads: dict[asyncio.AbstractEventLoop, Connection] = field(default_factory=dict)

    @functools.cached_property
    def is_sqlite(self) -> bool:
        return self.write_engine.dialect.name == "sqlite"

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self.one_read() as conn:
            conn.execute(text("SELECT 1"))

    @contextmanager
    def one_read(self) -> Iterator[Connection]:
        """A connection for a single read statement: on PostgreSQL in autocommit, so the
        statement is one round trip, without a BEGIN before it and a ROLLBACK when the
        connection goes back to the pool (a statement is its own snapshot anyway).

        On SQLite, on an event loop's thread, the loop's own read connection, kept open: a
        checkout from SQLAlchemy's pool and the check-in's rollback cost as much as reading
        a customer (a render reads one). Its driver connection is in autocommit (no BEGIN
        until SQLAlchemy sends one), so between reads it holds no snapshot; a transaction a
        read began is rolled back at the end, and after an error the connection is closed
        (the next read opens another)."""
        if self.is_sqlite:
            try:
                loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                with self._loop_read(loop) as conn:
                    yield conn
                return
        with self.read_engine.connect() as conn:
            if not self.is_sqlite:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    @contextmanager
    def _loop_read(self, loop: asyncio.AbstractEventLoop) -> Iterator[Connection]:
        conn = self.loop_reads.get(loop)
        if conn is None:
            conn = self.loop_reads[loop] = self.read_engine.connect()
        try:
            yield conn
        except BaseException:
            del self.loop_reads[loop]
            conn.close()
            raise
        if conn.in_transaction():
            conn.rollback()

    def read_core(self, fn: Callable[[Connection], T]) -> T:
        """``fn``'s answer, run on a :meth:`one_read` connection."""
        with self.one_read() as conn:
            return fn(conn)

    def dispose(self) -> None:
        for conn in list(self.loop_reads.values()):
            conn.close()
        self.loop_reads.clear()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        for loop_writer in list(self.loop_writers.values()):
            loop_writer.close()
        self.loop_writers.clear()
        for batchers in (self.loop_batchers, self.loop_read_batchers):
            for batcher in list(batchers.values()):
                batcher.close()
            batchers.clear()
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()


def open_database(settings: Settings, *, url: str | None = None) -> Database:
    """Engines and sessions for the settings' database (nothing is created or migrated)."""
    url = url or database_url(settings)
    busy, pool = settings.db_busy_timeout_ms, settings.db_pool_size
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        write = _sqlite_engine(url, immediate=True, busy_ms=busy, pool_size=pool)
        read = _sqlite_engine(url, immediate=False, busy_ms=busy, pool_size=pool)
    else:
        write = read = _postgres_engine(url, pool_size=pool, timeout_s=busy / 1000)
    return Database(
        url=url,
        write_engine=write,
        read_engine=read,
        write=sessionmaker(write, expire_on_commit=False),
        read=sessionmaker(read, expire_on_commit=False),
    )


#: a pooled PostgreSQL connection idle for longer than this is pinged before it is used
IDLE_PING_S = 5.0


def _postgres_engine(url: str, *, pool_size: int, timeout_s: float) -> Engine:
    """A pooled engine that pings a connection only when it comes back from the pool after
    :data:`IDLE_PING_S` or more (one that fails is replaced before anyone uses it).

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: on a busy service that is one of
    the four or five round trips of a one-row read. A connection the service used a moment ago
    was alive then; if the server went away since, the statement fails, SQLAlchemy
    invalidates the whole pool, and the next checkouts connect afresh.
    """
    # psycopg's own automatic preparing is off: after a ROLLBACK it runs DEALLOCATE ALL, which
    # would drop the statements db/prepared.py keeps prepared on each connection
    engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size,
                           pool_timeout=timeout_s, connect_args={"prepare_threshold": None},
                           json_deserializer=load_json)  # fmt: skip

    prepared.watch(engine)

    @event.listens_for(engine, "checkin")
    def _idle_from(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_from"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("idle_from")
        if since is None or time.monotonic() - since < IDLE_PING_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"a pooled connection is gone: {exc}") from exc

    return engine


def _retryable(exc: DBAPIError) -> bool:
    code = getattr(exc.orig, "sqlstate", None)
    text_ = str(exc.orig).lower()
    # 26000: a statement db/prepared.py kept prepared is gone (it prepares it again)
    return code in ("40001", "40P01", "26000") or "locked" in text_ or "deadlock" in text_


#: a write for the group commit: the function, its future, and whether it is Core-only
_Job = tuple[Callable[[Session], Any], Future[Any], bool]


class Writer:
    """The SQLite group-commit thread of one :class:`Database` (see the module docstring)."""

    def __init__(self, db: Database, *, max_batch: int = 64, retries: int = 4):
        self.db, self.max_batch, self.retries = db, max_batch, retries
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="db-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[Session], T], *, core: bool = False) -> Future[T]:
        """Queue ``fn`` for the next group commit (``core``: see the module docstring)."""
        future: Future[T] = Future()
        self._queue.put((fn, future, core))
        return future

    @property
    def on_writer_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(30)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            live = [job for job in batch if job[1].set_running_or_notify_cancel()]
            if live:
                self._run(live)
            if stop:
                return

    def _run(self, batch: list[_Job]) -> None:
        with self.db.write_turn:
            self._run_turn(batch)

    def _run_turn(self, batch: list[_Job]) -> None:
        for attempt in range(self.retries + 1):
            outcomes: list[tuple[bool, Any]] = []
            try:
                with self.db.write() as session, session.begin():
                    for fn, _future, core in batch:
                        try:
                            outcomes.append((True, _savepoint(session, fn, core=core)))
                        except Exception as exc:  # noqa: BLE001 - that write alone fails
                            outcomes.append((False, exc))
            except OperationalError as exc:
                if _retryable(exc) and attempt < self.retries:
                    time.sleep(0.01 * 2**attempt * (1 + random.random()))
                    continue
                error: Exception = Busy("the database is busy; retry shortly")
                if not _retryable(exc):
                    error = exc
                for _fn, future, _core in batch:
                    future.set_exception(error)
                return
            except BaseException as exc:  # noqa: BLE001 - the commit failed: nothing was written
                for _fn, future, _core in batch:
                    future.set_exception(exc)
                return
            for (_fn, future, _core), (ok, value) in zip(batch, outcomes, strict=True):
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
            return


def _savepoint(session: Session, fn: Callable[[Session], T], *, core: bool) -> T:
    """``fn(session)`` inside a savepoint: the Session's (ORM writes) or the driver's."""
    if not core:
        with session.begin_nested():
            return fn(session)
    return _raw_savepoint(session.connection(), partial(fn, session))


def _raw_savepoint(conn: Connection, run: Callable[[], T]) -> T:
    """``run()`` inside a plain ``SAVEPOINT`` on the driver's connection of ``conn``."""
    raw = conn.connection.dbapi_connection
    assert raw is not None
    raw.execute("SAVEPOINT core_write")
    try:
        value = run()
    except BaseException:
        raw.execute("ROLLBACK TO SAVEPOINT core_write")
        raw.execute("RELEASE SAVEPOINT core_write")
        raise
    raw.execute("RELEASE SAVEPOINT core_write")
    return value


_writer_lock = threading.Lock()


def _writer(db: Database) -> Writer:
    if db.writer is None:
        with _writer_lock:
            if db.writer is None:
                db.writer = Writer(db)
    return db.writer


def write_transaction(db: Database, fn: Callable[[Session], T], *, retries: int = 4) -> T:
    """Run ``fn(session)`` in one write transaction, committed if it returns.

    On SQLite the write joins the process's group commit (:class:`Writer`); ``fn`` may then
    share its transaction with other writes, each in its own savepoint. A lock timeout
    (SQLite) or a deadlock or serialisation failure (PostgreSQL) rolls the whole transaction
    back and runs it again, with backoff; after ``retries`` the caller gets
    :class:`~scripts_engine.db.errors.Busy` (nothing was written).
    """
    if db.is_sqlite:
        writer = _writer(db)
        if not writer.on_writer_thread:
            return writer.submit(fn).result()
    return _retried(partial(_in_session, db, fn), retries)


def write_core(db: Database, fn: Callable[[Connection], T], *, retries: int = 4) -> T:
    """:func:`write_transaction` for a write made of Core statements only (the claim, the
    outcome): ``fn`` gets the transaction's Connection. On SQLite it joins the group commit in
    a plain ``SAVEPOINT`` (see the module docstring); on PostgreSQL it runs on a Connection
    of the engine, without a Session (which costs some 70 us of CPU a transaction)."""
    if not db.is_sqlite:
        return _retried(partial(_on_connection, db, fn), retries)
    writer = _writer(db)
    if not writer.on_writer_thread:
        return writer.submit(partial(_of_session, fn), core=True).result()
    return _retried(partial(_in_session, db, partial(_of_session, fn)), retries)


def _in_session(db: Database, fn: Callable[[Session], T]) -> T:
    with db.write_lock if db.is_sqlite else nullcontext(), db.write() as session:
        with session.begin():
            return fn(session)


def _on_connection(db: Database, fn: Callable[[Connection], T]) -> T:
    # BEGIN with the first statement, COMMIT with the last writes (prepared.transaction)
    with db.write_engine.begin() as conn, prepared.transaction(conn):
        return fn(conn)


def _of_session(fn: Callable[[Connection], T], session: Session) -> T:
    return fn(session.connection())


def _retried(run: Callable[[], T], retries: int) -> T:
    """``run()``, run again with backoff while it fails on a lock, a deadlock, a serialisation
    failure or a lost prepared statement; then :class:`Busy`."""
    for attempt in range(retries + 1):
        try:
            return run()
        except (OperationalError, ProgrammingError) as exc:
            if not _retryable(exc):
                raise
            if attempt == retries:
                raise Busy("the database is busy; retry shortly") from exc
            time.sleep(0.01 * 2**attempt * (1 + random.random()))
    raise AssertionError("unreachable")


async def write_async(db: Database, fn: Callable[[Session], T]) -> T:
    """:func:`write_transaction` for a coroutine: on SQLite it waits for the group commit
    without holding a thread; elsewhere it runs in the loop's default executor."""
    if db.is_sqlite:
        return await asyncio.wrap_future(_writer(db).submit(fn))
    return await asyncio.get_running_loop().run_in_executor(None, write_transaction, db, fn)


async def write_core_async(db: Database, fn: Callable[[Connection], T]) -> T:
    """:func:`write_core` for a coroutine: on SQLite it joins the group commit of the running
    loop (:class:`LoopWriter`: ``fn`` then runs on the loop's thread, and must use only the
    Connection it is given); elsewhere it runs in the loop's default executor."""
    if db.is_sqlite:
        loop = asyncio.get_running_loop()
        loop_writer = db.loop_writers.get(loop)
        if loop_writer is None:
            loop_writer = db.loop_writers[loop] = LoopWriter(db, loop)
        return await loop_writer.submit(fn)
    loop = asyncio.get_running_loop()
    batcher = db.loop_batchers.get(loop)
    if batcher is None:
        batcher = db.loop_batchers[loop] = LoopBatcher(db, loop, partial(write_core, db))
    return await batcher.submit(fn)


async def read_core_async(db: Database, fn: Callable[[Connection], T]) -> T:
    """``fn``'s answer on a :meth:`Database.one_read` connection, for a coroutine, with the
    other reads the loop's coroutines queue in the same turn (:class:`LoopBatcher`: reads of
    one kind, a :class:`Batchable`, as one statement): on SQLite on the loop's thread (a read
    of local pages costs less than a hand-off to a thread), elsewhere in the loop's default
    executor."""
    loop = asyncio.get_running_loop()
    batcher = db.loop_read_batchers.get(loop)
    if batcher is None:
        batcher = db.loop_read_batchers[loop] = LoopBatcher(
            db, loop, db.read_core, on_loop=db.is_sqlite
        )
    return await batcher.submit(fn)


class Batchable(Protocol[T_co]):
    """A Core write that can run together with others of its kind: a :class:`LoopWriter`
    (SQLite) or a :class:`LoopBatcher` (PostgreSQL) runs the writes queued together with the
    same ``batch_key`` as one call of ``together`` (which returns their answers in order), in
    one savepoint or transaction; if that raises, it runs each alone
    (:class:`~scripts_engine.claims.Claim`: the claims of one campaign;
    :class:`~scripts_engine.outcomes.Report`: outcome reports). A read can be one too
    (:func:`read_core_async`; :class:`~scripts_engine.db.repository.CustomerForRender`)."""

    @property
    def batch_key(self) -> Hashable: ...

    def __call__(self, conn: Connection, /) -> T_co: ...

    def together(self, conn: Connection, batch: Sequence[Any], /) -> Sequence[T_co]: ...


#: a Core write queued on a :class:`LoopWriter`: the function and the future of its answer
_LoopJob = tuple[Callable[[Connection], Any], "asyncio.Future[Any]"]


class LoopWriter:
    """The SQLite group commit of the Core writes that coroutines submit (the claim, the
    outcome), run on the event loop's own thread.

    Through the :class:`Writer` thread, every statement of such a write passes the
    interpreter lock from that thread to the loop and back (SQLite's driver lets go of it in
    each call). Under a dialler's load both threads want it all the time, and the hand-offs
    cost more CPU than the statements: the claim-and-outcome cycle took 1,045-1,118 us of
    process CPU a request that way, and 866-952 us with the statements run on the loop
    (bench_api_cpu's set-up, three interleaved pairs; see "Figures" in README.md).

    The writes submitted during one turn of the loop run at the start of the next, together:
    each in its own ``SAVEPOINT`` of one ``IMMEDIATE`` transaction, as in the Writer thread's
    group commit (a write that raises wrote nothing and gets its exception; nobody gets an
    answer before the commit). Writes of one kind (:class:`Batchable`: the claims of one
    campaign) run as one call, which shares their statements (a claim cost 400-420 us of CPU
    alone and 210-230 us in a batch of 16, about the size a dialler's 50 clients make). The
    group stops taking writes after :attr:`budget_s`, so a large claim never holds the loop
    for long. Only the ``COMMIT`` (the fsync of
    ``synchronous=FULL``) runs off the loop, on a thread of its own; writes submitted
    meanwhile form the next group.

    The loop never waits for a lock. Its connection has a busy timeout of 0, and the group
    needs the process's write turn (:attr:`Database.write_turn`) without waiting for it. When
    the Writer thread has the turn, or another process holds SQLite's write lock, the group
    goes to the Writer thread instead, which waits and retries as it always did.
    """

    #: how long a group may run its writes on the loop before it commits (the rest wait)
    budget_s = 0.01

    def __init__(self, db: Database, loop: asyncio.AbstractEventLoop, *, max_batch: int = 64):
        self.db, self.loop, self.max_batch = db, loop, max_batch
        self._queue: list[_LoopJob] = []
        #: a group is due on the loop, or its commit is under way
        self._busy = False
        self._engine = _sqlite_engine(db.url, immediate=True, busy_ms=0, pool_size=1)
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="db-commit")

    def submit(self, fn: Callable[[Connection], T]) -> asyncio.Future[T]:
        """Queue ``fn`` for the next group; its answer (or exception) comes in the future."""
        future: asyncio.Future[T] = self.loop.create_future()
        self._queue.append((fn, future))
        if not self._busy:
            self._busy = True
            self.loop.call_soon(self._group)
        return future

    def close(self) -> None:
        """Stop (a commit under way finishes); writes still queued fail."""
        self._committer.shutdown(wait=True)
        for _fn, future in self._queue:
            if not future.done():
                future.set_exception(Busy("the database is closing; retry shortly"))
        self._queue.clear()
        self._engine.dispose()

    def _next(self) -> None:
        if self._queue:
            self.loop.call_soon(self._group)
        else:
            self._busy = False

    def _group(self) -> None:
        jobs = [job for job in self._queue[: self.max_batch] if not job[1].done()]
        del self._queue[: self.max_batch]
        if not jobs:
            self._next()
            return
        if not self.db.write_turn.acquire(blocking=False):
            self._to_thread(jobs)
            self._next()
            return
        try:
            conn = self._engine.connect()
            try:
                transaction = conn.begin()
            except BaseException:
                conn.close()
                raise
        except OperationalError:  # another process holds SQLite's write lock, or worse
            self.db.write_turn.release()
            self._to_thread(jobs)  # it waits, retries, and answers what stays wrong
            self._next()
            return
        except BaseException as exc:  # noqa: BLE001 - every write waiting gets the error
            self.db.write_turn.release()
            self._fail(jobs, exc)
            return
        done: list[tuple[_LoopJob, bool, Any]] = []
        deadline = time.perf_counter() + self.budget_s
        units = _units(jobs)
        for at, unit in enumerate(units):
            if at and time.perf_counter() > deadline:
                self._queue[:0] = [job for later in units[at:] for job in later]  # next group
                break
            done.extend(_run_unit(conn, unit))
        try:
            committing = self.loop.run_in_executor(
                self._committer, _commit, conn, transaction, self.db.write_turn
            )
        except BaseException as exc:  # noqa: BLE001 - closed: nothing is written
            with suppress(Exception):
                transaction.rollback()
            conn.close()
            self.db.write_turn.release()
            self._fail([job for job, _ok, _value in done], exc)
            return
        committing.add_done_callback(partial(self._committed, done))

    def _fail(self, jobs: list[_LoopJob], error: BaseException) -> None:
        for _fn, future in jobs:
            _settle(future, False, error)
        self._next()

    def _committed(self, done: list[tuple[_LoopJob, bool, Any]], committing: Any) -> None:
        if committing.cancelled():  # the loop is closing: the commit's outcome is unknown
            self._fail([job for job, _ok, _value in done], Busy("the database is closing"))
            return
        error = committing.exception()
        if error is None:
            for (_fn, future), ok, value in done:
                _settle(future, ok, value)
        elif isinstance(error, OperationalError) and _retryable(error):
            self._to_thread([job for job, _ok, _value in done])  # nothing was written
        else:
            self._fail([job for job, _ok, _value in done], error)
            return
        self._next()

    def _to_thread(self, jobs: list[_LoopJob]) -> None:
        """The jobs, through the Writer thread's group commit."""
        writer = _writer(self.db)
        for fn, future in jobs:
            answer = writer.submit(partial(_of_session, fn), core=True)
            answer.add_done_callback(partial(self._answer, future))

    def _answer(self, future: asyncio.Future[Any], answer: Future[Any]) -> None:
        error = answer.exception()
        ok, value = (True, answer.result()) if error is None else (False, error)
        self.loop.call_soon_threadsafe(_settle, future, ok, value)


class LoopBatcher:
    """The Core writes (PostgreSQL) or reads that coroutines submit during one turn of the
    loop, run in the loop's default executor (or, ``on_loop``, on the loop's thread at the end
    of the turn: SQLite's reads), each by ``run`` (:func:`write_core`: in a transaction of its
    own; :meth:`Database.read_core`: on a read connection), except that those of one kind
    (:class:`Batchable`, with the same ``batch_key``) run together, as one. If that raises,
    each runs alone and gets its own answer.

    Every run costs a hand-off to a worker thread and back and, on PostgreSQL, round trips;
    a batch of claims also shares its statements (:meth:`~scripts_engine.claims.Claim.together`),
    a batch of reads its statement. So one batch of a kind runs at a time: those of its kind
    that come meanwhile wait for it, and go together in the next (at most :attr:`max_batch`
    a batch), as a group commit. Under a dialler's load the batches were twice as large, and
    each ran faster: run as soon as they came, the claims of one campaign ran side by side,
    each scan skipping the calls the others had locked, and each waited for its round trips
    among the others' threads (``bench_api``'s cycle on PostgreSQL, two interleaved pairs:
    1,055-1,395 requests/s and claims 7.6-7.9 a batch, against 1,645-2,335 and 16.3-16.9).
    Two batches of a kind at a time were worse than one (1,291-1,840 against 1,579-2,226)."""

    #: the most jobs of one kind a batch takes; the rest wait for the next
    max_batch = 64

    def __init__(
        self,
        db: Database,
        loop: asyncio.AbstractEventLoop,
        run: Callable[[Callable[[Connection], Any]], Any],
        *,
        on_loop: bool = False,
    ):
        self.db, self.loop, self.run, self.on_loop = db, loop, run, on_loop
        self._queue: list[_LoopJob] = []
        #: the batch keys with a batch in a worker thread -> the jobs of that kind waiting
        self._running: dict[Hashable, list[_LoopJob]] = {}

    def submit(self, fn: Callable[[Connection], T]) -> asyncio.Future[T]:
        """Queue ``fn`` for this turn's batches; its answer (or exception) comes in the
        future."""
        future: asyncio.Future[T] = self.loop.create_future()
        if not self._queue:
            self.loop.call_soon(self._flush)
        self._queue.append((fn, future))
        return future

    def close(self) -> None:
        """Writes still queued fail (those handed to a thread finish)."""
        waiting = [job for jobs in self._running.values() for job in jobs]
        for _fn, future in [*self._queue, *waiting]:
            _settle(future, False, Busy("the database is closing; retry shortly"))
        self._queue.clear()
        self._running.clear()

    def _flush(self) -> None:
        jobs = [job for job in self._queue if not job[1].done()]
        self._queue = []
        self._dispatch(jobs)

    def _dispatch(self, jobs: list[_LoopJob]) -> None:
        for unit in _units(jobs):
            if self.on_loop:  # SQLite's reads: local pages, cheaper than a hop to a thread
                fns = [fn for fn, _f in unit]
                for (_fn, future), (ok, value) in zip(
                    unit, _batch_or_each(fns, self.run), strict=True
                ):
                    _settle(future, ok, value)
                continue
            key = getattr(unit[0][0], "batch_key", None)
            if key is not None:
                if key in self._running:  # it waits for the batch of its kind under way
                    self._running[key] += unit
                    continue
                unit, self._running[key] = unit[: self.max_batch], unit[self.max_batch :]
            try:
                answers = self.loop.run_in_executor(  # each batch or job one run
                    None, _batch_or_each, [fn for fn, _f in unit], self.run
                )
            except BaseException as exc:  # noqa: BLE001 - the loop is closing
                self._running.pop(key, None)
                for _fn, future in unit:
                    _settle(future, False, exc)
                continue
            answers.add_done_callback(partial(self._answered, key, unit))

    def _answered(
        self, key: Hashable | None, unit: list[_LoopJob], answers: asyncio.Future[Any]
    ) -> None:
        if key is not None:  # the next batch of its kind: those that waited for this one
            self._dispatch([job for job in self._running.pop(key, []) if not job[1].done()])
        if answers.cancelled() or answers.exception() is not None:
            error = Busy("the database is closing") if answers.cancelled() else answers.exception()
            for _fn, future in unit:
                _settle(future, False, error)
            return
        for (_fn, future), (ok, value) in zip(unit, answers.result(), strict=True):
            _settle(future, ok, value)


def _batch_or_each(
    fns: list[Callable[[Connection], Any]], run: Callable[[Callable[[Connection], Any]], Any]
) -> list[tuple[bool, Any]]:
    """``(ok, answer or exception)`` of each write of a unit of :func:`_units`, by ``run`` (a
    transaction or a savepoint): a batch as one run, or, if that raises (or it is a single
    write), each write in its own run, so that a write that raises alone wrote nothing and
    gets its exception."""
    if len(fns) > 1:
        with suppress(Exception):  # each alone, below, says what is wrong
            return [(True, value) for value in run(partial(_together, fns))]
    done: list[tuple[bool, Any]] = []
    for fn in fns:
        try:
            done.append((True, run(fn)))
        except Exception as exc:  # noqa: BLE001 - that write alone fails
            done.append((False, exc))
    return done


def _together(fns: list[Callable[[Connection], Any]], conn: Connection) -> Sequence[Any]:
    """The answers of writes with one ``batch_key``, run as one (:class:`Batchable`)."""
    return cast(Batchable[Any], fns[0]).together(conn, fns)


def _units(jobs: list[_LoopJob]) -> list[list[_LoopJob]]:
    """The jobs in the order they came, those with the same ``batch_key`` (see
    :class:`Batchable`) together, where the first of them came."""
    units: list[list[_LoopJob]] = []
    batches: dict[Hashable, list[_LoopJob]] = {}
    for job in jobs:
        key = getattr(job[0], "batch_key", None)
        if key is None:
            units.append([job])
        elif key in batches:
            batches[key].append(job)
        else:
            units.append(batches.setdefault(key, [job]))
    return units


def _run_unit(conn: Connection, unit: list[_LoopJob]) -> list[tuple[_LoopJob, bool, Any]]:
    """A unit of :func:`_units` on the group's connection, each batch or write in a savepoint."""
    fns = [fn for fn, _future in unit]
    answers = _batch_or_each(fns, lambda fn: _raw_savepoint(conn, partial(fn, conn)))
    return [(job, ok, value) for job, (ok, value) in zip(unit, answers, strict=True)]


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    """Give a waiting write its answer (``ok``) or exception, unless it was cancelled."""
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _commit(conn: Connection, transaction: Any, turn: threading.Lock) -> None:
    """Commit (or, if that fails, roll back) a :class:`LoopWriter`'s group, off the loop."""
    try:
        transaction.commit()
    except BaseException:
        with suppress(Exception):
            transaction.rollback()
        raise
    finally:
        conn.close()
        turn.release()
