"""Pause, resume and cancel through the API: workflow updates with validators, the runs table
following, a clear 409 for what a run's status does not allow, and the ledger accounting for
every recipient after a cancel."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import asyncpg
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus

from core.configs.checks import load_config_file
from core.experiments.buckets import GLOBAL_CONTROL, in_global_control
from core.tenants.config_schema import Execution
from tests.helpers.runs import (
    assert_each_recipient_once,
    create_campaign,
    ledger_count,
    start_run,
    until_no_activity_pending,
    wait_for_run,
)
from tests.helpers.stack import ROOT
from tests.helpers.tenants import MakeTenant, Tenant
from tests.helpers.waiting import until
from workflows.campaign_run import CampaignRunWorkflow

# Small batches, one at a time, eight activities a second: slow enough to act on mid-run.
SLOW = Execution(batch_size=20, max_concurrent_batches=1, activities_per_second=8)


async def _row_status(pool: asyncpg.Pool, tenant: str, run_id: str) -> str:
    return str(await pool.fetchval("SELECT status FROM runs WHERE tenant_id = $1 AND id = $2::uuid", tenant, run_id))


async def _delivering(make_tenant: MakeTenant, pool: asyncpg.Pool, customers: int, **config: Any) -> tuple[Tenant, str]:
    """A tenant with `customers` and SLOW execution, and a run of it that has recorded its first batch."""
    tenant = await make_tenant(customers=customers, execution=SLOW, **config)
    run_id = await start_run(tenant, await create_campaign(tenant))
    await until(lambda: _has_rows(pool, tenant.slug, run_id), what="the first batch")
    return tenant, run_id


async def _control(tenant: Tenant, run_id: str, action: str, status: str | None = None) -> dict[str, Any]:
    """POST /runs/{id}:{action}, which must be 200 (with the run in `status`, when given); the run."""
    response = await tenant.http.post(tenant.url(f"/runs/{run_id}:{action}"))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert status is None or body["status"] == status, body
    return body


async def _refuses_every_control(tenant: Tenant, run_id: str, status: str) -> None:
    """Pause, resume and cancel are each 409 naming the run's `status`."""
    for action in ("pause", "resume", "cancel"):
        refused = await tenant.http.post(tenant.url(f"/runs/{run_id}:{action}"))
        assert refused.status_code == 409, (action, refused.text)
        assert refused.json()["detail"] == f"cannot {action} a run that is {status}"


async def test_pause_stops_new_batches_and_resume_finishes_the_run(
    make_tenant: MakeTenant, pool: asyncpg.Pool, temporal_client: Client
) -> None:
    tenant, run_id = await _delivering(make_tenant, pool, 160)

    paused = await _control(tenant, run_id, "pause", "paused")
    assert await _row_status(pool, tenant.slug, run_id) == "paused"

    # The batch in flight finishes; no new one starts.
    await until_no_activity_pending(temporal_client, paused["workflow_id"])
    settled = await ledger_count(pool, tenant.slug, run_id)
    await asyncio.sleep(1.0)  # an observation window: the behaviour under test is that nothing happens in it
    assert await ledger_count(pool, tenant.slug, run_id) == settled < 160
    live = (await tenant.http.get(tenant.url(f"/runs/{run_id}"))).json()
    assert live["status"] == "paused" and live["counts_source"] == "workflow"
    assert live["counts"]["planned"] == 160
    assert live["counts"]["sent"] + live["counts"]["skipped"] == settled == live["batches_done"] * 20

    again = await tenant.http.post(tenant.url(f"/runs/{run_id}:pause"))
    assert again.status_code == 409 and "paused" in again.json()["detail"]

    await _control(tenant, run_id, "resume", "running")
    assert await _row_status(pool, tenant.slug, run_id) == "running"

    run = await wait_for_run(tenant, run_id)
    assert run["status"] == "completed" and run["counts_source"] == "ledger"
    assert await assert_each_recipient_once(pool, tenant.slug, run_id) == 160
    assert run["counts"]["sent"] + run["counts"]["skipped"] == 160
    await _refuses_every_control(tenant, run_id, "completed")


async def test_cancel_records_everyone_never_attempted_as_cancelled(
    make_tenant: MakeTenant, pool: asyncpg.Pool, temporal_client: Client
) -> None:
    tenant, run_id = await _delivering(make_tenant, pool, 300)

    body = await _control(tenant, run_id, "cancel", "cancelled")
    assert body["counts_source"] == "ledger"
    assert await _row_status(pool, tenant.slug, run_id) == "cancelled"

    # Everyone is accounted for exactly once: attempted before the cancel, or cancelled.
    assert await assert_each_recipient_once(pool, tenant.slug, run_id) == 300
    never_attempted = await ledger_count(pool, tenant.slug, run_id, "reason = 'cancelled'")
    assert 0 < never_attempted < 300
    counts = body["counts"]
    assert counts["skipped_by_reason"]["cancelled"] == never_attempted
    assert counts["sent"] + counts["skipped"] == 300
    # Cancelled rows keep the variant (or holdout) the recipient was assigned: none is blank.
    assert "" not in counts["by_variant"]
    assert sum(sum(by_status.values()) for by_status in counts["by_variant"].values()) == 300
    # Batches stop at a boundary: whole batches were attempted, the rest cancelled.
    assert (300 - never_attempted) % 20 == 0

    handle = temporal_client.get_workflow_handle_for(CampaignRunWorkflow.run, body["workflow_id"])
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    assert (await handle.result()).status == "cancelled"
    await asyncio.sleep(0.5)  # an observation window: nothing trickles in afterwards (the behaviour under test)
    assert await ledger_count(pool, tenant.slug, run_id) == 300
    await _refuses_every_control(tenant, run_id, "cancelled")


