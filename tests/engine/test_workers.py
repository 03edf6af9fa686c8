"""A worker process's loop (scripts_engine.workers.serve): answers in order, and ends
quietly when its pool hangs up."""

from __future__ import annotations

import multiprocessing
import pickle
import threading
from typing import Any

from scripts_engine.workers import READY, serve


def test_a_worker_whose_pool_hung_up_before_it_was_ready_ends_quietly() -> None:
    """Stopping the service while a worker was still starting printed the worker's stack
    trace (a broken pipe on its READY message) on the operator's terminal."""
    ours, theirs = multiprocessing.Pipe()
    ours.close()
    serve(theirs, lambda message: message)  # returns, no BrokenPipeError


def test_a_worker_answers_in_order_until_the_pipe_closes() -> None:
    def handle(message: Any) -> Any:
        if message == "boom":
            raise ValueError("no")
        return message * 2

    ours, theirs = multiprocessing.Pipe()
    for seq, message in ((1, 21), (2, "boom"), (None, 5), (3, "ab")):
        ours.send_bytes(pickle.dumps((seq, message)))
    worker = threading.Thread(target=serve, args=(theirs, handle))
    worker.start()
    # READY, then the answers (the message sent with no sequence number is not answered)
    got = [pickle.loads(ours.recv_bytes()) for _ in range(4)]
    ours.close()
    worker.join(5)
    assert not worker.is_alive()
    assert got == [(READY, True, None), (1, True, 42), (2, False, "ValueError: no"),
                   (3, True, "abab")]  # fmt: skip
