"""Engagement: open and click tracking (tokens, link rewriting, bot detection, the hit writer),
provider events (receipts, bounces, complaints), and conversions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core import lazy_exports

if TYPE_CHECKING:
    from core.engagement.conversions import record_events
    from core.engagement.provider_events import (
        EmailEvent,
        Provider,
        ProviderEvent,
        StatusCallback,
        check_signature,
        email_events,
        record,
        signed_headers,
        status_events,
    )
    from core.engagement.tracking import Hit, Kind, RunTracking, Token, agent_reason, insert_hits, record_links

_EXPORTS = {
    "EmailEvent": "provider_events",
    "Hit": "tracking",
    "Kind": "tracking",
    "Provider": "provider_events",
    "ProviderEvent": "provider_events",
    "RunTracking": "tracking",
    "StatusCallback": "provider_events",
    "Token": "tracking",
    "agent_reason": "tracking",
    "check_signature": "provider_events",
    "email_events": "provider_events",
    "insert_hits": "tracking",
    "record": "provider_events",
    "record_events": "conversions",
    "record_links": "tracking",
    "signed_headers": "provider_events",
    "status_events": "provider_events",
}
__all__ = [
    "EmailEvent",
    "Hit",
    "Kind",
    "Provider",
    "ProviderEvent",
    "RunTracking",
    "StatusCallback",
    "Token",
    "agent_reason",
    "check_signature",
    "email_events",
    "insert_hits",
    "record",
    "record_events",
    "record_links",
    "signed_headers",
    "status_events",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
