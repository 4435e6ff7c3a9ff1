"""The Segment-compatible tracking API: `POST /v1/batch`, `/v1/track`, `/v1/identify`,
`/v1/page`, `/v1/screen`, `/v1/alias`, `/v1/group` and analytics.js's short `/v1/b|t|i|p`.

Served in a lane of its own in front of the app's stack (like the open and click lane), because
the API's body guard refuses a whole body for one bad value, while here one bad event is a
rejection and the rest are kept (Segment's libraries drop a whole batch on any 4xx but 429).
The body is read here: at most 500 KB, counted on the decompressed bytes while a gzip body is
inflated, so a gzip bomb is refused after 500 KB of output, not after expanding.

Order of a call: the key (HTTP Basic user name with an empty password, or a Bearer key; else
`writeKey` in the body), the origin (a browser's Origin must be one the tenant lists), the
tenant's events-per-second bucket (shared by every API process: core.infra.rate_limits; 429
with Retry-After, decided before the body is read when the key is in a header), then the body
read, checked, charged to the bucket by its event count, and committed before the answer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import logging
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth_limit import AuthFailureGuard, AuthFailureLimiter
from core.events.ingest import MAX_BATCH_BYTES, BadBody, parse_body, store
from core.events.sources import Source, lookup_source
from core.events.stream import ensure_partitions
from core.infra.metrics import INGEST_DURATION, INGESTED_EVENTS, REJECTED_EVENTS
from core.infra.rate_limits import admit, debit
from core.tenants.config_schema import Engagement, Events
from core.tenants.config_store import get_config
from core.tenants.keys import lookup_key

log = logging.getLogger("pennant.api.ingest")

# path -> the call's type (None: a batch)
PATHS: dict[str, str | None] = {
    "/v1/batch": None,
    "/v1/b": None,
    "/v1/track": "track",
    "/v1/t": "track",
    "/v1/identify": "identify",
    "/v1/i": "identify",
    "/v1/page": "page",
    "/v1/p": "page",
    "/v1/screen": "screen",
    "/v1/alias": "alias",
    "/v1/group": "group",
}
# A tenant's events settings are read at most this often per API process.
CONFIG_TTL_SECONDS = 5.0
# The stream's partitions ahead and the dedupe sweep: this often per API process.
UPKEEP_SECONDS = 6 * 3600.0
_JSON = b"application/json"

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


def _error(status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> Answer:
    """The API's one error body (api/errors.py), for the lane in front of its handlers."""
    body = json.dumps({"detail": message, "errors": [message]}).encode()
    return status, [(b"content-type", _JSON), *(headers or [])], body


class _Refused(Exception):
    def __init__(self, answer: Answer):
        super().__init__(answer[0])
        self.answer = answer


@dataclass
class _Request:
    kind: str | None
    headers: dict[str, str]


