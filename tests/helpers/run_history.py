"""What a run's workflow history says about its timers and batches (for timer tests, which read
the instants they check from history, not from the time-skipping server's clock)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle


async def fired_timers(handle: WorkflowHandle[Any, Any]) -> list[dt.datetime]:
    """When each timer the run started was due, in order."""
    events = (await handle.fetch_history()).events
    return sorted(
        e.event_time.ToDatetime(tzinfo=dt.UTC) + e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
        for e in events
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
    )


async def scheduled_batches(handle: WorkflowHandle[Any, Any]) -> list[tuple[dt.datetime, dict[str, Any]]]:
    """When each deliver_batch was scheduled, with its input."""
    out = []
    for e in (await handle.fetch_history()).events:
        if e.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            continue
        attrs = e.activity_task_scheduled_event_attributes
        if attrs.activity_type.name == "deliver_batch":
            out.append((e.event_time.ToDatetime(tzinfo=dt.UTC), json.loads(attrs.input.payloads[0].data)))
    return out
