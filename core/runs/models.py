"""Inputs and outputs of the run workflow and its activities: ids, cursors and counts only."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from pydantic import BaseModel, Field, field_validator

from core.experiments.models import BatchExperiment, ExperimentPlan, ExperimentState


class RunStatus(StrEnum):
    """A run's status: what its row stores, the API reports and the workflow's validators check."""

    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    # Reported while a cancel is under way (in-flight batches stopping, the rest recorded as
    # skipped); never stored: the row goes straight from its last status to `cancelled`.
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


# A finished run stays finished; an active one still reads its campaign's definition.
TERMINAL_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.CANCELLED, RunStatus.FAILED})
ACTIVE_STATUSES = frozenset({RunStatus.SCHEDULED, RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.CANCELLING})
# The statuses a run's row may hold (the runs.status CHECK constraint says the same).
STORED_STATUSES = tuple(s for s in RunStatus if s is not RunStatus.CANCELLING)


class LoadConfigInput(BaseModel):
    """Pin the tenant's current config for a run."""

    tenant: str


class ConfigPin(BaseModel):
    """The config version a run is pinned to, and the execution knobs it needs."""

    version: int
    batch_size: int
    max_concurrent_batches: int


class PlanAudienceInput(BaseModel):
    """Freeze a run's audience and plan its waves."""

    tenant: str
    run_id: str
    campaign_id: str
    config_version: int
    batch_size: int
    # The workflow's clock, so waves are computed against workflow time (durable and testable).
    now: dt.datetime | None = None


class Wave(BaseModel):
    """Recipients that may be sent to from `at` on (None: at once): one local-time group."""

    at: dt.datetime | None = None
    recipients: int
    batches: int


class AudiencePlan(BaseModel):
    """The frozen audience's size and its waves; batches are read a page at a time (BatchPage)."""

    planned: int
    batches: int
    waves: list[Wave] = Field(default_factory=list)


class BeginRunInput(BaseModel):
    """Start a run that is due now in one step: pin the config, mark it running, freeze the
    audience, record the planned count and prepare the experiment."""

    tenant: str
    run_id: str
    campaign_id: str
    # The workflow's clock, for the audience's waves (as PlanAudienceInput.now).
    now: dt.datetime


class RunBegun(BaseModel):
    """What a run's first step found: the config pin, the frozen audience, the experiment."""

    pin: ConfigPin
    plan: AudiencePlan
    experiment: ExperimentPlan


class BatchPageInput(BaseModel):
    """Read the next page of batch boundaries of one wave."""

    tenant: str
    run_id: str
    wave_at: dt.datetime | None = None
    first_id: int | None = None  # inclusive cursor; None starts at the beginning
    batch_size: int
    max_batches: int


class BatchPage(BaseModel):
    # Inclusive lower customer-id bound of each batch; a batch ends where the next begins,
    # the page's last batch where `next_first_id` (the next page's cursor) begins.
    """Batch boundaries of one page of a wave."""

    starts: list[int] = Field(default_factory=list)
    next_first_id: int | None = None


class SkipRemainingInput(BaseModel):
    """Record every recipient of the run not yet in the ledger as skipped for `reason`."""

    tenant: str
    run_id: str
    campaign_id: str
    reason: str = "cancelled"
    config_version: int | None = None  # the run's pinned version (None: the current one)
    experiment: BatchExperiment | None = None  # a winner test's rest get no variant until it decides
    fallback: str | None = None  # a fallback channel whose delivery had begun: its rest too


class DeliverBatchInput(BaseModel):
    """Deliver one batch: recipients with ids in [first_id, end_id) of one wave."""

    tenant: str
    run_id: str
    campaign_id: str
    config_version: int
    first_id: int
    end_id: int | None = None  # exclusive; None for the last batch
    wave_at: dt.datetime | None = None  # the wave the batch belongs to
    channels: list[str] | None = None  # only these channels (a fallback); None: the campaign's
    experiment: BatchExperiment | None = None  # a winner test's part of the audience, adaptive weights


STATUSES = ("sent", "failed", "skipped")


