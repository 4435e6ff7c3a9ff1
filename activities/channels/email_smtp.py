"""Email over SMTP (aiosmtplib): HTML and text parts, deterministic Message-ID, one-click
List-Unsubscribe headers (RFC 8058), DKIM-signed per sending domain (core/deliverability/dkim.py)."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import quopri
import time
from dataclasses import dataclass
from email.header import Header
from email.utils import formataddr, formatdate

import aiosmtplib

from activities.channels.base import OutboundMessage, SendResult, TransientChannelError
from core.content.templating import RenderedEmail
from core.deliverability.dkim import DkimKeys, DkimSigner
from core.infra.settings import get_settings
from core.security.egress import EgressError, EgressGuard, EgressRefused, Permit, Target
from core.tenants.config_schema import EmailChannel, TenantConfig


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


def build_message(config: TenantConfig, msg: OutboundMessage, signer: DkimSigner | None = None) -> bytes:
    """The message as RFC 5322 bytes: multipart/alternative with text and HTML parts, signed
    by `signer` when given.

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
    message = head + b"\r\n" + parts + f"--{boundary}--\r\n".encode()
    return signer.sign(message) if signer is not None else message


# An idle connection older than this is closed rather than kept for the tenant's next batch
# (relays drop idle clients after a few minutes; Postfix after 300 s).
IDLE_SECONDS = 30.0
# An idle connection used this recently is reused without a NOOP first: one round trip saved
# per connection per chunk. Were the relay to have closed it meanwhile, the send fails before
# the relay took the message, and the lane retries on a fresh connection.
FRESH_SECONDS = 2.0


class _Connections:
    """A tenant's connections to one relay: at most `size` open at once, idle ones reused."""

    def __init__(self, size: int):
        self.size = size
        self.leases = asyncio.Semaphore(size)
        self.idle: list[tuple[aiosmtplib.SMTP, float]] = []  # (client, when it was released)
        self.retired = False

    def close_idle(self, older_than: float) -> None:
        """Close the idle connections released before `older_than` (time.monotonic())."""
        keep = []
        for client, released in self.idle:
            if released < older_than:
                client.close()
            else:
                keep.append((client, released))
        self.idle = keep


# The reason recorded for every message of a batch after the guard refused the tenant's relay.
EGRESS_REFUSED = "egress_refused"


@dataclass(frozen=True)
class Relay:
    """Where a tenant's email goes: the platform relay (trusted), or the tenant's own, reached
    only through the guard (`target` and `permit` set)."""

    host: str
    port: int
    target: Target | None = None
    permit: Permit | None = None

    @property
    def guarded(self) -> bool:
        """The tenant set this relay: the guard connects, TLS is required, nothing it says is quoted."""
        return self.target is not None


class RelayRefused(Exception):
    """The guard refused the tenant's relay: the batch's unsent messages fail for good."""


