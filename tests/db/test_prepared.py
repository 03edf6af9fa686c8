"""The claim's and the outcome's statements on the driver's cursor read and write exactly what
SQLAlchemy's ``Connection.execute`` reads and writes, on SQLite and PostgreSQL: the same rows,
the same date-times (zone included), JSON, booleans and NULLs."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from scripts_engine import outcomes
from scripts_engine.db import repository as repo
from scripts_engine.db.models import (
    Attempt,
    Block,
    Call,
    CallDocument,
    Campaign,
    Customer,
    GateDecision,
    IdempotencyKey,
    Outcome,
)
from scripts_engine.db.prepared import Prepared, pipelined, transaction
from scripts_engine.db.session import Database, table, write_core
from scripts_engine.phones import phone_key

NOW = datetime(2026, 5, 12, 2, 0, 0, 123456, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


def _fill(conn: Connection) -> None:
    conn.execute(insert(table(Campaign)), [{
        "id": "cmp", "name": "May", "options": {"channel": "call"}, "status": "ready",
        "total": 4, "done": 4, "failed": 0, "created_by": None, "created_at": NOW,
        "updated_at": NOW}])  # fmt: skip
    conn.execute(insert(table(Customer)), [
        {"customer_id": f"c{i}", "record": {"age": 40 + i, "city": "广州"}, "phone": phone,
         "phone_key": phone_key(phone), "timezone": "Asia/Shanghai" if i else None,
         "consent": i != 2, "profiling_opt_out": False,
         "scoring": {"tags": {"wealth": 0.5}} if i else None, "model_version": "m1",
         "created_at": NOW, "updated_at": NOW}
        # c4 has no call: it is on file with c1's number, written another way
        for i, phone in enumerate([*(f"1380000000{i}" for i in range(4)), "+86 138 0000 0001"])
    ])  # fmt: skip
    # a leased call may be handed out again when its lease ends (its not_before)
    ended, out = NOW - timedelta(seconds=5), NOW + timedelta(1)
    states = [("ready", None, None), ("ready", NOW + timedelta(hours=1), None),
              ("leased", ended, ended), ("leased", out, out)]  # fmt: skip
    conn.execute(insert(table(Call)), [
        {"id": f"k{i}", "campaign_id": "cmp", "customer_id": f"c{i}", "chunk": 0,
         "group": "model", "profile_id": "P01", "audio": {"wav8k": f"{i:064d}.wav"},
         "status": st, "not_before": nb, "leased_by": 7 if lu else None, "lease_until": lu,
         "claims": 0, "created_at": NOW, "live_set": "ls1"}
        for i, (st, nb, lu) in enumerate(states)
    ])  # fmt: skip
    conn.execute(insert(table(CallDocument)), [
        {"call_id": f"k{i}", "script": {"text": "您好"}, "record": {"i": i},
         "payload": '{"group":"model"}' if i != 1 else None}
        for i in range(4)
    ])  # fmt: skip
    conn.execute(insert(table(Block)), [
        {"customer_id": "c1", "kind": "refusal", "since": NOW, "until": NOW + timedelta(days=180),
         "call_id": "k1", "phone_key": "+8613800000001"},
        {"customer_id": "c3", "kind": "opt_out", "since": NOW, "until": None, "call_id": None,
         "phone_key": "+8613800000003"},
    ])  # fmt: skip
    conn.execute(insert(table(Attempt)), [
        {"customer_id": "c1", "call_id": "k1", "at": NOW - timedelta(days=1),
         "local_day": "2026-05-11", "phone_key": "+8613800000001"}
    ])  # fmt: skip
    conn.execute(insert(table(IdempotencyKey)), [
        {"api_key_id": 7, "key": "idem-1", "request_hash": "h" * 64, "status_code": 201,
         "response": {"id": 1, "status": "connected", "converted": False}, "created_at": NOW}
    ])  # fmt: skip


READS: list[tuple[str, Any, dict[str, Any]]] = [
    ("candidates", repo._BOTH, {"campaign_id": "cmp", "now": NOW, "limit": 10}),
    ("candidates, locked", repo._BOTH_PG, {"campaign_id": "cmp", "now": NOW, "limit": 10}),
    ("subjects", repo._SUBJECTS, {"ids": ["c0", "c1", "c2", "c9"]}),
    ("subjects, one id", repo._SUBJECTS, {"ids": ["c3"]}),
    (
        "facts",
        repo._FACTS,
        {
            "ids": ["c0", "c1", "c3"],
            "now": NOW,
            "since": NOW - timedelta(8),
            "since_day": repo.attempts_from(NOW - timedelta(8)),
            "nums": ["+8613800000001", "+8613800000003"],
        },
    ),
    (
        "facts by subquery",
        repo._FACTS_PG,
        {
            "ids": ["c0", "c1", "c3"],
            "now": NOW,
            "since": NOW - timedelta(8),
            "since_day": repo.attempts_from(NOW - timedelta(8)),
        },
    ),
    ("idempotent answer", repo._SEEN, {"key_id": 7, "key": "idem-1"}),
    ("stored answers", repo._ANSWERS, {"key_ids": [7, 8], "keys": ["idem-1", "idem-9"]}),
    ("stored answers, row values", repo._ANSWERS_PG, {"pairs": [(7, "idem-1"), (8, "idem-9")]}),
    ("outcome call", repo._OUTCOME_CALL, {"call_id": "k3"}),
    ("outcome state", repo._OUTCOME_STATE, {"key_id": 7, "key": "idem-1", "call_id": "k3"}),
    (
        "outcome state, locked",
        repo._OUTCOME_STATE.with_for_update(of=table(Call)),
        {"key_id": 7, "key": "idem-2", "call_id": "k0"},
    ),
    ("render fields", repo._RENDER_FIELDS, {"ids": ["c1"]}),
    ("render fields, no scoring", repo._RENDER_FIELDS, {"ids": ["c0"]}),
    ("render fields, several", repo._RENDER_FIELDS, {"ids": ["c0", "c1", "c1", "nobody"]}),
]


@pytest.mark.parametrize(("name", "stmt", "params"), READS, ids=[r[0] for r in READS])
def test_reads_match_sqlalchemy(db: Database, name: str, stmt: Any, params: dict[str, Any]) -> None:
    if stmt is repo._BOTH_PG and db.is_sqlite:
        pytest.skip("PostgreSQL's form (it orders by the C collation)")
    with db.write_engine.begin() as conn:
        _fill(conn)
        expected = [tuple(r) for r in conn.execute(stmt, params)]
        got = Prepared(stmt).rows(conn, params)
    assert expected, f"{name}: the fixture must give rows"
    assert got == expected
    for row in got:  # date-times come back aware, JSON as objects
        for value in row:
            assert not isinstance(value, datetime) or value.tzinfo is not None


def test_writes_match_sqlalchemy(db: Database) -> None:
    """Each write done once through Connection.execute and once prepared, on twin rows,
    stores the same values."""
    decision = {"customer_id": "c0", "at": NOW, "allowed": True, "rule": "ok",
                "checks": [{"rule": "consent", "ok": True}], "ruleset": "r1", "api_key_id": None}  # fmt: skip
    outcome = {"campaign_id": "cmp", "customer_id": "c0", "status": "connected",
               "converted": True, "intent_grade": None, "opt_out": False, "refused": True,
               "duration_s": 41.5, "complaint": False, "notes": "回电", "api_key_id": 7,
               "created_at": NOW}  # fmt: skip
    with db.write_engine.begin() as conn:
        _fill(conn)
        conn.execute(repo._ADD_DECISIONS, [{**decision, "call_id": "k0"}])
        Prepared(repo._ADD_DECISIONS).many(conn, [{**decision, "call_id": "k1"}])
        first = conn.execute(repo._ADD_OUTCOME, {**outcome, "call_id": "k0"}).scalar_one()
        second = Prepared(repo._ADD_OUTCOME).rows(conn, {**outcome, "call_id": "k1"})[0][0]
        assert second == first + 1
        conn.execute(repo._LEASE, {"ids": ["k0"], "key_id": 9, "until": NOW})
        Prepared(repo._LEASE).rows(conn, {"ids": ["k1"], "key_id": 9, "until": NOW})
        conn.execute(repo._PUT_BACK, [{"b_call_id": "k2", "b_status": "ready", "b_retry": NOW}])
        Prepared(repo._PUT_BACK).many(conn, [{"b_call_id": "k3", "b_status": "ready",
                                              "b_retry": NOW}])  # fmt: skip

        def rows(model: Any, *ids: str) -> list[dict[str, Any]]:
            t = table(model)
            key = t.c.id if model is Call else t.c.call_id
            found = conn.execute(select(t).where(key.in_(ids)).order_by(key)).mappings()
            return [{k: v for k, v in r.items() if k not in ("id", "call_id")} for r in found]

        a, b = rows(GateDecision, "k0", "k1")
        assert a == b and a["checks"] == decision["checks"] and a["at"] == NOW
        a, b = rows(Outcome, "k0", "k1")
        assert a == b and a["created_at"] == NOW and a["converted"] is True
        assert a["refused"] is True and a["notes"] == "回电" and a["intent_grade"] is None
        state = ("status", "not_before", "leased_by", "lease_until", "claims")
        a, b = ({k: r[k] for k in state} for r in rows(Call, "k0", "k1"))
        assert a == b == {"status": "leased", "not_before": NOW, "leased_by": 9,
                          "lease_until": NOW, "claims": 1}  # fmt: skip
        a, b = ({k: r[k] for k in state} for r in rows(Call, "k2", "k3"))
        assert a == {**b, "leased_by": 7, "lease_until": a["lease_until"]}
        assert a["status"] == "ready" and a["not_before"] == NOW


def test_an_insert_must_give_every_column(db: Database) -> None:
    """A prepared INSERT without a column's value would skip SQLAlchemy's column defaults:
    refused, not stored with a NULL."""
    with db.write_engine.begin() as conn, pytest.raises(ValueError, match="every column"):
        _fill(conn)
        Prepared(insert(table(Outcome)).values(converted=False)).rows(
            conn, {"call_id": "k0", "campaign_id": "cmp", "customer_id": "c0",
                   "status": "connected", "api_key_id": 7, "created_at": NOW}
        )  # fmt: skip


def test_the_repository_helpers_read_the_fixture(db: Database) -> None:
    """The claim's and the outcome's read helpers give what the gate and the outcome need."""
    with db.write_engine.begin() as conn:
        _fill(conn)
        subjects, facts = repo.claim_people(conn=conn, customer_ids=["c1", "c0", "c3", "c1"],
                                            now=NOW, since=NOW - timedelta(8))  # fmt: skip
        # another customer on c1's number: c1's facts, by the number
        number_subjects, by_number = repo.claim_people(conn=conn, customer_ids=["c4"], now=NOW,
                                                       since=NOW - timedelta(8))  # fmt: skip
        seen, call, new_id = repo.outcome_state(conn=conn, api_key_id=7, key="idem-1",
                                                call_id="k3")  # fmt: skip
        unseen, nocall, no_id = repo.outcome_state(conn=conn, api_key_id=7, key="new", call_id="x")
        reused = repo.outcome_state(conn=conn, api_key_id=7, key="idem-1", call_id="x")
        candidates = repo.claim_candidates(conn=conn, campaign_id="cmp", now=NOW, limit=5)
    assert subjects == {"c0": (True, None, "13800000000", "+8613800000000"),
                        "c1": (True, "Asia/Shanghai", "13800000001", "+8613800000001"),
                        "c3": (True, "Asia/Shanghai", "13800000003", "+8613800000003")}  # fmt: skip
    c1_facts = {("c1", "+8613800000001", "refusal", NOW + timedelta(days=180), None),
                ("c1", "+8613800000001", "attempt", NOW - timedelta(days=1), "2026-05-11")}  # fmt: skip
    # each fact once by its key (a fact of the customer and of its number comes twice)
    assert {f[1:] for f in facts} == c1_facts | {
        ("c3", "+8613800000003", "opt_out", None, None)}  # fmt: skip
    assert len({f[0] for f in facts}) == 3
    assert number_subjects == {"c4": (True, "Asia/Shanghai", "+86 138 0000 0001", "+8613800000001")}
    assert {f[1:] for f in by_number} == c1_facts
    assert seen == ("h" * 64, 201, {"id": 1, "status": "connected", "converted": False})
    assert call == ("cmp", "c3", 7, None)
    assert unseen is None and nocall is None and no_id is None
    # PostgreSQL: the next outcome's id comes with the call (SQLite: the insert gives it)
    assert new_id is None if db.is_sqlite else isinstance(new_id, int)
    assert reused == (seen, None, None)  # a key's answer is found without its call
    # ready and due (k0), leased with the lease run out (k2); not k1 (not due), not k3
    assert [(c[0], c[2], c[3], c[4]) for c in candidates] == [
        ("k0", "ready", b'{"group":"model"}', {"wav8k": f"{0:064d}.wav"}),
        ("k2", "leased", b'{"group":"model"}', {"wav8k": f"{2:064d}.wav"}),
    ]


def test_a_failed_write_fails_the_whole_transaction(db: Database) -> None:
    """Writes run in the connection's transaction: committed together, or, when one fails,
    rolled back together, with the error raised at once; the connection then serves the next
    transaction (the statements it prepared still work after the rollback)."""
    with db.write_engine.begin() as conn:
        _fill(conn)
        _lease(conn, "k0", decided=[("k0", "c0", True, "ok", [], NOW, 9)])
        repo._P_CLOSE_CALL.rows(conn, {"call_id": "k1"})
    with db.write_engine.connect() as conn:
        status = dict(conn.execute(select(table(Call).c.id, table(Call).c.status)).all())
        assert status["k0"] == "leased" and status["k1"] == "done"
        assert conn.execute(select(table(GateDecision).c.call_id)).scalars().all() == ["k0"]
    with pytest.raises(IntegrityError, match="(?i)unique|duplicate"):
        with db.write_engine.begin() as conn:
            _lease(conn, "k2")
            repo._P_ADD_IDEM.rows(conn, {
                "api_key_id": 7, "key": "idem-1", "request_hash": "x", "status_code": 201,
                "response": {}, "created_at": NOW})  # fmt: skip
            pytest.fail("the duplicate key must raise at once")
    with db.write_engine.begin() as conn:  # the lease before the error was not kept
        leased_by = select(table(Call).c.leased_by).where(table(Call).c.id == "k2")
        assert conn.execute(leased_by).scalar_one() == 7
        _lease(conn, "k2")
        assert conn.execute(leased_by).scalar_one() == 9


def _lease(conn: Connection, call_id: str, decided: Any = ()) -> None:
    repo.claim_writes(conn=conn, ruleset="r1", leases=[(call_id, 9, NOW)], put_back=[],
                      decisions=decided, attempts=[])  # fmt: skip


def test_a_claim_round_writes_what_the_gate_decided(db: Database) -> None:
    """A claim round's writes store: the lease counted, the blocked calls put back (closed, or due again later, the
    last lease holder kept), every decision with its checks, the attempts; a round with
    nothing to write writes nothing."""
    later = NOW + timedelta(hours=3)
    checks = [{"rule": "consent", "ok": True, "detail": "同意"}]
    with db.write_engine.begin() as conn:
        _fill(conn)
        repo.claim_writes(
            conn=conn, ruleset="r1", leases=[("k0", 9, later)],
            put_back=[("k2", "ready", later), ("k1", "blocked", None)],
            decisions=[("k0", "c0", True, "ok", checks, NOW, 9),
                       ("k2", "c2", False, "window", [], NOW, 9),
                       ("k1", "c1", False, "consent", checks, NOW, 9)],
            attempts=[("c0", "k0", "2026-05-12", NOW, "+8613800000000")],
        )  # fmt: skip
        repo.claim_writes(conn=conn, ruleset="r1", leases=[], put_back=[], decisions=[],
                          attempts=[])  # fmt: skip
    with db.write_engine.connect() as conn:
        state = ("id", "status", "not_before", "leased_by", "lease_until", "claims")
        calls = {r["id"]: {k: r[k] for k in state} for r in conn.execute(
            select(table(Call)).where(table(Call).c.id.in_(["k0", "k1", "k2"]))).mappings()}  # fmt: skip
        assert calls["k0"] == {"id": "k0", "status": "leased", "not_before": later,
                               "leased_by": 9, "lease_until": later, "claims": 1}  # fmt: skip
        assert calls["k2"] == {"id": "k2", "status": "ready", "not_before": later,
                               "leased_by": 7, "lease_until": None, "claims": 0}  # fmt: skip
        assert calls["k1"]["status"] == "blocked" and calls["k1"]["not_before"] is None
        decisions = conn.execute(select(table(GateDecision)).order_by(table(GateDecision).c.id))
        assert [(d["call_id"], d["customer_id"], d["at"], d["allowed"], d["rule"], d["checks"],
                 d["ruleset"], d["api_key_id"]) for d in decisions.mappings()] == [
            ("k0", "c0", NOW, True, "ok", checks, "r1", 9),
            ("k2", "c2", NOW, False, "window", [], "r1", 9),
            ("k1", "c1", NOW, False, "consent", checks, "r1", 9),
        ]  # fmt: skip
        attempts = conn.execute(select(table(Attempt).c.customer_id, table(Attempt).c.call_id,
                                       table(Attempt).c.at, table(Attempt).c.local_day,
                                       table(Attempt).c.phone_key)
                                .where(table(Attempt).c.call_id == "k0")).all()  # fmt: skip
        assert attempts == [("c0", "k0", NOW, "2026-05-12", "+8613800000000")]


def test_a_read_in_autocommit_leaves_no_transaction(db: Database) -> None:
    """A prepared read on a connection in autocommit (render's single read) opens no
    transaction; on PostgreSQL, on a normal connection, the first statement opens one, as
    psycopg's would (on SQLite SQLAlchemy's begin does)."""
    with db.write_engine.begin() as conn:
        _fill(conn)
    with db.one_read() as conn:
        assert repo.customer_for_render(conn=conn, customer_id="c1") is not None
        assert not _in_transaction(conn)
    if db.is_sqlite:
        return
    with db.write_engine.connect() as conn:
        assert repo.claim_candidates(conn=conn, campaign_id="cmp", now=NOW, limit=1)
        assert _in_transaction(conn)
        conn.rollback()


def _in_transaction(conn: Connection) -> bool:
    raw: Any = conn.connection.dbapi_connection
    if conn.dialect.name == "sqlite":
        return bool(raw.in_transaction)
    return bool(raw.info.transaction_status != 0)  # psycopg's 0: IDLE


def test_driver_errors_are_raised_as_sqlalchemys(db: Database) -> None:
    """A statement on the driver's cursor fails with SQLAlchemy's error classes, as through
    Connection.execute: what the retries, the idempotent replay and the API's answers catch."""
    idem = {"api_key_id": 7, "key": "idem-1", "request_hash": "x", "status_code": 201,
            "response": {}, "created_at": NOW}  # fmt: skip
    with db.write_engine.begin() as conn:
        _fill(conn)
    with pytest.raises(IntegrityError), db.write_engine.begin() as conn:
        repo._P_ADD_IDEM.rows(conn, idem)
    with pytest.raises(IntegrityError), db.write_engine.begin() as conn:  # a claim's writes
        repo.claim_writes(conn=conn, ruleset="r1", leases=[], put_back=[], decisions=[],
                          attempts=[(None, "k0", "2026-05-12", NOW, None)])  # type: ignore[list-item]  # fmt: skip
    with pytest.raises(IntegrityError), db.write_engine.begin() as conn:  # after a read
        repo.outcome_state(conn=conn, api_key_id=7, key="idem-1", call_id="k0")
        repo._P_ADD_IDEM.rows(conn, idem)


