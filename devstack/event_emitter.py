"""Provider events from the devstack SMTP sink and provider simulator to Pennant's signed
endpoint (`POST {PROVIDER_EVENTS_URL}/{email|sms|push}`, see core/engagement/provider_events.py).

Emission never slows sending: `emit` only puts the event on a bounded queue (a full queue drops
it, counted), and one background task posts what has gathered as one JSON array per provider
(the endpoint also takes Twilio's one-form-per-callback shape; arrays keep a large run's receipts
from queueing behind each other for minutes). Like a provider it
retries a refused connection, 429 and 5xx a few times with backoff, then gives up (counted).

Events wait `delay_seconds` before they go, as a real provider reports after the fact: the
sender records a message in its ledger only once the provider has taken it, and an event that
still matches no message (the answer's `unmatched_ids`) is tried again a few times, later.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx

from core.engagement.provider_events import signed_headers

log = logging.getLogger("pennant.devstack.events")


@dataclass
class _Pending:
    provider: str
    event: dict[str, Any]
    due: float
    tries: int = 0

    @property
    def source_id(self) -> str:
        """How the endpoint names this event in `unmatched_ids`."""
        return str(self.event.get("event_id") or self.event.get("MessageSid") or "")


class EventEmitter:
    """A bounded queue of provider events and the task that posts them, signed."""

    def __init__(
        self,
        url: str | None = None,
        secret: str | None = None,
        *,
        max_queued: int = 10_000,
        batch_size: int = 50,
        attempts: int = 5,
        delay_seconds: float = 0.5,
        unmatched_tries: int = 6,
    ) -> None:
        self.url: str | None = None
        self.secret: str | None = None
        self.configure(url, secret)
        self.max_queued = max_queued
        self.batch_size = batch_size
        self.attempts = attempts
        self.delay_seconds = delay_seconds
        self.unmatched_tries = unmatched_tries
        # queued, sent, dropped (queue full), rejected (4xx answer), failed (gave up retrying),
        # retried_unmatched, unmatched (still no message after every try)
        self.stats: Counter[str] = Counter()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None

    def configure(self, url: str | None, secret: str | None) -> None:
        """Point emission at `url` signed with `secret` (either None switches it off)."""
        self.url = url.rstrip("/") if url else None
        self.secret = secret

    @property
    def enabled(self) -> bool:
        """Whether events are emitted at all."""
        return bool(self.url and self.secret)

    def emit(self, provider: str, event: dict[str, Any]) -> bool:
        """Queue one event for `provider`'s endpoint without waiting (on the sender's loop); False when dropped."""
        if not self.enabled:
            return False
        return self._put(_Pending(provider, event, time.monotonic() + self.delay_seconds))

    def _put(self, item: _Pending) -> bool:
        if self._queue is None or self._task is None or self._task.done():
            self._queue = asyncio.Queue(self.max_queued)
            self._task = asyncio.get_running_loop().create_task(self._run(self._queue))
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.stats["dropped"] += 1
            return False
        self.stats["queued"] += 1
        return True

    async def _run(self, queue: asyncio.Queue[_Pending]) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            while True:
                pending = [await queue.get()]
                # Whatever else has gathered goes in the same round: batches form under load only.
                while len(pending) < self.batch_size and not queue.empty():
                    pending.append(queue.get_nowait())
                await asyncio.sleep(max(0.0, max(p.due for p in pending) - time.monotonic()))
                # One JSON array per provider and round: after a large run the receipts of tens of
                # thousands of messages drain in seconds, not one request per message.
                for provider in sorted({p.provider for p in pending}):
                    items = [p for p in pending if p.provider == provider]
                    body = json.dumps([p.event for p in items]).encode()
                    await self._post(http, items, body, "application/json")

    async def _post(self, http: httpx.AsyncClient, items: list[_Pending], body: bytes, content_type: str) -> None:
        for attempt in range(self.attempts):
            url, secret = self.url, self.secret
            if url is None or secret is None:
                break
            # Signed afresh per attempt: the endpoint refuses stale timestamps.
            headers = {"Content-Type": content_type, **signed_headers(secret, body, str(int(time.time())))}
            try:
                response = await http.post(f"{url}/{items[0].provider}", content=body, headers=headers)
            except httpx.HTTPError as exc:
                log.debug("provider events to %s: %s", url, exc)
            else:
                if response.is_success:
                    self.stats["sent"] += len(items)
                    self._retry_unmatched(items, response)
                    return
                if response.status_code < 500 and response.status_code != 429:
                    log.warning("provider events refused: HTTP %s %s", response.status_code, response.text[:300])
                    self.stats["rejected"] += len(items)
                    return
            await asyncio.sleep(min(5.0, 0.2 * 2**attempt))
        self.stats["failed"] += len(items)

    def _retry_unmatched(self, items: list[_Pending], response: httpx.Response) -> None:
        """Queue again, later, the events that matched no message yet."""
        try:
            unmatched = set(response.json().get("unmatched_ids") or [])
        except (ValueError, AttributeError):
            return
        loop = asyncio.get_running_loop()
        for item in items:
            if item.source_id not in unmatched:
                continue
            if item.tries + 1 >= self.unmatched_tries:
                self.stats["unmatched"] += 1
                continue
            self.stats["retried_unmatched"] += 1
            delay = self.delay_seconds * 2 ** (item.tries + 1)
            retry = _Pending(item.provider, item.event, time.monotonic() + delay, item.tries + 1)
            loop.call_later(delay, self._put, retry)
