"""Customers in: validation of customer rows and their upsert by external id, set-based (one
UPDATE and one INSERT per batch, never a statement per row), shared by the customers API and
`pennant customers import` (CSV or JSON Lines files).

Upsert semantics: a field left out of a row leaves the stored value as it is (a new customer
gets the table default); `consent` is per channel in the same way; `attributes` merge into the
stored ones key by key, and a key set to null removes it.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import multiprocessing
import queue
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import asyncpg
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError
from pydantic_core import to_json

from core.common.validation import error_lines
from core.infra.db import TenantConn, tenant_tx
from core.tenants.config_schema import EmailAddress, Locale, TimeZone

# One request or import batch. Larger batches gain little and hold the tenant's id lock longer.
MAX_BATCH = 10_000
_PHONE_PUNCTUATION = re.compile(r"[\s().-]")
_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")


def _phone(value: str) -> str:
    compact = _PHONE_PUNCTUATION.sub("", value)
    if not _E164.match(compact):
        raise ValueError(f"'{value}' is not an E.164 phone number like +13125550123")
    return compact


# PostgreSQL text cannot hold NUL (the API refuses it earlier; files reach this check). A
# pattern runs in pydantic-core, not as a Python call per field: imports validate millions.
_NO_NUL = r"^[^\x00]*$"
Text = Annotated[str, StringConstraints(pattern=_NO_NUL)]
# Friendlier words than "String should match pattern …", by field.
_PATTERN_MESSAGES = {"country": "'{}' is not an ISO 3166-1 alpha-2 country code like US"}
Phone = Annotated[str, AfterValidator(_phone)]


class Consent(BaseModel):
    """Marketing consent per channel; a channel left out keeps its stored consent."""

    model_config = ConfigDict(extra="forbid")

    email: bool = False
    sms: bool = False
    push: bool = False


class CustomerIn(BaseModel):
    """One customer row of an upsert; only `external_id` is required."""

    model_config = ConfigDict(extra="forbid")

    external_id: Text = Field(min_length=1, max_length=255, description="the tenant's own id for the customer")
    email: Annotated[EmailAddress, StringConstraints(pattern=_NO_NUL)] | None = Field(default=None, max_length=320)
    phone: Phone | None = Field(default=None, description="E.164; spaces, dots, dashes and brackets are removed")
    push_token: Text | None = Field(default=None, min_length=1, max_length=4096)
    first_name: Text = Field(default="", max_length=200)
    last_name: Text = Field(default="", max_length=200)
    locale: Locale = "en-US"
    time_zone: TimeZone = "UTC"
    loyalty_tier: Text = Field(default="none", min_length=1, max_length=50)
    city: Text | None = Field(default=None, max_length=200)
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")
    birth_date: dt.date | None = None
    consent: Consent = Field(default_factory=Consent)
    attributes: dict[str, Any] = Field(
        default_factory=dict, description="merged into the stored attributes; a key set to null removes it"
    )


# Columns a row may leave out and that accept null: the bit in `mask` says whether it was given
# (null then clears the value). The NOT NULL columns cannot take null, so null in the staging
# table means "left out" for them.
_NULLABLE = ("email", "phone", "push_token", "city", "country", "birth_date")
_NOT_NULL = ("first_name", "last_name", "locale", "time_zone", "loyalty_tier")
_CONSENT = ("email", "sms", "push")
_STAGE_COLUMNS = (
    ("ord", "integer"),
    ("external_id", "text"),
    ("mask", "integer"),
    *((c, "date" if c == "birth_date" else "text") for c in _NULLABLE),
    *((c, "text") for c in _NOT_NULL),
    *((f"consent_{c}", "boolean") for c in _CONSENT),
    ("attributes", "text"),  # staged as text: binary COPY has no jsonb encoder on our pool
    ("remove_keys", "text[]"),
)
_STAGE_NAMES = tuple(name for name, _ in _STAGE_COLUMNS)
_ATTRIBUTES_AT = _STAGE_NAMES.index("attributes")


def _stage_record(ord_: int, row: CustomerIn) -> tuple[Any, ...]:
    """The row as a staging-table record (columns _STAGE_NAMES)."""
    given = row.model_fields_set
    mask = 0
    for bit, name in enumerate(_NULLABLE):
        if name in given:
            mask |= 1 << bit
    consent_given = row.consent.model_fields_set if "consent" in given else ()
    attributes = row.attributes
    removed = [k for k, v in attributes.items() if v is None]
    if removed:
        attributes = {k: v for k, v in attributes.items() if v is not None}
    consent = row.consent
    return (
        ord_,
        row.external_id,
        mask,
        row.email,
        row.phone,
        row.push_token,
        row.city,
        row.country,
        row.birth_date,
        *(getattr(row, c) if c in given else None for c in _NOT_NULL),
        consent.email if "email" in consent_given else None,
        consent.sms if "sms" in consent_given else None,
        consent.push if "push" in consent_given else None,
        _dumps(attributes) if attributes else "{}",
        removed,
    )


def _dumps(value: Any) -> str:
    # pydantic-core's JSON encoder: several times faster than json.dumps on the import path.
    return to_json(value).decode()


@dataclass
class UpsertCounts:
    """How many customers a write inserted and updated."""

    inserted: int = 0
    updated: int = 0

    def add(self, other: UpsertCounts) -> None:
        """Add another write's counts to these."""
        self.inserted += other.inserted
        self.updated += other.updated


