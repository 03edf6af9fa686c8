"""How long the dialler's call prompts are when spoken, over the demo customers.

For every customer of ``data/demo/customers.csv``: score, render the call script (moment
``auto``), take what the dialler plays (the main path: opening, moment, value, disclosure,
close, sign-off; objection answers are alternatives and are measured one by one), turn it
into the text the customer's voice reads (numbers in words, dialect lexicon) and estimate
its duration:

    seconds = spoken characters / (characters per second at the voice's rate)
              + 0.3 s per sentence pause + 0.7 s per segment pause (the pause marks)

Characters per second at a voice's ``rate``: the espeak-ng measurements in VOICE-NOTES.md
(a 40-character Mandarin sentence lasts 10.26 s at rate 175, 8.8 s at rate 200) give
``cps = rate x 0.0223``: 3.7 at 165, 4.0 at 180. The figures at 4.5 characters/s (a
natural speaker) are printed beside them. Target: 60-90 s at the voice's rate.

    .venv/bin/python benchmarks/speech_lengths.py [--customers data/demo/customers.csv]

The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from datetime import date
from pathlib import Path
from statistics import quantiles

from scripts_engine.cli_core import load_engine
from scripts_engine.config import ROOT, get_settings
from scripts_engine.features import load_customers
from scripts_engine.render import Renderer
from scripts_engine.script import BRANCH_STAGES
from scripts_engine.voice import get_catalog

AS_OF = date(2026, 3, 10)
SENTENCE_PAUSE_S = 0.3
SEGMENT_PAUSE_S = 0.7
CPS_PER_RATE = 40 / 10.26 / 175  # VOICE-NOTES.md section 2
NATURAL_CPS = 4.5
_SPOKEN = re.compile(r"[\w]", re.UNICODE)
_SENTENCES = re.compile(r"[。！？；]")


def spoken_chars(text: str) -> int:
    """Characters that are read out (punctuation and spaces are not)."""
    return len(_SPOKEN.findall(text))


def summary(values: list[float]) -> dict[str, float]:
    """min, p10, median, p90, max."""
    cuts = quantiles(values, n=10, method="inclusive")
    return {
        "min": round(min(values), 1),
        "p10": round(cuts[0], 1),
        "p50": round(cuts[4], 1),
        "p90": round(cuts[8], 1),
        "max": round(max(values), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=Path, default=ROOT / "data" / "demo" / "customers.csv")
    args = parser.parse_args()
    settings = get_settings()
    engine = load_engine(settings)
    renderer = Renderer(settings.personas_dir, grid=engine.grid, reload_interval=1e9)
    voices = get_catalog(settings.voices_dir)
    batch = load_customers(args.customers, engine.grid).batch
    scores = engine.score(batch)
    chars, seconds, natural, branch_s = [], [], [], []
    by_temperament: dict[str, list[float]] = {}
    by_offer: dict[str, list[float]] = {}
    longest = (0.0, "")
    for i in range(len(batch)):
        record = batch.record(i)
        explained = scores.explain(i)
        script = renderer.render_script(
            record, explained["profile"]["id"], explained["tags"], moment="auto", as_of=AS_OF
        )
        voice = voices.choose(record.get("province"), record.get("city"))
        cps = voice.rate * CPS_PER_RATE
        main = [s for s in script.segments if s.stage not in BRANCH_STAGES]
        spoken = [voices.speech_text(s.text, voice) for s in main]
        n = sum(spoken_chars(t) for t in spoken)
        pauses = SENTENCE_PAUSE_S * sum(len(_SENTENCES.findall(t)) for t in spoken)
        stages = [s.stage for s in main]
        pauses += SEGMENT_PAUSE_S * sum(a != b for a, b in zip(stages, stages[1:], strict=False))
        pauses += SENTENCE_PAUSE_S * sum(a == b for a, b in zip(stages, stages[1:], strict=False))
        secs = n / cps + pauses
        chars.append(n)
        seconds.append(secs)
        natural.append(n / NATURAL_CPS + pauses)
        by_temperament.setdefault(script.style.split(".")[0], []).append(secs)
        by_offer.setdefault(script.offer, []).append(secs)
        if secs > longest[0]:
            longest = (secs, f"{script.customer_id} {script.profile_id} {script.style} "
                             f"{script.moment} {script.offer}")  # fmt: skip
        for seg in script.segments:
            if seg.stage in BRANCH_STAGES:
                t = voices.speech_text(seg.text, voice)
                branch_s.append(
                    spoken_chars(t) / cps + SENTENCE_PAUSE_S * len(_SENTENCES.findall(t))
                )
    n_scripts = len(seconds)
    within = sum(60 <= s <= 90 for s in seconds)
    result = {
        "scripts": n_scripts,
        "spoken_chars": summary([float(c) for c in chars]),
        "seconds_at_voice_rate": summary(seconds),
        "seconds_at_4.5_cps": summary(natural),
        "share_60_90_s": round(within / n_scripts, 3),
        "share_over_90_s": round(sum(s > 90 for s in seconds) / n_scripts, 3),
        "by_temperament_p50_max": {
            k: [summary(v)["p50"], summary(v)["max"]] for k, v in sorted(by_temperament.items())
        },
        "by_offer_p50_max": {
            k: [summary(v)["p50"], summary(v)["max"]] for k, v in sorted(by_offer.items())
        },
        "objection_answer_seconds": summary(branch_s),
        "longest": {"seconds": round(longest[0], 1), "script": longest[1]},
        "temperaments": dict(Counter(len(v) for v in by_temperament.values())),
    }
    print(f"{n_scripts} call scripts (demo customers, moment auto, {AS_OF})")
    print(f"spoken characters      {result['spoken_chars']}")
    print(f"seconds at voice rate  {result['seconds_at_voice_rate']}")
    print(f"seconds at 4.5 char/s  {result['seconds_at_4.5_cps']}")
    print(f"within 60-90 s: {within / n_scripts:.1%}; over 90 s: {result['share_over_90_s']:.1%}")
    print(f"by temperament (p50, max s): {result['by_temperament_p50_max']}")
    print(f"by offer (p50, max s): {result['by_offer_p50_max']}")
    print(f"one objection answer (s): {result['objection_answer_seconds']}")
    print(f"longest: {result['longest']}")
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
