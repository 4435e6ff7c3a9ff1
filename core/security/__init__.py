"""The tenant boundary's mechanisms: the per-tenant secret store and the guarded outbound client
every call a tenant can aim goes through."""

from __future__ import annotations

from core import lazy_exports

_EXPORTS: dict[str, str] = {}
__all__: list[str] = []
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
