"""The rules of egress, without the client: which addresses a tenant-aimed call may reach, how a
URL is parsed for it, the operator's `EGRESS_ALLOW` entries, and the save-time check of a literal
endpoint. No HTTP client and no network beyond resolving the allow list's names at start, so the
tenant config schema (below the guard in the layers, and read inside the Temporal sandbox) can
check an endpoint at save with the very rules the guarded client (core/security/egress.py)
applies at send.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Fixed words a tenant may see (ledger reasons, API errors).
REFUSED = "refused"
UNREACHABLE = "unreachable"
TIMEOUT = "timeout"
TOO_LARGE = "too large"

# Whole-call deadline and answer cap unless the caller asks for less.
DEFAULT_DEADLINE_SECONDS = 30.0
DEFAULT_MAX_BYTES = 1024 * 1024
# Name resolution has its own, shorter budget inside the call's deadline.
RESOLVE_TIMEOUT_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 5.0

HTTP_SCHEMES = frozenset({"http", "https"})
SMTP_SCHEMES = frozenset({"smtp", "smtps"})
ALLOW_SCHEMES = frozenset({"http", "https", "smtp", "smtps", "smtp+plain"})
DEFAULT_PORTS = {"http": 80, "https": 443, "smtp": 25, "smtps": 465, "smtp+plain": 25}


class EgressError(Exception):
    """An outbound call did not happen or did not finish; `word` is all a tenant is told."""

    def __init__(self, word: str):
        super().__init__(word)
        self.word = word


class EgressRefused(EgressError):
    """The guard would not make the call (address class, scheme, userinfo, no allow entry).
    Retrying cannot help: the caller fails the call for good."""

    def __init__(self, why: str = ""):
        super().__init__(REFUSED)
        # For the operator's logs only (which rule refused); never shown to the tenant.
        self.why = why


class EgressRejected(EgressError):
    """The remote answered with a status the caller treats as a failure."""

    def __init__(self, status: int):
        super().__init__(f"rejected with status {status}")
        self.status = status


# ---------------------------------------------------------------------------------------------
# Address classes


def _nets(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# Spelled out rather than trusting `is_global`, which on Python 3.11 calls multicast global and
# misses some of these.
REFUSED_V4 = _nets(
    "0.0.0.0/8",  # "this network", and the unspecified 0.0.0.0
    "10.0.0.0/8",
    "100.64.0.0/10",  # CGNAT
    "127.0.0.0/8",
    "169.254.0.0/16",  # link-local, incl. the metadata address 169.254.169.254
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",  # 6to4 relay anycast
    "192.168.0.0/16",
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, incl. broadcast
)
REFUSED_V6 = _nets(
    "::/128",  # unspecified
    "::1/128",
    "100::/64",  # discard
    "2001:db8::/32",  # documentation
    "fc00::/7",  # unique-local, incl. the metadata address fd00:ec2::254
    "fec0::/10",  # site-local
    "fe80::/10",  # link-local
    "ff00::/8",  # multicast
)
MAPPED = ipaddress.ip_network("::ffff:0:0/96")
COMPATIBLE = ipaddress.ip_network("::/96")
SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
TEREDO = ipaddress.ip_network("2001::/32")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address] | None:
    """The IPv4 addresses an IPv6 address carries (mapped, compatible, 6to4, Teredo, NAT64), or
    None when it carries none. The carried address is where the packets end up."""
    value = int(address)
    if address in MAPPED or address in COMPATIBLE or address in NAT64:
        return [ipaddress.IPv4Address(value & 0xFFFFFFFF)]
    if address in SIX_TO_FOUR:
        return [ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF)]
    if address in TEREDO:
        server, client = address.teredo or (None, None)
        return [a for a in (server, client) if a is not None]
    if address in NAT64_LOCAL:
        # A local-use NAT64 prefix may be any length from /48 to /96 (RFC 6052/8215): read the
        # IPv4 both where a /96 and where a /48 prefix puts it, and refuse if either is refused.
        slash48 = ((value >> 64) & 0xFFFF) << 16 | (value >> 40) & 0xFFFF
        return [ipaddress.IPv4Address(value & 0xFFFFFFFF), ipaddress.IPv4Address(slash48)]
    return None


def refused_class(address: IPAddress) -> str | None:
    """Why an address is not a public destination (its class), or None when it is one."""
    if isinstance(address, ipaddress.IPv6Address):
        carried = embedded_ipv4(address)
        if carried is not None:
            for v4 in carried:
                why = refused_class(v4)
                if why:
                    return f"{why} (embedded in {address})"
            return None
        if address.scope_id:
            return "scoped"
        for net in REFUSED_V6:
            if address in net:
                return f"in {net}"
    else:
        for net in REFUSED_V4:
            if address in net:
                return f"in {net}"
    if address.is_multicast or address.is_unspecified or address.is_loopback or address.is_link_local:
        return "not global"
    if not address.is_global:
        return "not global"
    return None


# ---------------------------------------------------------------------------------------------
# Targets and allow entries


@dataclass(frozen=True)
class Target:
    """One parse of a URL: what is checked is what is requested."""

    url: str
    scheme: str
    host: str  # no brackets for IPv6
    port: int
    path: str

    @property
    def literal(self) -> IPAddress | None:
        """The host as an address when the URL names one."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


