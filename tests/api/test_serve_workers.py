"""``serve --workers N``: several server processes on one port are one service. Every scrape of
``/metrics`` counts the requests all of them answered, each process writes its log, and one
of them builds campaigns."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts_engine.config import Settings
from tests.api.server import free_port

pytestmark = pytest.mark.slow

_HEALTHZ = re.compile(
    r'^http_requests_total\{method="GET",route="/healthz",status="200"\} ([0-9.e+]+)$', re.M
)


def _get(base: str, path: str) -> httpx.Response:
    with httpx.Client(base_url=base, timeout=10) as c:  # a new connection: any process may take it
        return c.get(path)


def test_several_server_processes_are_one_service(tmp_path: Path, saved_model: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SCRIPTS_ENGINE_STATE_DIR": str(tmp_path / "state"),
           "SCRIPTS_ENGINE_MODEL_PATH": str(saved_model), "SCRIPTS_ENGINE_LOG_JSON": "true"}  # fmt: skip
    cmd = [str(Path(sys.executable).with_name("scripts-engine")), "serve", "--workers", "2",
           "--port", str(port)]  # fmt: skip
    log = (tmp_path / "serve.log").open("w+")
    server = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        answered, prefixes = 0, set()
        deadline = time.monotonic() + 180
        while len(prefixes) < 2:  # until both processes have answered
            assert time.monotonic() < deadline, "both processes should answer"
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                got = _get(base, "/healthz")
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            assert got.status_code == 200
            answered += 1
            prefixes.add(got.headers["x-request-id"][:8])  # a random prefix per process
        for _ in range(6):  # whichever process answers the scrape counts every one
            scraped = _get(base, "/metrics").text
            assert [float(n) for n in _HEALTHZ.findall(scraped)] == [answered]
        # one builds (while they stop, the one that stops last may take over: that is fine)
        serving = (tmp_path / "serve.log").read_text()
        assert serving.count("campaign builder: this process builds") == 1, serving
    finally:
        server.terminate()
        server.wait(60)
    log.seek(0)
    lines = log.read()
    log.close()
    assert "Traceback" not in lines, lines
    assert not list((tmp_path / "state").glob("*.db-journal"))


def test_servers_of_two_databases_in_one_state_folder_each_have_a_builder(
    api_settings: Settings, tmp_path: Path
) -> None:
    """The builder's lock file is per database: a server on PostgreSQL and one on SQLite
    sharing ``var/`` each build their own campaigns (with one lock file, the second never
    built while the first ran, and ``/readyz`` still said its builder was fine)."""
    from api import create_app

    other = api_settings.model_copy(update={"database_url": f"sqlite:///{tmp_path}/other.db"})
    apps = [create_app(s) for s in (api_settings, other, api_settings)]
    leases = [app_lease_path(app) for app in apps]
    assert leases[0] == leases[2] != leases[1]
    assert {p.parent for p in leases} == {api_settings.state_dir}


def app_lease_path(app: Any) -> Path:
    from fastapi.testclient import TestClient

    with TestClient(app):
        return Path(app.state.services.builder.lease.path)


def test_ctrl_c_stops_the_service_and_its_workers_without_a_traceback(
    tmp_path: Path, saved_model: Path
) -> None:
    """Ctrl+C in a terminal sends SIGINT to the whole process group: the server and its
    worker processes (renderers, speech). Each worker printed a ``KeyboardInterrupt``
    traceback; now the service stops them and nothing is left running."""
    import signal

    port = free_port()
    env = {**os.environ, "SCRIPTS_ENGINE_STATE_DIR": str(tmp_path / "state"),
           "SCRIPTS_ENGINE_MODEL_PATH": str(saved_model),
           "SCRIPTS_ENGINE_RENDER_WORKERS": "1"}  # fmt: skip
    cmd = [str(Path(sys.executable).with_name("scripts-engine")), "serve", "--port", str(port)]
    log = (tmp_path / "serve.log").open("w+")
    server = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)  # fmt: skip
    group = os.getpgid(server.pid)
    try:
        deadline = time.monotonic() + 180
        while True:  # ready: the render and speech workers are up
            assert time.monotonic() < deadline and server.poll() is None, "should get ready"
            try:
                if _get(f"http://127.0.0.1:{port}", "/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        while True:  # the server, multiprocessing's resource tracker and a render worker
            found = subprocess.run(["pgrep", "-g", str(group)], capture_output=True, text=True)
            if len(found.stdout.split()) >= 3:
                break
            assert time.monotonic() < deadline, found.stdout
            time.sleep(0.3)
        time.sleep(2)  # the render worker has built its renderer and waits for work
        os.killpg(group, signal.SIGINT)
        server.wait(60)
    finally:
        if server.poll() is None:
            os.killpg(group, signal.SIGKILL)
    log.seek(0)
    lines = log.read()
    log.close()
    assert "Traceback" not in lines and "KeyboardInterrupt" not in lines, lines
    deadline = time.monotonic() + 15
    while (left := subprocess.run(["pgrep", "-g", str(group)], capture_output=True, text=True)
           ).stdout.split() and time.monotonic() < deadline:  # fmt: skip
        time.sleep(0.3)  # the workers see their pipe close and end
    assert left.stdout.split() == [], subprocess.run(
        ["ps", "-o", "pid,cmd", "-g", str(group)], capture_output=True, text=True
    ).stdout
