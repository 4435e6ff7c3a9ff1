"""The run's row in PostgreSQL: status, pinned config version, planned count, timestamps."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.names import MARK_RUN, REGISTER_RUN
from activities.pooled import PooledActivities
from core.campaigns.schedules import RegisterRunInput
from core.campaigns.store import get_campaign
from core.infra.db import tenant_tx
from core.infra.metrics import RUN_TRANSITIONS
from core.infra.telemetry import tag_current_span
from core.runs import store as run_store
from core.runs.models import MarkRunInput


class RunStatusActivities(PooledActivities):
    """Activities that keep a run's row current as its workflow goes."""

    @activity.defn(name=MARK_RUN)
    async def mark_run(self, inp: MarkRunInput) -> None:
        """Set the run's status (and pinned version, planned count, error, send time)."""
        tag_current_span(tenant=inp.tenant, run=inp.run_id)
        async with tenant_tx(self.pool, inp.tenant) as conn:
            changed = await run_store.mark_run(conn, inp)
        if changed:  # a transition, not every write (a run is marked running twice as it starts)
            RUN_TRANSITIONS.labels(inp.tenant, inp.status).inc()

    @activity.defn(name=REGISTER_RUN)
    async def register_run(self, inp: RegisterRunInput) -> None:
        """Record a scheduled occurrence as a run (idempotent: a retry finds the row there)."""
        tag_current_span(tenant=inp.tenant, campaign=inp.campaign_id, run=inp.run_id)
        async with tenant_tx(self.pool, inp.tenant) as conn:
            campaign = await get_campaign(conn, inp.tenant, inp.campaign_id)
            if campaign is None or not campaign.startable:
                raise ApplicationError(
                    f"campaign {inp.campaign_id} is {'archived' if campaign else 'gone'}; not starting a run",
                    non_retryable=True,
                )
            await run_store.insert_run(conn, inp.tenant, inp.run_id, inp.campaign_id, inp.workflow_id)
