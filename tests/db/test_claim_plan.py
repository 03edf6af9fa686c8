"""The claim's scan on PostgreSQL reads a campaign's ready calls only, whatever the planner's
statistics say (migrations 0007 and 0008), and the claim's and outcome's statements read by
index even when planned on empty tables."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from psycopg import sql
from sqlalchemy import Connection, insert, update

from scripts_engine.db import repository as repo
from scripts_engine.db.models import Attempt, Call, Campaign, Customer
from scripts_engine.db.prepared import Prepared
from scripts_engine.db.session import Database, table, write_core

NOW = datetime(2026, 5, 12, 2, 0, tzinfo=UTC)
CALLS, DONE = 3000, 2950


def _campaign(conn: Connection) -> list[str]:
    conn.execute(insert(table(Campaign)), [{
        "id": "cmp", "name": "May", "options": {}, "status": "ready", "total": CALLS,
        "done": CALLS, "failed": 0, "created_by": None, "created_at": NOW, "updated_at": NOW}])  # fmt: skip
    ids = [f"K-{i:08x}" for i in range(CALLS)]
    conn.execute(insert(table(Call)), [
        {"id": i, "campaign_id": "cmp", "customer_id": f"c{n}", "chunk": 0, "group": "model",
         "profile_id": "P01", "audio": {}, "status": "ready", "claims": 0, "created_at": NOW}
        for n, i in enumerate(ids)
    ])  # fmt: skip
    return sorted(ids)


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    """A plan's nodes, this one first."""
    return [node, *(n for child in node.get("Plans", []) for n in _walk(child))]


def _scans(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan's scans of the calls table."""
    return [n for n in _walk(node) if n.get("Relation Name") == "calls"]


def _analyzed(conn: Connection, prepared: Prepared, params: dict[str, Any]) -> dict[str, Any]:
    """The plan tree of ``prepared``'s statement as this connection runs it (its generic
    plan: prepared on the server already), with what each node read."""
    plan = prepared._plan(conn.dialect, params)  # noqa: SLF001 - its server-side name
    values = prepared._values(plan, params)  # noqa: SLF001
    raw: Any = conn.connection.driver_connection
    query = sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {}({})").format(
        sql.Identifier(plan.server_name.decode()), sql.SQL(", ").join(map(sql.Literal, values))
    )
    got = raw.execute(query).fetchone()[0]
    return cast(dict[str, Any], (json.loads(got) if isinstance(got, str) else got)[0]["Plan"])


