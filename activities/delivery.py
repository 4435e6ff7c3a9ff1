"""Batch delivery: fetch a batch of the frozen audience, apply policies, assign variants,
render, dispatch through the channel adapters and record every outcome in the ledger."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
from core import links
from core.campaigns import variant_assigner
from core.db import tenant_tx
from core.experiments import GLOBAL_CONTROL, HOLDOUT
from core.frequency import CapTracker
from core.runs import Counts, DeliverBatchInput
from core.suppressions import normalise, suppressed_addresses
from core.telemetry import tag_current_span
from core.templating import (
    content_for_locale,
    render_context,
    render_email,
    render_push,
    render_sms,
    render_webhook,
)
from core.tenant_config import TenantConfig

# Ledger rows are written after every chunk, so a crash re-sends at most one chunk, and the
# provider-side idempotency key (Message-ID for SMTP) makes even that recognisable.
CHUNK = 50

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
_LEDGER_SQL = """
INSERT INTO deliveries (tenant_id, run_id, customer_id, channel, variant, status, reason,
                        address, idempotency_key, provider_message_id)
VALUES ($1, $2::uuid, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (tenant_id, run_id, customer_id, channel) DO NOTHING
"""
# A webhook goes to the tenant's own endpoint; the recipient is named by the tenant's id for them.
_ADDRESS_FIELD = {"email": "email", "sms": "phone", "push": "push_token", "webhook": "external_id"}


def idempotency_key(tenant: str, run_id: str, customer_id: int, channel: str) -> str:
    """The message's identity: (tenant, run, recipient, channel)."""
    return f"{tenant}:{run_id}:{customer_id}:{channel}"


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


class DeliveryActivities:
    def __init__(
        self, pool: asyncpg.Pool, adapters: Mapping[str, ChannelAdapter], public_base_url: str, link_secret: str
    ):
        self.pool = pool
        self.adapters = adapters
        self.public_base_url = public_base_url.rstrip("/")
        self.link_secret = link_secret
        self.rate_limits = RateLimits()

    @activity.defn(name=DELIVER_BATCH)
    async def deliver_batch(self, inp: DeliverBatchInput) -> Counts:
        tag_current_span(tenant=inp.tenant, campaign=inp.campaign_id, run=inp.run_id)
        config = await pinned_config(self.pool, inp.tenant, inp.config_version)
        args = (inp.tenant, inp.run_id, inp.first_id, inp.end_id, inp.wave_at)
        async with tenant_tx(self.pool, inp.tenant) as conn:
            spec = await campaign_spec(conn, inp.tenant, inp.campaign_id)
            customers = await conn.fetch(_RECIPIENTS_SQL, *args)
            done_rows = await conn.fetch(_DONE_SQL, *args)
            suppressed = {
                channel: await suppressed_addresses(
                    conn,
                    inp.tenant,
                    channel,
                    [c[_ADDRESS_FIELD[channel]] for c in customers if c[_ADDRESS_FIELD[channel]]],
                )
                for channel in spec.channels
            }
            caps = await CapTracker.load(
                conn, inp.tenant, inp.run_id, config.policies.frequency_caps, [c["id"] for c in customers]
            )
        done = {(r["customer_id"], r["channel"]) for r in done_rows}
        campaign_ctx = {"id": inp.campaign_id, "name": spec.name}
        assign = variant_assigner(spec, config, inp.tenant, inp.campaign_id)
        variants = {v.key: v for v in spec.variants}

        counts = Counts()
        # A retried batch also reports what an earlier attempt recorded, so run totals stay exact.
        for r in done_rows:
            counts.tally(r["status"], r["reason"], r["variant"], r["channel"])
        rows: list[_LedgerRow] = []
        outbound: dict[str, list[tuple[OutboundMessage, _LedgerRow]]] = {}
        for customer in customers:
            cust: dict[str, Any] = dict(customer)
            variant = assign(cust["id"])
            for channel in spec.channels:
                if (cust["id"], channel) in done:
                    continue
                key = idempotency_key(inp.tenant, inp.run_id, cust["id"], channel)
                address = cust.get(_ADDRESS_FIELD.get(channel, ""))
                skip = self._skip_reason(config, channel, cust, variant, address)
                if skip is None and address and normalise(channel, address) in suppressed[channel]:
                    skip = "suppressed"
                if skip is None and caps.capped(cust["id"], channel):
                    skip = "capped"
                row = _LedgerRow(cust["id"], channel, variant, "skipped", skip, address, key)
                if skip is not None:
                    rows.append(row)
                    continue
                caps.record(cust["id"], channel)
                assert address  # no_address would have skipped it
                message = self._render(config, channel, cust, variants[variant], campaign_ctx, key, address)
                outbound.setdefault(channel, []).append((message, row))

        await self._record(inp, rows, counts)
        for name, pending in outbound.items():
            adapter = self.adapters[name]
            channel_config = getattr(config.channels, name)
            bucket = self.rate_limits.bucket(inp.tenant, name, channel_config.rate_limit_per_second)
            # Under a rate limit, send no more than a bucketful at once, or a chunk would burst.
            size = min(CHUNK, int(bucket.capacity)) if bucket else CHUNK
            for start in range(0, len(pending), size):
                chunk = pending[start : start + size]
                if bucket is not None:
                    await bucket.acquire(len(chunk))
                try:
                    results = await adapter.send_batch(config, [m for m, _ in chunk])
                except TransientChannelError as exc:
                    # Record what was settled before the error so the retry does not send it again.
                    await self._record(inp, _apply(chunk, exc.partial), counts)
                    raise ApplicationError(
                        str(exc),
                        type="TransientChannelError",
                        next_retry_delay=dt.timedelta(seconds=exc.retry_after_seconds)
                        if exc.retry_after_seconds
                        else None,
                    ) from exc
                except ChannelConfigError as exc:
                    raise ApplicationError(str(exc), type="ChannelConfigError", non_retryable=True) from exc
                await self._record(inp, _apply(chunk, results), counts)
                await self._forget_gone_addresses(inp.tenant, name, chunk, results)
                activity.heartbeat(start + len(chunk))
        return counts

    def _skip_reason(
        self, config: TenantConfig, channel: str, cust: dict[str, Any], variant: str, address: str | None
    ) -> str | None:
        if variant in (HOLDOUT, GLOBAL_CONTROL):
            return variant
        if channel not in config.channels.enabled() or channel not in self.adapters:
            return "channel_disabled"
        if not address:
            return "no_address"
        if config.policies.consent_required.get(channel, True) and not _consented(cust, channel):  # type: ignore[call-overload]
            return "no_consent"
        return None

    def _render(
        self,
        config: TenantConfig,
        channel: str,
        cust: dict[str, Any],
        variant: Any,
        campaign_ctx: dict[str, Any],
        key: str,
        address: str,
    ) -> OutboundMessage:
        token = links.sign({"t": config.slug, "c": cust["id"], "ch": channel}, self.link_secret)
        unsubscribe_url = f"{self.public_base_url}/u/{token}"
        ctx = render_context(cust, config.brand, campaign_ctx, variant.key, unsubscribe_url)
        tset = config.templates.get(variant.template)
        if tset is None:
            raise ApplicationError(f"no {channel} template '{variant.template}'", non_retryable=True)
        template = content_for_locale(tset, channel, cust.get("locale") or config.brand.default_locale)
        if template is None:
            raise ApplicationError(f"template '{variant.template}' has no {channel} part", non_retryable=True)
        headers: dict[str, str] = {}
        content: Any
        if channel == "email":
            content = render_email(template, ctx, subject_override=variant.subject)
            headers = {
                "List-Unsubscribe": f"<{unsubscribe_url}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            }
        elif channel == "sms":
            content = render_sms(template, ctx)
        elif channel == "push":
            content = render_push(template, ctx)
        elif channel == "webhook":
            content = render_webhook(template, ctx)
        else:
            raise ApplicationError(f"channel '{channel}' has no renderer", non_retryable=True)
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

    async def _record(self, inp: DeliverBatchInput, rows: list[_LedgerRow], counts: Counts) -> None:
        if not rows:
            return
        async with tenant_tx(self.pool, inp.tenant) as conn:
            await conn.executemany(
                _LEDGER_SQL,
                [
                    (
                        inp.tenant,
                        inp.run_id,
                        r.customer_id,
                        r.channel,
                        r.variant,
                        r.status,
                        r.reason,
                        r.address,
                        r.key,
                        r.provider_message_id,
                    )
                    for r in rows
                ],
            )
        for r in rows:
            counts.tally(r.status, r.reason, r.variant, r.channel)


def _consented(cust: dict[str, Any], channel: str) -> bool:
    """Consent columns for email, SMS and push; other channels may carry it as an attribute."""
    if f"consent_{channel}" in cust:
        return bool(cust[f"consent_{channel}"])
    return bool((cust.get("attributes") or {}).get(f"consent_{channel}"))


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