def _presented_key(authorization: str | None) -> str | None:
    """The key in an Authorization header: Basic user name (Segment's write key; empty
    password), or a Bearer key."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[0] or None
    return None


async def verify_write_key(pool: asyncpg.Pool, authorization: bytes) -> bool:
    """Whether an Authorization header carries a valid source key (for the failure guard)."""
    key = _presented_key(authorization.decode("latin-1"))
    return key is not None and await lookup_source(pool, key) is not None


async def read_limited(receive: Receive, encoding: str, limit: int) -> bytes:
    """The request body, inflated when gzip (or deflate); refused (400) as soon as more than
    `limit` bytes have arrived or come out of the decompressor."""
    too_large = _Refused(
        _error(400, f"body larger than {limit // 1024} KB (decompressed)", [(b"connection", b"close")])
    )
    inflater = None
    if encoding in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(wbits=31)
    elif encoding == "deflate":
        inflater = zlib.decompressobj()
    elif encoding not in ("", "identity"):
        raise _Refused(_error(415, f"Content-Encoding '{encoding[:40]}' is not supported (gzip or none)"))
    out: list[bytes] = []
    size = raw = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            raise _Refused((499, [], b""))
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        raw += len(chunk)
        if raw > limit:
            raise too_large
        if inflater is None:
            out.append(chunk)
            size += len(chunk)
            continue
        try:
            # Never more output than the limit allows plus one byte: a bomb stops here.
            piece = inflater.decompress(chunk, limit + 1 - size)
        except zlib.error:
            raise _Refused(_error(400, "body: not valid gzip")) from None
        size += len(piece)
        out.append(piece)
        if size > limit or inflater.unconsumed_tail:
            raise too_large
    if inflater is not None:
        try:
            tail = inflater.flush()
        except zlib.error:
            raise _Refused(_error(400, "body: not valid gzip")) from None
        size += len(tail)
        out.append(tail)
        if size > limit:
            raise too_large
    return b"".join(out)


class Ingest:
    """Per API process: the tenants' events settings (cached briefly) and the periodic upkeep."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._settings: dict[str, tuple[float, Events, float]] = {}
        self._upkeep_at = 0.0
        self._upkeep_task: asyncio.Task[None] | None = None

    async def settings(self, tenant: str) -> tuple[Events, float]:
        """The tenant's `events:` settings and attribution window (defaults without a config)."""
        now = time.monotonic()
        cached = self._settings.get(tenant)
        if cached is not None and now - cached[0] < CONFIG_TTL_SECONDS:
            return cached[1], cached[2]
        found = await get_config(self.pool, tenant)
        events = found[1].events if found else Events()
        window = found[1].engagement.attribution_window_days if found else Engagement().attribution_window_days
        self._settings[tenant] = (now, events, window)
        return events, window

    async def upkeep(self) -> None:
        """Start the stream's upkeep (partitions ahead, dedupe sweep, retention) at most every
        UPKEEP_SECONDS, in the background: no call waits for it."""
        now = time.monotonic()
        if self._upkeep_at and now - self._upkeep_at < UPKEEP_SECONDS:
            return
        self._upkeep_at = now
        self._upkeep_task = asyncio.create_task(self._run_upkeep())

    async def _run_upkeep(self) -> None:
        try:
            await ensure_partitions(self.pool)
        except (OSError, asyncpg.PostgresError):
            log.exception("event stream upkeep failed (partitions ahead, dedupe sweep, retention)")

    async def authenticate(self, key: str | None) -> Source:
        """The tenant and source of a write key or tenant API key; 401 otherwise."""
        if key:
            source = await lookup_source(self.pool, key)
            if source is not None:
                return source
            principal = await lookup_key(self.pool, key)
            if principal is not None and principal.tenant is not None:
                return Source(tenant=principal.tenant, source_id=None)
            if principal is not None:
                raise _Refused(_error(403, "an admin key cannot send events: use a source key or a tenant key"))
            raise _Refused(_error(401, "invalid write key", [(b"www-authenticate", b'Basic realm="pennant"')]))
        raise _Refused(
            _error(
                401,
                "missing write key: HTTP Basic with the source key as user name, or writeKey in the body",
                [(b"www-authenticate", b'Basic realm="pennant"')],
            )
        )

    async def admit(self, source: Source, origin: str | None) -> Events:
        """Refuse a browser origin the tenant does not list, and a tenant over its event rate."""
        settings, _ = await self.settings(source.tenant)
        if origin is not None and origin not in settings.cors_origins:
            raise _Refused(_error(403, "this origin may not send events (events.cors_origins)"))
        wait = await admit(self.pool, f"events:{source.tenant}", **_bucket(settings), cost=0.0, need=0.0)
        if wait > 0:
            seconds = str(max(1, math.ceil(wait))).encode()
            raise _Refused(_error(429, "event rate over the tenant's limit (events.rate_per_second)",
                                  [(b"retry-after", seconds)]))  # fmt: skip
        return settings

    async def call(self, request: _Request, receive: Receive) -> Answer:
        """Authenticate, admit, read, check and store one tracking call."""
        started = time.perf_counter()
        await self.upkeep()
        origin = request.headers.get("origin")
        source: Source | None = None
        settings: Events | None = None
        header_key = _presented_key(request.headers.get("authorization"))
        if header_key:
            source = await self.authenticate(header_key)
            settings = await self.admit(source, origin)
        body = await read_limited(receive, request.headers.get("content-encoding", "").strip().lower(), MAX_BATCH_BYTES)
        received_at = dt.datetime.now(dt.UTC)
        try:
            parsed = parse_body(body, request.kind, received_at)
        except BadBody as exc:
            raise _Refused(_error(400, str(exc))) from None
        if source is None:
            source = await self.authenticate(parsed.write_key)
            settings = await self.admit(source, origin)
        assert settings is not None
        tenant = source.tenant
        offered = len(parsed.events) + len(parsed.rejected)
        if offered:
            await debit(self.pool, f"events:{tenant}", **_bucket(settings), cost=float(offered))
        _, window = await self.settings(tenant)
        outcome = await store(self.pool, tenant, source.source_id, parsed, received_at, attribution_window_days=window)
        INGESTED_EVENTS.labels(tenant, "accepted").inc(outcome.accepted)
        if outcome.duplicates:
            INGESTED_EVENTS.labels(tenant, "duplicate").inc(outcome.duplicates)
        if outcome.rejected:
            INGESTED_EVENTS.labels(tenant, "rejected").inc(len(outcome.rejected))
            for problem in outcome.rejected:
                REJECTED_EVENTS.labels(tenant, problem.field).inc()
        INGEST_DURATION.labels(tenant).observe(time.perf_counter() - started)
        headers = [(b"content-type", _JSON)]
        if origin is not None:
            headers.append((b"access-control-allow-origin", origin.encode("latin-1")))
            headers.append((b"vary", b"Origin"))
        return 200, headers, json.dumps(outcome.as_dict()).encode()


