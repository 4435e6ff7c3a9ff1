"""The tenant configuration schema: everything that differs between tenants, as data."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_SECRET_REF_RE = re.compile(r"^env:[A-Z_][A-Z0-9_]*$")


class Strict(BaseModel):
    """Unknown keys are errors: a typo in a config must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _secret_ref(value: str) -> str:
    if not _SECRET_REF_RE.match(value):
        raise ValueError("literal secret not allowed; use env:NAME")
    return value


SecretRef = Annotated[str, AfterValidator(_secret_ref)]


class Brand(Strict):
    name: str = Field(min_length=1)
    from_email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    from_name: str | None = None
    reply_to: str | None = None
    base_url: str = "https://example.com"
    logo_url: str | None = None
    primary_color: str = Field(default="#1f6feb", pattern=r"^#[0-9a-fA-F]{6}$")
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    default_locale: str = "en-US"
    default_time_zone: str = "UTC"


class ChannelConfig(Strict):
    enabled: bool = True
    provider: str
    endpoint: str | None = None
    sender: str | None = None
    credentials: dict[str, SecretRef] = Field(default_factory=dict)
    rate_limit_per_second: float | None = Field(default=None, gt=0)


class Channels(Strict):
    email: ChannelConfig | None = None
    sms: ChannelConfig | None = None
    push: ChannelConfig | None = None
    webhook: ChannelConfig | None = None

    def enabled(self) -> list[str]:
        return [name for name in ("email", "sms", "push", "webhook") if (c := getattr(self, name)) and c.enabled]


class Execution(Strict):
    batch_size: int = Field(default=500, ge=1, le=5000)
    max_concurrent_batches: int = Field(default=4, ge=1, le=64)
    activities_per_second: float | None = Field(default=None, gt=0)
    max_concurrent_activities: int = Field(default=20, ge=1, le=1000)


class EmailTemplate(Strict):
    subject: str
    html: str
    text: str | None = None


class SmsTemplate(Strict):
    body: str


class PushTemplate(Strict):
    title: str
    body: str
    data: dict[str, str] = Field(default_factory=dict)


class WebhookTemplate(Strict):
    payload: dict[str, Any]


class TemplateContent(Strict):
    email: EmailTemplate | None = None
    sms: SmsTemplate | None = None
    push: PushTemplate | None = None
    webhook: WebhookTemplate | None = None


class TemplateSet(TemplateContent):
    """A template per channel, with optional per-locale overrides (e.g. `fr-CA`)."""

    locales: dict[str, TemplateContent] = Field(default_factory=dict)


class TenantConfig(Strict):
    """One tenant's complete behaviour. Stored as immutable, checksummed versions."""

    slug: str
    display_name: str = Field(min_length=1)
    brand: Brand
    channels: Channels = Channels()
    execution: Execution = Execution()
    segments: dict[str, dict[str, Any]] = Field(default_factory=dict)
    templates: dict[str, TemplateSet] = Field(default_factory=dict)

    @field_validator("slug")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not SLUG_RE.match(v):
            raise ValueError("must be lowercase letters, digits and '-', starting with a letter or digit")
        return v

    @property
    def task_queue(self) -> str:
        return task_queue_for(self.slug)

    def checksum(self) -> str:
        return config_checksum(self.model_dump(mode="json"))


def task_queue_for(slug: str) -> str:
    """Each tenant's work runs on its own task queue: isolation by construction."""
    return f"tenant-{slug}"


def config_checksum(data: dict[str, Any]) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


ChannelName = Literal["email", "sms", "push", "webhook"]
