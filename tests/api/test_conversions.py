"""Conversions in, on the real API, workers and database: events are idempotent by id; a
purchase within the attribution window after a run's message is attributed to that run and
variant, one outside the window or before the send is not; a holdout customer's purchase is
attributed to the holdout; a purchase makes its customer match a `purchased` segment."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg

from tests.helpers.runs import run_campaign
from tests.helpers.tenants import MakeTenant, Tenant

VARIANTS = [
    {"key": "A", "template": "weekly_deals"},
    {"key": "B", "template": "weekly_deals", "subject": "{{ first_name }}, more deals inside"},
]


async def _post(tenant: Tenant, events: list[dict[str, Any]]) -> dict[str, Any]:
    response = await tenant.http.post(tenant.url("/events"), json={"events": events})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _add_customers(tenant: Tenant, count: int) -> None:
    rows = [
        {"external_id": f"shopper-{i}", "email": f"shopper{i}@example.com", "first_name": f"Shopper {i}",
         "consent": {"email": True}}
        for i in range(count)
    ]  # fmt: skip
    response = await tenant.http.post(tenant.url("/customers"), json={"customers": rows})
    assert response.status_code == 200 and response.json()["inserted"] == count, response.text


async def _stored(pool: asyncpg.Pool, slug: str) -> dict[str, dict[str, Any]]:
    rows = await pool.fetch("SELECT * FROM customer_events WHERE tenant_id = $1", slug)
    return {r["event_id"]: dict(r) for r in rows}


def _at(moment: dt.datetime) -> str:
    return moment.isoformat()


async def test_events_are_idempotent_by_id_and_rows_are_checked_one_by_one(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(customers=5)
    now = dt.datetime.now(dt.UTC)
    purchase = {"id": "order-1", "customer_id": 2, "type": "purchase", "at": _at(now), "amount": "12.50",
                "currency": "USD", "sku": "DRY-1001", "category": "dairy",
                "properties": {"product_name": "Whole Milk", "store": "Downtown"}}  # fmt: skip
    # Demo purchase history is random and may hold this SKU already: only new rows count.
    bought_sql = "SELECT * FROM purchases WHERE tenant_id = $1 AND customer_id = 2 AND sku = 'DRY-1001'"
    seeded = {r["id"] for r in await pool.fetch(bought_sql, tenant.slug)}
    first = await _post(
        tenant,
        [
            purchase,
            {"id": "view-1", "external_id": "cust-000003", "type": "product_view", "at": _at(now)},
            {"id": "order-1", "customer_id": 2, "type": "purchase", "at": _at(now), "amount": 99},  # same id
            {"id": "bad-1", "customer_id": 2, "type": "purchase", "at": _at(now)},  # no amount
            {"id": "bad-2", "customer_id": 2, "type": "refund", "at": "2026-01-01T10:00:00"},  # no offset
            {"id": "bad-3", "customer_id": 999, "type": "visit", "at": _at(now)},
            {"id": "bad-4", "external_id": "nobody", "type": "visit", "at": _at(now)},
            {"id": "bad-5", "customer_id": 1, "external_id": "cust-000001", "type": "visit", "at": _at(now)},
        ],
    )
    assert (first["accepted"], first["rejected"], first["duplicates"]) == (2, 5, ["order-1"]), first
    errors = first["errors"]
    for prefix in (
        "events[3].amount: required for a purchase",
        "events[4].at: Input should have timezone info",
        "events[5].customer_id: no customer 999",
        "events[6].external_id: no customer 'nobody'",
        "events[7].customer_id: give exactly one of customer_id and external_id",
    ):
        assert any(e.startswith(prefix) for e in errors), (prefix, errors)

    replay = await _post(tenant, [purchase])
    assert (replay["accepted"], replay["duplicates"], replay["errors"]) == (0, ["order-1"], [])
    stored = await _stored(pool, tenant.slug)
    assert set(stored) == {"order-1", "view-1"}
    assert stored["order-1"]["amount"] == 12.5 and stored["order-1"]["properties"]["store"] == "Downtown"
    # The purchase reached purchases once, with its product; the custom event did not.
    bought = [r for r in await pool.fetch(bought_sql, tenant.slug) if r["id"] not in seeded]
    assert [(r["product_name"], r["category"], float(r["amount"])) for r in bought] == [("Whole Milk", "dairy", 12.5)]


async def test_purchases_are_attributed_to_the_last_message_within_the_window_and_to_the_holdout(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(customers=0)
    await _add_customers(tenant, 30)
    run = await run_campaign(tenant, variants=VARIANTS, holdout_percent=30)
    ledger = await pool.fetch(
        "SELECT customer_id, variant, status, reason, created_at FROM deliveries WHERE tenant_id = $1 AND run_id = $2",
        tenant.slug,
        run["id"],
    )
    sent = next(r for r in ledger if r["status"] == "sent")
    held = next(r for r in ledger if r["reason"] == "holdout")
    window = dt.timedelta(days=3)  # the default engagement.attribution_window_days
    hour = dt.timedelta(hours=1)

    def purchase(event_id: str, customer: int, at: dt.datetime) -> dict[str, Any]:
        return {"id": event_id, "customer_id": customer, "type": "purchase", "at": _at(at), "amount": "20.00"}

    body = await _post(
        tenant,
        [
            purchase("in-window", sent["customer_id"], sent["created_at"] + hour),
            purchase("at-the-edge", sent["customer_id"], sent["created_at"] + window - hour),
            purchase("after-window", sent["customer_id"], sent["created_at"] + window + hour),
            purchase("before-send", sent["customer_id"], sent["created_at"] - hour),
            purchase("held-out", held["customer_id"], held["created_at"] + hour),
        ],
    )
    assert (body["accepted"], body["attributed"], body["errors"]) == (5, 3, []), body
    stored = await _stored(pool, tenant.slug)
    for event_id in ("in-window", "at-the-edge"):
        event = stored[event_id]
        assert (str(event["run_id"]), event["channel"], event["variant"]) == (run["id"], "email", sent["variant"])
    assert sent["variant"] in ("A", "B")
    for event_id in ("after-window", "before-send"):
        assert (stored[event_id]["run_id"], stored[event_id]["variant"]) == (None, None), event_id
    assert (str(stored["held-out"]["run_id"]), stored["held-out"]["variant"]) == (run["id"], "holdout")


async def test_a_purchase_event_makes_the_customer_match_a_purchased_segment(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(customers=0)
    await _add_customers(tenant, 3)
    segment = {"segment": {"purchased": {"category": "garden", "within_days": 7}}}
    before = await tenant.http.post(tenant.url("/segments:estimate"), json=segment)
    assert before.status_code == 200 and before.json()["count"] == 0, before.text
    body = await _post(
        tenant,
        [{"id": "o-77", "external_id": "shopper-1", "type": "purchase", "at": _at(dt.datetime.now(dt.UTC)),
          "amount": 7.99, "sku": "GDN-1", "category": "garden"}],
    )  # fmt: skip
    assert body["accepted"] == 1, body
    after = (await tenant.http.post(tenant.url("/segments:estimate"), json=segment)).json()
    assert after["count"] == 1 and after["sample"][0]["email"] == "shopper1@example.com", after
