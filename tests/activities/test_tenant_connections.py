"""A tenant's share of a worker's provider connections: one tenant's requests in flight are
capped, so its backlog (or a slow endpoint of its own) never takes the connections another
tenant's sends need."""

from __future__ import annotations

import asyncio

import httpx

from activities.channels.http_common import TENANT_HTTP_CONNECTIONS, Sender, post


class HeldProvider:
    """A provider on loopback that holds every request until released, counting those held."""

    def __init__(self) -> None:
        self.held = 0
        self.most_held = 0
        self.release = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(v)
                        for n, _, v in (line.partition(b":") for line in head.split(b"\r\n"))
                        if n.lower() == b"content-length"
                    ),
                    0,
                )
                body = await reader.readexactly(length)
                if b"tenant=a" in body:
                    self.held += 1
                    self.most_held = max(self.most_held, self.held)
                    await self.release.wait()
                    self.held -= 1
                writer.write(
                    b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Type: application/json\r\n\r\n{"sid":"x"}'
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.release.set()
        self.server.close()


async def test_one_tenant_cannot_take_every_connection_of_the_shared_client() -> None:
    provider = HeldProvider()
    async with provider as url, httpx.AsyncClient(limits=httpx.Limits(max_connections=200), timeout=60) as shared:
        busy, neighbour = Sender(shared, "a"), Sender(shared, "b")
        backlog = [
            asyncio.create_task(post(busy, url, "SMS request", "SMS provider", data={"tenant": "a", "n": str(i)}))
            for i in range(TENANT_HTTP_CONNECTIONS + 30)
        ]
        while provider.held < TENANT_HTTP_CONNECTIONS:
            await asyncio.sleep(0.01)
        # Tenant a is at its share: its other requests wait in this process, not at the provider,
        # and tenant b's request is made and answered meanwhile.
        answer = await post(neighbour, url, "SMS request", "SMS provider", data={"tenant": "b"})
        assert answer.status_code == 200
        assert provider.held == TENANT_HTTP_CONNECTIONS
        provider.release.set()
        answers = await asyncio.gather(*backlog)
        assert all(a.status_code == 200 for a in answers)
        assert provider.most_held == TENANT_HTTP_CONNECTIONS