@dataclass
class RowReport:
    """The outcome of validating and writing a batch: counts and one `where: reason` line per problem."""

    counts: UpsertCounts = field(default_factory=UpsertCounts)
    errors: list[str] = field(default_factory=list)
    rejected: int = 0


# (row index, "field: reason") → the error line as reported, e.g. `customers[3].email: …`
Describe = Callable[[int, str], str]


def field_errors(exc: ValidationError | Sequence[Any]) -> list[str]:
    """A row's validation errors (an exception or its `errors()`) as `field: reason` lines (a
    whole-row check names its field in its message)."""
    errors = []
    for err in exc.errors() if isinstance(exc, ValidationError) else exc:
        if err["type"] == "string_pattern_mismatch":
            field_name = str(err["loc"][-1]) if err["loc"] else ""
            template = _PATTERN_MESSAGES.get(field_name, "contains a NUL character")
            err = {**err, "msg": template.format(err["input"])}
        errors.append(err)
    return [line.removeprefix("(root): ") for line in error_lines(errors, unknown="unknown field")]


@dataclass
class Staged:
    """Rows validated and ready to write: staging records, and each invalid row's errors."""

    records: list[tuple[Any, ...]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    rejected: int = 0


_ROWS = TypeAdapter(list[CustomerIn])


def stage_rows(rows: Sequence[Any], describe: Describe) -> Staged:
    """Validate raw rows (API bodies or file records); the valid ones as staging records, each
    invalid row's errors as `describe(index, "field: reason")` lines."""
    staged = Staged()
    # One validation call per batch costs a quarter less than one per row. When a row fails,
    # the errors name it by index, and the other rows are validated again without it.
    bad: dict[int, list[Any]] = {}
    try:
        models = _ROWS.validate_python(rows)
    except ValidationError as exc:
        for err in exc.errors():
            index, *loc = err["loc"]
            bad.setdefault(int(index), []).append({**err, "loc": tuple(loc)})
        models = _ROWS.validate_python([row for i, row in enumerate(rows) if i not in bad])
    good = iter(models)
    for i in range(len(rows)):
        if i in bad:
            staged.rejected += 1
            staged.errors.extend(describe(i, line) for line in field_errors(bad[i]))
            continue
        record = _stage_record(len(staged.records), next(good))
        # jsonb refuses \u0000 anywhere in a document, keys included.
        if "\\u0000" in record[_ATTRIBUTES_AT]:
            staged.rejected += 1
            staged.errors.append(describe(i, "attributes: contains a NUL character"))
            continue
        staged.records.append(record)
    return staged


_defaults_sql: dict[str, str] = {}


async def _column_defaults(conn: TenantConn) -> dict[str, str]:
    """The customers table's column defaults as SQL expressions, read once from the catalog so a
    new customer gets exactly the table's defaults for what its row leaves out."""
    if not _defaults_sql:
        rows = await conn.fetch(
            """SELECT a.attname, pg_get_expr(d.adbin, d.adrelid) AS expr
               FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
               WHERE d.adrelid = 'customers'::regclass"""
        )
        _defaults_sql.update({r["attname"]: r["expr"] for r in rows})
    return _defaults_sql


def _upsert_sql(defaults: dict[str, str]) -> tuple[str, str]:
    """The INSERT of staged rows that are new customers and the UPDATE of the others."""

    def insert_value(col: str, staged: str) -> str:
        default = defaults.get(col)
        return f"coalesce({staged}, {default})" if default else staged

    set_nullable = [
        f"{c} = CASE WHEN s.mask & {1 << bit} <> 0 THEN s.{c} ELSE c.{c} END" for bit, c in enumerate(_NULLABLE)
    ]
    set_not_null = [f"{c} = coalesce(s.{c}, c.{c})" for c in (*_NOT_NULL, *(f"consent_{x}" for x in _CONSENT))]
    columns = (*_NULLABLE, *_NOT_NULL, *(f"consent_{x}" for x in _CONSENT))
    insert_values = [insert_value(c, f"s.{c}") for c in columns]
    update = f"""
UPDATE customers c SET
    {", ".join(set_nullable + set_not_null)},
    attributes = (c.attributes - s.remove_keys) || s.attributes::jsonb,
    updated_at = now()
FROM pg_temp.customer_upsert s
-- Not the customers the INSERT before has just added (ids above the highest before it).
WHERE c.tenant_id = $1 AND c.external_id = s.external_id AND c.id <= $2"""
    insert = f"""
INSERT INTO customers (tenant_id, id, external_id, {", ".join(columns)}, attributes)
SELECT $1, $2 + row_number() OVER (ORDER BY s.ord), s.external_id, {", ".join(insert_values)}, s.attributes::jsonb
FROM pg_temp.customer_upsert s
-- An anti-join can only be driven from the staged rows: an index lookup each, whatever the
-- statistics say (and a row_number over the new rows only).
WHERE NOT EXISTS (SELECT FROM customers c WHERE c.tenant_id = $1 AND c.external_id = s.external_id)"""
    return insert, update


async def lock_customer_ids(conn: TenantConn, tenant: str) -> int:
    """Take the tenant's customer-id lock for the rest of the transaction; the highest id in use.

    customers.id is per tenant and has no sequence: new ids are max(id) + n, so writers of new
    customers of one tenant take turns (other tenants are not blocked). The key is the demo
    seeder's (devstack/demo_data.py), so seeding and imports never pick the same ids.
    """
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('pennant.seed_customers'), hashtext($1))", tenant)
    return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM customers WHERE tenant_id = $1", tenant))


