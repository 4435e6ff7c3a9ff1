"""Provider events on the real stack: the SMTP sink and the provider simulator report deliveries,
bounces and complaints to the signed endpoint; they land in message_events against the right run
and customer, hard bounces and complaints suppress the address, and the next run skips it."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from core.common.signing import sign
from core.content.channels import CHANNELS
from core.engagement.provider_events import signed_headers
from core.infra.db import tenant_tx
from core.infra.settings import Settings
from core.tenants.config_schema import Experiments, Policies
from devstack.provider_simulator import SimulatorControl
from tests.helpers.runs import create_campaign, start_run, wait_for_run
from tests.helpers.tenants import MakeTenant, Tenant
from tests.helpers.waiting import until

# No quiet hours, caps or holdouts: every consenting customer is sent to in every run.
NO_POLICIES: dict[str, Any] = {"policies": Policies(), "experiments": Experiments()}
Events = dict[int, set[tuple[str, str | None]]]


async def run_once(tenant: Tenant, campaign_id: str) -> str:
    """Run the campaign to completion; the run id."""
    run_id = await start_run(tenant, campaign_id)
    run = await wait_for_run(tenant, run_id)
    assert run["status"] == "completed", run
    return run_id


async def set_addresses(pool: asyncpg.Pool, slug: str, channel: str, addresses: dict[int, str]) -> None:
    """Give customers these addresses on `channel` (email, sms or push), with consent."""
    facts = CHANNELS[channel]
    address, consent = facts.address_column, facts.consent_column
    async with tenant_tx(pool, slug) as conn:
        await conn.executemany(
            f"UPDATE customers SET {address} = $3, {consent} = true WHERE tenant_id = $1 AND id = $2",
            [(slug, cid, address) for cid, address in addresses.items()],
        )


async def ledger(pool: asyncpg.Pool, slug: str, run_id: str) -> dict[int, asyncpg.Record]:
    """The run's ledger rows by customer id."""
    rows = await pool.fetch("SELECT * FROM deliveries WHERE tenant_id = $1 AND run_id = $2::uuid", slug, run_id)
    return {r["customer_id"]: r for r in rows}


async def events(pool: asyncpg.Pool, slug: str, run_id: str) -> Events:
    """(kind, bounce type) of the run's provider events, by customer."""
    rows = await pool.fetch(
        """SELECT customer_id, kind, bounce_type FROM message_events
           WHERE tenant_id = $1 AND run_id = $2::uuid AND kind IN ('delivered', 'bounce', 'complaint')""",
        slug,
        run_id,
    )
    found: Events = {}
    for r in rows:
        found.setdefault(r["customer_id"], set()).add((r["kind"], r["bounce_type"]))
    return found


async def wait_for_events(pool: asyncpg.Pool, slug: str, run_id: str, expected: Events) -> None:
    """Wait until the run's provider events are exactly `expected`."""
    last: list[Events] = [{}]

    async def arrived() -> bool:
        last[0] = await events(pool, slug, run_id)
        return last[0] == expected

    try:
        await until(arrived, within=60, every=0.2, what="the provider events of the run")
    except AssertionError:
        raise AssertionError(f"provider events {last[0]} != expected {expected}") from None


async def suppressions(pool: asyncpg.Pool, slug: str, channel: str) -> dict[str, str]:
    """The tenant's suppressed addresses on `channel` and why."""
    rows = await pool.fetch(
        "SELECT address, reason FROM suppressions WHERE tenant_id = $1 AND channel = $2", slug, channel
    )
    return {r["address"]: r["reason"] for r in rows}


async def post_events(
    api_url: str,
    provider: str,
    body: bytes,
    secret: str | None,
    content_type: str = "application/json",
    timestamp: int | None = None,
) -> httpx.Response:
    """POST a body to the provider-events endpoint, signed with `secret` (unsigned when None)."""
    headers = {"Content-Type": content_type}
    if secret is not None:
        headers |= signed_headers(secret, body, str(timestamp if timestamp is not None else int(time.time())))
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        return await http.post(f"/v1/provider-events/{provider}", content=body, headers=headers)


