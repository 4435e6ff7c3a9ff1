"""Assertions that also narrow a value's type for the checker."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def not_none(value: T | None) -> T:
    """`value`, after asserting it is there (an Optional the test knows is set)."""
    assert value is not None
    return value
