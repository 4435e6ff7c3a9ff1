"""Open and click tracking: compact signed tokens, link rewriting and the open pixel for
delivered messages, and telling machine opens and clicks (scanners, proxies, bots) apart.

A token names one message (tenant, run, customer, channel) and, for a click, one link of the
run. It is a small binary record plus a truncated HMAC-SHA256, base64url-encoded; the link is
only an id: the URL a click redirects to is the one recorded in `run_links` when the run's
messages were rendered, never anything the request carries.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from html import escape, unescape
from typing import Any, Literal
from urllib.parse import urlsplit

import asyncpg
from crawlerdetect import CrawlerDetect

from core.common.signed_links import keys as link_keys
from core.content.templating import RenderedEmail, RenderedPush, RenderedSms
from core.infra.db import TenantConn, tenant_tx
from core.tenants.config_schema import Engagement

Kind = Literal["open", "click"]

# The channel's number inside a token. Append only: tokens already in inboxes keep their meaning.
TOKEN_CHANNELS = ("email", "sms", "push", "webhook")
_VERSION = 1
# 12 bytes (96 bits) of HMAC-SHA256: far beyond guessing over HTTP, and short in a URL.
MAC_BYTES = 12
# Raw bytes of a link id (the first bytes of the URL's SHA-256); 8 characters in base64url.
LINK_ID_BYTES = 6
# Longer strings are not even decoded: the longest genuine token (63-character slug, largest
# customer id) is well under this.
MAX_TOKEN_CHARS = 200
# Stored user agents are cut to this length: enough to classify, no room for abuse.
MAX_USER_AGENT = 256

OPEN_PATH = "/t/o/"
CLICK_PATH = "/t/c/"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_B64_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def _unb64(text: str) -> bytes | None:
    if not _B64_RE.match(text) or len(text) % 4 == 1:
        return None
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    # Only the one canonical spelling: a last character that differs in its unused bits would
    # decode to the same bytes, and an altered token must never verify.
    return raw if _b64(raw) == text else None


@lru_cache(maxsize=8)
def _keys(secret: str) -> tuple[bytes, ...]:
    # A key of its own per key of the link keyring (newest first), so a tracking MAC can never
    # pass for an unsubscribe link's MAC or the other way round. Tokens are signed with the
    # newest and verify under any, so links in mail already sent survive a rotation.
    ring = link_keys(secret) or [secret]
    return tuple(hmac.new(key.encode(), b"pennant tracking token v1", hashlib.sha256).digest() for key in ring)


def _key(secret: str) -> bytes:
    return _keys(secret)[0]


def link_id(url: str) -> str:
    """The short id of `url` within a run: the first bytes of its SHA-256, base64url."""
    return _b64(hashlib.sha256(url.encode()).digest()[:LINK_ID_BYTES])


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


@dataclass(frozen=True)
class Token:
    """What a tracking token names: one message, and for a click, one of its run's links."""

    tenant: str
    run_id: str
    customer_id: int
    channel: str
    kind: Kind
    link_id: str | None = None


def _message_part(tenant: str, run_id: str, channel: str, kind: Kind) -> bytes:
    """A token's leading bytes: version, kind and channel, the tenant's slug, the run."""
    slug = tenant.encode()
    head = (_VERSION << 4) | (8 if kind == "click" else 0) | TOKEN_CHANNELS.index(channel)
    return bytes((head, len(slug))) + slug + uuid.UUID(run_id).bytes


def _mac(secret: str, body: bytes) -> bytes:
    return hmac.digest(_key(secret), body, "sha256")[:MAC_BYTES]


def sign(token: Token, secret: str) -> str:
    """The compact signed form of `token` (base64url, about 60-80 characters)."""
    body = _message_part(token.tenant, token.run_id, token.channel, token.kind) + _varint(token.customer_id)
    if token.kind == "click":
        assert token.link_id is not None
        link = _unb64(token.link_id)
        assert link is not None and len(link) == LINK_ID_BYTES
        body += link
    return _b64(body + _mac(secret, body))


