"""The suppression list and unsubscribes: who must not be contacted on which channel."""

from __future__ import annotations

from core.content.channels import CHANNELS
from core.infra.db import TenantConn
from core.tenants.config_schema import ChannelName


def normalise(channel: str, address: str) -> str:
    """The address as the list stores and compares it (the channel registry's rule)."""
    return CHANNELS[channel].normalise(address)


async def suppress(conn: TenantConn, tenant: str, channel: str, address: str, reason: str) -> bool:
    """Add an address to the tenant's list; returns False when it was already there."""
    status = await conn.execute(
        """INSERT INTO suppressions (tenant_id, channel, address, reason) VALUES ($1, $2, $3, $4)
           ON CONFLICT DO NOTHING""",
        tenant,
        channel,
        normalise(channel, address),
        reason,
    )
    return bool(status.endswith(" 1"))


async def suppressed_addresses(conn: TenantConn, tenant: str, channel: str, addresses: list[str]) -> set[str]:
    """Which of `addresses` (normalised) are on the list for `channel`."""
    if not addresses:
        return set()
    rows = await conn.fetch(
        "SELECT address FROM suppressions WHERE tenant_id = $1 AND channel = $2 AND address = ANY($3::text[])",
        tenant,
        channel,
        [normalise(channel, a) for a in addresses],
    )
    return {r["address"] for r in rows}


async def unsubscribe(conn: TenantConn, tenant: str, customer_id: int, channel: ChannelName) -> str | None:
    """Withdraw the customer's consent for `channel` and suppress the address they used.

    Returns the address unsubscribed, or None when the customer no longer exists.
    """
    entry = CHANNELS[channel]
    if entry.consent_column is None:
        return None  # a webhook has no address of the customer's to unsubscribe
    row = await conn.fetchrow(
        f"UPDATE customers SET {entry.consent_column} = false, updated_at = now() "
        f"WHERE tenant_id = $1 AND id = $2 RETURNING {entry.address_column} AS address",
        tenant,
        customer_id,
    )
    if row is None:
        return None
    if row["address"]:
        await suppress(conn, tenant, channel, row["address"], "unsubscribed")
    return row["address"] or ""
