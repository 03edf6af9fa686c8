"""The loop's batches of writes for worker threads (PostgreSQL's claims and outcomes): one batch
of a kind runs at a time; what comes meanwhile waits for it and goes together in the next, at
most ``max_batch`` a batch; writes of no kind and of other kinds do not wait."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts_engine.config import Settings
from scripts_engine.db.session import LoopBatcher, open_database


@dataclass
class Log:
    batches: list[list[str]] = field(default_factory=list)
    #: set to let the batch of a kind under way finish
    go: dict[Hashable, threading.Event] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    kind: str
    name: str
    log: Log

    @property
    def batch_key(self) -> str:
        return self.kind

    def __call__(self, conn: Any) -> str:
        return self.together(conn, [self])[0]

    @staticmethod
    def together(conn: Any, batch: Sequence[Job]) -> list[str]:
        log = batch[0].log
        log.batches.append([job.name for job in batch])
        assert log.go[batch[0].kind].wait(10)
        return [f"done {job.name}" for job in batch]


@dataclass(frozen=True)
class Plain:
    name: str

    def __call__(self, conn: Any) -> str:
        return f"done {self.name}"


def test_one_batch_of_a_kind_at_a_time(tmp_path: Path) -> None:
    db = open_database(Settings(state_dir=tmp_path))
    log = Log(go={"claim": threading.Event(), "outcome": threading.Event()})
    log.go["outcome"].set()

    async def main() -> None:
        batcher = LoopBatcher(db, asyncio.get_running_loop(), lambda fn: fn(None))
        batcher.max_batch = 3
        first = [batcher.submit(Job("claim", f"a{i}", log)) for i in range(2)]
        for _ in range(2000):  # until the first batch is under way in a thread
            if log.batches == [["a0", "a1"]]:
                break
            await asyncio.sleep(0.005)
        assert log.batches == [["a0", "a1"]]
        later = [batcher.submit(Job("claim", f"b{i}", log)) for i in range(5)]
        other = batcher.submit(Job("outcome", "o", log))
        plain = batcher.submit(Plain("p"))
        # neither another kind nor a write of no kind waits for the claims
        assert await asyncio.wait_for(asyncio.gather(other, plain), 10) == ["done o", "done p"]
        await asyncio.sleep(0.05)
        assert not any(f.done() for f in first + later)
        assert log.batches == [["a0", "a1"], ["o"]]
        log.go["claim"].set()
        got = await asyncio.wait_for(asyncio.gather(*first, *later), 10)
        assert got == [f"done {n}" for n in ("a0", "a1", "b0", "b1", "b2", "b3", "b4")]
        # those that waited went together, three at most a batch, in the order they came
        assert log.batches == [["a0", "a1"], ["o"], ["b0", "b1", "b2"], ["b3", "b4"]]

    try:
        asyncio.run(main())
    finally:
        db.dispose()
