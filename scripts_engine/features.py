"""Customer records in, a validated columnar batch out.

Records come from CSV, Parquet, JSON lines or Python mappings. Every value is checked
against the field declared in ``grid.yaml``: a bad row (missing required value, wrong type,
unknown category, out-of-range number) is reported with its row number, field and reason,
and the good rows go on. Nothing is dropped or coerced silently: columns the grid does not
know, and fields known only after a call (``duration``), are listed in ``LoadResult.ignored``
with the reason, never used for scoring.

Large files stream: :func:`iter_customers` yields validated chunks, so a file larger than
memory can be scored chunk by chunk.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt
import pandas as pd

from scripts_engine.errors import DataError, RowError
from scripts_engine.grid import FieldSpec, Grid
from scripts_engine.phones import check_phone

#: Rows per streamed chunk: large enough to amortise pandas, small enough for 2 GB budgets.
CHUNK_ROWS = 131_072
ID_FIELD = "customer_id"
_TRUE = {"true", "1", "yes", "y", "t", "是"}
_FALSE = {"false", "0", "no", "n", "f", "否"}

Source = str | Path | Sequence[Mapping[str, Any]]


@dataclass
class Batch:
    """Validated customers as columns: numbers as float64 (NaN = missing), categories as
    int16 codes into the field's declared values (-1 = missing), contact fields as objects."""

    grid: Grid
    ids: npt.NDArray[np.object_]
    rows: npt.NDArray[np.int64]
    columns: dict[str, np.ndarray]
    contact: dict[str, npt.NDArray[np.object_]]

    def __len__(self) -> int:
        return len(self.ids)

    def missing(self, name: str) -> npt.NDArray[np.bool_]:
        """True where the field has no value."""
        col = self.columns.get(name)
        if col is None:
            return np.ones(len(self), dtype=np.bool_)
        return np.isnan(col) if col.dtype.kind == "f" else col < 0

    def value(self, name: str, i: int) -> Any:
        """One decoded value: a str for categories, int/float for numbers, None if missing."""
        if name in self.contact:
            return self.contact[name][i]
        spec = self.grid.fields[name]
        col = self.columns.get(name)
        if col is None:
            return None
        v = col[i]
        if spec.type == "category":
            return None if v < 0 else spec.values[v]  # type: ignore[index]
        if np.isnan(v):
            return None
        return int(v) if spec.type == "int" else float(v)

    def record(self, i: int) -> dict[str, Any]:
        """One customer as a plain mapping of every declared field (None for missing)."""
        out: dict[str, Any] = {ID_FIELD: self.ids[i]}
        for name in self.columns:
            out[name] = self.value(name, i)
        for name, col in self.contact.items():
            if name != ID_FIELD:
                out[name] = col[i]
        return out

    def stored_records(self) -> list[dict[str, Any]]:
        """Every customer's :meth:`record` as the database stores it: JSON values only (dates
        and the like as their text)."""
        return [json.loads(json.dumps(self.record(i), default=str)) for i in range(len(self))]

    def take(self, index: npt.ArrayLike | slice) -> Batch:
        """The sub-batch at these positions (a slice, indexes or a boolean mask)."""
        idx = index if isinstance(index, slice) else np.asarray(index)
        return Batch(
            grid=self.grid,
            ids=self.ids[idx],
            rows=self.rows[idx],
            columns={k: v[idx] for k, v in self.columns.items()},
            contact={k: v[idx] for k, v in self.contact.items()},
        )

    @staticmethod
    def concat(grid: Grid, batches: Sequence[Batch]) -> Batch:
        """Join batches with the same columns into one."""
        if not batches:
            return empty_batch(grid)
        first = batches[0]
        return Batch(
            grid=grid,
            ids=np.concatenate([b.ids for b in batches]),
            rows=np.concatenate([b.rows for b in batches]),
            columns={k: np.concatenate([b.columns[k] for b in batches]) for k in first.columns},
            contact={k: np.concatenate([b.contact[k] for b in batches]) for k in first.contact},
        )


