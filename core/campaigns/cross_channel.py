"""Cross-channel delivery: `delivery: first_available` (each recipient gets the first channel
of the campaign's list they can receive) and `fallback` (a second channel, after a durable wait,
for the recipients who did not engage with the first).

The campaign fields, their save-time checks, the workflow's inputs and outputs, and the SQL that
picks the fallback's recipients live here; delivery decides the first available channel where it
decides every channel's eligibility (activities/delivery.py), and activities/cross_channel.py
plans the fallback.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.common.durations import Duration, duration_seconds
from core.content.channels import CHANNELS, message_key
from core.content.rendering import MessageVariant, check_campaign_templates
from core.experiments.buckets import GLOBAL_CONTROL, HOLDOUT
from core.infra.db import TenantConn
from core.runs.frequency import CapTracker
from core.tenants.config_schema import ChannelName, TenantConfig

DeliveryMode = Literal["all", "first_available"]

# Ledger reasons (status `skipped`) this module adds. A first_available recipient has one row
# per listed channel: the channel chosen (sent, failed…), the ones before it with why they could
# not be received (no_address, no_consent, suppressed, capped), the ones after it `not_chosen`.
NOT_CHOSEN = "not_chosen"
# On the fallback channel: the recipient engaged with the first channel in time, or the first
# channel never reached them (nothing was sent, so there is nothing to fall back from).
ENGAGED = "engaged"
NOT_REACHED = "not_reached"


class Fallback(BaseModel):
    """A follow-up on another channel for the recipients who did not engage with the first."""

    model_config = ConfigDict(extra="forbid")

    channel: ChannelName = Field(description="the channel of the follow-up (not one of the campaign's channels)")
    unless: Literal["opened", "clicked"] = Field(
        description="who is left out: recipients with a human open (or click) of the first message, or a click"
    )
    after: Duration = Field(description="how long after the first send to wait: seconds, or '30m', '4h', '2d'")

    @property
    def after_delta(self) -> dt.timedelta:
        """`after` as a timedelta."""
        return dt.timedelta(seconds=duration_seconds(self.after))


def check_cross_channel(
    fallback: Fallback | None,
    channels: Sequence[str],
    variants: Sequence[MessageVariant],
    tracking: bool,
    config: TenantConfig,
) -> list[str]:
    """What stops a campaign's `fallback` (after its `channels`, for its `variants`, with its
    `tracking` setting) from running under `config`, as `path: reason` lines."""
    if fallback is None:
        return []
    errors: list[str] = []
    if fallback.channel in channels:
        errors.append(f"fallback.channel: '{fallback.channel}' is already one of the campaign's channels")
    if fallback.channel not in config.channels.enabled():
        errors.append(f"fallback.channel: channel '{fallback.channel}' is not enabled for this tenant")
    errors += _engagement_errors(fallback, channels, tracking, config)
    for i, variant in enumerate(variants):
        tset = config.templates.get(variant.template)
        if tset is not None and CHANNELS[fallback.channel].template(tset) is None:
            errors.append(f"variants[{i}].template: template '{variant.template}' has no {fallback.channel} part")
    if not errors:  # each variant's fallback part, rendered for the sample customer as delivery would
        errors += check_campaign_templates(variants, [fallback.channel], config)
    return errors


def _engagement_errors(fallback: Fallback, channels: Sequence[str], tracking: bool, config: TenantConfig) -> list[str]:
    """The engagement the fallback waits for must be measurable on the first channel(s)."""
    eng = config.engagement
    if not tracking:
        return ["fallback.unless: needs tracking (the campaign sets tracking: false)"]
    if fallback.unless == "opened":
        if "email" not in channels or not eng.track_opens:
            return ["fallback.unless: 'opened' needs email among the channels and engagement.track_opens"]
        return []
    trackable = {"email": eng.track_clicks, "sms": eng.track_sms_links, "push": eng.track_push_links}
    if not any(trackable.get(c, False) for c in channels):
        return ["fallback.unless: 'clicked' needs a channel whose links the tenant tracks"]
    return []


# Who is not to get the fallback, a page at a time after the cursor: no message was sent to them
# on the first channel(s) (`not_reached`), they engaged (a human event of the kinds given, on
# the run, by then), or they are held out. Each gets a `skipped` row on the fallback channel;
# everyone left without a row is the fallback's audience, which the ordinary batches then
# deliver (consent, suppression, caps and quiet hours as always).
_EXCLUDE_PAGE = 5_000
_EXCLUDE_PAGE_SQL = """
SELECT r.customer_id, first.variant,
       CASE WHEN first.variant = ANY($7::text[]) THEN first.variant
            WHEN first.sent THEN $6 ELSE $5 END AS reason
