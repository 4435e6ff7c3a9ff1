"""Deterministic variant and holdout assignment: the same (campaign, customer) always lands
in the same bucket, so retries, reruns and reports agree."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HOLDOUT = "holdout"


def bucket(campaign_id: str, customer_id: int, salt: str = "") -> float:
    """A uniform number in [0, 1) from a stable hash."""
    digest = hashlib.sha256(f"{campaign_id}:{customer_id}:{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


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
