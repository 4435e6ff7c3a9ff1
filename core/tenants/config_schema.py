"""The tenant configuration schema: everything that differs between tenants, as data."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from core.common.egress_rules import EgressRefused, literal_never_passes, parse_target
from core.infra.temporal import task_queue_for

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def endpoint_problem(value: str, schemes: tuple[str, ...]) -> str | None:
    """Why the guarded client could never call `value` (a literal non-public address without an
    allow entry, plaintext without one, userinfo, another scheme), else None: the guard's own
    rules (core/common/egress_rules.py, no HTTP client). Names are checked at send, when they
    are resolved."""
    try:
        parse_target(value, schemes)
    except EgressRefused as exc:
        return f"'{value}' can never be called: {exc.why}"
    why = literal_never_passes(value, schemes)
    return f"'{value}' can never be called: {why}" if why else None


# `secret:NAME` names a secret in the tenant's own store (core/security/secrets.py). `env:NAME`
# is still read so that stored versions from before the store load for history and diff, but a
# save refuses it (config_store.parse_config) and a send never resolves it.
_SECRET_REF_RE = re.compile(r"^(secret:[A-Za-z][A-Za-z0-9_]{0,63}|env:[A-Z_][A-Z0-9_]*)$")
LEGACY_SECRET_PREFIX = "env:"


class Strict(BaseModel):
    """Unknown keys are errors: a typo in a config must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _secret_ref(value: str) -> str:
    if not _SECRET_REF_RE.match(value):
        raise ValueError(
            "a literal secret is not allowed; store it (PUT /v1/tenants/{tenant}/secrets/NAME) and write secret:NAME"
        )
    return value


SecretRef = Annotated[str, AfterValidator(_secret_ref)]


def _email_address(value: str) -> str:
    if not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", value):
        raise ValueError(f"'{value}' is not an email address")
    return value


EmailAddress = Annotated[str, AfterValidator(_email_address)]


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone '{value}' (use an IANA name such as America/Chicago)") from None
    return value


def _locale(value: str) -> str:
    if not re.match(r"^[a-z]{2,3}(-[A-Z]{2})?$", value):
        raise ValueError(f"'{value}' is not a locale like 'en' or 'en-US'")
    return value


TimeZone = Annotated[str, AfterValidator(_time_zone)]
Locale = Annotated[str, AfterValidator(_locale)]
ChannelName = Literal["email", "sms", "push", "webhook"]


class Brand(Strict):
    """The tenant's brand: names, sender, colours, locale and time zone."""

    name: str = Field(min_length=1)
    from_email: EmailAddress
    from_name: str | None = None
    reply_to: EmailAddress | None = None
    base_url: str = "https://example.com"
    logo_url: str | None = None
    primary_color: str = Field(default="#1f6feb", pattern=r"^#[0-9a-fA-F]{6}$")
    secondary_color: str = Field(default="#ffffff", pattern=r"^#[0-9a-fA-F]{6}$")
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    default_locale: Locale = "en-US"
    default_time_zone: TimeZone = "UTC"


class ChannelConfig(Strict):
    """One channel's provider settings and send rate."""

    enabled: bool = True
    endpoint: str | None = Field(default=None, description="provider base URL; the platform default when unset")
    sender: str | None = Field(default=None, description="from address, sender number or app id")
    credentials: dict[str, SecretRef] = Field(
        default_factory=dict, description="secret:NAME references to the tenant's secret store only"
    )
    rate_limit_per_second: float | None = Field(default=None, gt=0)
    # What the endpoint may be: https (plain http only to an operator's EGRESS_ALLOW entry).
    endpoint_schemes: ClassVar[tuple[str, ...]] = ("https", "http")


class EmailChannel(ChannelConfig):
    """Email over SMTP (the platform relay, or the tenant's own)."""

    provider: Literal["smtp"] = "smtp"
    # 8 by default: what the platform relay takes at full speed (benchmarks/throughput.py), and
    # under a relay's usual per-client limit (Postfix's default destination concurrency is 20).
    # A tenant whose own relay allows fewer (Microsoft 365 takes 3 per mailbox) sets fewer.
    connections: int = Field(
        default=8,
        ge=1,
        le=32,
        description="SMTP connections a worker process keeps open to the relay for this tenant at most; "
        "messages go over them in parallel",
    )

    # smtp:// requires STARTTLS, smtps:// is implicit TLS; plaintext only to an operator's
    # `smtp+plain://` EGRESS_ALLOW entry.
    endpoint_schemes: ClassVar[tuple[str, ...]] = ("smtp", "smtps")

    @field_validator("endpoint")
    @classmethod
    def _smtp_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^smtps?://[^/:\s]+(:[0-9]{1,5})?$", v):
            raise ValueError(f"'{v}' is not an SMTP relay like smtp://mail.example.com:587")
        return v


