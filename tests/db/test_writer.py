"""The SQLite group commits (the Writer thread's and the event loop's): writes that share one
transaction still succeed or fail alone, and the loop never waits for a lock."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from scripts_engine.db.models import Attempt
from scripts_engine.db.session import Database, LoopWriter, Writer, _writer, write_core_async

NOW = datetime(2026, 5, 12, 2, 0, tzinfo=UTC)


def _attempt(customer_id: str) -> dict[str, object]:
    return {"customer_id": customer_id, "call_id": "c", "at": NOW, "local_day": "2026-05-12"}


@pytest.mark.parametrize("core", [True, False], ids=["core", "orm"])
def test_a_failing_write_in_a_batch_writes_nothing(db: Database, core: bool) -> None:
    if not db.is_sqlite:
        pytest.skip("the group commit is SQLite's")
    writer = Writer(db)
    gate = threading.Event()
    try:
        blocker = writer.submit(lambda s: gate.wait(10))  # holds the writer: the rest batch up

        def failing(session: Session) -> None:
            session.connection().execute(insert(Attempt), _attempt("failed"))
            if not core:
                session.add(Attempt(**_attempt("failed-orm")))  # type: ignore[arg-type]
                session.flush()
            raise ValueError("refused after writing")

        def ok(session: Session) -> str:
            session.connection().execute(insert(Attempt), _attempt("ok"))
            return "ok"

        bad, good = writer.submit(failing, core=core), writer.submit(ok, core=core)
        gate.set()
        assert blocker.result(10) is True
        with pytest.raises(ValueError, match="refused after writing"):
            bad.result(10)
        assert good.result(10) == "ok"
    finally:
        writer.close()
    with db.read() as session:
        written = session.scalars(select(Attempt.customer_id)).all()
    assert written == ["ok"]


def _loop_write(customer_id: str, *, fail: bool = False) -> Callable[[Connection], int]:
    def write(conn: Connection) -> int:
        conn.execute(insert(Attempt), _attempt(customer_id))
        if fail:
            raise ValueError("refused after writing")
        return threading.get_ident()

    return write


def _written(db: Database) -> list[str]:
    with db.read() as session:
        return sorted(session.scalars(select(Attempt.customer_id)).all())


def test_coroutines_writes_commit_together_on_the_loop_and_fail_alone(db: Database) -> None:
    if not db.is_sqlite:
        pytest.skip("the group commit is SQLite's")

    async def main() -> tuple[list[Any], int]:
        return await asyncio.gather(
            write_core_async(db, _loop_write("a")),
            write_core_async(db, _loop_write("failed", fail=True)),
            write_core_async(db, _loop_write("b")),
            return_exceptions=True,
        ), threading.get_ident()

    (a, failed, b), loop_thread = asyncio.run(main())
    assert isinstance(failed, ValueError)
    # the statements ran on the loop's thread: no hand-off of the interpreter lock per statement
    assert a == b == loop_thread
    assert _written(db) == ["a", "b"]


class _Batched:
    """A write that can run with others of its kind (a fake Batchable for this test): alone
    it writes its customer, together all of theirs, by one statement."""

    batch_key = "attempts"
    runs: list[list[str]] = []

    def __init__(self, customer_id: str, *, fail: bool = False):
        self.customer_id, self.fail = customer_id, fail

    def __call__(self, conn: Connection) -> str:
        return self.together(conn, [self])[0]

    @staticmethod
    def together(conn: Connection, batch: list[_Batched]) -> list[str]:
        _Batched.runs.append([w.customer_id for w in batch])
        conn.execute(insert(Attempt), [_attempt(w.customer_id) for w in batch])
        if any(w.fail for w in batch):
            raise ValueError(f"refused {[w.customer_id for w in batch if w.fail]}")
        return [f"wrote {w.customer_id}" for w in batch]


def test_writes_of_one_kind_run_together_and_alone_when_that_fails(db: Database) -> None:
    """Writes that coroutines queue with the same batch key run as one call, in order, and
    the others alone (SQLite's loop writer: in savepoints of its group commit; PostgreSQL's
    batcher: each batch a transaction); when the batch raises, each runs alone: the failing
    one gets its error and the others are written once."""

    async def main(*writes: Any) -> list[Any]:
        return await asyncio.gather(*(write_core_async(db, w) for w in writes),
                                    return_exceptions=True)  # fmt: skip

    _Batched.runs = []
    got = asyncio.run(main(_Batched("a"), _loop_write("plain"), _Batched("b"), _Batched("c")))
    assert got[0::2] == ["wrote a", "wrote b"] and got[3] == "wrote c"
    assert _Batched.runs == [["a", "b", "c"]]
    assert _written(db) == ["a", "b", "c", "plain"]
    _Batched.runs = []
    got = asyncio.run(main(_Batched("d"), _Batched("bad", fail=True), _Batched("e")))
    assert got[0] == "wrote d" and got[2] == "wrote e"
    assert isinstance(got[1], ValueError) and "bad" in str(got[1])
    assert _Batched.runs == [["d", "bad", "e"], ["d"], ["bad"], ["e"]]
    assert _written(db) == ["a", "b", "c", "d", "e", "plain"]


def test_a_write_queued_and_cancelled_writes_nothing(db: Database) -> None:
    if not db.is_sqlite:
        pytest.skip("the group commit is SQLite's")

    async def main() -> None:
        kept = asyncio.create_task(write_core_async(db, _loop_write("kept")))
        dropped = asyncio.create_task(write_core_async(db, _loop_write("dropped")))
        await asyncio.sleep(0)  # both queued, their group not run yet
        dropped.cancel()
        await kept
        with pytest.raises(asyncio.CancelledError):
            await dropped

    asyncio.run(main())
    assert _written(db) == ["kept"]


async def _ticks_while(waiting: Awaitable[Any]) -> tuple[Any, int]:
    """What ``waiting`` gives, and how often the loop ran another task meanwhile."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        return await waiting, ticks
    finally:
        task.cancel()


