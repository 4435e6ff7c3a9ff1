"""Removal is removal: a removed tenant's schedules are deleted, its waiting runs cancelled, its
secrets destroyed and its keys revoked, and the trail says so."""

from __future__ import annotations

import base64
import datetime as dt

import asyncpg
import httpx
import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from api.console import session as sessions
from core.infra.db import tenant_tx
from core.infra.temporal import schedule_id
from core.tenants.keys import lookup_key
from tests.helpers.runs import create_campaign, start_run
from tests.helpers.tenants import MakeTenant
from tests.helpers.waiting import until


async def test_removing_a_tenant_cancels_its_runs_deletes_its_schedules_and_destroys_its_secrets(
    make_tenant: MakeTenant, api_url: str, admin_key: str, pool: asyncpg.Pool, temporal_client: Client
) -> None:
    tenant = await make_tenant(customers=5)
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=6)).isoformat()
    waiting = await start_run(tenant, await create_campaign(tenant, name="Later", send_at=later))
    recurring = await create_campaign(tenant, name="Weekly")
    every_week = {"cron": "0 9 * * MON", "time_zone": "UTC"}
    assert (await tenant.http.put(tenant.url(f"/campaigns/{recurring}/schedule"), json=every_week)).status_code == 201
    assert (await tenant.http.put(tenant.url("/secrets/EXTRA"), json={"value": "to-be-destroyed"})).status_code == 201
    source = await tenant.http.post(tenant.url("/sources"), json={"label": "web shop"})
    assert source.status_code == 201, source.text
    write_key = {"Authorization": "Basic " + base64.b64encode(f"{source.json()['key']}:".encode()).decode()}
    track = {"type": "track", "userId": "u1", "event": "Product Viewed"}
    async with httpx.AsyncClient(base_url=api_url, headers=write_key) as site:
        assert (await site.post("/v1/track", json=track)).status_code == 200
    principal = await lookup_key(pool, tenant.key)
    assert principal is not None
    console_session = sessions.new_session(principal)
    await sessions.record(pool, console_session)
    async with tenant_tx(pool, tenant.slug) as conn:
        workflow_id = await conn.fetchval("SELECT workflow_id FROM runs WHERE id = $1::uuid", waiting)

    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {admin_key}"}) as admin:
        assert (await admin.delete(tenant.url(""))).status_code == 204

    async def cancelled() -> bool:
        described = await temporal_client.get_workflow_handle(workflow_id).describe()
        return described.status == WorkflowExecutionStatus.CANCELED

    await until(cancelled, within=30, what="the removed tenant's waiting run to be cancelled")
    with pytest.raises(RPCError):
        await temporal_client.get_schedule_handle(schedule_id(tenant.slug, recurring)).describe()
    async with tenant_tx(pool, tenant.slug) as conn:
        assert await conn.fetchval("SELECT count(*) FROM tenant_secrets") == 0
        audit = await conn.fetch("SELECT actor, detail FROM audit_log WHERE action = 'tenant.remove'")
    assert (await tenant.http.get(tenant.url("/config"))).status_code == 401, "its key is revoked"
    async with httpx.AsyncClient(base_url=api_url, headers=write_key) as site:
        assert (await site.post("/v1/track", json=track)).status_code == 401, "its source key is revoked"
    async with tenant_tx(pool, tenant.slug) as conn:
        assert await conn.fetchval("SELECT count(*) FROM console_sessions WHERE revoked_at IS NULL") == 0
    # A restore brings back the data, never the keys.
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {admin_key}"}) as admin:
        assert (await admin.post(f"/v1/tenants/{tenant.slug}:restore")).status_code == 204
    async with httpx.AsyncClient(base_url=api_url, headers=write_key) as site:
        assert (await site.post("/v1/track", json=track)).status_code == 401, "a restore brings back no source key"
    assert len(audit) == 1 and audit[0]["actor"].startswith("admin key ")
    assert audit[0]["detail"]["schedules_deleted"] == 1 and audit[0]["detail"]["workflows_cancelled"] >= 1
