"""The campaign page's figures, from the shared reports module, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from api.web.reports import page_report
from scripts_engine.config import Settings
from scripts_engine.db import repository as repo
from scripts_engine.db.migrate import upgrade
from scripts_engine.db.models import Outcome
from scripts_engine.db.session import open_database, write_transaction
from tests.api.conftest import db_url  # noqa: F401 - the sqlite/postgres fixture

NOW = datetime(2026, 5, 12, 2, 0, tzinfo=UTC)
#: (customer, group, profile, hits, outcome status or None, converted)
CALLS = [
    ("a", "model", "P-ABCDE", 5, "connected", True),
    ("b", "model", "P-ABCDE", 5, "connected", False),
    ("c", "model", "P-ABCDF", 6, "no_answer", False),
    ("d", "model", "P-ABCDF", 6, "connected", True),
    ("e", "control", None, 5, "connected", True),
    ("f", "control", None, 6, "connected", False),
    ("g", "control", None, None, "busy", False),
    ("h", "model", "P-ABCDE", 7, None, False),
]


def call_row(cid: str, customer: str, group: str, profile: str | None, hits: Any) -> dict[str, Any]:
    scoring = (
        None
        if hits is None
        else {"hits": ["t"] * hits, "profile": {"id": profile, "tags": []} if profile else {}}
    )
    return {"id": f"K-{customer}", "campaign_id": cid, "customer_id": customer, "chunk": 0,
            "group": group, "profile_id": profile, "script": {}, "record": {"scoring": scoring},
            "audio": {}, "status": "done", "claims": 1 if customer != "h" else 0,
            "created_at": NOW}  # fmt: skip


def test_campaign_report(db_url: str, tmp_path: Path) -> None:  # noqa: F811
    db = open_database(Settings(database_url=db_url, state_dir=tmp_path))
    upgrade(db)
    ids = [c[0] for c in CALLS] + ["x", "y"]  # two customers filtered out at build

    def setup(session: Any) -> None:
        repo.create_campaign(session=session, campaign_id="C-t", name="t", options={},
                             chunks=[ids], created_by=None, now=NOW)  # fmt: skip
        repo.insert_calls(session=session, calls=[call_row("C-t", c, g, p, h)
                                                  for c, g, p, h, _, _ in CALLS])  # fmt: skip
        for c, _, _, _, status, conv in CALLS:
            if status:
                session.add(Outcome(call_id=f"K-{c}", campaign_id="C-t", customer_id=c,
                                    status=status, converted=conv, api_key_id=1, created_at=NOW))  # fmt: skip

    write_transaction(db, setup)
    with db.read() as session:
        campaign = repo.get_campaign(session=session, campaign_id="C-t")
        assert campaign is not None
        report = page_report(session=session, campaign=campaign)
    db.dispose()
    assert {s["stage"]: s["count"] for s in report["funnel"]} == {
        "planned": 10, "selected": 8, "dialled": 7, "reported": 7, "connected": 5, "converted": 3,
    }  # fmt: skip
    assert [(r["hits"], r["outcomes"], r["converted"]) for r in report["by_hits"]] == [
        ("0", 1, 0), ("5", 3, 2), ("6", 3, 1),
    ]  # fmt: skip
    profiles = {r["profile_id"]: (r["outcomes"], r["converted"]) for r in report["by_profile"]}
    assert profiles == {"P-ABCDE": (2, 1), "P-ABCDF": (2, 1), "generic": (3, 1)}
    lift = report["lift"]
    assert lift["model"]["rate"] == pytest.approx(2 / 4, abs=1e-4)
    assert lift["control"]["rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert lift["lift"] == pytest.approx(1.5) and lift["low"] < 1.5 < lift["high"]
    assert lift["difference"] == pytest.approx(2 / 4 - 1 / 3, abs=1e-4)
    assert lift["diff_low"] < lift["difference"] < lift["diff_high"]