def test_the_claim_never_walks_the_calls_already_done(db: Database) -> None:
    """Statistics taken when every call was ready (a campaign just built), then most calls
    done: the claim's scan still starts at the first ready call. (Through the primary key's
    order, the planner's cheapest plan for those statistics, it filtered out every call done
    before it: a claim's cost grew with the calls made.)"""
    if db.is_sqlite:
        pytest.skip("PostgreSQL's planner")
    with db.write_engine.begin() as conn:
        ids = _campaign(conn)
    with db.write_engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE calls SET (autovacuum_enabled = false)")
        conn.exec_driver_sql("ANALYZE calls")  # every call ready
        done = ids[:DONE]
        conn.execute(update(table(Call)).where(table(Call).c.id.in_(done)).values(status="done"))
    params = {"campaign_id": "cmp", "now": NOW, "limit": 3}
    with db.write_engine.begin() as conn:
        plan = repo._P_BOTH_PG._plan(conn.dialect, params)  # noqa: SLF001 - its SQL text
        raw: Any = conn.connection.driver_connection
        args = repo._P_BOTH_PG._args(plan, params)  # noqa: SLF001
        explained = raw.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + plan.sql, args).fetchone()[0]
        got = repo.claim_candidates(conn=conn, campaign_id="cmp", now=NOW, limit=3)
    tree = (json.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"]
    scans = _scans(tree)
    # each kind (never put back, put back until now, lease ended) is a range of ix_calls_claim
    assert [s.get("Index Name") for s in scans] == ["ix_calls_claim"] * 3, scans
    assert sum(s.get("Rows Removed by Filter", 0) for s in scans) == 0
    assert [c[0] for c in got] == ids[DONE : DONE + 3]


def _sqlite_plan(conn: Connection, params: dict[str, Any]) -> list[str]:
    plan = repo._P_BOTH._plan(conn.dialect, params)  # noqa: SLF001 - its SQL text
    raw: Any = conn.connection.dbapi_connection
    rows = raw.execute("EXPLAIN QUERY PLAN " + plan.sql, repo._P_BOTH._args(plan, params))  # noqa: SLF001
    return [r[3] for r in rows]


def test_a_claim_never_reads_the_calls_put_back_or_leased_until_later(db: Database) -> None:
    """Outside the calling window the gate puts each call it examines back until the window
    opens, and after a while nearly every ready call waits so; and many leases may be out at
    once. A claim's scan reads the calls it may hand out, not those waiting or leased: each
    kind of candidate is one range of an index. (Read in id order and tested one by one,
    every waiting call was read on every claim: 24 ms a claim at 20,000 of them, holding the
    write lock; and so was every lease out.)"""
    with db.write_engine.begin() as conn:
        ids = _campaign(conn)
        calls = table(Call)
        waiting, leased = ids[:2000], ids[2000:2900]
        due, fresh = ids[2900:2950], ids[2950:]
        conn.execute(update(calls).where(calls.c.id.in_(waiting))
                     .values(not_before=NOW + timedelta(hours=12)))  # fmt: skip
        until = NOW + timedelta(minutes=10)
        conn.execute(update(calls).where(calls.c.id.in_(leased)).values(
            status="leased", leased_by=1, lease_until=until, not_before=until))  # fmt: skip
        # put back until times now past, the latest first in id order
        for n, call_id in enumerate(due):
            conn.execute(update(calls).where(calls.c.id == call_id)
                         .values(not_before=NOW - timedelta(minutes=n + 1)))  # fmt: skip
    params = {"campaign_id": "cmp", "now": NOW, "limit": 3}
    with db.write_engine.begin() as conn:
        got = repo.claim_candidates(conn=conn, campaign_id="cmp", now=NOW, limit=3)
        if db.is_sqlite:
            steps = _sqlite_plan(conn, params)
            assert not [s for s in steps if "TEMP" in s], steps  # each scan in index order
            searches = [s for s in steps if s.startswith("SEARCH calls ")]
            assert [s.split(" (")[0] for s in searches] == [
                "SEARCH calls USING INDEX ix_calls_claim"] * 3, searches  # fmt: skip
            assert "not_before=" in searches[0], searches
            assert "not_before<" in searches[1] and "not_before<" in searches[2], searches
        else:
            plan = repo._P_BOTH_PG._plan(conn.dialect, params)  # noqa: SLF001
            raw: Any = conn.connection.driver_connection
            args = repo._P_BOTH_PG._args(plan, params)  # noqa: SLF001
            explained = raw.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + plan.sql, args)
            tree = explained.fetchone()[0]
            scans = _scans((json.loads(tree) if isinstance(tree, str) else tree)[0]["Plan"])
            assert sum(s.get("Rows Removed by Filter", 0) for s in scans) == 0, scans
            assert sum(s.get("Actual Rows", 0) for s in scans) <= 6, scans
    # of the three read of each kind (those put back: due longest first), the lowest ids
    assert [c[0] for c in got] == sorted([*due[-3:], *fresh[:3]])[:3]
    with db.write_engine.begin() as conn:  # every call waiting: nothing, at once
        conn.execute(update(table(Call)).where(table(Call).c.id.in_([*due, *fresh]))
                     .values(not_before=NOW + timedelta(hours=12)))  # fmt: skip
        assert repo.claim_candidates(conn=conn, campaign_id="cmp", now=NOW, limit=3) == []
        # when to ask again: the first lease's end, one index entry read of each kind
        assert repo.next_due(conn=conn, campaign_id="cmp") == until
        if not db.is_sqlite:
            scans = _scans(_analyzed(conn, repo._P_NEXT_DUE, {"campaign_id": "cmp"}))  # noqa: SLF001
            assert [s.get("Index Name") for s in scans] == ["ix_calls_claim"] * 2, scans
            assert sum(s.get("Actual Rows", 0) for s in scans) <= 2, scans


def test_the_claim_statements_keep_one_generic_plan(db: Database) -> None:
    """Each of the claim's statements is planned once per connection, not on every run:
    PostgreSQL's default re-planned the claim's scan every time (its generic plan, with the
    LIMIT a parameter, looked dearer than a custom one), a quarter of the server's CPU a
    claim."""
    if db.is_sqlite:
        pytest.skip("PostgreSQL's plan cache")
    with db.write_engine.begin() as conn:
        _campaign(conn)
    for _ in range(8):
        write_core(db, lambda conn: repo.claim_candidates(
            conn=conn, campaign_id="cmp", now=NOW, limit=2))  # fmt: skip
    with db.write_engine.connect() as conn:  # the pool's one connection, used serially
        plans = conn.exec_driver_sql(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE 'SELECT anon_1.id, anon_1.customer_id%%'"
        ).all()
    assert plans == [(8, 0)]


