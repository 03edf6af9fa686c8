"""Schemathesis against the app's own OpenAPI schema, on a real server and database: no
input, valid or not, makes the service answer 5xx. Bounded: a few examples per operation,
sent with an admin key and with a dialler key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from api import create_app
from scripts_engine.config import Settings
from tests.api.conftest import PG_URL, Clock, auth, create_keys, demo_records, reset_postgres
from tests.api.server import build_now, running

MAX_EXAMPLES = 12


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def st_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, saved_model: Path
) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("st")
    if request.param == "postgres":
        if not PG_URL:
            pytest.skip("SCRIPTS_ENGINE_TEST_POSTGRES_URL is not set")
        reset_postgres(PG_URL)
        url = PG_URL
    else:
        url = f"sqlite:///{tmp / 'engine.db'}"
    cfg = Settings(state_dir=tmp, model_path=saved_model, database_url=url,
                   service_synthesis="inline")  # fmt: skip
    app = create_app(cfg, clock=Clock(), start_builder=False)
    with running(app) as base:
        keys = create_keys(cfg)
        with httpx.Client(base_url=base, headers=auth(keys["admin"])) as c:
            assert c.post("/v1/customers", json=demo_records(3)).status_code == 200
            assert c.post("/v1/campaigns", json={"name": "st", "min_hits": 0}).status_code == 202
        build_now(app)
        yield {"base": base, "keys": keys}


def test_no_server_errors(st_server: dict[str, Any]) -> None:
    """Every operation, a few generated cases each, answered without a 5xx."""
    schema = schemathesis.openapi.from_url(f"{st_server['base']}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 19
    failures: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), database=None)  # fmt: skip
        def run(case: Any) -> None:
            for role in ("admin", "dialler"):
                headers = {**auth(st_server["keys"][role]), "Idempotency-Key": "st-key"}
                case.call_and_validate(
                    base_url=st_server["base"], headers=headers, checks=[not_a_server_error]
                )

        try:
            run()
        except Exception as exc:  # collect them all, then fail once with every operation
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:2000])
    assert not failures, "\n\n".join(failures)