def empty_batch(grid: Grid) -> Batch:
    return Batch(
        grid=grid,
        ids=np.empty(0, dtype=object),
        rows=np.empty(0, dtype=np.int64),
        columns={},
        contact={},
    )


@dataclass
class LoadResult:
    """A validated batch, the rejected rows, and the columns not used (with why)."""

    batch: Batch
    errors: list[RowError] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)
    rows_read: int = 0


def load_customers(source: Source, grid: Grid, *, outcomes: bool = False) -> LoadResult:
    """Load and validate a whole source into one batch.

    Args:
        source: a CSV, Parquet or JSON-lines path, or a sequence of mappings.
        grid: the persona grid declaring the fields.
        outcomes: also load the outcome fields (``y``), which are then required on every row.

    Raises:
        DataError: the source cannot be read at all (missing, unknown format, malformed file).
    """
    parts = list(iter_customers(source, grid, outcomes=outcomes))
    if not parts:
        return LoadResult(batch=empty_batch(grid))
    errors = [e for p in parts for e in p.errors]
    return LoadResult(
        batch=Batch.concat(grid, [p.batch for p in parts]),
        errors=errors,
        ignored=parts[0].ignored,
        rows_read=sum(p.rows_read for p in parts),
    )


def iter_customers(
    source: Source,
    grid: Grid,
    *,
    outcomes: bool = False,
    chunk_rows: int = CHUNK_ROWS,
    require_id: bool = False,
) -> Iterator[LoadResult]:
    """Stream a source as validated chunks (see :func:`load_customers`). A customer id seen
    in an earlier chunk is a duplicate too. With ``require_id``, a source without a
    ``customer_id`` column raises :class:`DataError` (otherwise its rows are ``row-N``)."""
    validator = _Validator(grid, outcomes=outcomes, require_id=require_id)
    for frame, rows, pre_errors in _read(source, chunk_rows):
        yield validator.validate(frame, rows, pre_errors)


def source_format(path: Path) -> str:
    """``csv``, ``parquet`` or ``jsonl``, from the file name."""
    suffixes = [s.lower() for s in path.suffixes]
    if not suffixes:
        raise DataError(f"{path}: cannot tell the format; name it .csv, .parquet or .jsonl")
    ext = suffixes[-1]
    if ext in (".gz", ".bz2", ".zst", ".xz") and len(suffixes) > 1:
        ext = suffixes[-2]
    formats = {
        ".csv": "csv",
        ".txt": "csv",
        ".parquet": "parquet",
        ".pq": "parquet",
        ".jsonl": "jsonl",
        ".ndjson": "jsonl",
        ".json": "jsonl",
    }
    if ext not in formats:
        raise DataError(f"{path}: unknown format '{ext}'; use .csv, .parquet or .jsonl")
    return formats[ext]


# --- reading ----------------------------------------------------------------------------

Chunk = tuple[pd.DataFrame, npt.NDArray[np.int64], list[RowError]]


def _read(source: Source, chunk_rows: int) -> Iterator[Chunk]:
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.exists():
            raise DataError(f"{path}: file not found")
        fmt = source_format(path)
        reader = {"csv": _read_csv, "parquet": _read_parquet, "jsonl": _read_jsonl}[fmt]
        yield from reader(path, chunk_rows)
    else:
        yield from _read_records(source, chunk_rows)


def _chunked(
    items: Iterable[tuple[int, Mapping[str, Any] | RowError]], chunk_rows: int
) -> Iterator[Chunk]:
    """Group (row number, record or the row's error) pairs into chunks."""
    buf: list[Mapping[str, Any]] = []
    rows: list[int] = []
    errors: list[RowError] = []
    for n, item in items:
        if isinstance(item, RowError):
            errors.append(item)
            continue
        buf.append(item)
        rows.append(n)
        if len(buf) >= chunk_rows:
            yield pd.DataFrame.from_records(buf), np.array(rows, dtype=np.int64), errors
            buf, rows, errors = [], [], []
    if buf or errors:
        frame = pd.DataFrame.from_records(buf) if buf else pd.DataFrame()
        yield frame, np.array(rows, dtype=np.int64), errors