def test_an_outcome_is_stored_whole(db: Database) -> None:
    """An outcome with an opt-out and a refusal: the outcome under the id its answer gives, its
    call closed, both suppressions, the answer under the key (replayed the same), on either
    database (PostgreSQL writes most of it in one statement)."""
    with db.write_engine.begin() as conn:
        _fill(conn)
    body = {"status": "connected", "opt_out": True, "refused": True, "notes": "不要再打"}
    args = {"db": db, "call_id": "k3", "api_key_id": 7, "idem_key": "new-key", "body": body,
            "now": NOW, "refusal_days": 180}  # fmt: skip
    first = outcomes.record_outcome(**args)
    again = outcomes.record_outcome(**args)
    assert first.status_code == 201 and not first.replayed
    assert again.replayed and again.body == first.body
    with db.write_engine.connect() as conn:
        stored = conn.execute(select(table(Outcome)).where(table(Outcome).c.call_id == "k3"))
        row = stored.mappings().one()
        assert row["id"] == first.body["id"] and row["opt_out"] and row["notes"] == "不要再打"
        call = conn.execute(select(table(Call)).where(table(Call).c.id == "k3")).mappings().one()
        assert call["status"] == "done" and call["lease_until"] is None
        blocks = conn.execute(select(table(Block).c.kind, table(Block).c.until,
                                     table(Block).c.phone_key)
                              .where(table(Block).c.call_id == "k3")).all()  # fmt: skip
        assert sorted(blocks, key=lambda b: b[0]) == [  # the customer's and its number's
            ("opt_out", None, "+8613800000003"),
            ("refusal", NOW + timedelta(days=180), "+8613800000003"),
        ]
        answers = select(table(IdempotencyKey).c.response).where(
            table(IdempotencyKey).c.key == "new-key"
        )
        assert conn.execute(answers).scalar_one() == first.body


