"""The QA queue on a real database: the stratified sample (deterministic, about the rate, small
strata too), every must-review trigger, no duplicates on rebuild, segregation of duties, the
scorecard rules, blind calibration and its spread."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from scripts_engine import qa
from scripts_engine import versions as vs
from scripts_engine.db.errors import Conflict, Forbidden
from scripts_engine.db.models import (
    Call,
    CallDocument,
    Campaign,
    Outcome,
    ReviewItem,
    TemplateVersion,
)
from scripts_engine.db.session import Database, write_transaction

NOW = datetime(2026, 5, 12, 2, 0, tzinfo=UTC)
BOB = vs.Actor("bob", "qa", 2)
DAVE = vs.Actor("dave", "qa", 3)
PASS = dict.fromkeys(qa.CRITICAL, "pass")
GOOD = {"clarity": 4, "persona_fit": 4, "dialect_naturalness": 4, "pacing": 4}
NEW = ("call/signoff", "b" * 16)  # written by alice
OLD = ("call/opening", "a" * 16)  # a system seed


def fill(db: Database, n: int = 200) -> None:
    """A campaign of ``n`` calls in two profiles; the first 5 use alice's new version."""

    def run(s: Any) -> None:
        s.add(Campaign(id="C-q", name="q", options={}, status="ready", total=n, done=n, failed=0,
                       created_at=NOW, updated_at=NOW))  # fmt: skip
        for name, version, author in (OLD + ("system",), NEW + ("alice",)):
            s.add(TemplateVersion(name=name, kind="template", version=version, source="x",
                                  status="live", author=author, message="", lint=[],
                                  lint_errors=0, created_at=NOW, flags=0))  # fmt: skip
        s.flush()
        for i in range(n):
            used = [OLD, NEW] if i < 5 else [OLD]
            record = {
                "pack_version": "p1" if i < 150 else "p2",
                "templates": [{"template": t, "version": v} for t, v in used],
                "context": {"offer": {"kind": "wealth" if i == 7 else "deposit"},
                            "customer": {"age": 66 if i == 8 else 40}},
            }  # fmt: skip
            s.add(Call(id=f"K-{i:03d}", campaign_id="C-q", customer_id=f"c{i}", chunk=0,
                       group="model", profile_id="P-1" if i % 4 else "P-2", audio={},
                       status="done", claims=1, created_at=NOW))  # fmt: skip
            s.add(CallDocument(call_id=f"K-{i:03d}", script={}, record=record))
        s.flush()
        # K-011: the dialler's complaint field; K-010: only the notes say it (the fallback)
        for i, extra in ((9, {"opt_out": True}), (10, {"notes": "他说要去监管部门投诉"}),
                         (11, {"complaint": True, "notes": "挂断前很不满"}),
                         (12, {"notes": "客户满意"})):  # fmt: skip
            s.add(Outcome(call_id=f"K-{i:03d}", campaign_id="C-q", customer_id=f"c{i}",
                          status="connected", converted=False, refused=False, api_key_id=1,
                          created_at=NOW, **{"opt_out": False, **extra}))  # fmt: skip

    write_transaction(db, run)


def test_stratified_sample_is_deterministic_and_about_the_rate() -> None:
    strata = {("P-1", "v1"): [f"a{i}" for i in range(1000)],
              ("P-2", "v1"): [f"b{i}" for i in range(30)]}  # fmt: skip
    first = qa.stratified_sample(strata, 0.02, seed="C-1")
    assert first == qa.stratified_sample(strata, 0.02, seed="C-1")
    per = Counter(cid[0] for cid in first)
    assert per["a"] == 20 and per["b"] in (0, 1)  # 0.6 expected: floor 0, plus a 60 % draw
    # over many campaigns, a small stratum is sampled at the rate on average
    small = {("P", "v"): [f"c{i}" for i in range(30)]}
    mean = sum(len(qa.stratified_sample(small, 0.02, seed=f"C-{k}")) for k in range(2000)) / 2000
    assert abs(mean - 0.6) < 0.05
    assert qa.stratified_sample(strata, 0.0, seed="C-1") == set()


def test_queue_has_the_sample_and_every_must_review(db: Database) -> None:
    fill(db)
    counts = qa.build_queue(db=db, campaign_id="C-q", rate=0.02, new_version_renders=3,
                            actor=BOB, now=NOW)  # fmt: skip
    with db.read() as s:
        items = {i.call_id: i for i in s.scalars(select(ReviewItem))}
    reasons = {cid: set(i.reasons) for cid, i in items.items()}
    assert {c for c, r in reasons.items() if "new_version" in r} == {"K-000", "K-001", "K-002"}
    assert "wealth" in reasons["K-007"] and "age_60" in reasons["K-008"]
    assert "opt_out" in reasons["K-009"] and "complaint" in reasons["K-010"]
    assert "complaint" in reasons["K-011"] and "complaint" not in reasons.get("K-012", set())
    assert counts["by_reason"]["complaint"] == 2
    sampled = [c for c, r in reasons.items() if "sample" in r]
    assert 2 <= len(sampled) <= 6  # 2 % of 200 in 4 strata (floor + a draw each)
    assert counts["by_reason"]["sample"] == len(sampled)
    assert items["K-000"].authors == ["alice", "system"]
    again = qa.build_queue(db=db, campaign_id="C-q", rate=0.02, new_version_renders=3,
                           actor=BOB, now=NOW)  # fmt: skip
    assert again["added"] == 0
    with db.read() as s:
        assert len(list(s.scalars(select(ReviewItem)))) == len(items)