def verify(text: str, secret: str, kind: Kind) -> Token | None:
    """The token `text` stands for if it is genuine and of `kind`; None if forged, altered or garbled."""
    if len(text) > MAX_TOKEN_CHARS:
        return None
    raw = _unb64(text)
    if raw is None or len(raw) < MAC_BYTES + 2:
        return None
    body, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
    if not any(hmac.compare_digest(mac, hmac.digest(key, body, "sha256")[:MAC_BYTES]) for key in _keys(secret)):
        return None
    # Genuine from here on: we wrote it, so its layout is ours; still, parse strictly.
    head, size = body[0], body[1]
    is_click = bool(head & 8)
    if head >> 4 != _VERSION or is_click != (kind == "click") or (head & 7) >= len(TOKEN_CHANNELS):
        return None
    pos = 2 + size
    tenant, run = body[2:pos], body[pos : pos + 16]
    pos += 16
    customer, shift = 0, 0
    while pos < len(body):
        byte = body[pos]
        pos += 1
        customer |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    else:
        return None
    link = body[pos:]
    if len(run) != 16 or len(link) != (LINK_ID_BYTES if is_click else 0):
        return None
    return Token(
        tenant.decode(), str(uuid.UUID(bytes=run)), customer, TOKEN_CHANNELS[head & 7], kind, _b64(link) or None
    )


# -- rewriting ------------------------------------------------------------------------------


