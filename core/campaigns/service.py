"""Campaigns as the API and the console both use them: create and change (checked against the
tenant's config in the check pool), archive, preview a variant, test-send it, start a run, and
make it recurring (a Temporal Schedule; each occurrence a normal run, workflows/scheduled_run.py,
and a still-running occurrence makes the schedule skip the next one). Typed
arguments in, domain records out; refusals are core.common errors, never HTTP."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import temporalio.converter
from opentelemetry import trace
from temporalio.api.common.v1 import Payload
from temporalio.client import (
    Client,
    Schedule,
    ScheduleAction,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowFailureError,
)
from temporalio.service import RPCError, RPCStatusCode

from core.campaigns import store as campaign_store
from core.campaigns.preview import preview_customer, preview_unsubscribe_url
from core.campaigns.schedules import RecurrenceSpec, ScheduledRunInput, ScheduleInfo
from core.campaigns.spec import CampaignSpec, Variant, check_campaign
from core.campaigns.store import CampaignRecord
from core.campaigns.test_send_io import TestSendInput, TestSendResult
from core.common.refusals import Conflict, NotFound, Unavailable, UpstreamFailed
from core.common.validation import InvalidInput
from core.content.check_pool import run_check
from core.content.rendering import render_message
from core.deliverability.gate import start_refusal
from core.infra.db import tenant_tx
from core.infra.settings import Settings
from core.infra.temporal import (
    WORKFLOW_QUEUE,
    campaign_search_attributes,
    run_workflow_id,
    schedule_id,
    scheduled_workflow_id,
    testsend_workflow_id,
)
from core.runs import service as run_service
from core.runs import store as run_store
from core.runs.models import CampaignRunInput
from core.tenants.config_schema import EmailAddress, TenantConfig
from core.tenants.config_store import get_config

# The registered name of workflows/testsend.py's workflow (core imports no workflow module).
TEST_SEND_WORKFLOW = "CampaignTestSendWorkflow"
SCHEDULED_RUN_WORKFLOW = "ScheduledCampaignWorkflow"  # workflows/scheduled_run.py
CRON_MEMO = "pennant_cron"
TEST_SEND_TIMEOUT = timedelta(seconds=60)


class CampaignError(InvalidInput):
    """A campaign that cannot run under the tenant's config: every `path: reason` found."""


class NotInCampaign(InvalidInput):
    """A request names a variant or channel the campaign does not have."""


async def create_campaign(pool: asyncpg.Pool, tenant: str, config: TenantConfig, spec: CampaignSpec) -> CampaignRecord:
    """Store a campaign, checked against the tenant's config (channels, segment, templates)."""
    errors = await run_check("body", check_campaign, spec, config)
    if errors:
        raise CampaignError(errors)
    async with tenant_tx(pool, tenant) as conn:
        return await campaign_store.create_campaign(conn, tenant, spec)


async def list_campaigns(pool: asyncpg.Pool, tenant: str) -> list[CampaignRecord]:
    """Every campaign of the tenant, archived ones included, newest first."""
    async with tenant_tx(pool, tenant) as conn:
        return await campaign_store.list_campaigns(conn, tenant)


async def update_campaign(
    pool: asyncpg.Pool, tenant: str, campaign_id: str, config: TenantConfig, spec: CampaignSpec
) -> CampaignRecord:
    """Replace a campaign's definition, checked as on create. Conflict while the campaign is
    archived or one of its runs is unfinished: those runs read the definition as they go."""
    async with tenant_tx(pool, tenant) as conn:
        # Locked until the update commits: an archive, or a run start (its row's foreign key
        # takes a share lock), waits rather than slipping between the checks and the write.
        locked = await campaign_store.get_campaign(conn, tenant, campaign_id, for_update=True)
        assert locked is not None  # campaigns are archived, never deleted
        if not locked.startable:
            raise Conflict(f"campaign '{campaign_id}' is archived")
        errors = await run_check("body", check_campaign, spec, config)
        if errors:
            raise CampaignError(errors)
        active = await run_store.active_runs(conn, tenant, campaign_id)
        if active:
            runs = ", ".join(f"{r.id} ({r.status})" for r in active)
            raise Conflict(
                f"campaign '{campaign_id}' has unfinished runs: {runs}; cancel them or let them finish first"
            )
        updated = await campaign_store.update_campaign(conn, tenant, campaign_id, spec)
    assert updated is not None  # locked above
    return updated