def test_statements_the_server_dropped_are_prepared_again(db: Database) -> None:
    """If the server forgets a connection's prepared statements (``DEALLOCATE ALL``: a pooler,
    a manual reset), the next Core write fails on it once, is run again and works."""
    if db.is_sqlite:
        pytest.skip("PostgreSQL's prepared statements")
    with db.write_engine.begin() as conn:
        _fill(conn)

    def candidates(conn: Connection) -> list[str]:
        return [c[0] for c in repo.claim_candidates(conn=conn, campaign_id="cmp", now=NOW, limit=5)]

    assert write_core(db, candidates) == ["k0", "k2"]
    with db.write_engine.connect() as conn:  # the pool's one connection
        conn.exec_driver_sql("DEALLOCATE ALL")
        conn.commit()
    assert write_core(db, candidates) == ["k0", "k2"]


def test_a_batch_of_writes_is_all_or_nothing_and_its_connection_goes_on(db: Database) -> None:
    """A write run for many rows at once (on PostgreSQL the rows are pipelined: sent
    together, answered together) writes every row; when a row in the middle fails, the
    error is SQLAlchemy's, raised once, and the transaction keeps nothing of the batch; the
    same connection then runs the next batch."""

    def answer(key: str) -> dict[str, Any]:
        return {"api_key_id": 7, "key": key, "request_hash": "h-" + key, "status_code": 201,
                "response": {"key": key, "城市": "广州"}, "created_at": NOW}  # fmt: skip

    keys = select(table(IdempotencyKey).c.key).order_by(table(IdempotencyKey).c.key)
    with db.write_engine.begin() as conn:
        _fill(conn)
    with db.write_engine.connect() as conn:
        before = conn.execute(keys).scalars().all()
        conn.rollback()
        with pytest.raises(IntegrityError, match="(?i)unique|duplicate"), conn.begin():
            repo._P_ADD_IDEM.many(conn, [answer("b-1"), answer("idem-1"), answer("b-2")])
        assert conn.execute(keys).scalars().all() == before
        conn.rollback()
        with conn.begin():
            repo._P_ADD_IDEM.many(conn, [answer(f"b-{i}") for i in range(5)])
        stored = conn.execute(select(table(IdempotencyKey)).where(
            table(IdempotencyKey).c.key.like("b-%")).order_by(table(IdempotencyKey).c.key)
        ).mappings().all()  # fmt: skip
    assert [r["key"] for r in stored] == [f"b-{i}" for i in range(5)]
    assert all(r["response"] == {"key": r["key"], "城市": "广州"} for r in stored)
    assert all(r["created_at"] == NOW and r["request_hash"] == "h-" + r["key"] for r in stored)


