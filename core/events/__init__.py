"""Events in: the Segment-compatible tracking API's domain — source keys (write keys), checking
and storing a body's events exactly once, identities (identify, alias, anonymous ids), and the
tenant's event stream read back (a customer's profile and events)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core import lazy_exports

if TYPE_CHECKING:
    from core.events.ingest import MAX_BATCH_BYTES, MAX_EVENT_BYTES, BadBody, Outcome, Parsed, parse_body, store
    from core.events.models import Event, Problem
    from core.events.sources import Source, create_source, list_sources, lookup_source, revoke_source
    from core.events.stream import customer_events, customer_profile, ensure_partitions

_EXPORTS = {
    "BadBody": "ingest",
    "Event": "models",
    "MAX_BATCH_BYTES": "ingest",
    "MAX_EVENT_BYTES": "ingest",
    "Outcome": "ingest",
    "Parsed": "ingest",
    "Problem": "models",
    "Source": "sources",
    "create_source": "sources",
    "customer_events": "stream",
    "customer_profile": "stream",
    "ensure_partitions": "stream",
    "list_sources": "sources",
    "lookup_source": "sources",
    "parse_body": "ingest",
    "revoke_source": "sources",
    "store": "ingest",
}
__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_EVENT_BYTES",
    "BadBody",
    "Event",
    "Outcome",
    "Parsed",
    "Problem",
    "Source",
    "create_source",
    "customer_events",
    "customer_profile",
    "ensure_partitions",
    "list_sources",
    "lookup_source",
    "parse_body",
    "revoke_source",
    "store",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
