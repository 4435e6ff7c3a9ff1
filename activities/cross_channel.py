"""Activities of a run's cross-channel fallback: whether the run has one, and, once its wait is
over, who gets it (recipients reached on the first channel who did not engage) and when (the
fallback channel's quiet hours, as waves)."""

from __future__ import annotations

from temporalio import activity

from activities.audience import assign_waves, run_waves
from activities.lookups import campaign_spec, pinned_config
from activities.names import FALLBACK_DUE, PLAN_FALLBACK
from activities.pooled import PooledActivities
from core.campaigns.cross_channel import exclude_engaged
from core.infra.db import tenant_tx
from core.infra.telemetry import tag_current_span
from core.runs.models import FallbackDue, FallbackPlan, PlanAudienceInput

# The fallback's waves replace the run's first ones (that delivery is over by now).
_CLEAR_WAVES_SQL = "UPDATE run_recipients SET send_after = NULL WHERE tenant_id = $1 AND run_id = $2::uuid"


class CrossChannelActivities(PooledActivities):
    """The fallback of a run: is there one, and plan it (recipients and waves)."""

    @activity.defn(name=FALLBACK_DUE)
    async def fallback_due(self, inp: PlanAudienceInput) -> FallbackDue:
        """The campaign's fallback channel and wait, or an empty answer when it has none."""
        tag_current_span(tenant=inp.tenant, campaign=inp.campaign_id, run=inp.run_id)
        async with tenant_tx(self.pool, inp.tenant) as conn:
            spec = await campaign_spec(conn, inp.tenant, inp.campaign_id)
        if spec.fallback is None:
            return FallbackDue()
        return FallbackDue(channel=spec.fallback.channel, after=spec.fallback.after_delta)

    @activity.defn(name=PLAN_FALLBACK)
    async def plan_fallback(self, inp: PlanAudienceInput) -> FallbackPlan:
        """Record who is not to get the fallback (engaged, or never reached), and group the run's
        recipients into waves by the fallback channel's quiet hours; idempotent."""
        tag_current_span(tenant=inp.tenant, campaign=inp.campaign_id, run=inp.run_id)
        config = await pinned_config(self.pool, inp.tenant, inp.config_version)
        async with tenant_tx(self.pool, inp.tenant) as conn:
            spec = await campaign_spec(conn, inp.tenant, inp.campaign_id)
            assert spec.fallback is not None, "fallback_due said the campaign has one"
            engaged, not_reached = await exclude_engaged(conn, inp.tenant, inp.run_id, spec.fallback, spec.channels)
            await conn.execute(_CLEAR_WAVES_SQL, inp.tenant, inp.run_id)
            # The same quiet-hours waves a run on the fallback channel alone would get, from now.
            alone = spec.model_copy(update={"channels": [spec.fallback.channel], "local_send_time": None})
            await assign_waves(conn, inp, alone, config)
            waves = await run_waves(conn, inp)
        recipients = sum(w.recipients for w in waves) - engaged - not_reached
        return FallbackPlan(
            channel=spec.fallback.channel, recipients=recipients, engaged=engaged, not_reached=not_reached, waves=waves
        )
