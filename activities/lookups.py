"""What every run activity reads first: the pinned tenant config and the campaign definition.
Both are missing only when something was deleted under a run, which no retry can mend."""

from __future__ import annotations

import asyncpg
from temporalio.exceptions import ApplicationError

from core.campaigns.spec import CampaignSpec
from core.campaigns.store import get_campaign
from core.infra.db import TenantConn
from core.tenants.config_schema import TenantConfig
from core.tenants.config_store import get_config


async def pinned_config(pool: asyncpg.Pool, tenant: str, version: int | None) -> TenantConfig:
    """The tenant's config at `version` (None: the current one)."""
    found = await get_config(pool, tenant, version)
    if found is None:
        what = f"config version {version}" if version is not None else "a config"
        raise ApplicationError(f"tenant '{tenant}' has no {what}", non_retryable=True)
    return found[1]


async def campaign_spec(conn: TenantConn, tenant: str, campaign_id: str) -> CampaignSpec:
    """The campaign's definition, read inside the caller's tenant transaction."""
    campaign = await get_campaign(conn, tenant, campaign_id)
    if campaign is None:
        raise ApplicationError(f"campaign {campaign_id} not found", non_retryable=True)
    return campaign.spec
