"""Public open and click endpoints behind the tracked links and pixels of delivered messages.

`GET /t/o/{token}` answers a 1x1 transparent GIF and records an open; `GET /t/c/{token}`
records a click and redirects (302) to the URL the run recorded for the token's link. Both
write the event before they answer (group commit, see core.engagement.tracking.HitWriter), so an answered
hit is never lost. A forged, altered or garbled token, and a link the run never had, are a
404: nothing here ever redirects to a URL taken from the request.

These are the hottest endpoints (one hit per open and per click of every message), public and
bodiless, so they are served in a lane of their own in front of the app's middleware stack:
the per-request tracing span, auth-failure limiter, body guard, idempotency and request timer
do nothing for a pixel but would cost several times its own work. The hit counter
(pennant_tracking_events) still counts them, and errors keep the API's error body.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import quote

import asyncpg
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from core.engagement import tracking
from core.infra.db import tenant_tx
from core.infra.metrics import TRACKING_EVENTS
from core.tenants.config_schema import Engagement
from core.tenants.config_store import get_config

log = logging.getLogger("pennant.api.tracking")

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
# Every open and click must reach us, not a cache on the way.
_NO_CACHE = [
    (b"cache-control", b"no-store, no-cache, must-revalidate, private, max-age=0"),
    (b"pragma", b"no-cache"),
]
# A tenant's machine window is read at most this often per API process.
CONFIG_TTL_SECONDS = 5.0
# Links are immutable once recorded: an LRU of them spares most clicks a database round trip.
LINK_CACHE_SIZE = 50_000

INVALID = "this tracking link is not valid (damaged or forged)"
UNKNOWN_LINK = "this run has no such link"
NOT_RECORDED = "the event could not be recorded; try again"

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


def _error(status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> Answer:
    """The API's one error body (api/errors.py), for the lane that bypasses its handlers."""
    body = json.dumps({"detail": message, "errors": [message]}).encode()
    return status, [(b"content-type", b"application/json"), *(headers or [])], body


class Tracker:
    """Per API process: the hit writer, the tenants' machine windows and the run links seen."""

    def __init__(self, pool: asyncpg.Pool, secret: str | None) -> None:
        self.pool = pool
        self.secret = secret
        self.writer = tracking.HitWriter(pool, self.machine_seconds)
        self._windows: dict[str, tuple[float, float]] = {}
        self._links: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        tracking.warm_up()

    async def machine_seconds(self, tenant: str) -> float:
        """The tenant's machine window (engagement.machine_seconds), cached for a few seconds."""
        now = time.monotonic()
        cached = self._windows.get(tenant)
        if cached is not None and now - cached[0] < CONFIG_TTL_SECONDS:
            return cached[1]
        found = await get_config(self.pool, tenant)
        seconds = float((found[1].engagement if found else Engagement()).machine_seconds)
        self._windows[tenant] = (now, seconds)
        return seconds

    async def link_url(self, token: tracking.Token) -> str | None:
        """The URL the token's run recorded for its link, or None when there is none."""
        assert token.link_id is not None
        key = (token.tenant, token.run_id, token.link_id)
        url = self._links.get(key)
        if url is not None:
            self._links.move_to_end(key)
            return url
        async with tenant_tx(self.pool, token.tenant) as conn:
            url = await tracking.link_url(conn, token.tenant, token.run_id, token.link_id)
        if url is not None:
            self._links[key] = url
            while len(self._links) > LINK_CACHE_SIZE:
                self._links.popitem(last=False)
        return url

    async def hit(self, kind: tracking.Kind, text: str, user_agent: str | None) -> Answer:
        """Verify, record and answer one hit on `/t/o/{text}` or `/t/c/{text}`."""
        token = tracking.verify(text, self.secret, kind) if self.secret else None
        if token is None:
            return _error(404, INVALID)
        url = await self.link_url(token) if kind == "click" else None
        if kind == "click" and url is None:
            return _error(404, UNKNOWN_LINK)
        try:
            await self.writer.write(tracking.make_hit(token, user_agent))
        except (OSError, asyncpg.PostgresError):
            # Not recorded means not answered as if it were: the client (or mail app) may retry.
            log.exception("a %s hit could not be recorded", kind)
            return _error(503, NOT_RECORDED, [(b"retry-after", b"1")])
        TRACKING_EVENTS.labels(token.tenant, kind).inc()
        if url is None:
            return 200, [(b"content-type", b"image/gif"), *_NO_CACHE], PIXEL
        # Starlette's RedirectResponse quoting: a stored URL with non-ASCII characters stays valid.
        location = quote(url, safe=":/%#?=@[]!$&'()*+,;").encode("latin-1")
        return 302, [(b"location", location), (b"referrer-policy", b"no-referrer"), *_NO_CACHE], b""


_LANES: dict[str, tracking.Kind] = {tracking.OPEN_PATH: "open", tracking.CLICK_PATH: "click"}


class TrackingLane:
    """ASGI in front of the app's stack: GETs of /t/o/… and /t/c/… are answered here, every
    other request goes on to the app."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self.state = fastapi_app.state

    def tracker(self) -> Tracker:
        """The app's tracker, made on first use (after the lifespan has opened the pool)."""
        tracker: Tracker | None = getattr(self.state, "tracker", None)
        if tracker is None or tracker.pool is not self.state.pool:
            tracker = self.state.tracker = Tracker(self.state.pool, self.state.settings.link_signing_secret)
        return tracker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a tracking hit, or pass the request on."""
        kind = _LANES.get(scope["path"][:5]) if scope["type"] == "http" and scope["method"] == "GET" else None
        if kind is None:
            await self.app(scope, receive, send)
            return
        agent = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"user-agent"), None)
        try:
            status, headers, body = await self.tracker().hit(kind, scope["path"][5:], agent)
        except Exception:  # the app's error handlers are behind us: answer as they would
            log.exception("unhandled error on GET %s", scope["path"][:5])
            status, headers, body = _error(500, "internal error; see the API log")
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _NoHitLines(logging.Filter):
    """Keeps opens and clicks out of uvicorn's access log: a line per hit would flood it and
    keep every recipient's IP address, which Pennant stores nowhere else."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        path = args[2] if isinstance(args, tuple) and len(args) > 2 else None
        return not (isinstance(path, str) and path[:5] in _LANES)


def install(app: FastAPI) -> None:
    """Put the tracking lane in front of `app`'s whole middleware stack (call it last, after
    any instrumentation that wraps the stack)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _NoHitLines) for f in access.filters):
        access.addFilter(_NoHitLines())
    build: Callable[[], ASGIApp] = app.build_middleware_stack

    def build_with_lane() -> ASGIApp:
        return TrackingLane(build(), app)

    app.build_middleware_stack = build_with_lane  # type: ignore[method-assign]
