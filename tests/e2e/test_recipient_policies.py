"""Respecting the recipient, end to end: consent, suppression, frequency caps and send rates
each skip or slow exactly what they should, with the right reason in the ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg

from core.tenants.config_schema import Channels, EmailChannel, FrequencyCap, Policies
from tests.helpers.runs import run_campaign
from tests.helpers.tenants import MakeTenant, Tenant


async def _run(tenant: Tenant, **campaign: Any) -> dict[str, Any]:
    return await run_campaign(tenant, name="Policy test", **campaign)


async def _ledger(pool: asyncpg.Pool, tenant: Tenant, run_id: str) -> dict[int, tuple[str, str | None]]:
    rows = await pool.fetch(
        "SELECT customer_id, status, reason FROM deliveries WHERE tenant_id = $1 AND run_id = $2::uuid",
        tenant.slug,
        run_id,
    )
    return {r["customer_id"]: (r["status"], r["reason"]) for r in rows}


async def test_consent_is_required_unless_the_tenant_says_otherwise(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    strict = await make_tenant(customers=60, policies=Policies())
    relaxed = await make_tenant(customers=60, policies=Policies(consent_required={"email": False}))
    for tenant, required in ((strict, True), (relaxed, False)):
        run = await _run(tenant)
        ledger = await _ledger(pool, tenant, run["id"])
        rows = await pool.fetch("SELECT id, consent_email FROM customers WHERE tenant_id = $1", tenant.slug)
        consent: dict[int, bool] = {r["id"]: r["consent_email"] for r in rows}
        for customer, outcome in ledger.items():
            expected = ("skipped", "no_consent") if required and not consent[customer] else ("sent", None)
            assert outcome == expected, (tenant.slug, customer)
        assert len(ledger) == 60


async def test_suppressed_addresses_are_skipped_with_that_reason(make_tenant: MakeTenant, pool: asyncpg.Pool) -> None:
    tenant = await make_tenant(customers=30, policies=Policies(consent_required={"email": False}))
    chosen = await pool.fetch("SELECT id, email FROM customers WHERE tenant_id = $1 ORDER BY id LIMIT 3", tenant.slug)
    for row in chosen:
        added = await tenant.http.post(
            tenant.url("/suppressions"), json={"channel": "email", "address": row["email"].upper()}
        )
        assert added.status_code == 201
    run = await _run(tenant)
    ledger = await _ledger(pool, tenant, run["id"])
    suppressed = {r["id"] for r in chosen}
    assert {c for c, o in ledger.items() if o == ("skipped", "suppressed")} == suppressed
    assert all(o == ("sent", None) for c, o in ledger.items() if c not in suppressed)
    assert run["counts"]["skipped_by_reason"] == {"suppressed": 3}


async def test_frequency_caps_count_the_ledger_over_a_rolling_window(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    caps = [FrequencyCap(channel="email", max_messages=1, window_hours=24)]
    tenant = await make_tenant(customers=20, policies=Policies(consent_required={"email": False}, frequency_caps=caps))
    first = await _run(tenant)
    assert first["counts"]["sent"] == 20
    second = await _run(tenant)
    assert second["counts"]["sent"] == 0
    assert second["counts"]["skipped_by_reason"] == {"capped": 20}
    # Older sends fall out of the window: age the first run's ledger by two days.
    await pool.execute(
        "UPDATE deliveries SET created_at = created_at - interval '2 days' WHERE tenant_id = $1 AND run_id = $2::uuid",
        tenant.slug,
        first["id"],
    )
    third = await _run(tenant)
    assert third["counts"]["sent"] == 20


async def test_a_cross_channel_cap_stops_the_second_channel_in_the_same_run(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    caps = [FrequencyCap(channel="any", max_messages=1, window_hours=24)]
    tenant = await make_tenant(
        customers=20, policies=Policies(consent_required={"email": False, "sms": False}, frequency_caps=caps)
    )
    run = await _run(tenant, channels=["email", "sms"])
    ledger = await pool.fetch(
        "SELECT customer_id, channel, status, reason FROM deliveries WHERE tenant_id = $1 AND run_id = $2::uuid",
        tenant.slug,
        run["id"],
    )
    by_customer: dict[int, list[tuple[str, str, str | None]]] = {}
    for row in ledger:
        by_customer.setdefault(row["customer_id"], []).append((row["channel"], row["status"], row["reason"]))
    for customer, outcomes in by_customer.items():
        sent = [o for o in outcomes if o[1] == "sent"]
        capped = [o for o in outcomes if o[2] == "capped"]
        assert len(sent) <= 1, (customer, outcomes)
        if sent and not any(o[2] == "no_address" for o in outcomes):
            assert len(capped) == 1, (customer, outcomes)
    assert run["counts"]["skipped_by_reason"].get("capped", 0) >= 10


async def test_the_channel_rate_limit_holds(make_tenant: MakeTenant, workdir: Path) -> None:
    rate = 20
    channels = Channels(email=EmailChannel(rate_limit_per_second=rate))
    tenant = await make_tenant(customers=90, channels=channels, policies=Policies(consent_required={"email": False}))
    run = await _run(tenant)
    assert run["counts"]["sent"] == 90
    arrivals = sorted(
        int(p.name.split("-")[0]) / 1e9
        for p in (workdir / "outbox").glob("*.eml")
        if f":{run['id']}:" in p.read_text(errors="replace")
    )
    assert len(arrivals) == 90
    # A token bucket allows one second's burst on top of the rate: never more than twice the rate
    # messages inside any one-second window.
    busiest = max(sum(1 for t in arrivals[i:] if t - start < 1.0) for i, start in enumerate(arrivals))
    assert busiest <= 2 * rate, busiest
    assert arrivals[-1] - arrivals[0] >= (90 - 2 * rate) / rate - 0.5
