"""``POST /v1/customers/import`` as a bank exports its customers: Excel's GBK or GB18030 on a
Chinese Windows, UTF-16, UTF-8 with a BOM; a file that mixes encodings or has no id column is
refused with where and why; a large file is stored a chunk at a time, duplicates found across
chunks."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

import api.routes.customers as customers_route
from scripts_engine.db import session as db_session
from tests.api.conftest import auth, demo_records
from tests.api.test_error_shape import check


def as_csv(records: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=sorted({k for r in records for k in r}),
                            lineterminator="\r\n")  # fmt: skip
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue()


def upload(client: TestClient, keys: dict[str, str], data: bytes, name: str = "c.csv") -> Any:
    return client.post("/v1/customers/import", files={"file": (name, data)},
                       headers=auth(keys["admin"]))  # fmt: skip


@pytest.mark.parametrize("encoding", ["gbk", "gb18030", "utf-16", "utf-8-sig", "utf-8"])
def test_a_file_in_the_encodings_a_bank_exports_keeps_its_chinese_names(
    client: TestClient, keys: dict[str, str], encoding: str
) -> None:
    records = demo_records(4)
    records[0]["name"], records[1]["city"] = "王芳", "广州"
    if encoding == "gb18030":
        records[2]["name"] = "𠮷野家"  # outside GBK: four bytes in GB18030
    r = upload(client, keys, as_csv(records).encode(encoding))
    assert r.status_code == 200 and r.json()["accepted"] == 4, r.text
    qa = auth(keys["qa"])
    for rec in records:
        got = client.get(f"/v1/customers/{rec['customer_id']}", headers=qa).json()
        assert (got["name"], got["city"]) == (rec["name"], rec["city"])


def test_tab_separated_and_json_lines_files_are_read(
    client: TestClient, keys: dict[str, str]
) -> None:
    records = demo_records(4)
    tsv = as_csv(records[:2]).replace(",", "\t").encode()
    assert upload(client, keys, tsv, "c.tsv").json()["accepted"] == 2
    jsonl = "\n".join(json.dumps(r, ensure_ascii=False) for r in records[2:]).encode()
    assert upload(client, keys, jsonl, "c.jsonl").json()["accepted"] == 2
    check(upload(client, keys, b"MZ", "c.exe"), 415, "unsupported_media_type")


def test_files_that_cannot_be_read_say_where_and_why(
    client: TestClient, keys: dict[str, str]
) -> None:
    records = demo_records(3)
    records[0]["name"], records[2]["name"] = "王芳", "李雷"
    text = as_csv(records).split("\r\n")
    mixed = "\r\n".join(text[:3]).encode() + b"\r\n" + "\r\n".join(text[3:]).encode("gbk")
    body = check(upload(client, keys, mixed), 422, "bad_data")
    assert body["message"].startswith("c.csv: line 4, byte 0x")
    assert "is not UTF-8 while other lines are: save the whole file as UTF-8" in body["message"]
    no_ids = as_csv([{k: v for k, v in r.items() if k != "customer_id"} for r in records])
    body = check(upload(client, keys, no_ids.encode()), 422, "bad_data")
    assert body["message"].startswith("no customer_id column (columns: ")
    assert client.get("/v1/customers/row-1", headers=auth(keys["qa"])).status_code == 404


def test_a_large_file_is_stored_a_chunk_at_a_time_with_duplicates_found_across_chunks(
    client: TestClient, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each write transaction stores a few rows (a claim waits for one of them at most, not
    for the file); a customer id repeated in a later chunk is a rejected duplicate."""
    monkeypatch.setattr(customers_route, "READ_ROWS", 4)
    monkeypatch.setattr(customers_route, "STORE_ROWS", 3)
    sizes: list[int] = []
    real = db_session.write_transaction

    def counting(db: Any, fn: Any, **kwargs: Any) -> Any:
        sizes.append(fn.keywords["r"].__len__() if hasattr(fn, "keywords") else -1)
        return real(db, fn, **kwargs)

    monkeypatch.setattr(customers_route, "write_transaction", counting)
    records = demo_records(10)
    records[7]["customer_id"] = records[1]["customer_id"]  # row 8, chunk 2
    r = upload(client, keys, as_csv(records).encode())
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 9
    assert r.json()["rejected"] == [{"row": 8, "field": "customer_id", "error":
                                     f"duplicate customer_id '{records[1]['customer_id']}' "
                                     "in this input"}]  # fmt: skip
    assert len(sizes) == 4  # chunks of 4, 4 and 2 rows read; 3 + 1, 3, 2 stored


def test_a_database_error_while_storing_is_not_blamed_on_the_file(
    client: TestClient, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from scripts_engine.db.errors import Busy

    def busy(db: Any, fn: Any, **kwargs: Any) -> Any:
        raise Busy("the database stayed locked; retry shortly")

    monkeypatch.setattr(customers_route, "write_transaction", busy)
    r = upload(client, keys, as_csv(demo_records(2)).encode())
    check(r, 503, "busy")
    assert r.headers["retry-after"] == "1"
