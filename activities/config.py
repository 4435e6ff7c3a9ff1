"""Config loading: pin the tenant's current config version for a run."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.names import LOAD_CONFIG
from activities.pooled import PooledActivities
from core.infra.telemetry import tag_current_span
from core.runs.models import ConfigPin, LoadConfigInput
from core.tenants.config_store import get_config


class ConfigActivities(PooledActivities):
    """Config loading for runs."""

    @activity.defn(name=LOAD_CONFIG)
    async def load_config(self, inp: LoadConfigInput) -> ConfigPin:
        """Pin the tenant's current config version and the knobs a run needs."""
        tag_current_span(tenant=inp.tenant)
        found = await get_config(self.pool, inp.tenant)
        if found is None:
            raise ApplicationError(f"tenant '{inp.tenant}' has no config", non_retryable=True)
        version, config = found
        return ConfigPin(
            version=version,
            batch_size=config.execution.batch_size,
            max_concurrent_batches=config.execution.max_concurrent_batches,
        )