async def test_a_paused_run_can_be_cancelled(
    make_tenant: MakeTenant, pool: asyncpg.Pool, temporal_client: Client
) -> None:
    tenant, run_id = await _delivering(make_tenant, pool, 200)
    paused = await _control(tenant, run_id, "pause")
    await until_no_activity_pending(temporal_client, paused["workflow_id"])
    attempted = await ledger_count(pool, tenant.slug, run_id)

    await _control(tenant, run_id, "cancel", "cancelled")
    assert await assert_each_recipient_once(pool, tenant.slug, run_id) == 200
    assert await ledger_count(pool, tenant.slug, run_id, "reason = 'cancelled'") == 200 - attempted


async def test_a_run_waiting_for_its_send_time_can_be_paused_resumed_and_cancelled(
    make_tenant: MakeTenant, pool: asyncpg.Pool, temporal_client: Client
) -> None:
    tenant = await make_tenant(customers=50)
    send_at = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=6)).isoformat()
    run_id = await start_run(tenant, await create_campaign(tenant, send_at=send_at))

    async def waiting() -> bool:
        return bool(
            await pool.fetchval(
                "SELECT config_version IS NOT NULL FROM runs WHERE tenant_id = $1 AND id = $2::uuid",
                tenant.slug,
                run_id,
            )
        )

    await until(waiting, what="the run to pin its config and wait")
    await _control(tenant, run_id, "pause", "paused")
    await _control(tenant, run_id, "resume", "scheduled")

    cancelled = await _control(tenant, run_id, "cancel", "cancelled")
    assert cancelled["counts"]["planned"] == 0
    # Nobody was planned, so nobody is in the ledger; the timer was cut short.
    assert await ledger_count(pool, tenant.slug, run_id) == 0
    handle = temporal_client.get_workflow_handle(cancelled["workflow_id"])
    events = [e.event_type for e in (await handle.fetch_history()).events]
    assert EventType.EVENT_TYPE_TIMER_STARTED in events and EventType.EVENT_TYPE_TIMER_CANCELED in events
    assert EventType.EVENT_TYPE_TIMER_FIRED not in events


