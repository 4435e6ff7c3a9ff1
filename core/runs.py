"""Inputs and outputs of the run workflow and its activities: ids, cursors and counts only."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field


class CampaignRunInput(BaseModel):
    tenant: str
    campaign_id: str
    run_id: str
    send_at: dt.datetime | None = None


class LoadConfigInput(BaseModel):
    tenant: str


class ConfigPin(BaseModel):
    """The config version a run is pinned to, and the execution knobs it needs."""

    version: int
    batch_size: int
    max_concurrent_batches: int


class PlanAudienceInput(BaseModel):
    tenant: str
    run_id: str
    campaign_id: str
    config_version: int
    batch_size: int


class AudiencePlan(BaseModel):
    planned: int
    # Inclusive lower customer-id bound of each batch; a batch ends where the next begins.
    batch_starts: list[int] = Field(default_factory=list)


class DeliverBatchInput(BaseModel):
    tenant: str
    run_id: str
    campaign_id: str
    config_version: int
    first_id: int
    end_id: int | None = None  # exclusive; None for the last batch


class Counts(BaseModel):
    sent: int = 0
    failed: int = 0
    skipped: int = 0

    def add(self, other: Counts) -> None:
        self.sent += other.sent
        self.failed += other.failed
        self.skipped += other.skipped


class MarkRunInput(BaseModel):
    tenant: str
    run_id: str
    status: str
    config_version: int | None = None
    planned: int | None = None
    error: str | None = None


class RunProgress(BaseModel):
    """What the workflow's `progress` query returns."""

    status: str
    planned: int | None = None
    batches_total: int = 0
    batches_done: int = 0
    counts: Counts = Field(default_factory=Counts)


def run_workflow_id(tenant: str, campaign_id: str, run_id: str) -> str:
    return f"run:{tenant}:{campaign_id}:{run_id}"
