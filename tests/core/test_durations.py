"""Durations as marketers write them, and as the console shows them back."""

from __future__ import annotations

import pytest

from core.common.durations import describe_duration, duration_seconds


@pytest.mark.parametrize(
    ("stored", "shown"),
    [(14400.0, "4h"), (5400.0, "90m"), (172800.0, "2d"), (45.0, "45s"), (1.5, "1.5s"), ("4h", "4h"), ("90m", "90m")],
)
def test_a_stored_duration_is_shown_in_the_largest_whole_unit(stored: float | str, shown: str) -> None:
    assert describe_duration(stored) == shown
    assert duration_seconds(shown) == duration_seconds(stored)