def test_statements_run_together_answer_in_order_and_fail_as_one(db: Database) -> None:
    """Statements run together (:func:`pipelined`: on PostgreSQL one round trip) run in the
    order given, each seeing what the ones before it wrote, and each answers with its own
    rows (a statement given no parameters is not run, and answers none). When one fails,
    the error is SQLAlchemy's and the statements after it did nothing; the same connection
    then runs the next batch."""
    idem = table(IdempotencyKey)

    def answer(key: str) -> dict[str, Any]:
        return {"api_key_id": 7, "key": key, "request_hash": "h-" + key, "status_code": 201,
                "response": {"key": key}, "created_at": NOW}  # fmt: skip

    seen = Prepared(select(idem.c.key, idem.c.response).where(
        idem.c.key.in_(bindparam("keys", expanding=True))).order_by(idem.c.key))  # fmt: skip
    with db.write_engine.begin() as conn:
        _fill(conn)
    with db.write_engine.connect() as conn:
        conn.rollback()
        with conn.begin():
            got = pipelined(conn, [
                (seen, [{"keys": ["idem-1", "p-1"]}]),
                (repo._P_ADD_IDEM, [answer("p-1"), answer("p-2")]),
                (repo._P_CLOSE_CALL, []),
                (seen, [{"keys": ["idem-1", "p-1"]}, {"keys": ["p-2", "p-9"]}]),
            ])  # fmt: skip
        assert got == [
            [("idem-1", {"id": 1, "status": "connected", "converted": False})],
            [],
            [],
            [("idem-1", {"id": 1, "status": "connected", "converted": False}),
             ("p-1", {"key": "p-1"}), ("p-2", {"key": "p-2"})],
        ]  # fmt: skip
        with pytest.raises(IntegrityError, match="(?i)unique|duplicate"), conn.begin():
            pipelined(conn, [
                (repo._P_ADD_IDEM, [answer("p-3")]),
                (repo._P_ADD_IDEM, [answer("p-1")]),  # stored above
                (repo._P_ADD_IDEM, [answer("p-4")]),
            ])  # fmt: skip
        conn.rollback()
        with conn.begin():
            after = pipelined(conn, [(seen, [{"keys": ["p-1", "p-3", "p-4"]}])])
    assert after == [[("p-1", {"key": "p-1"})]]


