"""Campaign pages: the list with each campaign's last run and live progress, the editor with
its segment estimate and variant previews, test sends, starting runs and schedules. Every
read and write goes through the same services as the API (core/campaigns/service.py), so the
console shows and accepts exactly what the API does."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError

from api import deps
from api.console import campaign_form
from api.console import campaign_view as view
from api.console.common import (
    INVALID,
    PREFIX,
    Console,
    ConsoleDep,
    check_header_csrf,
    checked_form,
    first,
    problems,
    redirect,
    status_of,
)
from api.errors import refusal_status
from api.run_pages import runs_page
from api.schemas import (
    Campaign,
    CustomerRef,
    Preview,
    PreviewRequest,
    SegmentEstimate,
    SegmentEstimateRequest,
    TestSendRequest,
)
from core.campaigns import service as campaign_service
from core.campaigns.schedules import RecurrenceSpec
from core.campaigns.spec import CampaignSpec
from core.campaigns.store import CampaignRecord
from core.common.refusals import Refused
from core.customers import service as customer_service
from core.runs.models import ACTIVE_STATUSES

router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("/campaigns", response_class=HTMLResponse)
async def campaigns_page(ctx: ConsoleDep) -> HTMLResponse:
    """Every campaign with its status and last run (live progress while it is active)."""
    campaigns = [Campaign.of(r) for r in await campaign_service.list_campaigns(ctx.pool, ctx.tenant)]
    page = await runs_page(ctx.pool, ctx.tenant, status=None, campaign_id=None, limit=200, cursor=None)
    last_run: dict[str, Any] = {}
    for run in page.items:  # newest first: the first seen is the campaign's last
        last_run.setdefault(run.campaign_id, run)
    return ctx.render(
        "campaigns.html", campaigns=campaigns, last_run=last_run, active={s.value for s in ACTIVE_STATUSES}
    )


@router.get("/campaigns/new", response_class=HTMLResponse)
async def new_campaign_page(ctx: ConsoleDep) -> HTMLResponse:
    """An empty editor (one variant, email, the first named segment)."""
    editor = await view.editor_context(ctx)
    values = campaign_form.form_values({})
    values["channels"] = editor["enabled_channels"][:1]
    values["segment_name"] = editor["segments"][0] if editor["segments"] else ""
    values["tracking"] = True
    return ctx.render("campaign_edit.html", campaign=None, values=values, errors=[], field_errors={}, **editor)


async def _save(ctx: Console, campaign: CampaignRecord | None) -> Response:
    form = await checked_form(ctx.request, ctx.session)
    values = campaign_form.form_values(form)
    data, errors = campaign_form.body(values)
    if not errors:
        try:
            spec = CampaignSpec.model_validate(data)
            config = await deps.get_tenant_config(ctx.tenant, ctx.pool)
            if campaign is None:
                saved = await campaign_service.create_campaign(ctx.pool, ctx.tenant, config, spec)
            else:
                saved = await campaign_service.update_campaign(ctx.pool, ctx.tenant, campaign.id, config, spec)
            return redirect(f"/campaigns/{saved.id}?done=saved")
        except INVALID as exc:
            errors = problems(exc)
    return ctx.render(
        "campaign_edit.html",
        422,
        campaign=campaign,
        values=values,
        errors=errors,
        field_errors=campaign_form.field_errors(errors),
        **await view.editor_context(ctx),
    )


@router.post("/campaigns", response_class=HTMLResponse)
async def create_campaign(ctx: ConsoleDep) -> Response:
    """Create a campaign from the editor; errors are shown at their fields."""
    return await _save(ctx, None)


@router.get("/campaigns/{campaign_id}", response_class=HTMLResponse)
async def campaign_page(ctx: ConsoleDep, campaign_id: str) -> HTMLResponse:
    """One campaign: its editor, previews, test send, start and schedule, and its runs."""
    return await view.campaign_page(ctx, await view.path_campaign(ctx, campaign_id))


@router.post("/campaigns/{campaign_id}", response_class=HTMLResponse)
async def update_campaign(ctx: ConsoleDep, campaign_id: str) -> Response:
    """Save the editor over the campaign (refused while a run of it is unfinished, as the API does)."""
    return await _save(ctx, await view.path_campaign(ctx, campaign_id))


@router.post("/campaigns/{campaign_id}/archive", response_class=HTMLResponse)
async def archive_campaign(ctx: ConsoleDep, campaign_id: str) -> Response:
    """Archive the campaign."""
    await checked_form(ctx.request, ctx.session)
    campaign = await view.path_campaign(ctx, campaign_id)
    await campaign_service.archive_campaign(ctx.pool, ctx.tenant, campaign.id)
    return redirect(f"/campaigns/{campaign_id}?done=archived")


@router.post("/campaigns/{campaign_id}/start", response_class=HTMLResponse)
async def start_run(ctx: ConsoleDep, campaign_id: str) -> Response:
    """Start a run (at the campaign's send time or local time if it has one); opens the run."""
    await checked_form(ctx.request, ctx.session)
    campaign = await view.path_campaign(ctx, campaign_id)
    try:
        started = await campaign_service.start_run(ctx.pool, ctx.temporal, ctx.tenant, campaign, ctx.settings)
    except Refused as exc:
        return await view.campaign_page(ctx, campaign, refusal_status(exc), action_error=exc.message)
    return redirect(f"/runs/{started.run_id}")


@router.post("/campaigns/{campaign_id}/schedule", response_class=HTMLResponse)
async def put_schedule(ctx: ConsoleDep, campaign_id: str) -> Response:
    """Make the campaign recurring (cron or interval, in a time zone), or remove its schedule."""
    form = await checked_form(ctx.request, ctx.session)
    campaign = await view.path_campaign(ctx, campaign_id)
    try:
        if first(form, "action") == "delete":
            handle = await campaign_service.existing_schedule(ctx.temporal, ctx.tenant, campaign.id)
            await handle.delete()
            return redirect(f"/campaigns/{campaign_id}?done=unscheduled")
        data: dict[str, Any] = {"time_zone": first(form, "time_zone") or "UTC"}
        if first(form, "cron"):
            data["cron"] = first(form, "cron")
        if first(form, "interval_seconds"):
            data["interval_seconds"] = first(form, "interval_seconds")
        spec = RecurrenceSpec.model_validate(data)
        await campaign_service.put_schedule(ctx.temporal, ctx.tenant, campaign, spec)
    except INVALID as exc:
        return await view.campaign_page(ctx, campaign, 422, schedule_errors=problems(exc))
    return redirect(f"/campaigns/{campaign_id}?done=scheduled")


@router.post("/campaigns/{campaign_id}/test-send", response_class=HTMLResponse)
async def test_send(ctx: ConsoleDep, campaign_id: str) -> Response:
    """Email every variant (or one) to seed addresses, marked [TEST]."""
    form = await checked_form(ctx.request, ctx.session)
    campaign = await view.path_campaign(ctx, campaign_id)
    emails = [e.strip() for e in first(form, "emails").replace(";", ",").split(",") if e.strip()]
    data: dict[str, Any] = {"emails": emails}
    if first(form, "variant"):
        data["variant"] = first(form, "variant")
    if first(form, "customer_id"):
        data["customer_id"] = first(form, "customer_id")
    try:
        body = TestSendRequest.model_validate(data)
        config = await deps.get_tenant_config(ctx.tenant, ctx.pool)
        result = await campaign_service.test_send_campaign(
            ctx.pool, ctx.temporal, ctx.tenant, campaign, config, ctx.settings.public_base_url, body.emails,
            variant=body.variant, customer_id=body.customer_id,
        )  # fmt: skip
    except INVALID as exc:
        return await view.campaign_page(ctx, campaign, 422, test_send_errors=problems(exc))
    return await view.campaign_page(ctx, campaign, test_send_result=result)


def _json_errors(exc: Exception) -> JSONResponse:
    status = status_of(exc)
    errors = problems(exc)
    return JSONResponse({"detail": "; ".join(errors), "errors": errors}, status_code=status)


@router.post("/segments/estimate")
async def estimate(ctx: ConsoleDep, request: Request) -> JSONResponse:
    """The live audience estimate of the editor's segment (the API's estimate)."""
    check_header_csrf(request, ctx.session)
    try:
        body = SegmentEstimateRequest.model_validate_json(await request.body())
        config = await deps.get_tenant_config(ctx.tenant, ctx.pool)
        found = await customer_service.estimate_segment(ctx.pool, ctx.tenant, config, body.segment)
    except INVALID as exc:
        return _json_errors(exc)
    estimate = SegmentEstimate(count=found.count, sample=[CustomerRef(**r) for r in found.sample])
    return JSONResponse(estimate.model_dump(mode="json"))


@router.post("/campaigns/{campaign_id}/preview")
async def preview(ctx: ConsoleDep, campaign_id: str, request: Request) -> JSONResponse:
    """A variant rendered on a channel for a customer, exactly as a run would (the API's preview)."""
    check_header_csrf(request, ctx.session)
    try:
        campaign = await view.path_campaign(ctx, campaign_id)
        body = PreviewRequest.model_validate_json(await request.body())
        config = await deps.get_tenant_config(ctx.tenant, ctx.pool)
        found = await campaign_service.preview_campaign(
            ctx.pool, ctx.tenant, campaign, config, ctx.settings.public_base_url,
            variant=body.variant, channel=body.channel, customer_id=body.customer_id,
        )  # fmt: skip
    except (*INVALID, ValidationError) as exc:
        return _json_errors(exc)
    return JSONResponse(Preview.of(str(campaign.id), found).model_dump(mode="json"))
