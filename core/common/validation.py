"""Bad input as `path: reason` lines: InvalidInput, the one base of every located error
(tenant config, segment, template, campaign), and the one formatter of pydantic error
locations, shared by config validation (core) and every API error body (api)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def error_path(loc: Sequence[int | str], prefix: str = "") -> str:
    """A pydantic location as a path: `a.b[0].c` (list indexes in brackets)."""
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def error_lines(errors: Iterable[Mapping[str, Any]], prefix: str = "", unknown: str = "unknown key") -> list[str]:
    """pydantic errors (`ValidationError.errors()`) as `path: reason` lines; a forbidden extra
    field reads `unknown` (config files call them keys, API bodies fields)."""
    out = []
    for err in errors:
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = unknown
        out.append(f"{error_path(err.get('loc', ()), prefix) or '(root)'}: {msg}")
    return out


class InvalidInput(ValueError):
    """Input that cannot be used as given; `errors` lists every `path: reason` found, not just
    the first. The API answers it 422 with those lines; the console shows them at their fields."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors
