"""Runs: the run workflow's inputs and outputs (ids, cursors, counts), the runs table and ledger
reads, send-time policies (quiet hours, waves) and frequency caps."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core import lazy_exports

if TYPE_CHECKING:
    from core.runs.frequency import CapTracker
    from core.runs.models import (
        ACTIVE_STATUSES,
        STORED_STATUSES,
        TERMINAL_STATUSES,
        AudiencePlan,
        BatchPage,
        BatchPageInput,
        BeginRunInput,
        CampaignRunInput,
        ConfigPin,
        Counts,
        DeliverBatchInput,
        LoadConfigInput,
        MarkRunInput,
        PlanAudienceInput,
        RescheduleInput,
        RunBegun,
        RunCarry,
        RunProgress,
        RunStatus,
        SkipRemainingInput,
        Wave,
    )
    from core.runs.policies import in_quiet_hours, local_send_instant, quiet_hours_end, quiet_hours_for, wave_instant
    from core.runs.store import DeliveryRecord, RunRecord, get_run, insert_run

_EXPORTS = {
    "ACTIVE_STATUSES": "models",
    "AudiencePlan": "models",
    "BatchPage": "models",
    "BatchPageInput": "models",
    "BeginRunInput": "models",
    "CampaignRunInput": "models",
    "CapTracker": "frequency",
    "ConfigPin": "models",
    "Counts": "models",
    "DeliverBatchInput": "models",
    "DeliveryRecord": "store",
    "LoadConfigInput": "models",
    "MarkRunInput": "models",
    "PlanAudienceInput": "models",
    "RescheduleInput": "models",
    "RunBegun": "models",
    "RunCarry": "models",
    "RunProgress": "models",
    "RunRecord": "store",
    "RunStatus": "models",
    "STORED_STATUSES": "models",
    "SkipRemainingInput": "models",
    "TERMINAL_STATUSES": "models",
    "Wave": "models",
    "get_run": "store",
    "in_quiet_hours": "policies",
    "insert_run": "store",
    "local_send_instant": "policies",
    "quiet_hours_end": "policies",
    "quiet_hours_for": "policies",
    "wave_instant": "policies",
}
__all__ = [
    "ACTIVE_STATUSES",
    "STORED_STATUSES",
    "TERMINAL_STATUSES",
    "AudiencePlan",
    "BatchPage",
    "BatchPageInput",
    "BeginRunInput",
    "CampaignRunInput",
    "CapTracker",
    "ConfigPin",
    "Counts",
    "DeliverBatchInput",
    "DeliveryRecord",
    "LoadConfigInput",
    "MarkRunInput",
    "PlanAudienceInput",
    "RescheduleInput",
    "RunBegun",
    "RunCarry",
    "RunProgress",
    "RunRecord",
    "RunStatus",
    "SkipRemainingInput",
    "Wave",
    "get_run",
    "in_quiet_hours",
    "insert_run",
    "local_send_instant",
    "quiet_hours_end",
    "quiet_hours_for",
    "wave_instant",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
