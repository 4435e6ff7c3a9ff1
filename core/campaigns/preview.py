"""Previews and test sends: whose data fills them and the link they carry (the test-send
workflow's input and output are core/campaigns/test_send_io.py). Rendering itself is
core.content.rendering.render_message, the same function delivery uses, so what a marketer
sees is what recipients get."""

from __future__ import annotations

from typing import Any

from core.campaigns.spec import CampaignSpec
from core.content.rendering import sample_customer
from core.customers.segments import compile_segment
from core.infra.db import TenantConn
from core.tenants.config_schema import TenantConfig

_CUSTOMER_SQL = "SELECT * FROM customers c WHERE c.tenant_id = $1 AND c.id = $2"


def preview_unsubscribe_url(public_base_url: str) -> str:
    """Previews and test sends carry a link that unsubscribes nobody: a real signed link would
    let whoever clicks it in a preview unsubscribe the sample customer."""
    return f"{public_base_url.rstrip('/')}/u/preview"


async def preview_customer(
    conn: TenantConn, tenant: str, spec: CampaignSpec, config: TenantConfig, customer_id: int | None = None
) -> dict[str, Any] | None:
    """Whose data fills a preview or test send: the customer `customer_id` (None if there is no
    such customer), else the first member of the campaign's audience, else the tenant's first
    customer, else the sample customer."""
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
    return sample_customer(config)
