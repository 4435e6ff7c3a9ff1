"""Loopback listeners that stand in for "somewhere a tenant should not reach": they count every
connection they get, answer HTTP minimally, and can trickle or flood their answer."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from dnslib import AAAA, QTYPE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSServer

from tests.helpers.stack import free_port


@dataclass
class Listener:
    """A TCP listener on `host:port`; `connections` counts what reached it."""

    host: str
    port: int
    status: int = 200
    body: bytes = b'{"ok": true}'
    # Seconds between bytes of the body (a trickling server), and a body sent without end.
    trickle: float = 0.0
    endless: bool = False
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The listener's base URL."""
        return f"http://{self.host}:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer HTTP requests on one connection until the client closes it."""
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                self.requests.append(head + (await reader.readexactly(length) if length else b""))
                if self.endless:
                    writer.write(f"HTTP/1.1 {self.status} OK\r\nContent-Type: text/plain\r\n\r\n".encode())
                    while True:
                        writer.write(b"x" * 65536)
                        await writer.drain()
                        await asyncio.sleep(0)
                head_out = (
                    f"HTTP/1.1 {self.status} X\r\nContent-Length: {len(self.body)}\r\n"
                    "Content-Type: application/json\r\n\r\n"
                )
                writer.write(head_out.encode())
                if self.trickle:
                    for byte in self.body:
                        writer.write(bytes([byte]))
                        await writer.drain()
                        await asyncio.sleep(self.trickle)
                else:
                    writer.write(self.body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def listening(host: str = "127.0.0.1", port: int | None = None, **options: object) -> AsyncIterator[Listener]:
    """A Listener serving while the block runs."""
    listener = Listener(host, port or free_port(), **options)  # type: ignore[arg-type]
    server = await asyncio.start_server(listener.handle, host, listener.port)
    try:
        yield listener
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


class _Rotating(BaseResolver):  # type: ignore[misc]
    """Answers every A query with the next address set in turn (a rebinding name server)."""

    def __init__(self, answers: list[list[str]]):
        self.answers = itertools.cycle(answers)
        self.lock = threading.Lock()
        self.queries = 0

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        qtype = QTYPE[request.q.qtype]
        if qtype == "A":
            with self.lock:
                self.queries += 1
                addresses = next(self.answers)
            for address in addresses:
                kind = AAAA if ":" in address else A
                rtype = QTYPE.AAAA if ":" in address else QTYPE.A
                reply.add_answer(RR(request.q.qname, rtype, rdata=kind(address), ttl=0))
        return reply


def _free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def dns_server(*answers: list[str]) -> Iterator[tuple[str, _Rotating]]:
    """A DNS server on loopback answering every name's A query with `answers` in turn;
    ("127.0.0.1:<port>", its resolver) while the block runs."""
    resolver = _Rotating(list(answers))
    port = _free_udp_port()
    server = DNSServer(resolver, port=port, address="127.0.0.1")
    server.start_thread()
    try:
        yield f"127.0.0.1:{port}", resolver
    finally:
        server.stop()