_SCANS_OF_ALL_CUSTOMERS = ("hashjoin", "mergejoin", "seqscan", "material")


async def write_staged(conn: TenantConn, tenant: str, records: Sequence[tuple[Any, ...]]) -> UpsertCounts:
    """Insert or update staged rows (stage_rows) by external id inside the caller's tenant
    transaction (core.infra.db.tenant_tx).

    The rows are COPied into a temporary table (COPY straight into an RLS table is refused),
    then one statement inserts the new customers among them and one updates the others;
    an external id that repeats within `records` starts a new round, so a later row applies on
    top of the earlier one.
    """
    counts = UpsertCounts()
    if not records:
        return counts
    insert_sql, update_sql = _upsert_sql(await _column_defaults(conn))
    await conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS pg_temp.customer_upsert ("
        + ", ".join(f"{name} {typ}" for name, typ in _STAGE_COLUMNS)
        + ") ON COMMIT DROP"
    )
    highest = await lock_customer_ids(conn, tenant)
    # Staged rows find their customers by index. The statistics of a table an import is filling
    # are stale: believing it small, the planner scans, hashes or materialises all the tenant's
    # customers for each staged row or batch, and an import slows down as it grows (quadratically
    # for a fresh tenant). Index lookups only, for this transaction.
    await conn.execute(
        "SELECT " + ", ".join(f"set_config('enable_{plan}', 'off', true)" for plan in _SCANS_OF_ALL_CUSTOMERS)
    )
    for part in _without_repeats(records):
        await conn.execute("TRUNCATE pg_temp.customer_upsert")
        await conn.copy_records_to_table("customer_upsert", records=part, columns=_STAGE_NAMES, schema_name="pg_temp")
        inserted = int((await conn.execute(insert_sql, tenant, highest)).split()[-1])
        if inserted < len(part):
            # Statistics of the staged rows: the planner must see a batch, not a handful of rows,
            # or it drives the join from the tenant's customers and rescans the batch for each.
            await conn.execute("ANALYZE pg_temp.customer_upsert")
            await conn.execute(update_sql, tenant, highest)
        counts.add(UpsertCounts(inserted=inserted, updated=len(part) - inserted))
        highest += inserted
    return counts


