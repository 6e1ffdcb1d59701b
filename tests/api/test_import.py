"""Bulk machine import (.xlsx / .csv) and its template: all rows valid means all created in
one go, anything wrong means nothing created and every problem reported with the row the
spreadsheet shows (header = row 1)."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile

import pytest
from aiohttp import FormData, MultipartWriter
from openpyxl import Workbook, load_workbook

from services import imports
from tests.helpers import Api, call

IMPORT = "/api/v1/admin/machines/import"
TEMPLATE = IMPORT + "/template"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
HEADER = ("id", "name", "ip", "gpu_model", "gpu_count")


def xlsx(*rows: tuple | list) -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(list(row))
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def csv_bytes(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


def form(data: bytes, filename: str = "m.xlsx", *, content_type: str = XLSX_TYPE,
         name: str = "file") -> FormData:
    body = FormData()
    body.add_field(name, io.BytesIO(data), filename=filename, content_type=content_type)
    return body


async def upload(api: Api, data: bytes, filename: str = "m.xlsx", *, dry_run: bool = False,
                 content_type: str | None = None) -> tuple[int, dict]:
    if content_type is None:
        content_type = "text/csv" if filename.endswith(".csv") else XLSX_TYPE
    path = IMPORT + ("?dry_run=true" if dry_run else "")
    return await api.post(path, data=form(data, filename, content_type=content_type))


async def machine_count(db) -> int:
    return await db.fetchval("SELECT count(*) FROM machines")


def errors_of(body: dict) -> list[tuple[int, str | None]]:
    return [(e["row"], e["field"]) for e in body["data"]["errors"]]


def assert_rejected(status: int, body: dict) -> None:
    assert (status, body["code"]) == (400, 40001), body
    for error in body["data"]["errors"]:
        assert set(error) >= {"row", "field", "message"}
        assert isinstance(error["row"], int) and error["message"]


# --- success ------------------------------------------------------------------------------


async def test_valid_xlsx_creates_every_machine_with_its_gpus(admin, db):
    data = xlsx(
        ("id", "name", "region", "ip", "gpu_model", "gpu_count", "gpu_memory_gb", "ssh_port"),
        ("bj-01", "Beijing 01", "beijing", "192.168.1.10", "RTX 4090", 4, 24, 10022),
        ("bj-02", "Beijing 02", "beijing", "192.168.1.11", "A100", 8, 80, 22),
        ("sh-01", "Shanghai 01", "shanghai", "2001:db8::1", "L4", 1, 24, 2222),
    )
    status, body = await upload(admin, data)
    assert status == 200, body
    assert (body["code"], body["data"]["rows"], body["data"]["created"],
            body["data"]["dry_run"]) == (0, 3, 3, False)
    rows = await db.fetch("SELECT id, name, region, host(ip) AS ip, gpu_model, gpu_count, "
                          "gpu_memory_gb, ssh_host, ssh_port, status, allocation_status "
                          "FROM machines ORDER BY id")
    assert [tuple(r) for r in rows] == [
        ("bj-01", "Beijing 01", "beijing", "192.168.1.10", "RTX 4090", 4, 24, "192.168.1.10",
         10022, "offline", "idle"),
        ("bj-02", "Beijing 02", "beijing", "192.168.1.11", "A100", 8, 80, "192.168.1.11",
         22, "offline", "idle"),
        ("sh-01", "Shanghai 01", "shanghai", "2001:db8::1", "L4", 1, 24, "2001:db8::1",
         2222, "offline", "idle"),
    ]
    gpus = await db.fetch("SELECT machine_id, count(*) AS n, min(gpu_index) AS lo, "
                          "max(gpu_index) AS hi, min(memory_total_mib) AS mib "
                          "FROM gpu_devices GROUP BY machine_id ORDER BY machine_id")
    assert [tuple(g) for g in gpus] == [("bj-01", 4, 0, 3, 24 * 1024),
                                        ("bj-02", 8, 0, 7, 80 * 1024),
                                        ("sh-01", 1, 0, 0, 24 * 1024)]


async def test_import_response_lists_each_machine_with_a_token_stored_only_as_sha256(admin, db):
    data = xlsx(HEADER, ("m1", "one", "10.0.0.1", "A100", 2), ("m2", "two", "10.0.0.2", "A100", 2))
    status, body = await upload(admin, data)
    assert status == 200, body
    listed = body["data"]["machines"]
    assert [m["id"] for m in listed] == ["m1", "m2"]
    assert all(set(m) == {"id", "agent_token"} for m in listed)
    tokens = [m["agent_token"] for m in listed]
    assert len(set(tokens)) == 2 and all(len(t) >= 32 for t in tokens)
    for machine in listed:
        stored = await db.fetchval("SELECT agent_token_hash FROM machines WHERE id = $1",
                                   machine["id"])
        assert stored == hashlib.sha256(machine["agent_token"].encode()).digest()
    dump = str([dict(r) for r in await db.fetch("SELECT * FROM machines")])
    assert not any(token in dump for token in tokens)


async def test_rows_without_id_get_a_generated_id(admin, db):
    status, body = await upload(admin, xlsx(("name", "ip", "gpu_model", "gpu_count"),
                                            ("anon-1", "10.0.0.1", "L4", 1),
                                            ("anon-2", "10.0.0.2", "L4", 1)))
    assert status == 200, body
    ids = [m["id"] for m in body["data"]["machines"]]
    assert len(set(ids)) == 2 and all(i.startswith("m-") for i in ids)
    stored = await db.fetch("SELECT id, name FROM machines ORDER BY name")
    assert [(r["id"], r["name"]) for r in stored] == list(zip(ids, ["anon-1", "anon-2"],
                                                              strict=True))


async def test_xlsx_numeric_cells_in_text_columns_are_taken_as_text(admin, db):
    status, body = await upload(admin, xlsx(HEADER, (1001, 2024, "10.0.0.1", 4090, 2.0)))
    assert status == 200, body
    row = await db.fetchrow("SELECT id, name, gpu_model, gpu_count FROM machines")
    assert tuple(row) == ("1001", "2024", "4090", 2)


async def test_valid_csv_creates_every_row(admin, db):
    data = csv_bytes(
        "id,name,region,ip,gpu_model,gpu_count,gpu_memory_gb,memory_total,disk_total,ssh_user",
        "c1,Node 1,beijing,10.1.0.1,H100,8,80,1024,4096,ubuntu",
        "c2,Node 2,beijing,10.1.0.2,H100,8,80,1024,4096,ubuntu",
        "c3,Node 3,shanghai,10.1.0.3,A10,2,24,256,1024,root",
    )
    status, body = await upload(admin, data, "machines.csv")
    assert status == 200, body
    assert (body["data"]["rows"], body["data"]["created"]) == (3, 3)
    rows = await db.fetch("SELECT id, region, gpu_model, gpu_count, gpu_memory_gb, memory_total, "
                          "disk_total, ssh_user FROM machines ORDER BY id")
    assert [tuple(r) for r in rows] == [
        ("c1", "beijing", "H100", 8, 80, 1024, 4096, "ubuntu"),
        ("c2", "beijing", "H100", 8, 80, 1024, 4096, "ubuntu"),
        ("c3", "shanghai", "A10", 2, 24, 256, 1024, "root"),
    ]
    assert await db.fetchval("SELECT count(*) FROM gpu_devices") == 18


async def test_csv_header_names_are_case_insensitive(admin, db):
    data = csv_bytes("ID, Name ,IP,GPU_Model,Gpu_Count", "c1,one,10.0.0.1,A100,2")
    status, body = await upload(admin, data, "m.csv")
    assert status == 200, body
    assert tuple(await db.fetchrow("SELECT id, name, gpu_count FROM machines")) == ("c1", "one", 2)


async def test_xlsx_header_names_are_case_insensitive(admin, db):
    status, body = await upload(admin, xlsx(("Id", "NAME", "Ip", "GPU_MODEL", "GPU_count"),
                                            ("x1", "one", "10.0.0.1", "A100", 1)))
    assert status == 200, body
    assert await db.fetchval("SELECT id FROM machines") == "x1"


async def test_csv_blank_lines_are_skipped_and_rows_keep_their_spreadsheet_numbers(admin, db):
    ok = csv_bytes(",".join(HEADER), "", "c1,one,10.0.0.1,A100,1", ",,,,", "",
                   "c2,two,10.0.0.2,A100,1")
    status, body = await upload(admin, ok, "m.csv")
    assert status == 200, body
    assert (body["data"]["rows"], body["data"]["created"]) == (2, 2)
    assert await machine_count(db) == 2

    await db.execute("TRUNCATE machines CASCADE")
    bad = csv_bytes(",".join(HEADER), "", "c1,one,10.0.0.1,A100,1", "", "c2,two,not-an-ip,A100,1")
    status, body = await upload(admin, bad, "m.csv")
    assert_rejected(status, body)
    assert errors_of(body) == [(5, "ip")]


async def test_xlsx_blank_rows_are_skipped_and_rows_keep_their_spreadsheet_numbers(admin, db):
    data = xlsx(HEADER, ("x1", "one", "10.0.0.1", "A100", 1), (), (None, None, None),
                ("x2", "two", "bad-ip", "A100", 1))
    status, body = await upload(admin, data)
    assert_rejected(status, body)
    assert errors_of(body) == [(5, "ip")]
    assert await machine_count(db) == 0


async def test_csv_labels_column_takes_a_json_object(admin, db):
    data = csv_bytes("name,ip,gpu_model,gpu_count,labels",
                     'one,10.0.0.1,A100,1,"{""rack"": ""A3"", ""pool"": ""train""}"')
    status, body = await upload(admin, data, "m.csv")
    assert status == 200, body
    assert await db.fetchval("SELECT labels FROM machines") in (
        {"rack": "A3", "pool": "train"}, '{"rack": "A3", "pool": "train"}')


async def test_labels_that_are_not_a_json_object_are_a_row_error(admin, db):
    data = csv_bytes("name,ip,gpu_model,gpu_count,labels",
                     "one,10.0.0.1,A100,1,{not json",
                     'two,10.0.0.2,A100,1,"[1, 2]"')
    status, body = await upload(admin, data, "m.csv")
    assert_rejected(status, body)
    assert [(row, field.split(".")[0]) for row, field in errors_of(body)] == [(2, "labels"),
                                                                            (3, "labels")]
    assert await machine_count(db) == 0


async def test_csv_with_a_byte_order_mark_is_read(admin, db):
    data = "\ufeff".encode() + csv_bytes(",".join(HEADER), "c1,one,10.0.0.1,A100,1")
    status, body = await upload(admin, data, "excel.csv")
    assert status == 200, body
    assert await db.fetchval("SELECT id FROM machines") == "c1"


async def test_upper_case_file_extension_is_accepted(admin, db):
    status, body = await upload(admin, xlsx(HEADER, ("x1", "one", "10.0.0.1", "A100", 1)),
                                "MACHINES.XLSX")
    assert status == 200, body
    assert await machine_count(db) == 1


async def test_other_form_fields_beside_the_file_are_ignored(admin, db):
    body = FormData()
    body.add_field("comment", "first batch")
    body.add_field("file", xlsx(HEADER, ("x1", "one", "10.0.0.1", "A100", 1)),
                   filename="m.xlsx", content_type=XLSX_TYPE)
    status, reply = await admin.post(IMPORT, data=body)
    assert status == 200, reply
    assert await machine_count(db) == 1


async def test_imported_machines_appear_in_the_machine_list(admin):
    await upload(admin, xlsx(HEADER, ("x1", "one", "10.0.0.1", "A100", 2)))
    data = await admin.ok("GET", "/api/v1/admin/machines")
    assert [(m["id"], m["gpu_info"]["count"]) for m in data["list"]] == [("x1", 2)]


async def test_file_larger_than_the_json_body_limit_is_accepted(admin, db):
    # the multipart upload has its own limit (20 MiB), not the 1 MiB JSON body limit
    workbook = Workbook()
    workbook.active.append(HEADER)
    workbook.active.append(("x1", "one", "10.0.0.1", "A100", 1))
    padding = workbook.create_sheet("padding")
    for _ in range(200):
        padding.append([os.urandom(2000).hex() for _ in range(5)])
    out = io.BytesIO()
    workbook.save(out)
    data = out.getvalue()
    assert 2**20 < len(data) < imports.MAX_BYTES
    status, body = await upload(admin, data)
    assert status == 200, body
    assert await machine_count(db) == 1


async def test_exactly_the_row_limit_is_accepted(admin, db, monkeypatch):
    monkeypatch.setattr(imports, "MAX_ROWS", 3)
    data = xlsx(HEADER, *[(f"x{i}", f"n{i}", f"10.0.0.{i}", "A100", 1) for i in range(1, 4)])
    status, body = await upload(admin, data)
    assert status == 200, body
    assert await machine_count(db) == 3


# --- validation errors -------------------------------------------------------------------


async def test_one_bad_row_creates_nothing_and_names_the_row_and_field(admin, db):
    data = xlsx(HEADER, ("x1", "one", "10.0.0.1", "A100", 1),
                ("x2", "two", "10.0.0.300", "A100", 1),
                ("x3", "three", "10.0.0.3", "A100", 1))
    status, body = await upload(admin, data)
    assert_rejected(status, body)
    assert errors_of(body) == [(3, "ip")]
    assert await machine_count(db) == 0
    assert await db.fetchval("SELECT count(*) FROM gpu_devices") == 0


async def test_gpu_count_above_64_is_a_row_error(admin, db):
    status, body = await upload(admin, xlsx(HEADER, ("x1", "one", "10.0.0.1", "A100", 65)))
    assert_rejected(status, body)
    assert errors_of(body) == [(2, "gpu_count")]
    assert await machine_count(db) == 0


async def test_missing_name_is_a_row_error(admin, db):
    status, body = await upload(admin, xlsx(HEADER, ("x1", "one", "10.0.0.1", "A100", 1),
                                            ("x2", None, "10.0.0.2", "A100", 1),
                                            ("x3", "   ", "10.0.0.3", "A100", 1)))
    assert_rejected(status, body)
    assert errors_of(body) == [(3, "name"), (4, "name")]
    assert await machine_count(db) == 0


async def test_every_bad_row_and_field_is_reported(admin, db):
    data = csv_bytes(",".join((*HEADER, "ssh_port")),
                     "ok-1,fine,10.0.0.1,A100,1,22",
                     "bad id!,x,10.0.0.2,A100,1,22",
                     "c3,,999.1.1.1,A100,65,22",
                     "c4,y,10.0.0.4,A100,-1,70000",
                     "c5,z,10.0.0.5,A100,four,22")
    status, body = await upload(admin, data, "m.csv")
    assert_rejected(status, body)
    assert sorted(errors_of(body)) == [(3, "id"), (4, "gpu_count"), (4, "ip"), (4, "name"),
                                       (5, "gpu_count"), (5, "ssh_port"), (6, "gpu_count")]
    assert [e["row"] for e in body["data"]["errors"]] == sorted(
        e["row"] for e in body["data"]["errors"])
    assert await machine_count(db) == 0


async def test_fractional_gpu_count_is_a_row_error(admin, db):
    status, body = await upload(admin, xlsx(HEADER, ("x1", "one", "10.0.0.1", "A100", 2.5)))
    assert_rejected(status, body)
    assert errors_of(body) == [(2, "gpu_count")]


async def test_errors_are_capped_and_the_message_says_how_many(admin, db):
    rows = [(f"x{i}", f"n{i}", "bad-ip", "A100", 1) for i in range(imports.MAX_ERRORS + 50)]
    status, body = await upload(admin, xlsx(HEADER, *rows))
    assert_rejected(status, body)
    assert len(body["data"]["errors"]) == imports.MAX_ERRORS
    assert str(imports.MAX_ERRORS + 50) in body["msg"]
    assert await machine_count(db) == 0


async def test_duplicate_id_within_the_file_is_reported_with_its_row(admin, db):
    data = xlsx(HEADER, ("x1", "one", "10.0.0.1", "A100", 1),
                ("x2", "two", "10.0.0.2", "A100", 1),
                ("x1", "again", "10.0.0.3", "A100", 1))
    status, body = await upload(admin, data)
    assert_rejected(status, body)
    assert errors_of(body) == [(4, "id")]
    assert "2" in body["data"]["errors"][0]["message"]  # points at the first occurrence
    assert await machine_count(db) == 0


async def test_id_already_in_the_database_is_reported_with_its_row(admin, db):
    await admin.machine("taken")
    data = xlsx(HEADER, ("new-1", "one", "10.0.0.1", "A100", 1),
                ("taken", "two", "10.0.0.2", "A100", 1))
    status, body = await upload(admin, data)
    assert_rejected(status, body)
    assert errors_of(body) == [(3, "id")]
    assert await db.fetchval("SELECT array_agg(id) FROM machines") == ["taken"]


async def test_unknown_column_is_reported_against_row_1(admin, db):
    data = xlsx((*HEADER, "colour"), ("x1", "one", "10.0.0.1", "A100", 1, "red"))
    status, body = await upload(admin, data)
    assert_rejected(status, body)
    assert errors_of(body) == [(1, "colour")]
    assert await machine_count(db) == 0


async def test_repeated_column_is_reported_against_row_1(admin, db):
    data = csv_bytes("id,name,ip,gpu_model,gpu_count,Name", "c1,one,10.0.0.1,A100,1,uno")
    status, body = await upload(admin, data, "m.csv")
    assert_rejected(status, body)
    assert errors_of(body) == [(1, "name")]
    assert await machine_count(db) == 0


@pytest.mark.parametrize("missing", ["name", "ip", "gpu_model", "gpu_count"])
async def test_missing_required_column_is_reported_against_row_1(admin, db, missing):
    keep = [i for i, column in enumerate(HEADER) if column != missing]
    row = ("x1", "one", "10.0.0.1", "A100", 1)
    data = xlsx([HEADER[i] for i in keep], [row[i] for i in keep])
    status, body = await upload(admin, data)
    assert_rejected(status, body)
    assert (1, missing) in errors_of(body)
    assert await machine_count(db) == 0


async def test_header_only_file_is_rejected(admin, db):
    status, body = await upload(admin, csv_bytes(",".join(HEADER)), "m.csv")
    assert_rejected(status, body)
    assert len(body["data"]["errors"]) == 1
    assert await machine_count(db) == 0


async def test_empty_csv_is_a_row_1_error(admin, db):
    status, body = await upload(admin, b"", "m.csv")
    assert_rejected(status, body)
    assert [e["row"] for e in body["data"]["errors"]] == [1]


async def test_csv_that_is_not_utf8_is_a_row_1_error(admin, db):
    data = ",".join(HEADER).encode() + b"\r\nc1,\xe9t\xe9,10.0.0.1,A100,1\r\n"
    status, body = await upload(admin, data, "m.csv")
    assert_rejected(status, body)
    assert [e["row"] for e in body["data"]["errors"]] == [1]
    assert await machine_count(db) == 0


# --- dry run -----------------------------------------------------------------------------


async def test_dry_run_validates_and_creates_nothing(admin, db):
    data = xlsx(HEADER, ("x1", "one", "10.0.0.1", "A100", 1), ("x2", "two", "10.0.0.2", "A100", 1))
    status, body = await upload(admin, data, dry_run=True)
    assert status == 200, body
    assert {k: body["data"][k] for k in ("rows", "created", "dry_run")} == {
        "rows": 2, "created": 0, "dry_run": True}
    assert body["data"].get("machines", []) == []
    assert await machine_count(db) == 0


async def test_dry_run_reports_errors_like_a_real_import(admin, db):
    await admin.machine("taken")
    data = xlsx(HEADER, ("taken", "one", "10.0.0.1", "A100", 1),
                ("x2", "two", "10.0.0.2", "A100", 99))
    status, body = await upload(admin, data, dry_run=True)
    assert_rejected(status, body)
    assert errors_of(body) == [(2, "id"), (3, "gpu_count")]
    assert await machine_count(db) == 1


async def test_dry_run_then_real_import_creates_the_rows(admin, db):
    data = xlsx(HEADER, ("x1", "one", "10.0.0.1", "A100", 1))
    assert (await upload(admin, data, dry_run=True))[0] == 200
    status, body = await upload(admin, data)
    assert status == 200, body
    assert body["data"]["created"] == 1
    assert await machine_count(db) == 1


# --- limits ------------------------------------------------------------------------------


async def test_oversized_file_is_413_and_creates_nothing(admin, db, monkeypatch):
    monkeypatch.setattr(imports, "MAX_BYTES", 1000)
    rows = [(f"x{i}", f"node {i}", f"10.0.{i // 250}.{i % 250 + 1}", "A100", 1)
            for i in range(100)]
    data = csv_bytes(",".join(HEADER), *(",".join(map(str, r)) for r in rows))
    assert len(data) > 1000
    status, body = await upload(admin, data, "m.csv")
    assert (status, body["code"]) == (413, 41301), body
    assert await machine_count(db) == 0


async def test_file_just_at_the_size_limit_is_read(admin, db, monkeypatch):
    data = csv_bytes(",".join(HEADER), "c1,one,10.0.0.1,A100,1")
    monkeypatch.setattr(imports, "MAX_BYTES", len(data))
    status, body = await upload(admin, data, "m.csv")
    assert status == 200, body
    assert await machine_count(db) == 1


async def test_more_rows_than_the_limit_is_rejected_and_creates_nothing(admin, db, monkeypatch):
    monkeypatch.setattr(imports, "MAX_ROWS", 3)
    data = xlsx(HEADER, *[(f"x{i}", f"n{i}", f"10.0.0.{i}", "A100", 1) for i in range(1, 5)])
    status, body = await upload(admin, data)
    assert_rejected(status, body)
    assert len(body["data"]["errors"]) == 1
    assert await machine_count(db) == 0


async def test_more_csv_rows_than_the_limit_is_rejected(admin, db, monkeypatch):
    monkeypatch.setattr(imports, "MAX_ROWS", 3)
    lines = [f"c{i},n{i},10.0.0.{i},A100,1" for i in range(1, 10)]
    status, body = await upload(admin, csv_bytes(",".join(HEADER), *lines), "m.csv")
    assert_rejected(status, body)
    assert await machine_count(db) == 0


def streamed_xlsx(rows: int) -> bytes:
    """A header and ``rows`` one-cell rows, written as a stream: small on disk, and with no
    <dimension> element, so a reader learns its size only by reading it all."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet()
    sheet.append(list(HEADER))
    for i in range(rows):
        sheet.append([f"x{i}"])
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


