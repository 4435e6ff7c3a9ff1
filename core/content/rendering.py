"""The one rendering path: a campaign variant for one customer on one channel. Delivery,
preview and test sends call `render_message`; the save-time checks of tenant configs and
campaigns render through the same code against a sample customer that has every attribute."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from core.content.channels import CHANNELS
from core.content.templating import (
    EMAIL_SUBJECT,
    Part,
    RenderFailure,
    TemplateError,
    check_source,
    content_for_locale,
    render_context,
    render_part,
    report_progress,
)
from core.tenants.config_schema import Brand, TemplateContent, TemplateSet, TenantConfig


class MessageVariant(Protocol):
    """What rendering reads of a campaign variant (core.campaigns.spec.Variant is one)."""

    @property
    def key(self) -> str: ...

    @property
    def template(self) -> str: ...

    @property
    def subject(self) -> str | None: ...


class LinkTracking(Protocol):
    """What rendering asks of a run's tracking (core.engagement.tracking.RunTracking is one):
    the rendered content with its links rewritten and its open pixel added."""

    def apply(self, content: Any, channel: str, customer_id: int, unsubscribe_url: str) -> Any: ...


class RenderError(TemplateError):
    """A message that cannot be rendered; `errors` are `path: reason`. At save time it is a 422,
    at delivery that one message is recorded failed with reason `render_error`."""


class _AnyAttributes(dict[str, Any]):
    """The sample customer's attributes: every name a template asks for is there."""

    def __missing__(self, key: str) -> str:
        return "sample"


def sample_customer(config: TenantConfig | None = None) -> dict[str, Any]:
    """A customer with every field and every attribute filled, for save-time checks and for
    previews of a tenant that has no customers yet."""
    return {
        "id": None,
        "external_id": "sample-0001",
        "first_name": "Alex",
        "last_name": "Sample",
        "email": "alex.sample@example.com",
        "phone": "+12125550100",
        "push_token": "sample-push-token",
        "locale": config.brand.default_locale if config else "en-US",
        "time_zone": config.brand.default_time_zone if config else "UTC",
        "loyalty_tier": "gold",
        "city": "Springfield",
        "country": "US",
        "attributes": _AnyAttributes(),
    }


SAMPLE_CAMPAIGN = {"id": "00000000-0000-0000-0000-000000000000", "name": "Sample campaign"}
SAMPLE_UNSUBSCRIBE_URL = "https://example.com/u/sample"


def render_message(
    config: TenantConfig,
    variant: MessageVariant,
    channel: str,
    customer: dict[str, Any],
    *,
    campaign: dict[str, Any],
    unsubscribe_url: str,
    path: str = "variant",
    tracking: LinkTracking | None = None,
) -> Any:
    """`variant` rendered for `customer` on `channel` in the customer's locale: the channel's
    rendered content (RenderedEmail, RenderedSms, …). Raises RenderError naming `path`.
    Delivery passes its run's `tracking` (links rewritten, open pixel); previews and test
    sends pass none, so their links stay as the template wrote them and record nothing."""
    tset = config.templates.get(variant.template)
    if tset is None:
        raise RenderError([f"{path}.template: unknown template '{variant.template}'"])
    entry = CHANNELS[channel]
    template = content_for_locale(tset, channel, customer.get("locale") or config.brand.default_locale)
    if template is None:
        raise RenderError([f"{path}.template: template '{variant.template}' has no {channel} part"])
    ctx = render_context(customer, config.brand, campaign, variant.key, unsubscribe_url)
    try:
        content = entry.render(template, ctx, variant.subject)
    except RenderFailure as exc:
        where = f"{path}.subject" if exc.part == "subject" and variant.subject else f"{path}.template"
        raise RenderError(
            [f"{where}: {channel} {exc.part} of template '{variant.template}' does not render: {exc.reason}"]
        ) from None
    return content if tracking is None else tracking.apply(content, channel, customer["id"], unsubscribe_url)


# -- save-time checks ---------------------------------------------------------------------------


def check_part(source: str, path: str, part: Part, ctx: dict[str, Any]) -> list[str]:
    """Compile one template string, then render it for the sample customer within its limits."""
    errors = check_source(source, path, html=part.html)
    if errors:
        return errors
    try:
        render_part(source, ctx, part)
    except RenderFailure as exc:
        return [f"{path}: does not render for a sample customer: {exc.reason}"]
    return []


def _sample_ctx(brand: Brand | None, config: TenantConfig | None = None) -> dict[str, Any]:
    brand = brand or Brand(name="Sample", from_email="sample@example.com")
    return render_context(sample_customer(config), brand, SAMPLE_CAMPAIGN, "A", SAMPLE_UNSUBSCRIBE_URL)


def check_text(source: str, path: str, part: Part, config: TenantConfig) -> list[str]:
    """One template string (a suggested subject or SMS body) checked as a saved campaign's would be."""
    return check_part(source, path, part, _sample_ctx(config.brand, config))


def check_template_set(name: str, tset: TemplateSet, brand: Brand | None, prefix: str = "templates") -> list[str]:
    """Every problem in one named template, across channels and locales (empty if none)."""
    ctx = _sample_ctx(brand)
    errors: list[str] = []
    contents: list[tuple[str, TemplateContent]] = [(f"{prefix}.{name}", tset)]
    contents += [(f"{prefix}.{name}.locales.{loc}", c) for loc, c in tset.locales.items()]
    for path, content in contents:
        for entry in CHANNELS.values():
            template = entry.template(content)
            if template is None:
                continue
            report_progress(f"{path}.{entry.name}")  # listing a payload's strings is work too
            for suffix, source, part in entry.sources(template):
                errors += check_part(source, f"{path}.{entry.name}.{suffix}", part, ctx)
    return errors


def check_campaign_templates(
    variants: Sequence[MessageVariant], channels: Sequence[str], config: TenantConfig
) -> list[str]:
    """A campaign's variants' templates on each of its channels, rendered for the sample
    customer exactly as delivery would; subject overrides checked on their own first. A missing
    template or channel part is check_campaign's to report, once."""
    errors: list[str] = []
    ctx = _sample_ctx(config.brand, config)
    for i, variant in enumerate(variants):
        report_progress(f"variants[{i}]")
        tset = config.templates.get(variant.template)
        if tset is None or any(CHANNELS[c].template(tset) is None for c in channels):
            continue
        if variant.subject is not None:
            subject_errors = check_part(variant.subject, f"variants[{i}].subject", EMAIL_SUBJECT, ctx)
            if subject_errors:
                errors += subject_errors
                continue
        for channel in channels:
            try:
                render_message(
                    config,
                    variant,
                    channel,
                    sample_customer(config),
                    campaign=SAMPLE_CAMPAIGN,
                    unsubscribe_url=SAMPLE_UNSUBSCRIBE_URL,
                    path=f"variants[{i}]",
                )
            except RenderError as exc:
                errors += exc.errors
    return errors