def test_writes_kept_for_later_go_with_the_next_statement_or_the_commit(db: Database) -> None:
    """In a :func:`transaction`, writes run ``later`` (on PostgreSQL kept, to go with the next
    statement or the ``COMMIT``) are seen by the transaction's next statements, the prepared
    ones and SQLAlchemy's alike, and committed with it. Leaving with an error writes none of
    them, and the connection goes on clean; a kept write that fails raises SQLAlchemy's error
    on leaving, and nothing of that transaction is written."""
    idem = table(IdempotencyKey)

    def answer(key: str) -> dict[str, Any]:
        return {"api_key_id": 7, "key": key, "request_hash": "h-" + key, "status_code": 201,
                "response": {"key": key}, "created_at": NOW}  # fmt: skip

    def later(conn: Connection, *keys: str) -> None:
        assert pipelined(conn, [(repo._P_ADD_IDEM, [answer(k) for k in keys])], later=True) == [[]]

    def stored() -> list[str]:
        with db.write_engine.connect() as conn:
            return list(conn.execute(select(idem.c.key).order_by(idem.c.key)).scalars())

    seen = Prepared(select(idem.c.key).where(idem.c.key.like("p-%")).order_by(idem.c.key))
    with db.write_engine.begin() as conn:
        _fill(conn)
    with db.write_engine.begin() as conn, transaction(conn):
        later(conn, "p-1")
        assert seen.rows(conn, {}) == [("p-1",)]
        later(conn, "p-2")
        assert conn.execute(select(idem.c.key).where(idem.c.key == "p-2")).scalar() == "p-2"
        later(conn, "p-3")
    assert stored() == ["idem-1", "p-1", "p-2", "p-3"]
    with pytest.raises(RuntimeError, match="given up"):
        with db.write_engine.begin() as conn, transaction(conn):
            later(conn, "p-4")
            raise RuntimeError("given up")
    with db.write_engine.begin() as conn, transaction(conn):  # the pool's connection, clean
        later(conn, "p-5")
    assert stored() == ["idem-1", "p-1", "p-2", "p-3", "p-5"]
    with pytest.raises(IntegrityError, match="(?i)unique|duplicate"):
        with db.write_engine.begin() as conn, transaction(conn):
            assert seen.rows(conn, {})[0] == ("p-1",)
            later(conn, "p-6", "p-1")  # p-1 is stored already
    assert stored() == ["idem-1", "p-1", "p-2", "p-3", "p-5"]