async def archive_campaign(pool: asyncpg.Pool, tenant: str, campaign_id: str) -> CampaignRecord:
    """Archive: the campaign stays readable with its runs and ledger, but starts no new run."""
    async with tenant_tx(pool, tenant) as conn:
        archived = await campaign_store.archive_campaign(conn, tenant, campaign_id)
    assert archived is not None  # campaigns are archived, never deleted
    return archived


def campaign_variant(spec: CampaignSpec, key: str | None) -> Variant:
    """The variant `key` of the campaign (its first when None); NotInCampaign otherwise."""
    if key is None:
        return spec.variants[0]
    for variant in spec.variants:
        if variant.key == key:
            return variant
    keys = ", ".join(v.key for v in spec.variants)
    raise NotInCampaign([f"variant: unknown variant '{key}' (variants: {keys})"])


def campaign_channel(spec: CampaignSpec, channel: str) -> str:
    """`channel` if the campaign sends on it; NotInCampaign otherwise."""
    if channel not in spec.channels:
        raise NotInCampaign(
            [f"channel: the campaign does not send on '{channel}' (channels: {', '.join(spec.channels)})"]
        )
    return channel


async def _customer(
    pool: asyncpg.Pool, tenant: str, spec: CampaignSpec, config: TenantConfig, customer_id: int | None
) -> dict[str, Any]:
    async with tenant_tx(pool, tenant) as conn:
        customer = await preview_customer(conn, tenant, spec, config, customer_id)
    if customer is None:
        raise NotFound(f"customer {customer_id} not found")
    return customer


async def _render(
    config: TenantConfig,
    campaign: CampaignRecord,
    variant: Variant,
    channel: str,
    customer: dict[str, Any],
    public_base_url: str,
) -> Any:
    """The variant rendered in the check pool exactly as a run would; TemplateError naming it."""
    path = f"variants[{campaign.spec.variants.index(variant)}]"
    return await run_check(
        path,
        render_message,
        config,
        variant,
        channel,
        customer,
        campaign={"id": str(campaign.id), "name": campaign.spec.name},
        unsubscribe_url=preview_unsubscribe_url(public_base_url),
        path=path,
    )


@dataclass(frozen=True)
class PreviewResult:
    """A rendered preview: the variant and channel it is of, whose data filled it, the content."""

    variant: Variant
    channel: str
    customer: dict[str, Any]
    rendered: Any


async def preview_campaign(
    pool: asyncpg.Pool,
    tenant: str,
    campaign: CampaignRecord,
    config: TenantConfig,
    public_base_url: str,
    *,
    variant: str | None = None,
    channel: str | None = None,
    customer_id: int | None = None,
) -> PreviewResult:
    """A variant (default: the first) on a channel (default: the campaign's first) for a
    customer (default: the first member of the audience), exactly as a run would render it."""
    spec = campaign.spec
    chosen = campaign_variant(spec, variant)
    on = campaign_channel(spec, channel or spec.channels[0])
    customer = await _customer(pool, tenant, spec, config, customer_id)
    rendered = await _render(config, campaign, chosen, on, customer, public_base_url)
    return PreviewResult(variant=chosen, channel=on, customer=customer, rendered=rendered)