async def test_unknown_runs_are_404_and_another_tenants_runs_are_invisible(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    a = await make_tenant(customers=20)
    b = await make_tenant(customers=20)
    run_id = await start_run(a, await create_campaign(a))
    await wait_for_run(a, run_id)
    missing = "0b7c6f9e-8f5e-4a5b-9a43-5f0f5c1d2e3f"
    for action in ("pause", "resume", "cancel"):
        response = await a.http.post(a.url(f"/runs/{missing}:{action}"))
        assert response.status_code == 404 and response.json()["detail"] == f"run '{missing}' not found"

    async def all_404(on: Tenant, requests: list[tuple[str, str]], detail: str) -> None:
        for method, path in requests:
            response = await b.http.request(method, on.url(path))
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["detail"] == detail

    run_paths = [("GET", f"/runs/{run_id}"), ("GET", f"/runs/{run_id}/deliveries")]
    controls = [("POST", f"/runs/{run_id}:{action}") for action in ("pause", "resume", "cancel")]
    # B's key, on A's tenant: the tenant itself does not exist for B.
    await all_404(a, [*run_paths, ("GET", "/runs"), *controls], f"tenant '{a.slug}' not found")
    # B's key, on its own tenant, naming A's run: no such run.
    await all_404(b, [*run_paths, *controls], f"run '{run_id}' not found")
    assert (await b.http.get(b.url("/runs"))).json() == {"items": [], "next_cursor": None}
    assert (await a.http.get(a.url("/runs"))).json()["items"][0]["id"] == run_id


async def _has_rows(pool: asyncpg.Pool, tenant: str, run_id: str) -> bool:
    return await ledger_count(pool, tenant, run_id) > 0


async def test_control_and_progress_carry_across_continue_as_new(
    make_tenant: MakeTenant, pool: asyncpg.Pool, temporal_client: Client
) -> None:
    # One recipient per batch: enough history to continue as new within a second or two.
    tenant = await make_tenant(
        customers=1200, execution=Execution(batch_size=1, max_concurrent_batches=8, activities_per_second=None)
    )
    run_id = await start_run(tenant, await create_campaign(tenant))
    workflow_id = (await tenant.http.get(tenant.url(f"/runs/{run_id}"))).json()["workflow_id"]
    handle = temporal_client.get_workflow_handle_for(CampaignRunWorkflow.run, workflow_id)

    async def continued() -> bool:
        return (await handle.query(CampaignRunWorkflow.progress)).execution >= 2

    await until(continued, within=60, what="the run to continue as new")

    async def pause_and_settle() -> dict[str, Any]:
        await _control(tenant, run_id, "pause", "paused")
        await until_no_activity_pending(temporal_client, workflow_id)  # the batches in flight finish
        live: dict[str, Any] = (await tenant.http.get(tenant.url(f"/runs/{run_id}"))).json()
        return live

    # Paused in a later execution: the counters it carried over match the ledger exactly.
    live = await pause_and_settle()
    recorded = await ledger_count(pool, tenant.slug, run_id)
    assert live["status"] == "paused" and live["counts_source"] == "workflow"
    assert live["counts"]["sent"] + live["counts"]["skipped"] == recorded == live["batches_done"] < 1200
    assert live["counts"]["planned"] == 1200 and live["batches_total"] == 1200
    assert (await tenant.http.post(tenant.url(f"/runs/{run_id}:pause"))).status_code == 409

    assert (await tenant.http.post(tenant.url(f"/runs/{run_id}:resume"))).status_code == 200
    await until(lambda: _grew(pool, tenant.slug, run_id, recorded), what="the resumed run to deliver")
    await pause_and_settle()
    cancelled = await _control(tenant, run_id, "cancel", "cancelled")
    assert await assert_each_recipient_once(pool, tenant.slug, run_id) == 1200
    assert cancelled["counts"]["skipped_by_reason"]["cancelled"] > 0
    executions = (await handle.result()).execution
    assert executions >= 2

    # Every execution of the chain keeps the run's search attributes, so operators find it all.
    async def all_visible() -> bool:
        found = [w async for w in temporal_client.list_workflows(f'TenantId = "{tenant.slug}"')]
        return len(found) == executions and {w.id for w in found} == {workflow_id}

    await until(all_visible, within=10, what="every execution in visibility by TenantId")


async def _grew(pool: asyncpg.Pool, tenant: str, run_id: str, before: int) -> bool:
    return await ledger_count(pool, tenant, run_id) > before


async def test_a_run_terminated_from_outside_is_a_409_not_a_stale_status(
    make_tenant: MakeTenant, temporal_client: Client
) -> None:
    tenant = await make_tenant(customers=5)
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    run_id = await start_run(tenant, await create_campaign(tenant, send_at=later))
    workflow_id = (await tenant.http.get(tenant.url(f"/runs/{run_id}"))).json()["workflow_id"]
    await temporal_client.get_workflow_handle(workflow_id).terminate("operator stopped it in the Temporal UI")
    # The run's row never heard of it; the API asks Temporal.
    response = await tenant.http.post(tenant.url(f"/runs/{run_id}:cancel"))
    assert response.status_code == 409
    assert response.json()["detail"] == "cannot cancel a run that is failed"


async def test_cancelled_rows_carry_the_assignment_a_send_would_have_had(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    # A tenant-wide control group on top of the campaign's own split.
    base = load_config_file(ROOT / "tenant_configs" / "freshmart.yaml")
    policies = base.policies.model_copy(update={"holdout_percent": 30})
    tenant, run_id = await _delivering(make_tenant, pool, 200, policies=policies)
    await _control(tenant, run_id, "cancel")

    rows = await pool.fetch(
        "SELECT customer_id, variant, reason FROM deliveries WHERE tenant_id = $1 AND run_id = $2::uuid",
        tenant.slug,
        run_id,
    )
    assert len(rows) == 200 and any(r["reason"] == "cancelled" for r in rows)
    for r in rows:
        expected_control = in_global_control(tenant.slug, r["customer_id"], 30)
        assert (r["variant"] == GLOBAL_CONTROL) == expected_control, dict(r)


async def test_reschedule_through_the_api(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(customers=10)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=6)
    run_id = await start_run(tenant, await create_campaign(tenant, name="Later", send_at=later.isoformat()))
    path = tenant.url(f"/runs/{run_id}:reschedule")
    naive = await tenant.http.post(path, json={"send_at": "2030-01-01T10:00:00"})
    assert naive.status_code == 422 and "body.send_at: must include a time zone offset" in naive.json()["detail"]
    now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    moved = await tenant.http.post(path, json={"send_at": now.isoformat()})
    assert moved.status_code == 200, moved.text
    done = await wait_for_run(tenant, run_id)
    assert done["status"] == "completed" and done["counts"]["planned"] == 10
    assert dt.datetime.fromisoformat(done["send_at"]) < later
    refused = await tenant.http.post(path, json={"send_at": later.isoformat()})
    assert refused.status_code == 409 and "completed" in refused.json()["detail"]
