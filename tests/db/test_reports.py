"""Report figures against values computed by hand on a small fixture: 13 calls (8 model, 5
control), 11 outcomes, 3 reviewed calls; the CLI prints the same figures as the engine."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from scripts_engine.cli import main
from scripts_engine.config import Settings
from scripts_engine.db.models import (
    Call,
    CallDocument,
    Campaign,
    Outcome,
    ReviewItem,
    ReviewResult,
)
from scripts_engine.db.session import Database, write_transaction
from scripts_engine.reports import campaign_report, defect_report

NOW = datetime(2026, 5, 12, 2, 0, tzinfo=UTC)
Z = 1.959963984540054  # the normal quantile for 95 %
CID = "C-report"
P1 = {"id": "P-1", "tags": ["silver", "warm"]}
P2 = {"id": "P-2", "tags": ["warm", "mobile"]}
#: (group, profile, hits, claimed, outcome: None or (status, converted, opt_out));
#: the dialler reported a complaint for K-7
CALLS: list[tuple[str, dict[str, Any], int, bool, tuple[str, bool, bool] | None]] = [
    ("model", P1, 5, True, ("connected", True, False)),
    ("model", P1, 5, True, ("connected", True, False)),
    ("model", P1, 5, True, ("connected", True, False)),
    ("model", P1, 5, True, ("connected", False, True)),
    ("model", P1, 5, True, ("no_answer", False, False)),
    ("model", P1, 5, False, None),
    ("model", P2, 6, True, ("connected", True, False)),
    ("model", P2, 6, True, ("connected", False, False)),
    ("control", P1, 5, True, ("connected", True, False)),
    ("control", P1, 5, True, ("connected", False, False)),
    ("control", P1, 5, True, ("busy", False, False)),
    ("control", P2, 6, True, ("connected", False, False)),
    ("control", P2, 6, True, None),
]  # fmt: skip


def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson's interval written out by hand."""
    p = k / n
    denom = 1 + Z * Z / n
    centre = (p + Z * Z / (2 * n)) / denom
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / denom
    return centre - half, centre + half


@pytest.fixture
def db(db: Database) -> Database:
    """The database with the hand-counted campaign."""

    def fill(s: Any) -> None:
        s.add(Campaign(id=CID, name="hand", options={"holdout_pct": 40}, status="ready",
                       total=13, done=13, failed=0, created_at=NOW, updated_at=NOW))  # fmt: skip
        s.flush()
        for i, (group, profile, hits, claimed, outcome) in enumerate(CALLS):
            tags = ["silver", "warm", "mobile", "affluent", "timing", "educated"][:hits]
            record = {"scoring": {"profile": profile, "hits": tags},
                      "templates": [{"template": "call/opening", "version": "a" * 16}]}  # fmt: skip
            s.add(Call(id=f"K-{i}", campaign_id=CID, customer_id=f"c{i}", chunk=0, group=group,
                       profile_id=profile["id"] if group == "model" else None, audio={},
                       status="done" if outcome else "ready", claims=int(claimed),
                       created_at=NOW))  # fmt: skip
            s.add(CallDocument(call_id=f"K-{i}", script={}, record=record))
            if outcome:
                status, converted, opt_out = outcome
                s.add(Outcome(call_id=f"K-{i}", campaign_id=CID, customer_id=f"c{i}",
                              status=status, converted=converted, opt_out=opt_out,
                              refused=False, complaint=i == 7, api_key_id=1,
                              created_at=NOW))  # fmt: skip
        s.flush()
        # three reviewed calls used call/opening@aaaa; one review traced a critical fail to it
        for i, fail in ((0, True), (1, False), (2, False)):
            item = ReviewItem(batch="queue", call_id=f"K-{i}", campaign_id=CID, profile_id="P-1",
                              pack_version="p", templates=[{"template": "call/opening",
                                                            "version": "a" * 16}],
                              authors=["alice"], reasons=["sample"], assignees=[], status="done",
                              created_by="qa", created_at=NOW)  # fmt: skip
            s.add(item)
            s.flush()
            critical = {"opening_disclosure": "fail" if fail else "pass"}
            defects = [{"template": "call/opening", "version": "a" * 16,
                        "item": "opening_disclosure"}] if fail else []  # fmt: skip
            s.add(ReviewResult(item_id=item.id, reviewer="bob", critical=critical, quality={},
                               score=50.0, passed=not fail, defects=defects, notes="",
                               created_at=NOW))  # fmt: skip

    write_transaction(db, fill)
    return db