def trackable(url: str) -> bool:
    """Whether a link may be tracked: absolute http(s) with a host (not mailto:, tel:, #anchors)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


# The HTML tokenizer's view that matters here, in one regular expression scanned once (a
# Python-level parser costs more than rendering the message): comments, CDATA, doctypes and
# processing instructions; raw-text elements (script, style, …) whole, since what looks like a
# tag inside them is not one; and every tag with its attributes, a quoted value running to its
# closing quote whatever it holds (`>` and `<a` included), as browsers read it. Group "link"
# is set for the start tag of an <a> or <area>. Possessive quantifiers, and a `<` outside
# quotes ending a tag that has not closed, keep a scan linear even in damaged markup
# (browsers would read on; such a tag is left as it is, untracked).
_ATTRS = r"""(?:[\s/]++|[^\s/<>=]++(?:\s*+=\s*+(?:"[^"]*+"|'[^']*+'|[^\s<>]*+))?+|=[^\s<>]*+)*+"""
_NOT_LINK = r"(?!(?:a|area)[\s/>])"
_RAW_TEXT = ("script", "style", "textarea", "title", "xmp")
_HTML_TOKEN = re.compile(
    # Everything up to the next link tag, as one match (so Python sees one match per link).
    r"(?:[^<]++"
    r"|<!--.*?(?:-->|\Z)"
    r"|<!\[CDATA\[.*?(?:\]\]>|\Z)"
    r"|<[!?][^>]*+>?"
    # (one alternative per element: no capturing group inside a possessive repetition, which
    # Python 3.11's re gets wrong)
    + "".join(rf"|<{raw}(?=[\s/>]){_ATTRS}>.*?(?:</{raw}\s*+>|\Z)" for raw in _RAW_TEXT)
    + rf"|</[a-zA-Z][^\s/<>]*+{_ATTRS}>|<{_NOT_LINK}[a-zA-Z][^\s/<>]*+{_ATTRS}>"
    rf"|<{_NOT_LINK}"
    r")++"
    rf"|(?P<link><(?:a|area)(?=[\s/>]){_ATTRS}>)"
    r"|<",  # a link tag that never closes: left as it is
    re.IGNORECASE | re.DOTALL,
)
# One attribute inside a start tag: name, then an optional value that is double-quoted,
# single-quoted or bare (the same rules as _ATTRS, with the parts named).
_ATTR_RE = re.compile(r"""[\s/]*+(?P<name>[^\s/<>=]++)(?:\s*+=\s*+(?P<value>"[^"]*+"|'[^']*+'|[^\s<>]*+))?+""")
_TAG_NAME_RE = re.compile(r"<[a-zA-Z][^\s/<>]*+")


def _href_span(tag: str) -> tuple[int, int, str] | None:
    """Where the first href value sits in the start tag text `tag`, and the URL it holds."""
    name = _TAG_NAME_RE.match(tag)
    if name is None:
        return None
    pos = name.end()
    while True:
        match = _ATTR_RE.match(tag, pos)
        if match is None or match.end() == pos:
            return None
        if match.group("name").lower() == "href":
            value = match.group("value")
            if value is None:
                return None
            unquoted = value[1:-1] if value[:1] in ("'", '"') else value
            return match.start("value"), match.end("value"), unescape(unquoted).strip()
        pos = match.end()


def rewrite_html_links(html: str, replace: Callable[[str], str | None]) -> str:
    """`html` with the href of every link for which `replace(url)` gives a new URL rewritten
    to it; quoting, other attributes and everything else stay byte for byte."""
    out: list[str] = []
    done = 0
    for token in _HTML_TOKEN.finditer(html):
        if token.group("link") is None:
            continue
        span = _href_span(token.group("link"))
        if span is None:
            continue
        new = replace(span[2])
        if new is None:
            continue
        start = token.start()
        out += [html[done : start + span[0]], f'"{escape(new, quote=True)}"']
        done = start + span[1]
    if not out:
        return html
    out.append(html[done:])
    return "".join(out)


# A URL in plain text: up to whitespace or a character that cannot end one in running prose.
_TEXT_URL_RE = re.compile(r"""https?://[^\s<>"'`]+""", re.IGNORECASE)
_TRAILING = ".,;:!?)]}"


def rewrite_text_links(text: str, replace: Callable[[str], str | None]) -> str:
    """`text` with every http(s) URL for which `replace(url)` gives a new URL rewritten to it
    (sentence punctuation after a URL is left out of it)."""

    def one(match: re.Match[str]) -> str:
        url = match.group(0)
        tail = ""
        while url and url[-1] in _TRAILING:
            url, tail = url[:-1], url[-1] + tail
        new = replace(url) if trackable(url) else None
        return (new or url) + tail

    return _TEXT_URL_RE.sub(one, text)


def insert_pixel(html: str, pixel_url: str) -> str:
    """`html` with a 1x1 open pixel before its last `</body>` (at the end when there is none)."""
    img = f'<img src="{escape(pixel_url, quote=True)}" width="1" height="1" alt="">'
    at = html.lower().rfind("</body>")
    return html + img if at < 0 else html[:at] + img + html[at:]


class RunTracking:
    """Tracking for one run's messages: rewrites links to tracked ones, adds the open pixel, and
    remembers every URL it rewrote (link id → URL) for `run_links`."""

    def __init__(self, secret: str, public_base_url: str, tenant: str, run_id: str, engagement: Engagement):
        self.secret = secret
        self.base = public_base_url.rstrip("/")
        self.tenant = tenant
        self.run_id = run_id
        self.engagement = engagement
        self.links: dict[str, str] = {}
        # Per run, computed once: every message's tokens share these (signing is per message).
        self._ids: dict[str, tuple[str, bytes]] = {}
        self._parts: dict[tuple[str, Kind], bytes] = {}

    def _token(self, channel: str, kind: Kind, customer_id: int, link: bytes = b"") -> str:
        part = self._parts.get((channel, kind))
        if part is None:
            part = self._parts[channel, kind] = _message_part(self.tenant, self.run_id, channel, kind)
        body = part + _varint(customer_id) + link
        return _b64(body + _mac(self.secret, body))

    def _own(self, url: str, unsubscribe_url: str) -> bool:
        # Our own links (unsubscribe, already tracked) are never wrapped.
        return url == unsubscribe_url or url.startswith((f"{self.base}/u/", f"{self.base}/t/"))

    def apply(self, content: Any, channel: str, customer_id: int, unsubscribe_url: str) -> Any:
        """`content` (a rendered message on `channel`) as the tenant's engagement settings track it."""
        eng = self.engagement

        def replace(url: str) -> str | None:
            known = self._ids.get(url)
            if known is None:
                if not trackable(url) or self._own(url, unsubscribe_url):
                    return None
                raw = hashlib.sha256(url.encode()).digest()[:LINK_ID_BYTES]
                known = self._ids[url] = (_b64(raw), raw)
                self.links.setdefault(known[0], url)
            return f"{self.base}{CLICK_PATH}{self._token(channel, 'click', customer_id, known[1])}"

        if isinstance(content, RenderedEmail):
            html, text = content.html, content.text
            if eng.track_clicks:
                html = rewrite_html_links(html, replace)
                text = rewrite_text_links(text, replace)
            if eng.track_opens:
                html = insert_pixel(html, f"{self.base}{OPEN_PATH}{self._token(channel, 'open', customer_id)}")
            return dataclasses.replace(content, html=html, text=text)
        if isinstance(content, RenderedSms) and eng.track_sms_links:
            return dataclasses.replace(content, body=rewrite_text_links(content.body, replace))
        if isinstance(content, RenderedPush) and eng.track_push_links:
            data = {k: rewrite_text_links(v, replace) for k, v in content.data.items()}
            return dataclasses.replace(content, data=data)
        return content


# -- machine events -------------------------------------------------------------------------

# User agents of link scanners and mail privacy proxies that fetch every link or image of a
# message on delivery, before (or without) any person: (lower-case fragment, reason).
# Sources: the vendors' own documentation and the UAs email service providers publish.
SCANNER_AGENTS: tuple[tuple[str, str], ...] = (
    ("googleimageproxy", "gmail_image_proxy"),  # Gmail fetches images through ggpht.com
    ("yahoomailproxy", "yahoo_mail_proxy"),
    ("safelinks", "microsoft_safelinks"),  # Outlook / Defender for Office 365 Safe Links
    ("bingpreview", "microsoft_safelinks"),  # Outlook's link preview / Safe Links detonation
    ("barracuda", "barracuda"),
    ("proofpoint", "proofpoint"),  # URL Defense
    ("mimecast", "mimecast"),
    ("ironport", "cisco_ironport"),
    ("messagelabs", "symantec_messagelabs"),
    ("trend micro", "trend_micro"),
    ("forcepoint", "forcepoint"),
)
# Apple Mail Privacy Protection loads every image through Apple's proxy with a bare "Mozilla/5.0".
_APPLE_MPP = "mozilla/5.0"


@lru_cache(maxsize=1)
def _detector() -> Any:
    # Its pattern tables take a moment to compile: once, on first use (or warm_up()).
    return CrawlerDetect()


@lru_cache(maxsize=4096)
def agent_reason(user_agent: str | None) -> str | None:
    """Why a hit from `user_agent` is a machine's (scanner, proxy, bot, none given), or None."""
    ua = (user_agent or "").strip()
    if not ua:
        return "no_user_agent"
    low = ua.lower()
    if low == _APPLE_MPP:
        return "apple_mail_privacy"
    for fragment, reason in SCANNER_AGENTS:
        if fragment in low:
            return f"scanner:{reason}"
    detector = _detector()
    if detector.isCrawler(ua):
        match = str(detector.getMatches() or "").strip()
        return f"bot:{match[:40]}" if match else "bot"
    return None


def warm_up() -> None:
    """Load the bot detector's pattern tables now rather than on the first hit."""
    agent_reason.cache_clear()
    agent_reason("Mozilla/5.0 (warm-up)")


# -- the run's links ------------------------------------------------------------------------

_RECORD_LINKS_SQL = """
INSERT INTO run_links (tenant_id, run_id, link_id, url)
SELECT $1, $2::uuid, l.link_id, l.url FROM unnest($3::text[], $4::text[]) AS l(link_id, url)
ON CONFLICT (tenant_id, run_id, link_id) DO NOTHING
"""


async def record_links(conn: TenantConn, tenant: str, run_id: str, links: dict[str, str]) -> None:
    """Record a run's links (link id → URL) in one statement; ones already there stay as they are."""
    if links:
        await conn.execute(_RECORD_LINKS_SQL, tenant, run_id, list(links), list(links.values()))


async def link_url(conn: TenantConn, tenant: str, run_id: str, lid: str) -> str | None:
    """The URL recorded for link `lid` of the run, or None when the run has no such link."""
    url: str | None = await conn.fetchval(
        "SELECT url FROM run_links WHERE tenant_id = $1 AND run_id = $2::uuid AND link_id = $3", tenant, run_id, lid
    )
    return url


# -- recording hits -------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """One open or click as it arrived: the token's message, when, the user agent (cut short)
    and why it is a machine's if its user agent says so. Never the client's address."""

    token: Token
    occurred_at: dt.datetime
    user_agent: str | None
    agent_reason: str | None


def make_hit(token: Token, user_agent: str | None) -> Hit:
    """A hit on `token` now from `user_agent`, its user agent classified."""
    ua = user_agent.replace("\x00", "")[:MAX_USER_AGENT] if user_agent else None
    return Hit(token, dt.datetime.now(dt.UTC), ua, agent_reason(ua))


# Machine flag: the user agent's reason, else "too_soon" when the hit came within the tenant's
# machine window of the message's ledger row (written right after the provider took it) — or
# before that row exists at all, i.e. while the message was still being sent.
_INSERT_HITS_SQL = """
INSERT INTO message_events (tenant_id, run_id, customer_id, channel, kind, link_id,
                            machine, machine_reason, user_agent, occurred_at)
SELECT $1, h.run_id, h.customer_id, h.channel, h.kind, h.link_id,
       m.reason IS NOT NULL, m.reason, h.user_agent, h.occurred_at
FROM unnest($2::uuid[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::timestamptz[])
     AS h(run_id, customer_id, channel, kind, link_id, agent_reason, user_agent, occurred_at)
LEFT JOIN deliveries d ON d.tenant_id = $1 AND d.run_id = h.run_id
                      AND d.customer_id = h.customer_id AND d.channel = h.channel
CROSS JOIN LATERAL (
    SELECT coalesce(h.agent_reason,
                    CASE WHEN d.created_at IS NULL OR h.occurred_at < d.created_at + make_interval(secs => $10)
                         THEN 'too_soon' END) AS reason
) m
"""


async def insert_hits(conn: TenantConn, tenant: str, hits: list[Hit], machine_seconds: float) -> None:
    """Write one tenant's hits in one statement, each flagged machine where it is one."""
    await conn.execute(
        _INSERT_HITS_SQL,
        tenant,
        [h.token.run_id for h in hits],
        [h.token.customer_id for h in hits],
        [h.token.channel for h in hits],
        [h.token.kind for h in hits],
        [h.token.link_id for h in hits],
        [h.agent_reason for h in hits],
        [h.user_agent for h in hits],
        [h.occurred_at for h in hits],
        float(machine_seconds),
    )


class HitWriter:
    """Group commit for hits: each `write` waits until its hit is committed, and the hits that
    arrive while a flush is under way go together in the next one (one INSERT per tenant), so
    an answered hit is on disk and the database sees a few large writes instead of many small."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        machine_seconds: Callable[[str], Awaitable[float]],
        *,
        max_batch: int = 2000,
        linger_seconds: float = 0.002,
        max_flushes: int = 4,
    ) -> None:
        self.pool = pool
        self.machine_seconds = machine_seconds
        self.max_batch = max_batch
        self.linger = linger_seconds
        self.max_flushes = max_flushes
        self._pending: list[tuple[Hit, asyncio.Future[None]]] = []
        self._flushing = 0
        self._collecting = False  # a flush is waiting for company: new hits join it
        self._tasks: set[asyncio.Task[None]] = set()

    async def write(self, hit: Hit) -> None:
        """Return once `hit` is committed; raise what the database raised if it could not be."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((hit, future))
        self._start_flush()
        await asyncio.shield(future)  # a client that hangs up does not take its hit out of a flush

    def _start_flush(self) -> None:
        if self._pending and not self._collecting and self._flushing < self.max_flushes:
            self._flushing += 1
            self._collecting = True
            task = asyncio.create_task(self._flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _flush(self) -> None:
        try:
            try:
                if self.linger and len(self._pending) < self.max_batch:
                    await asyncio.sleep(self.linger)  # let the hits arriving meanwhile share this commit
            finally:
                self._collecting = False
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            self._start_flush()  # more than one batch's worth waiting: the next flush starts now
            if not batch:
                return
            try:
                await self._insert([hit for hit, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
        finally:
            self._flushing -= 1
            self._start_flush()

    async def _insert(self, hits: list[Hit]) -> None:
        by_tenant: dict[str, list[Hit]] = {}
        for hit in hits:
            by_tenant.setdefault(hit.token.tenant, []).append(hit)
        seconds = {tenant: await self.machine_seconds(tenant) for tenant in by_tenant}
        for tenant, group in by_tenant.items():
            async with tenant_tx(self.pool, tenant) as conn:
                await insert_hits(conn, tenant, group, seconds[tenant])
