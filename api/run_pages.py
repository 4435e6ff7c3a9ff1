"""Cursor pages of runs and of a run's ledger, as the API's list routes (api/routes/runs.py) and
the console's pages answer them: the cursor decoded (a 422 naming `cursor` when it is not one
of ours), the rows read through core/runs/service.py, the next page's cursor."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg

from api.cursors import decode_cursor, next_cursor
from api.schemas import Delivery, DeliveryPage, RunPage, RunSummary
from core.runs import service as run_service
from core.runs import store as run_store
from core.runs.models import RunStatus


async def runs_page(
    pool: asyncpg.Pool,
    tenant: str,
    *,
    status: RunStatus | None,
    campaign_id: uuid.UUID | None,
    limit: int,
    cursor: str | None,
) -> RunPage:
    """Runs newest first after `cursor`, optionally of one status or campaign."""
    before = run_store.NEWEST_RUN
    if cursor is not None:
        position = decode_cursor(cursor, {"created_at", "id"})
        try:
            before = (dt.datetime.fromisoformat(position["created_at"]), uuid.UUID(position["id"]))
        except (TypeError, ValueError):
            decode_cursor("", {"created_at", "id"})  # raises the cursor's 422
    rows = await run_service.list_runs(
        pool, tenant, status=status, campaign_id=campaign_id, before=before, limit=limit + 1
    )
    return RunPage(
        items=[RunSummary(**r.model_dump()) for r in rows[:limit]],
        next_cursor=next_cursor(rows, limit, lambda r: {"created_at": r.created_at.isoformat(), "id": r.id}),
    )


async def deliveries_page(
    pool: asyncpg.Pool, tenant: str, run_id: str, *, limit: int, cursor: str | None, **filters: Any
) -> DeliveryPage:
    """The run's ledger in (customer, channel) order after `cursor`, filtered by `filters`
    (status, reason, channel, variant)."""
    after = run_store.FIRST_DELIVERY
    if cursor is not None:
        position = decode_cursor(cursor, {"customer_id", "channel"})
        if not isinstance(position["customer_id"], int) or not isinstance(position["channel"], str):
            decode_cursor("", {"customer_id", "channel"})  # raises the cursor's 422
        after = (position["customer_id"], position["channel"])
    rows = await run_service.list_deliveries(pool, tenant, run_id, after=after, limit=limit + 1, **filters)
    return DeliveryPage(
        items=[Delivery(**r.model_dump()) for r in rows[:limit]],
        next_cursor=next_cursor(rows, limit, lambda r: {"customer_id": r.customer_id, "channel": r.channel}),
    )
