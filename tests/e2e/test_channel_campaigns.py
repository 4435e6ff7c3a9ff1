"""SMS, push and webhook campaigns end to end: the HTTP API, Temporal, PostgreSQL, the worker's
HTTP adapters and the provider simulator, with faults injected at the provider."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import math
import time
from typing import Any

import asyncpg
from temporalio.client import Client

from activities.delivery import CHUNK, CHUNK_BY_CHANNEL
from core.configs.checks import load_config_file
from core.content.channels import CHANNELS
from core.infra.db import tenant_tx
from core.tenants.config_schema import Experiments, Policies, TemplateSet, WebhookChannel
from devstack.provider_simulator import SimulatorControl
from tests.helpers.runs import wait_for_run
from tests.helpers.stack import PROVIDER_SECRETS, ROOT
from tests.helpers.tenants import MakeTenant, Tenant

# No quiet hours, caps or default holdout: these tests are about delivery, at any time of day.
NO_POLICIES: dict[str, Any] = {"policies": Policies(), "experiments": Experiments()}


async def run_campaign(tenant: Tenant, channels: list[str], template: str) -> tuple[str, str, dict[str, Any]]:
    """Create a campaign for everyone, run it, wait for the end: (run id, workflow id, run)."""
    body = {"name": f"{template} test", "channels": channels, "variants": [{"key": "A", "template": template}]}
    created = await tenant.http.post(tenant.url("/campaigns"), json=body)
    assert created.status_code == 201, created.text
    started = await tenant.http.post(tenant.url(f"/campaigns/{created.json()['id']}/runs"))
    assert started.status_code == 202, started.text
    run_id, workflow_id = started.json()["run_id"], started.json()["workflow_id"]
    return run_id, workflow_id, await wait_for_run(tenant, run_id)


async def ledger(pool: asyncpg.Pool, tenant: Tenant, run_id: str) -> dict[int, asyncpg.Record]:
    """The run's ledger rows by customer id."""
    rows = await pool.fetch("SELECT * FROM deliveries WHERE tenant_id = $1 AND run_id = $2::uuid", tenant.slug, run_id)
    return {r["customer_id"]: r for r in rows}


async def customers(pool: asyncpg.Pool, tenant: Tenant) -> dict[int, asyncpg.Record]:
    """The tenant's customers by id."""
    return {r["id"]: r for r in await pool.fetch("SELECT * FROM customers WHERE tenant_id = $1", tenant.slug)}


async def deliver_attempts(client: Client, workflow_id: str) -> list[int]:
    """The attempt number each deliver_batch activity ended on (Temporal records the last one)."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    names = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    return [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
        and names[e.activity_task_started_event_attributes.scheduled_event_id] == "deliver_batch"
    ]


async def bad_addresses(
    pool: asyncpg.Pool, sim: SimulatorControl, tenant: Tenant, channel: str, malformed: str
) -> tuple[dict[int, asyncpg.Record], list[int], int, int]:
    """The tenant's customers (as they were), those reachable on `channel` (consent and an
    address), sorted, and two of them: the first given the address `malformed`, the second's
    address refused for good by the provider simulator."""
    column = CHANNELS[channel].address_column
    people = await customers(pool, tenant)
    reachable = sorted(cid for cid, c in people.items() if CHANNELS[channel].consented(dict(c)) and c[column])
    bad, refused = reachable[0], reachable[1]
    async with tenant_tx(pool, tenant.slug) as conn:
        await conn.execute(
            f"UPDATE customers SET {column} = $3 WHERE tenant_id = $1 AND id = $2", tenant.slug, bad, malformed
        )
    await sim.set_faults(permanent_fail=[people[refused][column]])
    return people, reachable, bad, refused


def once_each(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The simulator's messages by idempotency key, asserting none arrived twice."""
    keys = [m["idempotency_key"] for m in messages]
    assert len(keys) == len(set(keys)), "an idempotency key was delivered twice"
    return {m["idempotency_key"]: m for m in messages}


