"""The campaigns table: the one place that reads and writes campaign rows, for the API and the
run activities alike. Functions take a tenant-scoped connection (core/infra/db.py `tenant_tx`) and
return domain objects, or None for a campaign that does not exist; callers choose the error."""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from core.campaigns.spec import CampaignSpec
from core.common.ids import as_uuid
from core.infra.db import TenantConn

_COLUMNS = "id, definition, status, created_at"


class CampaignStatus(StrEnum):
    """A campaign's lifecycle: active, or archived (kept with its runs, starts nothing new)."""

    ACTIVE = "active"
    ARCHIVED = "archived"


class CampaignRecord(BaseModel):
    """A stored campaign: its id, definition, status and creation time."""

    id: str
    spec: CampaignSpec
    status: CampaignStatus
    created_at: dt.datetime

    @property
    def startable(self) -> bool:
        """Whether the campaign may start runs or change: archiving freezes it."""
        return self.status is not CampaignStatus.ARCHIVED


def _record(row: Any) -> CampaignRecord:
    return CampaignRecord(
        id=str(row["id"]),
        spec=CampaignSpec.model_validate(row["definition"]),
        status=row["status"],
        created_at=row["created_at"],
    )


def _definition(spec: CampaignSpec) -> dict[str, Any]:
    # Stored without unset fields: what the campaign leaves unset follows the tenant's defaults.
    return spec.model_dump(mode="json", exclude_unset=True)


async def get_campaign(
    conn: TenantConn, tenant: str, campaign_id: str | uuid.UUID, *, for_update: bool = False
) -> CampaignRecord | None:
    """The campaign, or None; `for_update` locks its row for the rest of the transaction."""
    cid = as_uuid(campaign_id)
    if cid is None:
        return None
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM campaigns WHERE tenant_id = $1 AND id = $2{lock}", tenant, cid)
    return None if row is None else _record(row)


async def list_campaigns(conn: TenantConn, tenant: str) -> list[CampaignRecord]:
    """Every campaign of the tenant, newest first."""
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM campaigns WHERE tenant_id = $1 ORDER BY created_at DESC", tenant)
    return [_record(r) for r in rows]


async def create_campaign(conn: TenantConn, tenant: str, spec: CampaignSpec) -> CampaignRecord:
    """Store a new campaign under a fresh id."""
    row = await conn.fetchrow(
        f"""INSERT INTO campaigns (tenant_id, id, name, definition) VALUES ($1, $2, $3, $4)
            RETURNING {_COLUMNS}""",
        tenant,
        uuid.uuid4(),
        spec.name,
        _definition(spec),
    )
    return _record(row)


async def update_campaign(
    conn: TenantConn, tenant: str, campaign_id: str | uuid.UUID, spec: CampaignSpec
) -> CampaignRecord | None:
    """Replace the campaign's definition; None when there is no such campaign."""
    row = await conn.fetchrow(
        f"""UPDATE campaigns SET name = $3, definition = $4, updated_at = now()
            WHERE tenant_id = $1 AND id = $2 RETURNING {_COLUMNS}""",
        tenant,
        as_uuid(campaign_id),
        spec.name,
        _definition(spec),
    )
    return None if row is None else _record(row)


async def archive_campaign(conn: TenantConn, tenant: str, campaign_id: str | uuid.UUID) -> CampaignRecord | None:
    """Mark the campaign archived; None when there is no such campaign."""
    row = await conn.fetchrow(
        f"""UPDATE campaigns SET status = $3, updated_at = now()
            WHERE tenant_id = $1 AND id = $2 RETURNING {_COLUMNS}""",
        tenant,
        as_uuid(campaign_id),
        CampaignStatus.ARCHIVED.value,
    )
    return None if row is None else _record(row)