def close(pair: list[float | None] | None, expected: tuple[float, float]) -> bool:
    assert pair is not None and pair[0] is not None and pair[1] is not None
    return abs(pair[0] - expected[0]) < 1e-4 and abs(pair[1] - expected[1]) < 1e-4


def test_funnel_conversion_and_lift_match_hand_computed_values(db: Database) -> None:
    with db.read() as session:
        r = campaign_report(session, CID)
    assert r["funnel"]["all"] == {"built": 13, "claimed": 12, "reported": 11, "connected": 9,
                                  "converted": 5, "opted_out": 1, "complaints": 1}  # fmt: skip
    assert r["funnel"]["model"] == {"built": 8, "claimed": 7, "reported": 7, "connected": 6,
                                    "converted": 4, "opted_out": 1, "complaints": 1}  # fmt: skip
    assert r["funnel"]["control"] == {"built": 5, "claimed": 5, "reported": 4, "connected": 3,
                                      "converted": 1, "opted_out": 0, "complaints": 0}  # fmt: skip
    model, control = r["conversion"]["model"], r["conversion"]["control"]
    assert (model["count"], model["n"], model["rate"]) == (4, 7, round(4 / 7, 4))
    assert close(model["ci95"], wilson(4, 7))  # (0.2504, 0.8416)
    assert close(control["ci95"], wilson(1, 4))  # (0.0456, 0.6994)
    # Newcombe's hybrid score interval for p1 - p0, from the two Wilson intervals
    p1, p0 = 4 / 7, 1 / 4
    (l1, u1), (l0, u0) = wilson(4, 7), wilson(1, 4)
    d = p1 - p0
    expected = (d - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2),
                d + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2))  # fmt: skip
    lift = r["lift"]
    assert lift["difference"] == round(d, 4) == 0.3214
    assert close(lift["difference_ci95"], expected)
    assert lift["difference_ci95"][0] < 0 < lift["difference_ci95"][1]  # 11 calls prove nothing
    assert lift["ratio"] == round(p1 / p0, 4)


def test_conversion_by_profile_tag_and_hit_count(db: Database) -> None:
    with db.read() as session:
        r = campaign_report(session, CID)

    def cells(rows: list[dict[str, Any]], key: str) -> dict[Any, tuple[int, int, int, int]]:
        return {row[key]: (row["model"]["count"], row["model"]["n"], row["control"]["count"],
                           row["control"]["n"]) for row in rows}  # fmt: skip

    # control customers are counted under the profile they would have had
    assert cells(r["by_profile"], "profile_id") == {"P-1": (3, 5, 1, 3), "P-2": (1, 2, 0, 1)}
    assert cells(r["by_tag"], "tag") == {"silver": (3, 5, 1, 3), "warm": (4, 7, 1, 4),
                                         "mobile": (1, 2, 0, 1)}  # fmt: skip
    assert cells(r["by_hit_count"], "hits") == {5: (3, 5, 1, 3), 6: (1, 2, 0, 1)}
    p1 = next(row for row in r["by_profile"] if row["profile_id"] == "P-1")
    assert p1["lift"]["difference"] == round(3 / 5 - 1 / 3, 4)


def test_defect_rate_per_template_version(db: Database) -> None:
    with db.read() as session:
        rows = defect_report(session)
    assert len(rows) == 1
    row = rows[0]
    assert (row["template"], row["version"]) == ("call/opening", "a" * 16)
    assert (row["defective_calls"], row["reviewed_calls"], row["rate"]) == (1, 3, 0.3333)
    assert close(row["ci95"], wilson(1, 3))  # (0.0615, 0.7923)


def test_cli_prints_the_same_figures(db: Database, db_url: str, tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, database_url=db_url)
    out = CliRunner().invoke(main, ["report", "--campaign", CID, "--json"], obj=settings)
    assert out.exit_code == 0, out.output
    with db.read() as session:
        expected = campaign_report(session, CID)
        expected["defects"] = defect_report(session, campaign_id=CID)
    assert json.loads(out.output) == json.loads(json.dumps(expected, default=str))
    text = CliRunner().invoke(main, ["report", "--campaign", CID], obj=settings)
    assert text.exit_code == 0 and "lift (model - control): 32.1%" in text.output
    missing = CliRunner().invoke(main, ["report", "--campaign", "C-nope"], obj=settings)
    assert missing.exit_code == 2 and "no campaign" in missing.output
