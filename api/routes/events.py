"""Customer events in: purchases and custom events, idempotent by event id, attributed to the
message (or holdout) that preceded them within the tenant's attribution window."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import PoolDep, TenantDep
from api.schemas import EventsAccepted, EventsIn
from core.engagement.conversions import record_events
from core.tenants.config_schema import Engagement
from core.tenants.config_store import get_config

router = APIRouter(prefix="/v1/tenants/{tenant}/events", tags=["events"])


@router.post("", response_model=EventsAccepted)
async def post_events(tenant: TenantDep, body: EventsIn, pool: PoolDep) -> EventsAccepted:
    """Store customer events; a replayed event id changes nothing and is listed in `duplicates`;
    invalid rows are reported by index and field (`events[2].at: …`) and the rest are stored."""
    found = await get_config(pool, tenant)
    # A tenant without a configuration has sent nothing to attribute to: the default window.
    engagement = found[1].engagement if found else Engagement()
    report = await record_events(
        pool, tenant, body.events, lambda i, error: f"events[{i}].{error}", engagement.attribution_window_days
    )
    return EventsAccepted.model_validate(report, from_attributes=True)