async def test_sms_campaign_delivers_each_rendered_message_with_the_opt_out_footer(
    make_tenant: MakeTenant, pool: asyncpg.Pool, sim: SimulatorControl
) -> None:
    tenant = await make_tenant("freshmart", customers=60, **NO_POLICIES)
    run_id, _, run = await run_campaign(tenant, ["sms"], "weekly_deals")
    assert run["status"] == "completed", run

    people = await customers(pool, tenant)
    reachable = {cid: c for cid, c in people.items() if c["consent_sms"] and c["phone"]}
    assert reachable, "the demo data should give some customers SMS consent"
    delivered = once_each(await sim.messages("sms", contains=f":{run_id}:"))
    rows = await ledger(pool, tenant, run_id)
    assert {rows[cid]["idempotency_key"] for cid in reachable} == set(delivered)
    for cid, customer in reachable.items():
        row, message = rows[cid], delivered[rows[cid]["idempotency_key"]]
        assert (row["status"], row["provider_message_id"]) == ("sent", message["sid"])
        assert message["to"] == customer["phone"] and message["from"] == "+15005550006"
        # Every locale falls back to the default SMS part; the platform footer always follows.
        assert message["body"] == (
            f"FreshMart: {customer['first_name']}, fresh deals this week. https://freshmart.example.com/deals\n"
            "Reply STOP to opt out. FreshMart"
        )
        assert message["account_sid"] == PROVIDER_SECRETS["SMS_ACCOUNT_SID"]
    counts = run["counts"]
    assert (counts["sent"], counts["failed"]) == (len(reachable), 0)
    assert counts["skipped"] == len(people) - len(reachable)


async def test_push_campaign_sends_many_tokens_per_request_and_records_bad_tokens_per_token(
    make_tenant: MakeTenant, pool: asyncpg.Pool, sim: SimulatorControl, temporal_client: Client
) -> None:
    tenant = await make_tenant("quickstop", customers=60, **NO_POLICIES)
    people, reachable, malformed, unregistered = await bad_addresses(pool, sim, tenant, "push", "not a token")
    assert len(reachable) >= 5

    run_id, workflow_id, run = await run_campaign(tenant, ["push"], "coffee_morning")
    assert run["status"] == "completed", run

    delivered = once_each(await sim.messages("push", contains=f":{run_id}:"))
    rows = await ledger(pool, tenant, run_id)
    assert rows[unregistered]["status"] == "failed"
    assert rows[unregistered]["reason"] == "push token rejected: UNREGISTERED"
    assert rows[unregistered]["address"] == people[unregistered]["push_token"]
    # An unregistered token is forgotten, so later runs skip that customer (no_address);
    # a malformed one is only recorded failed.
    rows_now = await pool.fetch("SELECT id, push_token FROM customers WHERE tenant_id = $1", tenant.slug)
    tokens: dict[int, str | None] = {r["id"]: r["push_token"] for r in rows_now}
    assert tokens[unregistered] is None and tokens[malformed] == "not a token"
    assert rows[malformed]["status"] == "failed"
    assert rows[malformed]["reason"] == "push token rejected: INVALID_ARGUMENT"
    sent = [cid for cid in reachable if cid not in (unregistered, malformed)]
    assert {rows[cid]["idempotency_key"] for cid in sent} == set(delivered)
    for cid in sent:
        message = delivered[rows[cid]["idempotency_key"]]
        assert rows[cid]["status"] == "sent" and rows[cid]["provider_message_id"] == message["message_id"]
        assert message["token"] == people[cid]["push_token"]
        assert message["title"] == f"Coffee's on us, {people[cid]['first_name']}"
        assert message["body"] == "Free coffee with any breakfast sandwich at QuickStop until 10am."
        assert message["data"] == {"deep_link": "quickstop://offers/coffee"}
    # Many tokens per request: one request per chunk of the batch, never one per token.
    requests = await sim.requests(contains=f":{run_id}:")
    assert len(requests) == math.ceil(len(reachable) / CHUNK_BY_CHANNEL.get("push", CHUNK))
    assert sum(len(r["keys"]) for r in requests) == len(reachable)
    # Bad tokens are permanent: nothing was retried.
    assert await deliver_attempts(temporal_client, workflow_id) == [1]
    counts = run["counts"]
    assert (counts["sent"], counts["failed"]) == (len(sent), 2)
    assert counts["by_channel"]["push"] == {"sent": len(sent), "failed": 2, "skipped": len(people) - len(reachable)}


