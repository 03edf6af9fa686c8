"""Web workspace fixtures: one real server (real SQLite database, real engine, real synthesis,
the campaign builder running) for the whole session, keys for each role, demo customers, and
one Chromium (Debian's, never downloaded) driven by Playwright.

The clock is pinned inside the calling window (as in the API tests) so diallers get calls.
Screenshots go to ``var/screenshots/`` (gitignored; CI keeps them as artefacts).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from api import create_app
from scripts_engine.config import ROOT, Settings
from tests.api.conftest import Clock, auth, create_keys, demo_records
from tests.api.server import running

SCREENSHOTS = ROOT / "var" / "screenshots"
CHROMIUM = (
    os.environ.get("SCRIPTS_ENGINE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
)
#: every 10th shipped demo customer is loaded into the test server (about 200, spread over
#: the whole file: the first rows are old contacts with few tag hits)
EVERY = 10


@dataclass
class Live:
    """The running server: its address, one key per role, the loaded customers."""

    url: str
    keys: dict[str, str]
    customers: list[dict[str, Any]]
    settings: Settings
    app: Any

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory, saved_model: Path) -> Iterator[Live]:
    state = tmp_path_factory.mktemp("web-state")
    settings = Settings(
        state_dir=state, model_path=saved_model, database_url=f"sqlite:///{state / 'engine.db'}",
        service_synthesis="inline", campaign_chunk_size=25, log_json=True,
    )  # fmt: skip
    app = create_app(settings, clock=Clock())
    with running(app) as url:
        keys = create_keys(settings)
        customers = demo_records(10_000)[::EVERY]
        with httpx.Client(base_url=url, timeout=60) as c:
            r = c.post("/v1/customers", json=customers, headers=auth(keys["admin"]))
            assert r.status_code == 200, r.text
        yield Live(url=url, keys=keys, customers=customers, settings=settings, app=app)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium under Playwright, one for the session."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium is not installed ({CHROMIUM}); `apt-get install -y chromium`")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@contextmanager
def fresh_page(browser: Any, live: Live, *, timeout_ms: int = 20_000) -> Iterator[Any]:
    """A page in a fresh browser context (no cookies) at 1280 x 900."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=live.url)
    p = context.new_page()
    p.set_default_timeout(timeout_ms)
    yield p
    context.close()


@pytest.fixture
def page(browser: Any, live: Live) -> Iterator[Any]:
    """A fresh browser context (no cookies) at 1280 x 900."""
    with fresh_page(browser, live) as p:
        yield p


@pytest.fixture
def second(browser: Any, live: Live) -> Iterator[Any]:
    """A second person's browser (its own cookies), for the four-eyes steps."""
    with fresh_page(browser, live, timeout_ms=60_000) as p:
        yield p


def shot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page: Any, key: str, *, lang: str | None = None) -> None:
    page.goto("/web/login" + (f"?lang={lang}" if lang else ""))
    page.get_by_label("API 密钥" if lang != "en" else "API key").fill(key)
    page.get_by_role("button", name="登录" if lang != "en" else "Sign in").click()
    page.wait_for_url("**/web/")


def no_horizontal_scroll(page: Any) -> tuple[int, int]:
    """(scroll width, viewport width) of the page: equal when nothing overflows sideways."""
    return page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
