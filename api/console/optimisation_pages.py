"""The console's optimisation views: a campaign's send-time preview (chosen local hours as a
bar chart, with the fallback count) and ranked text suggestions, and a run's winner test:
its state, Pick-winner per variant and Extend. Each calls the service the API calls."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from api import deps
from api.console import campaign_view as view
from api.console.common import INVALID, PREFIX, Console, ConsoleDep, checked_form, first, problems, redirect, status_of
from api.schemas import Suggestions, SuggestRequest
from core.experiments.models import ExtendTestInput, PickWinnerInput
from core.optimisation import service as optimisation
from core.runs import service as run_service

router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.post("/campaigns/{campaign_id}/suggest", response_class=HTMLResponse)
async def suggest(ctx: ConsoleDep, campaign_id: str) -> Response:
    """Ranked subject lines (or SMS bodies) with their reasons; nothing is applied to the campaign."""
    form = await checked_form(ctx.request, ctx.session)
    campaign = await view.path_campaign(ctx, campaign_id)
    data = {k: first(form, k) for k in ("channel", "variant", "engine") if first(form, k)}
    try:
        body = SuggestRequest.model_validate(data)
        config = await deps.get_tenant_config(ctx.tenant, ctx.pool)
        secrets = deps.get_secrets(ctx.request)
        record = await optimisation.suggest_campaign_texts(
            ctx.pool, secrets, ctx.tenant, campaign, config,
            channel=body.channel, variant=body.variant, engine=body.engine, limit=body.limit,
        )  # fmt: skip
    except INVALID as exc:
        return await view.campaign_page(ctx, campaign, status_of(exc), suggest_errors=problems(exc))
    return await view.campaign_page(ctx, campaign, suggestions=Suggestions(**record.model_dump()))


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
            pick = PickWinnerInput.model_validate(data)
            await run_service.control_run(ctx.pool, ctx.temporal, ctx.tenant, run, "pick-winner", pick)
        else:
            change = ExtendTestInput.model_validate(data)
            await run_service.control_run(ctx.pool, ctx.temporal, ctx.tenant, run, "extend-test", change)
    except INVALID as exc:
        status = status_of(exc)
        return await _run_page(ctx, run, request, status, experiment_errors=problems(exc))
    return redirect(f"/runs/{run_id}?done={action}")
