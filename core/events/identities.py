"""Who an event is about: `identify` upserts the customer by `userId` (= external_id) with the
customers API's rules (core.customers.records), anonymous ids bind to customers, and events
stored before their customer was known are attached when it becomes known.

Segment's reserved traits map onto customer fields (email, phone, firstName, lastName,
birthday, address.city, address.country, and consent: {email, sms, push}; context.timezone and
context.locale); every other trait is a custom attribute. A trait the customers API would refuse
is dropped and reported, and the rest of the call is kept.

An anonymous id binds to one customer, on the first identify (with both ids) or alias
(previousId → userId) that links it; its past events are attached then. Aliasing two
existing customers is refused (customers are never merged), as is an alias from an anonymous
id bound to someone else. A track, page, screen or group call naming a userId that is no
customer yet is stored unattached and attached by the identify that creates the customer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from core.customers.records import CustomerIn, stage_rows, write_staged
from core.events.models import Event, Problem
from core.infra.db import TenantConn

# Segment trait -> customer field.
_TRAIT_FIELDS = {
    "email": "email",
    "phone": "phone",
    "firstName": "first_name",
    "first_name": "first_name",
    "lastName": "last_name",
    "last_name": "last_name",
    "birthday": "birth_date",
}
_CONTEXT_FIELDS = {"timezone": "time_zone", "locale": "locale"}
_ADDRESS_FIELDS = {"city": "city", "country": "country"}


@dataclass
class Resolved:
    """The events to store, with their customers; the calls refused and the traits dropped."""

    events: list[Event] = field(default_factory=list)
    rejected: list[Problem] = field(default_factory=list)
    dropped: list[Problem] = field(default_factory=list)


def customer_row(event: Event) -> tuple[dict[str, Any], dict[str, str]]:
    """The customers-API row an identify call makes, and where each field came from (for errors)."""
    row: dict[str, Any] = {"external_id": event.user_id}
    where: dict[str, str] = {"external_id": "userId"}
    attributes: dict[str, Any] = {}
    for name, value in event.traits.items():
        if name in _TRAIT_FIELDS:
            column = _TRAIT_FIELDS[name]
            if column == "birth_date" and isinstance(value, str) and "T" in value:
                value = value.split("T", 1)[0]
            row[column], where[column] = value, f"traits.{name}"
        elif name == "address" and isinstance(value, dict):
            rest = {k: v for k, v in value.items() if k not in _ADDRESS_FIELDS}
            for key, column in _ADDRESS_FIELDS.items():
                if key in value:
                    found = value[key]
                    if column == "country" and isinstance(found, str) and len(found) == 2:
                        found = found.upper()
                    row[column], where[column] = found, f"traits.address.{key}"
            if rest:
                attributes["address"] = rest
        elif name == "consent":
            row["consent"], where["consent"] = value, "traits.consent"
        else:
            attributes[name] = value
    for key, column in _CONTEXT_FIELDS.items():
        if key in event.context:
            row[column], where[column] = event.context[key], f"context.{key}"
    if attributes:
        row["attributes"], where["attributes"] = attributes, "traits"
    return row, where


def checked_row(event: Event, dropped: list[Problem]) -> dict[str, Any]:
    """The identify's customer row without the fields the customers API refuses (each reported)."""
    row, where = customer_row(event)
    for _ in range(len(row)):
        try:
            CustomerIn.model_validate(row)
            return row
        except ValidationError as exc:
            bad = {str(err["loc"][0]) for err in exc.errors() if err["loc"]}
            for err in exc.errors():
                if err["loc"] and str(err["loc"][0]) in row:
                    name = str(err["loc"][0])
                    dropped.append(Problem(event.index, where.get(name, f"traits.{name}"), err["msg"]))
            if "external_id" in bad:
                break
            row = {k: v for k, v in row.items() if k not in bad}
    return {"external_id": row["external_id"]}


async def _customers(conn: TenantConn, tenant: str, external_ids: Sequence[str]) -> dict[str, int]:
    if not external_ids:
        return {}
    rows = await conn.fetch(
        "SELECT external_id, id FROM customers WHERE tenant_id = $1 AND external_id = ANY($2::text[])",
        tenant,
        list(set(external_ids)),
    )
    return {r["external_id"]: int(r["id"]) for r in rows}