class Counts(BaseModel):
    """Ledger outcomes: totals, skips by reason, and each status per variant and per channel."""

    sent: int = 0
    failed: int = 0
    skipped: int = 0
    skipped_by_reason: dict[str, int] = Field(default_factory=dict)
    by_variant: dict[str, dict[str, int]] = Field(default_factory=dict)
    by_channel: dict[str, dict[str, int]] = Field(default_factory=dict)

    def tally(self, status: str, reason: str | None, variant: str | None, channel: str, n: int = 1) -> None:
        """Count `n` ledger rows with these values."""
        setattr(self, status, getattr(self, status) + n)
        if status == "skipped":
            key = reason or ""
            self.skipped_by_reason[key] = self.skipped_by_reason.get(key, 0) + n
        for group, key in ((self.by_variant, variant or ""), (self.by_channel, channel)):
            bucket = group.setdefault(key, dict.fromkeys(STATUSES, 0))
            bucket[status] = bucket.get(status, 0) + n

    def add(self, other: Counts) -> None:
        """Add another tally to this one."""
        self.sent += other.sent
        self.failed += other.failed
        self.skipped += other.skipped
        for reason, n in other.skipped_by_reason.items():
            self.skipped_by_reason[reason] = self.skipped_by_reason.get(reason, 0) + n
        for mine, theirs in ((self.by_variant, other.by_variant), (self.by_channel, other.by_channel)):
            for key, by_status in theirs.items():
                bucket = mine.setdefault(key, dict.fromkeys(STATUSES, 0))
                for status, n in by_status.items():
                    bucket[status] = bucket.get(status, 0) + n


class MarkRunInput(BaseModel):
    """Write a run's status (and what else changed) to its row."""

    tenant: str
    run_id: str
    status: RunStatus
    config_version: int | None = None
    planned: int | None = None
    error: str | None = None
    send_at: dt.datetime | None = None


class RescheduleInput(BaseModel):
    """A new start time for a run that has not started delivering yet."""

    send_at: dt.datetime

    @field_validator("send_at")
    @classmethod
    def _aware(cls, v: dt.datetime) -> dt.datetime:
        if v.tzinfo is None:
            raise ValueError("must include a time zone offset, e.g. 2026-12-01T10:00:00Z")
        return v


class RunProgress(BaseModel):
    """What the workflow's `progress` query and its control updates return."""

    status: RunStatus
    planned: int | None = None
    batches_total: int = 0
    batches_done: int = 0
    counts: Counts = Field(default_factory=Counts)
    # 1 for the first execution of the run; each continue-as-new adds one.
    execution: int = 1


class RunState(BaseModel):
    """What a run's workflow keeps across its executions, held whole by the workflow and handed
    to the next execution on continue-as-new: the config pin, cursors and counters, never
    recipients. The field names and types are those of the recorded histories' carries; a new
    field must have a default (runs in flight carry none)."""

    pin: ConfigPin | None = None  # set once the config is pinned, before any carry
    planned: int | None = None  # the frozen audience's size, once planned
    batches_total: int = 0
    batches_done: int = 0
    # The first customer id of the next batch page to read (None: the wave's start); a carry
    # holds the first batch its execution did not start.
    next_first_id: int | None = None
    counts: Counts = Field(default_factory=Counts)
    paused: bool = False
    execution: int = 1  # 1 for the first execution of the run; each continue-as-new adds one
    waves: list[Wave] = Field(default_factory=list)
    wave_index: int = 0
    experiment: ExperimentState | None = None
    fallback: str | None = None  # the fallback channel once its phase has begun (core.campaigns.cross_channel)


class CampaignRunInput(BaseModel):
    """Start (or continue as new) one campaign run."""

    tenant: str
    campaign_id: str
    run_id: str
    send_at: dt.datetime | None = None
    carry: RunState | None = None  # set only by continue-as-new


class FallbackDue(BaseModel):
    """Whether the run has a fallback (core/campaigns/cross_channel.py), on which channel and after how long."""

    channel: str | None = None
    after: dt.timedelta | None = None


class FallbackPlan(BaseModel):
    """The fallback's recipients (those not engaged, reached on the first channel) and its waves."""

    channel: str
    recipients: int
    engaged: int
    not_reached: int
    waves: list[Wave] = Field(default_factory=list)
