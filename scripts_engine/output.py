"""Writing scored customers to CSV, Parquet or JSON lines, chunk by chunk.

Tag lists (hits, substituted, inferred) and profile names are looked up from bitmasks and
profile indexes, so a chunk becomes columns without a Python loop per customer.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa

from scripts_engine.grid import Grid
from scripts_engine.scoring import ScoreResult


def _mask_names(grid: Grid) -> np.ndarray:
    names = grid.tag_names
    return np.array(
        [";".join(n for j, n in enumerate(names) if m >> j & 1) for m in range(1 << len(names))],
        dtype=object,
    )


def result_table(result: ScoreResult, names_by_mask: np.ndarray | None = None) -> pa.Table:
    """One scored chunk as an Arrow table."""
    grid = result.engine.grid
    lut = names_by_mask if names_by_mask is not None else _mask_names(grid)
    weights = (1 << np.arange(len(grid.tag_names))).astype(np.int64)
    profiles = result.engine.profiles.profiles
    ids = np.array([p.id for p in profiles], dtype=object)
    zh = np.array([p.name_zh for p in profiles], dtype=object)
    en = np.array([p.name_en for p in profiles], dtype=object)
    idx = result.assignment.profile_index
    cols: dict[str, Any] = {"customer_id": pa.array(result.batch.ids.astype(str))}
    for j, name in enumerate(grid.tag_names):
        cols[f"score_{name}"] = pa.array(np.round(result.tags.scores[:, j], 4))
    cols["hit_count"] = pa.array(result.hit_counts)
    cols["hits"] = pa.array(lut[result.tags.hits.astype(np.int64) @ weights])
    cols["inferred"] = pa.array(lut[result.tags.inferred.astype(np.int64) @ weights])
    cols["profile_id"] = pa.array(ids[idx])
    cols["profile_name_zh"] = pa.array(zh[idx])
    cols["profile_name_en"] = pa.array(en[idx])
    cols["match"] = pa.array(np.where(result.assignment.full, "full", "partial"))
    cols["substituted"] = pa.array(lut[result.assignment.substituted.astype(np.int64) @ weights])
    return pa.table(cols)


class ResultWriter:
    """Appends scored chunks to one output file."""

    def __init__(self, path: Path, fmt: str, grid: Grid):
        self.path = path
        self.fmt = fmt
        self.grid = grid
        self._lut = _mask_names(grid)
        self._writer: Any = None
        self._fh: Any = None

    def __enter__(self) -> ResultWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.fmt == "jsonl":
            self._fh = self.path.open("w", encoding="utf-8")
        return self

    def write(self, result: ScoreResult) -> None:
        table = result_table(result, self._lut)
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            if self._writer is None:
                self._writer = pq.ParquetWriter(self.path, table.schema)
            self._writer.write_table(table)
        elif self.fmt == "csv":
            import pyarrow.csv as pacsv

            if self._writer is None:
                self._writer = pacsv.CSVWriter(self.path, table.schema)
            self._writer.write_table(table)
        else:
            frame = table.to_pandas()
            frame.to_json(self._fh, orient="records", lines=True, force_ascii=False)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._fh is not None:
            self._fh.close()
        if self._writer is None and self._fh is None and exc_type is None:
            # nothing scored: still leave a valid (empty) file with the header
            self.path.write_text("", encoding="utf-8")
