"""Request and response bodies of the public API, in one place. Where a body is a stored row
(a run, a ledger row) it extends the data layer's record, so each field is defined once."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from api.input_guard import BIGINT_MAX, BIGINT_MIN
from core.campaigns.schedules import ScheduleInfo as ScheduleInfo
from core.campaigns.send_time import SendTime
from core.campaigns.service import PreviewResult
from core.campaigns.spec import CampaignSpec
from core.campaigns.store import CampaignRecord, CampaignStatus
from core.customers.records import MAX_BATCH
from core.engagement.conversions import MAX_EVENTS
from core.experiments.models import RunExperiment
from core.infra.temporal import task_queue_for
from core.optimisation.send_times import SendTimePreview
from core.optimisation.suggestions import SuggestionsRecord
from core.results.report import ResultsRecord, SeriesRecord
from core.runs.models import Counts, RunStatus
from core.runs.service import RunView
from core.runs.store import DeliveryRecord, RunRecord
from core.tenants.config_schema import ChannelName, EmailAddress

# --- campaigns


class Campaign(CampaignSpec):
    """A stored campaign: its definition with its id, status and creation time."""

    id: str
    status: CampaignStatus
    created_at: dt.datetime

    @classmethod
    def of(cls, record: CampaignRecord) -> Campaign:
        """The body for a stored campaign."""
        return cls(**record.spec.model_dump(), id=record.id, status=record.status, created_at=record.created_at)


class PreviewRequest(BaseModel):
    """What to render in a preview; every field has a default."""

    model_config = ConfigDict(extra="forbid")

    customer_id: int | None = Field(
        default=None, ge=BIGINT_MIN, le=BIGINT_MAX, description="whose data fills the templates; default a sample"
    )
    variant: str | None = Field(default=None, description="variant key; default the first variant")
    channel: str | None = Field(default=None, description="default the campaign's first channel")


class CustomerRef(BaseModel):
    """A customer named in a response: id, first name, email."""

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

    @classmethod
    def of(cls, campaign_id: str, found: PreviewResult) -> Self:
        """The answer for a rendered preview (core.campaigns.service.preview_campaign)."""
        customer = found.customer
        ref = CustomerRef(**{k: customer[k] for k in ("id", "first_name", "email")}) if customer["id"] else None
        return cls(
            campaign_id=campaign_id, variant=found.variant.key, channel=found.channel, customer=ref,
            **dataclasses.asdict(found.rendered),
        )  # fmt: skip


class TestSendRequest(BaseModel):
    """Seed addresses for a test send, and optionally one variant and the customer whose data to use."""

    __test__ = False  # not a pytest class
    model_config = ConfigDict(extra="forbid")

    emails: list[EmailAddress] = Field(min_length=1, max_length=20)
    variant: str | None = Field(default=None, description="send only this variant; default every variant")
    customer_id: int | None = Field(
        default=None, ge=BIGINT_MIN, le=BIGINT_MAX, description="whose data fills the templates; default a sample"
    )


# --- runs


class RunStarted(BaseModel):
    """The answer to starting a run."""

    run_id: str
    workflow_id: str
    status: RunStatus


class RunCounts(Counts):
    """A run's outcome counts so far, with the size of its frozen audience."""

    planned: int = 0

    @classmethod
    def of(cls, counts: Counts, planned: int | None) -> RunCounts:
        """Counts with the planned audience size (0 until the audience is frozen)."""
        return cls(planned=planned or 0, **counts.model_dump())


class RunSummary(RunRecord):
    """A run in a list: its row, without ledger counts."""


