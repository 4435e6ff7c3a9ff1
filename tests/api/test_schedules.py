"""Recurring campaigns on Temporal Schedules (dev server: the time-skipping server has none)."""

from __future__ import annotations

import asyncio

import asyncpg
from temporalio.client import Client

from core.runs.models import TERMINAL_STATUSES
from tests.helpers.runs import wait_for_run
from tests.helpers.tenants import MakeTenant
from tests.helpers.waiting import until

CAMPAIGN = {"name": "Every few seconds", "channels": ["email"], "variants": [{"key": "A", "template": "weekly_deals"}]}


async def _runs(pool: asyncpg.Pool, campaign_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT id, status, workflow_id FROM runs WHERE campaign_id = $1::uuid ORDER BY created_at", campaign_id
    )


async def test_a_recurring_campaign_runs_on_its_schedule_and_stops_when_deleted(
    make_tenant: MakeTenant, pool: asyncpg.Pool, temporal_client: Client
) -> None:
    tenant = await make_tenant(customers=10)
    campaign_id = (await tenant.http.post(tenant.url("/campaigns"), json=CAMPAIGN)).json()["id"]
    path = tenant.url(f"/campaigns/{campaign_id}/schedule")

    assert (await tenant.http.get(path)).status_code == 404
    created = await tenant.http.put(path, json={"interval_seconds": 2, "time_zone": "America/Chicago"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["interval_seconds"] == [2] and body["time_zone"] == "America/Chicago" and not body["paused"]

    async def two_completed() -> bool:
        return sum(1 for r in await _runs(pool, campaign_id) if r["status"] == "completed") >= 2

    await until(two_completed, within=30, what="two scheduled runs to complete")
    runs = await _runs(pool, campaign_id)
    # Each occurrence is a normal run: same id scheme, same API.
    first = runs[0]
    assert first["workflow_id"] == f"run:{tenant.slug}:{campaign_id}:{first['id']}"
    assert (await wait_for_run(tenant, str(first["id"])))["counts"]["planned"] == 10

    paused = await tenant.http.post(f"{path}:pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    assert (await tenant.http.post(f"{path}:resume")).json()["paused"] is False

    assert (await tenant.http.delete(path)).status_code == 204

    async def no_occurrence_open() -> bool:
        # An occurrence that started just before the delete registers its run, then finishes.
        running = await temporal_client.count_workflows(f'CampaignId = "{campaign_id}" AND ExecutionStatus = "Running"')
        return running.count == 0 and all(r["status"] in TERMINAL_STATUSES for r in await _runs(pool, campaign_id))

    await until(no_occurrence_open, within=30, what="the last occurrence before the delete to finish")
    settled = len(await _runs(pool, campaign_id))
    # An observation window of two intervals: the behaviour under test is that no run starts in it.
    await asyncio.sleep(4.5)
    assert len(await _runs(pool, campaign_id)) == settled, "no runs after the schedule is deleted"
    assert (await tenant.http.get(path)).status_code == 404


async def test_schedule_bad_input_is_rejected_with_the_field_named(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(customers=0)
    campaign_id = (await tenant.http.post(tenant.url("/campaigns"), json=CAMPAIGN)).json()["id"]
    path = tenant.url(f"/campaigns/{campaign_id}/schedule")
    cases = [
        ({"cron": "0 10 * * MON", "interval_seconds": 60}, "give exactly one of cron and interval_seconds"),
        ({}, "give exactly one of cron and interval_seconds"),
        ({"cron": "every monday"}, "cron: 'every monday' is not a cron expression"),
        ({"cron": "99 99 * * *"}, "schedule rejected by Temporal"),
        ({"interval_seconds": 0}, "body.interval_seconds: Input should be greater than or equal to 1"),
        ({"interval_seconds": 60, "time_zone": "Mars/Olympus"}, "body.time_zone: unknown time zone 'Mars/Olympus'"),
    ]
    for body, expected in cases:
        response = await tenant.http.put(path, json=body)
        assert response.status_code == 422, (body, response.text)
        assert expected in response.json()["detail"], (body, response.json())
    missing = await tenant.http.put(
        tenant.url("/campaigns/0b7c6f9e-8f5e-4a5b-9a43-5f0f5c1d2e3f/schedule"), json={"interval_seconds": 60}
    )
    assert missing.status_code == 404
    assert (await tenant.http.post(f"{path}:pause")).status_code == 404


async def test_a_cron_schedule_reads_back_as_written(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(customers=0)
    campaign_id = (await tenant.http.post(tenant.url("/campaigns"), json=CAMPAIGN)).json()["id"]
    path = tenant.url(f"/campaigns/{campaign_id}/schedule")
    created = await tenant.http.put(path, json={"cron": "0 10 * * MON", "time_zone": "Europe/Paris"})
    assert created.status_code == 201, created.text
    # Temporal stores the expression as a calendar; the API still answers what was written.
    assert created.json()["cron"] == ["0 10 * * MON"]
    changed = await tenant.http.put(path, json={"cron": "30 9 * * *", "time_zone": "Europe/Paris"})
    assert changed.status_code == 200 and changed.json()["cron"] == ["30 9 * * *"]
    assert (await tenant.http.get(path)).json()["cron"] == ["30 9 * * *"]
    assert (await tenant.http.put(path, json={"interval_seconds": 3600})).json()["cron"] == []
    assert (await tenant.http.delete(path)).status_code == 204
