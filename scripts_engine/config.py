"""Settings: one object, read in a documented order.

Explicit arguments win, then ``SCRIPTS_ENGINE_*`` environment variables, then a ``.env`` file,
then the defaults below. Nothing else in the engine reads the environment. There is no
module-level instance: call :func:`get_settings` (cached) or build ``Settings(...)`` directly.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
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

    @property
    def demo_customers_file(self) -> Path:
        """The shipped demo customers (real UCI rows, synthetic contact fields)."""
        return self.data_dir / "demo" / "customers.csv"


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