async def test_one_row_more_than_the_cap_is_refused_with_the_row_error(admin, db):
    status, body = await upload(admin, streamed_xlsx(imports.MAX_ROWS + 1), dry_run=True)
    assert_rejected(status, body)
    assert errors_of(body) == [(imports.MAX_ROWS + 2, None)]
    assert "too many rows" in body["data"]["errors"][0]["message"]


async def test_rows_after_the_cap_are_never_parsed(admin, db, monkeypatch):
    # The sheet's XML breaks off after the cap: reading on would find it unreadable. (A
    # sheet with a <dimension>, as spreadsheet programs write them; without one, openpyxl
    # reads the sheet once to size it, which MAX_XLSX_EXPANDED_BYTES bounds.)
    monkeypatch.setattr(imports, "MAX_ROWS", 50)
    rows = [(f"x{i}", f"n{i}", "10.0.0.1", "A100", 1) for i in range(200)]
    data = _with_broken_sheet(xlsx(HEADER, *rows), cut_at=b'<row r="60"')
    status, body = await upload(admin, data)
    assert_rejected(status, body)
    assert errors_of(body) == [(52, None)]
    assert "too many rows" in body["data"]["errors"][0]["message"]


async def test_a_workbook_that_decompresses_past_the_bound_is_413_before_it_is_read(
        admin, db, monkeypatch):
    data = streamed_xlsx(2000)
    assert len(data) < 50_000 < imports._expanded_size(data)
    monkeypatch.setattr(imports, "MAX_XLSX_EXPANDED_BYTES", 50_000)
    status, body = await upload(admin, data)
    assert (status, body["code"]) == (413, 41301), body
    assert await machine_count(db) == 0


