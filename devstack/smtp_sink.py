"""A local SMTP server that accepts every message and stores it as an .eml file in the outbox.

When provider events are configured (PROVIDER_EVENTS_URL and PROVIDER_EVENTS_SECRET) it also
plays the email provider's event webhook, per recipient, by domain:

- `@bounce.example.com` hard-bounces, `@softbounce.example.com` soft-bounces;
- `@complaint.example.com` is delivered and then complains (a spam report);
- every other recipient gets a `delivered` receipt.

When given a name server (`configure_dns`: `pennant dev`'s loopback DNS server), it verifies each
message's DKIM signature with the key DNS publishes and records the result as an
`Authentication-Results` header first in the stored file (dkim=pass, fail or none), counted in
`dkim_results`.

Events carry the message's Message-ID and Pennant's idempotency key (as a provider echoes
custom arguments) and an event id derived from both, so a message sent twice reports once.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import os
import re
import time
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Any

import dkim
import dns.exception
import dns.resolver
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from devstack.event_emitter import EventEmitter

# Recipient domain → the events the sink reports for it (others: delivered).
EVENTS_BY_DOMAIN: dict[str, list[dict[str, str]]] = {
    "bounce.example.com": [{"event": "bounce", "type": "hard", "reason": "550 5.1.1 mailbox does not exist"}],
    "softbounce.example.com": [{"event": "bounce", "type": "soft", "reason": "452 4.2.2 mailbox full"}],
    "complaint.example.com": [{"event": "delivered"}, {"event": "spamreport"}],
}
_DELIVERED = [{"event": "delivered"}]


def email_events(message: bytes, recipients: list[str], now: float | None = None) -> list[dict[str, Any]]:
    """The provider events the sink reports for one accepted message."""
    # Headers only: the body is never parsed, so emission costs the sink little.
    headers = BytesHeaderParser(policy=compat32).parsebytes(message, headersonly=True)
    message_id = str(headers.get("Message-ID", "")).strip() or None
    key = str(headers.get("X-Pennant-Idempotency-Key", "")).strip() or None
    stamp = int(now if now is not None else time.time())
    events = []
    for rcpt in recipients:
        domain = rcpt.rpartition("@")[2].lower()
        for template in EVENTS_BY_DOMAIN.get(domain, _DELIVERED):
            name = f"{message_id or time.time_ns()}|{key}|{rcpt.lower()}|{template['event']}"
            event_id = "sink-" + hashlib.sha256(name.encode()).hexdigest()[:32]
            events.append({**template, "event_id": event_id, "timestamp": stamp, "email": rcpt,
                           "smtp-id": message_id, "idempotency_key": key})  # fmt: skip
    return events


# A key looked up is kept this long (a benchmark's thousands of messages ask DNS a few times).
DKIM_KEY_TTL_SECONDS = 5.0
_SIG_TAG = re.compile(rb"\b([ds])=([^;\s]+)")


class DkimVerifier:
    """Verifies DKIM signatures with the keys a name server publishes (cached DKIM_KEY_TTL_SECONDS)."""

    def __init__(self, host: str, port: int):
        self.resolver = dns.resolver.Resolver(configure=False)
        self.resolver.nameservers = [host]
        self.resolver.port = port
        self.resolver.lifetime = 2.0
        self.resolver.use_edns(0, 0, 1232)
        self._keys: dict[bytes, tuple[float, bytes | None]] = {}

    def txt(self, name: bytes, timeout: int = 5) -> bytes | None:
        """dkimpy's DNS function: the TXT record at `name`, strings joined; None when none."""
        now = time.monotonic()
        cached = self._keys.get(name)
        if cached and cached[0] > now:
            return cached[1]
        try:
            answer = self.resolver.resolve(name.decode(), "TXT", search=False)
            value: bytes | None = b"".join(answer[0].strings)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers, dns.exception.Timeout):
            return None  # not kept: a key published a moment later verifies the next message
        self._keys[name] = (now + DKIM_KEY_TTL_SECONDS, value)
        return value

    def verify(self, message: bytes) -> str:
        """The Authentication-Results value for `message`: `dkim=pass|fail|none` and the signer."""
        head = message.split(b"\r\n\r\n", 1)[0]
        if not re.search(rb"(?im)^dkim-signature:", head):
            return "dkim=none"
        try:
            ok = dkim.DKIM(message).verify(dnsfunc=self.txt)
        except Exception:  # a malformed signature or key: a failure, as a receiver records it
            ok = False
        start = re.search(rb"(?im)^dkim-signature:", head)
        tags = dict(_SIG_TAG.findall(re.sub(rb"\r\n[ \t]+", b" ", head[start.start() :] if start else b"")))
        said = f"dkim={'pass' if ok else 'fail'}"
        return said + "".join(f" header.{k.decode()}={v.decode()}" for k, v in sorted(tags.items()))


