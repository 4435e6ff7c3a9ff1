"""Results per variant and holdout of runs and campaigns, read from the rollup the triggers keep."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core import lazy_exports

if TYPE_CHECKING:
    from core.results.report import GroupResult, GroupSeries, ResultsRecord, SeriesRecord, results

_EXPORTS = {
    "GroupResult": "report",
    "GroupSeries": "report",
    "ResultsRecord": "report",
    "SeriesRecord": "report",
    "results": "report",
}
__all__ = [
    "GroupResult",
    "GroupSeries",
    "ResultsRecord",
    "SeriesRecord",
    "results",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
