"""Public open and click endpoints behind the tracked links and pixels of delivered messages.

`GET /t/o/{token}` answers a 1x1 transparent GIF and records an open; `GET /t/c/{token}`
records a click and redirects to the URL the run recorded for the token's link. Both write
the event before they answer (group commit, see core.tracking.HitWriter), so an answered hit
is never lost. A forged, altered or garbled token, and a link the run never had, are a 404:
nothing here ever redirects to a URL taken from the request.
"""

from __future__ import annotations

import base64
import time
from collections import OrderedDict
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

from api.deps import PoolDep, SettingsDep
from core import tracking
from core.config_store import get_config
from core.db import tenant_tx
from core.metrics import TRACKING_EVENTS
from core.tenant_config import Engagement

router = APIRouter(tags=["tracking"])

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
# Every open and click must reach us, not a cache on the way.
NO_CACHE = {"Cache-Control": "no-store, no-cache, must-revalidate, private, max-age=0", "Pragma": "no-cache"}
# A tenant's machine window is read at most this often per API process.
CONFIG_TTL_SECONDS = 5.0
# Links are immutable once recorded: an LRU of them spares most clicks a database round trip.
LINK_CACHE_SIZE = 50_000

INVALID = "this tracking link is not valid (damaged or forged)"
UNKNOWN_LINK = "this run has no such link"


class Tracker:
    """Per API process: the hit writer, the tenants' machine windows and the run links seen."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
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


def get_tracker(request: Request, pool: PoolDep) -> Tracker:
    """The app's tracker, made on first use (after the lifespan has opened the pool)."""
    tracker: Tracker | None = getattr(request.app.state, "tracker", None)
    if tracker is None or tracker.pool is not pool:
        tracker = request.app.state.tracker = Tracker(pool)
    return tracker


TrackerDep = Annotated[Tracker, Depends(get_tracker)]


def _verified(token: str, kind: tracking.Kind, settings: SettingsDep) -> tracking.Token:
    found = tracking.verify(token, settings.link_signing_secret, kind) if settings.link_signing_secret else None
    if found is None:
        raise HTTPException(404, INVALID)
    return found


async def _record(tracker: Tracker, token: tracking.Token, request: Request) -> None:
    try:
        await tracker.writer.write(tracking.make_hit(token, request.headers.get("user-agent")))
    except (OSError, asyncpg.PostgresError) as exc:
        # Not recorded means not answered as if it were: the client (or mail app) may retry.
        raise HTTPException(503, "the event could not be recorded; try again", {"Retry-After": "1"}) from exc
    TRACKING_EVENTS.labels(token.tenant, token.kind).inc()


@router.get("/t/o/{token}", include_in_schema=False)
async def open_pixel(token: str, request: Request, settings: SettingsDep, tracker: TrackerDep) -> Response:
    """Record an open of the token's message; answer a transparent 1x1 GIF."""
    found = _verified(token, "open", settings)
    await _record(tracker, found, request)
    return Response(PIXEL, media_type="image/gif", headers=NO_CACHE)


@router.get("/t/c/{token}", include_in_schema=False)
async def click(token: str, request: Request, settings: SettingsDep, tracker: TrackerDep) -> Response:
    """Record a click on the token's link; redirect (302) to the URL its run recorded."""
    found = _verified(token, "click", settings)
    url = await tracker.link_url(found)
    if url is None:
        raise HTTPException(404, UNKNOWN_LINK)
    await _record(tracker, found, request)
    return RedirectResponse(url, status_code=302, headers={**NO_CACHE, "Referrer-Policy": "no-referrer"})
