"""Settings: one object, read in a documented order.

Explicit arguments win, then ``SCRIPTS_ENGINE_*`` environment variables, then a ``.env`` file,
then the defaults below. Nothing else in the engine reads the environment. There is no
module-level instance: call :func:`get_settings` (cached) or build ``Settings(...)`` directly.
"""

from __future__ import annotations

import shutil
import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The repository root when running from a checkout (the default data lives beside the code).
ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Where the engine finds its data and keeps its state."""

    model_config = SettingsConfigDict(
        env_prefix="SCRIPTS_ENGINE_", env_file=".env", env_ignore_empty=True, extra="ignore"
    )

    personas_dir: Path = Field(
        default=ROOT / "personas", description="The persona grid, templates, styles, compliance."
    )
    voices_dir: Path = Field(default=ROOT / "voices", description="Voice profiles and lexicons.")
    data_dir: Path = Field(
        default=ROOT / "data", description="Shipped data: the UCI training set, demo customers."
    )
    state_dir: Path = Field(
        default=ROOT / "var", description="Where the engine keeps its state (model, audio, DB)."
    )
    model_path: Path | None = Field(
        default=None, description="The fitted model file; default: <state_dir>/model.joblib."
    )
    audio_dir: Path | None = Field(
        default=None, description="The audio folder; default: <state_dir>/audio."
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file <state_dir>/engine.db."
    )
    random_state: int = Field(default=0, description="Seed for model fitting and sampling.")
    synth_workers: int = Field(
        default=2, ge=1, le=64, description="Speech synthesis worker processes (spawned)."
    )
    render_workers: int | None = Field(
        default=None,
        ge=0,
        le=64,
        description="Processes that render the service's scripts of stored customers beside "
        "its event loop (spawned); 0: render in the service process; default: one fewer than "
        "the CPUs the service may use, at most 4.",
    )
    synth_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Seconds one synthesis job may take before its worker is replaced and the "
        "job retried once.",
    )

    db_busy_timeout_ms: int = Field(
        default=15_000,
        ge=0,
        description="SQLite: how long a writer waits for the write lock before failing (ms).",
    )
    db_pool_size: int = Field(
        default=20, ge=1, le=200, description="Database connections per engine in one process."
    )
    campaign_chunk_size: int = Field(
        default=100, ge=1, le=10_000, description="Customers per campaign build chunk."
    )
    service_synthesis: Literal["pool", "inline"] = Field(
        default="pool",
        description="Where the service synthesises audio: 'pool' (worker processes, with "
        "timeouts; see synth_workers) or 'inline' (in the service process).",
    )
    templates_source: Literal["database", "files"] = Field(
        default="database",
        description="Where the service renders from: 'database' (the live template versions, "
        "seeded from personas/ on first start) or 'files' (personas/ as it is on disk).",
    )
    qa_sample_rate: float = Field(
        default=0.02, ge=0, le=1, description="QA: share of each stratum sampled for review."
    )
    qa_new_version_renders: int = Field(
        default=3, ge=0, description="QA: the first N calls of a new template version are reviewed."
    )
    api_docs: bool = Field(
        default=True, description="Serve the interactive API docs at /docs and /redoc."
    )
    log_json: bool = Field(
        default=True, description="Service logs as one JSON object a line (personal data masked)."
    )
    max_upload_bytes: int = Field(
        default=50 * 2**20, ge=1024, description="Largest customer file the import accepts."
    )
    max_body_bytes: int = Field(
        default=2**20,
        ge=1024,
        description="Largest request body a route takes, but the bulk ones (customers, their "
        "import, scoring, a new campaign), which take max_upload_bytes and 1 MiB: a larger one "
        "is a 413 before it is read.",
    )
    campaign_executor: Literal["inline", "local", "dask"] = Field(
        default="inline",
        description="Where campaign chunks are built: 'inline' (the server's builder thread), "
        "'local' (spawned worker processes on this machine), 'dask' (a cluster at "
        "dask_address).",
    )
    campaign_workers: int = Field(
        default=2, ge=1, le=64, description="Worker processes of the 'local' executor."
    )
    dask_address: str | None = Field(
        default=None, description="Scheduler address for campaign_executor='dask'."
    )
    outcome_signatures: Literal["required", "optional"] = Field(
        default="required",
        description="Outcome reports must carry a valid X-Signature ('required'), or are "
        "checked only when they carry one ('optional': for a dialler that cannot sign yet).",
    )
    signature_tolerance_s: int = Field(
        default=300, ge=1, le=3600, description="How far a signature's t may be from now (s)."
    )
    signing_key: SecretStr | None = Field(
        default=None,
        description="Master key the per-key signing secrets derive from; default: "
        "<state_dir>/signing.key, created on first use. Set it when several hosts serve.",
    )
    signing_rotation_hours: float = Field(
        default=24.0, ge=0, description="How long a rotated-out signing secret keeps working."
    )
    auth_cache_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="Seconds a verified API key is trusted without a database look-up. A "
        "revocation through the API applies at once in that process; from the CLI or another "
        "process, within this time. 0: look up every request.",
    )
    rate_limit_per_s: float = Field(
        default=200.0, ge=0, description="Requests a second per API key (token bucket; 0: off)."
    )
    rate_limit_burst: int = Field(default=400, ge=1, description="Bucket size per API key.")
    synth_rate_per_min: float = Field(
        default=30.0, ge=0, description="Syntheses a minute per API key (0: off)."
    )
    synth_burst: int = Field(default=10, ge=1, description="Synthesis bucket size per API key.")
    compute_rate_per_s: float = Field(
        default=50.0, ge=0, description="Scoring and render requests a second per key (0: off)."
    )
    compute_burst: int = Field(default=100, ge=1, description="Score/render bucket size per key.")

    @property
    def resolved_model_path(self) -> Path:
        """The model file, defaulting into the state folder."""
        return self.model_path or self.state_dir / "model.joblib"

    @property
    def resolved_audio_dir(self) -> Path:
        """The audio folder, defaulting into the state folder."""
        return self.audio_dir or self.state_dir / "audio"

    @property
    def training_file(self) -> Path:
        """The shipped historical outcomes the default model is trained on."""
        return self.data_dir / "bank-marketing" / "bank-train.csv"

    @model_validator(mode="after")
    def _executor_has_what_it_needs(self) -> Settings:
        if self.campaign_executor == "dask" and not self.dask_address:
            raise ValueError("campaign_executor is 'dask' but dask_address is not set "
                             "(SCRIPTS_ENGINE_DASK_ADDRESS, e.g. tcp://10.0.0.5:8786)")  # fmt: skip
        return self

    @property
    def demo_customers_file(self) -> Path:
        """The shipped demo customers (real UCI rows, synthetic contact fields)."""
        return self.data_dir / "demo" / "customers.csv"


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()


def cli_command(*, absolute: bool = True) -> str:
    """How a person at this machine runs the command line: ``scripts-engine`` when it is on
    PATH, else the script beside this Python (``.venv/bin/scripts-engine`` after ``make run``),
    relative to the current folder when it is below it. With ``absolute=False`` a path outside
    the current folder is not shown (a web page should not print the server's folders)."""
    exe = Path(sys.executable).with_name("scripts-engine")
    if shutil.which("scripts-engine") or not exe.exists():
        return "scripts-engine"
    try:
        return str(exe.relative_to(Path.cwd()))
    except ValueError:
        return str(exe) if absolute else "scripts-engine"
