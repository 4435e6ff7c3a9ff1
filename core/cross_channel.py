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
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.channels import CHANNELS
from core.experiment_spec import _check_duration, duration_seconds
from core.experiments import GLOBAL_CONTROL, HOLDOUT
from core.rendering import check_campaign_templates
from core.runs import Wave
from core.tenant_config import ChannelName, TenantConfig

if TYPE_CHECKING:
    from core.campaigns import CampaignSpec
    from core.frequency import CapTracker

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
    after: float | str = Field(description="how long after the first send to wait: seconds, or '30m', '4h', '2d'")

    @field_validator("after")
    @classmethod
    def _duration(cls, v: float | str) -> float | str:
        return _check_duration(v)  # the same durations (and bound) as an experiment's decide_after

    @property
    def after_delta(self) -> dt.timedelta:
        """`after` as a timedelta."""
        return dt.timedelta(seconds=duration_seconds(self.after))


def check_cross_channel(spec: CampaignSpec, config: TenantConfig) -> list[str]:
    """What stops the campaign's fallback from running under `config`, as `path: reason` lines."""
    fallback = spec.fallback
    if fallback is None:
        return []
    errors: list[str] = []
    if fallback.channel in spec.channels:
        errors.append(f"fallback.channel: '{fallback.channel}' is already one of the campaign's channels")
    if fallback.channel not in config.channels.enabled():
        errors.append(f"fallback.channel: channel '{fallback.channel}' is not enabled for this tenant")
    errors += _engagement_errors(spec, fallback, config)
    for i, variant in enumerate(spec.variants):
        tset = config.templates.get(variant.template)
        if tset is not None and CHANNELS[fallback.channel].template(tset) is None:
            errors.append(f"variants[{i}].template: template '{variant.template}' has no {fallback.channel} part")
    if not errors:  # each variant's fallback part, rendered for the sample customer as delivery would
        errors += check_campaign_templates(spec.model_copy(update={"channels": [fallback.channel]}), config)
    return errors


def _engagement_errors(spec: CampaignSpec, fallback: Fallback, config: TenantConfig) -> list[str]:
    """The engagement the fallback waits for must be measurable on the first channel(s)."""
    eng = config.engagement
    if not spec.tracking:
        return ["fallback.unless: needs tracking (the campaign sets tracking: false)"]
    if fallback.unless == "opened":
        if "email" not in spec.channels or not eng.track_opens:
            return ["fallback.unless: 'opened' needs email among the channels and engagement.track_opens"]
        return []
    trackable = {"email": eng.track_clicks, "sms": eng.track_sms_links, "push": eng.track_push_links}
    if not any(trackable.get(c, False) for c in spec.channels):
        return ["fallback.unless: 'clicked' needs a channel whose links the tenant tracks"]
    return []


class FallbackDue(BaseModel):
    """Whether the run has a fallback, on which channel and after how long."""

    channel: str | None = None
    after: dt.timedelta | None = None


class FallbackPlan(BaseModel):
    """The fallback's recipients (those not engaged, reached on the first channel) and its waves."""

    channel: str
    recipients: int
    engaged: int
    not_reached: int
    waves: list[Wave] = Field(default_factory=list)


# Write `skipped` rows on the fallback channel for every recipient who is not to get it: no
# message was sent to them on the first channel(s), or they engaged (a human event of the kinds
# given, on the run, by then). Everyone left without a row is the fallback's audience, which
# the ordinary batches then deliver (consent, suppression, caps and quiet hours as always).
EXCLUDE_SQL = """
INSERT INTO deliveries (tenant_id, run_id, customer_id, channel, variant, status, reason, idempotency_key)
SELECT r.tenant_id, r.run_id, r.customer_id, $3, first.variant, 'skipped',
       CASE WHEN first.variant = ANY($8::text[]) THEN first.variant
            WHEN first.sent THEN $7 ELSE $6 END,
       $1 || ':' || r.run_id::text || ':' || r.customer_id::text || ':' || $3
FROM run_recipients r
CROSS JOIN LATERAL (
    SELECT max(d.variant) AS variant, coalesce(bool_or(d.status = 'sent'), false) AS sent FROM deliveries d
    WHERE d.tenant_id = r.tenant_id AND d.run_id = r.run_id AND d.customer_id = r.customer_id
      AND d.channel = ANY($4::text[])
) first
WHERE r.tenant_id = $1 AND r.run_id = $2::uuid
  AND (NOT first.sent OR EXISTS (
        SELECT 1 FROM message_events e
        WHERE e.tenant_id = r.tenant_id AND e.run_id = r.run_id AND e.customer_id = r.customer_id
          AND e.channel = ANY($4::text[]) AND e.kind = ANY($5::text[]) AND NOT e.machine))
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


async def exclude_engaged(conn: Any, tenant: str, run_id: str, spec: CampaignSpec) -> tuple[int, int]:
    """Record who is not to get the fallback (idempotent); (engaged, not reached) counts."""
    fallback = spec.fallback
    assert fallback is not None
    args = (tenant, run_id, fallback.channel)
    kinds = engagement_kinds(fallback)
    held_out = [HOLDOUT, GLOBAL_CONTROL]
    await conn.execute(EXCLUDE_SQL, *args, list(spec.channels), kinds, NOT_REACHED, ENGAGED, held_out)
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
    conn: Any, tenant: str, run_id: str, customers: list[int], channels: list[str], caps: CapTracker
) -> None:
    """Count the run's sends on channels other than `channels` against `caps` (caps across channels)."""
    if not caps.caps:
        return
    for row in await conn.fetch(_OWN_SENDS_SQL, tenant, run_id, customers, channels):
        for _ in range(row["n"]):
            caps.record(row["customer_id"], row["channel"])