def _without_repeats(records: Sequence[tuple[Any, ...]]) -> Iterator[Sequence[tuple[Any, ...]]]:
    """`records` cut into runs in which no external id repeats (one run unless one does)."""
    seen: set[str] = set()
    start = 0
    for i, record in enumerate(records):
        if record[1] in seen:
            yield records[start:i]
            seen.clear()
            start = i
        seen.add(record[1])
    yield records[start:]


async def upsert_batch(pool: asyncpg.Pool, tenant: str, rows: Sequence[Any], describe: Describe) -> RowReport:
    """Validate raw rows and upsert the valid ones in one tenant transaction; invalid rows are
    reported (`describe(index, "field: reason")`) and do not stop the valid ones."""
    # Validating thousands of rows is CPU work: off the event loop, so a serving API stays responsive.
    staged = await asyncio.to_thread(stage_rows, rows, describe)
    async with tenant_tx(pool, tenant) as conn:
        counts = await write_staged(conn, tenant, staged.records)
    return RowReport(counts, staged.errors, staged.rejected)


# --- files: CSV (header row) or JSON Lines

_TRUE = {"true", "t", "yes", "y", "1", "on"}
_FALSE = {"false", "f", "no", "n", "0", "off"}
_ATTRIBUTE_PREFIX = "attributes."


@dataclass
class FileRow:
    """One record of an import file: its first line number, and the row or why it cannot be read."""

    line: int
    row: dict[str, Any] | None
    error: str | None = None


class _CsvShape:
    """How a CSV header maps to API rows: an empty cell is left out (keeps the stored value);
    consent_<channel> columns become `consent`, `attributes.<name>` columns and an
    `attributes` JSON column become `attributes`."""

    def __init__(self, header: list[str]):
        self.width = len(header)
        self.plain = [(i, name) for i, name in enumerate(header) if not name.startswith(("consent_", "attributes"))]
        self.consent = [(i, name[len("consent_") :]) for i, name in enumerate(header) if name.startswith("consent_")]
        self.attributes = [
            (i, name[len(_ATTRIBUTE_PREFIX) :]) for i, name in enumerate(header) if name.startswith(_ATTRIBUTE_PREFIX)
        ]
        self.attributes_json = header.index("attributes") if "attributes" in header else None

    def row(self, values: list[str]) -> dict[str, Any]:
        """The API row of one CSV record."""
        if len(values) != self.width:
            raise ValueError(f"has {len(values)} fields, the header has {self.width}")
        row: dict[str, Any] = {name: values[i] for i, name in self.plain if values[i] != ""}
        consent = {channel: _flag(values[i]) for i, channel in self.consent if values[i] != ""}
        if consent:
            row["consent"] = consent
        attributes: dict[str, Any] = {}
        if self.attributes_json is not None and values[self.attributes_json] != "":
            try:
                parsed = json.loads(values[self.attributes_json])
            except ValueError as exc:
                raise ValueError(f"attributes: not valid JSON ({exc})") from None
            if not isinstance(parsed, dict):
                raise ValueError("attributes: must be a JSON object")
            attributes = parsed
        for i, key in self.attributes:
            if values[i] != "":
                attributes[key] = values[i]
        if attributes:
            row["attributes"] = attributes
        return row


