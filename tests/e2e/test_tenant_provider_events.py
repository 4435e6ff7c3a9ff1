"""Events from a tenant's own provider account: signed with the tenant's own secret, posted to
the tenant's own endpoint, and matched only to that tenant's messages sent through its own
account, never to another tenant's or to one sent through the platform's accounts."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import httpx

from core.content.channels import CHANNELS
from core.engagement.provider_events import TENANT_EVENTS_SECRET, signed_headers
from core.infra.db import tenant_tx
from core.infra.settings import Settings
from core.tenants.config_schema import Experiments, Policies
from tests.helpers.runs import create_campaign, start_run, wait_for_run
from tests.helpers.tenants import MakeTenant, Tenant

NO_POLICIES: dict[str, Any] = {"policies": Policies(), "experiments": Experiments()}
FORM = "application/x-www-form-urlencoded"


async def own_sms_account(make_tenant: MakeTenant, provider_sim: Any, pool: asyncpg.Pool, phones: list[str]) -> Tenant:
    """A tenant whose SMS channel is its own account (an endpoint it set), customers with `phones`."""
    base = await make_tenant("freshmart", customers=0, **NO_POLICIES)  # copied below: no quiet hours
    config = (await base.http.get(base.url("/config"))).json()["config"]
    config["channels"]["sms"]["endpoint"] = f"{provider_sim.url}/sms"
    tenant = await make_tenant("freshmart", customers=len(phones), **NO_POLICIES)
    config["slug"] = tenant.slug
    assert (await tenant.http.put(tenant.url("/config"), json=config)).status_code == 200
    facts = CHANNELS["sms"]
    async with tenant_tx(pool, tenant.slug) as conn:
        ids = [
            r["id"] for r in await conn.fetch("SELECT id FROM customers WHERE tenant_id = $1 ORDER BY id", tenant.slug)
        ]
        await conn.executemany(
            f"UPDATE customers SET {facts.address_column} = $3, {facts.consent_column} = true "
            "WHERE tenant_id = $1 AND id = $2",
            [(tenant.slug, cid, phone) for cid, phone in zip(ids, phones, strict=True)],
        )
    return tenant


async def sent_rows(tenant: Tenant, pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """Run one SMS campaign for the tenant; its ledger rows, by customer id."""
    variants = [{"key": "A", "template": "weekly_deals"}]
    run_id = await start_run(tenant, await create_campaign(tenant, channels=["sms"], variants=variants))
    assert (await wait_for_run(tenant, run_id))["status"] == "completed"
    rows = await pool.fetch(
        "SELECT * FROM deliveries WHERE tenant_id = $1 AND run_id = $2::uuid ORDER BY customer_id", tenant.slug, run_id
    )
    assert [(r["status"], r["provider_account"]) for r in rows] == [("sent", "tenant")] * len(rows)
    return rows


async def post(api_url: str, path: str, body: bytes, secret: str) -> httpx.Response:
    headers = {"Content-Type": FORM} | signed_headers(secret, body, str(int(time.time())))
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        return await http.post(path, content=body, headers=headers)


def undelivered(provider_message_id: str) -> bytes:
    return f"MessageSid={provider_message_id}&MessageStatus=undelivered&ErrorCode=30005".encode()


async def test_a_tenant_signed_event_matches_only_that_tenants_own_account_messages(
    make_tenant: MakeTenant, pool: asyncpg.Pool, api_url: str, settings: Settings, provider_sim: Any
) -> None:
    tenant = await own_sms_account(make_tenant, provider_sim, pool, ["+12125550180", "+12125550181"])
    other = await own_sms_account(make_tenant, provider_sim, pool, ["+12125550182"])
    secrets = {}
    for t in (tenant, other):
        made = await t.http.post(t.url(f"/secrets/{TENANT_EVENTS_SECRET}:generate"))
        assert made.status_code == 201, made.text
        secrets[t.slug] = made.json()["value"]
    rows, others = await sent_rows(tenant, pool), await sent_rows(other, pool)
    own_path = f"/v1/tenants/{tenant.slug}/provider-events/sms"

    # Signed with the platform's key, or with another tenant's, at the tenant's endpoint: refused.
    assert settings.provider_events_secret
    assert (
        await post(api_url, own_path, undelivered(rows[0]["provider_message_id"]), settings.provider_events_secret)
    ).status_code == 401
    assert (
        await post(api_url, own_path, undelivered(rows[0]["provider_message_id"]), secrets[other.slug])
    ).status_code == 401
    # An unknown tenant answers as a tenant without the secret does.
    unknown = await post(
        api_url, "/v1/tenants/no-such-tenant/provider-events/sms", b"MessageSid=x", secrets[tenant.slug]
    )
    assert unknown.status_code == 401 and "PROVIDER_EVENTS_SECRET" in unknown.json()["detail"]

    # The other tenant's key, at its own endpoint, naming this tenant's message: matches nothing.
    stray = await post(
        api_url,
        f"/v1/tenants/{other.slug}/provider-events/sms",
        undelivered(rows[0]["provider_message_id"]),
        secrets[other.slug],
    )
    assert stray.status_code == 200 and stray.json()["unmatched"] == 1, stray.text

    # The tenant's own key at its own endpoint: stored against its message, the address suppressed.
    answer = await post(api_url, own_path, undelivered(rows[0]["provider_message_id"]), secrets[tenant.slug])
    assert answer.status_code == 200, answer.text
    assert (answer.json()["stored"], answer.json()["suppressed"]) == (1, 1), answer.text
    async with tenant_tx(pool, tenant.slug) as conn:
        kinds = await conn.fetch(
            "SELECT customer_id, kind FROM message_events WHERE tenant_id = $1 AND kind = 'bounce'", tenant.slug
        )
        suppressed = await conn.fetch("SELECT address FROM suppressions WHERE tenant_id = $1", tenant.slug)
    assert [(k["customer_id"], k["kind"]) for k in kinds] == [(rows[0]["customer_id"], "bounce")]
    assert [s["address"] for s in suppressed] == ["+12125550180"]
    async with tenant_tx(pool, other.slug) as conn:
        assert await conn.fetchval("SELECT count(*) FROM message_events WHERE kind = 'bounce'") == 0
    assert others  # the other tenant's own messages exist and were untouched
