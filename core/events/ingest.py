"""Segment-shaped calls in: each event of a body checked on its own, then the good ones stored
exactly once in one tenant transaction (committed before the caller answers).

A body is a Segment batch (`{"batch": [...], "sentAt", "context", "writeKey"}`) or one call
(`/v1/track` and friends: the event itself). Segment's libraries treat any 4xx but 429 as
fatal for the whole batch, so one bad event is a rejection (index, field, reason) and the rest
are kept; only a body that is not JSON at all is refused whole.

Time: `timestamp = receivedAt - (sentAt - originalTimestamp)` corrects the client's clock
(originalTimestamp, else timestamp, is the client's time of the event); without sentAt the
given time stands. An event more than 24 hours in the future is rejected.

Dedupe: a `messageId` the tenant sent within 7 days of the first copy's receipt is not stored
again (event_dedupe; first copy wins, a copy in flight waits for the first one's commit). An
event without one gets a generated id and is never deduplicated.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from pydantic_core import PydanticSerializationError, to_json

from core.engagement.conversions import record_events_in
from core.events import identities
from core.events.models import Event, Problem
from core.infra.db import TenantConn, tenant_tx
from core.infra.unnest_params import unnest_columns

MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_ID = 255
MAX_EVENT_NAME = 200
FUTURE_LIMIT = dt.timedelta(hours=24)
# A 500 KB body of empty objects is ~100,000 bad events: the answer lists the first ones.
MAX_REPORTED = 1000
TYPES = ("track", "identify", "page", "screen", "alias", "group")
_DEDUPE_WINDOW = "interval '7 days'"


class BadBody(ValueError):
    """The body as a whole cannot be read (not JSON, not an object): nothing in it is kept."""


@dataclass
class Parsed:
    """A body read: its checked events, the rejected ones, and the writeKey it carried, if any."""

    events: list[Event] = field(default_factory=list)
    rejected: list[Problem] = field(default_factory=list)
    write_key: str | None = None


class _Reject(Exception):
    def __init__(self, field_name: str, reason: str):
        super().__init__(reason)
        self.field = field_name
        self.reason = reason


def _id(raw: Mapping[str, Any], name: str, required: bool = False) -> str | None:
    value = raw.get(name)
    if value is None or value == "":
        if required:
            raise _Reject(name, "required")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _Reject(name, "must be a string")
    text = str(value)
    if len(text) > MAX_ID:
        raise _Reject(name, f"longer than {MAX_ID} characters")
    if "\x00" in text:
        raise _Reject(name, "contains a NUL character")
    return text


def _time(raw: Mapping[str, Any], name: str) -> dt.datetime | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Reject(name, "must be an ISO 8601 date-time string")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise _Reject(name, f"'{value[:40]}' is not an ISO 8601 date-time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _object(raw: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Reject(name, "must be an object")
    return value


class _NonFinite:
    """What NaN, Infinity and numbers beyond a double (1e999) parse to: not JSON, so not
    storable in jsonb; the event holding one is rejected instead of failing the batch."""


_NON_FINITE = _NonFinite()


def _float(text: str) -> Any:
    value = float(text)
    return value if math.isfinite(value) else _NON_FINITE


def _json(value: Any, name: str) -> str:
    try:
        text = to_json(value).decode()
    except (PydanticSerializationError, UnicodeError, ValueError) as exc:
        message = str(exc)
        if "unknown type" in message:
            reason = "contains NaN or Infinity (numbers must be finite)"
        elif "depth" in message:
            reason = "nested too deeply"
        else:
            reason = "contains text that is not valid Unicode"
        raise _Reject(name, reason) from None
    # jsonb refuses \u0000 anywhere in a document, keys included.
    if "\\u0000" in text:
        raise _Reject(name, "contains a NUL character")
    return text


def check_event(
    index: int, raw: Any, kind: str | None, received_at: dt.datetime, batch_sent_at: dt.datetime | None,
    batch_context: Mapping[str, Any] | None,
) -> Event:  # fmt: skip
    """One event of a body checked and normalised; raises _Reject naming the field."""
    if not isinstance(raw, dict):
        raise _Reject("(event)", "must be an object")
    given_type = raw.get("type", kind)
    if kind is not None and given_type != kind and "type" in raw and raw.get("type") not in (None, ""):
        # /v1/track with "type": "identify": the path decides, as Segment's does.
        given_type = kind
    if given_type not in TYPES:
        raise _Reject("type", f"must be one of {', '.join(TYPES)}")
    event = Event(index=index, message_id="", given_id=False, type=str(given_type), timestamp=received_at, sent_at=None)
    message_id = _id(raw, "messageId")
    event.given_id = message_id is not None
    event.message_id = message_id or f"pennant-{uuid.uuid4()}"
    event.user_id = _id(raw, "userId")
    event.anonymous_id = _id(raw, "anonymousId")
    if event.type == "alias":
        event.previous_id = _id(raw, "previousId", required=True)
        if event.user_id is None:
            raise _Reject("userId", "required for alias")
    elif event.user_id is None and event.anonymous_id is None:
        raise _Reject("userId", "userId or anonymousId is required")
    if event.type == "group":
        event.group_id = _id(raw, "groupId", required=True)
    if event.type == "track":
        name = raw.get("event")
        if not isinstance(name, str) or not name.strip():
            raise _Reject("event", "required: the event's name")
        if len(name) > MAX_EVENT_NAME:
            raise _Reject("event", f"longer than {MAX_EVENT_NAME} characters")
        event.event = name
    elif event.type in ("page", "screen"):
        name = raw.get("name")
        if name is not None and (not isinstance(name, str) or len(name) > MAX_EVENT_NAME):
            raise _Reject("name", f"must be a string of at most {MAX_EVENT_NAME} characters")
        event.event = name or None
    if event.event is not None and "\x00" in event.event:
        raise _Reject("event", "contains a NUL character")
    properties = _object(raw, "properties")
    event.traits = _object(raw, "traits")
    context = _object(raw, "context")
    if batch_context:
        context = {**batch_context, **context}
    # No IP address is stored.
    if "ip" in context:
        context = {k: v for k, v in context.items() if k != "ip"}
    event.context = context
    event.properties = _json(properties, "properties")
    event.traits_json = _json(event.traits, "traits")
    event.context_json = _json(context, "context")
    size = len(event.properties) + len(event.traits_json) + len(event.context_json)
    if size > MAX_EVENT_BYTES:
        raise _Reject("(event)", f"larger than {MAX_EVENT_BYTES // 1024} KB")
    original = _time(raw, "originalTimestamp") or _time(raw, "timestamp")
    sent_at = _time(raw, "sentAt") or batch_sent_at
    event.sent_at = sent_at
    if original is not None:
        try:
            event.timestamp = received_at - (sent_at - original) if sent_at is not None else original
        except OverflowError:
            raise _Reject("timestamp", "out of range once corrected by sentAt") from None
    if event.timestamp > received_at + FUTURE_LIMIT:
        raise _Reject("timestamp", "more than 24 hours in the future")
    return event


def parse_body(body: bytes, kind: str | None, received_at: dt.datetime) -> Parsed:
    """Read a tracking body (`kind` None: a batch; else the one call's type)."""
    try:
        document = json.loads(body, parse_float=_float, parse_constant=lambda _: _NON_FINITE)
    except (ValueError, RecursionError):
        raise BadBody("body: not valid JSON") from None
    if not isinstance(document, dict):
        raise BadBody("body: must be a JSON object")
    parsed = Parsed()
    write_key = document.get("writeKey")
    parsed.write_key = write_key if isinstance(write_key, str) and write_key else None
    batch_context: Mapping[str, Any] | None = None
    batch_sent_at = None
    if kind is None:
        items = document.get("batch")
        if not isinstance(items, list):
            raise BadBody("body.batch: must be a list of events")
        context = document.get("context")
        batch_context = context if isinstance(context, dict) else None
        try:
            batch_sent_at = _time(document, "sentAt")
        except _Reject:
            batch_sent_at = None
    else:
        items = [document]
    seen: set[str] = set()
    for index, raw in enumerate(items):
        try:
            event = check_event(index, raw, kind, received_at, batch_sent_at, batch_context)
        except _Reject as exc:
            parsed.rejected.append(Problem(index, exc.field, exc.reason))
            continue
        if event.given_id:
            # Within one body the first copy wins too.
            if event.message_id in seen:
                continue
            seen.add(event.message_id)
        parsed.events.append(event)
    return parsed


@dataclass
class Outcome:
    """What storing a body did."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[Problem] = field(default_factory=list)
    dropped: list[Problem] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The tracking API's answer: Segment's `success` and what Pennant did with each event."""
        return {
            "success": True,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected_count": len(self.rejected),
            "rejected": [p.as_dict() for p in self.rejected[:MAX_REPORTED]],
            "dropped": [p.as_dict() for p in self.dropped[:MAX_REPORTED]],
        }


# A messageId not seen before is claimed by inserting it; a copy in flight in another call waits
# for that call's commit (exactly once). A committed copy costs an index probe and no row lock.
_CLAIM_SQL = """
INSERT INTO event_dedupe (tenant_id, message_id, received_at)
SELECT $1, m, $3 FROM unnest($2::text[]) AS m ORDER BY m
ON CONFLICT (tenant_id, message_id) DO NOTHING
RETURNING message_id"""
# Seen before, but longer ago than the window: the id is the new copy's.
_RECLAIM_SQL = f"""
UPDATE event_dedupe SET received_at = $3::timestamptz
WHERE tenant_id = $1 AND message_id = ANY($2::text[]) AND received_at < $3::timestamptz - {_DEDUPE_WINDOW}
RETURNING message_id"""

_INSERT_SQL = """
INSERT INTO events (tenant_id, message_id, type, event, user_id, anonymous_id, previous_id, group_id,
                    customer_id, properties, traits, context, source_id, "timestamp", sent_at, received_at)
SELECT $1, e.message_id, e.type, e.event, e.user_id, e.anonymous_id, e.previous_id, e.group_id,
       e.customer_id, e.properties::jsonb, e.traits::jsonb, e.context::jsonb, $2, e.ts, e.sent_at, $3
FROM unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bigint[],
            $12::text[], $13::text[], $14::text[], $15::timestamptz[], $16::timestamptz[])
     AS e(message_id, type, event, user_id, anonymous_id, previous_id, group_id, customer_id,
          properties, traits, context, ts, sent_at)"""


async def store(
    pool: asyncpg.Pool,
    tenant: str,
    source_id: str | None,
    parsed: Parsed,
    received_at: dt.datetime,
    *,
    attribution_window_days: float = 3.0,
) -> Outcome:
    """Store the body's events once each, in one tenant transaction; returns when committed.
    An `Order Completed` call is also a conversion (core.engagement.conversions), in the same
    commit."""
    outcome = Outcome(rejected=list(parsed.rejected))
    if not parsed.events:
        return outcome
    async with tenant_tx(pool, tenant) as conn:
        # Claimed in one order (sorted) by every call: two batches sharing ids wait for each
        # other instead of deadlocking.
        given = sorted(e.message_id for e in parsed.events if e.given_id)
        fresh: set[str] = set()
        if given:
            fresh = {r["message_id"] for r in await conn.fetch(_CLAIM_SQL, tenant, given, received_at)}
            if len(fresh) < len(given):
                seen = [m for m in given if m not in fresh]
                fresh.update(r["message_id"] for r in await conn.fetch(_RECLAIM_SQL, tenant, seen, received_at))
        events = [e for e in parsed.events if not e.given_id or e.message_id in fresh]
        outcome.duplicates = len(parsed.events) - len(events)
        resolved = await identities.resolve(conn, tenant, events)
        outcome.rejected.extend(resolved.rejected)
        outcome.dropped.extend(resolved.dropped)
        events = resolved.events
        if events:
            await conn.execute(
                _INSERT_SQL,
                tenant,
                uuid.UUID(source_id) if source_id else None,
                received_at,
                *unnest_columns(
                    events,
                    "message_id",
                    "type",
                    "event",
                    "user_id",
                    "anonymous_id",
                    "previous_id",
                    "group_id",
                    "customer_id",
                    "properties",
                    "traits_json",
                    "context_json",
                    "timestamp",
                    "sent_at",
                ),
            )
            orders = [e for e in events if e.type == "track" and e.event == ORDER_COMPLETED and e.customer_id]
            if orders:
                await _conversions(conn, tenant, orders, outcome, attribution_window_days)
        outcome.accepted = len(events)
    outcome.rejected.sort(key=lambda p: p.index)
    return outcome


ORDER_COMPLETED = "Order Completed"


def _conversion_row(event: Event) -> dict[str, Any]:
    """The conversion an `Order Completed` call is (Segment's e-commerce spec): unique by
    properties.order_id, its amount `revenue`, else `total`; the first product's sku and category."""
    properties = json.loads(event.properties)
    products = properties.get("products")
    first = products[0] if isinstance(products, list) and products and isinstance(products[0], dict) else {}
    amount = properties.get("revenue", properties.get("total"))
    row: dict[str, Any] = {
        "id": f"order:{properties.get('order_id')}",
        "customer_id": event.customer_id,
        "type": "purchase",
        "at": event.timestamp.isoformat(),
        "amount": None if amount is None or isinstance(amount, bool) else str(amount),
        "properties": {"order_id": properties.get("order_id"), "message_id": event.message_id},
    }
    for key in ("currency",):
        if isinstance(properties.get(key), str):
            row[key] = properties[key].upper()
    for key in ("sku", "category"):
        if isinstance(first.get(key), str):
            row[key] = first[key]
    return row


async def _conversions(
    conn: TenantConn, tenant: str, orders: list[Event], outcome: Outcome, window_days: float
) -> None:
    """Record the orders as conversions (attributed like `POST …/events`); an order without an
    order_id or an amount is stored in the stream only, and reported in `dropped`."""
    rows, indexes = [], []
    for event in orders:
        row = _conversion_row(event)
        if row["properties"]["order_id"] in (None, ""):
            outcome.dropped.append(Problem(event.index, "properties.order_id", "required for a conversion"))
            continue
        rows.append(row)
        indexes.append(event.index)
    if not rows:
        return
    report = await record_events_in(conn, tenant, rows, lambda i, line: f"{i}|{line}", window_days)
    for error in report.errors:
        position, _, line = error.partition("|")
        where, _, reason = line.partition(": ")
        field_name = {"amount": "properties.revenue", "id": "properties.order_id"}.get(where, f"properties.{where}")
        outcome.dropped.append(Problem(indexes[int(position)], field_name, reason or line))
