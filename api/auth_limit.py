"""Slow down clients that keep presenting wrong API keys, never the customers beside them.

In-process and per client address: each API process counts the failed authentications of
each address in a sliding window; at `auth_failure_limit` failures within
`auth_failure_window_seconds` that address is answered 429 with Retry-After until its oldest
failure leaves the window, before any route or database work. Keys are 192-bit random, so the
limit does not stop guessing (that is infeasible anyway); it bounds the load of failed attempts.

A key this process has seen authenticate is let through even from a blocked address: behind a
proxy or a shared NAT, one client's wrong keys must not lock out every other client there, and
a key that has worked cannot be a guess. (It still meets the route's own check, so a key
revoked since is refused there.) A valid key this process has not yet seen waits out the block.
Other addresses are unaffected. Behind a load balancer each process counts on its own; the
address is the socket peer (put the real client address there with uvicorn's
`--proxy-headers` when behind a trusted proxy).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import OrderedDict, deque

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class AuthFailureLimiter:
    """Sliding-window counts of failed authentications per client address."""

    # Bounds memory under a flood from many addresses: the least recently failing are forgotten.
    MAX_ADDRESSES = 10_000

    # Keys seen to authenticate, by SHA-256 of the Authorization header (the header itself is
    # never kept); the least recently seen are forgotten first.
    MAX_KNOWN_KEYS = 10_000

    def __init__(self, limit: int, window_seconds: float) -> None:
        self.limit = limit
        self.window = window_seconds
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._known: OrderedDict[bytes, None] = OrderedDict()

    def succeeded(self, credential: bytes) -> None:
        """Remember that `credential` (a hash of the Authorization header) authenticated."""
        self._known[credential] = None
        self._known.move_to_end(credential)
        while len(self._known) > self.MAX_KNOWN_KEYS:
            self._known.popitem(last=False)

    def known(self, credential: bytes) -> bool:
        """Whether `credential` has authenticated in this process."""
        return credential in self._known

    def _recent(self, address: str, now: float) -> deque[float] | None:
        failures = self._failures.get(address)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        return failures

    def retry_after(self, address: str) -> int | None:
        """Seconds `address` must wait before authenticating again, or None if it may now."""
        now = time.monotonic()
        failures = self._recent(address, now)
        if failures is None or len(failures) < self.limit:
            return None
        return max(1, math.ceil(failures[0] + self.window - now))

    def failed(self, address: str) -> None:
        """Count one failed authentication from `address`."""
        now = time.monotonic()
        failures = self._recent(address, now) or deque()
        failures.append(now)
        self._failures[address] = failures
        self._failures.move_to_end(address)
        while len(self._failures) > self.MAX_ADDRESSES:
            self._failures.popitem(last=False)


class AuthFailureGuard:
    """ASGI middleware: counts 401 answers to requests that presented a key and answers 429
    to an address over the limit before any route (or database) work is done."""

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
        credential = hashlib.sha256(authorization).digest()
        address = (scope.get("client") or ("unknown", 0))[0]
        wait = None if self.limiter.known(credential) else self.limiter.retry_after(address)
        if wait is not None:
            detail = f"too many failed authentications from {address}; retry in {wait} s"
            body = json.dumps({"detail": detail, "errors": [detail]}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"retry-after", str(wait).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] == 401:
                    self.limiter.failed(address)
                elif scope.get("state", {}).get("authenticated"):  # set by api/deps.py get_principal
                    self.limiter.succeeded(credential)
            await send(message)

        await self.app(scope, receive, watch)
