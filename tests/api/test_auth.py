"""Keys and roles: the role x route matrix (generated from the app's routes, so a new route
without an entry fails), revocation at once, keys never in URLs, hashed at rest."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from scripts_engine.config import Settings
from scripts_engine.db.models import ApiKey
from scripts_engine.db.session import open_database
from tests.api.conftest import ROLES, Clock, auth, create_keys, make_client

ALL = set(ROLES)
STAFF = {"admin", "writer", "qa"}
#: who may call each route (everyone else gets 403)
MATRIX: dict[tuple[str, str], set[str]] = {
    ("POST", "/v1/keys"): {"admin"},
    ("GET", "/v1/keys"): {"admin"},
    ("DELETE", "/v1/keys/{prefix}"): {"admin"},
    ("POST", "/v1/keys/{prefix}/signing-secret"): {"admin"},
    ("POST", "/v1/customers"): {"admin"},
    ("POST", "/v1/customers/import"): {"admin"},
    ("GET", "/v1/customers/{customer_id}"): {"admin", "qa"},
    ("POST", "/v1/dnc"): {"admin"},
    ("GET", "/v1/dnc/{phone}"): {"admin", "qa"},
    ("DELETE", "/v1/dnc/{phone}"): {"admin"},
    ("POST", "/v1/score"): {"admin", "writer", "qa"},
    ("POST", "/v1/scripts/render"): {"admin", "writer", "qa"},
    ("POST", "/v1/campaigns"): {"admin"},
    ("GET", "/v1/campaigns"): {"admin", "qa", "dialler"},
    ("GET", "/v1/campaigns/{campaign_id}"): {"admin", "qa", "dialler"},
    ("POST", "/v1/campaigns/{campaign_id}/calls/claim"): {"dialler"},
    ("POST", "/v1/calls/{call_id}/outcome"): {"dialler"},
    ("GET", "/v1/calls"): {"admin", "qa"},
    ("GET", "/v1/calls/{call_id}"): {"admin", "qa"},
    ("GET", "/v1/audio/{name}"): ALL,
    ("HEAD", "/v1/audio/{name}"): ALL,
    ("GET", "/v1/voices"): ALL,
    ("POST", "/v1/voices/synthesize"): {"admin", "writer", "qa"},
    ("GET", "/v1/stats/profiles"): {"admin", "qa"},
    ("GET", "/v1/templates"): STAFF,
    ("GET", "/v1/templates/{name}"): STAFF,
    ("PUT", "/v1/templates/{name}"): {"admin", "writer"},
    ("GET", "/v1/template-versions/{version_id}"): STAFF,
    ("GET", "/v1/template-versions/{version_id}/diff"): STAFF,
    ("POST", "/v1/template-versions/{version_id}/submit"): {"admin", "writer"},
    ("POST", "/v1/template-versions/{version_id}/approve"): {"admin", "qa"},
    ("POST", "/v1/template-versions/{version_id}/reject"): {"admin", "qa"},
    ("POST", "/v1/template-versions/{version_id}/publish"): STAFF,
    ("POST", "/v1/template-versions/{version_id}/rollback"): {"admin", "qa"},
    ("GET", "/v1/template-events"): STAFF,
    ("POST", "/v1/previews"): STAFF,
    ("GET", "/v1/reviews/scorecard"): STAFF,
    ("POST", "/v1/reviews/queue"): {"admin", "qa"},
    ("POST", "/v1/reviews/calibrations"): {"admin", "qa"},
    ("GET", "/v1/reviews/calibrations/{session_id}"): {"admin", "qa"},
    ("GET", "/v1/reviews"): {"admin", "qa"},
    ("GET", "/v1/reviews/{review_id}"): {"admin", "qa"},
    ("POST", "/v1/reviews/{review_id}/scorecard"): {"admin", "qa"},
    ("GET", "/v1/reports/campaigns/{campaign_id}"): STAFF,
    ("GET", "/v1/reports/templates"): STAFF,
    ("POST", "/v1/campaigns/{campaign_id}/refresh-scripts"): {"admin", "qa"},
    ("GET", "/v1/campaigns/{campaign_id}/refresh-scripts"): {"admin", "qa", "writer"},
}
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}


def routes(client: TestClient) -> list[tuple[str, str]]:
    """Every operation of the OpenAPI schema."""
    paths = client.get("/openapi.json").json()["paths"]
    return [(m.upper(), p) for p, ops in paths.items() for m in ops]


def test_every_route_is_in_the_matrix(client: TestClient) -> None:
    assert set(routes(client)) == set(MATRIX) | PUBLIC


def test_role_matrix(client: TestClient, keys: dict[str, str]) -> None:
    for (method, path), allowed in MATRIX.items():
        url = path.format(prefix="nope", customer_id="nope", campaign_id="nope", call_id="nope",
                          name="0" * 64 + ".wav", version_id="1", review_id="1",
                          session_id="nope", phone="13800001234")  # fmt: skip
        assert client.request(method, url).status_code == 401, (method, path)
        for role in ROLES:
            r = client.request(method, url, headers=auth(keys[role]), json={})
            if role in allowed:
                # (a 401 for a missing outcome signature is past the key and role checks)
                assert r.status_code != 403, (method, path, role, r.text)
                assert r.status_code != 401 or r.json()["code"] == "bad_signature", r.text
            else:
                assert r.status_code == 403, (method, path, role, r.status_code)
                assert r.json()["code"] == "forbidden"


def test_revocation_is_immediate(client: TestClient, keys: dict[str, str]) -> None:
    r = client.post("/v1/keys", json={"role": "qa", "name": "temp"}, headers=auth(keys["admin"]))
    key, prefix = r.json()["key"], r.json()["prefix"]
    assert client.get("/v1/campaigns", headers=auth(key)).status_code == 200
    r = client.delete(f"/v1/keys/{prefix}", headers=auth(keys["admin"]))
    assert r.status_code == 200 and r.json()["revoked_at"]
    r = client.get("/v1/campaigns", headers=auth(key))
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "header",
    ["Bearer se_nope_nope", "Bearer garbage", "Basic dXNlcjpwYXNz", "Bearer "],
    ids=["unknown", "garbled", "basic", "empty"],
)
def test_bad_keys_are_401(client: TestClient, keys: dict[str, str], header: str) -> None:
    r = client.get("/v1/campaigns", headers={"Authorization": header})
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"


@pytest.mark.parametrize("form", ["bearer {}", "BEARER  {} ", "Bearer {}"])
def test_the_bearer_scheme_is_read_as_http_says(
    client: TestClient, keys: dict[str, str], form: str
) -> None:
    """The scheme in any case, the key with the spaces around it stripped."""
    r = client.get("/v1/campaigns", headers={"Authorization": form.format(keys["admin"])})
    assert r.status_code == 200, r.text


def test_a_tampered_secret_is_refused(client: TestClient, keys: dict[str, str]) -> None:
    key = keys["admin"]
    bad = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert client.get("/v1/campaigns", headers=auth(bad)).status_code == 401


def test_keys_in_urls_are_refused(client: TestClient, keys: dict[str, str]) -> None:
    for query in (f"api_key={keys['admin']}", f"x={keys['admin']}", "token=abc"):
        r = client.get(f"/v1/campaigns?{query}", headers=auth(keys["admin"]))
        assert r.status_code == 400 and r.json()["code"] == "key_in_url"


def test_keys_are_stored_hashed(client: TestClient, keys: dict[str, str], api_settings: Settings):
    db = open_database(api_settings)
    with db.read() as session:
        rows = session.scalars(select(ApiKey)).all()
    db.dispose()
    stored = " ".join(f"{r.prefix} {r.secret_hash}" for r in rows)
    for key in keys.values():
        assert key.split("_", 2)[2] not in stored


def test_the_schema_documents_the_key_on_every_keyed_route(client: TestClient) -> None:
    """A dialler written from the OpenAPI schema knows which routes take the bearer key (the
    routes' access checks are one dependency each, which must still show in the schema)."""
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"] == {
        "HTTPBearer": {"type": "http", "scheme": "bearer",
                       "description": "An API key: `Authorization: Bearer se_...`"}
    }  # fmt: skip
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            keyed = (method.upper(), path) not in PUBLIC
            assert (op.get("security") == [{"HTTPBearer": []}]) == keyed, (method, path)
    # every operation's tag is described, in the order the docs list them
    declared = [t["name"] for t in spec["tags"]]
    used = {t for ops in spec["paths"].values() for op in ops.values() for t in op["tags"]}
    assert used == set(declared) and declared[:3] == ["operations", "keys", "customers"]
    assert all(t["description"] for t in spec["tags"])