def _nodes(node: dict[str, Any]) -> list[tuple[str, str]]:
    """``(node type, relation)`` of every scan in a plan."""
    return [(n["Node Type"], n["Relation Name"]) for n in _walk(node) if "Relation Name" in n]


def test_statements_planned_on_empty_tables_still_read_by_index(db: Database) -> None:
    """A new database's attempts, suppressions and outcomes are empty when the claim's and
    the outcome's statements are first planned, and the cheapest plan for an empty table is
    a sequential scan; kept as the connection's generic plan, it read the whole table on
    every claim as the table grew (1.5 to 12 ms a claim after 4,000 calls). The transaction
    these statements run in turns sequential scans off: their plans read by index."""
    if db.is_sqlite:
        pytest.skip("PostgreSQL's plan cache")
    with db.write_engine.begin() as conn:
        _campaign(conn)
        for name in ("attempts", "blocks", "outcomes", "idempotency_keys"):
            conn.exec_driver_sql(f"ALTER TABLE {name} SET (autovacuum_enabled = false)")
            conn.exec_driver_sql(f"ANALYZE {name}")  # empty
    since = NOW - timedelta(days=7)
    ids = {
        "ids": ["c1", "c2", "c3"],
        "now": NOW,
        "since": since,
        "since_day": repo.attempts_from(since),
    }
    state = {"key_id": 1, "key": "k1", "call_id": "K-00000001"}

    def explained(conn: Connection, prepared: Prepared, params: dict[str, Any]) -> Any:
        prepared.rows(conn, params)  # prepared on this connection, its generic plan kept
        return _analyzed(conn, prepared, params)

    for prepared, params in ((repo._P_FACTS_PG, ids), (repo._P_OUTCOME_STATE_PG, state)):  # noqa: SLF001
        tree = write_core(db, lambda conn, p=prepared, q=params: explained(conn, p, q))
        scans = _nodes(tree)
        assert scans, tree
        assert not [s for s in scans if s[0] == "Seq Scan"], scans


def _removed(node: dict[str, Any]) -> int:
    """Rows a plan's nodes read and then filtered out."""
    return sum(n.get("Rows Removed by Filter", 0) + n.get("Rows Removed by Index Recheck", 0)
               for n in _walk(node))  # fmt: skip


def test_the_outcomes_stored_answers_are_read_by_the_pairs_asked_for(db: Database) -> None:
    """Outcome reports queued together read the answers stored under their idempotency keys
    in one statement. Planned once per connection while the table was empty (a new
    database), its plan must still probe the unique index by key and idempotency key: with
    each column an IN list it probed by the dialler's key alone and filtered, reading every
    answer ever stored under it (2-5 ms a batch after a thousand outcomes, in the API
    benchmark, and growing with every outcome)."""
    if db.is_sqlite:
        pytest.skip("PostgreSQL's plan cache")
    with db.write_engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE idempotency_keys SET (autovacuum_enabled = false)")
        conn.exec_driver_sql("ANALYZE idempotency_keys")  # empty
    asked = [(1, "k-17"), (1, "k-2999"), (1, "new")]  # the first run plans it, on no rows
    _calls, answers, _ids = write_core(db, lambda conn: repo.outcome_states(
        conn=conn, call_ids=[], keys=asked))  # fmt: skip
    assert answers == {}
    with db.write_engine.begin() as conn:
        conn.execute(insert(repo._idem), [  # noqa: SLF001
            {"api_key_id": 1, "key": f"k-{i}", "request_hash": "h", "status_code": 201,
             "response": {"n": i}, "created_at": NOW} for i in range(3000)
        ])  # fmt: skip

    def explained(conn: Connection) -> tuple[Any, Any]:
        found = repo.outcome_states(conn=conn, call_ids=[], keys=asked)[1]
        params = {"pairs": sorted(asked)}
        return found, _analyzed(conn, repo._P_ANSWERS_PG, params)  # noqa: SLF001

    found, tree = write_core(db, explained)
    assert found == {(1, "k-17"): ("h", 201, {"n": 17}), (1, "k-2999"): ("h", 201, {"n": 2999})}
    assert _removed(tree) == 0, tree
    assert tree["Actual Rows"] == 2, tree
    with db.write_engine.connect() as conn:  # the pool's one connection: planned once, empty
        plans = conn.exec_driver_sql(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE 'SELECT idempotency_keys.api_key_id%%'"
        ).all()
    assert plans == [(3, 0)]


