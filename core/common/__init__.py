"""Small shared pieces with no domain of their own: durations a marketer writes, validation-error
formatting, signing (webhook signatures and signed links), and the statistics results and
experiments use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core import lazy_exports

if TYPE_CHECKING:
    from core.common.durations import Duration, describe_duration, duration_seconds
    from core.common.signing import sign, verify
    from core.common.validation import error_lines

_EXPORTS = {
    "Duration": "durations",
    "describe_duration": "durations",
    "duration_seconds": "durations",
    "error_lines": "validation",
    "sign": "signing",
    "verify": "signing",
}
__all__ = [
    "Duration",
    "describe_duration",
    "duration_seconds",
    "error_lines",
    "sign",
    "verify",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
