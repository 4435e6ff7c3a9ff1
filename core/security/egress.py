"""The guarded outbound client: every call a tenant can aim (SMS, push and webhook endpoints, the
LLM provider, an SMTP relay) goes through here, never through a plain client.

One parse of the URL serves both the check and the request. The host is resolved with a timeout
of its own, every address it resolves to is checked, and the connection is made to one of those
checked addresses: the check happens inside the connect, so a name that answers differently the
next time (DNS rebinding) cannot slip a second address past it. TLS is verified against the
original hostname (SNI included): for HTTP, httpcore starts TLS on our pinned stream with
`server_hostname` set to the URL's host; for SMTP, aiosmtplib gets our connected socket and the
hostname. No proxy from the environment, no redirects, a wall-clock deadline over the whole call
and a cap on the answer's size (httpx's own timeouts restart on every read, so a trickling server
would otherwise hold the call open).

A tenant sees only a few fixed words (`refused`, `unreachable`, `timeout`, `rejected with status
N`, `too large`): never the remote body or a relay's message, and nothing that tells a closed
port from a filtered one.

The operator's `EGRESS_ALLOW` (`scheme://host:port[/path-prefix]`, comma or space separated)
lets a call reach an address the class check would refuse, and is the only way to plaintext:
an `http://` entry for HTTP, `smtp+plain://` for SMTP. Entries match the connected address,
port and path; names in them are resolved once, when the list is read. Tests allow their own
loopback listeners for a while with `allowing(...)`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpcore
import httpx

from core.common import egress_rules
from core.common.egress_rules import (
    ALLOW_SCHEMES,
    COMPATIBLE,
    CONNECT_TIMEOUT_SECONDS,
    DEFAULT_DEADLINE_SECONDS,
    DEFAULT_MAX_BYTES,
    DEFAULT_PORTS,
    HTTP_SCHEMES,
    MAPPED,
    NAT64,
    NAT64_LOCAL,
    REFUSED,
    REFUSED_V4,
    REFUSED_V6,
    RESOLVE_TIMEOUT_SECONDS,
    SIX_TO_FOUR,
    SMTP_SCHEMES,
    TEREDO,
    TIMEOUT,
    TOO_LARGE,
    UNREACHABLE,
    AllowEntry,
    EgressError,
    EgressRefused,
    EgressRejected,
    IPAddress,
    Target,
    _guard_entries,
    _process_lock,
    allowing,
    configure_process,
    embedded_ipv4,
    literal_never_passes,
    parse_allow,
    parse_allow_entry,
    parse_target,
    process_entries,
    refused_class,
)

# The guard, and the rules it applies (core/common/egress_rules.py), from one place.
__all__ = [
    "ALLOW_SCHEMES",
    "COMPATIBLE",
    "CONNECT_TIMEOUT_SECONDS",
    "DEFAULT_DEADLINE_SECONDS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_PORTS",
    "HTTP_SCHEMES",
    "MAPPED",
    "NAT64",
    "NAT64_LOCAL",
    "REFUSED",
    "REFUSED_V4",
    "REFUSED_V6",
    "RESOLVE_TIMEOUT_SECONDS",
    "SIX_TO_FOUR",
    "SMTP_SCHEMES",
    "TEREDO",
    "TIMEOUT",
    "TOO_LARGE",
    "UNREACHABLE",
    "AllowEntry",
    "EgressError",
    "EgressGuard",
    "EgressRefused",
    "EgressRejected",
    "IPAddress",
    "Permit",
    "Resolver",
    "SmtpConnection",
    "Target",
    "allowing",
    "configure_process",
    "embedded_ipv4",
    "literal_never_passes",
    "parse_allow",
    "parse_allow_entry",
    "parse_target",
    "process_entries",
    "refused_class",
]


# ---------------------------------------------------------------------------------------------
# Resolution and the checked connect


class Resolver:
    """Resolves a name with a timeout of its own: through `nameserver` ("host:port", a test's
    DNS server) when given, else the system's resolver."""

    def __init__(self, nameserver: str | None = None, timeout: float = RESOLVE_TIMEOUT_SECONDS):
        self.nameserver = nameserver
        self.timeout = timeout

    async def addresses(self, host: str) -> list[IPAddress]:
        """Every address `host` resolves to (a literal is itself); EgressError when none."""
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        try:
            async with asyncio.timeout(self.timeout):
                found = await (self._dns(host) if self.nameserver else self._system(host))
        except TimeoutError:
            raise EgressError(UNREACHABLE) from None
        if not found:
            raise EgressError(UNREACHABLE)
        return list(dict.fromkeys(found))

    async def _system(self, host: str) -> list[IPAddress]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError:
            raise EgressError(UNREACHABLE) from None
        return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]

    async def _dns(self, host: str) -> list[IPAddress]:
        import dns.asyncresolver
        import dns.exception
        import dns.rdatatype

        assert self.nameserver is not None
        server, _, port = self.nameserver.rpartition(":")
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [server.strip("[]")]
        resolver.port = int(port)
        resolver.lifetime = self.timeout
        resolver.cache = None  # every connect asks again: no stale answer stands in for a check
        found: list[IPAddress] = []
        for kind in (dns.rdatatype.A, dns.rdatatype.AAAA):
            try:
                answer = await resolver.resolve(host, kind, raise_on_no_answer=False, search=False)
            except dns.exception.DNSException:
                continue
            if answer.rrset is not None:
                found += [ipaddress.ip_address(r.address) for r in answer.rrset]
        return found


