"""Campaigns: plan customers into chunks, build each chunk into call records, resumably.

A campaign is planned once (its customers split into chunks, one row each) and built chunk by
chunk. :func:`build_chunk` is a pure, idempotent function of (campaign, chunk): it scores the
customers, keeps those with at least ``min_hits`` tag hits, puts a stable hash-chosen
``holdout_pct`` share into the control group (which gets the generic, non-persona script),
renders each script, synthesises its audio (content-addressed files: a re-run writes the same
names) and returns the call rows without touching the database. :func:`run_chunk` wraps it:
it bumps the chunk's ``attempt`` before building and commits the calls, the audio rows, the
chunk's ``done`` and the campaign's progress in one transaction only if the attempt is still
the latest, so a late duplicate never overwrites a newer result and nothing is written twice.
Resuming after a restart re-runs only chunks that are not done.

Each call row carries its audit ``record`` (DESIGN.md "Identity and audit"): tag scores, hits,
profile and policy, model version, every template version and the ``styles.yaml`` version
(``styles_version``), the context snapshot, the voice and its settings, and the audio's sha256
per format. The call row keeps a digest of both (``live_set``), so a live change is noticed
cheaply (:mod:`scripts_engine.refresh`). The gate's decisions are added at claim
time (table ``gate_decisions``).

Customers who opted out of profiling (PIPL art. 24) are not scored: they join a campaign only
when ``min_hits`` is 0 (no profile-based selection), with the generic script.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from scripts_engine.audiostore import AudioStore
from scripts_engine.db import repository as repo
from scripts_engine.db.session import Database, write_transaction
from scripts_engine.errors import ScriptsEngineError
from scripts_engine.features import load_customers
from scripts_engine.render import Renderer
from scripts_engine.scoring import Engine
from scripts_engine.voice import VoiceCatalog, VoiceProfile

log = logging.getLogger("scripts_engine.campaigns")
#: Attempts at a chunk before it is marked failed.
MAX_ATTEMPTS = 3


@dataclass
class Toolkit:
    """What building needs, loaded once per process: scorer, renderer, voices, audio store."""

    engine: Engine
    renderer: Renderer
    voices: VoiceCatalog
    store: AudioStore | None
    model_version: str = ""
    #: the audio store and a synthesis pool serve one caller at a time
    store_lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class ChunkResult:
    calls: list[dict[str, Any]]
    audio: list[dict[str, Any]]
    filtered: int
    failed: list[dict[str, str]]


def new_campaign_id() -> str:
    return "C-" + uuid.uuid4().hex[:16]


def call_id(campaign_id: str, customer_id: str) -> str:
    """The call's id: a hash of campaign and customer (a rebuild gives the same id)."""
    return "K-" + hashlib.sha256(f"{campaign_id}\x1f{customer_id}".encode()).hexdigest()[:24]


