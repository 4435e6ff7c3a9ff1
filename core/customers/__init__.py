"""Customers: records and their import, the segment language and its SQL compiler, and the
suppression list."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core import lazy_exports

if TYPE_CHECKING:
    from core.customers.records import MAX_BATCH, Describe, field_errors, file_format, import_file, upsert_batch
    from core.customers.segments import SegmentError, compile_segment
    from core.customers.suppressions import normalise, suppress, suppressed_addresses, unsubscribe

_EXPORTS = {
    "Describe": "records",
    "MAX_BATCH": "records",
    "SegmentError": "segments",
    "compile_segment": "segments",
    "field_errors": "records",
    "file_format": "records",
    "import_file": "records",
    "normalise": "suppressions",
    "suppress": "suppressions",
    "suppressed_addresses": "suppressions",
    "unsubscribe": "suppressions",
    "upsert_batch": "records",
}
__all__ = [
    "MAX_BATCH",
    "Describe",
    "SegmentError",
    "compile_segment",
    "field_errors",
    "file_format",
    "import_file",
    "normalise",
    "suppress",
    "suppressed_addresses",
    "unsubscribe",
    "upsert_batch",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