async def test_xlsx_columns_after_the_cap_are_not_read(admin, db):
    header = [*HEADER, *[None] * (imports.MAX_COLUMNS - len(HEADER)), "not read"]
    status, body = await upload(admin, xlsx(header, ("x1", "one", "10.0.0.1", "A100", 1)))
    assert status == 200, body
    assert await machine_count(db) == 1


async def test_a_sheet_claiming_the_widest_range_is_read_in_its_first_columns(admin, db):
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(list(HEADER))
    sheet.append(["x1", "one", "10.0.0.1", "A100", 1])
    sheet.cell(row=3, column=16384, value="far right")  # dimension A1:XFD3
    out = io.BytesIO()
    workbook.save(out)
    status, body = await upload(admin, out.getvalue())
    assert status == 200, body
    assert await machine_count(db) == 1


async def test_csv_columns_after_the_cap_are_not_read(admin, db):
    header = ",".join([*HEADER, *[""] * (imports.MAX_COLUMNS - len(HEADER)), "not read"])
    status, body = await upload(admin, csv_bytes(header, "c1,one,10.0.0.1,A100,1"), "m.csv")
    assert status == 200, body
    assert await machine_count(db) == 1


async def test_csv_field_beyond_the_csv_reader_limit_is_a_row_error_not_a_500(admin, db):
    data = csv_bytes(",".join(HEADER), "c1,one,10.0.0.1,A100,1",
                     f'c2,"{"x" * 200_000}",10.0.0.2,A100,1')
    status, body = await upload(admin, data, "m.csv")
    assert_rejected(status, body)
    assert errors_of(body) == [(3, None)]
    assert await machine_count(db) == 0