def _flag(value: str) -> Any:
    lowered = value.strip().lower()
    # Anything else goes on as given, for validation to name it.
    return True if lowered in _TRUE else False if lowered in _FALSE else value


class _CountingLines:
    """The lines of a binary file, decoded, counting the bytes read (for a progress bar) and
    noting the lines that are not UTF-8 (decoded with replacement characters, then refused)."""

    def __init__(self, raw: Iterable[bytes]):
        self.raw = raw
        self.bytes_read = 0
        self.not_utf8: set[int] = set()

    def __iter__(self) -> Iterator[str]:
        for number, line in enumerate(self.raw, start=1):
            self.bytes_read += len(line)
            try:
                yield line.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                self.not_utf8.add(number)
                yield line.decode("utf-8", errors="replace")


_NOT_UTF8 = "not valid UTF-8"


def _read_csv(lines: _CountingLines) -> Iterator[FileRow]:
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return
    shape = _CsvShape([h.strip() for h in header])
    start = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field over the size limit: that record only
            line, start = start, reader.line_num + 1
            yield FileRow(line, None, f"not valid CSV ({exc})")
            continue
        line, start = start, reader.line_num + 1
        if not values:
            continue
        if lines.not_utf8 and any(n in lines.not_utf8 for n in range(line, start)):
            yield FileRow(line, None, _NOT_UTF8)
            continue
        try:
            yield FileRow(line, shape.row(values))
        except ValueError as exc:
            yield FileRow(line, None, str(exc))


def _read_jsonl(lines: _CountingLines) -> Iterator[FileRow]:
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        if number in lines.not_utf8:
            yield FileRow(number, None, _NOT_UTF8)
            continue
        try:
            row = json.loads(text)
        except ValueError as exc:
            yield FileRow(number, None, f"not valid JSON ({exc})")
            continue
        if not isinstance(row, dict):
            yield FileRow(number, None, "must be a JSON object")
            continue
        yield FileRow(number, row)


@dataclass
class ImportReport:
    """What an import did: rows read, customers inserted and updated, and each rejected line."""

    rows: int = 0
    counts: UpsertCounts = field(default_factory=UpsertCounts)
    errors: list[str] = field(default_factory=list)
    rejected: int = 0


def file_format(path: Path) -> str:
    """`csv` or `jsonl`, by the file's suffix (.csv; .jsonl, .ndjson or .json)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise ValueError(f"{path}: unknown file type '{suffix}' (use .csv or .jsonl)")


def _by_line(numbers: list[int]) -> Describe:
    return lambda i, error: f"line {numbers[i]}: {error}"


def _line_of(error: str) -> int:
    return int(error.split(":", 1)[0].removeprefix("line "))


@dataclass
class _FileBatch:
    staged: Staged
    rows: int  # file records read so far
    bytes_read: int


def _file_batches(path: Path, fmt: str, batch_size: int) -> Iterator[_FileBatch]:
    """The file's records read and staged a batch at a time; unreadable records count as rejected."""
    with path.open("rb") as raw:
        lines = _CountingLines(raw)
        records = _read_csv(lines) if fmt == "csv" else _read_jsonl(lines)
        rows = 0
        unreadable: list[str] = []
        batch: list[FileRow] = []
        while True:
            record = next(records, None)
            if record is not None:
                rows += 1
                if record.row is None:
                    unreadable.append(f"line {record.line}: {record.error}")
                else:
                    batch.append(record)
                if len(batch) < batch_size:
                    continue
            staged = stage_rows([r.row for r in batch], _by_line([r.line for r in batch]))
            if unreadable:
                staged.errors = sorted(staged.errors + unreadable, key=_line_of)
            staged.rejected += len(unreadable)
            yield _FileBatch(staged, rows, lines.bytes_read)
            if record is None:
                return
            batch, unreadable = [], []


