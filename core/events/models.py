"""What the tracking API's events are once checked: the event to store, and a problem found
with one event of a body (its index, the field, the reason)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Problem:
    """One event rejected (or one identify trait dropped): its index in the body, the field, why."""

    index: int
    field: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """The problem as the tracking API reports it."""
        return {"index": self.index, "field": self.field, "reason": self.reason}


@dataclass
class Event:
    """One checked event, ready to store."""

    index: int
    message_id: str
    given_id: bool
    type: str
    timestamp: dt.datetime
    sent_at: dt.datetime | None
    event: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    previous_id: str | None = None
    group_id: str | None = None
    properties: str = "{}"
    traits: dict[str, Any] = field(default_factory=dict)
    traits_json: str = "{}"
    context: dict[str, Any] = field(default_factory=dict)
    context_json: str = "{}"
    customer_id: int | None = None
