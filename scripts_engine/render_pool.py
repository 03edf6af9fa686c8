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
render), the same code (:func:`render_json`). A worker handles its messages in order.

The pool never stands between a request and its answer:

- until a worker has started (building its renderer takes a second or two) and after one has
  died, the loop renders in-process, as it did before the pool;
- a render that fails in a worker (a broken template, a content rule) is rendered again
  in-process, so the error the caller gets is the one the service's own renderer raises;
- a worker that dies fails its queued renders over to the loop, and is started again; so
  does one that does not answer a render within :attr:`RenderPool.timeout_s`
  (:mod:`scripts_engine.workers` keeps the processes).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any, NamedTuple

from scripts_engine.config import Settings
from scripts_engine.render import Renderer
from scripts_engine.workers import Unavailable, WorkerPool, serve


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


class RenderPool(WorkerPool):
    """``workers`` render processes for the service's event loop (see the module docstring).
    Create it on the loop that will use it."""

    name = "render"
    #: a render takes well under a millisecond, and the renderer's own limits stop a runaway
    #: one
    timeout_s = 10.0

    def __init__(self, settings: Settings, workers: int):
        super().__init__(_serve, settings.model_dump(mode="json"), workers)

    async def render(self, args: RenderArgs) -> bytes | None:
        """The script's JSON from the least busy ready worker; None when none can take it or it
        failed there (the caller then renders in-process)."""
        try:
            answer: bytes = await self.call(("render", args._replace(record=dict(args.record))))
        except Unavailable:
            return None
        return answer

    def refresh(self) -> None:
        """Each worker reloads its templates before its next render (a live change)."""
        self.tell(("refresh", None))


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
    """A worker's life: build the renderer, then answer renders in order until the pipe
    closes."""
    renderer = _renderer(blob)
    renderer.refresh(force=True)

    def handle(message: tuple[str, Any]) -> bytes | None:
        kind, args = message
        if kind == "refresh":
            renderer.refresh(force=True)
            return None
        return render_json(renderer, args)

    serve(conn, handle)