def test_a_claim_and_an_outcome_each_take_few_round_trips(db: Database) -> None:
    """On PostgreSQL a claim takes three round trips to the server (its transaction's
    ``BEGIN`` with the candidates' scan; the customers' locks with their facts; the writes
    with the ``COMMIT``) and an outcome two (``BEGIN`` with what it reads; the writes with
    the ``COMMIT``). Each round trip is one ``ReadyForQuery`` in libpq's trace."""
    if db.is_sqlite:
        pytest.skip("PostgreSQL's round trips")
    from psycopg import pq
    from sqlalchemy import event

    from scripts_engine.claims import Claim
    from scripts_engine.config import ROOT as PROJECT
    from scripts_engine.gate import CallingRules, Gate

    with db.write_engine.begin() as conn:
        _fill(conn)
    traces: list[Any] = []

    def trace(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        out = Path(tempfile.mkdtemp()) / "trace"
        traces.append((out, out.open("wb"), dbapi_connection.pgconn))
        dbapi_connection.pgconn.trace(traces[-1][1].fileno())
        dbapi_connection.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)

    def round_trips(run: Any) -> tuple[Any, int]:
        traces.clear()
        event.listen(db.write_engine, "checkout", trace)
        try:
            got = run()
        finally:
            event.remove(db.write_engine, "checkout", trace)
        ((path, sink, pgconn),) = traces
        pgconn.untrace()  # libpq's trace is buffered until then
        sink.close()
        return got, path.read_text().count("ReadyForQuery")

    gate = Gate(CallingRules.load(PROJECT / "personas"))
    claimed, trips = round_trips(lambda: write_core(db, Claim(gate, "cmp", 9, 1, 600, NOW)))
    ((call,),) = [claimed.calls]
    assert trips == 3
    answer, trips = round_trips(lambda: outcomes.record_outcome(
        db=db, call_id=call.call_id, api_key_id=9, idem_key="rt", body={"status": "connected"}, now=NOW,
        refusal_days=180))  # fmt: skip
    assert answer.status_code == 201 and trips == 2


