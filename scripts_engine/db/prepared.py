"""Hot-path statements run under SQLAlchemy, without its per-statement machinery.

The dialler's claim and outcome each run about six short statements. Through
``Connection.execute`` SQLAlchemy spends some 100 us on each (events, the compiled-cache
look-up, parameter processing, a result object) against 10-40 us of work in SQLite itself,
and the claim-and-outcome cycle is what a dialler waits on. A :class:`Prepared` statement
keeps what SQLAlchemy would do and drops the rest:

- the Core statement is compiled once per dialect by SQLAlchemy (the same SQL text);
- for each shape of its ``IN`` lists (how many ids each holds) the expanded SQL and the
  order of its parameters are worked out once, by SQLAlchemy (``construct_expanded_state``);
- parameters go through the same bind processors (SQLite's date-time text, JSON), results
  through the same result processors, so rows read and written here are the rows the ORM
  reads and writes;
- it runs on the DB-API connection of the SQLAlchemy ``Connection`` it is given, inside that
  connection's transaction.

On SQLite it runs on the driver's cursor. On PostgreSQL it goes one level lower, to libpq
through psycopg's ``pq`` wrapper (:class:`_Direct`): psycopg's cursor costs about 45 us of
Python a statement (its generators, query conversion, result objects), libpq's blocking
``PQexecPrepared`` about 15, and a claim runs ten statements. Each statement is prepared on
the server once per connection, under its own name (in the round trip of its first run);
parameters are dumped and rows loaded by
psycopg's own adapters (its ``Transformer``, the connection's, with SQLAlchemy's JSON loader),
so the values are the ones a cursor gives. libpq releases the interpreter lock while it waits
for the server. A transaction begins the way psycopg begins one (``BEGIN`` before the first
statement, unless the connection is in autocommit), so SQLAlchemy's commit and rollback, which
read libpq's transaction status, end it as usual; errors are psycopg's own classes, raised as
SQLAlchemy's. That ``BEGIN`` also sets ``plan_cache_mode = force_generic_plan`` for the
transaction: each statement is then planned once per connection. PostgreSQL's default plans a
statement afresh on each run while the generic plan's estimate looks dearer than a custom
one, and for the claim's scan (its ``LIMIT`` a parameter, costed as a tenth of the rows) it
always did: 0.2-0.4 ms of server CPU a claim. Generic plans are safe for these statements
(the claim's scan has one sensible plan, see migration 0008), and the server's CPU per
claim-and-outcome request fell by a fifth (``tests/db/test_claim_plan.py``; figures in the
README). It also turns sequential scans off: every one of these statements reads by an
index, and a generic plan lasts as long as the connection (or until the next ``ANALYZE``),
but the cheapest plan for a table that was empty when it was planned (the attempts, the
suppressions and the outcomes of a new database) is a sequential scan. Planned so, a claim's
read of its customers' attempts walked the whole table: 1.5 to 12 ms a claim after 4,000
calls, against 0.1 ms through the index (``tests/db/test_claim_plan.py``). psycopg's
automatic preparing is off on the service's engine (after a rollback
it runs ``DEALLOCATE ALL``, which would drop these statements too); a statement the server
lost anyway fails once (SQLSTATE 26000), is prepared again, and ``write_core`` runs the write
again. A write run for many rows (:meth:`Prepared.many`: a batch of claims' decisions and
attempts, a batch of outcomes) is pipelined (libpq's pipeline mode): every row's statement is
sent, then every answer read, one round trip for the batch instead of one a row.

Round trips are what a claim waits on: on two busy cores each took 2-5 ms, against 0.1-0.4 ms
of CPU. In a :func:`transaction` (``write_core`` on PostgreSQL runs every write in one) the
``BEGIN`` goes with the first statement, and the writes nobody reads an answer of
(:func:`pipelined` ``later``: a claim's leases, decisions and attempts; an outcome's rows) go
with the ``COMMIT``. A claim then takes three round trips (it took five, and more on a new
connection) and an outcome two (four); ``tests/db/test_prepared.py`` counts them in libpq's
trace.

It serves the statements of :mod:`scripts_engine.db.repository` that the claim and the outcome
run; ``tests/db/test_prepared.py`` checks each against ``Connection.execute`` on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import re
import select
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import BindParameter, Connection, Engine, Insert, event
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.visitors import iterate

_Proc = Callable[[Any], Any] | None
#: names of the statements prepared on PostgreSQL servers, one per plan
_NAMES = itertools.count(1)
_PYFORMAT = re.compile(r"%\(([^)]+)\)s|%%")


@dataclass(frozen=True)
class _Plan:
    """One statement text for one dialect and one shape of its ``IN`` lists."""

    sql: str
    positional: bool
    #: per driver parameter: (its name, where its value comes from, bind processor); the
    #: source is (parameter, index in its list or -1, index in that item when the list holds
    #: tuples (a row-value ``IN``) or -1) or, for a literal of the statement, None with the
    #: processed value as the name's constant
    slots: tuple[tuple[str, tuple[str, int, int] | None, _Proc], ...]
    constants: Mapping[str, Any]
    #: the result columns that have a processor: (column index, processor)
    results: tuple[tuple[int, Callable[[Any], Any]], ...]
    #: PostgreSQL: the text with ``$n`` placeholders (in slot order) and its server-side name
    server_sql: bytes = b""
    server_name: bytes = b""


class Prepared:
    """A Core statement (select, insert, update, union) run below SQLAlchemy's machinery."""

    def __init__(self, stmt: ClauseElement):
        self.stmt = stmt
        self._plans: dict[tuple[Any, ...], _Plan] = {}
        self._lock = threading.Lock()
        self._insert = isinstance(stmt, Insert)
        self._expanding = tuple(sorted({
            e.key for e in iterate(stmt) if isinstance(e, BindParameter) and e.expanding
        }))  # fmt: skip

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run with one parameter set; the rows it returns (none for a plain write)."""
        plan = self._plan(conn.dialect, params)
        direct = _direct(conn) if plan.server_name else None
        if direct is not None:
            with driver_errors(conn, plan.sql):
                return self._processed(plan, direct.run(plan, self._values(plan, params)))
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        # a try, not driver_errors: a generator-based context manager costs as much as the
        # rest of this method around a short statement
        try:
            cursor.execute(plan.sql, self._args(plan, params))
            fetched = [] if cursor.description is None else cursor.fetchall()
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _as_sqlalchemy(conn, plan.sql, exc) from exc
        finally:
            cursor.close()
        return self._processed(plan, fetched) if fetched else []

    @staticmethod
    def _processed(plan: _Plan, fetched: Sequence[Any]) -> list[tuple[Any, ...]]:
        active = plan.results
        if not active:
            return [tuple(r) for r in fetched]
        out = []
        for r in fetched:
            row = list(r)
            for i, proc in active:
                row[i] = proc(row[i])
            out.append(tuple(row))
        return out

    def many(self, conn: Connection, params: Sequence[Mapping[str, Any]]) -> None:
        """Run a write once per parameter set (``executemany``)."""
        if not params:
            return
        plan = self._plan(conn.dialect, params[0])
        direct = _direct(conn) if plan.server_name else None
        if direct is not None:
            with driver_errors(conn, plan.sql):
                direct.run_many(plan, [self._values(plan, one) for one in params])
            return
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            with driver_errors(conn, plan.sql):
                cursor.executemany(plan.sql, [self._args(plan, p) for p in params])
        finally:
            cursor.close()

    @staticmethod
    def _values(plan: _Plan, params: Mapping[str, Any]) -> list[Any]:
        """The driver's parameter values, in slot order."""
        values = []
        for name, source, proc in plan.slots:
            if source is None:
                value = plan.constants[name]
            else:
                key, index, item = source
                value = params[key] if index < 0 else params[key][index]
                if item >= 0:
                    value = value[item]
                if proc is not None and value is not None:
                    value = proc(value)
            values.append(value)
        return values

    @classmethod
    def _args(cls, plan: _Plan, params: Mapping[str, Any]) -> Any:
        values = cls._values(plan, params)
        if plan.positional:
            return tuple(values)
        return {slot[0]: v for slot, v in zip(plan.slots, values, strict=True)}

    def _plan(self, dialect: Dialect, params: Mapping[str, Any]) -> _Plan:
        shape: tuple[Any, ...] = (dialect.name, *(len(params[k]) for k in self._expanding))
        if self._insert:  # an INSERT's text names the columns it is given
            shape += tuple(sorted(params))
        plan = self._plans.get(shape)
        if plan is None:
            with self._lock:
                plan = self._plans.get(shape) or self._make(dialect, params)
                self._plans[shape] = plan
        return plan

    def _make(self, dialect: Dialect, params: Mapping[str, Any]) -> _Plan:
        keys = sorted(params) if self._insert else None
        # an INSERT returns nothing unless it asks (no RETURNING of the new row's key)
        stmt = self.stmt.inline() if isinstance(self.stmt, Insert) else self.stmt
        compiled = stmt.compile(dialect=dialect, column_keys=keys)
        assert isinstance(compiled, SQLCompiler)
        state = compiled.construct_expanded_state(dict(params))
        expanded: dict[str, tuple[str, int, int]] = {}
        for name, news in state.parameter_expansion.items():
            given = params[name]
            # a row-value IN's list holds tuples: its names run through each tuple's items
            width = len(given[0]) if given and isinstance(given[0], tuple) else 0
            for i, new in enumerate(news):
                expanded[new] = (name, i // width, i % width) if width else (name, i, -1)
        names = list(state.positiontup or state.parameters)
        slots: list[tuple[str, tuple[str, int, int] | None, _Proc]] = []
        constants: dict[str, Any] = {}
        # the processors of the statement's own parameters (SQLAlchemy keeps them on the
        # compiled form) and of the expanded IN-list items
        processors: dict[str, Any] = {**compiled._bind_processors, **state.processors}  # noqa: SLF001
        for name in names:
            proc = processors.get(name)
            if name in expanded:
                slots.append((name, expanded[name], proc))
            elif name in params:
                slots.append((name, (name, -1, -1), proc))
            else:  # a literal of the statement (a value given in .values(), an OFFSET)
                if self._insert:
                    raise ValueError(f"a prepared INSERT needs every column's value: {name}")
                value = state.parameters[name]
                constants[name] = proc(value) if proc is not None and value is not None else value
                slots.append((name, None, None))
        columns = getattr(self.stmt, "selected_columns", None) or ()
        procs = (c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns)
        results = tuple((i, proc) for i, proc in enumerate(procs) if proc is not None)
        server_sql = server_name = b""
        if dialect.name == "postgresql" and not state.positiontup:
            server_sql = _dollar(state.statement, names).encode()
            server_name = b"se_%d" % next(_NAMES)
        return _Plan(state.statement, state.positiontup is not None, tuple(slots), constants,
                     results, server_sql, server_name)  # fmt: skip


def pipelined(
    conn: Connection,
    steps: Sequence[tuple[Prepared, Sequence[Mapping[str, Any]]]],
    *,
    later: bool = False,
) -> list[list[tuple[Any, ...]]]:
    """Several statements in order, each run once per parameter set (none: not run), and the
    rows each returned (all its runs'). The parameter sets of one statement have one shape
    (their ``IN`` lists one length each), as for :meth:`Prepared.many`. On PostgreSQL they go
    to the server in one pipeline, one round trip for all (:meth:`_Direct.run_pipeline`): a
    claim's or an outcome's statements that do not need each other's answers. Elsewhere they
    run one after another (a write's parameter sets by one ``executemany``).

    ``later``: writes whose answers nobody reads. In a :func:`transaction` on PostgreSQL they
    go with the transaction's next statement, or with its ``COMMIT`` (:meth:`_Direct.defer`),
    and return no rows; an error of theirs raises there. Elsewhere they run now."""
    out: list[list[tuple[Any, ...]]] = [[] for _ in steps]
    todo = [(at, prepared, list(params)) for at, (prepared, params) in enumerate(steps) if params]
    plans = [prepared._plan(conn.dialect, params[0]) for _at, prepared, params in todo]
    direct = _direct(conn) if plans and all(plan.server_name for plan in plans) else None
    if direct is not None:
        values = [
            (plan, [prepared._values(plan, one) for one in params])
            for plan, (_at, prepared, params) in zip(plans, todo, strict=True)
        ]
        with driver_errors(conn, plans[0].sql):
            if later:
                direct.defer(values)
                return out
            fetched = direct.run_pipeline(values)
        for plan, (at, _prepared, _params), rows in zip(plans, todo, fetched, strict=True):
            out[at] = Prepared._processed(plan, rows) if rows else []
        return out
    for at, prepared, params in todo:
        if len(params) > 1 and isinstance(prepared.stmt, UpdateBase):
            prepared.many(conn, params)
        else:
            out[at] = [row for one in params for row in prepared.rows(conn, one)]
    return out


@contextmanager
def transaction(conn: Connection) -> Iterator[None]:
    """The statements of this module in ``conn``'s transaction (begun by SQLAlchemy, which
    sends nothing for it), with fewer round trips on PostgreSQL: the ``BEGIN`` goes with the
    first statement, and the writes run ``later`` (:func:`pipelined`) with the next statement
    or, on leaving without an error, with the ``COMMIT`` (then SQLAlchemy's commit finds the
    transaction ended and sends nothing). Leaving with an error drops the writes not sent; a
    transaction under way is rolled back by SQLAlchemy as usual. Any other statement on
    ``conn`` first sends what waits (:func:`_flush_before`). Elsewhere it does nothing."""
    direct = _direct(conn)
    if direct is None:
        yield
        return
    direct.deferring(True)
    try:
        yield
        with driver_errors(conn, "COMMIT"):
            direct.commit()
    finally:
        direct.deferring(False)


def _flush_before(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
    """SQLAlchemy's ``before_cursor_execute``: what a :func:`transaction` on this connection
    keeps goes first, so a statement run through SQLAlchemy sees it."""
    direct = _DIRECT.get(conn.connection.dbapi_connection)
    if direct is not None:
        with driver_errors(conn, statement):
            direct.flush()


def watch(engine: Engine) -> None:
    """Make ``engine``'s statements run after what a :func:`transaction` keeps."""
    event.listen(engine, "before_cursor_execute", _flush_before)


def _dollar(sql: str, names: Sequence[str]) -> str:
    """psycopg's ``%(name)s`` placeholders as the server's ``$n``, numbered in ``names``'
    order (a name used twice is one parameter)."""
    number = {name: i for i, name in enumerate(names, 1)}

    def sub(m: re.Match[str]) -> str:
        return "%" if m.group(1) is None else f"${number[m.group(1)]}"

    return _PYFORMAT.sub(sub, sql)


class _Direct:
    """Statements on one psycopg connection, through libpq (see the module docstring): the
    names this connection has prepared, and psycopg's adapters for it."""

    __slots__ = ("_begin_due", "_deferring", "_pending", "_pg", "_pgconn", "_prepared", "_raw",
                 "_tx")  # fmt: skip

    def __init__(self, raw: Any):
        self._pg = _psycopg()
        self._raw, self._pgconn = raw, raw.pgconn
        self._tx = self._pg.Transformer(raw)
        self._prepared: set[bytes] = set()
        #: in a :func:`transaction`: the transaction's ``BEGIN`` is not sent yet
        #: (``_begin_due``), and the writes :meth:`defer` kept (``_pending``) go with the next
        #: statement, or with the ``COMMIT``
        self._deferring, self._begin_due = False, False
        self._pending: list[tuple[_Plan | bytes, list[list[Any]]]] = []

    def run(self, plan: _Plan, values: list[Any]) -> list[Any]:
        """Run a plan with its values (in slot order); the rows as psycopg loads them."""
        self._begin()
        if self._begin_due or self._pending or plan.server_name not in self._prepared:
            # what has to go first goes in the same round trip
            return self.run_pipeline([(plan, [values])])[0]
        pgconn = self._pgconn
        pg = self._pg
        params = self._tx.dump_sequence(values, [pg.TEXT] * len(values))
        result = self._check(pgconn.exec_prepared(plan.server_name, params))
        if result.status != pg.TUPLES_OK:
            return []
        self._tx.set_pgresult(result)
        try:
            return self._tx.load_rows(0, result.ntuples, tuple)
        finally:
            self._tx.set_pgresult(None)

    def run_many(self, plan: _Plan, rows: list[list[Any]]) -> None:
        """Run a write plan once per row of values, pipelined (:meth:`run_pipeline`)."""
        if len(rows) == 1:
            self.run(plan, rows[0])
            return
        self.run_pipeline([(plan, rows)])

    def run_pipeline(
        self, steps: Sequence[tuple[_Plan | bytes, list[list[Any]]]]
    ) -> list[list[Any]]:
        """Run plans in order, each once per row of its values, pipelined: every statement is
        sent, then every answer read, so the batch costs one round trip, not one a statement
        (libpq's pipeline mode). The rows each plan returned (all its runs'), as psycopg loads
        them. The server runs them one after another, each seeing what the ones before it
        did (and, under READ COMMITTED, what committed before it started). The first error
        raises once the pipeline is drained: the statements after it did nothing (the server
        aborts them), and the transaction has failed, as after any error.

        A step may be a statement's text instead of a plan (``BEGIN``, ``COMMIT``: run
        unprepared, once, with no values). In a :func:`transaction`, the ``BEGIN`` not sent
        yet and the writes kept by :meth:`defer` go first, in the same round trip."""
        self._begin()
        head: list[tuple[_Plan | bytes, list[list[Any]]]] = []
        if self._begin_due:
            head += [(sql, [[]]) for sql in _begin(self._raw)]
            self._begin_due = False
        head += self._pending
        self._pending = []
        return self._pipeline([*head, *steps])[len(head) :]

    def _pipeline(self, steps: Sequence[tuple[_Plan | bytes, list[list[Any]]]]) -> list[list[Any]]:
        pg, tx, pgconn = self._pg, self._tx, self._pgconn
        failed = None
        fetched: list[list[Any]] = [[] for _ in steps]
        # the statements this connection has not prepared yet are prepared first, in the
        # same round trip; each answers once: (its plan, None) or (None, its step)
        fresh = {plan.server_name: plan for plan, _rows in steps
                 if isinstance(plan, _Plan) and plan.server_name not in self._prepared}  # fmt: skip
        answers: list[tuple[_Plan | None, int]] = [(plan, -1) for plan in fresh.values()]
        pgconn.enter_pipeline_mode()
        try:
            for name, plan in fresh.items():
                pgconn.send_prepare(name, plan.server_sql)
            for at, (step, rows) in enumerate(steps):
                if not isinstance(step, _Plan):
                    pgconn.send_query_params(step, None)
                    answers.append((None, at))
                    continue
                formats = [pg.TEXT] * len(rows[0]) if rows else []
                for values in rows:
                    pgconn.send_query_prepared(step.server_name, tx.dump_sequence(values, formats))
                    answers.append((None, at))
            pgconn.pipeline_sync()
            while pgconn.flush():  # a nonblocking connection: wait until all is sent
                select.select([], [pgconn.socket], [])
            for prepared, at in answers:  # each answer, then the end of that answer
                result = _next_result(pgconn)
                while _next_result(pgconn) is not None:
                    pass
                if result is None or failed is not None:
                    continue
                if result.status not in pg.OK:
                    failed = result
                elif prepared is not None:
                    self._prepared.add(prepared.server_name)
                elif result.status == pg.TUPLES_OK and result.ntuples:
                    tx.set_pgresult(result)
                    try:
                        fetched[at] += tx.load_rows(0, result.ntuples, tuple)
                    finally:
                        tx.set_pgresult(None)
            synced = _next_result(pgconn)
            if synced is None or synced.status != pg.PIPELINE_SYNC:
                raise pg.errors.OperationalError("the pipeline lost its sync point")
        finally:
            if pgconn.pipeline_status:
                try:
                    pgconn.exit_pipeline_mode()
                except Exception:  # answers still pending (interrupted): never reuse it
                    pgconn.finish()
                    raise
        if failed is not None:
            self._check(failed)
        return fetched

    def defer(self, steps: list[tuple[_Plan, list[list[Any]]]]) -> None:
        """Keep writes whose answers nobody reads, to send with the next statement or with
        the ``COMMIT`` (in a :func:`transaction`; elsewhere they run now)."""
        if not self._deferring:
            self.run_pipeline(steps)
            return
        self._begin()
        self._pending += steps

    def commit(self) -> None:
        """End a :func:`transaction`: the writes still kept, then ``COMMIT``, in one round
        trip. Without such writes SQLAlchemy's commit does it (psycopg's commit does nothing
        on a connection the ``COMMIT`` left idle)."""
        if self._pending:
            self.run_pipeline([(b"COMMIT", [[]])])
        self._begin_due = False

    def deferring(self, on: bool) -> None:
        """Enter (or leave) a :func:`transaction`, with nothing kept."""
        self._deferring, self._begin_due, self._pending = on, False, []

    def flush(self) -> None:
        """Send what a :func:`transaction` kept (a statement outside this module is next)."""
        if self._begin_due or self._pending:
            self.run_pipeline([])

    def _begin(self) -> None:
        """Begin a transaction if none is under way, unless in autocommit. In a
        :func:`transaction` the ``BEGIN`` waits for the first statement, to go in its round
        trip."""
        raw = self._raw
        if raw.autocommit or self._begin_due or self._pgconn.transaction_status != self._pg.IDLE:
            return
        if self._deferring:
            self._begin_due = True
        else:
            self._check(self._pgconn.exec_(b"; ".join(_begin(raw))))

    def _check(self, result: Any) -> Any:
        pg = self._pg
        if result.status in pg.OK:
            return result
        error = pg.errors.error_from_result(result, encoding=self._raw.info.encoding)
        if self._pgconn.status == pg.BAD:  # as psycopg raises a lost connection
            raise pg.errors.OperationalError(str(error))
        if error.sqlstate == "26000":  # a DEALLOCATE ALL dropped them: prepare them again
            self._prepared.clear()
        raise error


def _next_result(pgconn: Any) -> Any:
    """libpq's next result of a pipeline, waited for without the interpreter lock. psycopg
    calls libpq's ``PQgetResult``, which blocks until the result comes, holding the lock: a
    statement waiting for a row lock would then stop every thread of the process, the one
    whose transaction holds that lock too (a deadlock no database can see).

    Whether the result is in is asked of libpq holding the lock (:func:`_is_busy`): the
    lock is let go only to wait for the server."""
    busy = _is_busy()
    while busy(pgconn.pgconn_ptr) if busy is not None else pgconn.is_busy():
        select.select([pgconn.socket], [], [])
        pgconn.consume_input()
    return pgconn.get_result()


@functools.cache
def _is_busy() -> Callable[[int], int] | None:
    """libpq's ``PQisBusy`` of the libpq psycopg loaded, called without letting go of the
    interpreter lock (``ctypes.PyDLL``); None where that library is not found.

    psycopg's ``is_busy`` lets go of the lock around the call. A pipeline asks twice a
    statement (its answer, then the end of it), nearly always about what libpq has already
    read: under load, each time, getting the lock back from the event loop took up to the
    switch interval. The call itself only parses libpq's input buffer."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split()[-1] for line in maps
                     if line.rstrip().rsplit("/", 1)[-1].startswith("libpq")}  # fmt: skip
    except OSError:
        return None
    if len(paths) != 1:
        return None
    try:
        function = ctypes.PyDLL(paths.pop()).PQisBusy
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = [ctypes.c_void_p], ctypes.c_int
    return cast(Callable[[int], int], function)


@functools.cache
def _psycopg() -> SimpleNamespace:
    """What the libpq path uses of psycopg, imported once, when the first PostgreSQL
    connection is seen (SQLite needs none of it)."""
    from psycopg import errors, pq
    from psycopg.adapt import PyFormat, Transformer

    status = pq.ExecStatus
    return SimpleNamespace(
        errors=errors, Transformer=Transformer, TEXT=PyFormat.TEXT,
        IDLE=pq.TransactionStatus.IDLE, BAD=pq.ConnStatus.BAD, TUPLES_OK=status.TUPLES_OK,
        PIPELINE_SYNC=status.PIPELINE_SYNC,
        OK=(status.COMMAND_OK, status.TUPLES_OK),
    )  # fmt: skip


#: the settings of a transaction of these statements (see the module docstring)
_SETTINGS = (b"SELECT set_config('plan_cache_mode', 'force_generic_plan', true),"
             b" set_config('enable_seqscan', 'off', true)")  # fmt: skip


def _begin(raw: Any) -> tuple[bytes, bytes]:
    """The statement psycopg begins a transaction with on this connection, and the settings
    that keep these statements' plans generic in it (see the module docstring): two
    statements, as a pipeline takes them."""
    parts = ["BEGIN"]
    if raw.isolation_level is not None:
        parts.append("ISOLATION LEVEL " + raw.isolation_level.name.replace("_", " "))
    if raw.read_only is not None:
        parts.append("READ ONLY" if raw.read_only else "READ WRITE")
    if raw.deferrable is not None:
        parts.append("DEFERRABLE" if raw.deferrable else "NOT DEFERRABLE")
    return " ".join(parts).encode(), _SETTINGS


_DIRECT: weakref.WeakKeyDictionary[Any, _Direct] = weakref.WeakKeyDictionary()
_DIRECT_LOCK = threading.Lock()


def _direct(conn: Connection) -> _Direct | None:
    """The libpq path of the psycopg connection under ``conn``; None elsewhere."""
    if conn.dialect.name != "postgresql":
        return None
    raw = conn.connection.dbapi_connection
    direct = _DIRECT.get(raw)
    if direct is None:
        if not hasattr(raw, "pgconn"):
            return None
        with _DIRECT_LOCK:
            direct = _DIRECT.setdefault(raw, _Direct(raw))
    return direct


@contextmanager
def driver_errors(conn: Connection, sql: str) -> Iterator[None]:
    """The driver's errors raised as SQLAlchemy's (``IntegrityError``, ``OperationalError``,
    ``DataError``...), as ``Connection.execute`` raises them: the retries on a lock timeout
    or a deadlock, the replay of a concurrent idempotent twin and the API's error answers
    all look for those."""
    try:
        yield
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _as_sqlalchemy(conn, sql, exc) from exc


def _as_sqlalchemy(conn: Connection, sql: str, exc: Exception) -> StatementError:
    """The driver's error ``exc`` as SQLAlchemy's class for it (see :func:`driver_errors`)."""
    error = conn.dialect.loaded_dbapi.Error
    return DBAPIError.instance(sql, None, exc, error, dialect=conn.dialect)
