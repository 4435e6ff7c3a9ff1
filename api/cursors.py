"""Opaque page cursors: the keyset position of a page's last row, base64url JSON. A cursor
selects nothing another tenant owns: every query it feeds is tenant-scoped as well."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError

from api.input_guard import value_problems

T = TypeVar("T")


def encode_cursor(position: dict[str, Any]) -> str:
    """`position` as an opaque cursor."""
    raw = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, keys: set[str]) -> dict[str, Any]:
    """The position in `cursor`; a 422 naming `cursor` when it is not one of ours."""
    try:
        position = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        position = None
    # A forged cursor is input like any other: what PostgreSQL cannot store is refused here.
    if not isinstance(position, dict) or set(position) != keys or any(value_problems(position, "cursor")):
        raise RequestValidationError([{"loc": ("query", "cursor"), "msg": "not a cursor from a previous page"}])
    return position


def next_cursor(rows: Sequence[T], limit: int, position: Callable[[T], dict[str, Any]]) -> str | None:
    """The cursor after a page of `limit` rows, given `rows` fetched with one extra: None when
    that extra row is missing, i.e. on the last page."""
    return encode_cursor(position(rows[limit - 1])) if len(rows) > limit else None