def test_libpq_is_asked_whether_an_answer_is_in_holding_the_interpreter_lock(
    db: Database,
) -> None:
    """A pipeline asks libpq, for each answer, whether it is in. It asks the libpq psycopg
    loaded, directly, without letting go of the interpreter lock, and it gets psycopg's
    answer: busy while the server's answer has not been read, not busy once it has."""
    if db.is_sqlite:
        pytest.skip("libpq")
    import select as select_

    from scripts_engine.db import prepared

    with db.write_engine.connect() as conn:
        conn.rollback()  # SQLAlchemy's own BEGIN, if any, answered
        raw: Any = conn.connection.dbapi_connection
        pgconn = raw.pgconn
        busy = prepared._is_busy()  # noqa: SLF001
        assert busy is not None, "libpq should be found: without it every check lets go of the lock"
        assert busy(pgconn.pgconn_ptr) == pgconn.is_busy() == 0
        pgconn.send_query(b"SELECT pg_sleep(0.2)")
        while pgconn.flush():
            select_.select([], [pgconn.socket], [])
        assert busy(pgconn.pgconn_ptr) == pgconn.is_busy() == 1  # the server is still at it
        while busy(pgconn.pgconn_ptr):
            select_.select([pgconn.socket], [], [])
            pgconn.consume_input()
        assert pgconn.is_busy() == 0
        assert pgconn.get_result() is not None and pgconn.get_result() is None
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1  # and the connection goes on