# --- malformed uploads -------------------------------------------------------------------


@pytest.mark.parametrize(("content_type", "payload"), [
    ("multipart/form-data", b"anything"),  # no boundary
    ("multipart/form-data; boundary=" + "b" * 71, b"--" + b"b" * 71 + b"\r\n"),  # too long
    ("multipart/form-data; boundary=zz", b"no boundary in here\r\n"),
    ("multipart/form-data; boundary=zz", b"--zz\r\nnot a header line\r\n\r\nx\r\n--zz--\r\n"),
    ("multipart/form-data; boundary=zz",  # a `_charset_` part longer than any charset
     b'--zz\r\nContent-Disposition: form-data; name="_charset_"\r\n\r\n' + b"u" * 40
     + b"\r\n--zz--\r\n"),
])
async def test_malformed_multipart_is_40002(admin, db, content_type, payload):
    status, body = await admin.post(IMPORT, data=payload, headers={"Content-Type": content_type})
    assert (status, body["code"]) == (400, 40002), body
    assert await machine_count(db) == 0


@pytest.mark.parametrize("filename", ["machines.txt", "machines.xls", "machines", "m.xlsx.exe"])
async def test_file_that_is_not_xlsx_or_csv_is_40002(admin, db, filename):
    status, body = await upload(admin, xlsx(HEADER, ("x1", "one", "10.0.0.1", "A100", 1)),
                                filename, content_type="application/octet-stream")
    assert (status, body["code"]) == (400, 40002), body
    assert await machine_count(db) == 0