async def test_webhook_campaign_posts_payloads_the_receiver_can_verify(
    make_tenant: MakeTenant, pool: asyncpg.Pool, sim: SimulatorControl
) -> None:
    base = load_config_file(ROOT / "tenant_configs" / "freshmart.yaml")
    webhook = WebhookChannel(credentials={"signing_secret": "secret:WEBHOOK_SIGNING_SECRET"})
    template = TemplateSet.model_validate({"webhook": {"payload": {
        "event": "campaign.message",
        "campaign": "{{ campaign.name }}",
        "customer": {"id": "{{ external_id }}", "first_name": "{{ first_name }}", "tier": "{{ loyalty_tier }}"},
        "tags": ["{{ brand.name }}", "{{ variant }}"],
        "version": 1,
    }}})  # fmt: skip
    tenant = await make_tenant(
        "freshmart",
        customers=15,
        channels=base.channels.model_copy(update={"webhook": webhook}),
        templates={**base.templates, "crm_event": template},
        **NO_POLICIES,
    )
    run_id, _, run = await run_campaign(tenant, ["webhook"], "crm_event")
    assert run["status"] == "completed", run

    people = await customers(pool, tenant)
    rows = await ledger(pool, tenant, run_id)
    delivered = once_each(await sim.messages("webhook", contains=f":{run_id}:"))
    assert len(delivered) == len(people) == run["counts"]["sent"]  # a webhook needs no consent
    secret = PROVIDER_SECRETS["WEBHOOK_SIGNING_SECRET"].encode()
    for cid, customer in people.items():
        row = rows[cid]
        message = delivered[row["idempotency_key"]]
        assert (row["status"], row["address"]) == ("sent", customer["external_id"])
        assert message["name"] == tenant.slug  # the default endpoint: /webhook/<tenant>
        headers, raw = message["headers"], message["raw_body"].encode()
        timestamp = headers["x-pennant-timestamp"]
        assert abs(time.time() - int(timestamp)) < 120
        mac = hmac.new(secret, timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-pennant-signature"], f"sha256={mac}")
        assert headers["idempotency-key"] == row["idempotency_key"]
        assert json.loads(raw) == {
            "event": "campaign.message",
            "campaign": "crm_event test",
            "customer": {"id": customer["external_id"], "first_name": customer["first_name"],
                         "tier": customer["loyalty_tier"]},
            "tags": ["FreshMart", "A"],
            "version": 1,
        }  # fmt: skip


async def test_503s_and_429s_end_delivered_after_retries_with_each_key_delivered_once(
    make_tenant: MakeTenant, pool: asyncpg.Pool, sim: SimulatorControl, temporal_client: Client
) -> None:
    tenant = await make_tenant("freshmart", customers=40, **NO_POLICIES)
    await sim.set_faults(rate_limit={"count": 1, "retry_after": 2}, fail_n=2)
    run_id, workflow_id, run = await run_campaign(tenant, ["sms"], "weekly_deals")
    assert run["status"] == "completed", run

    rows = await ledger(pool, tenant, run_id)
    sent = {r["idempotency_key"]: r for r in rows.values() if r["status"] == "sent"}
    delivered = once_each(await sim.messages("sms", contains=f":{run_id}:"))
    assert set(delivered) == set(sent) and len(sent) >= 5
    assert all(sent[k]["provider_message_id"] == m["sid"] for k, m in delivered.items())
    assert (run["counts"]["sent"], run["counts"]["failed"]) == (len(sent), 0)
    stats = await sim.stats()
    assert (stats["rate_limited"], stats["server_errors"]) == (1, 2)
    # The batch retried the provider itself, each chunk as soon as it was told to: no attempt of
    # the batch failed for a flap that a second try mends.
    assert await deliver_attempts(temporal_client, workflow_id) == [1]
    # Retry-After: 2 was honoured: no request reached the provider for ~2s after the 429.
    times = sorted(r["at"] for r in await sim.requests(contains=f":{run_id}:"))
    assert max(b - a for a, b in itertools.pairwise(times)) >= 1.9


async def test_a_lost_answer_is_retried_and_the_provider_sees_each_key_delivered_once(
    make_tenant: MakeTenant, pool: asyncpg.Pool, sim: SimulatorControl, temporal_client: Client
) -> None:
    tenant = await make_tenant("quickstop", customers=30, **NO_POLICIES)
    # The provider takes the batch but holds its answer past the worker's timeout.
    await sim.set_faults(timeout_n=1, hang_seconds=10)
    run_id, workflow_id, run = await run_campaign(tenant, ["push"], "coffee_morning")
    assert run["status"] == "completed", run

    rows = await ledger(pool, tenant, run_id)
    sent = {r["idempotency_key"] for r in rows.values() if r["status"] == "sent"}
    delivered = once_each(await sim.messages("push", contains=f":{run_id}:"))
    assert set(delivered) == sent and sent
    stats = await sim.stats()
    assert stats["timeouts"] == 1
    assert stats["duplicates"] == len(sent), "the retried batch was answered from the provider's memory"
    assert await deliver_attempts(temporal_client, workflow_id) == [1], "retried within the batch"


async def test_permanent_failures_are_recorded_failed_and_never_retried(
    make_tenant: MakeTenant, pool: asyncpg.Pool, sim: SimulatorControl, temporal_client: Client
) -> None:
    tenant = await make_tenant("freshmart", customers=40, **NO_POLICIES)
    _, reachable, invalid, refused = await bad_addresses(pool, sim, tenant, "sms", "555-0100")

    run_id, workflow_id, run = await run_campaign(tenant, ["sms"], "weekly_deals")
    assert run["status"] == "completed", run

    rows = await ledger(pool, tenant, run_id)
    assert (rows[invalid]["status"], rows[invalid]["reason"]) == ("failed", "invalid phone number (not E.164)")
    assert rows[refused]["status"] == "failed"
    assert rows[refused]["reason"] == "sms rejected: HTTP 400 code 21610: Attempt to send to unsubscribed recipient"
    assert all(rows[cid]["status"] == "sent" for cid in reachable[2:])
    counts = run["counts"]
    assert (counts["sent"], counts["failed"]) == (len(reachable) - 2, 2)
    # The invalid number never reached the provider; the refused one reached it exactly once.
    assert await sim.requests(contains=rows[invalid]["idempotency_key"]) == []
    assert len(await sim.requests(contains=rows[refused]["idempotency_key"])) == 1
    assert await deliver_attempts(temporal_client, workflow_id) == [1]


async def test_an_unset_secret_fails_the_run_at_once_naming_it(
    make_tenant: MakeTenant, sim: SimulatorControl, temporal_client: Client
) -> None:
    base = load_config_file(ROOT / "tenant_configs" / "freshmart.yaml")
    assert base.channels.sms is not None
    creds = {"account_sid": "secret:NO_SUCH_SID", "auth_token": "secret:SMS_AUTH_TOKEN"}
    sms = base.channels.sms.model_copy(update={"credentials": creds})
    tenant = await make_tenant(
        "freshmart", customers=20, channels=base.channels.model_copy(update={"sms": sms}), **NO_POLICIES
    )
    _, workflow_id, run = await run_campaign(tenant, ["sms"], "weekly_deals")
    assert run["status"] == "failed", run
    assert "secret NO_SUCH_SID is not set for tenant" in (run["error"] or "")
    assert await deliver_attempts(temporal_client, workflow_id) == [1]
    assert (await sim.stats())["requests"] == 0
