"""Durations a marketer writes in a campaign or a run control: a number of seconds or
'<n>s|m|h|d' ('90m', '4h', '2d'). One definition for an experiment's decide_after, an extension
of a winner test and a fallback's wait."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# The longest wait a duration may ask for (a test's decision, one extension, a fallback's wait).
MAX_WAIT_SECONDS = 30 * 86400


def duration_seconds(value: float | str) -> float:
    """Seconds of a duration given as a number of seconds or as '<n>s|m|h|d' (e.g. '90m', '4h')."""
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(value.strip())
    if match is None:
        raise ValueError("must be a number of seconds or a duration like '30m', '4h' or '2d'")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def check_duration(value: float | str) -> float | str:
    """`value` as given when it is a duration of more than 0 and at most MAX_WAIT_SECONDS."""
    seconds = duration_seconds(value)
    if not 0 < seconds <= MAX_WAIT_SECONDS:
        raise ValueError(f"must be more than 0 and at most {MAX_WAIT_SECONDS // 86400} days")
    return value


def describe_duration(value: float | str) -> str:
    """A duration as a person writes it: '4h' for 14400 seconds; text is kept as written."""
    if isinstance(value, str):
        return value
    for unit in ("d", "h", "m"):
        count = value / _UNIT_SECONDS[unit]
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{value:g}s"


# A field holding such a duration, kept as written (the API reads back what was saved).
Duration = Annotated[float | str, AfterValidator(check_duration)]
