"""Distinctness of the 56 profiles' call scripts for one customer (issue 3 target >= 0.3).

For each sample customer and temperament: render the call script of every profile, take the
value stage, and report the smallest and mean pairwise normalised Levenshtein distance
(``Renderer.distinctness``). The last line is JSON with the overall minimum.

    .venv/bin/python benchmarks/distinct_scripts.py
"""

from __future__ import annotations

import json

from scripts_engine.config import ROOT
from scripts_engine.lint import SAMPLE_CUSTOMERS, SAMPLE_DATE, SAMPLE_SCORES
from scripts_engine.render import Renderer


def main() -> None:
    renderer = Renderer(ROOT / "personas", reload_interval=1e9)
    rows = []
    for n, (customer, scores) in enumerate(zip(SAMPLE_CUSTOMERS, SAMPLE_SCORES, strict=True)):
        for temperament in ("analytical", "amiable", "driver"):
            d = renderer.distinctness(customer, scores, style=f"{temperament}.", as_of=SAMPLE_DATE)
            rows.append({"customer": n, "temperament": temperament, "min": round(d.min_distance, 3),
                         "mean": round(d.mean_distance, 3), "closest": list(d.closest)})  # fmt: skip
            print(f"customer {n} {temperament:10s} min {d.min_distance:.3f} mean "
                  f"{d.mean_distance:.3f} closest {d.closest[0]} / {d.closest[1]}")  # fmt: skip
    print(
        json.dumps({"min_distance": min(r["min"] for r in rows), "rows": rows}, ensure_ascii=False)
    )


if __name__ == "__main__":
    main()
