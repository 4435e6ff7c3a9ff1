"""Customers in: validation of customer rows and their upsert by external id, one statement per
batch, shared by the customers API and `pennant customers import` (CSV or JSON Lines files).

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
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import asyncpg
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.db import tenant_tx
from core.tenant_config import EmailAddress, Locale, TimeZone
from core.validation import error_lines

# One request or import batch. Larger batches gain little and hold the tenant's id lock longer.
MAX_BATCH = 10_000
_PHONE_PUNCTUATION = re.compile(r"[\s().-]")
_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")


def _phone(value: str) -> str:
    compact = _PHONE_PUNCTUATION.sub("", value)
    if not _E164.match(compact):
        raise ValueError(f"'{value}' is not an E.164 phone number like +13125550123")
    return compact


def _storable(value: str) -> str:
    # PostgreSQL text cannot hold NUL; the API refuses it earlier, files reach this check.
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    return value


Text = Annotated[str, AfterValidator(_storable)]
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
    email: EmailAddress | None = Field(default=None, max_length=320)
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

    @field_validator("attributes")
    @classmethod
    def _attributes_storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        # jsonb refuses \u0000 anywhere, keys included.
        if "\\u0000" in json.dumps(value):
            raise ValueError("contains a NUL character")
        return value


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


def _stage_record(ord_: int, row: CustomerIn) -> tuple[Any, ...]:
    given = row.model_fields_set
    mask = 0
    for bit, name in enumerate(_NULLABLE):
        if name in given:
            mask |= 1 << bit
    consent_given = row.consent.model_fields_set if "consent" in given else set()
    kept = {k: v for k, v in row.attributes.items() if v is not None}
    removed = [k for k, v in row.attributes.items() if v is None]
    return (
        ord_,
        row.external_id,
        mask,
        *(getattr(row, c) for c in _NULLABLE),
        *(getattr(row, c) if c in given else None for c in _NOT_NULL),
        *(getattr(row.consent, c) if c in consent_given else None for c in _CONSENT),
        json.dumps(kept, separators=(",", ":")),
        removed,
    )


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


def validate_rows(rows: Sequence[Any], describe: Describe) -> tuple[list[CustomerIn], list[str], int]:
    """The valid rows as models, each invalid row's errors (`describe(index, "field: reason")`),
    and how many rows were invalid."""
    valid: list[CustomerIn] = []
    errors: list[str] = []
    rejected = 0
    validate = CustomerIn.model_validate
    for i, raw in enumerate(rows):
        try:
            valid.append(validate(raw))
        except ValidationError as exc:
            rejected += 1
            errors.extend(describe(i, line) for line in error_lines(exc.errors(), unknown="unknown field"))
    return valid, errors, rejected


_defaults_sql: dict[str, str] = {}


async def _column_defaults(conn: asyncpg.Connection) -> dict[str, str]:
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


def _upsert_sql(defaults: dict[str, str]) -> str:
    def insert_value(col: str, staged: str) -> str:
        default = defaults.get(col)
        return f"coalesce({staged}, {default})" if default else staged

    set_nullable = [
        f"{c} = CASE WHEN s.mask & {1 << bit} <> 0 THEN s.{c} ELSE c.{c} END" for bit, c in enumerate(_NULLABLE)
    ]
    set_not_null = [f"{c} = coalesce(s.{c}, c.{c})" for c in (*_NOT_NULL, *(f"consent_{x}" for x in _CONSENT))]
    columns = (*_NULLABLE, *_NOT_NULL, *(f"consent_{x}" for x in _CONSENT))
    insert_values = [insert_value(c, f"s.{c}") for c in columns]
    return f"""