async def resolve(conn: TenantConn, tenant: str, events: list[Event]) -> Resolved:
    """Upsert identified customers, bind anonymous ids, attach waiting events, and set each
    event's customer, inside the caller's tenant transaction."""
    resolved = Resolved()
    user_ids = [e.user_id for e in events if e.user_id is not None]
    aliases = [e for e in events if e.type == "alias"]
    identifies = [e for e in events if e.type == "identify" and e.user_id is not None]
    anonymous = {e.anonymous_id for e in events if e.anonymous_id is not None}
    anonymous.update(e.previous_id for e in aliases if e.previous_id is not None)
    if not identifies and not aliases:
        # The common case (track, page, screen): two lookups, no writes beyond the events.
        known = await _customers(conn, tenant, user_ids)
        bound = await _bindings(conn, tenant, anonymous)
        for event in events:
            event.customer_id = _customer_of(event, known, bound)
        resolved.events = events
        return resolved

    known = await _customers(conn, tenant, [*user_ids, *(e.previous_id for e in aliases if e.previous_id)])
    bound = await _bindings(conn, tenant, anonymous)
    refused: set[int] = set()
    for alias in aliases:
        assert alias.previous_id is not None and alias.user_id is not None
        if alias.previous_id == alias.user_id:
            continue
        reason = None
        if alias.previous_id in known:
            reason = (
                "previousId and userId are both customers: customers are not merged"
                if alias.user_id in known
                else "previousId is a customer: customers are not renamed"
            )
        elif alias.previous_id in bound and bound[alias.previous_id] != known.get(alias.user_id):
            reason = "previousId already belongs to another customer"
        if reason:
            refused.add(alias.index)
            resolved.rejected.append(Problem(alias.index, "previousId", reason))

    rows = [checked_row(e, resolved.dropped) for e in identifies]
    rows += [{"external_id": e.user_id} for e in aliases if e.index not in refused and e.user_id not in known]
    if rows:
        staged = stage_rows(rows, lambda i, line: line)
        await write_staged(conn, tenant, staged.records)
        known = await _customers(conn, tenant, [*user_ids, *known])

    # Bind anonymous ids: the first link wins, in the body's order and against stored bindings.
    new_bindings: dict[str, int] = {}
    for event in events:
        if event.index in refused or event.user_id not in known:
            continue
        anon = event.previous_id if event.type == "alias" else event.anonymous_id if event.type == "identify" else None
        if anon is None or anon == event.user_id:
            continue
        customer = known[event.user_id]
        holder = bound.get(anon, new_bindings.get(anon))
        if holder is None:
            new_bindings[anon] = customer
        elif holder != customer and event.type == "identify":
            resolved.dropped.append(
                Problem(event.index, "anonymousId", "already belongs to another customer; not linked")
            )
    if new_bindings:
        await conn.execute(
            """INSERT INTO event_identities (tenant_id, anonymous_id, customer_id)
               SELECT $1, a, c FROM unnest($2::text[], $3::bigint[]) AS b(a, c) ON CONFLICT DO NOTHING""",
            tenant,
            list(new_bindings),
            list(new_bindings.values()),
        )
        # Past events of each newly bound anonymous id join its customer.
        await conn.execute(
            """UPDATE events e SET customer_id = b.c FROM unnest($2::text[], $3::bigint[]) AS b(a, c)
               WHERE e.tenant_id = $1 AND e.customer_id IS NULL AND e.anonymous_id = b.a""",
            tenant,
            list(new_bindings),
            list(new_bindings.values()),
        )
        bound.update(new_bindings)
    linked = [e.user_id for e in (*identifies, *aliases) if e.user_id in known]
    if linked:
        await conn.execute(
            """UPDATE events e SET customer_id = c.id FROM customers c
               WHERE e.tenant_id = $1 AND e.customer_id IS NULL AND e.user_id = ANY($2::text[])
                 AND c.tenant_id = $1 AND c.external_id = e.user_id""",
            tenant,
            linked,
        )
    for event in events:
        if event.index in refused:
            continue
        event.customer_id = _customer_of(event, known, bound)
        resolved.events.append(event)
    return resolved


async def _bindings(conn: TenantConn, tenant: str, anonymous: set[str]) -> dict[str, int]:
    if not anonymous:
        return {}
    rows = await conn.fetch(
        """SELECT anonymous_id, customer_id FROM event_identities
           WHERE tenant_id = $1 AND anonymous_id = ANY($2::text[])""",
        tenant,
        list(anonymous),
    )
    return {r["anonymous_id"]: int(r["customer_id"]) for r in rows}


def _customer_of(event: Event, known: dict[str, int], bound: dict[str, int]) -> int | None:
    if event.user_id is not None:
        return known.get(event.user_id)
    if event.anonymous_id is not None:
        return bound.get(event.anonymous_id)
    return None
