"""Response bodies of the public API."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.campaigns import CampaignSpec
from core.runs import Counts
from core.tenant_config import EmailAddress


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

    @classmethod
    def of(cls, counts: Counts, planned: int | None) -> RunCounts:
        return cls(planned=planned or 0, **counts.model_dump())


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
    # While the run is live, counts come from its workflow (whole batches); afterwards from the
    # ledger (every row).
    counts_source: Literal["workflow", "ledger"] = "ledger"
    batches_total: int | None = None
    batches_done: int | None = None


class RunSummary(BaseModel):
    """A run in a list: its row, without ledger counts."""

    id: str
    campaign_id: str
    workflow_id: str
    status: str
    config_version: int | None
    planned: int | None
    send_at: dt.datetime | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    error: str | None = None


class RunPage(BaseModel):
    items: list[RunSummary]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class Delivery(BaseModel):
    """One ledger row: one message to one recipient on one channel."""

    customer_id: int
    channel: str
    variant: str | None
    status: str
    reason: str | None
    address: str | None
    idempotency_key: str
    provider_message_id: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class DeliveryPage(BaseModel):
    items: list[Delivery]
    next_cursor: str | None


class PreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: int | None = Field(default=None, description="whose data fills the templates; default a sample")
    variant: str | None = Field(default=None, description="variant key; default the first variant")
    channel: str | None = Field(default=None, description="default the campaign's first channel")


class CustomerRef(BaseModel):
    id: int
    first_name: str
    email: str | None


class Preview(BaseModel):
    """The rendered content; for email `subject`, `html` and `text` (other channels add their
    own fields, e.g. `body`)."""

    model_config = ConfigDict(extra="allow")

    campaign_id: str
    variant: str
    channel: str
    customer: CustomerRef | None = Field(description="null when no customer exists and a placeholder was used")


class TestSendRequest(BaseModel):
    __test__ = False  # not a pytest class
    model_config = ConfigDict(extra="forbid")

    emails: list[EmailAddress] = Field(min_length=1, max_length=20)
    variant: str | None = Field(default=None, description="send only this variant; default every variant")
    customer_id: int | None = Field(default=None, description="whose data fills the templates; default a sample")


class SegmentEstimateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    segment: dict[str, Any] | str = Field(description="an inline segment, or the name of a tenant segment")


class SegmentEstimate(BaseModel):
    count: int
    sample: list[CustomerRef] = Field(description="up to 10 members, lowest id first")
