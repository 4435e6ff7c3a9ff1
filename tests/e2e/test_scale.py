"""A 200,000-recipient run through the API: every recipient in the ledger exactly once, and no
workflow execution in the run's continue-as-new chain over 5,000 history events.

The audience is honest about what it exercises: every customer is planned, batched, assigned a
variant and recorded, but only 1 in 100 has email consent, so about 2,000 real emails go to the
SMTP sink and the rest are skipped `no_consent` by the delivery policy (plus the holdout).
Customers are inserted with one generate_series statement rather than the Faker demo seeder,
which would take most of a minute for 200,000 people and adds nothing here.
"""

from __future__ import annotations

import time

import asyncpg
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from core.infra.db import tenant_tx
from core.tenants.config_schema import Execution
from tests.helpers.runs import AB_VARIANTS, assert_each_recipient_once, create_campaign, start_run, wait_for_run
from tests.helpers.tenants import MakeTenant

RECIPIENTS = 200_000
MAX_EVENTS_PER_EXECUTION = 5_000
# 1,000 batches of 200: enough workflow history that the run continues as new more than once.
SCALE = Execution(batch_size=200, max_concurrent_batches=16, max_concurrent_activities=40, activities_per_second=None)

_INSERT_CUSTOMERS = """
INSERT INTO customers (tenant_id, id, external_id, email, first_name, last_name, locale, time_zone,
                       loyalty_tier, consent_email)
SELECT $1, g, 'cust-' || g, 'customer.' || g || '@example.com', 'First' || g, 'Last' || g, 'en-US',
       'America/Chicago', (ARRAY['none', 'bronze', 'silver', 'gold'])[1 + g % 4], g % 100 = 0
FROM generate_series(1, $2::bigint) AS g
"""


async def _execution_chain(client: Client, workflow_id: str) -> list[int]:
    """The history length of every execution of the run, first to last."""
    desc = await client.get_workflow_handle(workflow_id).describe()
    run_id = desc.raw_description.workflow_execution_info.first_run_id or desc.run_id
    lengths = []
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        lengths.append(len(history.events))
        last = history.events[-1]
        if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
        else:
            assert last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, last
            run_id = ""
    return lengths


@pytest.mark.slow
async def test_a_200k_recipient_run_accounts_for_everyone_once_within_history_limits(
    make_tenant: MakeTenant, pool: asyncpg.Pool, temporal_client: Client
) -> None:
    tenant = await make_tenant(customers=0, execution=SCALE)
    async with tenant_tx(pool, tenant.slug) as conn:
        await conn.execute(_INSERT_CUSTOMERS, tenant.slug, RECIPIENTS)
    campaign = await create_campaign(tenant, variants=AB_VARIANTS, holdout_percent=5)

    started = time.monotonic()
    run_id = await start_run(tenant, campaign)
    run = await wait_for_run(tenant, run_id, timeout=600)
    elapsed = time.monotonic() - started
    assert run["status"] == "completed", run

    assert await assert_each_recipient_once(pool, tenant.slug, run_id) == RECIPIENTS
    ledger = {
        (r["status"], r["reason"]): r["n"]
        for r in await pool.fetch(
            """SELECT status, reason, count(*) AS n FROM deliveries
               WHERE tenant_id = $1 AND run_id = $2::uuid GROUP BY 1, 2""",
            tenant.slug,
            run_id,
        )
    }
    consenting_treated = await pool.fetchval(
        """SELECT count(*) FROM deliveries d JOIN customers c ON c.tenant_id = d.tenant_id AND c.id = d.customer_id
           WHERE d.tenant_id = $1 AND d.run_id = $2::uuid AND c.consent_email AND d.variant <> 'holdout'""",
        tenant.slug,
        run_id,
    )
    assert ledger[("sent", None)] == consenting_treated > 1_500
    assert set(ledger) == {("sent", None), ("skipped", "no_consent"), ("skipped", "holdout")}
    counts = run["counts"]
    assert counts["planned"] == RECIPIENTS
    assert counts["sent"] == ledger[("sent", None)]
    assert counts["skipped_by_reason"] == {"no_consent": ledger[("skipped", "no_consent")],
                                           "holdout": ledger[("skipped", "holdout")]}  # fmt: skip

    lengths = await _execution_chain(temporal_client, run["workflow_id"])
    print(f"\n200k run: {elapsed:.1f} s wall, {len(lengths)} executions, history events {lengths}")
    assert len(lengths) >= 2, "a run this large must continue as new"
    assert max(lengths) <= MAX_EVENTS_PER_EXECUTION, lengths
    # The progress the final execution reports carried its counters across every hand-over.
    result = await temporal_client.get_workflow_handle(run["workflow_id"]).result()
    assert result["counts"]["sent"] == counts["sent"] and result["batches_done"] == RECIPIENTS // 200
    assert result["execution"] == len(lengths)
