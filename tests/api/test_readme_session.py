"""The README's "Integrating a dialler" session, run as written (bash, curl, openssl, python3
and the ``scripts-engine`` command) against a real server: a dialler who follows it word for
word gets from a key to a recorded outcome. Only the server's address is substituted."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import httpx
import pytest

from api import create_app
from scripts_engine.config import ROOT, Settings
from tests.api.conftest import Clock, auth
from tests.api.server import running


def readme_session() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Integrating a dialler", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "the README's dialler section has no sh block"
    return match.group(1)


@pytest.mark.skipif(not shutil.which("curl") or not shutil.which("openssl"),
                    reason="needs curl and openssl")  # fmt: skip
def test_the_readme_session_runs_from_key_to_outcome(
    api_settings: Settings, clock: Clock, tmp_path: Path
) -> None:
    script = readme_session()
    assert "API=http://127.0.0.1:8000" in script
    app = create_app(api_settings, clock=clock)  # 10:00 in Shanghai: inside the window
    with running(app) as base:
        env = {**os.environ,
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               "SCRIPTS_ENGINE_STATE_DIR": str(api_settings.state_dir),
               "SCRIPTS_ENGINE_MODEL_PATH": str(api_settings.model_path),
               "SCRIPTS_ENGINE_DATABASE_URL": str(api_settings.database_url)}  # fmt: skip
        body = script.replace("API=http://127.0.0.1:8000", f"API={base}")
        body += '\necho "ADMIN=$ADMIN"\necho "CALL=$CALL"\n'
        res = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", body], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        # curl prints no newlines: the answers run together
        assert (
            '"call_id":"K-' in res.stdout and '"status":"connected","converted":true' in res.stdout
        )
        admin = re.findall(r"ADMIN=(\S+)", res.stdout)[-1]
        call_id = re.findall(r"CALL=(\S+)", res.stdout)[-1]
        with wave.open(str(tmp_path / "prompt.wav")) as w:
            assert w.getframerate() == 8000 and w.getnframes() > 8000
        record = httpx.get(f"{base}/v1/calls/{call_id}", headers=auth(admin)).json()
        assert record["customer_id"] == "C001" and record["outcome"]["converted"] is True
