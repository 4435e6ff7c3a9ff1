"""Runs: start a campaign run (a CampaignRunWorkflow on the tenant's queue) and watch it."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException
from opentelemetry import trace
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError

from api.deps import PoolDep, TemporalDep, TenantDep
from api.routes.campaigns import parse_campaign_id
from api.schemas import Run, RunCounts, RunStarted
from core.campaigns import CampaignSpec
from core.config_store import get_config
from core.db import tenant_tx
from core.runs import CampaignRunInput, run_workflow_id
from core.temporal import CAMPAIGN_ID, TENANT_ID
from core.tenant_config import task_queue_for
from workflows.campaign_run import CampaignRunWorkflow

router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["runs"])

_TERMINAL = {"completed", "cancelled", "failed"}
_FROM_TEMPORAL = {
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.TERMINATED: "failed",
    WorkflowExecutionStatus.TIMED_OUT: "failed",
    WorkflowExecutionStatus.CANCELED: "cancelled",
}
_LEDGER_COUNTS_SQL = """
SELECT channel, coalesce(variant, '') AS variant, status, coalesce(reason, '') AS reason, count(*) AS n
FROM deliveries WHERE tenant_id = $1 AND run_id = $2 GROUP BY 1, 2, 3, 4
"""


@router.post("/campaigns/{campaign_id}/runs", status_code=202, response_model=RunStarted)
async def start_run(tenant: TenantDep, campaign_id: str, pool: PoolDep, temporal: TemporalDep) -> RunStarted:
    cid = parse_campaign_id(campaign_id)
    async with tenant_tx(pool, tenant) as conn:
        row = await conn.fetchrow(
            "SELECT definition FROM campaigns WHERE tenant_id = $1 AND id = $2", tenant, cid
        )
    if row is None:
        raise HTTPException(404, f"campaign '{campaign_id}' not found")
    if await get_config(pool, tenant) is None:
        raise HTTPException(409, f"tenant '{tenant}' has no configuration yet")
    spec = CampaignSpec.model_validate(row["definition"])
    run_id = str(uuid.uuid4())
    workflow_id = run_workflow_id(tenant, str(cid), run_id)
    trace.get_current_span().set_attributes(
        {"pennant.tenant": tenant, "pennant.campaign": str(cid), "pennant.run": run_id}
    )
    async with tenant_tx(pool, tenant) as conn:
        await conn.execute(
            """INSERT INTO runs (tenant_id, id, campaign_id, workflow_id, send_at)
               VALUES ($1, $2, $3, $4, $5)""",
            tenant, uuid.UUID(run_id), cid, workflow_id, spec.send_at,
        )
    try:
        await temporal.start_workflow(
            CampaignRunWorkflow.run,
            CampaignRunInput(tenant=tenant, campaign_id=str(cid), run_id=run_id, send_at=spec.send_at),
            id=workflow_id,
            task_queue=task_queue_for(tenant),
            search_attributes=TypedSearchAttributes(
                [SearchAttributePair(TENANT_ID, tenant), SearchAttributePair(CAMPAIGN_ID, str(cid))]
            ),
            static_summary=f"{spec.name} · {tenant}",
            static_details=f"campaign {cid}, run {run_id}, channels {', '.join(spec.channels)}",
        )
    except RPCError as exc:
        async with tenant_tx(pool, tenant) as conn:
            await conn.execute("DELETE FROM runs WHERE tenant_id = $1 AND id = $2", tenant, uuid.UUID(run_id))
        raise HTTPException(503, f"could not start the run on Temporal: {exc.message}") from exc
    return RunStarted(run_id=run_id, workflow_id=workflow_id, status="scheduled")


async def _counts(conn, tenant: str, run_id: uuid.UUID, planned: int | None) -> RunCounts:  # type: ignore[no-untyped-def]
    counts = RunCounts(planned=planned or 0)
    for r in await conn.fetch(_LEDGER_COUNTS_SQL, tenant, run_id):
        n, status = r["n"], r["status"]
        setattr(counts, status, getattr(counts, status) + n)
        if status == "skipped":
            counts.skipped_by_reason[r["reason"]] = counts.skipped_by_reason.get(r["reason"], 0) + n
        for group, key in ((counts.by_variant, r["variant"]), (counts.by_channel, r["channel"])):
            bucket = group.setdefault(key, {"sent": 0, "failed": 0, "skipped": 0})
            bucket[status] += n
    return counts


def parse_run_id(run_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(run_id)
    except ValueError:
        raise HTTPException(404, f"run '{run_id}' not found") from None


@router.get("/runs/{run_id}", response_model=Run)
async def get_run(tenant: TenantDep, run_id: str, pool: PoolDep, temporal: TemporalDep) -> Run:
    rid = parse_run_id(run_id)
    async with tenant_tx(pool, tenant) as conn:
        row = await conn.fetchrow("SELECT * FROM runs WHERE tenant_id = $1 AND id = $2", tenant, rid)
        if row is None:
            raise HTTPException(404, f"run '{run_id}' not found")
        counts = await _counts(conn, tenant, rid, row["planned"])
    status = row["status"]
    if status not in _TERMINAL:
        # The workflow may have ended without reaching its own bookkeeping (terminated, timed out).
        try:
            desc = await temporal.get_workflow_handle(row["workflow_id"]).describe()
            status = _FROM_TEMPORAL.get(desc.status, status) if desc.status else status
        except RPCError:
            pass
    return Run(
        id=str(row["id"]),
        campaign_id=str(row["campaign_id"]),
        workflow_id=row["workflow_id"],
        status=status,
        config_version=row["config_version"],
        counts=counts,
        send_at=row["send_at"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error=row["error"],
    )
