"""Campaign definitions: who gets what, on which channels, in which variants."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.campaigns.cross_channel import DeliveryMode, Fallback, check_cross_channel
from core.campaigns.send_time import SendTime, check_send_time
from core.content.channels import CHANNELS
from core.content.rendering import check_campaign_templates
from core.customers.segments import SegmentError, compile_segment
from core.experiments.buckets import GLOBAL_CONTROL, assign_variant, in_global_control
from core.experiments.models import BatchExperiment
from core.experiments.spec import ExperimentSpec, check_experiment
from core.experiments.winner_selection import ExperimentAssignment
from core.tenants.config_schema import ChannelName, TenantConfig


class Variant(BaseModel):
    """One variant of a campaign: its template, weight and optional subject override."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    template: str = Field(min_length=1, description="name of a template in the tenant config")
    weight: float = Field(default=1.0, gt=0, description="omitted: the tenant's default weight for this key")
    subject: str | None = Field(default=None, description="overrides the template's email subject")


class CampaignSpec(BaseModel):
    """The body of POST /v1/tenants/{tenant}/campaigns."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    segment: dict[str, Any] | str = Field(
        default_factory=dict, description="an inline segment, or the name of a tenant segment"
    )
    channels: list[ChannelName] = Field(min_length=1)
    variants: list[Variant] = Field(min_length=1)
    holdout_percent: float = Field(
        default=0.0, ge=0, lt=100, description="omitted: the tenant's experiments.default_holdout_percent"
    )
    send_at: dt.datetime | None = Field(default=None, description="start time; omitted means now")
    local_send_time: dt.time | None = Field(
        default=None, description="send at this wall-clock time in each recipient's time zone (HH:MM)"
    )
    tracking: bool = Field(
        default=True, description="track opens and clicks (when the tenant's engagement config does)"
    )
    if_local_time_passed: Literal["send_now", "next_day"] = Field(
        default="next_day", description="where the local send time has already passed today"
    )
    delivery: DeliveryMode = Field(
        default="all", description="all: every listed channel; first_available: the first each recipient can receive"
    )
    fallback: Fallback | None = Field(
        default=None, description="a follow-up channel for recipients who did not engage with the first"
    )
    send_time: SendTime | None = Field(
        default=None,
        description="'optimal' (or {mode: optimal, within_hours, fallback_local_time}): each recipient at "
        "the local hour they most often open or click",
    )
    experiment: ExperimentSpec | None = Field(
        default=None, description="winner: test variants on a slice, the winner to the rest; adaptive: split by results"
    )

    @field_validator("channels")
    @classmethod
    def _distinct_channels(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("channels must not repeat")
        return v

    @field_validator("send_at")
    @classmethod
    def _aware(cls, v: dt.datetime | None) -> dt.datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("must include a time zone offset, e.g. 2026-12-01T10:00:00Z")
        return v

    @model_validator(mode="after")
    def _distinct_variants(self) -> CampaignSpec:
        keys = [v.key for v in self.variants]
        if len(set(keys)) != len(keys):
            raise ValueError("variants: keys must be unique")
        return self


def check_campaign(spec: CampaignSpec, config: TenantConfig) -> list[str]:
    """What stops `spec` from running under `config`, as `path: reason` lines (empty if none).

    Found at save time so that nothing fails first at send time.
    """
    errors: list[str] = []
    enabled = config.channels.enabled()
    for i, channel in enumerate(spec.channels):
        if channel not in enabled:
            errors.append(f"channels[{i}]: channel '{channel}' is not enabled for this tenant")
    segment = {"segment": spec.segment} if isinstance(spec.segment, str) else spec.segment
    try:
        compile_segment(segment, config.segments, path="segment")
    except SegmentError as exc:
        errors += exc.errors
    for i, variant in enumerate(spec.variants):
        tset = config.templates.get(variant.template)
        if tset is None:
            known = ", ".join(sorted(config.templates)) or "none"
            errors.append(f"variants[{i}].template: unknown template '{variant.template}' (known: {known})")
            continue
        for channel in spec.channels:
            if CHANNELS[channel].template(tset) is None:
                errors.append(f"variants[{i}].template: template '{variant.template}' has no {channel} part")
    errors += check_campaign_templates(spec.variants, spec.channels, config)
    errors += check_cross_channel(spec.fallback, spec.channels, spec.variants, spec.tracking, config)
    errors += check_send_time(spec.send_time, spec.local_send_time)
    errors += check_experiment(spec.experiment, [v.key for v in spec.variants])
    return errors


def variant_assigner(spec: CampaignSpec, config: TenantConfig, tenant: str, campaign_id: str) -> Callable[[int], str]:
    """customer id → the variant key, HOLDOUT or GLOBAL_CONTROL: the one assignment that
    delivery, cancellation and reports share, deterministic per (campaign, customer)."""
    weights, holdout = effective_split(spec, config)
    control = config.policies.holdout_percent

    def assign(customer_id: int) -> str:
        if in_global_control(tenant, customer_id, control):
            return GLOBAL_CONTROL
        return assign_variant(campaign_id, customer_id, weights, holdout)

    return assign


def experiment_assignment(
    spec: CampaignSpec, config: TenantConfig, tenant: str, campaign_id: str, exp: BatchExperiment | None
) -> ExperimentAssignment:
    """The variant assignment of one part of a run of `spec` (its experiment's phase `exp`):
    variant_assigner's split, with a winner test's slice and winner."""
    weights, holdout = effective_split(spec, config)
    return ExperimentAssignment(
        weights, holdout, config.policies.holdout_percent, spec.experiment, tenant, campaign_id, exp
    )


def effective_split(spec: CampaignSpec, config: TenantConfig) -> tuple[list[tuple[str, float]], float]:
    """Variant weights and holdout for a run: what the campaign set explicitly, else the
    tenant's experiment defaults (campaigns are stored without unset fields, so this holds
    after a round trip through the database)."""
    defaults = config.experiments
    weights = [
        (v.key, v.weight if "weight" in v.model_fields_set else defaults.default_variant_weights.get(v.key, 1.0))
        for v in spec.variants
    ]
    explicit = "holdout_percent" in spec.model_fields_set
    return weights, spec.holdout_percent if explicit else defaults.default_holdout_percent