class SmtpEmailAdapter:
    """Sends email over pooled SMTP connections to the tenant's relay (its
    `channels.email.endpoint`, `smtp://host:port`, else the platform's relay).

    A tenant has at most `channels.email.connections` connections open to a relay in this
    process, whatever the number of its batches in flight; a batch sends over as many of them
    as it can get, in parallel, each connection taking the next message as soon as it is free
    (one SMTP transaction, MAIL/RCPT/DATA, after another). Idle connections are kept for the
    next batch for IDLE_SECONDS, so batch after batch skips the TCP and SMTP handshake."""

    channel = "email"

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float = 10.0,
        guard: EgressGuard | None = None,
        dkim: DkimKeys | None = None,
    ):
        self.host = host
        self.port = port
        self.timeout = timeout
        # A tenant's own relay goes through the guard; the process's settings make one if not given.
        self.guard = guard or EgressGuard.from_settings(get_settings())
        # Each tenant's DKIM signers (a worker always has them; without, mail goes unsigned).
        self.dkim = dkim
        self._pools: dict[tuple[str, str, int], _Connections] = {}
        self._reaped = time.monotonic()

    def relay(self, config: TenantConfig) -> Relay:
        """The SMTP relay this tenant's email goes through (RelayRefused when the guard refuses
        the tenant's own: a URL it will not call)."""
        email = config.channels.email
        if email is None or not email.endpoint:
            return Relay(self.host, self.port)
        try:
            target, permit = self.guard.smtp_target(email.endpoint)
        except EgressRefused:
            raise RelayRefused() from None
        return Relay(target.host, target.port, target, permit)

    def _pool(self, key: tuple[str, str, int], size: int) -> _Connections:
        pool = self._pools.get(key)
        if pool is None or pool.size != size:  # new, or the tenant's config changed the count
            if pool is not None:
                pool.retired = True  # its leased connections close when released
                pool.close_idle(float("inf"))
            pool = self._pools[key] = _Connections(size)
        now = time.monotonic()
        if now - self._reaped > IDLE_SECONDS / 2:  # every tenant's stale idle connections
            self._reaped = now
            for other in self._pools.values():
                other.close_idle(now - IDLE_SECONDS)
        return pool

    async def _connect(self, relay: Relay) -> aiosmtplib.SMTP:
        if relay.target is None or relay.permit is None:
            client = aiosmtplib.SMTP(hostname=relay.host, port=relay.port, timeout=self.timeout)
            try:
                await client.connect()
            except (aiosmtplib.SMTPException, OSError) as exc:
                raise TransientChannelError(f"SMTP connect to {relay.host}:{relay.port} failed: {exc}") from exc
            return client
        # The tenant's relay: a socket to a checked address, then TLS (implicit, or STARTTLS
        # required: no opportunistic downgrade) verified for the relay's name, unless an
        # `smtp+plain://` allow entry says plaintext.
        try:
            conn = await self.guard.connect_smtp(relay.target, relay.permit, self.timeout)
        except EgressRefused:
            raise RelayRefused() from None
        except EgressError as exc:
            raise TransientChannelError(f"SMTP connect failed: {exc.word}") from None
        client = aiosmtplib.SMTP(
            hostname=conn.hostname,
            sock=conn.sock,
            timeout=self.timeout,
            use_tls=conn.tls == "implicit",
            start_tls=conn.tls == "starttls",
            validate_certs=True,
        )
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError):
            conn.sock.close()
            # One word, as for a refused or filtered port: the relay's own message is not quoted.
            raise TransientChannelError("SMTP connect failed: unreachable") from None
        return client

    async def _reuse(self, pool: _Connections) -> tuple[aiosmtplib.SMTP, bool] | None:
        """An idle connection that still works, most recently used first, and whether it was
        checked (a NOOP); None when none is left."""
        while pool.idle:
            client, released = pool.idle.pop()
            if not client.is_connected:
                continue
            if time.monotonic() - released < FRESH_SECONDS:
                return client, False
            try:
                await client.noop()  # the relay may have closed an idle connection
                return client, True
            except (aiosmtplib.SMTPException, OSError):
                client.close()
        return None

    def _release(self, pool: _Connections, client: aiosmtplib.SMTP) -> None:
        if client.is_connected and not pool.retired:
            pool.idle.append((client, time.monotonic()))
        else:
            client.close()

    async def send_batch(self, config: TenantConfig, messages: list[OutboundMessage]) -> list[SendResult]:
        """Send each email over up to `channels.email.connections` pooled connections at once.

        Results come back in the order of `messages`. A lost connection or a 4xx stops every
        lane after the message it is sending; the error then carries every result settled so
        far (`partial`), so the retry sends only the rest. A lane that cannot connect leaves
        its messages to the lanes that could; only when none could is that an error."""
        try:
            relay = self.relay(config)
        except RelayRefused:
            return [SendResult(m.idempotency_key, "failed", EGRESS_REFUSED) for m in messages]
        # The sending domain's key, once for the batch (cached per process between batches).
        signer = await self.dkim.signer(config) if self.dkim is not None else None
        pool = self._pool((config.slug, relay.host, relay.port), (config.channels.email or EmailChannel()).connections)
        queue = collections.deque(enumerate(messages))
        settled: dict[int, SendResult] = {}
        failures: list[Exception] = []  # a send failed: every lane stops
        unreachable: list[TransientChannelError] = []  # a lane could not connect
        refused: list[RelayRefused] = []  # the guard refused the relay: no lane connects any more

        async def lane() -> None:
            async with pool.leases:
                if not queue or failures or refused:
                    return  # nothing left for this lane by the time a connection was free
                reused = await self._reuse(pool)
                try:
                    client, checked = reused or (await self._connect(relay), True)
                except TransientChannelError as exc:
                    unreachable.append(exc)
                    return
                except RelayRefused as exc:
                    refused.append(exc)
                    return
                try:
                    while queue and not failures:
                        index, msg = queue.popleft()
                        try:
                            settled[index] = await self._send_one(client, config, msg, relay.guarded, signer)
                        except TransientChannelError as exc:
                            if checked or not isinstance(exc.__cause__, aiosmtplib.SMTPServerDisconnected):
                                raise
                            # The relay closed it while it was idle, before taking the message.
                            client.close()
                            client = await self._connect(relay)
                            settled[index] = await self._send_one(client, config, msg, relay.guarded, signer)
                        checked = True
                except Exception as exc:  # the other lanes stop after their message in flight
                    failures.append(exc)
                    client.close()
                else:
                    self._release(pool, client)

        await asyncio.gather(*(lane() for _ in range(min(pool.size, len(messages)))))
        unexpected = [e for e in failures if not isinstance(e, TransientChannelError)]
        if unexpected:
            raise unexpected[0]
        if refused:  # the relay can never be reached: the unsent messages fail for good
            return [
                settled.get(i) or SendResult(m.idempotency_key, "failed", EGRESS_REFUSED)
                for i, m in enumerate(messages)
            ]
        results = [settled[i] for i in sorted(settled)]
        if len(results) < len(messages):
            cause = (failures or unreachable)[0]
            raise TransientChannelError(str(cause), partial=results) from cause
        return results

    async def _send_one(
        self,
        client: aiosmtplib.SMTP,
        config: TenantConfig,
        msg: OutboundMessage,
        quiet: bool = False,
        signer: DkimSigner | None = None,
    ) -> SendResult:
        """One SMTP transaction: the message's result, or TransientChannelError. `quiet`: the
        relay is the tenant's own, so its words are not quoted, only its status code."""
        try:
            await client.sendmail(config.brand.from_email, [msg.address], build_message(config, msg, signer))
        except (aiosmtplib.SMTPRecipientsRefused, ValueError) as exc:  # ValueError: unsafe to send (CR/LF)
            return SendResult(msg.idempotency_key, "failed", "invalid address" if quiet else f"invalid address: {exc}")
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                said = f"rejected with status {exc.code}" if quiet else f"rejected: {exc.code} {exc.message}"
                return SendResult(msg.idempotency_key, "failed", said)
            said = f"SMTP rejected with status {exc.code}" if quiet else f"SMTP {exc.code}: {exc.message}"
            raise TransientChannelError(said) from exc
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            raise TransientChannelError("SMTP connection lost" if quiet else f"SMTP connection lost: {exc}") from exc
        return SendResult(msg.idempotency_key, "sent", provider_message_id=message_id(msg.idempotency_key, config.slug))