def _bucket(settings: Events) -> dict[str, float]:
    return {"rate": settings.rate_per_second, "burst": settings.rate_per_second * settings.burst_seconds}


_PREFLIGHT = [
    (b"access-control-allow-methods", b"POST, OPTIONS"),
    (b"access-control-allow-headers", b"Content-Type, Authorization, Content-Encoding"),
    (b"access-control-max-age", b"86400"),
    (b"vary", b"Origin"),
]


class IngestLane:
    """ASGI in front of the app's stack: the tracking paths are answered here, every other
    request goes on to the app."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self.state = fastapi_app.state
        # Wrong write keys count against the same shared per-address limit as wrong API keys
        # (the app's own guard is behind this lane); a genuine one from a blocked address passes.
        limiter: AuthFailureLimiter = fastapi_app.state.auth_limiter
        if verify_write_key not in limiter.verifiers:
            limiter.verifiers.append(verify_write_key)
        self.guarded = AuthFailureGuard(self._answer, limiter)

    def ingest(self) -> Ingest:
        """The app's ingest state, made on first use (after the lifespan has opened the pool)."""
        ingest: Ingest | None = getattr(self.state, "ingest", None)
        if ingest is None or ingest.pool is not self.state.pool:
            ingest = self.state.ingest = Ingest(self.state.pool)
        return ingest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a tracking call (behind the failed-authentication guard), or pass the request on."""
        if scope["type"] != "http" or scope["path"] not in PATHS:
            await self.app(scope, receive, send)
            return
        await self.guarded(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method = scope["method"]
        if method == "OPTIONS":
            # The preflight carries no key, so it cannot know the tenant: the origin is checked
            # on the call itself (and a page of an unlisted origin is refused there).
            origin = headers.get("origin", "*").encode("latin-1")
            answer: Answer = (204, [(b"access-control-allow-origin", origin), *_PREFLIGHT], b"")
        elif method != "POST":
            answer = _error(405, "tracking calls are POSTs", [(b"allow", b"POST, OPTIONS")])
        else:
            try:
                answer = await self.ingest().call(_Request(PATHS[scope["path"]], headers), receive)
            except _Refused as refused:
                answer = refused.answer
                if answer[0] == 499:  # the client went away
                    return
            except (OSError, asyncpg.PostgresError):
                # Not committed means not acknowledged: the library retries a 5xx.
                log.exception("a tracking call could not be stored")
                answer = _error(503, "events could not be stored; try again", [(b"retry-after", b"1")])
            except Exception:  # the app's error handlers are behind us: answer as they would
                log.exception("unhandled error on POST %s", scope["path"])
                answer = _error(500, "internal error; see the API log")
        status, response_headers, body = answer
        if status < 400:  # the key was genuine: the guard lets it through a block from now on
            scope.setdefault("state", {})["authenticated"] = True
        response_headers = [*response_headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})


def install(app: FastAPI) -> None:
    """Put the tracking API's lane in front of `app`'s whole middleware stack (call it after
    any instrumentation that wraps the stack)."""
    build: Callable[[], ASGIApp] = app.build_middleware_stack

    def build_with_lane() -> ASGIApp:
        return IngestLane(build(), app)

    app.build_middleware_stack = build_with_lane  # type: ignore[method-assign]