# Files at least this large are read and validated in a process of their own.
READER_PROCESS_BYTES = 4 * 1024 * 1024


def _read_in_process(path: str, fmt: str, batch_size: int, out: Any) -> None:
    """The reader process: every staged batch of the file onto `out`, then None (or the error)."""
    try:
        for batch in _file_batches(Path(path), fmt, batch_size):
            out.put(batch)
        out.put(None)
    except Exception as exc:  # handed to the importer, which raises it
        out.put(exc)


class _Reader:
    """The staged batches of a file, one `next()` at a time (blocking: call it from a thread).

    A large file is read and validated in a separate process, so that work runs on another
    core while this process writes the previous batch. A reader thread would share this
    process's interpreter lock with the event loop and starve the database writes.
    """

    def __init__(self, path: Path, fmt: str, batch_size: int):
        self.process: Any = None
        if path.stat().st_size < READER_PROCESS_BYTES:
            self.batches: Iterator[_FileBatch] | None = _file_batches(path, fmt, batch_size)
            return
        self.batches = None
        # spawn, not fork: the importer runs an event loop and threads.
        context = multiprocessing.get_context("spawn")
        self.queue = context.Queue(maxsize=2)
        self.process = context.Process(
            target=_read_in_process, args=(str(path), fmt, batch_size, self.queue), daemon=True
        )
        self.process.start()

    def next(self) -> _FileBatch | None:
        """The next staged batch, or None at the end of the file."""
        if self.batches is not None:
            return next(self.batches, None)
        while True:
            try:
                item = self.queue.get(timeout=1.0)
            except queue.Empty:
                if not self.process.is_alive():
                    raise RuntimeError(f"the file reader process exited with {self.process.exitcode}") from None
                continue
            if isinstance(item, Exception):
                raise item
            return item  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop the reader process, if any."""
        if self.process is not None and self.process.is_alive():
            self.process.terminate()
        if self.process is not None:
            self.process.join(timeout=10)


async def import_file(
    pool: asyncpg.Pool,
    tenant: str,
    path: Path,
    *,
    batch_size: int = 5_000,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Upsert every valid row of a CSV or JSON Lines file, a batch per transaction; invalid rows
    are reported as `line N: field: reason` and never stop the valid ones.

    `progress(bytes_read, rows_read)` is called after each batch is written.
    """
    fmt = file_format(path)
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch size must be 1..{MAX_BATCH}")
    report = ImportReport()
    reader = _Reader(path, fmt, batch_size)
    try:
        while (batch := await asyncio.to_thread(reader.next)) is not None:
            async with tenant_tx(pool, tenant) as conn:
                report.counts.add(await write_staged(conn, tenant, batch.staged.records))
            report.rows = batch.rows
            report.errors.extend(batch.staged.errors)
            report.rejected += batch.staged.rejected
            if progress is not None:
                progress(batch.bytes_read, batch.rows)
    finally:
        reader.close()
    return report


def csv_text(rows: Iterable[dict[str, Any]], header: Sequence[str]) -> str:
    """Rows as CSV text with `header` (for tests and the benchmark's generated files)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(header), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
