"""Loading customers: every format, per-row errors with row and field, nothing dropped silently."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scripts_engine.errors import DataError
from scripts_engine.features import iter_customers, load_customers
from scripts_engine.grid import Grid

GOOD = {
    "customer_id": "c1",
    "age": 41,
    "job": "management",
    "marital": "married",
    "education": "tertiary",
    "default": "no",
    "balance": 2500.0,
    "housing": "no",
    "loan": "no",
    "contact": "cellular",
    "day": 12,
    "month": "oct",
    "campaign": 1,
    "pdays": -1,
    "previous": 0,
    "poutcome": "unknown",
    "gender": "F",
    "consent": True,
}


def _records() -> list[dict]:
    bad_type = GOOD | {"customer_id": "c2", "age": "forty"}
    bad_cat = GOOD | {"customer_id": "c3", "job": "astronaut"}
    bad_range = GOOD | {"customer_id": "c4", "age": 130}
    ok = GOOD | {"customer_id": "c5", "balance": None}
    return [GOOD, bad_type, bad_cat, bad_range, ok]


def _check(result, *, rows_offset: int = 0) -> None:  # type: ignore[no-untyped-def]
    assert list(result.batch.ids) == ["c1", "c5"]
    got = {(e.row, e.field) for e in result.errors}
    assert got == {(2, "age"), (3, "job"), (4, "age")}
    by_field = {e.field + str(e.row): e.error for e in result.errors}
    assert "expected a number" in by_field["age2"]
    assert "unknown value 'astronaut'" in by_field["job3"]
    assert "above the maximum 100" in by_field["age4"]
    rec = result.batch.record(1)
    assert rec["balance"] is None and rec["job"] == "management" and rec["age"] == 41


def test_records(grid: Grid) -> None:
    _check(load_customers(_records(), grid))


def test_csv_parquet_jsonl_agree(grid: Grid, tmp_path: Path) -> None:
    frame = pd.DataFrame(_records())
    csv = tmp_path / "c.csv"
    frame.to_csv(csv, index=False)
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in _records()) + "\n", encoding="utf-8")
    for path in (csv, jsonl):
        _check(load_customers(path, grid))
    # Parquet columns are typed: a string in a numeric column cannot be stored, so write the
    # good rows typed and check that typed values pass through untouched
    pq = tmp_path / "c.parquet"
    frame.iloc[[0, 4]].astype({"age": "int64"}).to_parquet(pq)
    res = load_customers(pq, grid)
    assert list(res.batch.ids) == ["c1", "c5"] and not res.errors
    assert res.batch.record(0)["age"] == 41


def test_semicolon_csv_with_quotes_and_post_call_column(grid: Grid, train_batch) -> None:  # type: ignore[no-untyped-def]
    assert len(train_batch) == 36_169
    assert "duration" not in train_batch.columns
    first = train_batch.record(0)
    assert first["age"] == 33 and first["job"] == "entrepreneur" and first["y"] == "no"


def test_post_call_column_is_reported_not_used(grid: Grid) -> None:
    res = load_customers([GOOD | {"duration": 300, "favourite_colour": "blue"}], grid)
    assert "post_call" in res.ignored["duration"]
    assert "not a field" in res.ignored["favourite_colour"]
    assert "duration" not in res.batch.columns


def test_malformed_csv_rows_keep_row_numbers(grid: Grid, tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(
        "customer_id,age,job\na,30,student\nb,31,student,EXTRA\nc,32,student\nd,x,student\n",
        encoding="utf-8",
    )
    res = load_customers(path, grid)
    assert list(res.batch.ids) == ["a", "c"]
    assert list(res.batch.rows) == [1, 3]
    errs = {(e.row, e.field) for e in res.errors}
    assert errs == {(2, "(row)"), (4, "age")}


def test_bad_json_line_is_reported_and_others_go_on(grid: Grid, tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(
        json.dumps(GOOD) + "\n{not json\n[1,2]\n" + json.dumps(GOOD | {"customer_id": "z"}) + "\n"
    )
    res = load_customers(path, grid)
    assert list(res.batch.ids) == ["c1", "z"]
    assert [(e.row, e.field) for e in res.errors] == [(2, "(line)"), (3, "(line)")]


def test_contact_fields_validated(grid: Grid) -> None:
    res = load_customers(
        [
            GOOD | {"customer_id": "a", "gender": "X"},
            GOOD | {"customer_id": "b", "timezone": "Mars/Base"},
            GOOD | {"customer_id": "c", "birthday": "1990-13-01"},
            GOOD | {"customer_id": "d", "consent": "perhaps"},
            GOOD | {"customer_id": "e", "timezone": "Asia/Shanghai", "consent": "是"},
        ],
        grid,
    )
    assert list(res.batch.ids) == ["e"]
    assert {e.field for e in res.errors} == {"gender", "timezone", "birthday", "consent"}
    assert res.batch.record(0)["consent"] is True


def test_wrong_types_are_not_coerced(grid: Grid) -> None:
    res = load_customers(
        [GOOD | {"customer_id": "a", "age": True}, GOOD | {"customer_id": "b", "age": 30.5}], grid
    )
    assert len(res.batch) == 0
    assert [e.error for e in res.errors] == [
        "expected a number, got True",
        "expected a whole number, got 30.5",
    ]


def test_duplicate_ids_rejected(grid: Grid) -> None:
    res = load_customers([GOOD, GOOD], grid)
    assert list(res.batch.ids) == ["c1"]
    assert res.errors[0].row == 2 and "duplicate" in res.errors[0].error


def test_unreadable_sources(grid: Grid, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        load_customers(tmp_path / "missing.csv", grid)
    bad = tmp_path / "x.xlsx"
    bad.write_bytes(b"PK")
    with pytest.raises(DataError, match="unknown format"):
        load_customers(bad, grid)
    notpq = tmp_path / "x.parquet"
    notpq.write_text("hello")
    with pytest.raises(DataError, match="not a readable Parquet"):
        load_customers(notpq, grid)


def test_outcome_required_when_asked(grid: Grid) -> None:
    with pytest.raises(DataError, match="required column 'y'"):
        load_customers([GOOD], grid, outcomes=True)
    res = load_customers(
        [GOOD | {"y": "yes"}, GOOD | {"customer_id": "n", "y": ""}], grid, outcomes=True
    )
    assert list(res.batch.ids) == ["c1"]
    assert res.errors[0].field == "y"


def test_streaming_chunks_cover_every_row(grid: Grid, tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    frame = pd.DataFrame([GOOD | {"customer_id": f"c{i}", "age": 20 + i % 60} for i in range(2500)])
    frame.to_csv(path, index=False)
    parts = list(iter_customers(path, grid, chunk_rows=1000))
    assert [len(p.batch) for p in parts] == [1000, 1000, 500]
    rows = np.concatenate([p.batch.rows for p in parts])
    assert (rows == np.arange(1, 2501)).all()


def test_a_parquet_files_numbers_are_quoted_as_numbers_in_errors(
    tmp_path: Path, grid: Grid
) -> None:
    """A typed Parquet column holds numpy scalars: an error quotes ``200``, not
    ``np.int64(200)``."""
    path = tmp_path / "c.parquet"
    pd.DataFrame({"customer_id": ["a", "b", "c"], "age": [200, 30, 40],
                  "balance": [1.5, float("inf"), 2.0]}).to_parquet(path)  # fmt: skip
    errors = {(e.row, e.field): e.error for e in load_customers(path, grid).errors}
    assert errors[(1, "age")] == "200 is above the maximum 100 years"
    assert errors[(2, "balance")] == "inf is not a finite number"
    assert "np." not in " ".join(errors.values()), errors


def test_a_contact_field_with_a_control_character_is_rejected(grid: Grid) -> None:
    records = [{"customer_id": "a", "name": "王\x00芳"}, {"customer_id": "b", "city": "广\n州"},
               {"customer_id": "c\t", "name": "李雷"}]  # fmt: skip
    loaded = load_customers(records, grid)
    assert [(e.row, e.field, e.error) for e in loaded.errors] == [
        (1, "name", "contains a control character ('\\x00' at 2)"),
        (2, "city", "contains a control character ('\\n' at 2)"),
    ]
    assert list(loaded.batch.ids) == ["c"]  # surrounding blanks are trimmed, as before


def test_phone_numbers_in_any_usual_spelling_and_only_phone_numbers(grid: Grid) -> None:
    """A phone is kept as written, full-width digits made plain, when it reads as a valid
    number (brackets, dots, a number of another country); anything a dialler could dial as
    another number than the one judged (letters, an extension, two numbers, a spreadsheet's
    decimal) is rejected with why; a number read from a spreadsheet as a float comes back
    as its digits."""
    spellings = ["(010) 1234 5678", "１３８００００１２３４", "138.7766.2004", "+1 (212) 555-0100",
                 "852 9188 3001", "1 (510) 555-0123", 13611110008.0]  # fmt: skip
    bad = ["12", "+8613800001234567890", "call me", "1" * 40, "13916104304.0",
           "13923248218;13969607039", "13800001234 ext 5", "-13800001234", "0000000000"]  # fmt: skip
    res = load_customers([GOOD | {"customer_id": f"p{i}", "phone": p}
                          for i, p in enumerate([*spellings, *bad])], grid)  # fmt: skip
    assert [res.batch.record(i)["phone"] for i in range(len(res.batch))] == [
        "(010) 1234 5678", "13800001234", "138.7766.2004", "+1 (212) 555-0100",
        "852 9188 3001", "1 (510) 555-0123", "13611110008"]  # fmt: skip
    why = {e.row: e.error.split("; write it")[0] for e in res.errors}
    assert why == {
        8: "'12' is not a phone number (no valid number of its country)",
        9: "'+8613800001234567890' is not a phone number (no valid number of its country)",
        10: "'call me' is not a phone number (only digits, spaces, a leading +, - ( ) and . "
            "belong in a phone number)",
        11: "'1111111111111111111111111111111111111111' is not a phone number (no valid number "
            "of its country)",
        12: "'13916104304.0' is not a phone number (a number saved as a decimal (as a "
            "spreadsheet does): give its digits only)",
        13: "'13923248218;13969607039' is not a phone number (only digits, spaces, a leading "
            "+, - ( ) and . belong in a phone number)",
        14: "'13800001234 ext 5' is not a phone number (only digits, spaces, a leading +, - ( ) "
            "and . belong in a phone number)",
        15: "'-13800001234' is not a phone number (only digits, spaces, a leading +, - ( ) and . "
            "belong in a phone number)",
        16: "'0000000000' is not a phone number (no valid number of its country)",
    }  # fmt: skip
    assert res.errors[0].error.endswith(
        "; write it as 13800001234, +86 138 0000 1234 or 010-1234 5678, a number of another "
        "country with + and its code"
    )


def test_ids_and_time_zones_the_service_can_keep(grid: Grid) -> None:
    """A customer id over 64 characters could be stored but never put in a campaign; the
    server's own zone ("localtime") is no customer's."""
    res = load_customers([GOOD | {"customer_id": "x" * 65}, GOOD | {"customer_id": "b",
                          "timezone": "localtime"}, GOOD | {"customer_id": "c",
                          "timezone": "posix/America/New_York"}], grid)  # fmt: skip
    assert len(res.batch) == 0
    assert [(e.field, e.error) for e in res.errors] == [
        ("customer_id", f"'{'x' * 49}... (65 characters) is longer than 64 characters"),
        ("timezone", "unknown time zone 'localtime' (use an IANA name such as Asia/Shanghai)"),
        ("timezone", "unknown time zone 'posix/America/New_York' (use an IANA name such as "
                     "Asia/Shanghai)"),
    ]  # fmt: skip
