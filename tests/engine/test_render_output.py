"""The renderer's output, pinned: a digest over a fixed sample of scripts.

Optimising the renderer must not change a byte of what it renders. The sample covers every
profile and the generic script, the three channels, moments given and chosen, two dates,
customers with and without scores, and the memoised and the unmemoised paths. When the
output changes on purpose (a template, ``styles.yaml`` or the ``Script`` shape), check the
change by reading scripts, then set ``DIGEST`` to the value the failure prints.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from datetime import date

from scripts_engine.config import ROOT
from scripts_engine.features import load_customers
from scripts_engine.render import Renderer
from scripts_engine.script import RENDER_INPUTS, Script, rendered_script_id, script_id

PERSONAS = ROOT / "personas"
DIGEST = "4d3e521f38c5f1c93b7faa94314460fd"  # compact canonical JSON (orjson) since session 4; same content as before


def _sample(renderer: Renderer, customers: int) -> Iterator[Script]:
    batch = load_customers(ROOT / "data" / "demo" / "customers.csv", renderer.grid).batch
    rng = random.Random(3)
    profiles = [None, *renderer.profiles]
    for i in range(customers):
        customer = batch.record(i)
        scores = None if i % 7 == 0 else {t: rng.random() for t in renderer.grid.tag_names}
        for k, profile in enumerate(profiles):
            as_of = date(2026, 3, 10) if (i + k) % 2 else date(2026, 9, 28)
            for channel in ("call", "wechat", "sms"):
                moments = ("auto", "event", "holiday") if (i + k) % 3 == 0 else ("auto",)
                for moment in moments if channel == "call" else ("auto",):
                    yield renderer.render_script(
                        customer, profile, scores, channel=channel, moment=moment,
                        as_of=as_of, generic=k % 11 == 5,
                    )  # fmt: skip


def _digest(scripts: Iterator[Script]) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    for script in scripts:
        h.update(script.to_json().encode("utf-8") + b"\n")
        n += 1
    return h.hexdigest()[:32], n


def test_rendered_scripts_are_unchanged() -> None:
    memo, n = _digest(_sample(Renderer(PERSONAS, reload_interval=1e9), 12))
    assert n == 12 * 57 * 3 + 4 * 57 * 2
    plain, _ = _digest(_sample(Renderer(PERSONAS, reload_interval=1e9, memoize=False), 12))
    assert memo == plain, "memoised and unmemoised rendering disagree"
    assert memo == DIGEST, f"the rendered scripts changed: digest {memo}"


def test_rendered_script_id_is_script_id_of_the_same_inputs() -> None:
    rng = random.Random(5)
    alphabet = "ab王,\x1d{}%s0"
    for n in range(300):
        inputs: dict[str, str | None] = {
            k: "".join(rng.choices(alphabet, k=rng.randrange(6))) for k in RENDER_INPUTS
        }
        if n % 3 == 0:
            inputs["profile"] = None
        assert rendered_script_id(**inputs) == script_id(inputs)  # type: ignore[arg-type]
