"""``scripts-engine synth --customers FILE --channel call -o DIR`` as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from click.testing import CliRunner

from scripts_engine import audio
from scripts_engine.cli import main
from scripts_engine.config import Settings
from tests.conftest import DEMO_CSV


def _sample(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Three demo customers from three regions, and one broken row."""
    demo = pd.read_csv(DEMO_CSV, dtype=str, keep_default_na=False)
    picks = {"广州": "yue-female", "成都": "cmn-sichuan", "北京": "cmn-female"}
    rows = [demo[demo.city == city].iloc[0] for city in picks]
    broken = rows[-1].copy()
    broken["customer_id"], broken["age"] = "BROKEN1", "old"
    path = tmp_path / "customers.csv"
    pd.DataFrame([*rows, broken]).to_csv(path, index=False)
    return path, {str(r.customer_id): picks[str(r.city)] for r in rows}


def test_synth_customers_writes_a_prompt_per_customer_in_their_voice(
    tmp_path: Path, state: Settings
) -> None:
    customers, expected = _sample(tmp_path)
    out = tmp_path / "prompts"
    runner = CliRunner()
    args = ["synth", "--customers", str(customers), "--channel", "call", "-o", str(out)]
    result = runner.invoke(main, args, obj=state)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "row 4, field 'age'" in result.output  # the broken row is reported, not dropped
    assert "3 prompts in" in result.output

    manifest = json.loads((out / "manifest.json").read_text())
    voices = {p["customer_id"]: p["voice"] for p in manifest["prompts"]}
    assert voices == expected
    for prompt in manifest["prompts"]:
        wav = audio.read_wav((out / prompt["file"]).read_bytes())
        assert (wav.rate, wav.channels, wav.bits) == (8000, 1, 16)
        seconds = len(wav.data) / 2 / 8000
        assert abs(seconds - prompt["duration_s"]) < 0.05
        assert 20 < seconds < 240  # a whole call script, not a fragment
        samples = np.frombuffer(wav.data, "<i2").astype(float)
        assert samples.std() > 500  # speech, not silence
        assert "AIGC" in json.dumps(wav.info, ensure_ascii=False)

    # the second run finds every segment in the cache and writes the same audio
    again = runner.invoke(main, [*args[:-1], str(tmp_path / "again")], obj=state)
    assert again.exit_code == 0, again.output
    assert "0 new segments synthesised" in again.output
    for prompt in manifest["prompts"]:
        first = (out / prompt["file"]).read_bytes()
        assert (tmp_path / "again" / prompt["file"]).read_bytes() == first
