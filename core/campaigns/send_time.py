"""A campaign's `send_time` field (`optimal`: each recipient at their best local hour) and its
save-time check. What the field does at run time (learning each recipient's hour and turning it
into waves) is core/optimisation/send_times.py, above campaigns."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


class OptimalSendTime(BaseModel):
    """`send_time: optimal` on a campaign: each recipient at their best local hour."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["optimal"] = "optimal"
    within_hours: int = Field(
        default=24, ge=1, le=168, description="send everyone within this many hours of the run's start"
    )
    fallback_local_time: dt.time = Field(
        default=dt.time(10, 0), description="local send time (HH:MM) of recipients with no open or click history"
    )


def _shorthand(value: Any) -> Any:
    return {"mode": value} if isinstance(value, str) else value


SendTime = Annotated[OptimalSendTime, BeforeValidator(_shorthand)]


def check_send_time(send_time: OptimalSendTime | None, local_send_time: dt.time | None) -> list[str]:
    """What in a campaign's `send_time` cannot work with its other fields (`path: reason` lines)."""
    if send_time is not None and local_send_time is not None:
        return ["send_time: cannot be combined with local_send_time (each recipient gets their own hour)"]
    return []