async def test_json_body_instead_of_multipart_is_40002(admin, db):
    status, body = await admin.post(IMPORT, {"file": "x1,one,10.0.0.1,A100,1"})
    assert (status, body["code"]) == (400, 40002), body


async def test_raw_file_body_without_multipart_is_40002(admin, db):
    status, body = await admin.post(IMPORT, data=xlsx(HEADER, ("x1", "one", "10.0.0.1", "A100", 1)),
                                    headers={"Content-Type": XLSX_TYPE})
    assert (status, body["code"]) == (400, 40002), body
    assert await machine_count(db) == 0


async def test_multipart_without_a_file_part_is_40002(admin, db):
    body = FormData()
    body.add_field("document", xlsx(HEADER, ("x1", "one", "10.0.0.1", "A100", 1)),
                   filename="m.xlsx", content_type=XLSX_TYPE)
    status, reply = await admin.post(IMPORT, data=body)
    assert (status, reply["code"]) == (400, 40002), reply
    assert await machine_count(db) == 0


async def test_file_part_without_a_filename_is_40002(admin, db):
    with MultipartWriter("form-data") as body:
        part = body.append("id,name,ip,gpu_model,gpu_count\r\nc1,one,10.0.0.1,A100,1\r\n")
        part.set_content_disposition("form-data", name="file")
    status, reply = await admin.post(IMPORT, data=body)
    assert (status, reply["code"]) == (400, 40002), reply
    assert await machine_count(db) == 0


