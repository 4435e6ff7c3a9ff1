"""The run page: live status and counts (polled from the API's run view), pause, resume and
cancel, the deliveries table with filters and paging, the workflow in the Temporal UI, and the
results per variant with lift over the holdout and charts."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ValidationError

from api import deps
from api.console import charts
from api.console.common import INVALID, PREFIX, Console, ConsoleDep, checked_form, problems, redirect
from api.run_pages import deliveries_page
from api.schemas import Run
from core.results import report as results
from core.results import service as result_service
from core.runs import service as run_service
from core.runs.models import TERMINAL_STATUSES
from core.runs.store import RunRecord
from core.tenants.config_schema import ChannelName

router = APIRouter(prefix=PREFIX, include_in_schema=False)

_CONTROLS: tuple[run_service.Action, ...] = ("pause", "resume", "cancel")
PAGE_SIZE = 50


class DeliveryFilters(BaseModel):
    """The deliveries table's filters, validated as the API's query parameters are."""

    status: Literal["sent", "failed", "skipped"] | None = None
    reason: str | None = None
    channel: ChannelName | None = None
    variant: str | None = None
    cursor: str | None = None


async def _run(ctx: Console, run_id: str) -> RunRecord:
    return await deps.get_path_run(ctx.tenant, ctx.pool, run_id)


@router.get("/runs/{run_id}/progress")
async def progress(ctx: ConsoleDep, run_id: str) -> JSONResponse:
    """The run as GET /runs/{id} answers it now (the page polls this while the run is live)."""
    try:
        run = await _run(ctx, run_id)
    except HTTPException as exc:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
    view = Run.of(await run_service.run_view(ctx.pool, ctx.temporal, ctx.tenant, run))
    return JSONResponse({**view.model_dump(mode="json"), "finished": view.status in TERMINAL_STATUSES})


def _results_context(found: results.ResultsRecord, series: results.SeriesRecord) -> dict[str, Any]:
    conversion = next((c for c in found.comparisons if c.metric == "conversion"), None)
    rows = [(g.variant or g.kind, g.rates.conversions) for g in found.groups]
    return {
        "results": found,
        "conversion": conversion,
        "lifts": {lift.variant: lift for lift in conversion.lifts} if conversion else {},
        "charts": [
            charts.rate_bars(rows, "Conversion rate by group"),
            *(
                charts.cumulative_lines(series.groups, metric, f"{metric.capitalize()} over time")
                for metric in ("sends", "opens", "clicks", "conversions")
            ),
        ],
    }


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run_page(ctx: ConsoleDep, run_id: str, request: Request) -> HTMLResponse:
    """The run: live progress, controls, deliveries and results."""
    run = await _run(ctx, run_id)
    return await _run_page(ctx, run, request)


async def _run_page(ctx: Console, run: RunRecord, request: Request, status: int = 200, **extra: Any) -> HTMLResponse:
    view = Run.of(await run_service.run_view(ctx.pool, ctx.temporal, ctx.tenant, run))
    campaign = await deps.get_path_campaign(ctx.tenant, ctx.pool, run.campaign_id)
    query = {k: v for k, v in request.query_params.items() if v}
    filter_errors: list[str] = []
    deliveries = None
    try:
        filters = DeliveryFilters.model_validate(query)
        deliveries = await deliveries_page(
            ctx.pool, ctx.tenant, run.id, limit=PAGE_SIZE, cursor=filters.cursor, status=filters.status,
            reason=filters.reason, channel=filters.channel, variant=filters.variant,
        )  # fmt: skip
    except (ValidationError, HTTPException) as exc:
        filter_errors = problems(exc)
        filters = DeliveryFilters()
    return ctx.render(
        "run.html",
        status,
        run=view,
        campaign=campaign,
        finished=view.status in TERMINAL_STATUSES,
        deliveries=deliveries,
        filters=filters,
        filter_errors=filter_errors,
        temporal_url=ctx.temporal_ui_url(run.workflow_id),
        **await _results(ctx, run),
        **extra,
    )


async def _results(ctx: Console, run: RunRecord) -> dict[str, Any]:
    """The run's results and charts, once it has recipients in the ledger."""
    found = await result_service.run_results(ctx.pool, ctx.tenant, run, results.DEFAULT_CONVERSION_EVENT)
    if not any(g.recipients for g in found.groups):
        return {"results": None}
    series = await result_service.run_series(ctx.pool, ctx.tenant, run, results.DEFAULT_CONVERSION_EVENT)
    return _results_context(found, series)


@router.post("/runs/{run_id}/{action}", response_class=HTMLResponse)
async def control(ctx: ConsoleDep, run_id: str, action: str, request: Request) -> Response:
    """Pause, resume or cancel the run, as the API's control routes do (a refusal is shown)."""
    await checked_form(request, ctx.session)
    run = await _run(ctx, run_id)
    chosen = next((a for a in _CONTROLS if a == action), None)
    if chosen is None:
        raise HTTPException(404, f"no run action '{action}'")
    try:
        await run_service.control_run(ctx.pool, ctx.temporal, ctx.tenant, run, chosen)
    except INVALID as exc:
        return await _run_page(ctx, run, request, 409, action_error=problems(exc)[0])
    return redirect(f"/runs/{run_id}")
