"""Customer events in (purchases and custom events), idempotent by the tenant's event id, each
attributed at ingestion to the message that led to it.

Attribution: the customer's last ledger row created at or before the event and within the
tenant's `engagement.attribution_window_days` of it — a message sent, or the row of a
holdout or global-control recipient (skipped with that reason), so the holdout group has
conversions to compare against. The event keeps that row's run, channel and variant.
Purchases are also written to `purchases`, which segments read (`{"purchased": …}`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, NamedTuple, Self

import asyncpg
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import to_json

from core.customers.records import Describe, field_errors
from core.experiments.buckets import GLOBAL_CONTROL, HOLDOUT
from core.infra.db import TenantConn, tenant_tx
from core.infra.unnest_params import unnest_columns

MAX_EVENTS = 10_000
PURCHASE = "purchase"
BIGINT_MAX = 2**63 - 1


def _storable(value: str) -> str:
    # PostgreSQL text cannot hold NUL.
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    return value


Text = Annotated[str, AfterValidator(_storable)]


class EventIn(BaseModel):
    """One customer event: a purchase or a custom event, naming its customer by id or external id."""

    model_config = ConfigDict(extra="forbid")

    id: Text = Field(min_length=1, max_length=200, description="the tenant's event id; a replay is a duplicate")
    customer_id: int | None = Field(default=None, ge=1, le=BIGINT_MAX)
    external_id: Text | None = Field(default=None, min_length=1, max_length=255)
    type: str = Field(
        pattern=r"^[a-z][a-z0-9_.:-]{0,63}$", description="'purchase' or a custom name such as 'add_to_cart'"
    )
    at: AwareDatetime = Field(description="when it happened, with a UTC offset")
    amount: Decimal | None = Field(default=None, max_digits=12, decimal_places=2, description="required for a purchase")
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$", description="ISO 4217, e.g. USD")
    sku: Text | None = Field(default=None, max_length=200)
    category: Text | None = Field(default=None, max_length=200)
    properties: dict[str, Any] = Field(
        default_factory=dict, description="anything else; `product_name` names a purchase's product"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.customer_id is None) == (self.external_id is None):
            raise ValueError("customer_id: give exactly one of customer_id and external_id")
        if self.type == PURCHASE and self.amount is None:
            raise ValueError("amount: required for a purchase")
        if self.amount is not None and not self.amount.is_finite():
            raise ValueError("amount: must be a finite number")
        return self


@dataclass
class EventsReport:
    """What a batch of events did: accepted (new), duplicates (ids seen before), attributed (of
    the accepted), and each rejected row's errors."""

    accepted: int = 0
    attributed: int = 0
    duplicates: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    rejected: int = 0


def _validate(rows: Sequence[Any], describe: Describe) -> tuple[list[tuple[int, EventIn, str]], EventsReport]:
    """The valid rows with their index and properties as JSON text, and a report of the rest."""
    report = EventsReport()
    valid: list[tuple[int, EventIn, str]] = []
    for i, raw in enumerate(rows):
        try:
            event = EventIn.model_validate(raw)
        except ValidationError as exc:
            report.rejected += 1
            report.errors.extend(describe(i, line) for line in field_errors(exc))
            continue
        properties = to_json(event.properties).decode()
        if "\\u0000" in properties:
            report.rejected += 1
            report.errors.append(describe(i, "properties: contains a NUL character"))
            continue
        valid.append((i, event, properties))
    return valid, report


_INSERT = f"""
WITH e AS (
    SELECT * FROM unnest($2::text[], $3::bigint[], $4::text[], $5::timestamptz[], $6::numeric[],
                         $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])
        AS e(event_id, customer_id, type, occurred_at, amount, currency, sku, category, properties, product_name)
), ins AS (
    INSERT INTO customer_events (tenant_id, event_id, customer_id, type, occurred_at, amount, currency, sku,
                                 category, properties, run_id, channel, variant)
    SELECT $1, e.event_id, e.customer_id, e.type, e.occurred_at, e.amount, e.currency, e.sku, e.category,
           e.properties::jsonb, a.run_id, a.channel, a.variant
    FROM e LEFT JOIN LATERAL (
        SELECT d.run_id, d.channel, d.variant FROM deliveries d
        WHERE d.tenant_id = $1 AND d.customer_id = e.customer_id
          AND d.created_at <= e.occurred_at AND d.created_at >= e.occurred_at - make_interval(secs => $12)
          AND (d.status = 'sent' OR (d.status = 'skipped' AND d.reason IN ('{HOLDOUT}', '{GLOBAL_CONTROL}')))
        ORDER BY d.created_at DESC, d.channel
        LIMIT 1
    ) a ON TRUE
    ON CONFLICT (tenant_id, event_id) DO NOTHING
    RETURNING event_id, customer_id, type, occurred_at, amount, sku, category, run_id
), bought AS (
    -- purchases.id is per tenant without a sequence: max + n under the tenant's purchase-id lock.
    INSERT INTO purchases (tenant_id, id, customer_id, sku, product_name, category, amount, purchased_at)
    SELECT $1, (SELECT coalesce(max(id), 0) FROM purchases WHERE tenant_id = $1)
               + row_number() OVER (ORDER BY i.occurred_at, i.event_id),
           i.customer_id, coalesce(i.sku, ''), coalesce(e.product_name, i.sku, ''), coalesce(i.category, ''),
           i.amount, i.occurred_at
    FROM ins i JOIN e ON e.event_id = i.event_id
    WHERE i.type = '{PURCHASE}'
    RETURNING 1
)
SELECT ins.event_id, ins.run_id IS NOT NULL AS attributed, (SELECT count(*) FROM bought) AS purchases FROM ins"""


