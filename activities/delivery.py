"""Batch delivery: fetch a batch of the frozen audience, apply policies, assign variants,
render, dispatch through the channel adapters and record every outcome in the ledger."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.channels.base import (
    ChannelAdapter,
    ChannelConfigError,
    OutboundMessage,
    SendResult,
    TransientChannelError,
)
from activities.channels.rate_limit import RateLimits
from activities.lookups import campaign_spec, pinned_config
from activities.names import DELIVER_BATCH
from core.campaigns.cross_channel import NOT_CHOSEN, count_own_sends
from core.campaigns.spec import Variant, experiment_assignment
from core.common import signed_links as links
from core.content.channels import CHANNELS, message_key
from core.content.rendering import RenderError, render_message
from core.customers.suppressions import suppressed_addresses
from core.engagement.tracking import RunTracking, record_links
from core.experiments.buckets import GLOBAL_CONTROL, HOLDOUT
from core.infra.db import DATABASE_UNAVAILABLE, tenant_tx
from core.infra.fair_turns import TenantTurns, TurnSlices
from core.infra.metrics import RENDER_DURATION, count_messages
from core.infra.settings import BATCH_SLOTS
from core.infra.telemetry import tag_current_span
from core.infra.unnest_params import unnest_columns
from core.runs import store as run_store
from core.runs.frequency import CapTracker
from core.runs.models import Counts, DeliverBatchInput, RunStatus
from core.tenants.config_schema import TenantConfig

T = TypeVar("T")

# Ledger rows are written after every chunk, so a crash re-sends at most one chunk, and the
# provider-side idempotency key (Message-ID for SMTP) makes even that recognisable.
CHUNK = 50
# Channels whose provider takes many messages per request and honours each message's key send
# bigger chunks: one request and one ledger write per chunk, whose fixed cost otherwise
# dominates a run (benchmarks/million.py --push-chunk measures it; its docstring has the figures).
CHUNK_BY_CHANNEL = {"push": 500}
# How often a running batch heartbeats, whatever it is waiting on: a cancel reaches a batch only
# through a heartbeat, so this (with the worker's heartbeat throttle) bounds how long it takes.
HEARTBEAT_EVERY = 1.0
# Tries of a chunk in a row that settle nothing before the batch's attempt fails (provider
# down); any try that settles some messages starts the count again. The wait before the next
# try is a quarter second after progress, else doubles up to CHUNK_BACKOFF_MAX seconds, unless
# the provider said Retry-After.
CHUNK_RETRIES = 4
CHUNK_BACKOFF_MAX = 4.0
# How long a batch waits for the database to come back before its ledger write gives up.
LEDGER_OUTAGE_SECONDS = 120.0
# Recipients rendered in one turn of the process's TenantTurns (a few ms of CPU): between turns
# the event loop serves other work, and other tenants' batches get every other turn.
RENDER_SLICE = 50
# How often a batch looks at its run's status between chunks, to stop sending while paused.
PAUSE_CHECK_EVERY = 1.0

_RECIPIENTS_SQL = """
SELECT c.* FROM run_recipients r
JOIN customers c ON c.tenant_id = r.tenant_id AND c.id = r.customer_id
WHERE r.tenant_id = $1 AND r.run_id = $2::uuid
  AND r.customer_id >= $3 AND ($4::bigint IS NULL OR r.customer_id < $4)
  AND r.send_after IS NOT DISTINCT FROM $5::timestamptz
ORDER BY r.customer_id
"""
_DONE_SQL = """
SELECT d.customer_id, d.channel, d.status, d.reason, d.variant FROM deliveries d
JOIN run_recipients r ON r.tenant_id = d.tenant_id AND r.run_id = d.run_id AND r.customer_id = d.customer_id
WHERE d.tenant_id = $1 AND d.run_id = $2::uuid
  AND d.customer_id >= $3 AND ($4::bigint IS NULL OR d.customer_id < $4)
  AND r.send_after IS NOT DISTINCT FROM $5::timestamptz
