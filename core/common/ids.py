"""Identifiers as the database holds them: a path or body id read as a UUID, or None."""

from __future__ import annotations

import uuid


def as_uuid(value: str | uuid.UUID) -> uuid.UUID | None:
    """`value` as a UUID, or None when it is not one (so no row can have it as its id)."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