async def test_send_campaign(
    pool: asyncpg.Pool,
    temporal: Client,
    tenant: str,
    campaign: CampaignRecord,
    config: TenantConfig,
    public_base_url: str,
    emails: list[EmailAddress],
    *,
    variant: str | None = None,
    customer_id: int | None = None,
) -> TestSendResult:
    """Email the rendered campaign (every variant, or one) to seed addresses through the
    tenant's worker (the test-send workflow); no run, no ledger. Template problems are raised
    here, before any workflow starts."""
    cid, spec = campaign.id, campaign.spec
    if "email" not in spec.channels:
        raise NotInCampaign([f"channels: the campaign does not send email (channels: {', '.join(spec.channels)})"])
    variants = [campaign_variant(spec, variant)] if variant else spec.variants
    customer = await _customer(pool, tenant, spec, config, customer_id)
    for chosen in variants:
        await _render(config, campaign, chosen, "email", customer, public_base_url)
    send_id = uuid.uuid4().hex
    try:
        return await asyncio.wait_for(
            temporal.execute_workflow(
                TEST_SEND_WORKFLOW,
                TestSendInput(
                    tenant=tenant,
                    campaign_id=str(cid),
                    send_id=send_id,
                    emails=emails,
                    variants=[v.key for v in variants],
                    customer_id=customer_id,
                ),
                id=testsend_workflow_id(tenant, str(cid), send_id),
                task_queue=WORKFLOW_QUEUE,
                execution_timeout=TEST_SEND_TIMEOUT,
                search_attributes=campaign_search_attributes(tenant, str(cid)),
                static_summary=f"test send of {spec.name} · {tenant}",
                result_type=TestSendResult,
            ),
            timeout=TEST_SEND_TIMEOUT.total_seconds(),
        )
    except WorkflowFailureError as exc:
        cause = getattr(exc.cause, "cause", None) or exc.cause  # the activity's own error
        raise UpstreamFailed(f"test send failed: {cause}") from exc
    except (RPCError, TimeoutError) as exc:
        raise Unavailable(f"test send did not complete: {exc}") from exc


@dataclass(frozen=True)
class StartedRun:
    """A run just started: its id and its workflow's."""

    run_id: str
    workflow_id: str


async def start_run(
    pool: asyncpg.Pool, temporal: Client, tenant: str, campaign: CampaignRecord, settings: Settings
) -> StartedRun:
    """Start a run of the campaign (its activities on the tenant's task queue). Conflict when
    the campaign is archived, the tenant has no configuration yet, or (with
    REQUIRE_SENDING_DOMAIN_RECORDS) its sending domain misses a DNS record; Unavailable when
    Temporal does not take it (the run's row is removed again)."""
    if not campaign.startable:
        raise Conflict(f"campaign '{campaign.id}' is archived; it cannot start new runs")
    current = await get_config(pool, tenant)
    if current is None:  # the run pins it; without one it could not plan
        raise Conflict(f"tenant '{tenant}' has no configuration yet")
    cid, spec = campaign.id, campaign.spec
    refusal = await start_refusal(pool, settings, current[1], list(spec.channels))
    if refusal is not None:
        raise Conflict(refusal)
    run_id = str(uuid.uuid4())
    workflow_id = run_workflow_id(tenant, cid, run_id)
    # The request's span names the run, so an operator finds the trace from a run's log lines.
    trace.get_current_span().set_attributes({"pennant.tenant": tenant, "pennant.campaign": cid, "pennant.run": run_id})
    async with tenant_tx(pool, tenant) as conn:
        await run_store.insert_run(conn, tenant, run_id, cid, workflow_id, spec.send_at)
    try:
        await temporal.start_workflow(
            run_service.RUN_WORKFLOW,
            CampaignRunInput(tenant=tenant, campaign_id=cid, run_id=run_id, send_at=spec.send_at),
            id=workflow_id,
            task_queue=WORKFLOW_QUEUE,
            search_attributes=campaign_search_attributes(tenant, cid),
            static_summary=f"{spec.name} · {tenant}",
            static_details=f"campaign {cid}, run {run_id}, channels {', '.join(spec.channels)}",
        )
    except RPCError as exc:
        async with tenant_tx(pool, tenant) as conn:
            await run_store.delete_run(conn, tenant, run_id)
        raise Unavailable(f"could not start the run on Temporal: {exc.message}") from exc
    return StartedRun(run_id=run_id, workflow_id=workflow_id)


