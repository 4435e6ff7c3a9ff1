"""Webhooks: one signed JSON POST per message to the tenant's endpoint.

The receiver verifies `X-Pennant-Signature: sha256=<hex>`, an HMAC-SHA256 with the shared
secret over `<X-Pennant-Timestamp>.<raw body>`, and should reject stale timestamps.
"""

from __future__ import annotations

import json
import time

from activities.channels.base import OutboundMessage, SendResult
from activities.channels.http_common import PerMessageHttpAdapter, SendOne, endpoint, one_result, post
from core.common.signing import sign
from core.content.templating import RenderedWebhook
from core.tenants.config_schema import TenantConfig


class HttpWebhookAdapter(PerMessageHttpAdapter):
    """POSTs each rendered payload, signed, with the message's idempotency key."""

    channel = "webhook"

    async def message_sender(self, config: TenantConfig) -> SendOne:
        """POSTs one signed payload to the tenant's endpoint."""
        secret = await self.credential(config, "signing_secret")
        url = endpoint(config, "webhook", f"{self.default_base_url}/webhook/{config.slug}")
        via = self.sender(config)

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
            response = await post(via, url, "webhook request", "webhook endpoint", content=body, headers=headers)
            return one_result(msg, response, "webhook rejected", "id")

        return send_one
