"""Deterministic variant and holdout assignment: the same (campaign, customer) always lands
in the same bucket, so retries, reruns and reports agree."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HOLDOUT = "holdout"
GLOBAL_CONTROL = "global_control"


def bucket(campaign_id: str, customer_id: int, salt: str = "") -> float:
    """A uniform number in [0, 1) from a stable hash."""
    digest = hashlib.sha256(f"{campaign_id}:{customer_id}:{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_global_control(tenant: str, customer_id: int, percent: float) -> bool:
    """The tenant-wide control group (policies.holdout_percent): customers who receive no
    campaign at all, so the tenant can measure the lift of its whole programme."""
    return percent > 0 and bucket(f"global:{tenant}", customer_id, "control") * 100 < percent


def assign_variant(
    campaign_id: str,
    customer_id: int,
    variants: Sequence[tuple[str, float]],
    holdout_percent: float = 0.0,
) -> str:
    """The variant key for a customer, or HOLDOUT. Holdout and split use independent hashes."""
    if holdout_percent > 0 and bucket(campaign_id, customer_id, "holdout") * 100 < holdout_percent:
        return HOLDOUT
    total = sum(w for _, w in variants)
    point = bucket(campaign_id, customer_id, "variant") * total
    for key, weight in variants:
        point -= weight
        if point < 0:
            return key
    return variants[-1][0]
