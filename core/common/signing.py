"""HMAC-SHA256 signatures over `<timestamp>.<raw body>`: what Pennant's outgoing webhooks carry
and what the provider-event endpoint checks on the way in (one definition for both, separated
by purpose so neither's signature is valid for the other)."""

from __future__ import annotations

import hashlib
import hmac
import time


def sign(secret: str, timestamp: str, body: bytes, purpose: str = "") -> str:
    """The signature header value for `body` sent at `timestamp` (unix seconds, as text).

    `purpose` separates domains: the same bytes signed for another purpose give another
    signature, so a signature made for one endpoint is never accepted by another. Outgoing
    webhooks use none (receivers check the common `<timestamp>.<body>` form); inbound provider
    events use their own.
    """
    prefix = f"{purpose}\n".encode() if purpose else b""
    mac = hmac.new(secret.encode(), prefix + timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(
    secret: str, timestamp: str, body: bytes, signature: str, tolerance_seconds: float = 300, purpose: str = ""
) -> bool:
    """What a receiver does: constant-time compare, and refuse timestamps outside the tolerance."""
    try:
        fresh = abs(time.time() - int(timestamp)) <= tolerance_seconds
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body, purpose), signature)
