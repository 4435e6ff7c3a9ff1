"""The console's optimisation views: a campaign's send-time preview (chosen local hours as a
bar chart, with the fallback count) and ranked text suggestions, and a run's winner test:
its state, Pick-winner per variant and Extend. Each calls the JSON API's own route function."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup

from api import deps
from api.console import charts
from api.console.common import INVALID, PREFIX, Console, ConsoleDep, checked_form, first, problems, redirect
from api.routes import optimisation as optimisation_routes
from api.routes import runs as run_routes
from api.schemas import SendTimes, SuggestRequest
from core.campaigns.store import CampaignRecord
from core.experiments.models import ExtendTestInput, PickWinnerInput

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def hour_bars(preview: SendTimes) -> Markup:
    """The optimised recipients' chosen local hours, one bar per hour 0-23, as inline SVG."""
    return charts.count_columns(
        [(f"{h.hour:02d}", h.recipients) for h in preview.hours], "Recipients by chosen local hour"
    )


async def campaign_panels(ctx: Console, campaign: CampaignRecord) -> dict[str, Any]:
    """The campaign page's send-time preview: shown when the campaign uses `send_time: optimal`
    or the marketer asks for it (`?send_times=1`); errors are shown in its panel."""
    wanted = campaign.spec.send_time is not None or ctx.request.query_params.get("send_times") == "1"
    if not wanted:
        return {"send_times": None}
    try:
        config = await deps.get_tenant_config(ctx.tenant, ctx.pool)
        preview = await optimisation_routes.preview_campaign_send_times(ctx.tenant, campaign, config, ctx.pool)
    except INVALID as exc:
        return {"send_times": None, "send_times_errors": problems(exc)}
    return {"send_times": preview, "send_times_chart": hour_bars(preview)}


@router.post("/campaigns/{campaign_id}/suggest", response_class=HTMLResponse)
async def suggest(ctx: ConsoleDep, campaign_id: str) -> Response:
    """Ranked subject lines (or SMS bodies) with their reasons; nothing is applied to the campaign."""
    from api.console.campaign_pages import _campaign_page  # that module imports this one

    form = await checked_form(ctx.request, ctx.session)
    campaign = await deps.get_path_campaign(ctx.tenant, ctx.pool, campaign_id)
    data = {k: first(form, k) for k in ("channel", "variant", "engine") if first(form, k)}
    try:
        body = SuggestRequest.model_validate(data)
        config = await deps.get_tenant_config(ctx.tenant, ctx.pool)
        secrets = deps.get_secrets(ctx.request)
        found = await optimisation_routes.suggest_campaign_texts(ctx.tenant, campaign, config, ctx.pool, secrets, body)
    except INVALID as exc:
        status = exc.status_code if isinstance(exc, HTTPException) else 422
        return await _campaign_page(ctx, campaign, status, suggest_errors=problems(exc))
    return await _campaign_page(ctx, campaign, suggestions=found)


@router.post("/runs/{run_id}/pick-winner", response_class=HTMLResponse)
async def pick_winner(ctx: ConsoleDep, run_id: str, request: Request) -> Response:
    """Decide the run's winner test now for the chosen variant (the API's pick-winner)."""
    form = await checked_form(request, ctx.session)
    return await _experiment_action(ctx, run_id, request, "pick-winner", {"variant": first(form, "variant")})


@router.post("/runs/{run_id}/extend-test", response_class=HTMLResponse)
async def extend_test(ctx: ConsoleDep, run_id: str, request: Request) -> Response:
    """Wait longer before deciding the run's winner test (the API's extend-test)."""
    form = await checked_form(request, ctx.session)
    return await _experiment_action(ctx, run_id, request, "extend-test", {"by": first(form, "by")})


async def _experiment_action(
    ctx: Console, run_id: str, request: Request, action: str, data: dict[str, Any]
) -> Response:
    from api.console.run_pages import _run_page  # that module imports this one

    run = await deps.get_path_run(ctx.tenant, ctx.pool, run_id)
    try:
        if action == "pick-winner":
            await run_routes.pick_winner(ctx.tenant, run, PickWinnerInput.model_validate(data), ctx.pool, ctx.temporal)
        else:
            await run_routes.extend_test(ctx.tenant, run, ExtendTestInput.model_validate(data), ctx.pool, ctx.temporal)
    except INVALID as exc:
        status = exc.status_code if isinstance(exc, HTTPException) else 422
        return await _run_page(ctx, run, request, status, experiment_errors=problems(exc))
    return redirect(f"/runs/{run_id}?done={action}")