class Run(RunSummary):
    """A run with its counts."""

    status: RunStatus = Field(description="live from the workflow while the run is under way")
    counts: RunCounts
    # While the run is live, counts come from its workflow (whole batches); afterwards from the
    # ledger (every row).
    counts_source: Literal["workflow", "ledger"] = "ledger"
    batches_total: int | None = None
    batches_done: int | None = None
    experiment: RunExperiment | None = Field(
        default=None, description="the run's winner test (decision and statistics) or adaptive weights"
    )

    @classmethod
    def of(cls, view: RunView) -> Self:
        """The answer for a run as it stands (core.runs.service.run_view)."""
        progress = view.progress
        return cls(
            **view.run.model_dump(exclude={"status"}),
            status=view.status,
            counts=RunCounts.of(view.counts, view.planned),
            counts_source="workflow" if progress is not None else "ledger",
            batches_total=progress.batches_total if progress is not None else None,
            batches_done=progress.batches_done if progress is not None else None,
            experiment=view.experiment,
        )


class RunPage(BaseModel):
    """One page of runs, newest first."""

    items: list[RunSummary]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class Delivery(DeliveryRecord):
    """One ledger row: one message to one recipient on one channel."""


class DeliveryPage(BaseModel):
    """One page of a run's ledger, in (customer, channel) order."""

    items: list[Delivery]
    next_cursor: str | None


# --- results


class Results(ResultsRecord):
    """Results of a run, or of every run of a campaign: per group, with lift and the leader per metric."""


class ResultSeries(SeriesRecord):
    """Hourly sends, human opens and clicks and conversions per group, for charts."""


# --- optimisation: send times and suggestions


class SendTimesRequest(BaseModel):
    """What to preview; by default the campaign's own send_time, else `optimal` with its defaults."""

    model_config = ConfigDict(extra="forbid")

    send_time: SendTime | None = Field(default=None, description="preview these settings instead of the campaign's")


class SendTimes(SendTimePreview):
    """The chosen local hours, the fallbacks and the waves a run of the campaign started now would have."""

    campaign_id: str


class SuggestRequest(BaseModel):
    """What to suggest for; every field has a default."""

    model_config = ConfigDict(extra="forbid")

    channel: Literal["email", "sms"] | None = Field(
        default=None, description="email subjects or SMS bodies; default email if the campaign sends it, else sms"
    )
    variant: str | None = Field(default=None, description="suggest for this variant's text; default every variant's")
    engine: Literal["results", "provider"] | None = Field(
        default=None, description="default: the tenant's suggestions.provider when configured, else results"
    )
    limit: int = Field(default=5, ge=1, le=20)


class Suggestions(SuggestionsRecord):
    """Ranked suggestions with a reason each; advisory: the campaign is not changed."""


# --- segments and suppressions


class SegmentEstimateRequest(BaseModel):
    """The segment to estimate."""

    model_config = ConfigDict(extra="forbid")

    segment: dict[str, Any] | str = Field(description="an inline segment, or the name of a tenant segment")


class SegmentEstimate(BaseModel):
    """How many customers a segment selects now, and a few of them."""

    count: int
    sample: list[CustomerRef] = Field(description="up to 10 members, lowest id first")


class SuppressionIn(BaseModel):
    """An address never to contact on a channel."""

    model_config = ConfigDict(extra="forbid")

    channel: ChannelName
    address: str = Field(min_length=1, max_length=320)
    reason: Literal["manual", "unsubscribed", "complaint", "bounce"] = "manual"


class Suppression(SuppressionIn):
    """A stored suppression."""

    created_at: dt.datetime


# --- customers and events in


def _rows(max_length: int, description: str) -> Any:
    """A body's list of rows, JSON objects the route validates one by one: 1 to `max_length`."""
    return Field(min_length=1, max_length=max_length, description=description)


_CUSTOMER_ROWS = (
    "rows of external_id (required), email, phone (E.164), push_token, first_name, last_name, locale, "
    "time_zone (IANA), loyalty_tier, city, country, birth_date, consent {email, sms, push}, attributes {…}. "
    "A field left out keeps its stored value; attributes merge and a key set to null is removed"
)
_EVENT_ROWS = (
    "rows of id (required, idempotency), customer_id or external_id, type ('purchase' or a custom name), "
    "at (ISO 8601 with offset), amount (required for a purchase), currency, sku, category, properties {…}"
)


