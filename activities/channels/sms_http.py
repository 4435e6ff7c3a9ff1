"""SMS over a Twilio-like HTTP API: one form POST per message, basic auth with the account's
sid and token, E.164 numbers checked before anything is sent."""

from __future__ import annotations

import re

import httpx

from activities.channels.base import OutboundMessage, SendResult
from activities.channels.http_common import PerMessageHttpAdapter, SendOne, channel_config, one_result, post
from core.content.templating import RenderedSms
from core.tenants.config_schema import TenantConfig

E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")


class HttpSmsAdapter(PerMessageHttpAdapter):
    """Sends each SMS as its own request; the message's idempotency key rides in a header."""

    channel = "sms"

    async def message_sender(self, config: TenantConfig) -> SendOne:
        """Sends one SMS from the tenant's account; an address that is not E.164 fails unsent."""
        sender = channel_config(config, "sms").sender
        sid = await self.credential(config, "account_sid")
        token = await self.credential(config, "auth_token")
        url = self.url(config, f"/2010-04-01/Accounts/{sid}/Messages.json")
        auth = httpx.BasicAuth(sid, token)
        via = self.sender(config)

        async def send_one(msg: OutboundMessage) -> SendResult:
            if not E164.match(msg.address or ""):
                return SendResult(msg.idempotency_key, "failed", "invalid phone number (not E.164)")
            content: RenderedSms = msg.content
            form = {"To": msg.address, "Body": content.body}
            if sender:
                form["From"] = sender
            headers = {**msg.headers, "Idempotency-Key": msg.idempotency_key}
            response = await post(via, url, "SMS request", "SMS provider", data=form, auth=auth, headers=headers)
            return one_result(msg, response, "sms rejected", "sid")

        return send_one