async def test_corrupt_xlsx_is_a_row_1_error_not_a_500(admin, db):
    status, body = await upload(admin, os.urandom(4096))
    assert_rejected(status, body)
    assert [e["row"] for e in body["data"]["errors"]] == [1]


async def test_csv_content_named_xlsx_is_a_row_1_error(admin, db):
    status, body = await upload(admin, csv_bytes(",".join(HEADER), "c1,one,10.0.0.1,A100,1"))
    assert_rejected(status, body)
    assert [e["row"] for e in body["data"]["errors"]] == [1]
    assert await machine_count(db) == 0


async def test_nul_character_in_a_cell_is_a_row_error_not_a_500(admin, db):
    data = csv_bytes(",".join(HEADER), "c1,one,10.0.0.1,A100,1", "c2,t\x00wo,10.0.0.2,A100,1")
    status, body = await upload(admin, data, "m.csv")
    assert_rejected(status, body)
    assert errors_of(body) == [(3, "name")]
    assert await machine_count(db) == 0


def _with_broken_sheet(data: bytes, cut_at: bytes | None = None) -> bytes:
    """A well-formed .xlsx package whose worksheet XML is cut off half way, or where
    ``cut_at`` first occurs."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                content = content[: content.index(cut_at) if cut_at else len(content) // 2]
            target.writestr(item, content)
    return out.getvalue()


async def test_xlsx_with_a_broken_worksheet_is_a_row_1_error_not_a_500(admin, db):
    data = _with_broken_sheet(xlsx(HEADER, *[(f"x{i}", f"n{i}", "10.0.0.1", "A100", 1)
                                             for i in range(50)]))
    status, body = await upload(admin, data)
    assert_rejected(status, body)
    assert [e["row"] for e in body["data"]["errors"]] == [1]
    assert await machine_count(db) == 0




# --- template ----------------------------------------------------------------------------


async def test_xlsx_template_downloads_as_an_attachment(admin):
    resp = await admin.client.get(TEMPLATE + "?format=xlsx", headers={
        "Authorization": f"Bearer {admin.token}"})
    assert resp.status == 200
    assert resp.content_type == XLSX_TYPE
    assert resp.headers["Content-Disposition"] == \
        'attachment; filename="machines-import-template.xlsx"'
    sheet = load_workbook(io.BytesIO(await resp.read())).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == imports.COLUMNS
    assert len(rows) == 2


async def test_template_defaults_to_xlsx(admin):
    resp = await admin.client.get(TEMPLATE, headers={"Authorization": f"Bearer {admin.token}"})
    assert (resp.status, resp.content_type) == (200, XLSX_TYPE)


async def test_csv_template_downloads_as_an_attachment(admin):
    resp = await admin.client.get(TEMPLATE + "?format=csv", headers={
        "Authorization": f"Bearer {admin.token}"})
    assert resp.status == 200
    assert resp.content_type == "text/csv"
    assert resp.headers["Content-Disposition"] == \
        'attachment; filename="machines-import-template.csv"'
    text = await resp.text()
    assert text.splitlines()[0] == ",".join(imports.COLUMNS)
    assert len(text.splitlines()) == 2


async def test_template_in_an_unknown_format_is_40001(admin):
    status, body = await admin.get(TEMPLATE + "?format=pdf")
    assert (status, body["code"]) == (400, 40001)


async def assert_template_imports(admin: Api, db, data: bytes, filename: str) -> None:
    status, body = await upload(admin, data, filename)
    assert status == 200, body
    assert (body["data"]["rows"], body["data"]["created"]) == (1, 1)
    row = await db.fetchrow("SELECT id, name, region, host(ip) AS ip, gpu_model, gpu_count, "
                            "gpu_memory_gb, ssh_host, ssh_port, ssh_user, jupyter_url, labels "
                            "FROM machines")
    assert tuple(row)[:11] == ("bj-node-01", "bj-node-01", "beijing", "192.168.1.10",
                               "NVIDIA GeForce RTX 4090", 4, 24, "ssh.example.com", 10022,
                               "root", "https://jupyter.example.com/bj-node-01")
    assert row["labels"] in ({"rack": "A3"}, '{"rack": "A3"}')
    assert await db.fetchval("SELECT count(*) FROM gpu_devices") == 4


@pytest.mark.parametrize(("fmt", "filename"), [("xlsx", "template.xlsx"), ("csv", "template.csv")])
async def test_downloaded_template_imports_unchanged(admin, db, fmt, filename):
    resp = await admin.client.get(f"{TEMPLATE}?format={fmt}", headers={
        "Authorization": f"Bearer {admin.token}"})
    assert resp.status == 200
    await assert_template_imports(admin, db, await resp.read(), filename)


@pytest.mark.parametrize(("fmt", "filename"), [("xlsx", "template.xlsx"), ("csv", "template.csv")])
async def test_template_content_imports_unchanged(admin, db, fmt, filename):
    # the bytes the template endpoint serves, taken from the service while it is broken
    await assert_template_imports(admin, db, imports.template(fmt), filename)


# --- access ------------------------------------------------------------------------------


async def test_customer_cannot_import(client, accounts, db):
    customer = await Api.login(client, await accounts.customer())
    status, body = await upload(customer, xlsx(HEADER, ("x1", "one", "10.0.0.1", "A100", 1)))
    assert (status, body["code"]) == (403, 40301)
    assert await machine_count(db) == 0


async def test_customer_cannot_download_the_template(client, accounts):
    customer = await Api.login(client, await accounts.customer())
    status, body = await customer.get(TEMPLATE)
    assert (status, body["code"]) == (403, 40301)


async def test_import_without_a_token_is_40101(client, db):
    status, body = await call(client, "POST", IMPORT,
                              data=form(xlsx(HEADER, ("x1", "one", "10.0.0.1", "A100", 1))))
    assert (status, body["code"]) == (401, 40101)
    assert await machine_count(db) == 0


async def test_operator_can_import(client, accounts, db):
    operator = await Api.login(client, await accounts.user("ops", "operator"))
    status, body = await upload(operator, xlsx(HEADER, ("x1", "one", "10.0.0.1", "A100", 1)))
    assert status == 200, body
    assert await machine_count(db) == 1


async def test_operator_can_download_the_template(client, accounts):
    operator = await Api.login(client, await accounts.user("ops", "operator"))
    resp = await client.get(TEMPLATE + "?format=csv",
                            headers={"Authorization": f"Bearer {operator.token}"})
    assert resp.status == 200