class CustomersUpsert(BaseModel):
    """Customers to insert or update by `external_id`; each row is validated on its own."""

    model_config = ConfigDict(extra="forbid")

    customers: list[dict[str, Any]] = _rows(MAX_BATCH, _CUSTOMER_ROWS)


class RowErrors(BaseModel):
    """The rows that were not written, each problem as `customers[3].email: reason`."""

    rejected: int = Field(description="rows not written")
    errors: list[str]


class CustomersUpserted(RowErrors):
    """What an upsert did: customers inserted and updated, and the rows it refused."""

    inserted: int
    updated: int


class EventsIn(BaseModel):
    """Customer events (purchases and custom events); each row is validated on its own."""

    model_config = ConfigDict(extra="forbid")

    events: list[dict[str, Any]] = _rows(MAX_EVENTS, _EVENT_ROWS)


class EventsAccepted(RowErrors):
    """What a batch of events did: stored, attributed to a message (or holdout), replayed ids, refused rows."""

    accepted: int = Field(description="new events stored")
    attributed: int = Field(description="of the accepted, those attributed to a run's message or holdout")
    duplicates: list[str] = Field(description="event ids already stored (or repeated in this batch): unchanged")


class ProviderEventsAnswer(BaseModel):
    """What became of a provider's request's events."""

    received: int
    stored: int
    duplicates: int
    ignored: int
    unmatched: int
    unsupported: int
    suppressed: int
    unmatched_ids: list[str]


# --- tenants and their configuration


class TenantSummary(BaseModel):
    """A tenant in the list: slug, name, current config version and task queue."""

    slug: str
    display_name: str
    current_version: int | None
    created_at: dt.datetime
    task_queue: str

    @classmethod
    def of(cls, row: dict[str, Any]) -> Self:
        """A tenant row (core.tenants.config_store.list_tenants) with its task queue."""
        return cls(**row, task_queue=task_queue_for(row["slug"]))


class IssuedKey(BaseModel):
    """A new API key, shown once (only its hash is stored)."""

    id: str
    tenant: str
    key: str
    label: str
    prefix: str


class ApiKey(BaseModel):
    """An API key as listed: never the key itself nor its hash."""

    id: str
    tenant: str | None = Field(description="null for an admin key")
    label: str
    prefix: str = Field(description="first characters of the key, to recognise it by; empty for older keys")
    created_at: dt.datetime
    last_used_at: dt.datetime | None = Field(description="refreshed at most once a minute")
    revoked_at: dt.datetime | None


class ConfigVersionSummary(BaseModel):
    """A stored config version without its body."""

    version: int
    checksum: str
    author: str
    created_at: str

    @classmethod
    def of(cls, row: dict[str, Any]) -> Self:
        """The body for a version row of core/tenants/config_store.py."""
        return cls(**{**row, "created_at": row["created_at"].isoformat()})


class ConfigVersion(ConfigVersionSummary):
    """A stored config version with its body, and whether it is the current one."""

    tenant: str
    current: bool
    config: dict[str, Any]


class SaveResult(BaseModel):
    """The version a saved config got; `created` is false when it equals the current one."""

    tenant: str
    version: int
    created: bool


class ConfigValidation(BaseModel):
    """A config that would be accepted, and its checksum."""

    valid: bool
    checksum: str


class ConfigDiff(BaseModel):
    """What changed between two config versions: each changed path, and a unified YAML diff."""

    model_config = ConfigDict(populate_by_name=True)

    tenant: str
    from_version: int = Field(alias="from")
    to_version: int = Field(alias="to")
    changes: list[dict[str, Any]]
    unified: str


# --- health


class Health(BaseModel):
    """Whether PostgreSQL and Temporal answer; `status` names what is down."""

    status: str
    checks: dict[str, str]