class OutboxHandler:
    """Writes each received message to `<outbox>/<time>-<seq>.eml` atomically; reports its events through `events`."""

    def __init__(self, outbox: Path, events: EventEmitter | None = None):
        self.outbox = outbox
        self.events = events or EventEmitter()
        self.outbox.mkdir(parents=True, exist_ok=True)
        self._seq = itertools.count()
        self.sessions = 0  # SMTP sessions greeted: lets tests see connection reuse
        self.connections = 0  # connections open now
        self.peak_connections = 0  # the most open at once: lets tests see a client's connection limit
        self.dkim: DkimVerifier | None = None
        self.dkim_results: collections.Counter[str] = collections.Counter()  # pass, fail, none

    def configure_dns(self, host: str, port: int) -> None:
        """Verify DKIM signatures with the keys the name server at (host, port) publishes."""
        self.dkim = DkimVerifier(host, port)

    async def handle_EHLO(
        self, server: Any, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        """Greet the client and count the session."""
        session.host_name = hostname
        self.sessions += 1
        return responses

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        """Store the message in the outbox and accept it."""
        name = f"{time.time_ns()}-{os.getpid()}-{next(self._seq):06d}.eml"
        data = envelope.original_content or b""
        stored = data
        if self.dkim is not None:
            result = self.dkim.verify(data)
            self.dkim_results[result.split()[0].partition("=")[2]] += 1
            stored = f"Authentication-Results: pennant-sink; {result}\r\n".encode() + data
        tmp = self.outbox / f".{name}.tmp"
        tmp.write_bytes(stored)
        tmp.replace(self.outbox / name)
        if self.events.enabled:
            for event in email_events(data, list(envelope.rcpt_tos)):
                self.events.emit("email", event)
        return "250 Message accepted for delivery"


class _CountingSMTP(SMTP):
    """aiosmtpd's SMTP session, counting open connections in its OutboxHandler."""

    def connection_made(self, transport: Any) -> None:
        """Count the connection, then greet it."""
        handler: OutboxHandler = self.event_handler
        handler.connections += 1
        handler.peak_connections = max(handler.peak_connections, handler.connections)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        """Count the connection gone."""
        self.event_handler.connections -= 1
        super().connection_lost(error)


class _SinkController(Controller):
    def factory(self) -> SMTP:
        return _CountingSMTP(self.handler, **self.SMTP_kwargs)


def start_sink(
    outbox: Path, host: str = "127.0.0.1", port: int = 1025, events: EventEmitter | None = None
) -> Controller:
    """Start the sink on a background thread (events emitted through `events`); `.stop()` the result to stop it."""
    controller = _SinkController(OutboxHandler(outbox, events), hostname=host, port=port, ready_timeout=10)
    controller.start()
    return controller


def read_outbox(outbox: Path, containing: str = "") -> list[Any]:
    """Every stored message whose raw text contains `containing` (all when empty), parsed,
    oldest first."""
    from email import policy
    from email.parser import BytesParser

    # Parsing is the slow part (milliseconds a message, and an outbox holds thousands), so
    # only the messages that can match are parsed.
    marker = containing.encode()
    parser = BytesParser(policy=policy.default)
    raw = (p.read_bytes() for p in sorted(outbox.glob("*.eml")))
    return [parser.parsebytes(data) for data in raw if marker in data]
