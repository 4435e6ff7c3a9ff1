"""Parameters for statements that write many rows at once with `unnest($2::type[], $3::type[], …)`
(one round trip, one trigger firing per statement): one list per column, built from the rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any, TypeVar

T = TypeVar("T")


def unnest_columns(rows: Sequence[T], *fields: str | Callable[[T], Any]) -> list[list[Any]]:
    """One list per field, in order, each holding that field of every row: an attribute name
    (dotted for a nested one) or a function of the row."""
    getters = [attrgetter(f) if isinstance(f, str) else f for f in fields]
    return [[get(row) for row in rows] for get in getters]
