"""Email over SMTP (aiosmtplib): HTML and text parts, deterministic Message-ID, one-click
List-Unsubscribe headers (RFC 8058)."""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from email.utils import formataddr, formatdate

import aiosmtplib

from activities.channels.base import OutboundMessage, SendResult, TransientChannelError
from core.templating import RenderedEmail
from core.tenant_config import TenantConfig


def message_id(idempotency_key: str, tenant: str) -> str:
    """The same message always has the same Message-ID, so a resend is recognisable downstream."""
    return f"<{hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]}@{tenant}.pennant>"


class SmtpEmailAdapter:
    """Sends each batch over one SMTP connection."""

    channel = "email"

    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.host = host
        self.port = port
        self.timeout = timeout

    def build(self, config: TenantConfig, msg: OutboundMessage) -> EmailMessage:
        content: RenderedEmail = msg.content
        brand = config.brand
        email = EmailMessage()
        email["From"] = formataddr((brand.from_name or brand.name, brand.from_email))
        email["To"] = msg.address
        if brand.reply_to:
            email["Reply-To"] = brand.reply_to
        email["Subject"] = content.subject
        email["Date"] = formatdate(localtime=False)
        email["Message-ID"] = message_id(msg.idempotency_key, config.slug)
        email["X-Pennant-Idempotency-Key"] = msg.idempotency_key
        for name, value in msg.headers.items():
            email[name] = value
        email.set_content(content.text)
        email.add_alternative(content.html, subtype="html")
        return email

    async def send_batch(self, config: TenantConfig, messages: list[OutboundMessage]) -> list[SendResult]:
        results: list[SendResult] = []
        client = aiosmtplib.SMTP(hostname=self.host, port=self.port, timeout=self.timeout)
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise TransientChannelError(f"SMTP connect to {self.host}:{self.port} failed: {exc}") from exc
        try:
            for msg in messages:
                mid = message_id(msg.idempotency_key, config.slug)
                try:
                    await client.send_message(self.build(config, msg))
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    results.append(SendResult(msg.idempotency_key, "failed", f"invalid address: {exc}"))
                except aiosmtplib.SMTPResponseException as exc:
                    if 500 <= exc.code < 600:
                        results.append(SendResult(msg.idempotency_key, "failed", f"rejected: {exc.code} {exc.message}"))
                    else:
                        raise TransientChannelError(f"SMTP {exc.code}: {exc.message}") from exc
                else:
                    results.append(SendResult(msg.idempotency_key, "sent", provider_message_id=mid))
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            raise TransientChannelError(f"SMTP connection lost: {exc}") from exc
        finally:
            if client.is_connected:
                try:
                    await client.quit()
                except aiosmtplib.SMTPException:
                    client.close()
        return results