FROM run_recipients r
CROSS JOIN LATERAL (
    SELECT max(d.variant) AS variant, coalesce(bool_or(d.status = 'sent'), false) AS sent FROM deliveries d
    WHERE d.tenant_id = r.tenant_id AND d.run_id = r.run_id AND d.customer_id = r.customer_id
      AND d.channel = ANY($3::text[])
) first
WHERE r.tenant_id = $1 AND r.run_id = $2::uuid AND r.customer_id > $8
  AND (NOT first.sent OR EXISTS (
        SELECT 1 FROM message_events e
        WHERE e.tenant_id = r.tenant_id AND e.run_id = r.run_id AND e.customer_id = r.customer_id
          AND e.channel = ANY($3::text[]) AND e.kind = ANY($4::text[]) AND NOT e.machine))
ORDER BY r.customer_id LIMIT $9
"""
# The message key of each row comes from core.content.channels.message_key, its one definition.
_EXCLUDE_SQL = """
INSERT INTO deliveries (tenant_id, run_id, customer_id, channel, variant, status, reason, idempotency_key)
SELECT $1, $2::uuid, c, $3, v, 'skipped', reason, k
FROM unnest($4::bigint[], $5::text[], $6::text[], $7::text[]) AS t(c, v, reason, k)
ON CONFLICT (tenant_id, run_id, customer_id, channel) DO NOTHING
"""
_EXCLUDED_SQL = """
SELECT reason, count(*) AS n FROM deliveries
WHERE tenant_id = $1 AND run_id = $2::uuid AND channel = $3 AND reason = ANY($4::text[])
GROUP BY reason
"""


def engagement_kinds(fallback: Fallback) -> list[str]:
    """The message events that count as engaging: a click implies the message was opened."""
    return ["open", "click"] if fallback.unless == "opened" else ["click"]


async def exclude_engaged(
    conn: TenantConn, tenant: str, run_id: str, fallback: Fallback, channels: Sequence[str]
) -> tuple[int, int]:
    """Record who is not to get the `fallback` after the first `channels` (idempotent);
    (engaged, not reached) counts."""
    args = (tenant, run_id, fallback.channel)
    first = (list(channels), engagement_kinds(fallback), NOT_REACHED, ENGAGED, [HOLDOUT, GLOBAL_CONTROL])
    cursor = -(2**63)
    while rows := await conn.fetch(_EXCLUDE_PAGE_SQL, tenant, run_id, *first, cursor, _EXCLUDE_PAGE):
        ids = [r["customer_id"] for r in rows]
        keys = [message_key(tenant, run_id, c, fallback.channel) for c in ids]
        await conn.execute(_EXCLUDE_SQL, *args, ids, [r["variant"] for r in rows], [r["reason"] for r in rows], keys)
        cursor = ids[-1]
    counts = {r["reason"]: r["n"] for r in await conn.fetch(_EXCLUDED_SQL, *args, [ENGAGED, NOT_REACHED])}
    return counts.get(ENGAGED, 0), counts.get(NOT_REACHED, 0)


# This run's own sends on channels other than those being delivered: a later phase of the run
# (the fallback) counts them against the caps like any earlier run's.
_OWN_SENDS_SQL = """
SELECT customer_id, channel, count(*) AS n FROM deliveries
WHERE tenant_id = $1 AND run_id = $2::uuid AND customer_id = ANY($3::bigint[]) AND status = 'sent'
  AND channel <> ALL($4::text[])
GROUP BY customer_id, channel
"""


async def count_own_sends(
    conn: TenantConn, tenant: str, run_id: str, customers: list[int], channels: list[str], caps: CapTracker
) -> None:
    """Count the run's sends on channels other than `channels` against `caps` (caps across channels)."""
    if not caps.caps:
        return
    for row in await conn.fetch(_OWN_SENDS_SQL, tenant, run_id, customers, channels):
        for _ in range(row["n"]):
            caps.record(row["customer_id"], row["channel"])
