"""Recurring campaigns: the schedule a marketer sets, and the inputs of each occurrence."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.tenants.config_schema import TimeZone


class RecurrenceSpec(BaseModel):
    """The body of PUT …/campaigns/{id}/schedule: a cron expression or an interval, in a zone."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = Field(default=None, description="e.g. '0 10 * * MON' (minute hour day month weekday)")
    interval_seconds: int | None = Field(default=None, ge=1, description="every N seconds")
    time_zone: TimeZone = "UTC"
    paused: bool = False
    note: str = ""

    @model_validator(mode="after")
    def _one_of(self) -> RecurrenceSpec:
        if (self.cron is None) == (self.interval_seconds is None):
            raise ValueError("give exactly one of cron and interval_seconds")
        if self.cron is not None and len(self.cron.split()) not in (5, 6, 7):
            raise ValueError(f"cron: '{self.cron}' is not a cron expression like '0 10 * * MON'")
        return self


class ScheduledRunInput(BaseModel):
    """What the schedule passes each occurrence: which campaign; the run id is made per occurrence."""

    tenant: str
    campaign_id: str


class RegisterRunInput(BaseModel):
    """Record one scheduled occurrence as a run row."""

    tenant: str
    campaign_id: str
    run_id: str
    workflow_id: str


class ScheduleInfo(BaseModel):
    """A recurring campaign's Temporal Schedule: its spec, state and the next occurrences."""

    schedule_id: str
    cron: list[str]
    interval_seconds: list[int]
    time_zone: str
    paused: bool
    next_runs: list[str] = Field(description="the next (up to five) occurrence times, ISO 8601")
    occurrences: int
    skipped_overlapping: int
