"""Signed links (unsubscribe): HMAC-SHA256 over the payload, with an expiry, under a keyring.

The secret is a keyring: several keys, comma-separated (the LINK_SIGNING_SECRET setting) or a
list, newest first. A new token is signed with the first key and names it (`kid`, a short hash
of the key, never the key); a token verifies under whichever key of the ring signed it, so the
links in mail already sent keep working after a rotation until their key is dropped from the
ring. Tokens signed before keyrings existed carry no `kid` and are tried under every key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from typing import Any

Keyring = str | Sequence[str]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def keys(secret: Keyring) -> list[str]:
    """The keys of a keyring, newest first: a comma-separated string or a list."""
    parts = secret.split(",") if isinstance(secret, str) else list(secret)
    return [key.strip() for key in parts if key.strip()]


def key_id(key: str) -> str:
    """A short public name of `key` (8 characters of a domain-separated hash): which key signed."""
    return _b64(hashlib.sha256(b"pennant link key id\0" + key.encode()).digest())[:8]


def _mac(key: str, body: str) -> str:
    return _b64(hmac.new(key.encode(), body.encode(), hashlib.sha256).digest())


def sign(payload: dict[str, Any], secret: Keyring, ttl_seconds: int = 60 * 24 * 3600) -> str:
    """A signed, expiring token carrying `payload`, signed with the newest key of `secret`."""
    ring = keys(secret)
    if not ring:
        raise ValueError("no link-signing key: set LINK_SIGNING_SECRET")
    claims = {**payload, "exp": int(time.time()) + ttl_seconds, "kid": key_id(ring[0])}
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{body}.{_mac(ring[0], body)}"


def verify(token: str, secret: Keyring) -> dict[str, Any] | None:
    """The payload of a genuine, unexpired token signed by any key of `secret`; None for
    anything forged, garbled, expired or signed by a key no longer in the ring."""
    try:
        body, mac = token.split(".", 1)
        ring = keys(secret)
        for key in ring:
            if hmac.compare_digest(mac, _mac(key, body)):
                break
        else:
            return None
        payload: dict[str, Any] = json.loads(_unb64(body))
    except (ValueError, json.JSONDecodeError):
        return None
    if not isinstance(payload, dict):
        return None
    # A token naming a key must have been signed by that key (not merely by one in the ring).
    if "kid" in payload and payload["kid"] != key_id(key):
        return None
    return payload if payload.get("exp", 0) > time.time() else None