@dataclass(frozen=True)
class Permit:
    """What a call may connect to: public addresses (unless plaintext), plus the addresses of the
    allow entries that match its scheme, port and path."""

    scheme: str
    entries: tuple[AllowEntry, ...]

    @property
    def plaintext(self) -> bool:
        """The call goes without TLS (only ever through an entry that allows plaintext)."""
        return self.scheme in ("http", "smtp") and any(e.plaintext for e in self.entries)

    def check(self, address: IPAddress) -> None:
        """Refuse `address` unless it is allowed for this call."""
        if self.plaintext:
            if not any(e.plaintext and address in e.addresses for e in self.entries):
                raise EgressRefused(f"{address}: plaintext only to an allow entry")
            return
        if any(address in e.addresses for e in self.entries):
            return
        why = refused_class(address)
        if why:
            raise EgressRefused(f"{address}: {why}")


async def checked_addresses(resolver: Resolver, host: str, permit: Permit) -> list[IPAddress]:
    """`host`'s addresses, every one checked (one refused refuses the call)."""
    found = await resolver.addresses(host)
    for address in found:
        permit.check(address)
    return found


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network layer for one permit: resolves, checks every address and connects to a
    checked one. httpcore then starts TLS on this stream with the URL's hostname (SNI and the
    certificate check), so verification stays against the name, not the address."""

    def __init__(self, resolver: Resolver, permit: Permit):
        self.resolver = resolver
        self.permit = permit
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await checked_addresses(self.resolver, host.strip("[]"), self.permit)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(str(address), port, timeout=timeout, socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise httpcore.ConnectError(UNREACHABLE) from last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise EgressRefused("unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


# ---------------------------------------------------------------------------------------------
# The guard


@dataclass(frozen=True)
class SmtpConnection:
    """A TCP connection to a checked relay address, and how the relay must be spoken to."""

    sock: socket.socket
    hostname: str  # the relay's name from the URL: what its certificate must be for
    tls: Literal["implicit", "starttls", "none"]


class EgressGuard:
    """The guarded outbound client (one per process or per use; `aclose` when done).

    HTTP calls go through one httpx client per permit (the allow entries a call may use), so a
    pooled connection is only ever reused by calls that were allowed the same addresses."""

    def __init__(
        self,
        allow: str = "",
        *,
        resolver: Resolver | None = None,
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_connections: int = 100,
        user_agent: str = "pennant",
    ):
        self.allow = parse_allow(allow)
        with _process_lock:
            _guard_entries.update(self.allow)
        self.resolver = resolver or Resolver()
        self.deadline_seconds = deadline_seconds
        self.max_bytes = max_bytes
        self.max_connections = max_connections
        self.user_agent = user_agent
        self._clients: dict[Permit, httpx.AsyncClient] = {}
        self._ssl = ssl.create_default_context()

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> EgressGuard:
        """The guard for a process's settings (`egress_allow`, `egress_dns_server`)."""
        allow, nameserver = getattr(settings, "egress_allow", ""), getattr(settings, "egress_dns_server", None)
        return cls(allow, resolver=Resolver(nameserver), **kwargs)

    @classmethod
    def for_process(cls, **kwargs: Any) -> EgressGuard:
        """A guard with the settings the process was configured with (`configure_process`),
        else those of its environment."""
        if egress_rules._configured is not None:
            allow, nameserver = egress_rules._configured
            return cls(allow, resolver=Resolver(nameserver), **kwargs)
        from core.infra.settings import get_settings

        return cls.from_settings(get_settings(), **kwargs)

    async def __aenter__(self) -> EgressGuard:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every pooled connection."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    def permit(self, target: Target) -> Permit:
        """The permit for a call to `target`; refused at once when it is plaintext without an
        entry that allows it."""
        entries = tuple(e for e in self.allow + process_entries() if e.matches(target.scheme, target.port, target.path))
        permit = Permit(target.scheme, entries)
        if target.scheme == "http" and not permit.plaintext:
            raise EgressRefused("plain http without an allow entry")
        return permit

    def _client(self, permit: Permit) -> httpx.AsyncClient:
        client = self._clients.get(permit)
        if client is None:
            transport = httpx.AsyncHTTPTransport(trust_env=False)
            # httpx takes no network backend of its own: give its pool one that pins the checked
            # address (the rest of the transport, e.g. its exception mapping, stays httpx's).
            transport._pool = httpcore.AsyncConnectionPool(
                ssl_context=self._ssl,
                max_connections=self.max_connections,
                max_keepalive_connections=min(20, self.max_connections),
                keepalive_expiry=5.0,
                network_backend=_PinnedBackend(self.resolver, permit),
            )
            client = httpx.AsyncClient(
                transport=transport,
                trust_env=False,
                follow_redirects=False,
                timeout=httpx.Timeout(self.deadline_seconds, connect=CONNECT_TIMEOUT_SECONDS),
                headers={"User-Agent": self.user_agent},
            )
            self._clients[permit] = client
        return client

    async def request(
        self,
        method: str,
        url: str,
        *,
        deadline_seconds: float | None = None,
        max_bytes: int | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Make the call; the answer read whole (at most `max_bytes`) within the deadline.

        Any status comes back as a response (its `extensions["pennant_guarded"]` is True, so
        callers know not to quote it); the call's failures raise EgressError with a fixed word.
        """
        target = parse_target(url, HTTP_SCHEMES)
        client = self._client(self.permit(target))
        deadline = min(deadline_seconds or self.deadline_seconds, self.deadline_seconds)
        cap = max_bytes or self.max_bytes
        try:
            async with asyncio.timeout(deadline):
                auth = kwargs.pop("auth", None)
                request = client.build_request(method, target.url, headers=headers, **kwargs)
                response = await client.send(request, auth=auth, stream=True)
                try:
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > cap:
                            raise EgressError(TOO_LARGE)
                finally:
                    await response.aclose()
        except EgressError:
            raise
        except TimeoutError:
            raise EgressError(TIMEOUT) from None
        except httpx.TimeoutException as exc:
            # A connect that timed out is "unreachable", as one that was refused: no difference
            # between a closed and a filtered port.
            word = UNREACHABLE if isinstance(exc, httpx.ConnectTimeout) else TIMEOUT
            raise EgressError(word) from None
        except (httpx.HTTPError, OSError, ssl.SSLError):
            raise EgressError(UNREACHABLE) from None
        return httpx.Response(
            response.status_code,
            headers=[
                (k, v) for k, v in response.headers.items() if k.lower() not in ("content-encoding", "content-length")
            ],
            content=bytes(body),
            request=request,
            extensions={"pennant_guarded": True},
        )

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        """`request("POST", url, ...)`."""
        return await self.request("POST", url, **kwargs)

    def smtp_target(self, url: str) -> tuple[Target, Permit]:
        """The relay URL (`smtp://host:port`, STARTTLS required, or `smtps://`, implicit TLS)
        parsed once, and its permit."""
        target = parse_target(url, SMTP_SCHEMES)
        return target, self.permit(target)

    async def connect_smtp(self, target: Target, permit: Permit, within: float) -> SmtpConnection:
        """A TCP connection to a checked address of the relay, within `within` seconds."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(within):
                addresses = await checked_addresses(self.resolver, target.host, permit)
                for address in addresses:
                    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
                    sock = socket.socket(family, socket.SOCK_STREAM)
                    sock.setblocking(False)
                    try:
                        await loop.sock_connect(sock, (str(address), target.port))
                    except OSError:
                        sock.close()
                        continue
                    except BaseException:
                        sock.close()
                        raise
                    tls: Literal["implicit", "starttls", "none"] = (
                        "implicit" if target.scheme == "smtps" else "none" if permit.plaintext else "starttls"
                    )
                    return SmtpConnection(sock, target.host, tls)
        except TimeoutError:
            raise EgressError(UNREACHABLE) from None
        raise EgressError(UNREACHABLE)
