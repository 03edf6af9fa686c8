"""Hot-path statements run on the driver's cursor.

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

It serves the statements of :mod:`scripts_engine.db.repository` that the claim and the outcome
run; ``tests/db/test_prepared.py`` checks each against ``Connection.execute`` on SQLite and
PostgreSQL.

On PostgreSQL every statement is a round trip to the server, and between two of them the
worker thread running the transaction must get the interpreter lock back: under load the
claim's connections were mostly ``idle in transaction``, waiting for the next statement.
:func:`rows_together` sends several reads at once and :func:`pipeline` sends the writes inside
it at once (psycopg's pipeline mode: the server runs them in order, one round trip for all;
an error in any of them is raised when the block ends, and fails the transaction). On SQLite
both simply run the statements one after another.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BindParameter, Connection, Insert
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import iterate

_Proc = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Plan:
    """One statement text for one dialect and one shape of its ``IN`` lists."""

    sql: str
    positional: bool
    #: per driver parameter: (its name, where its value comes from, bind processor); the
    #: source is (parameter, index in its list or -1) or, for a literal of the statement,
    #: None with the processed value as the name's constant
    slots: tuple[tuple[str, tuple[str, int] | None, _Proc], ...]
    constants: Mapping[str, Any]
    results: tuple[_Proc, ...] | None


class Prepared:
    """A Core statement (select, insert, update, union) run on the driver's cursor."""

    def __init__(self, stmt: ClauseElement):
        self.stmt = stmt
        self._plans: dict[tuple[Any, ...], _Plan] = {}
        self._lock = threading.Lock()
        self._insert = isinstance(stmt, Insert)
        self._expanding = tuple(sorted({
            e.key for e in iterate(stmt) if isinstance(e, BindParameter) and e.expanding
        }))  # fmt: skip

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run with one parameter set; the rows it returns (none for a plain write; none
        either inside :func:`pipeline`, where a write's result comes later)."""
        plan = self._plan(conn.dialect, params)
        args = self._args(plan, params)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            with driver_errors(conn, plan.sql):
                cursor.execute(plan.sql, args)
                if cursor.description is None:
                    return []
                fetched = cursor.fetchall()
        finally:
            cursor.close()
        return self._processed(plan, fetched)

    @staticmethod
    def _processed(plan: _Plan, fetched: Sequence[Any]) -> list[tuple[Any, ...]]:
        procs = plan.results
        if not procs or not any(procs):
            return [tuple(r) for r in fetched]
        return [tuple(v if p is None else p(v) for p, v in zip(procs, r, strict=True))
                for r in fetched]  # fmt: skip

    def many(self, conn: Connection, params: Sequence[Mapping[str, Any]]) -> None:
        """Run a write once per parameter set (``executemany``)."""
        if not params:
            return
        plan = self._plan(conn.dialect, params[0])
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            with driver_errors(conn, plan.sql):
                cursor.executemany(plan.sql, [self._args(plan, p) for p in params])
        finally:
            cursor.close()

    @staticmethod
    def _args(plan: _Plan, params: Mapping[str, Any]) -> Any:
        values = []
        for name, source, proc in plan.slots:
            if source is None:
                value = plan.constants[name]
            else:
                key, index = source
                value = params[key] if index < 0 else params[key][index]
                if proc is not None and value is not None:
                    value = proc(value)
            values.append(value)
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
        compiled = self.stmt.compile(dialect=dialect, column_keys=keys)
        assert isinstance(compiled, SQLCompiler)
        state = compiled.construct_expanded_state(dict(params))
        expanded = {
            new: (name, i)
            for name, news in state.parameter_expansion.items()
            for i, new in enumerate(news)
        }
        names = list(state.positiontup or state.parameters)
        slots: list[tuple[str, tuple[str, int] | None, _Proc]] = []
        constants: dict[str, Any] = {}
        # the processors of the statement's own parameters (SQLAlchemy keeps them on the
        # compiled form) and of the expanded IN-list items
        processors: dict[str, Any] = {**compiled._bind_processors, **state.processors}  # noqa: SLF001
        for name in names:
            proc = processors.get(name)
            if name in expanded:
                slots.append((name, expanded[name], proc))
            elif name in params:
                slots.append((name, (name, -1), proc))
            else:  # a literal of the statement (a value given in .values(), an OFFSET)
                if self._insert:
                    raise ValueError(f"a prepared INSERT needs every column's value: {name}")
                value = state.parameters[name]
                constants[name] = proc(value) if proc is not None and value is not None else value
                slots.append((name, None, None))
        results = None
        columns = getattr(self.stmt, "selected_columns", None)
        if columns is not None:
            results = tuple(
                c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns
            )
        return _Plan(state.statement, state.positiontup is not None, tuple(slots), constants,
                     results)  # fmt: skip


def _pipelined(conn: Connection) -> Any:
    """The psycopg connection under ``conn`` when it can pipeline, else None."""
    if conn.dialect.name != "postgresql":
        return None
    raw = conn.connection.dbapi_connection
    return raw if hasattr(raw, "pipeline") else None


def rows_together(
    conn: Connection, reads: Sequence[tuple[Prepared, Mapping[str, Any]]]
) -> list[list[tuple[Any, ...]]]:
    """The rows of each ``(statement, parameters)``, run in order; on PostgreSQL sent
    together, one round trip for all (a later read sees what an earlier one locked)."""
    raw = _pipelined(conn)
    if raw is None or len(reads) < 2:
        return [p.rows(conn, params) for p, params in reads]
    sent = []
    with driver_errors(conn, "(reads sent together)"), raw.pipeline():
        for p, params in reads:
            plan = p._plan(conn.dialect, params)
            cursor = raw.cursor()
            cursor.execute(plan.sql, p._args(plan, params))
            sent.append((plan, cursor))
        try:
            return [Prepared._processed(plan, cursor.fetchall()) for plan, cursor in sent]
        finally:
            for _plan, cursor in sent:
                cursor.close()


@contextmanager
def pipeline(conn: Connection) -> Iterator[None]:
    """Writes inside (``Prepared.rows`` or ``.many``, returning nothing) go to PostgreSQL
    together when the block ends, one round trip; an error is raised then. Elsewhere each
    runs at once."""
    raw = _pipelined(conn)
    if raw is None:
        yield
        return
    with driver_errors(conn, "(writes sent together)"), raw.pipeline():
        yield


@contextmanager
def driver_errors(conn: Connection, sql: str) -> Iterator[None]:
    """The driver's errors raised as SQLAlchemy's (``IntegrityError``, ``OperationalError``,
    ``DataError``...), as ``Connection.execute`` raises them: the retries on a lock timeout
    or a deadlock, the replay of a concurrent idempotent twin and the API's error answers
    all look for those."""
    dbapi = conn.dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as exc:
        raise DBAPIError.instance(sql, None, exc, dbapi.Error, dialect=conn.dialect) from exc
