"""One campaign variant rendered for one customer on one channel, outside any run: the
campaign preview and test sends. Rendering goes through the same templating functions as
delivery, so what a marketer sees is what recipients get."""

from __future__ import annotations

import dataclasses
from typing import Any

import jinja2
from pydantic import BaseModel, Field

from core import templating
from core.campaigns import CampaignSpec
from core.segments import compile_segment
from core.templating import TemplateError
from core.tenant_config import EmailAddress, TenantConfig

# Stands in for a customer when the tenant has none yet.
PLACEHOLDER_CUSTOMER: dict[str, Any] = {
    "id": None,
    "external_id": "sample",
    "first_name": "Alex",
    "last_name": "Sample",
    "email": "alex.sample@example.com",
    "phone": "+12125550100",
    "push_token": None,
    "locale": None,
    "time_zone": None,
    "loyalty_tier": "gold",
    "city": "Springfield",
    "country": "US",
    "attributes": {},
}
_CUSTOMER_SQL = "SELECT * FROM customers c WHERE c.tenant_id = $1 AND c.id = $2"
_RENDERERS: dict[str, Any] = {
    "sms": templating.render_sms,
    "push": templating.render_push,
    "webhook": templating.render_webhook,
}


def preview_unsubscribe_url(public_base_url: str) -> str:
    """Previews and test sends carry a link that unsubscribes nobody: a real signed link would
    let whoever clicks it in a preview unsubscribe the sample customer."""
    return f"{public_base_url.rstrip('/')}/u/preview"


async def sample_customer(
    conn: Any, tenant: str, spec: CampaignSpec, config: TenantConfig, customer_id: int | None = None
) -> dict[str, Any] | None:
    """The customer `customer_id` (None if there is no such customer), else the first member of
    the campaign's audience, else the tenant's first customer, else a placeholder."""
    if customer_id is not None:
        row = await conn.fetchrow(_CUSTOMER_SQL, tenant, customer_id)
        return dict(row) if row is not None else None
    segment = {"segment": spec.segment} if isinstance(spec.segment, str) else spec.segment
    compiled = compile_segment(segment, config.segments, first_param=2)
    row = await conn.fetchrow(
        f"SELECT * FROM customers c WHERE c.tenant_id = $1 AND ({compiled.where}) ORDER BY c.id LIMIT 1",
        tenant,
        *compiled.params,
    )
    if row is None:
        row = await conn.fetchrow("SELECT * FROM customers c WHERE c.tenant_id = $1 ORDER BY c.id LIMIT 1", tenant)
    if row is not None:
        return dict(row)
    return {
        **PLACEHOLDER_CUSTOMER,
        "locale": config.brand.default_locale,
        "time_zone": config.brand.default_time_zone,
    }


def render_variant(
    config: TenantConfig,
    spec: CampaignSpec,
    campaign_id: str,
    variant_key: str,
    channel: str,
    customer: dict[str, Any],
    unsubscribe_url: str,
) -> dict[str, Any]:
    """The rendered content's fields (email: subject, html, text). Raises TemplateError naming
    the variant when its template is missing, lacks the channel or fails to render."""
    index, variant = next((i, v) for i, v in enumerate(spec.variants) if v.key == variant_key)
    path = f"variants[{index}].template"
    tset = config.templates.get(variant.template)
    if tset is None:
        raise TemplateError([f"{path}: unknown template '{variant.template}'"])
    locale = customer.get("locale") or config.brand.default_locale
    template = templating.content_for_locale(tset, channel, locale)
    if template is None:
        raise TemplateError([f"{path}: template '{variant.template}' has no {channel} part"])
    ctx = templating.render_context(
        customer, config.brand, {"id": campaign_id, "name": spec.name}, variant.key, unsubscribe_url
    )
    try:
        if channel == "email":
            rendered: Any = templating.render_email(template, ctx, subject_override=variant.subject)
        else:
            rendered = _RENDERERS[channel](template, ctx)
    except jinja2.TemplateError as exc:
        raise TemplateError([f"{path}: template '{variant.template}' does not render: {exc}"]) from None
    return dataclasses.asdict(rendered)


class TestSendInput(BaseModel):
    """Send one campaign's rendered email to seed addresses; the ledger is not involved."""

    tenant: str
    campaign_id: str
    send_id: str  # one per request, so a retried send reuses its idempotency keys
    emails: list[EmailAddress] = Field(min_length=1, max_length=20)
    variants: list[str] = Field(min_length=1)
    customer_id: int | None = None


class TestSendMessage(BaseModel):
    email: str
    variant: str
    status: str  # sent | failed
    reason: str | None = None
    message_id: str | None = None


class TestSendResult(BaseModel):
    customer_id: int | None  # whose data filled the templates; None for the placeholder
    messages: list[TestSendMessage]