class SmsChannel(ChannelConfig):
    """SMS through a Twilio-like HTTP API."""

    provider: Literal["twilio-like"] = "twilio-like"


class PushChannel(ChannelConfig):
    """Push through an FCM-like batch HTTP API."""

    provider: Literal["fcm-like"] = "fcm-like"


class WebhookChannel(ChannelConfig):
    """Signed HTTP POSTs to the tenant's own endpoint."""

    provider: Literal["http"] = "http"


class Channels(Strict):
    """The tenant's channels; a missing one is disabled."""

    email: EmailChannel | None = None
    sms: SmsChannel | None = None
    push: PushChannel | None = None
    webhook: WebhookChannel | None = None

    def configured(self) -> list[tuple[str, ChannelConfig]]:
        """(name, settings) of each channel the config has, enabled or not."""
        return [(name, c) for name in ("email", "sms", "push", "webhook") if (c := getattr(self, name)) is not None]

    def enabled(self) -> list[str]:
        """The names of the channels that are configured and enabled."""
        return [name for name, c in self.configured() if c.enabled]


_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class QuietHours(Strict):
    """No message is sent between start and end in the recipient's local time (may span midnight)."""

    start: str = Field(pattern=_HHMM, description="HH:MM, recipient local time")
    end: str = Field(pattern=_HHMM, description="HH:MM, recipient local time")
    channels: list[ChannelName] = Field(default_factory=lambda: list[ChannelName](["sms", "push"]))

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("start and end must differ")
        return self

    def bounds(self) -> tuple[dt.time, dt.time]:
        """Start and end as times of day."""
        return dt.time.fromisoformat(self.start), dt.time.fromisoformat(self.end)


class FrequencyCap(Strict):
    """At most `max_messages` on `channel` ("any" counts every channel) per rolling window."""

    channel: ChannelName | Literal["any"] = "any"
    max_messages: int = Field(ge=1)
    window_hours: int = Field(ge=1, le=24 * 90)


# Marketing on personal channels needs consent; webhooks go to the tenant's own systems.
_CONSENT_DEFAULT: dict[ChannelName, bool] = {"email": True, "sms": True, "push": True, "webhook": False}


class Policies(Strict):
    """Send policies: quiet hours, frequency caps, local time, control group, consent."""

    quiet_hours: QuietHours | None = None
    frequency_caps: list[FrequencyCap] = Field(default_factory=list)
    send_in_local_time: bool = Field(default=True, description="timed sends use the recipient's time zone")
    holdout_percent: float = Field(default=0.0, ge=0, lt=100)
    consent_required: dict[ChannelName, bool] = Field(default_factory=lambda: dict(_CONSENT_DEFAULT))


class Execution(Strict):
    """How a tenant's runs execute: batches, concurrency, rates, retries, shard."""

    batch_size: int = Field(default=500, ge=1, le=5000)
    max_concurrent_batches: int = Field(default=4, ge=1, le=64)
    activities_per_second: float | None = Field(default=None, gt=0)
    max_concurrent_activities: int = Field(default=20, ge=1, le=1000)
    worker_shard: int | None = Field(default=None, ge=0, description="pin the tenant to a worker shard")
    max_batch_attempts: int = Field(
        default=5,
        ge=1,
        le=100,
        description="attempts a batch gets for an unexpected error before the run fails with its cause "
        "(provider outages and rate limits are retried with backoff until the run is cancelled)",
    )


class Engagement(Strict):
    """Tracking of opens and clicks, machine-event detection and conversion attribution."""

    track_opens: bool = Field(default=True, description="add an open pixel to HTML email")
    track_clicks: bool = Field(default=True, description="rewrite links in HTML email to tracked links")
    track_sms_links: bool = Field(default=False, description="also rewrite links in SMS bodies")
    track_push_links: bool = Field(default=False, description="also rewrite push deep links (data values)")
    machine_seconds: int = Field(
        default=5, ge=0, le=3600, description="an open or click this soon after the send is flagged machine"
    )
    attribution_window_days: float = Field(
        default=3.0, gt=0, le=90, description="a conversion counts for the last message within this many days"
    )


