"""Bulk machine import from .xlsx or .csv: every row validated with the same rules as a
single create, then all rows created in one transaction, or none.

Row numbers are those the spreadsheet shows (the header is row 1). Parsing runs on a
worker thread: a 10,000-row workbook must not stall the event loop. Reading stops at the
row cap, and only the first ``MAX_COLUMNS`` columns are read, so a small file that
claims millions of rows or columns costs no more than a full legitimate one.
"""

from __future__ import annotations

import asyncio
import csv
import io
import zipfile
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from openpyxl import Workbook, load_workbook
from pydantic import ValidationError

from services.errors import NUL_MESSAGE, ErrorCode, ServiceError
from services.machines import MachineService, MachineSpec, Registered
from services.rules import find_nul
from storage import machines as machine_store

MAX_BYTES = 20 * 1024 * 1024
MAX_ROWS = 10_000
MAX_COLUMNS = 64  # COLUMNS and blank ones between them; any further column is not read
# The parts of an .xlsx, decompressed. openpyxl reads a worksheet without a <dimension>
# element to its end (to size it) before giving the first row, so this bound, not the row
# cap, limits that work; a full sheet of MAX_ROWS rows is about 9 MiB.
MAX_XLSX_EXPANDED_BYTES = 32 * 1024 * 1024
MAX_ERRORS = 200

COLUMNS = (
    "id", "name", "region", "ip", "gpu_model", "gpu_count", "gpu_memory_gb", "cpu_info",
    "memory_total", "disk_total", "ssh_host", "ssh_port", "ssh_user", "jupyter_url", "labels",
)
EXAMPLE = (
    "bj-node-01", "bj-node-01", "beijing", "192.168.1.10", "NVIDIA GeForce RTX 4090", 4, 24,
    "AMD EPYC 7543 32-Core", 256, 2048, "ssh.example.com", 10022, "root",
    "https://jupyter.example.com/bj-node-01", '{"rack": "A3"}',
)
XLSX = "xlsx"
CSV = "csv"


@dataclass(frozen=True)
class ImportResult:
    rows: int
    created: int
    dry_run: bool
    machines: list[Registered]


class ImportRejected(ServiceError):
    code = ErrorCode.VALIDATION

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        shown = errors[:MAX_ERRORS]
        more = f" (first {MAX_ERRORS} of {len(errors)} shown)" if len(errors) > MAX_ERRORS else ""
        super().__init__(f"import rejected: {len(errors)} error(s){more}; nothing was created",
                         data={"errors": shown})


def _error(row: int, field: str | None, message: str) -> dict[str, Any]:
    return {"row": row, "field": field, "message": message}


def _read_xlsx(data: bytes) -> list[list[Any]]:
    """The header and at most MAX_ROWS + 1 rows: one more than allowed is enough to
    refuse the file, so no further row is read (openpyxl's sizing pass aside: see
    MAX_XLSX_EXPANDED_BYTES)."""
    try:
        expanded = _expanded_size(data)
    except Exception:  # a damaged zip fails in many ways (BadZipFile, struct.error, ...)
        raise ImportRejected([_error(1, None, "not a readable .xlsx workbook")]) from None
    if expanded > MAX_XLSX_EXPANDED_BYTES:
        raise ServiceError(f"the workbook holds more than {MAX_XLSX_EXPANDED_BYTES // 2**20} "
                           "MiB once decompressed", code=ErrorCode.TOO_LARGE)
    # Read-only workbooks parse lazily: a damaged sheet fails while iterating.
    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        try:
            rows = []
            # max_col also keeps rows narrow where the sheet claims thousands of columns
            # (read-only rows are padded to the sheet's stated width).
            for values in workbook.worksheets[0].iter_rows(max_col=MAX_COLUMNS,
                                                           values_only=True):
                rows.append(list(values))
                if len(rows) > MAX_ROWS + 1:
                    break
            return rows
        finally:
            workbook.close()
    except Exception:
        raise ImportRejected([_error(1, None, "not a readable .xlsx workbook")]) from None


def _expanded_size(data: bytes) -> int:
    """What the parts of an .xlsx (a zip) take decompressed, as its directory states: a
    part is never read beyond its stated size (zipfile stops there, or fails its CRC)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return sum(item.file_size for item in archive.infolist())


def _read_csv(data: bytes) -> list[list[Any]]:
    """As ``_read_xlsx``: at most MAX_ROWS + 1 rows after the header, MAX_COLUMNS wide."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportRejected([_error(1, None, "the file is not UTF-8 text")]) from None
    rows = []
    try:
        for values in csv.reader(io.StringIO(text)):
            rows.append(values[:MAX_COLUMNS])
            if len(rows) > MAX_ROWS + 1:
                break
    except csv.Error as exc:  # e.g. a field over csv's 128 KiB limit
        raise ImportRejected([_error(len(rows) + 1, None,
                                     f"not readable as CSV: {exc}")]) from None
    return rows


