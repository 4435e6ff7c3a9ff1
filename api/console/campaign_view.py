"""The campaign page as every console action that ends on it renders it: the campaign with its
editor, runs, schedule and send-time panel, plus what the action adds (errors, a test-send
result, suggestions). Its own module so the campaign and optimisation pages both use it
without importing each other."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.responses import HTMLResponse
from markupsafe import Markup
from temporalio.service import RPCError

from api import deps
from api.console import campaign_form, charts
from api.console.common import INVALID, Console, problems
from api.run_pages import runs_page
from api.schemas import SendTimes
from core.campaigns import service as campaign_service
from core.campaigns.store import CampaignRecord
from core.common.refusals import NotFound
from core.optimisation import service as optimisation
from core.runs.models import ACTIVE_STATUSES

_NOTICES = {
    "saved": "Campaign saved.",
    "scheduled": "Schedule saved.",
    "unscheduled": "Schedule removed.",
    "archived": "Campaign archived; it starts no new runs.",
}


async def path_campaign(ctx: Console, campaign_id: str) -> CampaignRecord:
    """The campaign named in the path (404 as the API answers it)."""
    return await deps.get_path_campaign(ctx.tenant, ctx.pool, campaign_id)


async def editor_context(ctx: Console) -> dict[str, Any]:
    """What the editor offers: the tenant's named segments, templates and enabled channels."""
    config = await deps.get_tenant_config(ctx.tenant, ctx.pool)
    return {
        "segments": sorted(config.segments),
        "template_names": sorted(config.templates),
        "enabled_channels": config.channels.enabled(),
    }


def hour_bars(preview: SendTimes) -> Markup:
    """The optimised recipients' chosen local hours, one bar per hour 0-23, as inline SVG."""
    return charts.count_columns(
        [(f"{h.hour:02d}", h.recipients) for h in preview.hours], "Recipients by chosen local hour"
    )


async def send_time_panel(ctx: Console, campaign: CampaignRecord) -> dict[str, Any]:
    """The campaign page's send-time preview: shown when the campaign uses `send_time: optimal`
    or the marketer asks for it (`?send_times=1`); errors are shown in its panel."""
    wanted = campaign.spec.send_time is not None or ctx.request.query_params.get("send_times") == "1"
    if not wanted:
        return {"send_times": None}
    try:
        config = await deps.get_tenant_config(ctx.tenant, ctx.pool)
        found = await optimisation.preview_campaign_send_times(ctx.pool, ctx.tenant, campaign, config)
    except INVALID as exc:
        return {"send_times": None, "send_times_errors": problems(exc)}
    preview = SendTimes(campaign_id=campaign.id, **found.model_dump())
    return {"send_times": preview, "send_times_chart": hour_bars(preview)}


async def campaign_page(ctx: Console, campaign: CampaignRecord, status: int = 200, **extra: Any) -> HTMLResponse:
    """The campaign page, with `extra` (an action's errors or result) in its context."""
    runs = await runs_page(ctx.pool, ctx.tenant, status=None, campaign_id=uuid.UUID(campaign.id), limit=50, cursor=None)
    try:
        handle = await campaign_service.existing_schedule(ctx.temporal, ctx.tenant, campaign.id)
        schedule = await campaign_service.describe_schedule(handle, campaign.id)
    except (NotFound, RPCError):  # none, or Temporal cannot say right now
        schedule = None
    extra.setdefault("values", campaign_form.from_spec(campaign.spec))
    extra.setdefault("errors", [])
    extra.setdefault("field_errors", {})
    return ctx.render(
        "campaign.html",
        status,
        campaign=campaign,
        runs=runs.items,
        schedule=schedule,
        active={s.value for s in ACTIVE_STATUSES},
        notice=_NOTICES.get(ctx.request.query_params.get("done", "")),
        remote_images=ctx.request.query_params.get("images") == "1",
        **(await editor_context(ctx)),
        **(await send_time_panel(ctx, campaign)),
        **extra,
    )
