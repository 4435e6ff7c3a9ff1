"""Webhooks: one signed JSON POST per message to the tenant's endpoint.

The receiver verifies `X-Pennant-Signature: sha256=<hex>`, an HMAC-SHA256 with the shared
secret over `<X-Pennant-Timestamp>.<raw body>`, and should reject stale timestamps.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from activities.channels.base import OutboundMessage, SendResult
from activities.channels.http_common import PerMessageHttpAdapter, SendOne, credential, endpoint, one_result, post
from core.templating import RenderedWebhook
from core.tenant_config import TenantConfig


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for `body` sent at `timestamp` (unix seconds, as text)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, tolerance_seconds: float = 300) -> bool:
    """What a receiver does: constant-time compare, and refuse timestamps outside the tolerance."""
    try:
        fresh = abs(time.time() - int(timestamp)) <= tolerance_seconds
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


class HttpWebhookAdapter(PerMessageHttpAdapter):
    """POSTs each rendered payload, signed, with the message's idempotency key."""

    channel = "webhook"

    def message_sender(self, config: TenantConfig) -> SendOne:
        """POSTs one signed payload to the tenant's endpoint."""
        secret = credential(config, "webhook", "signing_secret")
        url = endpoint(config, "webhook", f"{self.default_base_url}/webhook/{config.slug}")

        async def send_one(msg: OutboundMessage) -> SendResult:
            content: RenderedWebhook = msg.content
            body = json.dumps(content.payload, separators=(",", ":"), ensure_ascii=False).encode()
            # A fresh timestamp (and so signature) per attempt: receivers reject stale ones.
            timestamp = str(int(time.time()))
            headers = {
                **msg.headers,
                "Content-Type": "application/json",
                "Idempotency-Key": msg.idempotency_key,
                "X-Pennant-Timestamp": timestamp,
                "X-Pennant-Signature": sign(secret, timestamp, body),
            }
            response = await post(self.http, url, "webhook request", "webhook endpoint", content=body, headers=headers)
            return one_result(msg, response, "webhook rejected", "id")

        return send_one