"""
# One statement per chunk, however many rows: one round trip, and one firing of the
# per-recipient results trigger (a statement trigger fires per row under executemany).
_LEDGER_SQL = """
INSERT INTO deliveries (tenant_id, run_id, customer_id, channel, variant, status, reason,
                        address, idempotency_key, provider_message_id, detail, provider_account)
SELECT $1, $2::uuid, c, ch, v, st, rs, ad, k, pm, dt,
       CASE WHEN ch = ANY($12::text[]) THEN 'tenant' ELSE 'platform' END
FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
            $10::text[], $11::text[]) AS t(c, ch, v, st, rs, ad, k, pm, dt)
ORDER BY c, ch
ON CONFLICT (tenant_id, run_id, customer_id, channel) DO NOTHING
"""
# provider_account: a channel whose endpoint the tenant set goes through the tenant's own
# provider account ('tenant'); only 'platform' rows are matched by provider events signed with
# the platform's key (core/engagement/provider_events.py), so a tenant's endpoint, which chooses
# its own message ids, can never steer an event onto another message.
# The _LedgerRow fields _LEDGER_SQL unnests, in its order.
_LEDGER_FIELDS = "customer_id channel variant status reason address key provider_message_id detail".split()


@dataclass
class _LedgerRow:
    customer_id: int
    channel: str
    variant: str | None
    status: str
    reason: str | None
    address: str | None
    key: str
    provider_message_id: str | None = None
    detail: str | None = None  # why a message failed to render


class DeliveryActivities:
    """Delivers one batch of a run: policies, variants, rendering, channels, ledger."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        adapters: Mapping[str, ChannelAdapter],
        public_base_url: str,
        link_secret: str,
        turns: TenantTurns | None = None,
        slots: TenantTurns | None = None,
    ):
        self.pool = pool
        self.adapters = adapters
        self.public_base_url = public_base_url.rstrip("/")
        self.link_secret = link_secret
        self.rate_limits = RateLimits()
        self.turns = turns or TenantTurns()
        # The process's batch slots, shared by every tenant (Settings.worker_batch_slots).
        self.slots = slots or TenantTurns(BATCH_SLOTS)

    @activity.defn(name=DELIVER_BATCH)
    async def deliver_batch(self, inp: DeliverBatchInput) -> Counts:
        """Deliver one batch; unexpected errors are retried `execution.max_batch_attempts`
        times in all, then fail the run with their cause."""
        tag_current_span(tenant=inp.tenant, campaign=inp.campaign_id, run=inp.run_id)
        config = await pinned_config(self.pool, inp.tenant, inp.config_version)
        async with _heartbeating():
            try:
                # Heartbeating while it waits for a slot. The slot is offered between chunks
                # of a send: a lighter tenant's batch waits for a chunk, not a whole batch.
                async with self.slots.slices(inp.tenant, 1) as slot:
                    return await self._deliver(inp, config, slot)
            except (ApplicationError, asyncio.CancelledError):
                raise  # classified already, or the run is being cancelled
            except DATABASE_UNAVAILABLE as exc:
                # Transient, like a provider outage: retried with backoff, not counted.
                raise ApplicationError(f"database unavailable: {exc!r}", type="DatabaseUnavailable") from exc
            except Exception as exc:
                attempt, limit = activity.info().attempt, config.execution.max_batch_attempts
                cause = f"{type(exc).__name__}: {exc}"
                if attempt >= limit:
                    raise ApplicationError(
                        f"batch failed {attempt} times, the limit (execution.max_batch_attempts); last error: {cause}",
                        type="BatchFailed",
                        non_retryable=True,
                    ) from exc
                raise ApplicationError(f"attempt {attempt} of {limit} failed: {cause}", type="BatchError") from exc

    async def _deliver(self, inp: DeliverBatchInput, config: TenantConfig, slot: TurnSlices) -> Counts:
        args = (inp.tenant, inp.run_id, inp.first_id, inp.end_id, inp.wave_at)
        async with tenant_tx(self.pool, inp.tenant) as conn:
            spec = await campaign_spec(conn, inp.tenant, inp.campaign_id)
            channels = inp.channels or list(spec.channels)  # a fallback batch names its channel
            customers = [dict(c) for c in await conn.fetch(_RECIPIENTS_SQL, *args)]
            done_rows = [r for r in await conn.fetch(_DONE_SQL, *args) if r["channel"] in channels]
            suppressed = {
                channel: await suppressed_addresses(
                    conn, inp.tenant, channel, [a for c in customers if (a := CHANNELS[channel].address(c))]
                )
                for channel in channels
            }
            caps = await CapTracker.load(
                conn, inp.tenant, inp.run_id, config.policies.frequency_caps, [c["id"] for c in customers]
            )
            if inp.channels:  # a later phase of the run: its earlier sends count against the caps
                await count_own_sends(conn, inp.tenant, inp.run_id, [c["id"] for c in customers], channels, caps)
        done = {(r["customer_id"], r["channel"]) for r in done_rows}
        campaign_ctx = {"id": inp.campaign_id, "name": spec.name}
        assignment = experiment_assignment(spec, config, inp.tenant, inp.campaign_id, inp.experiment)
        assign = assignment.variant
        done_rows = [r for r in done_rows if assignment.in_batch(r["customer_id"])]  # a winner test's part
        variants = {v.key: v for v in spec.variants}
        eng = config.engagement
        tracked = spec.tracking and (eng.track_opens or eng.track_clicks or eng.track_sms_links or eng.track_push_links)
        tracking = RunTracking(self.link_secret, self.public_base_url, inp.tenant, inp.run_id, eng) if tracked else None

        counts = Counts()
        # A retried batch also reports what an earlier attempt recorded, so run totals stay exact.
        for r in done_rows:
            counts.tally(r["status"], r["reason"], r["variant"], r["channel"])
        rows: list[_LedgerRow] = []
        outbound: dict[str, list[tuple[OutboundMessage, _LedgerRow]]] = {}
        # first_available: a recipient gets the first listed channel they can receive. A retry
        # finds the rows of the other channels written (they are recorded before any send).
        first_available = spec.delivery == "first_available" and not inp.channels
        # Rendering is the CPU-heavy part: in slices of RENDER_SLICE recipients, each in the
        # process's turn, so a tenant's batches share the CPU fairly with other tenants'.
        async with self.turns.slices(inp.tenant, RENDER_SLICE) as turn:
            for cust in customers:
                await turn.tick()
                if not assignment.in_batch(cust["id"]):
                    continue  # the other part of a winner test's audience (core/experiments/winner_selection.py)
                variant = assign(cust["id"])
                chosen = False
                for channel in channels:
                    if (cust["id"], channel) in done:
                        continue
                    entry = CHANNELS[channel]
                    key = message_key(inp.tenant, inp.run_id, cust["id"], channel)
                    address = entry.address(cust)
                    skip = NOT_CHOSEN if chosen else self._skip_reason(config, channel, cust, variant, address)
                    if skip is None and address and entry.normalise(address) in suppressed[channel]:
                        skip = "suppressed"
                    if skip is None and caps.capped(cust["id"], channel):
                        skip = "capped"
                    chosen = chosen or (first_available and skip is None)
                    row = _LedgerRow(cust["id"], channel, variant, "skipped", skip, address, key)
                    if skip is not None:
                        rows.append(row)
                        continue
                    assert address  # no_address would have skipped it
                    try:
                        message = self._render(
                            config, channel, cust, variants[variant], campaign_ctx, key, address, tracking
                        )
                    except RenderError as exc:
                        # This customer's data does not fit the template: fail this message only.
                        row.status, row.reason, row.detail = "failed", "render_error", str(exc)
                        rows.append(row)
                        continue
                    caps.record(cust["id"], channel)
                    outbound.setdefault(channel, []).append((message, row))

        if tracking is not None and tracking.links:
            # Before any message leaves: a click must find its link the moment it can happen.
            async with tenant_tx(self.pool, inp.tenant) as conn:
                await record_links(conn, inp.tenant, inp.run_id, tracking.links)
        await self._record(inp, config, rows, counts)
        for name, pending in outbound.items():
            await self._send_channel(inp, config, name, pending, counts, slot)
        return counts

    async def _send_channel(
        self,
        inp: DeliverBatchInput,
        config: TenantConfig,
        name: str,
        pending: list[tuple[OutboundMessage, _LedgerRow]],
        counts: Counts,
        slot: TurnSlices,
    ) -> None:
        adapter = self.adapters[name]
        bucket = self.rate_limits.bucket(inp.tenant, name, getattr(config.channels, name).rate_limit_per_second)
        # Under a rate limit, send no more than a bucketful at once, or a chunk would burst.
        limit = CHUNK_BY_CHANNEL.get(name, CHUNK)
        size = min(limit, int(bucket.capacity)) if bucket else limit
        paused = _PauseCheck(self.pool, inp)
        for start in range(0, len(pending), size):
            chunk = pending[start : start + size]
            await slot.offer()  # rendered and recorded so far; a waiting lighter tenant goes first
            await paused.wait_while_paused()
            if bucket is not None:
                await bucket.acquire(len(chunk))
            await self._send_chunk(inp, config, adapter, chunk, counts)

    async def _send_chunk(
        self,
        inp: DeliverBatchInput,
        config: TenantConfig,
        adapter: ChannelAdapter,
        chunk: list[tuple[OutboundMessage, _LedgerRow]],
        counts: Counts,
    ) -> None:
        """Send one chunk; a provider that fails part of it is retried here, a short wait at a
        time, for as long as each try settles something. Only a provider that settles nothing
        CHUNK_RETRIES times in a row fails the attempt, and Temporal's backoff takes over."""

        async def attempt(part: list[tuple[OutboundMessage, _LedgerRow]]) -> None:
            try:
                results = await adapter.send_batch(config, [m for m, _ in part])
            except TransientChannelError as exc:
                # Record what was settled before the error so no retry sends it again.
                await self._record(inp, config, _apply(part, exc.partial), counts)
                raise
            except ChannelConfigError as exc:
                raise ApplicationError(str(exc), type="ChannelConfigError", non_retryable=True) from exc
            await self._record(inp, config, _apply(part, results), counts)
            await self._forget_gone_addresses(inp.tenant, adapter.channel, part, results)

        pending, idle_tries = chunk, 0
        while True:
            try:
                # A cancel must not cut a provider call short: what the provider took must reach
                # the ledger, so the call in flight finishes (bounded by the provider timeout).
                await _finish_then_cancel(attempt(pending))
                return
            except TransientChannelError as exc:
                settled = {r.idempotency_key for r in exc.partial}
                pending = [(m, row) for m, row in pending if m.idempotency_key not in settled]
                if not pending:
                    return
                idle_tries = 0 if settled else idle_tries + 1
                if idle_tries >= CHUNK_RETRIES:
                    raise ApplicationError(
                        str(exc),
                        type="TransientChannelError",
                        next_retry_delay=dt.timedelta(seconds=exc.retry_after_seconds)
                        if exc.retry_after_seconds
                        else None,
                    ) from exc
                await asyncio.sleep(exc.retry_after_seconds or min(CHUNK_BACKOFF_MAX, 0.25 * 2**idle_tries))

    def _skip_reason(
        self, config: TenantConfig, channel: str, cust: dict[str, Any], variant: str, address: str | None
    ) -> str | None:
        if variant in (HOLDOUT, GLOBAL_CONTROL):
            return variant
        if channel not in config.channels.enabled() or channel not in self.adapters:
            return "channel_disabled"
        if not address:
            return "no_address"
        if config.policies.consent_required.get(channel, True) and not CHANNELS[channel].consented(cust):  # type: ignore[call-overload]
            return "no_consent"
        return None

    def _render(
        self,
        config: TenantConfig,
        channel: str,
        cust: dict[str, Any],
        variant: Variant,
        campaign_ctx: dict[str, Any],
        key: str,
        address: str,
        tracking: RunTracking | None = None,
    ) -> OutboundMessage:
        token = links.sign({"t": config.slug, "c": cust["id"], "ch": channel}, self.link_secret)
        unsubscribe_url = f"{self.public_base_url}/u/{token}"
        started = time.perf_counter()
        content = render_message(
            config, variant, channel, cust, campaign=campaign_ctx, unsubscribe_url=unsubscribe_url, tracking=tracking
        )
        RENDER_DURATION.labels(config.slug, channel).observe(time.perf_counter() - started)
        headers: dict[str, str] = {}
        if channel == "email":
            headers = {
                "List-Unsubscribe": f"<{unsubscribe_url}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            }
        return OutboundMessage(key, cust["id"], address, content, headers)

    async def _forget_gone_addresses(
        self, tenant: str, channel: str, chunk: list[tuple[OutboundMessage, _LedgerRow]], results: list[SendResult]
    ) -> None:
        """Clear addresses the provider says are gone for good (unregistered push tokens), so no
        later run tries them; the ledger keeps the failure and its reason."""
        gone = {r.idempotency_key for r in results if r.address_gone}
        addresses = [m.address for m, _ in chunk if m.idempotency_key in gone]
        if not addresses or channel != "push":
            return
        async with tenant_tx(self.pool, tenant) as conn:
            await conn.execute(
                """UPDATE customers SET push_token = NULL, updated_at = now()
                   WHERE tenant_id = $1 AND push_token = ANY($2::text[])""",
                tenant,
                addresses,
            )

    async def _record(
        self, inp: DeliverBatchInput, config: TenantConfig, rows: list[_LedgerRow], counts: Counts
    ) -> None:
        if not rows:
            return
        columns = unnest_columns(rows, *_LEDGER_FIELDS)
        own_accounts = [name for name, settings in config.channels.configured() if settings.endpoint]
        # What a provider has taken must reach the ledger: were this write to fail the batch, its
        # retry would send these messages again (and an SMTP relay keeps no idempotency key). So
        # a database that is restarting or unreachable is waited for here, heartbeats going on.
        deadline = time.monotonic() + LEDGER_OUTAGE_SECONDS
        for attempt in itertools.count():
            try:
                async with tenant_tx(self.pool, inp.tenant) as conn:
                    await conn.execute(_LEDGER_SQL, inp.tenant, inp.run_id, *columns, own_accounts)
                break
            except DATABASE_UNAVAILABLE:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
        for r in rows:
            counts.tally(r.status, r.reason, r.variant, r.channel)
        count_messages(inp.tenant, ((r.channel, r.status, r.reason) for r in rows))


@contextlib.asynccontextmanager
async def _heartbeating() -> AsyncIterator[None]:
    """Heartbeat every HEARTBEAT_EVERY seconds while the body runs, whatever it waits on (a
    slow provider, a rate limiter, a pause), so a cancel always reaches the batch quickly."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(HEARTBEAT_EVERY)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _finish_then_cancel(work: Awaitable[T]) -> T:
    """Await `work` to its end even if the activity is cancelled meanwhile; then let the
    cancellation through."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


class _PauseCheck:
    """Stops a batch between chunks while its run is paused (the workflow writes the run's
    status when it is paused and resumed); looks at most once per PAUSE_CHECK_EVERY."""

    def __init__(self, pool: asyncpg.Pool, inp: DeliverBatchInput):
        self.pool, self.inp = pool, inp
        self.checked_at = time.monotonic()  # the batch was started by a running run

    async def _status(self) -> str | None:
        async with tenant_tx(self.pool, self.inp.tenant) as conn:
            run = await run_store.get_run(conn, self.inp.tenant, self.inp.run_id)
        return run.status if run is not None else None

    async def wait_while_paused(self) -> None:
        """Return at once unless the run is paused; else wait until it is not."""
        if time.monotonic() - self.checked_at < PAUSE_CHECK_EVERY:
            return
        while await self._status() == RunStatus.PAUSED:  # noqa: ASYNC110 - the status lives in PostgreSQL
            await asyncio.sleep(PAUSE_CHECK_EVERY)  # heartbeats go on; a cancel ends the wait
        self.checked_at = time.monotonic()


def _apply(chunk: list[tuple[OutboundMessage, _LedgerRow]], results: list[SendResult]) -> list[_LedgerRow]:
    by_key = {r.idempotency_key: r for r in results}
    rows = []
    for message, row in chunk:
        result = by_key.get(message.idempotency_key)
        if result is None:
            continue  # not attempted: the retry will send it
        row.status, row.reason, row.provider_message_id = result.status, result.reason, result.provider_message_id
        rows.append(row)
    return rows
