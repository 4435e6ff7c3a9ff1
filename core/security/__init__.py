"""The tenant boundary's mechanisms: the per-tenant secret store and the guarded outbound client
every call a tenant can aim goes through."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core import lazy_exports

if TYPE_CHECKING:
    from core.security.egress import (
        EgressError,
        EgressGuard,
        EgressRefused,
        EgressRejected,
        Resolver,
        allowing,
        literal_never_passes,
        parse_target,
        refused_class,
    )

_EXPORTS: dict[str, str] = {
    "EgressError": "egress",
    "EgressGuard": "egress",
    "EgressRefused": "egress",
    "EgressRejected": "egress",
    "Resolver": "egress",
    "allowing": "egress",
    "literal_never_passes": "egress",
    "parse_target": "egress",
    "refused_class": "egress",
}
__all__ = [
    "EgressError",
    "EgressGuard",
    "EgressRefused",
    "EgressRejected",
    "Resolver",
    "allowing",
    "literal_never_passes",
    "parse_target",
    "refused_class",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