#: run in a process of its own (argv: database URL, state folder): if waiting for the lock
#: held the interpreter lock, nothing in the process could run again, the test included
_LOCK_WAIT = """
import sys, threading, time
from pathlib import Path
from scripts_engine.config import Settings
from scripts_engine.db import repository as repo
from scripts_engine.db.prepared import pipelined
from scripts_engine.db.session import open_database

db = open_database(Settings(state_dir=Path(sys.argv[2])), url=sys.argv[1])
holder = db.write_engine.connect()
holder.begin()
holder.exec_driver_sql("SELECT 1 FROM customers WHERE customer_id = 'c1' FOR UPDATE")
got = []

def waiter():
    with db.write_engine.begin() as conn:
        got.extend(pipelined(conn, [(repo._P_LOCK_CUSTOMERS, [{"ids": ["c1"]}]),
                                    (repo._P_SUBJECTS, [{"ids": ["c1"]}])]))

thread = threading.Thread(target=waiter)
thread.start()
time.sleep(0.5)  # the waiter is waiting for the row lock now
ticks = sum(1 for _ in range(100_000))  # this thread runs meanwhile
holder.commit()
thread.join(20)
assert not thread.is_alive() and ticks == 100_000, "stuck"
print(got[1][0][0])
"""


def test_a_statement_waiting_for_a_lock_in_a_batch_lets_the_process_go_on(
    db: Database, tmp_path: Any
) -> None:
    """A statement of a batch run together (:func:`pipelined`) that waits for a row lock
    (a claim locking its customers, an outcome its calls) waits without the interpreter
    lock: the thread whose transaction holds that lock goes on, and commits. (psycopg
    waited for the answer in libpq holding it: the whole service stopped, the first time
    the dialler benchmark ran with the customers' lock in a batch.)"""
    if db.is_sqlite:
        pytest.skip("PostgreSQL's row locks")
    with db.write_engine.begin() as conn:
        _fill(conn)
    done = subprocess.run(
        [sys.executable, "-c", _LOCK_WAIT, db.url, str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "c1"