async def test_email_bounces_and_complaints_from_the_sink_suppress_the_address_for_the_next_run(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    """Hard bounce and complaint suppress (reasons bounce, complaint); a soft bounce does not."""
    tenant = await make_tenant("freshmart", customers=12, **NO_POLICIES)
    ids = [r["id"] for r in await pool.fetch("SELECT id FROM customers WHERE tenant_id = $1 ORDER BY id", tenant.slug)]
    hard, complaint, soft = ids[:3]
    addresses = {
        hard: f"Hard.{hard}@Bounce.Example.com",
        complaint: f"angry.{complaint}@complaint.example.com",
        soft: f"full.{soft}@softbounce.example.com",
    }
    await set_addresses(pool, tenant.slug, "email", addresses)
    campaign_id = await create_campaign(tenant)

    first = await run_once(tenant, campaign_id)
    rows = await ledger(pool, tenant.slug, first)
    sent = {cid for cid, r in rows.items() if r["status"] == "sent"}
    assert {hard, complaint, soft} <= sent
    expected: Events = {cid: {("delivered", None)} for cid in sent}
    expected[hard] = {("bounce", "hard")}
    expected[soft] = {("bounce", "soft")}
    expected[complaint] = {("delivered", None), ("complaint", None)}
    await wait_for_events(pool, tenant.slug, first, expected)

    assert await suppressions(pool, tenant.slug, "email") == {
        addresses[hard].lower(): "bounce",
        addresses[complaint]: "complaint",
    }
    listed = await tenant.http.get(tenant.url("/suppressions"), params={"channel": "email"})
    assert listed.status_code == 200, listed.text
    assert {(s["address"], s["reason"]) for s in listed.json()} == {
        (addresses[hard].lower(), "bounce"),
        (addresses[complaint], "complaint"),
    }

    second = await run_once(tenant, campaign_id)
    rows = await ledger(pool, tenant.slug, second)
    assert (rows[hard]["status"], rows[hard]["reason"]) == ("skipped", "suppressed")
    assert (rows[complaint]["status"], rows[complaint]["reason"]) == ("skipped", "suppressed")
    assert rows[soft]["status"] == "sent"
    assert {cid for cid, r in rows.items() if r["status"] == "sent"} == sent - {hard, complaint}


async def test_the_endpoint_refuses_forged_stale_and_malformed_requests_and_stores_a_replay_once(
    make_tenant: MakeTenant, pool: asyncpg.Pool, api_url: str, settings: Settings
) -> None:
    """401 unsigned, forged, stale or altered; 422 naming the field; a replayed event id stored once."""
    secret = settings.provider_events_secret
    assert secret
    tenant = await make_tenant("freshmart", customers=5, **NO_POLICIES)
    run_id = await run_once(tenant, await create_campaign(tenant))
    row = next(r for r in (await ledger(pool, tenant.slug, run_id)).values() if r["status"] == "sent")
    assert row["provider_message_id"]
    # Named by its Message-ID only, as a provider that does not echo our key would.
    event = {"event": "bounce", "type": "soft", "event_id": f"replay-{uuid.uuid4()}", "timestamp": int(time.time()),
             "smtp-id": row["provider_message_id"]}  # fmt: skip
    body = json.dumps([event]).encode()

    unsigned = await post_events(api_url, "email", body, None)
    forged = await post_events(api_url, "email", body, "not-the-secret")
    stale = await post_events(api_url, "email", body, secret, timestamp=int(time.time()) - 3600)
    headers = signed_headers(secret, body, str(int(time.time())))
    # Signed as a webhook channel signs its payloads, with the very secret: another domain.
    now = str(int(time.time()))
    as_webhook = {"X-Pennant-Timestamp": now, "X-Pennant-Signature": sign(secret, now, body)}
    async with httpx.AsyncClient(base_url=api_url) as http:
        tampered = await http.post("/v1/provider-events/email", content=body.replace(b"soft", b"hard"), headers=headers)
        webhook_signed = await http.post("/v1/provider-events/email", content=body, headers=as_webhook)
    for refused in (unsigned, forged, stale, tampered, webhook_signed):
        assert refused.status_code == 401, refused.text
    assert await pool.fetchval("SELECT count(*) FROM message_events WHERE dedupe_key LIKE 'email:replay-%'") == 0

    missing = await post_events(api_url, "email", json.dumps([{"event": "bounce"}]).encode(), secret)
    assert missing.status_code == 422, missing.text
    assert "body[0].event_id: Field required" in missing.json()["errors"]
    bad_type = await post_events(api_url, "email", json.dumps([{**event, "type": "maybe"}]).encode(), secret)
    assert bad_type.status_code == 422 and bad_type.json()["errors"][0].startswith("body[0].type:"), bad_type.text
    not_json = await post_events(api_url, "email", b"{nope", secret)
    assert not_json.status_code == 422 and not_json.json()["errors"][0].startswith("body"), not_json.text
    form = await post_events(api_url, "sms", b"MessageStatus=delivered", secret, "application/x-www-form-urlencoded")
    assert form.status_code == 422 and "body.MessageSid: Field required" in form.json()["errors"], form.text
    unknown_provider = await post_events(api_url, "fax", b"[]", secret)
    assert unknown_provider.status_code == 422, unknown_provider.text

    first = await post_events(api_url, "email", body, secret)
    replay = await post_events(api_url, "email", body, secret)
    assert first.status_code == replay.status_code == 200, (first.text, replay.text)
    assert (first.json()["stored"], first.json()["duplicates"]) == (1, 0)
    assert (replay.json()["stored"], replay.json()["duplicates"]) == (0, 1)
    stored = await pool.fetch(
        "SELECT run_id, customer_id, kind, bounce_type FROM message_events WHERE tenant_id = $1 AND dedupe_key = $2",
        tenant.slug,
        f"email:{event['event_id']}",
    )
    assert [tuple(r) for r in stored] == [(uuid.UUID(run_id), row["customer_id"], "bounce", "soft")]

    # Providers retry anything but a 2xx: events about unknown messages, or of kinds Pennant does
    # not record, are acknowledged and counted.
    strays = [
        {"event": "delivered", "event_id": "stray-1", "idempotency_key": f"{tenant.slug}:{uuid.uuid4()}:1:email"},
        {"event": "delivered", "event_id": "stray-2", "smtp-id": "<nobody@nowhere.pennant>"},
        {"event": "open", "event_id": "stray-3", "idempotency_key": row["idempotency_key"]},
    ]
    ignored = await post_events(api_url, "email", json.dumps(strays).encode(), secret)
    assert ignored.status_code == 200, ignored.text
    answer = ignored.json()
    assert (answer["received"], answer["stored"], answer["ignored"], answer["unsupported"]) == (3, 0, 3, 1)
    assert answer["unmatched_ids"] == ["stray-1", "stray-2"]


@pytest.mark.parametrize(
    ("template", "channel", "campaign_template", "hard_address", "soft_address"),
    [
        ("freshmart", "sms", "weekly_deals", "+15551230000", "+15551230001"),
        ("quickstop", "push", "coffee_morning", f"bounce-{'a' * 32}", f"softbounce-{'b' * 32}"),
    ],
)
async def test_sms_and_push_hard_failures_from_the_simulator_suppress_the_address_for_the_next_run(
    make_tenant: MakeTenant,
    pool: asyncpg.Pool,
    sim: SimulatorControl,
    template: str,
    channel: str,
    campaign_template: str,
    hard_address: str,
    soft_address: str,
) -> None:
    """Twilio-like status callbacks matched by message sid: a hard failure suppresses, a soft one does not."""
    tenant = await make_tenant(template, customers=10, **NO_POLICIES)
    ids = [r["id"] for r in await pool.fetch("SELECT id FROM customers WHERE tenant_id = $1 ORDER BY id", tenant.slug)]
    hard, soft = ids[:2]
    addresses = {hard: hard_address, soft: soft_address}
    await set_addresses(pool, tenant.slug, channel, addresses)
    variants = [{"key": "A", "template": campaign_template}]
    campaign_id = await create_campaign(tenant, channels=[channel], variants=variants, name=f"{channel} test")

    first = await run_once(tenant, campaign_id)
    rows = await ledger(pool, tenant.slug, first)
    sent = {cid for cid, r in rows.items() if r["status"] == "sent"}
    assert {hard, soft} <= sent
    expected: Events = {cid: {("delivered", None)} for cid in sent}
    expected[hard] = {("bounce", "hard")}
    expected[soft] = {("bounce", "soft")}
    await wait_for_events(pool, tenant.slug, first, expected)
    assert await suppressions(pool, tenant.slug, channel) == {hard_address: "bounce"}
    stats = await sim.stats()
    assert stats["events_sent"] >= len(sent), stats

    second = await run_once(tenant, campaign_id)
    rows = await ledger(pool, tenant.slug, second)
    assert (rows[hard]["status"], rows[hard]["reason"]) == ("skipped", "suppressed")
    assert {cid for cid, r in rows.items() if r["status"] == "sent"} == sent - {hard}


async def test_a_platform_signed_event_never_matches_a_message_sent_through_a_tenants_own_endpoint(
    make_tenant: MakeTenant, pool: asyncpg.Pool, api_url: str, settings: Settings, provider_sim: Any
) -> None:
    """The attack: a tenant's endpoint picks the message ids it answers with; a platform-keyed
    event naming one of them must not land on any message (the tenant's or another's)."""
    secret = settings.provider_events_secret
    assert secret
    base = await make_tenant("freshmart", customers=0, **NO_POLICIES)  # copied below: no quiet hours
    config = (await base.http.get(base.url("/config"))).json()["config"]
    config["channels"]["sms"]["endpoint"] = f"{provider_sim.url}/sms"  # its own account, same simulator
    tenant = await make_tenant("freshmart", customers=4, **NO_POLICIES)
    config["slug"] = tenant.slug
    assert (await tenant.http.put(tenant.url("/config"), json=config)).status_code == 200, "saved"
    ids = [r["id"] for r in await pool.fetch("SELECT id FROM customers WHERE tenant_id = $1 ORDER BY id", tenant.slug)]
    await set_addresses(pool, tenant.slug, "sms", {ids[0]: "+12125550170"})
    variants = [{"key": "A", "template": "weekly_deals"}]
    run_id = await run_once(tenant, await create_campaign(tenant, channels=["sms"], variants=variants))
    row = (await ledger(pool, tenant.slug, run_id))[ids[0]]
    assert (row["status"], row["provider_account"]) == ("sent", "tenant")

    body = f"MessageSid={row['provider_message_id']}&MessageStatus=undelivered&ErrorCode=30005".encode()
    answer = await post_events(api_url, "sms", body, secret, "application/x-www-form-urlencoded")
    assert answer.status_code == 200 and answer.json()["unmatched"] == 1, answer.text
    assert await events(pool, tenant.slug, run_id) == {}
    assert await suppressions(pool, tenant.slug, "sms") == {}