def test_the_listing_pages_with_a_cursor(db: Database) -> None:
    fill(db)
    qa.build_queue(db=db, campaign_id="C-q", rate=0.05, new_version_renders=3, actor=BOB, now=NOW)
    with db.read() as s:
        everything = [i.id for i, _ in qa.list_items(s, reviewer="bob", limit=1000)]
        pages, before = [], None
        while page := qa.list_items(s, reviewer="bob", limit=3, before=before):
            pages.append([i.id for i, _ in page])
            before = page[-1][0].id
        wealth = [i.id for i, _ in qa.list_items(s, reviewer="bob", reason="wealth", limit=1)]
    assert len(everything) > 6 and everything == sorted(everything, reverse=True)
    assert [i for p in pages for i in p] == everything and all(len(p) == 3 for p in pages[:-1])
    assert len(wealth) == 1  # K-007's item, found below the newer ones
    # alice wrote the template of K-000..K-004: her pages skip those and still fill up
    with db.read() as s:
        hers = [i for i, _ in qa.list_items(s, reviewer="alice", limit=3)]
    assert len(hers) == 3 and all("alice" not in i.authors for i in hers)
    # the newest item is a calibration for others: dave's first page of one looks further
    qa.start_calibration(db=db, call_ids=["K-010"], reviewers=["bob", "erin"], actor=BOB, now=NOW)
    with db.read() as s:
        (newest, _), *_ = qa.list_items(s, reviewer="bob", limit=1, mine=False)
        (first, _), *_ = qa.list_items(s, reviewer="dave", limit=1)
    assert newest.assignees == ["bob", "erin"] and first.id == everything[0]


def test_scorecard_rules_and_segregation(db: Database, store: vs.VersionStore) -> None:
    fill(db)
    qa.build_queue(db=db, campaign_id="C-q", rate=0.0, new_version_renders=3, actor=BOB, now=NOW)
    with db.read() as s:
        item = s.scalar(select(ReviewItem).where(ReviewItem.call_id == "K-000"))
    assert item is not None
    with db.read() as s:
        assert item.id not in {i.id for i, _ in qa.list_items(s, reviewer="alice")}
    with pytest.raises(Forbidden):
        qa.submit_scorecard(db=db, versions=store, item_id=item.id,
                            actor=vs.Actor("alice", "qa", 9), critical=PASS, quality=GOOD,
                            defects=[], notes="", now=NOW)  # fmt: skip
    with pytest.raises(qa.InvalidScorecard):  # a critical item left out
        qa.submit_scorecard(db=db, versions=store, item_id=item.id, actor=BOB,
                            critical={"opening_disclosure": "pass"}, quality=GOOD, defects=[],
                            notes="", now=NOW)  # fmt: skip
    with pytest.raises(qa.InvalidScorecard):  # a template the call did not use
        qa.submit_scorecard(db=db, versions=store, item_id=item.id, actor=BOB,
                            critical={**PASS, "opening_disclosure": "fail"}, quality=GOOD,
                            defects=[{"template": "call/close/soft", "item": "opening_disclosure"}],
                            notes="", now=NOW)  # fmt: skip
    row = qa.submit_scorecard(db=db, versions=store, item_id=item.id, actor=BOB,
                              critical={**PASS, "opening_disclosure": "fail"}, quality=GOOD,
                              defects=[{"template": "call/signoff", "item": "opening_disclosure",
                                        "note": ""}], notes="", now=NOW)  # fmt: skip
    assert not row.passed and row.score == 75.0 and row.defects[0]["version"] == NEW[1]
    with db.read() as s:
        flagged = vs.find_versions(s, [NEW, OLD])
        assert flagged[NEW].flags == 1 and flagged[OLD].flags == 0
        assert s.get(ReviewItem, item.id).status == "done"  # type: ignore[union-attr]
    with pytest.raises(Conflict):
        qa.submit_scorecard(db=db, versions=store, item_id=item.id, actor=BOB, critical=PASS,
                            quality=GOOD, defects=[], notes="", now=NOW)  # fmt: skip


def test_calibration_is_blind_until_everyone_scored(db: Database, store: vs.VersionStore):
    fill(db, n=20)
    with pytest.raises(Forbidden):  # alice wrote a template of K-000
        qa.start_calibration(db=db, call_ids=["K-000"], reviewers=["bob", "alice"], actor=BOB,
                             now=NOW)  # fmt: skip
    batch = qa.start_calibration(db=db, call_ids=["K-010", "K-011"], reviewers=["bob", "dave"],
                                 actor=BOB, now=NOW)  # fmt: skip
    with db.read() as s:
        items = [i for i, _ in qa.list_items(s, reviewer="bob", batch=batch)]
        assert [i for i, _ in qa.list_items(s, reviewer="erin", batch=batch)] == []
    scores = {"bob": (5, 5), "dave": (1, 4)}
    for who, (clarity, pacing) in scores.items():
        for item in items:
            actor = BOB if who == "bob" else DAVE
            qa.submit_scorecard(db=db, versions=store, item_id=item.id, actor=actor,
                                critical=PASS, quality={**GOOD, "clarity": clarity,
                                                        "pacing": pacing},
                                defects=[], notes="", now=NOW)  # fmt: skip
            if who == "bob":
                with db.read() as s:
                    got = qa.get_item(s, item.id)
                    seen = qa.visible_results(got, qa.results_of(s, item.id), DAVE)
                    assert seen == [] and got.status == "open"
    with db.read() as s:
        report = qa.calibration_report(s, batch, reveal=True)
    # bob 0.3*1 + 0.3*.75 + 0.2*.75 + 0.2*1 = 0.875; dave 0 + .225 + .15 + .15 = 0.525
    assert report["complete"] and report["mean_score_range"] == 35.0
    assert report["quality_sd"]["clarity"] == 2.0 and report["quality_sd"]["persona_fit"] == 0
    assert report["verdict_agreement"] == 1.0
