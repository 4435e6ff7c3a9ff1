"""Optimisation advice: send-time optimisation (each recipient's best local hour) and ranked
subject-line suggestions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core import lazy_exports

if TYPE_CHECKING:
    from core.optimisation.send_times import (
        Audience,
        SendTimePreview,
        assign_run_send_times,
        preview_send_times,
    )
    from core.optimisation.suggestions import ProviderFailure, SuggestionsRecord, suggest

_EXPORTS = {
    "Audience": "send_times",
    "ProviderFailure": "suggestions",
    "SendTimePreview": "send_times",
    "SuggestionsRecord": "suggestions",
    "assign_run_send_times": "send_times",
    "preview_send_times": "send_times",
    "suggest": "suggestions",
}
__all__ = [
    "Audience",
    "ProviderFailure",
    "SendTimePreview",
    "SuggestionsRecord",
    "assign_run_send_times",
    "preview_send_times",
    "suggest",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