async def _customer_ids(
    conn: TenantConn, tenant: str, events: Sequence[tuple[int, EventIn, str]]
) -> tuple[dict[str, int], set[int]]:
    """The customer ids of the events' external ids, and which of their customer ids exist."""
    externals = list({e.external_id for _, e, _ in events if e.external_id is not None})
    ids = list({e.customer_id for _, e, _ in events if e.customer_id is not None})
    by_external = {
        r["external_id"]: r["id"]
        for r in await conn.fetch(
            "SELECT external_id, id FROM customers WHERE tenant_id = $1 AND external_id = ANY($2::text[])",
            tenant,
            externals,
        )
    }
    known = {
        r["id"]
        for r in await conn.fetch(
            "SELECT id FROM customers WHERE tenant_id = $1 AND id = ANY($2::bigint[])", tenant, ids
        )
    }
    return by_external, known


async def record_events(
    pool: asyncpg.Pool, tenant: str, rows: Sequence[Any], describe: Describe, window_days: float
) -> EventsReport:
    """Validate raw event rows and store the valid ones of known customers, attributed; a
    replayed event id changes nothing and is reported as a duplicate."""
    valid, report = await asyncio.to_thread(_validate, rows, describe)
    if not valid:
        return report
    async with tenant_tx(pool, tenant) as conn:
        await _record_valid(conn, tenant, valid, report, describe, window_days)
    return report


async def record_events_in(
    conn: TenantConn, tenant: str, rows: Sequence[Any], describe: Describe, window_days: float
) -> EventsReport:
    """`record_events` inside the caller's tenant transaction (the tracking API stores an
    `Order Completed` call and its conversion in one commit)."""
    valid, report = _validate(rows, describe)
    if valid:
        await _record_valid(conn, tenant, valid, report, describe, window_days)
    return report


async def _record_valid(
    conn: TenantConn,
    tenant: str,
    valid: list[tuple[int, EventIn, str]],
    report: EventsReport,
    describe: Describe,
    window_days: float,
) -> None:
    by_external, known = await _customer_ids(conn, tenant, valid)
    resolved: list[_Resolved] = []
    seen: set[str] = set()
    for i, event, properties in valid:
        if event.external_id is not None:
            customer = by_external.get(event.external_id)
            if customer is None:
                report.errors.append(describe(i, f"external_id: no customer '{event.external_id}'"))
        else:
            customer = event.customer_id if event.customer_id in known else None
            if customer is None:
                report.errors.append(describe(i, f"customer_id: no customer {event.customer_id}"))
        if customer is None:
            report.rejected += 1
        elif event.id in seen:
            # The same id twice in one batch: the first counts, the later one is its replay.
            report.duplicates.append(event.id)
        else:
            seen.add(event.id)
            resolved.append(_Resolved(event, customer, properties))
    if not resolved:
        return
    if any(e.type == PURCHASE for e, _, _ in resolved):
        # Writers of one tenant's purchases take turns: ids are max(id) + n.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('pennant.purchase_ids'), hashtext($1))", tenant)
    events = [e for e, _, _ in resolved]
    columns = unnest_columns(
        resolved, "event.id", "customer_id", "event.type", "event.at", "event.amount", "event.currency",
        "event.sku", "event.category", "properties", lambda r: _product_name(r.event),
    )  # fmt: skip
    rows_in = await conn.fetch(_INSERT, tenant, *columns, window_days * 86_400)
    inserted = {r["event_id"] for r in rows_in}
    report.accepted = len(inserted)
    report.attributed = sum(1 for r in rows_in if r["attributed"])
    report.duplicates.extend(e.id for e in events if e.id not in inserted)


class _Resolved(NamedTuple):
    """An event to insert, with its customer's id and its properties as JSON."""

    event: EventIn
    customer_id: int
    properties: str


def _product_name(event: EventIn) -> str | None:
    name = event.properties.get("product_name")
    return name if isinstance(name, str) else None