def test_a_revocation_anywhere_takes_effect_at_once_in_every_server_process(
    api_settings: Settings, clock: Clock
) -> None:
    """Two server processes of one state folder (two apps here), keys remembered for a whole
    minute: a key revoked through one of them, or from the command line, is refused at once
    by both."""
    from click.testing import CliRunner

    from scripts_engine.cli import main

    settings = api_settings.model_copy(update={"auth_cache_s": 60.0})
    with make_client(settings, clock) as one, make_client(settings, clock) as two:
        keys = create_keys(settings)
        made = [one.post("/v1/keys", json={"role": "dialler"}, headers=auth(keys["admin"]))
                for _ in range(2)]  # fmt: skip
        (first, p1), (second, p2) = [(r.json()["key"], r.json()["prefix"]) for r in made]
        for client in (one, two):  # both remember both keys
            for key in (first, second):
                assert client.get("/v1/campaigns", headers=auth(key)).status_code == 200
        assert one.delete(f"/v1/keys/{p1}", headers=auth(keys["admin"])).status_code == 200
        assert two.get("/v1/campaigns", headers=auth(first)).status_code == 401
        assert two.get("/v1/campaigns", headers=auth(second)).status_code == 200
        res = CliRunner().invoke(main, ["keys", "revoke", p2], obj=settings)
        assert res.exit_code == 0, res.output
        for client in (one, two):
            assert client.get("/v1/campaigns", headers=auth(second)).status_code == 401