def parse_target(url: str, schemes: Iterable[str] = HTTP_SCHEMES) -> Target:
    """The URL parsed once; refused when it has userinfo, another scheme or no host."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise EgressRefused(f"unparsable URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in set(schemes):
        raise EgressRefused(f"scheme {scheme!r} is not allowed")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise EgressRefused("userinfo in the URL")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise EgressRefused("no host")
    if "%" in host:  # a scoped IPv6 literal names an interface, not a destination
        raise EgressRefused("scoped address")
    return Target(url.strip(), scheme, host, port or DEFAULT_PORTS[scheme], parts.path or "/")


@dataclass(frozen=True)
class AllowEntry:
    """One `scheme://host:port[/path-prefix]` of the operator's allow list, its name resolved."""

    text: str
    scheme: str
    addresses: frozenset[IPAddress]
    port: int
    path_prefix: str

    def matches(self, scheme: str, port: int, path: str) -> bool:
        """Whether a call with this scheme (the entry's, or SMTP's plaintext form), port and path
        may use the entry (the address is matched at connect)."""
        if self.port != port:
            return False
        if self.scheme != scheme and not (self.scheme == "smtp+plain" and scheme == "smtp"):
            return False
        prefix = self.path_prefix.rstrip("/")
        return not prefix or path == prefix or path.startswith(prefix + "/")

    @property
    def plaintext(self) -> bool:
        """The entry allows a call without TLS."""
        return self.scheme in ("http", "smtp+plain")


def _resolve_now(host: str) -> frozenset[IPAddress]:
    try:
        return frozenset({ipaddress.ip_address(host)})
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ValueError(f"EGRESS_ALLOW: cannot resolve {host!r}: {exc}") from None
    return frozenset(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos)


def parse_allow_entry(text: str) -> AllowEntry:
    """One allow entry; its host resolved now (at start), a ValueError when it is malformed."""
    parts = urlsplit(text.strip())
    scheme = parts.scheme.lower()
    if scheme not in ALLOW_SCHEMES:
        raise ValueError(f"EGRESS_ALLOW: {text!r}: scheme must be one of {', '.join(sorted(ALLOW_SCHEMES))}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"EGRESS_ALLOW: {text!r}: bad port") from None
    if not parts.hostname or port is None or parts.username or parts.query or parts.fragment:
        raise ValueError(f"EGRESS_ALLOW: {text!r}: expected scheme://host:port[/path-prefix]")
    if scheme.startswith("smtp") and parts.path not in ("", "/"):
        raise ValueError(f"EGRESS_ALLOW: {text!r}: an SMTP entry has no path")
    return AllowEntry(text.strip(), scheme, _resolve_now(parts.hostname), port, parts.path)


@lru_cache(maxsize=16)
def parse_allow(text: str) -> tuple[AllowEntry, ...]:
    """The operator's allow list (comma or space separated), names resolved once."""
    return tuple(parse_allow_entry(t) for t in text.replace(",", " ").split())


_process_lock = threading.Lock()
_process_entries: list[AllowEntry] = []


@contextlib.contextmanager
def allowing(*entries: str) -> Iterator[None]:
    """Allow these entries in this process while the block runs, for every guard: how a test
    lets the guard reach its own loopback listener."""
    parsed = [parse_allow_entry(e) for e in entries]
    with _process_lock:
        _process_entries.extend(parsed)
    try:
        yield
    finally:
        with _process_lock:
            for entry in parsed:
                _process_entries.remove(entry)


def process_entries() -> tuple[AllowEntry, ...]:
    """The entries allowed in this process by `allowing`."""
    with _process_lock:
        return tuple(_process_entries)


def literal_never_passes(url: str, schemes: Iterable[str], allow: str = "") -> str | None:
    """Why a URL whose host is a literal address can never be called (refused class and no
    allow entry, in `allow`, the process settings or `allowing`, for its scheme and port), else
    None. Used at config save; names are checked at send, when they are resolved."""
    try:
        target = parse_target(url, schemes)
    except EgressRefused as exc:
        return exc.why
    entries = _operator_entries(allow) + process_entries()
    # The endpoint is a base the call adds its own path to: an entry whose prefix lies under it
    # may still match the call.
    base = target.path.rstrip("/") + "/"
    candidates = [
        e
        for e in entries
        if e.matches(target.scheme, target.port, target.path)
        or (e.matches(target.scheme, target.port, e.path_prefix) and e.path_prefix.startswith(base))
    ]
    plain = target.scheme == "http" and not any(e.plaintext for e in candidates)
    address = target.literal
    if address is None:
        return "plain http is not allowed; use https" if plain else None
    if any(address in e.addresses for e in candidates):
        return None
    if target.scheme == "http":
        return "plain http is not allowed; use https"
    why = refused_class(address)
    return f"{address} is not a public address ({why})" if why else None


# What `configure_process` was given: (EGRESS_ALLOW, the DNS server).
_configured: tuple[str, str | None] | None = None


def configure_process(allow: str, nameserver: str | None = None) -> None:
    """The process's egress settings (the API calls this with the settings it was made with):
    `EgressGuard.for_process` and the save-time check use them."""
    global _configured
    parsed = parse_allow(allow)  # a malformed list fails at start, naming the entry
    with _process_lock:
        _guard_entries.update(parsed)
    _configured = (allow, nameserver)


# The allow lists of this process's guards: a config saved in a process checks its literal
# endpoints against the same EGRESS_ALLOW its guards will apply at send.
_guard_entries: set[AllowEntry] = set()


def _operator_entries(allow: str) -> tuple[AllowEntry, ...]:
    from core.infra.settings import get_settings

    with _process_lock:
        known = tuple(_guard_entries)
    try:
        return parse_allow(allow) + parse_allow(get_settings().egress_allow) + known
    except ValueError:
        return (parse_allow(allow) if allow else ()) + known
