"""No template, error or provider outage wedges a run: a render error fails one message, an
unexpected error fails the run after a bounded number of attempts with its cause visible, and
cancel and pause take effect within seconds even while a batch is stuck on the provider."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
from temporalio.client import Client, WorkflowExecutionStatus

from core.tenants.config_schema import Channels, EmailChannel, Execution, Experiments, Policies
from devstack.provider_simulator import SimulatorControl
from tests.helpers.runs import (
    EMAIL_CAMPAIGN,
    assert_each_recipient_once,
    create_campaign,
    ledger_count,
    start_run,
    wait_for_run,
)
from tests.helpers.tenants import MakeTenant
from tests.helpers.waiting import until

# Everyone with an address is reachable: these tests are about failure handling, not policy.
EVERYONE: dict[str, Any] = {
    "policies": Policies(consent_required={"email": False, "sms": False}),
    "experiments": Experiments(),
}


async def test_a_render_error_fails_that_message_and_the_run_goes_on(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(customers=40, **EVERYONE)
    # Half the customers have the attribute the subject uses; the others cannot be rendered.
    await pool.execute(
        """UPDATE customers SET attributes = attributes || '{"shoe_size": "42"}'
           WHERE tenant_id = $1 AND id % 2 = 0""",
        tenant.slug,
    )
    campaign_id = await create_campaign(
        tenant, variants=[{"key": "A", "template": "weekly_deals", "subject": "Size {{ attributes.shoe_size }} is in"}]
    )
    run_id = await start_run(tenant, campaign_id)
    run = await wait_for_run(tenant, run_id)
    assert run["status"] == "completed", run
    assert await assert_each_recipient_once(pool, tenant.slug, run_id) == 40
    rows = await pool.fetch(
        "SELECT customer_id, status, reason, detail FROM deliveries WHERE tenant_id = $1 AND run_id = $2::uuid",
        tenant.slug,
        run_id,
    )
    for row in rows:
        if row["customer_id"] % 2 == 0:
            assert row["status"] == "sent", dict(row)
        else:
            assert (row["status"], row["reason"]) == ("failed", "render_error"), dict(row)
            assert "'dict object' has no attribute 'shoe_size'" in row["detail"]
            assert row["detail"].startswith("variant.subject: email subject of template 'weekly_deals'")
    assert run["counts"]["failed"] == 20
    # The deliveries page shows why.
    page = (await tenant.http.get(tenant.url(f"/runs/{run_id}/deliveries?status=failed&limit=1"))).json()
    assert page["items"][0]["reason"] == "render_error" and "shoe_size" in page["items"][0]["detail"]


async def test_an_unexpected_batch_error_fails_the_run_after_the_configured_attempts(
    make_tenant: MakeTenant, pool: asyncpg.Pool, temporal_client: Client
) -> None:
    tenant = await make_tenant(customers=10, execution=Execution(max_batch_attempts=2), **EVERYONE)
    # A real fault no retry can mend: the database refuses every ledger write of this tenant.
    trigger = f"refuse_{tenant.slug.replace('-', '_')}"
    await pool.execute(
        f"""CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'ledger is read-only for this test'; END $$;
            CREATE TRIGGER {trigger} BEFORE INSERT ON deliveries FOR EACH ROW
            WHEN (NEW.tenant_id = '{tenant.slug}') EXECUTE FUNCTION {trigger}();"""
    )
    try:
        run_id = await start_run(tenant, await create_campaign(tenant))
        run = await wait_for_run(tenant, run_id)
    finally:
        await pool.execute(f"DROP TRIGGER {trigger} ON deliveries; DROP FUNCTION {trigger}();")
    assert run["status"] == "failed", run
    assert "batch failed 2 times" in run["error"] and "ledger is read-only for this test" in run["error"]
    # Operators see the same cause in Temporal.
    description = await temporal_client.get_workflow_handle(run["workflow_id"]).describe()
    assert description.status == WorkflowExecutionStatus.FAILED


async def test_cancel_ends_a_run_stuck_on_a_provider_outage_within_seconds(
    make_tenant: MakeTenant, pool: asyncpg.Pool, sim: SimulatorControl
) -> None:
    tenant = await make_tenant(customers=60, **EVERYONE)
    await sim.set_faults(error_rate_5xx=1.0, channels=["sms"])  # the provider is down
    run_id = await start_run(tenant, await create_campaign(tenant, channels=["sms"]))
    await until(lambda: _requests_seen(sim, run_id, at_least=2), what="the batch retrying against the outage")

    started = time.monotonic()
    response = await tenant.http.post(tenant.url(f"/runs/{run_id}:cancel"))
    elapsed = time.monotonic() - started
    print(f"cancel of a run stuck on a provider outage answered in {elapsed:.2f} s")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled", response.json()
    planned = await assert_each_recipient_once(pool, tenant.slug, run_id)
    assert await ledger_count(pool, tenant.slug, run_id, "status = 'sent'") == 0
    assert await ledger_count(pool, tenant.slug, run_id, "reason = 'cancelled'") == planned - await ledger_count(
        pool, tenant.slug, run_id, "reason = 'no_address'"
    )


async def test_pause_stops_sends_within_seconds_and_resume_finishes_the_batch(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    # One batch of 300, sent at 30 per second: a pause lands in the middle of the batch.
    channels = Channels(email=EmailChannel(rate_limit_per_second=30))
    tenant = await make_tenant(customers=300, channels=channels, execution=Execution(batch_size=1000), **EVERYONE)
    run_id = await start_run(tenant, await create_campaign(tenant))

    async def sent() -> int:
        return await ledger_count(pool, tenant.slug, run_id, "status = 'sent'")

    await until(lambda: _at_least(sent, 30), what="the first sends")
    response = await tenant.http.post(tenant.url(f"/runs/{run_id}:pause"))
    assert response.status_code == 200 and response.json()["status"] == "paused", response.text
    settled = await _settles(sent, quiet_for=2.0, within=10.0)
    assert settled < 300, "the batch went on sending while paused"

    response = await tenant.http.post(tenant.url(f"/runs/{run_id}:resume"))
    assert response.status_code == 200, response.text
    run = await wait_for_run(tenant, run_id)
    assert run["status"] == "completed" and run["counts"]["sent"] == 300, run
    assert await assert_each_recipient_once(pool, tenant.slug, run_id) == 300


async def _requests_seen(sim: SimulatorControl, run_id: str, at_least: int) -> bool:
    return len(await sim.requests(contains=f":{run_id}:")) >= at_least


async def _at_least(count: Any, n: int) -> bool:
    return bool(await count() >= n)


async def _settles(count: Any, quiet_for: float, within: float) -> int:
    """The count once it has stopped changing for `quiet_for` seconds."""
    deadline = time.monotonic() + within
    last, since = await count(), time.monotonic()
    while time.monotonic() - since < quiet_for:
        assert time.monotonic() < deadline, "sends did not stop"
        await asyncio.sleep(0.2)
        now = await count()
        if now != last:
            last, since = now, time.monotonic()
    return int(last)


async def test_the_reported_templates_are_refused_at_create_naming_the_field(make_tenant: MakeTenant) -> None:
    """Regressions: each of these was accepted at create and then wedged a run or a preview."""
    tenant = await make_tenant(customers=3)
    cases = {
        "{% include 'x' %}": "'include' is not allowed",
        "{{ 'a' * 100000000 }}": "repetition would make 100,000,000 characters, over the limit of 100,000",
        "{{ range(10**9)|list }}": "range of 1,000,000,000 items is over the limit of 1,000",
        "{% for i in range(100000000) %}x{% endfor %}": "range of 100,000,000 items is over the limit of 1,000",
    }
    for subject, reason in cases.items():
        body = {**EMAIL_CAMPAIGN, "variants": [{"key": "A", "template": "weekly_deals", "subject": subject}]}
        response = await tenant.http.post(tenant.url("/campaigns"), json=body)
        assert response.status_code == 422, (subject, response.text)
        assert response.json()["errors"][0].startswith("variants[0].subject: "), response.text
        assert reason in response.json()["errors"][0], response.text
