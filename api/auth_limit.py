"""Slow down clients that keep presenting wrong API keys, never the customers beside them.

Keys are 192-bit random, so guessing is infeasible; this limiter exists to bound the load of
failed attempts. Failures are counted per client address in a token bucket shared by every API
process (core/infra/rate_limits.py): an address may fail `auth_failure_limit` times at once, and
the allowance refills over `auth_failure_window_seconds`; once it is spent, the address waits
until a quarter of it is back. The address is the socket peer as uvicorn reports it, which is the
client's own address from X-Forwarded-For when the peer is a proxy listed in FORWARDED_ALLOW_IPS.

Only a failure costs a write: the 401 that counts it also learns how long the address is now
blocked, and this process remembers that, so a blocked address's next guesses are answered 429
from memory, before any route or database work. Another process learns of the block from the
shared bucket at that address's next failure there.

A request with a valid, unrevoked key is never refused because of failures by others (behind a
proxy or a shared NAT, one client's wrong keys must not lock out everyone there): a key this
process has seen authenticate passes at once, and a key it has not seen, from a blocked address,
is looked up (the same one indexed read the route would make) and passes if it is genuine. A key
that failed that lookup is remembered for the block, so repeating it costs nothing more.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import asyncpg
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.infra import rate_limits
from core.tenants.keys import lookup_key

log = logging.getLogger(__name__)

# Whether a presented Authorization header is genuine, for requests from a blocked address.
Verifier = Callable[[asyncpg.Pool, bytes], Awaitable[bool]]


async def verify_bearer_key(pool: asyncpg.Pool, authorization: bytes) -> bool:
    """Whether `authorization` is `Bearer <a valid, unrevoked API key>`."""
    scheme, _, key = authorization.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return False
    return await lookup_key(pool, key.strip()) is not None


class _Recent:
    """A bounded set with expiry: the least recently added are forgotten first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._until: OrderedDict[object, float] = OrderedDict()

    def add(self, item: object, until: float) -> None:
        self._until[item] = until
        self._until.move_to_end(item)
        while len(self._until) > self.limit:
            self._until.popitem(last=False)

    def until(self, item: object, now: float) -> float | None:
        """When `item` expires, or None if it is not held (or has expired)."""
        expires = self._until.get(item)
        if expires is None:
            return None
        if expires <= now:
            del self._until[item]
            return None
        return expires

    def discard(self, item: object) -> None:
        self._until.pop(item, None)


class AuthFailureLimiter:
    """Failed authentications per client address, counted in a bucket every process shares."""

    # Bounds memory under a flood from many addresses or keys.
    MAX_ENTRIES = 10_000
    # How long a key seen to authenticate is let through without a second look (a revoked key
    # still meets the route's own check, which is what refuses it).
    KNOWN_SECONDS = 3600.0

    def __init__(self, limit: int, window_seconds: float) -> None:
        self.limit = limit
        self.window = window_seconds
        # Keys by SHA-256 of the Authorization header (the header itself is never kept).
        self._known = _Recent(self.MAX_ENTRIES)
        self._refused = _Recent(self.MAX_ENTRIES)
        self._blocked = _Recent(self.MAX_ENTRIES)
        self.verifiers: list[Verifier] = [verify_bearer_key]

    @staticmethod
    def bucket(address: str) -> str:
        return f"auth-failures:{address}"

    def known(self, credential: bytes) -> bool:
        return self._known.until(credential, time.monotonic()) is not None

    def succeeded(self, credential: bytes) -> None:
        """Remember that `credential` authenticated."""
        self._known.add(credential, time.monotonic() + self.KNOWN_SECONDS)
        self._refused.discard(credential)

    def blocked_for(self, address: str) -> int | None:
        """Seconds `address` is still blocked in this process's view, or None."""
        now = time.monotonic()
        until = self._blocked.until(address, now)
        return None if until is None else max(1, math.ceil(until - now))

    async def failed(self, pool: asyncpg.Pool, address: str, credential: bytes) -> None:
        """Count one failed authentication from `address` in the shared bucket."""
        self._known.discard(credential)
        rate = self.limit / self.window
        # Once the allowance is spent, the address waits until a quarter of it is back (15 s by
        # default), not for each single token: the same long-run rate in fewer, longer blocks.
        wait = await rate_limits.debit(
            pool, self.bucket(address), rate=rate, burst=self.limit, cost=1.0, need=max(1.0, self.limit / 4)
        )
        if wait > 0:
            self._blocked.add(address, time.monotonic() + wait)

    async def genuine(self, pool: asyncpg.Pool, authorization: bytes, credential: bytes) -> bool:
        """Whether a key presented from a blocked address is valid (looked up once per block)."""
        now = time.monotonic()
        if self._refused.until(credential, now) is not None:
            return False
        for verify in self.verifiers:
            if await verify(pool, authorization):
                self.succeeded(credential)
                return True
        self._refused.add(credential, now + self.window)
        return False


def _too_many(address: str, wait: int) -> tuple[Message, Message]:
    detail = f"too many failed authentications from {address}; retry in {wait} s"
    body = json.dumps({"detail": detail, "errors": [detail]}).encode()
    start: Message = {
        "type": "http.response.start",
        "status": 429,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(wait).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class AuthFailureGuard:
    """ASGI middleware: counts 401 answers to requests that presented a key, and answers 429 to a
    blocked address's guesses before any route work is done."""

    def __init__(self, app: ASGIApp, limiter: AuthFailureLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        authorization = (
            next((value.strip() for name, value in scope["headers"] if name == b"authorization"), b"")
            if scope["type"] == "http"
            else b""
        )
        if not authorization:  # a missing key is a mistake, not a guess
            await self.app(scope, receive, send)
            return
        limiter = self.limiter
        pool: asyncpg.Pool = scope["app"].state.pool
        credential = hashlib.sha256(authorization).digest()
        address = (scope.get("client") or ("unknown", 0))[0]
        if not limiter.known(credential):
            wait = limiter.blocked_for(address)
            if wait is not None and not await limiter.genuine(pool, authorization, credential):
                for message in _too_many(address, wait):
                    await send(message)
                return

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] == 401:
                    try:
                        await limiter.failed(pool, address, credential)
                    except (OSError, asyncpg.PostgresError):  # never turn a 401 into a 500
                        log.warning("auth-failure count not recorded", exc_info=True)
                elif scope.get("state", {}).get("authenticated"):  # set by api/deps.py get_principal
                    limiter.succeeded(credential)
            await send(message)

        await self.app(scope, receive, watch)