def _read_records(records: Iterable[Mapping[str, Any]], chunk_rows: int) -> Iterator[Chunk]:
    def items() -> Iterator[tuple[int, Mapping[str, Any] | RowError]]:
        for n, rec in enumerate(records, start=1):
            if isinstance(rec, Mapping):
                yield n, rec
            else:
                yield n, RowError(n, "(record)", f"expected an object, got {type(rec).__name__}")

    return _chunked(items(), chunk_rows)


def _read_jsonl(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    def items() -> Iterator[tuple[int, Mapping[str, Any] | RowError]]:
        with path.open(encoding="utf-8-sig") as fh:
            for n, line in enumerate(fh, start=1):
                text = line.strip()
                if not text:
                    continue
                try:
                    rec = json.loads(text)
                except json.JSONDecodeError as exc:
                    yield n, RowError(n, "(line)", f"not valid JSON: {exc.msg}")
                    continue
                if isinstance(rec, dict):
                    yield n, rec
                else:
                    yield (
                        n,
                        RowError(n, "(line)", f"expected a JSON object, got {type(rec).__name__}"),
                    )

    return _chunked(items(), chunk_rows)


def _sniff_delimiter(header: str) -> str:
    counts = {d: header.count(d) for d in (",", ";", "\t", "|")}
    return max(counts, key=lambda d: counts[d]) if any(counts.values()) else ","


def csv_encoding(path: Path) -> str:
    """The text encoding of a CSV file: UTF-8 (with or without a BOM), UTF-16 (by its BOM),
    or GB18030, which reads GBK and GB2312 too (what Excel on a Chinese Windows saves as
    "CSV"), when no line of the file is UTF-8 but plain ASCII.

    Raises:
        DataError: some lines are UTF-8 and others not, or the file is neither (where).
    """
    with path.open("rb") as fh:
        head = fh.read(4)
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16"
        bom = head.startswith(codecs.BOM_UTF8)  # then it says it is UTF-8: hold it to that
        fh.seek(0)
        first_bad: tuple[int, UnicodeDecodeError] | None = None
        utf8_text = False  # a line with non-ASCII UTF-8 text
        for number, line in enumerate(fh, start=1):
            if line.isascii():
                continue
            try:
                line.decode("utf-8")
                utf8_text = True
            except UnicodeDecodeError as error:
                first_bad = first_bad or (number, error)
            if utf8_text and first_bad:
                break
    if first_bad is None:
        return "utf-8-sig"
    number, bad = first_bad
    where = f"line {number}, byte 0x{bad.object[bad.start : bad.start + 1].hex()}"
    if utf8_text or bom:
        raise DataError(f"{path}: {where} is not UTF-8 while other lines are: save the whole "
                        f"file as UTF-8")  # fmt: skip
    try:
        with path.open(encoding="gb18030", errors="strict") as fh:
            for _line in fh:
                pass
    except UnicodeDecodeError:
        raise DataError(f"{path}: {where}: neither UTF-8 nor GBK/GB18030 text; save the file "
                        f"as UTF-8") from None  # fmt: skip
    return "gb18030"


def _read_csv(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    encoding = csv_encoding(path)
    with path.open(encoding=encoding, newline="") as fh:
        header = fh.readline()
    if not header.strip():
        raise DataError(f"{path}: the file is empty (no header line)")
    delimiter = _sniff_delimiter(header)
    names = [n.strip().strip('"') for n in header.rstrip("\r\n").split(delimiter)]
    skipped: list[int] = []  # 1-based data row numbers of malformed rows
    errors: list[RowError] = []

    def on_invalid(row: Any) -> str:
        number = row.number - 1 if row.number is not None else -1  # line -> data row
        skipped.append(number)
        errors.append(
            RowError(
                number,
                "(row)",
                f"has {row.actual_columns} columns, the header has "
                f"{row.expected_columns}: {row.text[:80]!r}",
            )
        )
        return "skip"

    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(
                block_size=1 << 22,
                use_threads=False,
                encoding="utf8" if encoding == "utf-8-sig" else encoding,
            ),  # fmt: skip
            parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable CSV file: {exc}") from None
    seen = 0  # valid rows so far
    try:
        for record_batch in reader:
            frame = record_batch.to_pandas()
            n = len(frame)
            # the k-th valid row sits after every skipped row at or before its position
            ordinal = np.arange(seen + 1, seen + n + 1, dtype=np.int64)
            rows = ordinal.copy()
            for s in sorted(skipped):
                rows[rows >= s] += 1
            seen += n
            for start in range(0, n, chunk_rows):
                part = frame.iloc[start : start + chunk_rows].reset_index(drop=True)
                yield part, rows[start : start + chunk_rows], errors
                errors = []
    except pa.ArrowInvalid as exc:
        raise DataError(f"{path}: not a readable CSV file: {exc}") from None
    if errors:
        yield pd.DataFrame(), np.empty(0, dtype=np.int64), errors


def _read_parquet(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file: {exc}") from None
    start = 1
    for record_batch in pf.iter_batches(batch_size=chunk_rows):
        frame = record_batch.to_pandas()
        n = len(frame)
        yield frame, np.arange(start, start + n, dtype=np.int64), []
        start += n


# --- validation -------------------------------------------------------------------------


def _is_missing(s: pd.Series) -> npt.NDArray[np.bool_]:
    miss = s.isna().to_numpy().copy()
    if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
        text = s.astype("string").str.strip()
        miss |= (text == "").fillna(True).to_numpy(dtype=bool)
    return miss


class _Validator:
    def __init__(self, grid: Grid, *, outcomes: bool, require_id: bool = False):
        self.grid = grid
        self.outcomes = outcomes
        self.require_id = require_id
        self.seen: set[str] = set()  # the ids of earlier chunks
        self.fields = {
            n: f for n, f in grid.fields.items() if not f.post_call or (outcomes and f.outcome)
        }
        self.known = set(grid.fields) | set(grid.contact_fields)

    def ignored_columns(self, frame: pd.DataFrame) -> dict[str, str]:
        out: dict[str, str] = {}
        for col in frame.columns:
            spec = self.grid.fields.get(col)
            if col not in self.known:
                out[col] = "not a field of the persona grid"
            elif spec is not None and spec.post_call and not (self.outcomes and spec.outcome):
                out[col] = "known only after the call (post_call): never a scoring input"
        return out

    def validate(
        self, frame: pd.DataFrame, rows: npt.NDArray[np.int64], pre: list[RowError]
    ) -> LoadResult:
        n = len(frame)
        bad = np.zeros(n, dtype=np.bool_)
        errors: list[tuple[int, int, str, str]] = []  # (position, order, field, message)
        columns: dict[str, np.ndarray] = {}
        contact: dict[str, npt.NDArray[np.object_]] = {}

        def report(name: str, mask: npt.NDArray[np.bool_], message: Any) -> None:
            for pos in np.flatnonzero(mask):
                msg = message(int(pos)) if callable(message) else message
                errors.append((int(pos), len(errors), name, msg))
            bad[mask] = True

        for name, spec in self.fields.items():
            if name not in frame.columns:
                if spec.required or (spec.outcome and self.outcomes):
                    if n:
                        raise DataError(f"required column '{name}' is missing from the input")
                columns[name] = _empty_column(spec, n)
                continue
            columns[name] = _column(
                name, spec, frame[name], report, required=spec.required or spec.outcome
            )
        for name, spec in self.grid.contact_fields.items():
            if name not in frame.columns:
                contact[name] = np.full(n, None, dtype=object)
                continue
            contact[name] = _contact_column(name, spec, frame[name], report)

        if ID_FIELD in frame.columns:
            ids = contact[ID_FIELD].copy()
            # no id (an id the column's check rejected has its own error already)
            missing = np.array([v is None for v in ids], dtype=np.bool_)
            report(ID_FIELD, np.asarray(_is_missing(frame[ID_FIELD]), dtype=np.bool_),
                   "missing customer_id")  # fmt: skip
            dup = (pd.Series(ids).duplicated().to_numpy() | pd.Series(ids).isin(self.seen)
                   .to_numpy()) & ~missing  # fmt: skip
            report(ID_FIELD, dup, lambda p: f"duplicate customer_id '{ids[p]}' in this input")
            self.seen.update(str(i) for i in ids[~missing])
        elif self.require_id and n:
            raise DataError(
                f"no {ID_FIELD} column (columns: {', '.join(map(str, frame.columns))[:300]}): "
                f"every customer needs its id"
            )
        else:
            ids = np.array([f"row-{r}" for r in rows], dtype=object)
            contact[ID_FIELD] = ids

        good = ~bad
        row_errors = list(pre)
        row_errors.extend(
            RowError(int(rows[pos]), name, msg) for pos, _, name, msg in sorted(errors)
        )
        batch = Batch(
            grid=self.grid,
            ids=ids[good],
            rows=rows[good],
            columns={k: v[good] for k, v in columns.items()},
            contact={k: v[good] for k, v in contact.items()},
        )
        return LoadResult(
            batch=batch,
            errors=row_errors,
            ignored=self.ignored_columns(frame),
            rows_read=n + len(pre),
        )


def _shown(value: Any) -> str:
    """A value as an error message quotes it: a numpy scalar (a Parquet column's) as the
    plain number it holds (``200``, not ``np.int64(200)``); a long one cut short."""
    text = repr(value.item() if isinstance(value, np.generic) else value)
    length = len(value) if isinstance(value, str) else len(text)
    return text if len(text) <= 60 else f"{text[:50]}... ({length} characters)"


def _empty_column(spec: FieldSpec, n: int) -> np.ndarray:
    if spec.type == "category":
        return np.full(n, -1, dtype=np.int16)
    return np.full(n, np.nan, dtype=np.float64)


def _column(name: str, spec: FieldSpec, s: pd.Series, report: Any, *, required: bool) -> np.ndarray:
    missing = _is_missing(s)
    if required:
        report(name, missing, "missing required value")
    if spec.type == "category":
        return _category(name, spec, s, missing, report)
    return _number(name, spec, s, missing, report)


def _category(
    name: str, spec: FieldSpec, s: pd.Series, missing: np.ndarray, report: Any
) -> np.ndarray:
    values = spec.values or ()
    text = s.astype("string").str.strip()
    codes = pd.Index(list(values)).get_indexer(pd.Index(text)).astype(np.int16)
    unknown = (codes < 0) & ~missing
    if unknown.any():
        raw = s.to_numpy()
        allowed = ", ".join(values)
        report(name, unknown, lambda p: f"unknown value {_shown(raw[p])} (allowed: {allowed})")
    codes[missing] = -1
    return codes


def _number(
    name: str, spec: FieldSpec, s: pd.Series, missing: np.ndarray, report: Any
) -> np.ndarray:
    raw = s.to_numpy()
    if pd.api.types.is_bool_dtype(s.dtype):
        report(name, ~missing, lambda p: f"expected a number, got {_shown(raw[p])}")
        return np.full(len(s), np.nan)
    if pd.api.types.is_numeric_dtype(s.dtype):
        values = np.array(s.to_numpy(dtype=np.float64, na_value=np.nan), copy=True)
    else:
        is_bool = np.array([isinstance(v, bool | np.bool_) for v in raw], dtype=np.bool_)
        text = s.where(~is_bool).astype("string").str.strip()
        values = np.array(
            pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan),
            copy=True,
        )
        wrong = (np.isnan(values) & ~missing) | is_bool
        report(name, wrong, lambda p: f"expected a number, got {_shown(raw[p])}")
        missing = missing | wrong
    values[missing] = np.nan
    ok = ~np.isnan(values)
    notfinite = ok & ~np.isfinite(values)
    report(name, notfinite, lambda p: f"{_shown(raw[p])} is not a finite number")
    ok &= ~notfinite
    if spec.type == "int":
        frac = ok & (values != np.round(values))
        report(name, frac, lambda p: f"expected a whole number, got {_shown(raw[p])}")
        ok &= ~frac
    unit = f" {spec.unit}" if spec.unit else ""
    if spec.min is not None:
        low = ok & (values < spec.min)
        report(name, low, lambda p: f"{_shown(raw[p])} is below the minimum {spec.min:g}{unit}")
    if spec.max is not None:
        high = ok & (values > spec.max)
        report(name, high, lambda p: f"{_shown(raw[p])} is above the maximum {spec.max:g}{unit}")
    return values


def _contact_column(
    name: str, spec: FieldSpec, s: pd.Series, report: Any
) -> npt.NDArray[np.object_]:
    raw = s.to_numpy(dtype=object)
    missing = _is_missing(s)
    if spec.required:
        report(name, missing, "missing required value")
    out = np.full(len(raw), None, dtype=object)
    bad = np.zeros(len(raw), dtype=np.bool_)
    messages: dict[int, str] = {}
    check = _CONTACT_CHECKS[spec.type]
    pattern = re.compile(spec.pattern) if spec.pattern else None
    for i in np.flatnonzero(~missing):
        try:
            value = check(raw[i], spec)
            if spec.max_length is not None and len(str(value)) > spec.max_length:
                raise ValueError(f"{_shown(raw[i])} is longer than {spec.max_length} characters")
            if pattern is not None and not pattern.fullmatch(str(value)):
                raise ValueError(
                    f"{_shown(raw[i])} does not look like a valid {spec.label_en.lower()}"
                )
            out[i] = value
        except ValueError as exc:
            bad[i] = True
            messages[int(i)] = str(exc)
    report(name, bad, lambda p: messages[p])
    return out


#: control characters (NUL, line breaks, escapes): never part of a name, a city or an id; a
#: NUL is refused by PostgreSQL, and a line break splits the line of any export or log
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _as_string(v: Any, spec: FieldSpec) -> str:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    text = str(v).strip()
    if (bad := _CONTROL.search(text)) is not None:
        raise ValueError(f"contains a control character ({bad.group()!r} at {bad.start() + 1})")
    return text


def _as_category(v: Any, spec: FieldSpec) -> str:
    text = str(v).strip()
    if spec.values and text not in spec.values:
        raise ValueError(f"unknown value {_shown(v)} (allowed: {', '.join(spec.values)})")
    return text


def _as_bool(v: Any, spec: FieldSpec) -> bool:
    if isinstance(v, bool | np.bool_):
        return bool(v)
    text = str(v).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {_shown(v)}")


def _as_date(v: Any, spec: FieldSpec) -> str:
    if isinstance(v, date):
        return v.isoformat()[:10]
    text = str(v).strip()
    try:
        return date.fromisoformat(
            text[:10] if len(text) > 10 and text[10] in "T " else text
        ).isoformat()
    except ValueError:
        raise ValueError(f"expected a date as YYYY-MM-DD, got {_shown(v)}") from None


#: time zone keys the zone database also answers to that are no place's zone: the server's
#: own ("localtime"), and the database's alternative trees
_NOT_A_PLACE = ("localtime", "posixrules", "Factory", "posix/", "right/")


def _as_timezone(v: Any, spec: FieldSpec) -> str:
    text = str(v).strip()
    try:
        if text.startswith(_NOT_A_PLACE):
            raise ValueError(text)
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {_shown(v)} (use an IANA name such as Asia/Shanghai)"
        ) from None
    return text


def _as_phone(v: Any, spec: FieldSpec) -> str:
    text, why = check_phone(_as_string(v, spec))
    if text is None:
        raise ValueError(
            f"{_shown(v)} is not a phone number ({why}); write it as 13800001234, "
            "+86 138 0000 1234 or 010-1234 5678, a number of another country with + and its code"
        )
    return text


_CONTACT_CHECKS = {
    "phone": _as_phone,
    "string": _as_string,
    "category": _as_category,
    "bool": _as_bool,
    "date": _as_date,
    "timezone": _as_timezone,
    "int": _as_string,
    "float": _as_string,
}
