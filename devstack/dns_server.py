"""A small authoritative DNS server on loopback (UDP) for the dev stack and the tests.

It publishes what the demo sending domains need (core/deliverability/domains.py): SPF, DMARC and
the bounce CNAME for each domain in `domains` (the demo tenants' From domains), and the DKIM TXT
record of every selector the platform has generated, read from the database on each query
(`pennant_dkim_public_keys`, public keys only), so a key is verifiable the moment it exists.
Tests change what it answers with `publish` and `withhold` (to make a record wrong or missing).
Everything else is NXDOMAIN; it never forwards a query.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import asyncpg
import yaml
from dnslib import CNAME, QTYPE, RCODE, RR, TXT, DNSRecord

from core.deliverability.domains import required_records

log = logging.getLogger("pennant.dns")
TTL = 60
_TXT_CHUNK = 255  # one TXT string's limit: longer values are split across strings


def demo_domains(configs_dir: Path) -> list[str]:
    """The From domains of the tenant configs in `configs_dir`."""
    found = set()
    for path in sorted(configs_dir.glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        email = str((data.get("brand") or {}).get("from_email") or "")
        if "@" in email:
            found.add(email.rpartition("@")[2].lower())
    return sorted(found)


class DnsServer(asyncio.DatagramProtocol):
    """Answers A-less, TXT/CNAME-only queries for the sending domains it knows."""

    def __init__(self, pool: asyncpg.Pool | None, domains: list[str], spf_include: str, bounce_host: str):
        self.pool = pool
        self.static: dict[tuple[str, str], list[str]] = {}
        for domain in domains:
            for r in required_records(domain, [], spf_include, bounce_host).records:
                self.static.setdefault((r.name.lower(), r.type), []).append(r.value)
        self.overrides: dict[tuple[str, str], list[str]] = {}
        self.withheld: set[tuple[str, str]] = set()
        self.transport: asyncio.DatagramTransport | None = None
        self.queries = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def publish(self, name: str, rtype: str, values: list[str]) -> None:
        """Answer `values` for (`name`, `rtype`) instead of what it would (tests: a wrong record)."""
        self.overrides[(name.lower().rstrip("."), rtype)] = values

    def withhold(self, name: str, rtype: str) -> None:
        """Answer nothing for (`name`, `rtype`) (tests: a missing record)."""
        self.withheld.add((name.lower().rstrip("."), rtype))

    def reset(self) -> None:
        """Forget every publish and withhold."""
        self.overrides.clear()
        self.withheld.clear()

    async def values(self, name: str, rtype: str) -> list[str]:
        """What the server publishes at (name, rtype)."""
        key = (name, rtype)
        if key in self.withheld:
            return []
        if key in self.overrides:
            return self.overrides[key]
        if rtype == "TXT" and "._domainkey." in name and self.pool is not None:
            selector, _, domain = name.partition("._domainkey.")
            rows = await self.pool.fetch("SELECT * FROM pennant_dkim_public_keys($1)", domain)
            return [f"v=DKIM1; k={r['algorithm']}; p={r['public_key']}" for r in rows if r["selector"] == selector]
        return self.static.get(key, [])

    def connection_made(self, transport: Any) -> None:
        """Keep the socket to answer on."""
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """Answer each query in a task of its own (the DKIM answers read the database)."""
        task = asyncio.get_running_loop().create_task(self._answer(data, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, data: bytes, addr: Any) -> None:
        try:
            request = DNSRecord.parse(data)
        except Exception:  # not DNS: ignored, as a server does
            return
        self.queries += 1
        reply = request.reply()
        name = str(request.q.qname).lower().rstrip(".")
        rtype = QTYPE[request.q.qtype]
        try:
            values = await self.values(name, rtype) if rtype in ("TXT", "CNAME") else []
        except Exception:
            log.exception("dns: lookup of %s %s failed", name, rtype)
            reply.header.rcode = RCODE.SERVFAIL
            values = []
        for value in values:
            if rtype == "TXT":
                chunks = [value[i : i + _TXT_CHUNK] for i in range(0, len(value), _TXT_CHUNK)] or [""]
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(chunks), ttl=TTL))
            else:
                reply.add_answer(RR(request.q.qname, QTYPE.CNAME, rdata=CNAME(value), ttl=TTL))
        if not values and reply.header.rcode == RCODE.NOERROR and not await self._exists(name):
            reply.header.rcode = RCODE.NXDOMAIN
        reply.header.aa = 1
        if self.transport is not None:
            self.transport.sendto(reply.pack(), addr)

    async def _exists(self, name: str) -> bool:
        """Whether anything is published at `name` (else NXDOMAIN rather than an empty answer)."""
        return any(n == name for n, _ in self.static) or any(n == name for n, _ in self.overrides)


async def start_dns(
    pool: asyncpg.Pool | None,
    domains: list[str],
    spf_include: str,
    bounce_host: str,
    host: str = "127.0.0.1",
    port: int = 5354,
) -> tuple[asyncio.DatagramTransport, DnsServer]:
    """Serve on (host, port) UDP in the running loop; close the transport to stop."""
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(
        lambda: DnsServer(pool, domains, spf_include, bounce_host), local_addr=(host, port)
    )
    return transport, server
