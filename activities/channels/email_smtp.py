"""Email over SMTP (aiosmtplib): HTML and text parts, deterministic Message-ID, one-click
List-Unsubscribe headers (RFC 8058)."""

from __future__ import annotations

import hashlib
import quopri
from email.header import Header
from email.utils import formataddr, formatdate
from urllib.parse import urlsplit

import aiosmtplib

from activities.channels.base import ChannelConfigError, OutboundMessage, SendResult, TransientChannelError
from core.templating import RenderedEmail
from core.tenant_config import TenantConfig


def message_id(idempotency_key: str, tenant: str) -> str:
    """The same message always has the same Message-ID, so a resend is recognisable downstream."""
    return f"<{hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]}@{tenant}.pennant>"


def _header(value: str) -> str:
    """A header value as RFC 2047 encoded words when it is not plain ASCII, folded either way."""
    charset = "us-ascii" if value.isascii() else "utf-8"
    return Header(value, charset, header_name="Subject").encode(linesep="\r\n")


def _qp(text: str) -> bytes:
    """A body part in quoted-printable with CRLF line ends."""
    return quopri.encodestring(text.replace("\r\n", "\n").encode()).replace(b"\n", b"\r\n")


def build_message(config: TenantConfig, msg: OutboundMessage) -> bytes:
    """The message as RFC 5322 bytes: multipart/alternative with text and HTML parts.

    Written directly rather than through `email.message.EmailMessage`, whose header parsing
    and generator cost most of a worker's CPU per message (see benchmarks/throughput.py).
    """
    content: RenderedEmail = msg.content
    brand = config.brand
    boundary = f"=_pennant_{hashlib.sha256(msg.idempotency_key.encode()).hexdigest()[:24]}"
    headers = [
        ("From", formataddr((brand.from_name or brand.name, brand.from_email), charset="utf-8")),
        ("To", msg.address),
        *([("Reply-To", brand.reply_to)] if brand.reply_to else []),
        ("Subject", _header(content.subject)),
        ("Date", formatdate(localtime=False)),
        ("Message-ID", message_id(msg.idempotency_key, config.slug)),
        ("X-Pennant-Idempotency-Key", msg.idempotency_key),
        *msg.headers.items(),
        ("MIME-Version", "1.0"),
        ("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
    ]
    head = "".join(f"{name}: {value}\r\n" for name, value in headers).encode()
    parts = b""
    for subtype, body in (("plain", content.text), ("html", content.html)):
        parts += (
            (
                f'--{boundary}\r\nContent-Type: text/{subtype}; charset="utf-8"\r\n'
                f"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            ).encode()
            + _qp(body)
            + b"\r\n"
        )
    return head + b"\r\n" + parts + f"--{boundary}--\r\n".encode()


class SmtpEmailAdapter:
    """Sends each batch over one SMTP connection, taken from a small pool per tenant and relay
    (the tenant's `channels.email.endpoint`, `smtp://host:port`, else the platform's relay), so
    batch after batch reuses connections instead of a TCP and SMTP handshake each."""

    channel = "email"

    def __init__(self, host: str, port: int, timeout: float = 10.0, idle_per_tenant: int = 4):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.idle_per_tenant = idle_per_tenant
        self._idle: dict[tuple[str, str, int], list[aiosmtplib.SMTP]] = {}

    def relay(self, config: TenantConfig) -> tuple[str, int]:
        """The SMTP relay (host, port) this tenant's email goes through."""
        email = config.channels.email
        if email is None or not email.endpoint:
            return self.host, self.port
        url = urlsplit(email.endpoint)
        if url.scheme != "smtp" or not url.hostname:
            raise ChannelConfigError(f"channels.email.endpoint of tenant {config.slug}: expected smtp://host:port")
        return url.hostname, url.port or 25

    async def _acquire(self, key: tuple[str, str, int]) -> aiosmtplib.SMTP:
        idle = self._idle.get(key, [])
        while idle:
            client = idle.pop()
            try:
                await client.noop()  # the relay may have closed an idle connection
                return client
            except (aiosmtplib.SMTPException, OSError):
                client.close()
        _, host, port = key
        client = aiosmtplib.SMTP(hostname=host, port=port, timeout=self.timeout)
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise TransientChannelError(f"SMTP connect to {host}:{port} failed: {exc}") from exc
        return client

    async def _release(self, key: tuple[str, str, int], client: aiosmtplib.SMTP) -> None:
        idle = self._idle.setdefault(key, [])
        if client.is_connected and len(idle) < self.idle_per_tenant:
            idle.append(client)
            return
        if client.is_connected:
            try:
                await client.quit()
            except aiosmtplib.SMTPException:
                client.close()

    async def send_batch(self, config: TenantConfig, messages: list[OutboundMessage]) -> list[SendResult]:
        """Send each email over pooled SMTP connections to the tenant's relay."""
        results: list[SendResult] = []
        key = (config.slug, *self.relay(config))
        client = await self._acquire(key)
        healthy = False
        try:
            for msg in messages:
                mid = message_id(msg.idempotency_key, config.slug)
                try:
                    await client.sendmail(config.brand.from_email, [msg.address], build_message(config, msg))
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    results.append(SendResult(msg.idempotency_key, "failed", f"invalid address: {exc}"))
                except aiosmtplib.SMTPResponseException as exc:
                    if 500 <= exc.code < 600:
                        results.append(SendResult(msg.idempotency_key, "failed", f"rejected: {exc.code} {exc.message}"))
                    else:
                        raise TransientChannelError(f"SMTP {exc.code}: {exc.message}", partial=results) from exc
                else:
                    results.append(SendResult(msg.idempotency_key, "sent", provider_message_id=mid))
            healthy = True
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            raise TransientChannelError(f"SMTP connection lost: {exc}", partial=results) from exc
        finally:
            if healthy:
                await self._release(key, client)
            else:
                client.close()
        return results