def test_a_claim_reads_its_customers_recent_attempts_only(db: Database) -> None:
    """The frequency cap looks back a week, and a claim reads each candidate's attempts of
    that week by the index's range (customer, local day): a customer called over the years
    costs a claim no more than one called once."""
    old = [NOW - timedelta(days=d) for d in range(9, 409)]  # 400 attempts before the week
    recent = [NOW - timedelta(days=6, hours=23), NOW - timedelta(hours=1)]
    since = NOW - timedelta(days=7)
    edge = since - timedelta(minutes=1)  # its local day is in the range, its time is not
    with db.write_engine.begin() as conn:
        conn.execute(insert(table(Attempt)), [
            {"customer_id": "c1", "call_id": f"K-{i}", "at": at,
             "local_day": (at + timedelta(hours=8)).date().isoformat()}
            for i, at in enumerate([*old, edge, *recent])
        ])  # fmt: skip
        if not db.is_sqlite:
            conn.exec_driver_sql("ANALYZE attempts")
    params = {"ids": ["c1"], "now": NOW, "since": since, "since_day": repo.attempts_from(since),
              "nums": ["+8613800000001"]}  # fmt: skip

    def read(conn: Connection) -> tuple[Any, Any]:
        people = repo.claim_people(conn=conn, customer_ids=["c1"], now=NOW, since=since)[1]
        if db.is_sqlite:
            stmt = repo._P_FACTS._plan(conn.dialect, params)  # noqa: SLF001
            args = repo._P_FACTS._args(stmt, params)  # noqa: SLF001
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + stmt.sql, args).all()
            return people, [r[3] for r in rows]
        return people, _analyzed(conn, repo._P_FACTS_PG, params)  # noqa: SLF001

    people, plan = write_core(db, read)
    assert sorted(f[5] for f in people if f[1] == "c1") == sorted(
        (at + timedelta(hours=8)).date().isoformat() for at in recent
    )
    if db.is_sqlite:  # by the customer, and by the customer's number
        assert any("ix_attempts_customer_day (customer_id=? AND local_day>?)" in d for d in plan), (
            plan
        )
        assert any("ix_attempts_phone_day (phone_key=? AND local_day>?)" in d for d in plan), plan
    else:
        scans = [n for n in _walk(plan) if n.get("Relation Name") == "attempts"]
        assert scans and all(
            n["Actual Rows"] + n.get("Rows Removed by Filter", 0) <= 3 for n in scans
        ), plan


def test_the_numbers_lock_reads_only_the_customers_it_locks(db: Database) -> None:
    """PostgreSQL: a claim's lock of its customers and of the other customers on their
    numbers (and an opt-out's) reads them by index, not every customer: as an ``OR`` of the
    ids and the numbers' subquery it walked the whole table, 8 ms a claim at 6,000 customers."""
    if db.is_sqlite:
        pytest.skip("PostgreSQL's planner")
    with db.write_engine.begin() as conn:
        conn.execute(insert(table(Customer)), [
            {"customer_id": f"c{i:04d}", "record": {}, "phone": f"139{i:08d}",
             "phone_key": f"+86139{i:08d}" if i != 2 else "+8613900000001", "timezone": None,
             "consent": True, "profiling_opt_out": False, "updated_at": NOW}
            for i in range(2000)
        ])  # fmt: skip
        conn.exec_driver_sql("ANALYZE customers")
    params = {"ids": ["c0001", "c0005"]}

    def explained(conn: Connection) -> Any:
        rows = repo._P_SUBJECTS_PG.rows(conn, params)  # noqa: SLF001
        repo._P_LOCK_CUSTOMERS.rows(conn, params)  # noqa: SLF001  (prepared on this connection)
        return (
            rows,
            _analyzed(conn, repo._P_SUBJECTS_PG, params),
            _analyzed(  # noqa: SLF001
                conn, repo._P_LOCK_CUSTOMERS, params
            ),
        )  # noqa: SLF001

    rows, subjects, lock = write_core(db, explained)
    assert [r[0] for r in rows] == ["c0001", "c0002", "c0005"]  # c0002: c0001's number
    for tree in (subjects, lock):
        assert _removed(tree) == 0, tree
        # (the ids: 2; by their numbers: 3; appended: 5)
        assert all(n.get("Actual Rows", 0) <= 5 for n in _walk(tree)), tree
