"""Frequency caps, counted from the ledger over rolling windows."""

from __future__ import annotations

from collections import Counter

from core.infra.db import TenantConn
from core.tenants.config_schema import FrequencyCap

# Sent messages of the given customers in the last `hours`, per customer and channel,
# leaving out the run being delivered (its own sends are counted as the batch goes).
_RECENT_SQL = """
SELECT customer_id, channel, count(*) AS n FROM deliveries
WHERE tenant_id = $1 AND customer_id = ANY($2::bigint[]) AND status = 'sent'
  AND created_at >= now() - make_interval(hours => $3) AND run_id <> $4::uuid
GROUP BY customer_id, channel
"""


class CapTracker:
    """Decides, message by message, whether a customer is over any of the tenant's caps."""

    def __init__(self, caps: list[FrequencyCap], recent: dict[int, list[Counter[str]]]):
        self.caps = caps
        self.recent = recent  # customer → one Counter of channel sends per cap window

    @classmethod
    async def load(
        cls, conn: TenantConn, tenant: str, run_id: str, caps: list[FrequencyCap], customers: list[int]
    ) -> CapTracker:
        """The ledger counts the caps need for these customers, read once per batch."""
        recent: dict[int, list[Counter[str]]] = {c: [Counter() for _ in caps] for c in customers}
        for i, cap in enumerate(caps):
            for row in await conn.fetch(_RECENT_SQL, tenant, customers, cap.window_hours, run_id):
                recent[row["customer_id"]][i][row["channel"]] = row["n"]
        return cls(caps, recent)

    def capped(self, customer: int, channel: str) -> bool:
        """Whether one more message on `channel` would break a cap for this customer."""
        counters = self.recent.get(customer)
        if counters is None:
            return False
        for cap, counter in zip(self.caps, counters, strict=True):
            used = sum(counter.values()) if cap.channel == "any" else counter[channel]
            if cap.channel in ("any", channel) and used >= cap.max_messages:
                return True
        return False

    def record(self, customer: int, channel: str) -> None:
        """Count a message about to be sent in this run against every window."""
        for counter in self.recent.setdefault(customer, [Counter() for _ in self.caps]):
            counter[channel] += 1