def in_control(campaign_id: str, customer_id: str, holdout_pct: float) -> bool:
    """Stable hash choice: the same customer is in the same group whenever this campaign is
    built, and about ``holdout_pct`` percent of customers are in control."""
    if holdout_pct <= 0:
        return False
    digest = hashlib.sha256(f"holdout\x1f{campaign_id}\x1f{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < holdout_pct / 100


def plan_chunks(customer_ids: Sequence[str], size: int) -> list[list[str]]:
    ids = sorted(dict.fromkeys(customer_ids))
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def _voice(toolkit: Toolkit, option: str, record: dict[str, Any]) -> VoiceProfile:
    if option == "auto":
        return toolkit.voices.choose(record.get("province"), record.get("city"))
    return toolkit.voices.get(option)


def _snapshot(context: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in context.items() if not callable(v)}


def build_chunk(
    toolkit: Toolkit, campaign_id: str, options: dict[str, Any], records: Sequence[dict[str, Any]]
) -> ChunkResult:
    """Call rows and audio rows for one chunk's customers (no database writes)."""
    grid = toolkit.engine.grid
    loaded = load_customers(list(records), grid)
    failed = [
        {"customer_id": str(records[e.row - 1].get("customer_id")), "error": str(e)}
        for e in loaded.errors
        if 0 < e.row <= len(records)
    ]
    batch = loaded.batch
    min_hits = int(options.get("min_hits", 5))
    opt_out = np.array([bool(batch.value("profiling_opt_out", i)) for i in range(len(batch))])
    scored = batch.take(~opt_out) if len(batch) else batch
    result = toolkit.engine.score(scored) if len(scored) else None
    position = {str(cid): i for i, cid in enumerate(scored.ids)}
    as_of = date.fromisoformat(options["as_of"])
    channel, moment = options.get("channel", "call"), options.get("moment", "none")
    filtered, planned = 0, []
    for i in range(len(batch)):
        record = batch.record(i)
        cid = str(batch.ids[i])
        explain = None
        if cid in position and result is not None:
            j = position[cid]
            if int(result.hit_counts[j]) < min_hits:
                filtered += 1
                continue
            explain = result.explain(j)
        elif min_hits > 0:
            filtered += 1  # not profiled, so not selectable by profile
            continue
        control = in_control(campaign_id, cid, float(options.get("holdout_pct", 0.0)))
        try:
            profile_id = explain["profile"]["id"] if explain else None
            tags = explain["tags"] if explain else None
            r = toolkit.renderer
            script = r.render_script(record, profile_id, tags, channel=channel, moment=moment,
                                     as_of=as_of, generic=control)  # fmt: skip
            context, _ = r.build_context(record, profile_id, tags, channel=channel, moment=moment,
                                         as_of=as_of, generic=control)  # fmt: skip
            voice = _voice(toolkit, options.get("voice", "auto"), record)
        except ScriptsEngineError as exc:
            failed.append({"customer_id": cid, "error": str(exc)})
            continue
        planned.append((cid, record, explain, control, script, _snapshot(context), voice))

    audio_rows: list[dict[str, Any]] = []
    audio_by_call: list[dict[str, Any]] = [{} for _ in planned]
    if channel == "call" and planned and toolkit.store is not None:
        prompts = [([s.text for s in script.main], voice) for *_, script, _, voice in planned]
        for fmt in options.get("audio_formats", ["wav8k"]):
            with toolkit.store_lock:
                stored = toolkit.store.synthesize_prompts(prompts, fmt)
            for k, item in enumerate(stored):
                row = audio_row(item.path, toolkit.store.root, fmt, item.duration_s)
                audio_rows.append(row)
                audio_by_call[k][fmt] = {"sha256": row["sha256"], "ext": row["ext"],
                                         "duration_s": row["duration_s"], "key": item.key}  # fmt: skip

    calls = []
    now = datetime.now(UTC)
    for (cid, _record, explain, control, script, context, voice), audio in zip(
        planned, audio_by_call, strict=True
    ):
        record = {
            "customer_id": cid,
            "group": "control" if control else "model",
            "generic": script.profile_id is None,
            "generic_reason": "control" if control else (None if explain else "profiling_opt_out"),
            "scoring": explain,
            "model_version": toolkit.model_version,
            "script_id": script.id,
            "pack_version": script.pack_version,
            "styles_version": script.styles_version,
            "templates": [
                {"stage": s.stage, "key": s.key, "template": s.template, "version": s.version}
                for s in script.segments
            ],
            "context": context,
            "voice": {
                "id": voice.id,
                "settings": voice.settings_json(),
                "catalog_version": toolkit.voices.version(),
            },  # fmt: skip
            "audio": audio,
            "options": options,
        }
        script_dict = script.to_dict()
        calls.append(
            {
                "id": call_id(campaign_id, cid), "campaign_id": campaign_id, "customer_id": cid,
                "group": record["group"], "profile_id": script.profile_id,
                "script": script_dict, "record": record,
                "payload": call_payload(record["group"], script_dict, record),
                "audio": {f: a["sha256"] for f, a in audio.items()},
                "status": "ready", "claims": 0, "created_at": now,
                "live_set": live_set(script.pack_version, script.styles_version),
            }
        )  # fmt: skip
    return ChunkResult(calls, audio_rows, filtered, failed)


def live_set(pack_version: str, styles_version: str | None) -> str:
    """Digest of what a script was rendered against: the template pack and styles.yaml.

    A waiting call whose digest differs from the renderer's (:func:`renderer_live_set`) may be
    stale; :mod:`scripts_engine.refresh` then compares its record's versions exactly."""
    blob = f"{pack_version}\x1f{styles_version or ''}"
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def renderer_live_set(renderer: Renderer, *, reload: bool = False) -> str:
    """:func:`live_set` of what ``renderer`` renders with now (with ``reload``, after it
    reloads if the live set changed: checked at most every ``reload_interval`` s)."""
    if reload:
        renderer.refresh()
    return live_set(renderer.pack.version, renderer.styles_version)


def call_payload(group: str, script: dict[str, Any], record: dict[str, Any]) -> str:
    """What a claim hands the dialler about a call, besides the per-claim fields: the group,
    the profile (None for the generic script) and the script, as compact JSON text."""
    scoring = record.get("scoring")
    profile = None
    if scoring and script.get("persona"):
        p = scoring["profile"]
        profile = {"name": p["name_zh"], **p}
    body = {"group": group, "profile": profile, "script": script}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def audio_row(path: Path, root: Path, fmt: str, duration_s: float) -> dict[str, Any]:
    """The ``audio_files`` row of a prompt file (sha256 of its bytes)."""
    from scripts_engine.audio import get_format

    data = path.read_bytes()
    spec = get_format(fmt)
    return {
        "sha256": hashlib.sha256(data).hexdigest(), "format": fmt, "ext": spec.ext.lstrip("."),
        "path": str(path.relative_to(root)), "content_type": spec.mime, "size": len(data),
        "duration_s": round(float(duration_s), 3),
    }  # fmt: skip


# --- planning and running -----------------------------------------------------------------


def start_campaign(
    *,
    db: Database,
    name: str,
    options: dict[str, Any],
    customer_ids: Sequence[str],
    chunk_size: int,
    created_by: int | None,
    now: datetime,
) -> str:
    """Plan a campaign (its chunks) and return its id; building happens in :func:`run_chunk`."""
    campaign_id = new_campaign_id()
    options = {**options, "as_of": options.get("as_of") or now.date().isoformat()}
    chunks = plan_chunks(customer_ids, chunk_size)
    write_transaction(
        db,
        lambda s: repo.create_campaign(
            session=s, campaign_id=campaign_id, name=name, options=options, chunks=chunks,
            created_by=created_by, now=now,
        ),
    )  # fmt: skip
    return campaign_id


def _begin_attempt(db: Database, campaign_id: str, index: int) -> tuple[int, dict, list] | None:
    def run(session: Any) -> tuple[int, dict, list] | None:
        chunk = repo.get_chunk(session=session, campaign_id=campaign_id, index=index, lock=True)
        campaign = repo.get_campaign(session=session, campaign_id=campaign_id)
        if chunk is None or campaign is None or chunk.status != "pending":
            return None
        chunk.attempt += 1
        chunk.updated_at = datetime.now(UTC)
        return chunk.attempt, dict(campaign.options), list(chunk.customer_ids)

    return write_transaction(db, run)


def _finish(
    db: Database, campaign_id: str, index: int, attempt: int, result: ChunkResult | None,
    error: str | None,
) -> bool:  # fmt: skip
    def run(session: Any) -> bool:
        chunk = repo.get_chunk(session=session, campaign_id=campaign_id, index=index, lock=True)
        if chunk is None or chunk.status != "pending" or chunk.attempt != attempt:
            return False  # a newer attempt owns this chunk, or it is already done
        campaign = repo.get_campaign(session=session, campaign_id=campaign_id, lock=True)
        assert campaign is not None
        n = len(chunk.customer_ids)
        now = datetime.now(UTC)
        if result is None:
            if attempt < MAX_ATTEMPTS:
                return False  # left pending: the next pass retries it
            chunk.status, chunk.result = "failed", {"error": error}
            campaign.failed += n
        else:
            repo.insert_audio_files(session=session, files=result.audio)
            repo.insert_calls(session=session, calls=[{**c, "chunk": index} for c in result.calls])
            chunk.status = "done"
            chunk.result = {"calls": len(result.calls), "filtered": result.filtered,
                            "failed": result.failed}  # fmt: skip
            campaign.done += n - len(result.failed)
            campaign.failed += len(result.failed)
        chunk.updated_at = campaign.updated_at = now
        session.flush()
        if not repo.pending_chunks_of(session=session, campaign_id=campaign_id):
            campaign.status = "ready"
        return True

    return write_transaction(db, run)


def run_chunk(*, db: Database, toolkit: Toolkit, campaign_id: str, index: int) -> bool:
    """Build one chunk and commit it if this attempt is still the latest; True if committed."""
    begun = _begin_attempt(db, campaign_id, index)
    if begun is None:
        return False
    attempt, options, ids = begun
    with db.read() as session:
        rows = repo.get_customers(session=session, customer_ids=ids)
        records = [rows[i].record for i in ids if i in rows]
    try:
        result = build_chunk(toolkit, campaign_id, options, records)
    except Exception as exc:  # noqa: BLE001 - recorded on the chunk, retried, then failed
        return _finish(db, campaign_id, index, attempt, None, f"{type(exc).__name__}: {exc}")
    missing = [i for i in ids if i not in rows]
    result.failed += [{"customer_id": i, "error": "customer no longer exists"} for i in missing]
    return _finish(db, campaign_id, index, attempt, result, None)


def run_pending(
    *,
    db: Database,
    toolkit: Toolkit,
    max_chunks: int | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Run every chunk not done yet (oldest campaign first); return how many were committed."""
    committed = 0
    for campaign_id, index in _pending(db):
        if stop() or (max_chunks is not None and committed >= max_chunks):
            break
        committed += run_chunk(db=db, toolkit=toolkit, campaign_id=campaign_id, index=index)
    return committed


def _pending(db: Database) -> list[tuple[str, int]]:
    with db.read() as session:
        return repo.pending_chunks(session=session)


class Lease:
    """The right to build among the processes that share a state folder (``serve --workers
    N``): an exclusive lock on a file there, taken without waiting and kept while the process
    lives; the system drops it when the process ends, however it ends, and another takes it
    on its next try. Two builders would build every chunk twice, each new attempt making the
    other's work stale, and spend a chunk's attempts twice as fast."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None
        self._unlockable = False

    def held(self) -> bool:
        """Whether this process has the lease (taking it if it is free). Where the file
        cannot be locked at all (a read-only state folder), every process builds, as before
        there were leases: said once in the log."""
        if self._fd is not None or self._unlockable:
            return True
        fd = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another process has it
            if fd is not None:
                os.close(fd)
            return False
        except OSError as exc:
            if fd is not None:
                os.close(fd)
            self._unlockable = True
            log.warning("campaign builder: cannot lock %s (%s); building without a lease",
                        self.path, exc)  # fmt: skip
            return True
        self._fd = fd
        log.info("campaign builder: this process builds (%s)", self.path)
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops the lock
            self._fd = None


class Builder:
    """Runs pending chunks in a background thread; :meth:`wake` after planning a campaign or
    after a live change (then the ``refresher`` brings waiting calls to the live versions).
    With a ``lease``, it builds only while it holds it (one builder among the server
    processes; the others check again every few seconds).

    On start it resumes whatever a previous process left unfinished."""

    def __init__(
        self,
        db: Database,
        toolkit: Toolkit,
        *,
        on_chunk: Callable[[], None] = lambda: None,
        executor: Any = None,
        refresher: Callable[[], int] | None = None,
        lease: Lease | None = None,
    ):
        """``executor``: an :class:`~scripts_engine.executors.Executor` (worker processes or
        a Dask cluster); None builds in this thread. ``refresher``: one step of the
        background refresh of waiting calls (e.g.
        :meth:`scripts_engine.refresh.WaitingRefresher.step`), called until it answers 0
        after every pass of building."""
        self.db, self.toolkit, self.on_chunk = db, toolkit, on_chunk
        self.executor = executor
        self.refresher = refresher
        self.lease = lease
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="campaign-builder", daemon=True)
        self._thread.start()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.executor is not None:
            self.executor.close()
        if self.lease is not None:
            self.lease.release()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(5.0)
            self._wake.clear()
            try:
                if self.lease is not None and not self.lease.held():
                    continue
                if self.executor is not None:
                    while not self._stop.is_set() and (tasks := _pending(self.db)):
                        self.executor.run(tasks)
                        self.on_chunk()
                else:
                    while run_pending(db=self.db, toolkit=self.toolkit, max_chunks=1,
                                      stop=self._stop.is_set):  # fmt: skip
                        self.on_chunk()
                # waiting calls made before a live change: a batch at a time, so a new
                # campaign's chunks (checked above after each batch) are not held up long
                if self.refresher is not None and not self._stop.is_set() and self.refresher():
                    self._wake.set()
            except Exception:  # noqa: BLE001 - keep the builder alive; the chunk is retried
                log.exception("campaign builder: a pass failed; retrying")
                self.errors += 1
                self._stop.wait(1.0)