class Events(Strict):
    """The tenant's event stream in (the Segment-compatible tracking API, issue 23)."""

    rate_per_second: float = Field(
        default=5000, gt=0, le=100_000, description="events accepted per second, over every source; beyond it 429"
    )
    burst_seconds: float = Field(
        default=5, gt=0, le=60, description="a quiet tenant may send this many seconds' worth of events at once"
    )
    cors_origins: list[Annotated[str, StringConstraints(pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")]] = Field(
        default_factory=list,
        max_length=50,
        description="web origins (scheme://host[:port]) whose pages may send events; others are refused",
    )
    retention_days: int = Field(default=400, ge=1, le=3650, description="events older than this may be dropped")


class Experiments(Strict):
    """Defaults for campaigns that do not set their own split."""

    default_holdout_percent: float = Field(default=0.0, ge=0, lt=100)
    default_variant_weights: dict[str, float] = Field(default_factory=dict)

    @field_validator("default_variant_weights")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, w in v.items() if w <= 0]
        if bad:
            raise ValueError(f"weights must be positive: {', '.join(bad)}")
        return v


class EmailTemplate(Strict):
    """An email template: subject, HTML and optional text part."""

    subject: str
    html: str
    text: str | None = None


class SmsTemplate(Strict):
    """An SMS template."""

    body: str


class PushTemplate(Strict):
    """A push notification template."""

    title: str
    body: str
    data: dict[str, str] = Field(default_factory=dict)


class WebhookTemplate(Strict):
    """A webhook payload whose string values are templates."""

    payload: dict[str, Any]


class TemplateContent(Strict):
    """A template per channel."""

    email: EmailTemplate | None = None
    sms: SmsTemplate | None = None
    push: PushTemplate | None = None
    webhook: WebhookTemplate | None = None


class TemplateSet(TemplateContent):
    """A template per channel, with optional per-locale overrides (e.g. `fr-CA`)."""

    locales: dict[Locale, TemplateContent] = Field(default_factory=dict)


class ChatProvider(Strict):
    """A language model behind the widely used chat-completions HTTP API (OpenAI-style)."""

    endpoint: str = Field(
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="the API base URL (e.g. https://api.openai.com/v1); /chat/completions is added unless given",
    )
    api_key: SecretRef = Field(description="secret:NAME of the bearer key, in the tenant's secret store")
    model: str = Field(min_length=1, max_length=200)
    timeout_seconds: float = Field(default=20.0, gt=0, le=120)


class Suggestions(Strict):
    """Advisory subject-line and SMS-body suggestions: from the tenant's own results, or a provider."""

    provider: ChatProvider | None = None


class TenantConfig(Strict):
    """One tenant's complete behaviour. Stored as immutable, checksummed versions."""

    slug: str
    display_name: str = Field(min_length=1)
    brand: Brand
    channels: Channels = Channels()
    policies: Policies = Policies()
    execution: Execution = Execution()
    segments: dict[str, dict[str, Any]] = Field(default_factory=dict)
    templates: dict[str, TemplateSet] = Field(default_factory=dict)
    experiments: Experiments = Experiments()
    engagement: Engagement = Engagement()
    suggestions: Suggestions = Suggestions()
    events: Events = Events()

    @field_validator("slug")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not SLUG_RE.match(v):
            raise ValueError("must be lowercase letters, digits and '-', starting with a letter or digit")
        return v

    @property
    def task_queue(self) -> str:
        """This tenant's Temporal task queue."""
        return task_queue_for(self.slug)

    def secret_refs(self) -> dict[str, str]:
        """Every secret reference in the config: its path → the reference as written."""
        found = {
            f"channels.{channel}.credentials.{key}": ref
            for channel, settings in self.channels.configured()
            for key, ref in settings.credentials.items()
        }
        if self.suggestions.provider is not None:
            found["suggestions.provider.api_key"] = self.suggestions.provider.api_key
        return found

    def checksum(self) -> str:
        """The checksum a stored version carries."""
        return config_checksum(self.model_dump(mode="json"))


def config_checksum(data: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of a config."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def json_schema_text() -> str:
    """The JSON Schema of TenantConfig, as written to tenant_configs/schema.json for editors."""
    schema = TenantConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Pennant tenant configuration"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def endpoint_problems(config: TenantConfig) -> list[str]:
    """Every endpoint of `config` the guarded client could never call, as error lines naming
    its path. Checked when a config is saved (config_store.save_config), not when a stored
    version is read: an old version stays readable, and its refused endpoint fails at send."""
    found: list[str] = []
    for channel, settings in config.channels.configured():
        if settings.endpoint:
            why = endpoint_problem(settings.endpoint, settings.endpoint_schemes)
            if why:
                found.append(f"channels.{channel}.endpoint: {why}")
    provider = config.suggestions.provider
    if provider is not None:
        # What is called: the base with /chat/completions added unless it already ends so.
        base = provider.endpoint.rstrip("/")
        called = base if base.endswith("/chat/completions") else base + "/chat/completions"
        why = endpoint_problem(called, ("https", "http"))
        if why:
            found.append(f"suggestions.provider.endpoint: {why.replace(repr(called), repr(provider.endpoint), 1)}")
    return found