# -- recurring campaigns (Temporal Schedules) ---------------------------------------------------


def _schedule(tenant: str, campaign_id: str, name: str, spec: RecurrenceSpec) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            SCHEDULED_RUN_WORKFLOW,
            ScheduledRunInput(tenant=tenant, campaign_id=campaign_id),
            id=scheduled_workflow_id(tenant, campaign_id),
            task_queue=WORKFLOW_QUEUE,
            typed_search_attributes=campaign_search_attributes(tenant, campaign_id),
            static_summary=f"{name} (recurring) · {tenant}",
            # Temporal keeps a cron expression only as the calendar it compiles to; the memo
            # keeps what the marketer wrote, so reading the schedule answers it back.
            memo={CRON_MEMO: spec.cron} if spec.cron else None,
        ),
        spec=ScheduleSpec(
            cron_expressions=[spec.cron] if spec.cron else [],
            intervals=[ScheduleIntervalSpec(every=timedelta(seconds=spec.interval_seconds))]
            if spec.interval_seconds
            else [],
            time_zone_name=spec.time_zone,
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(paused=spec.paused, note=spec.note or "set through the Pennant API"),
    )


def _cron_from_memo(action: ScheduleAction) -> list[str]:
    memo = action.memo if isinstance(action, ScheduleActionStartWorkflow) else None
    raw = memo.get(CRON_MEMO) if memo else None
    if isinstance(raw, Payload):
        return [temporalio.converter.default().payload_converter.from_payload(raw, str)]
    return [raw] if isinstance(raw, str) else []


async def describe_schedule(handle: ScheduleHandle, campaign_id: str) -> ScheduleInfo:
    """The schedule's spec, state and next occurrences; NotFound when the campaign has none."""
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise NotFound(f"campaign '{campaign_id}' has no schedule") from None
        raise
    spec = desc.schedule.spec
    return ScheduleInfo(
        schedule_id=desc.id,
        cron=list(spec.cron_expressions) or _cron_from_memo(desc.schedule.action),
        interval_seconds=[int(i.every.total_seconds()) for i in spec.intervals],
        time_zone=spec.time_zone_name or "UTC",
        paused=desc.schedule.state.paused,
        next_runs=[t.isoformat() for t in desc.info.next_action_times[:5]],
        occurrences=desc.info.num_actions,
        skipped_overlapping=desc.info.num_actions_skipped_overlap,
    )


async def put_schedule(
    temporal: Client, tenant: str, campaign: CampaignRecord, spec: RecurrenceSpec
) -> tuple[ScheduleInfo, bool]:
    """Make the campaign recurring, or change its recurrence: (the schedule, whether it is new).
    Conflict for an archived campaign; InvalidInput when Temporal rejects the spec."""
    if not campaign.startable:
        raise Conflict(f"campaign '{campaign.id}' is archived")
    sid = schedule_id(tenant, campaign.id)
    schedule = _schedule(tenant, campaign.id, campaign.spec.name, spec)
    created = False
    try:
        handle = await temporal.create_schedule(
            sid,
            schedule,
            search_attributes=campaign_search_attributes(tenant, campaign.id),
        )
        created = True
    except ScheduleAlreadyRunningError:
        handle = temporal.get_schedule_handle(sid)

        def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await handle.update(replace)
    except RPCError as exc:
        if exc.status == RPCStatusCode.INVALID_ARGUMENT:
            raise InvalidInput([f"schedule rejected by Temporal: {exc.message}"]) from None
        raise
    return await describe_schedule(handle, campaign.id), created


async def existing_schedule(temporal: Client, tenant: str, campaign_id: str) -> ScheduleHandle:
    """The campaign's schedule; NotFound when it has none."""
    handle = temporal.get_schedule_handle(schedule_id(tenant, campaign_id))
    await describe_schedule(handle, campaign_id)
    return handle