def test_the_loop_never_waits_for_another_process_lock(db: Database) -> None:
    """Another process holds SQLite's write lock for 0.5 s: the write waits for it through
    the group-commit thread, and the loop serves everything else meanwhile."""
    if not db.is_sqlite:
        pytest.skip("the group commit is SQLite's")
    path = db.url.split(":///", 1)[1]
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    threading.Timer(0.5, other.commit).start()
    try:
        thread_id, ticks = asyncio.run(_ticks_while(write_core_async(db, _loop_write("late"))))
    finally:
        other.close()
    assert ticks >= 20  # about 50 in 0.5 s; a loop stuck on the lock would not tick at all
    assert thread_id != threading.get_ident()  # written by the group-commit thread
    assert _written(db) == ["late"]


def test_while_the_writer_thread_has_the_turn_the_loop_hands_it_its_writes(db: Database) -> None:
    if not db.is_sqlite:
        pytest.skip("the group commit is SQLite's")
    gate, started = threading.Event(), threading.Event()
    # a long ORM write has the turn (once it runs: a busy machine may start it late)
    blocker = _writer(db).submit(lambda s: started.set() or gate.wait(10))
    assert started.wait(10)
    threading.Timer(0.5, gate.set).start()
    thread_id, ticks = asyncio.run(_ticks_while(write_core_async(db, _loop_write("queued"))))
    assert blocker.result(10) is True
    assert ticks >= 20
    assert thread_id == db.writer._thread.ident  # type: ignore[union-attr]
    assert _written(db) == ["queued"]


class _Unopenable:
    """An engine whose connections cannot be opened, with ``error``."""

    def __init__(self, error: Exception):
        self.error = error

    def connect(self) -> None:
        raise self.error

    def dispose(self) -> None:
        pass


@pytest.mark.parametrize("operational", [True, False], ids=["operational", "other"])
def test_a_loop_group_that_cannot_start_answers_every_write(
    db: Database, operational: bool
) -> None:
    """No write is left waiting: a driver error sends the group to the group-commit thread
    (which waits, retries and answers), any other error is every write's answer."""
    if not db.is_sqlite:
        pytest.skip("the group commit is SQLite's")
    error = OperationalError("BEGIN", {}, sqlite3.OperationalError("disk I/O error"))

    async def main() -> list[Any]:
        loop_writer = db.loop_writers[asyncio.get_running_loop()] = LoopWriter(
            db, asyncio.get_running_loop()
        )
        loop_writer._engine = _Unopenable(error if operational else RuntimeError("no"))  # type: ignore[assignment]
        writes = [write_core_async(db, _loop_write(c)) for c in ("x", "y")]
        return await asyncio.wait_for(asyncio.gather(*writes, return_exceptions=True), 10)

    answers = asyncio.run(main())
    if operational:
        assert all(isinstance(a, int) for a in answers)  # written by the thread
        assert _written(db) == ["x", "y"]
    else:
        assert [str(a) for a in answers] == ["no", "no"]
        assert _written(db) == []
    assert not db.write_turn.locked()