def _cell(value: Any) -> Any:
    """Spreadsheet cells to the values a JSON body would carry; blank means absent."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _header(values: list[Any]) -> tuple[list[str | None], list[dict[str, Any]]]:
    names: list[str | None] = []
    errors = []
    for value in values:
        name = str(value).strip().lower() if value is not None else ""
        if not name:
            names.append(None)
        elif name not in COLUMNS:
            errors.append(_error(1, name, f"unknown column; expected some of {', '.join(COLUMNS)}"))
            names.append(None)
        elif name in names:
            errors.append(_error(1, name, "column appears twice"))
            names.append(None)
        else:
            names.append(name)
    for required in ("name", "ip", "gpu_model", "gpu_count"):
        if required not in names:
            errors.append(_error(1, required, "required column missing"))
    return names, errors


def _spec(row_number: int, record: dict[str, Any]) -> tuple[MachineSpec | None, list[dict]]:
    if isinstance(record.get("labels"), str):
        try:
            record["labels"] = orjson.loads(record["labels"])
        except orjson.JSONDecodeError:
            return None, [_error(row_number, "labels", "must be a JSON object")]
    nul = find_nul(record)
    if nul is not None:
        return None, [_error(row_number, nul, NUL_MESSAGE)]
    for text_field in ("id", "name", "region", "ip", "gpu_model", "cpu_info", "ssh_host",
                       "ssh_user", "jupyter_url"):
        if isinstance(record.get(text_field), int | float):
            record[text_field] = str(record[text_field])
    try:
        return MachineSpec.model_validate(record, strict=False), []
    except ValidationError as exc:
        return None, [
            _error(row_number, ".".join(str(p) for p in err["loc"]) or None, err["msg"])
            for err in exc.errors(include_url=False, include_input=False)
        ]


def parse(data: bytes, kind: str) -> tuple[list[tuple[int, MachineSpec]], list[dict[str, Any]]]:
    """Validated rows (with their spreadsheet row numbers) and every error found."""
    table = _read_xlsx(data) if kind == XLSX else _read_csv(data)
    if not table:
        return [], [_error(1, None, "the file is empty")]
    names, errors = _header(table[0])
    body = table[1:]
    if len(body) > MAX_ROWS:
        return [], [_error(MAX_ROWS + 2, None, f"too many rows: at most {MAX_ROWS}")]
    specs: list[tuple[int, MachineSpec]] = []
    seen_ids: dict[str, int] = {}
    for offset, values in enumerate(body):
        row_number = offset + 2
        record = {name: _cell(value) for name, value in zip(names, values, strict=False) if name}
        record = {key: value for key, value in record.items() if value is not None}
        if not record:
            continue  # blank line
        spec, row_errors = _spec(row_number, record)
        errors += row_errors
        if spec is None:
            continue
        if spec.id is not None:
            if spec.id in seen_ids:
                errors.append(_error(row_number, "id",
                                     f"duplicate of row {seen_ids[spec.id]} in this file"))
            seen_ids.setdefault(spec.id, row_number)
        specs.append((row_number, spec))
    if not specs and not errors:
        errors.append(_error(2, None, "no machines in the file"))
    return specs, errors


def template(kind: str) -> bytes:
    if kind == CSV:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        writer.writerow(EXAMPLE)
        return out.getvalue().encode()
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "machines"
    sheet.append(COLUMNS)
    sheet.append(EXAMPLE)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


class ImportService:
    def __init__(self, machines: MachineService, pool: asyncpg.Pool) -> None:
        self._machines = machines
        self._pool = pool

    async def run(self, data: bytes, kind: str, *, dry_run: bool) -> ImportResult:
        loop = asyncio.get_running_loop()
        specs, errors = await loop.run_in_executor(None, parse, data, kind)
        given = [(row, spec.id) for row, spec in specs if spec.id is not None]
        taken = await machine_store.existing_ids(self._pool, [mid for _, mid in given])
        errors += [_error(row, "id", "a machine with this id already exists")
                   for row, mid in given if mid in taken]
        if errors:
            raise ImportRejected(sorted(errors, key=lambda e: e["row"]))
        if dry_run:
            return ImportResult(rows=len(specs), created=0, dry_run=True, machines=[])
        created = await self._machines.register([spec for _, spec in specs])
        return ImportResult(rows=len(specs), created=len(created), dry_run=False,
                            machines=created)
