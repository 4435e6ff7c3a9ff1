"""Response bodies of the public API."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from core.campaigns import CampaignSpec


class Campaign(CampaignSpec):
    id: str
    status: str
    created_at: dt.datetime


class RunStarted(BaseModel):
    run_id: str
    workflow_id: str
    status: str


class RunCounts(BaseModel):
    planned: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    skipped_by_reason: dict[str, int] = Field(default_factory=dict)
    by_variant: dict[str, dict[str, int]] = Field(default_factory=dict)
    by_channel: dict[str, dict[str, int]] = Field(default_factory=dict)


class Run(BaseModel):
    id: str
    campaign_id: str
    workflow_id: str
    status: str
    config_version: int | None
    counts: RunCounts
    send_at: dt.datetime | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    error: str | None = None