WITH src AS (
    SELECT s.*, c.id AS existing FROM pg_temp.customer_upsert s
    LEFT JOIN customers c ON c.tenant_id = $1 AND c.external_id = s.external_id
), updated AS (
    UPDATE customers c SET
        {", ".join(set_nullable + set_not_null)},
        attributes = (c.attributes - s.remove_keys) || s.attributes::jsonb,
        updated_at = now()
    FROM src s WHERE c.tenant_id = $1 AND c.id = s.existing
    RETURNING 1
), inserted AS (
    INSERT INTO customers (tenant_id, id, external_id, {", ".join(columns)}, attributes)
    SELECT $1, $2 + row_number() OVER (ORDER BY s.ord), s.external_id, {", ".join(insert_values)},
           s.attributes::jsonb
    FROM src s WHERE s.existing IS NULL
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted) AS inserted, (SELECT count(*) FROM updated) AS updated"""


async def lock_customer_ids(conn: asyncpg.Connection, tenant: str) -> int:
    """Take the tenant's customer-id lock for the rest of the transaction; the highest id in use.

    customers.id is per tenant and has no sequence: new ids are max(id) + n, so writers of new
    customers of one tenant take turns (other tenants are not blocked). The key is the demo
    seeder's (devstack/demo_data.py), so seeding and imports never pick the same ids.
    """
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('pennant.seed_customers'), hashtext($1))", tenant)
    return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM customers WHERE tenant_id = $1", tenant))


async def upsert_customers(conn: asyncpg.Connection, tenant: str, rows: Sequence[CustomerIn]) -> UpsertCounts:
    """Insert or update `rows` by external id inside the caller's tenant transaction (core.db.tenant_tx).

    A batch is staged with COPY into a temporary table (COPY straight into an RLS table is
    refused) and written by one statement; an external id that repeats within `rows` starts a
    new statement, so a later row applies on top of the earlier one.
    """
    counts = UpsertCounts()
    if not rows:
        return counts
    sql = _upsert_sql(await _column_defaults(conn))
    await conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS pg_temp.customer_upsert ("
        + ", ".join(f"{name} {typ}" for name, typ in _STAGE_COLUMNS)
        + ") ON COMMIT DROP"
    )
    highest = await lock_customer_ids(conn, tenant)
    for part in _without_repeats(rows):
        await conn.execute("TRUNCATE pg_temp.customer_upsert")
        await conn.copy_records_to_table(
            "customer_upsert",
            records=[_stage_record(i, row) for i, row in enumerate(part)],
            columns=_STAGE_NAMES,
            schema_name="pg_temp",
        )
        # Without statistics the planner guesses the staged row count; the join to customers
        # must be index lookups, not a scan of every tenant's customers.
        await conn.execute("ANALYZE pg_temp.customer_upsert")
        result = await conn.fetchrow(sql, tenant, highest)
        assert result is not None
        counts.add(UpsertCounts(inserted=result["inserted"], updated=result["updated"]))
        highest += result["inserted"]
    return counts


def _without_repeats(rows: Sequence[CustomerIn]) -> Iterator[Sequence[CustomerIn]]:
    """`rows` cut into runs in which no external id repeats (one run unless one does)."""
    seen: set[str] = set()
    start = 0
    for i, row in enumerate(rows):
        if row.external_id in seen:
            yield rows[start:i]
            seen.clear()
            start = i
        seen.add(row.external_id)
    yield rows[start:]


async def upsert_batch(pool: asyncpg.Pool, tenant: str, rows: Sequence[Any], describe: Describe) -> RowReport:
    """Validate raw rows and upsert the valid ones in one tenant transaction; invalid rows are
    reported (`describe(index, "field: reason")`) and do not stop the valid ones."""
    # Validating thousands of rows is CPU work: off the event loop, so a serving API stays responsive.
    valid, errors, rejected = await asyncio.to_thread(validate_rows, rows, describe)
    async with tenant_tx(pool, tenant) as conn:
        counts = await upsert_customers(conn, tenant, valid)
    return RowReport(counts, errors, rejected)


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


def _csv_row(header: list[str], values: list[str]) -> dict[str, Any]:
    """A CSV record as an API row: an empty cell is left out (keeps the stored value); consent_*
    columns become `consent`, `attributes.<name>` columns and an `attributes` JSON column
    become `attributes`."""
    row: dict[str, Any] = {}
    consent: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    if len(values) != len(header):
        raise ValueError(f"has {len(values)} fields, the header has {len(header)}")
    for name, value in zip(header, values, strict=True):
        if value == "":
            continue
        if name.startswith("consent_"):
            lowered = value.strip().lower()
            consent[name[len("consent_") :]] = True if lowered in _TRUE else False if lowered in _FALSE else value
        elif name.startswith(_ATTRIBUTE_PREFIX):
            attributes[name[len(_ATTRIBUTE_PREFIX) :]] = value
        elif name == "attributes":
            parsed = json.loads(value)
            if not isinstance(parsed, dict):
                raise ValueError("attributes: must be a JSON object")
            attributes = {**parsed, **attributes}
        else:
            row[name] = value
    if consent:
        row["consent"] = consent
    if attributes:
        row["attributes"] = attributes
    return row


class _CountingLines:
    """The lines of a binary file, decoded, counting the bytes read (for a progress bar)."""

    def __init__(self, raw: Iterable[bytes]):
        self.raw = raw
        self.bytes_read = 0

    def __iter__(self) -> Iterator[str]:
        for line in self.raw:
            self.bytes_read += len(line)
            yield line.decode("utf-8-sig" if self.bytes_read == len(line) else "utf-8")


def _read_csv(lines: _CountingLines) -> Iterator[FileRow]:
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return
    header = [h.strip() for h in header]
    start = reader.line_num + 1
    for values in reader:
        line, start = start, reader.line_num + 1
        if not values:
            continue
        try:
            yield FileRow(line, _csv_row(header, values))
        except ValueError as exc:
            yield FileRow(line, None, str(exc))


def _read_jsonl(lines: _CountingLines) -> Iterator[FileRow]:
    for number, text in enumerate(lines, start=1):
        if not text.strip():
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

    `progress(bytes_read, rows_done)` is called after each batch.
    """
    fmt = file_format(path)
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch size must be 1..{MAX_BATCH}")
    report = ImportReport()
    with path.open("rb") as raw:
        lines = _CountingLines(raw)
        records = _read_csv(lines) if fmt == "csv" else _read_jsonl(lines)
        batch: list[FileRow] = []

        async def flush() -> None:
            rows = [r.row for r in batch]
            numbers = [r.line for r in batch]
            result = await upsert_batch(pool, tenant, rows, lambda i, error: f"line {numbers[i]}: {error}")
            report.counts.add(result.counts)
            report.errors.extend(result.errors)
            report.rejected += result.rejected
            batch.clear()
            if progress is not None:
                progress(lines.bytes_read, report.rows)

        for record in records:
            report.rows += 1
            if record.row is None:
                report.rejected += 1
                report.errors.append(f"line {record.line}: {record.error}")
                continue
            batch.append(record)
            if len(batch) >= batch_size:
                await flush()
        if batch:
            await flush()
        elif progress is not None:
            progress(lines.bytes_read, report.rows)
    return report


def csv_text(rows: Iterable[dict[str, Any]], header: Sequence[str]) -> str:
    """Rows as CSV text with `header` (for tests and the benchmark's generated files)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(header), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
