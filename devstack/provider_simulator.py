"""The channel-provider simulator: a small HTTP server that stands in for the SMS, push and
webhook providers in the local stack, tests and benchmarks.

Provider APIs (what the channel adapters speak):

- Twilio-like SMS: `POST /sms/2010-04-01/Accounts/{sid}/Messages.json`, form fields `To`, `From`,
  `Body`, HTTP basic auth `sid:token`. 201 with a `sid`; 400 with a Twilio-style error `code` for
  an invalid (non-E.164) or unsubscribed number.
- FCM-like batch push: `POST /push/v1/batch`, bearer server key, JSON
  `{"messages": [{"token", "title", "body", "data", "idempotency_key"}]}`; 200 with one result per
  message, `{"token", "message_id"}` or `{"token", "error": "UNREGISTERED" | "INVALID_ARGUMENT"}`.
- Webhook receiver: `POST /webhook/{name}` records the JSON body (raw bytes too, so signatures
  can be checked) and the headers.
- Chat completions (OpenAI-style, for the suggestions provider): `POST /v1/chat/completions`,
  see devstack/chat_simulator.py.

Like a real provider it de-duplicates by idempotency key (`Idempotency-Key` header; per message
`idempotency_key` for push): a repeated key gets the original answer and is not delivered again.

Test control (JSON over HTTP, see `SimulatorControl`):

- `POST /_sim/faults` replaces the fault plan: `latency_ms`, `error_rate_5xx` (with `seed`),
  `rate_limit: {count, retry_after}` (the next `count` requests get 429 + Retry-After), `fail_n`
  (the next N get 503), `permanent_fail` (numbers, tokens or webhook names that get a 4xx /
  per-token error), `timeout_n` (the next N are processed but their answer is held back for
  `hang_seconds`, as when a provider took a message and the response was lost), `channels`
  (limit the plan to some channels), `after_n` (let the first N requests through untouched).
- `POST /_sim/reset`, `GET /_sim/messages?channel=&contains=`, `GET /_sim/stats`,
  `GET /_sim/requests?contains=`, `GET /_sim/keys?channel=&contains=` (how many deliveries and
  distinct idempotency keys matched, and any key delivered more than once).

Faults are counted per provider request, in the order latency → 429 → 503 → random 5xx →
timeout, and are deterministic unless `error_rate_5xx` is set (and then seeded).

Provider events: when configured (PROVIDER_EVENTS_URL and PROVIDER_EVENTS_SECRET, or
`ProviderSimulator.events.configure`) every accepted SMS and push message gets a Twilio-like
status callback, signed, posted in the background to `{url}/sms` or `{url}/push`: `MessageSid`
(the sid or push message id the send was answered with), `MessageStatus`, `ErrorCode`. Which:

- SMS to a number in the unassigned NANP area code 555 (never in demo data): ending in `0000`
  → `undelivered` 30005 (unknown handset: a hard bounce); ending in `0001` → `undelivered`
  30003 (unreachable handset: soft);
- push to a token starting `bounce-` → `undelivered` UNREGISTERED (hard), `softbounce-` →
  `undelivered` UNAVAILABLE (soft);
- anything else → `delivered`.

A repeated idempotency key is not delivered again, so it reports nothing again either.
`GET /_sim/stats` counts them as `events_queued`, `events_sent`, `events_dropped`, …

Memory stays bounded in what grows with traffic: `/_sim/messages` keeps the last
`message_window` (100,000) messages per channel, and the request log the last 10,000
requests. The counts stay exact: `/_sim/stats` counters, and `/_sim/keys`, which answers from
one dict per channel of every idempotency key ever answered and its first status (the
dedup record, kept as the keys themselves so `contains=` stays answerable: about 140 MB per
million of Pennant's 60-character keys; it is the one part that still grows, at about a
tenth of the per-message cost it replaces). A repeat gets its original answer
while that answer is among the last `message_window` accepted on its channel (refusals are
kept whole); after that, one rebuilt from the key (the same status and sid / message id, without
the echoed to, body or token).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import random
import re
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable
from typing import Any, Literal
from urllib.parse import parse_qs

import httpx
import uvicorn
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from devstack.chat_simulator import chat_completions
from devstack.event_emitter import EventEmitter

E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
# Real FCM registration tokens are long URL-safe strings; anything else is malformed.
_TOKEN = re.compile(r"^[A-Za-z0-9_:\-]{16,4096}$")
SimChannel = Literal["sms", "push", "webhook"]
CHANNELS: tuple[SimChannel, ...] = ("sms", "push", "webhook")
_REQUEST_LOG = 10_000
# Messages (and accepted answers) kept per channel: a long run or a long `make run` does not
# grow the simulator without end.
MESSAGE_WINDOW = 100_000


class RateLimit(BaseModel):
    """The rate-limit fault: answer the next `count` requests 429 with Retry-After."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(default=0, ge=0)
    retry_after: float = Field(default=1.0, ge=0)


class Faults(BaseModel):
    """One fault plan; POST /_sim/faults replaces the whole plan (unset fields are off)."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: int = Field(default=0, ge=0)
    error_rate_5xx: float = Field(default=0.0, ge=0, le=1)
    seed: int = 0
    rate_limit: RateLimit | None = None
    fail_n: int = Field(default=0, ge=0)
    permanent_fail: list[str] = Field(default_factory=list)
    timeout_n: int = Field(default=0, ge=0)
    hang_seconds: float = Field(default=30.0, ge=0)
    channels: list[SimChannel] | None = None
    after_n: int = Field(default=0, ge=0)


# The id each channel's provider gives an accepted message: a prefix, then so many hex digits
# of the SHA-256 of its idempotency key (so a retried message gets the same id).
_MESSAGE_IDS = {"sms": ("SM", 32), "push": ("projects/pennant-sim/messages/", 20), "webhook": ("wh_", 24)}


def _message_id(channel: str, key: str) -> str:
    prefix, digits = _MESSAGE_IDS[channel]
    return prefix + hashlib.sha256(key.encode()).hexdigest()[:digits]


def _rebuilt_answer(channel: str, key: str, status: int) -> dict[str, Any]:
    """An accepted answer no longer kept, made again from its key (same ids, no echoed fields)."""
    if channel == "sms":
        return {"sid": _message_id("sms", key), "status": "queued"}
    if channel == "push":
        return {"idempotency_key": key, "message_id": _message_id("push", key)}
    return {"received": True, "id": _message_id("webhook", key)}


def _headers(request: Request) -> dict[str, str]:
    # The simulator keeps what it receives, but never a credential.
    out = dict(request.headers)
    if "authorization" in out:
        out["authorization"] = out["authorization"].split(" ", 1)[0] + " <redacted>"
    return out


def _error(status: int, code: int | str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "status": status}, status_code=status, headers=headers)


def sms_status(to: str) -> tuple[str, str | None]:
    """The status (and error code) the simulator reports for an SMS accepted for `to`."""
    if to.startswith("+1555") and to.endswith("0000"):
        return "undelivered", "30005"
    if to.startswith("+1555") and to.endswith("0001"):
        return "undelivered", "30003"
    return "delivered", None


def push_status(token: str) -> tuple[str, str | None]:
    """The status (and error code) the simulator reports for a push accepted for `token`."""
    if token.startswith("bounce-"):
        return "undelivered", "UNREGISTERED"
    if token.startswith("softbounce-"):
        return "undelivered", "UNAVAILABLE"
    return "delivered", None


def _status_callback(sid: str, status: tuple[str, str | None], **extra: str) -> dict[str, str]:
    callback = {"MessageSid": sid, "MessageStatus": status[0], **extra}
    if status[1] is not None:
        callback["ErrorCode"] = status[1]
    return callback


class SimState:
    """Everything the simulator remembers; touched only from its event loop."""

    def __init__(self, events: EventEmitter | None = None, message_window: int = MESSAGE_WINDOW) -> None:
        # Configuration, not state: a reset keeps it.
        self.events = events or EventEmitter()
        self.message_window = message_window
        self.reset()

    def reset(self) -> None:
        """Forget every message, answer and fault; release answers held back."""
        self.faults = Faults()
        self._rate_limited_left = 0
        self._fail_left = 0
        self._timeout_left = 0
        self._pass_left = 0
        self._rng = random.Random(0)
        # The last `message_window` accepted messages of each channel, oldest first.
        self.messages: dict[str, deque[dict[str, Any]]] = {c: deque(maxlen=self.message_window) for c in CHANNELS}
        # Every idempotency key answered -> the status of its first answer, per channel: exact
        # dedup and exact /_sim/keys counts (a key is delivered when that status is below 400).
        self.outcomes: dict[str, dict[str, int]] = {c: {} for c in CHANNELS}
        # Deliveries without an idempotency key (webhooks may omit one), per channel.
        self.keyless: Counter[str] = Counter()
        # (channel, idempotency key) -> the answer given the first time (status, body): every
        # refusal, and the acceptances among the last `message_window` of their channel.
        self.answers: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        self._accepted: dict[str, deque[str]] = {c: deque() for c in CHANNELS}
        self.stats: Counter[str] = Counter()
        self.requests: deque[dict[str, Any]] = deque(maxlen=_REQUEST_LOG)
        self._seq = itertools.count(1)
        release = getattr(self, "_release", None)
        if release is not None:
            release.set()  # let held-back answers go, so nothing hangs across a reset
        self._release = asyncio.Event()

    def set_faults(self, faults: Faults) -> None:
        """Replace the fault plan and restart its counters."""
        self.faults = faults
        self._rate_limited_left = faults.rate_limit.count if faults.rate_limit else 0
        self._fail_left = faults.fail_n
        self._timeout_left = faults.timeout_n
        self._pass_left = faults.after_n
        self._rng = random.Random(faults.seed)

    def fault_view(self) -> dict[str, Any]:
        """The fault plan and what is left of each counted fault."""
        return {
            **self.faults.model_dump(),
            "remaining": {
                "rate_limit": self._rate_limited_left,
                "fail_n": self._fail_left,
                "timeout_n": self._timeout_left,
                "after_n": self._pass_left,
            },
        }

    def begin(self, channel: str, path: str, keys: list[str]) -> dict[str, Any]:
        """Log one incoming provider request; the log entry."""
        entry = {"seq": next(self._seq), "at": time.time(), "channel": channel, "path": path, "keys": keys,
                 "status": None}  # fmt: skip
        self.requests.append(entry)
        self.stats["requests"] += 1
        self.stats[f"requests_{channel}"] += 1
        return entry

    def _applies(self, channel: str) -> bool:
        return self.faults.channels is None or channel in self.faults.channels

    async def gate(self, channel: str) -> tuple[Response | None, bool]:
        """Apply the fault plan to one provider request: (a fault response or None to proceed,
        whether to hold the answer back after processing)."""
        if not self._applies(channel):
            return None, False
        if self._pass_left > 0:
            self._pass_left -= 1
            return None, False
        if self.faults.latency_ms:
            await asyncio.sleep(self.faults.latency_ms / 1000)
        if self._rate_limited_left > 0:
            self._rate_limited_left -= 1
            self.stats["rate_limited"] += 1
            retry_after = self.faults.rate_limit.retry_after if self.faults.rate_limit else 1.0
            return _error(429, 20429, "Too Many Requests", {"Retry-After": f"{retry_after:g}"}), False
        if self._fail_left > 0:
            self._fail_left -= 1
            self.stats["server_errors"] += 1
            return _error(503, 20503, "Service Unavailable"), False
        if self.faults.error_rate_5xx and self._rng.random() < self.faults.error_rate_5xx:
            self.stats["server_errors"] += 1
            return _error(500, 20500, "Internal Server Error"), False
        if self._timeout_left > 0:
            self._timeout_left -= 1
            self.stats["timeouts"] += 1
            return None, True
        return None, False

    async def hang(self) -> None:
        """Hold an answer back until released or `hang_seconds` pass (an injected timeout)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), self.faults.hang_seconds)

    def release_all(self) -> None:
        """Let every held-back answer go."""
        self._release.set()

    def remembered(self, channel: str, key: str) -> tuple[int, dict[str, Any]] | None:
        """The answer given before to this idempotency key, if any (counted as a duplicate)."""
        status = self.outcomes[channel].get(key)
        if status is None:
            return None
        self.stats["duplicates"] += 1
        return self.answers.get((channel, key)) or (status, _rebuilt_answer(channel, key, status))

    def remember(self, channel: str, key: str, status: int, body: dict[str, Any]) -> None:
        """Keep the answer to an idempotency key, so a retry gets the same one."""
        self.outcomes[channel][key] = status
        self.answers[(channel, key)] = (status, body)
        if status < 400:
            accepted = self._accepted[channel]
            accepted.append(key)
            if len(accepted) > self.message_window:
                self.answers.pop((channel, accepted.popleft()), None)

    def deliver(self, record: dict[str, Any]) -> None:
        """Record one accepted message."""
        record.setdefault("received_at", time.time())
        self.messages[record["channel"]].append(record)
        if not record.get("idempotency_key"):
            self.keyless[record["channel"]] += 1
        self.stats["delivered"] += 1
        self.stats[f"delivered_{record['channel']}"] += 1


def _basic_auth(request: Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return user, password


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


async def _finish(state: SimState, entry: dict[str, Any], response: Response, hang: bool) -> Response:
    entry["status"] = response.status_code
    if hang:
        await state.hang()
    return response


async def sms_send(request: Request) -> Response:
    """Twilio-like `POST …/Messages.json`: accept or reject one SMS."""
    state: SimState = request.app.state.sim
    sid = request.path_params["sid"]
    key = request.headers.get("idempotency-key", "")
    entry = state.begin("sms", request.url.path, [key] if key else [])
    auth = _basic_auth(request)
    if auth is None or auth[0] != sid or not auth[1]:
        state.stats["unauthorized"] += 1
        return await _finish(state, entry, _error(401, 20003, "Authenticate"), False)
    if not key:
        return await _finish(state, entry, _error(400, 20001, "Idempotency-Key header is required"), False)
    fault, hang = await state.gate("sms")
    if fault is not None:
        return await _finish(state, entry, fault, False)
    answer = state.remembered("sms", key)
    if answer is None:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode(), keep_blank_values=True).items()}
        to, sender, body = form.get("To", ""), form.get("From", ""), form.get("Body", "")
        if not to:
            answer = 400, {"code": 21604, "message": "A 'To' phone number is required.", "status": 400}
        elif not body:
            answer = 400, {"code": 21602, "message": "Message body is required.", "status": 400}
        elif not E164.match(to):
            answer = 400, {"code": 21211, "message": f"The 'To' number {to} is not a valid phone number.",
                           "status": 400}  # fmt: skip
        elif to in state.faults.permanent_fail:
            answer = 400, {"code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400}
        else:
            message_sid = _message_id("sms", key)
            answer = 201, {"sid": message_sid, "account_sid": sid, "to": to, "from": sender, "body": body,
                           "status": "queued"}  # fmt: skip
            state.deliver({"channel": "sms", "idempotency_key": key, "sid": message_sid, "account_sid": sid,
                           "to": to, "from": sender, "body": body, "headers": _headers(request)})  # fmt: skip
            state.events.emit("sms", _status_callback(message_sid, sms_status(to), AccountSid=sid, To=to))
        if answer[0] >= 400:
            state.stats["rejected"] += 1
        state.remember("sms", key, *answer)
    return await _finish(state, entry, JSONResponse(answer[1], status_code=answer[0]), hang)


async def push_batch(request: Request) -> Response:
    """FCM-like batch push: one result per registration token."""
    state: SimState = request.app.state.sim
    try:
        payload = json.loads(await request.body())
        messages = payload["messages"]
        assert isinstance(messages, list) and all(isinstance(m, dict) for m in messages)
    except (ValueError, KeyError, TypeError, AssertionError):
        entry = state.begin("push", request.url.path, [])
        return await _finish(state, entry, _error(400, "INVALID_ARGUMENT", 'body must be {"messages": [...]}'), False)
    keys = [str(m.get("idempotency_key") or "") for m in messages]
    entry = state.begin("push", request.url.path, keys)
    if not _bearer(request):
        state.stats["unauthorized"] += 1
        return await _finish(state, entry, _error(401, "UNAUTHENTICATED", "a bearer server key is required"), False)
    if not all(keys):
        return await _finish(state, entry, _error(400, "INVALID_ARGUMENT", "every message needs an idempotency_key"),
                             False)  # fmt: skip
    fault, hang = await state.gate("push")
    if fault is not None:
        return await _finish(state, entry, fault, False)
    results = []
    headers = _headers(request)
    for key, message in zip(keys, messages, strict=True):
        token = str(message.get("token") or "")
        answer = state.remembered("push", key)
        if answer is None:
            if not _TOKEN.match(token):
                answer = 400, {"token": token, "idempotency_key": key, "error": "INVALID_ARGUMENT"}
            elif token in state.faults.permanent_fail:
                answer = 404, {"token": token, "idempotency_key": key, "error": "UNREGISTERED"}
            else:
                message_id = _message_id("push", key)
                answer = 200, {"token": token, "idempotency_key": key, "message_id": message_id}
                state.deliver({"channel": "push", "idempotency_key": key, "message_id": message_id, "token": token,
                               "title": message.get("title"), "body": message.get("body"),
                               "data": message.get("data") or {}, "request_seq": entry["seq"],
                               "batch_size": len(messages), "headers": headers})  # fmt: skip
                state.events.emit("push", _status_callback(message_id, push_status(token)))
            if answer[0] >= 400:
                state.stats["rejected"] += 1
            state.remember("push", key, *answer)
        results.append(answer[1])
    body = {"results": results, "success": sum("message_id" in r for r in results),
            "failure": sum("error" in r for r in results)}  # fmt: skip
    return await _finish(state, entry, JSONResponse(body), hang)


async def webhook_receive(request: Request) -> Response:
    """`POST /webhook/{name}`: accept one JSON webhook delivery."""
    state: SimState = request.app.state.sim
    name = request.path_params["name"]
    key = request.headers.get("idempotency-key", "")
    entry = state.begin("webhook", request.url.path, [key] if key else [])
    fault, hang = await state.gate("webhook")
    if fault is not None:
        return await _finish(state, entry, fault, False)
    answer = state.remembered("webhook", key) if key else None
    if answer is None:
        raw = await request.body()
        if name in state.faults.permanent_fail:
            answer = 410, {"code": "gone", "message": f"webhook '{name}' does not accept deliveries", "status": 410}
        else:
            try:
                body = json.loads(raw)
            except ValueError:
                answer = 400, {"code": "invalid_json", "message": "body is not JSON", "status": 400}
            else:
                delivery_id = _message_id("webhook", key or str(entry["seq"]))
                answer = 200, {"received": True, "id": delivery_id}
                state.deliver({"channel": "webhook", "idempotency_key": key or None, "id": delivery_id, "name": name,
                               "body": body, "raw_body": raw.decode(), "headers": _headers(request)})  # fmt: skip
        if answer[0] >= 400:
            state.stats["rejected"] += 1
        if key:
            state.remember("webhook", key, *answer)
    return await _finish(state, entry, JSONResponse(answer[1], status_code=answer[0]), hang)


async def sim_faults(request: Request) -> Response:
    """`GET|POST /_sim/faults`: read or replace the fault plan."""
    state: SimState = request.app.state.sim
    if request.method == "POST":
        try:
            state.set_faults(Faults.model_validate_json(await request.body() or b"{}"))
        except ValidationError as exc:
            return JSONResponse({"errors": json.loads(exc.json(include_url=False))}, status_code=422)
    return JSONResponse(state.fault_view())


async def sim_reset(request: Request) -> Response:
    """`POST /_sim/reset`: forget everything and clear the faults."""
    request.app.state.sim.reset()
    return JSONResponse({"reset": True})


async def sim_messages(request: Request) -> Response:
    """`GET /_sim/messages`: the accepted messages, by channel or idempotency-key substring."""
    state: SimState = request.app.state.sim
    channel = request.query_params.get("channel")
    contains = request.query_params.get("contains")
    kept: Iterable[dict[str, Any]] = state.messages[channel] if channel in state.messages else ()
    if channel is None:  # every channel's, in the order they arrived
        kept = sorted(itertools.chain(*state.messages.values()), key=lambda m: m["received_at"])
    found = [m for m in kept if contains is None or contains in (m["idempotency_key"] or "")]
    return JSONResponse({"messages": found, "count": len(found)})


async def sim_keys(request: Request) -> Response:
    """`GET /_sim/keys`: deliveries, distinct idempotency keys and repeated keys."""
    state: SimState = request.app.state.sim
    channel = request.query_params.get("channel")
    contains = request.query_params.get("contains")
    # Counted from the dedup record rather than the messages (a window): exact however long the
    # simulator has run, and one small answer for a 20,000-message run.
    distinct = 0
    for name in [channel] if channel is not None else CHANNELS:
        outcomes = state.outcomes.get(name, {})
        if contains is None:
            distinct += sum(1 for status in outcomes.values() if status < 400)
        else:
            distinct += sum(1 for key, status in outcomes.items() if status < 400 and contains in key)
    keyless = sum(n for name, n in state.keyless.items() if channel in (None, name)) if not contains else 0
    # A keyed message is delivered at most once (a repeat gets the first answer), so only the
    # keyless ones can repeat; they count as one key, as before.
    return JSONResponse({"delivered": distinct + keyless, "distinct": distinct + (1 if keyless else 0),
                         "repeated": []})  # fmt: skip


async def sim_stats(request: Request) -> Response:
    """`GET /_sim/stats`: request, delivery and fault counters."""
    stats = request.app.state.sim.stats
    names = ("requests", "delivered", "duplicates", "rejected", "rate_limited", "server_errors", "timeouts",
             "unauthorized")  # fmt: skip
    emitted = {f"events_{k}": v for k, v in request.app.state.sim.events.stats.items()}
    return JSONResponse({**{n: 0 for n in names}, **stats, **emitted})


async def sim_requests(request: Request) -> Response:
    """`GET /_sim/requests`: the recent request log, by idempotency-key substring."""
    state: SimState = request.app.state.sim
    contains = request.query_params.get("contains")
    found = [r for r in state.requests if contains is None or any(contains in k for k in r["keys"])]
    return JSONResponse({"requests": found, "count": len(found)})


async def index(request: Request) -> Response:
    """`GET /`: what this service is and where its control API lives."""
    return JSONResponse({"service": "pennant provider simulator", "control": "/_sim/{faults,reset,messages,stats}"})


def create_app(state: SimState | None = None) -> Starlette:
    """The simulator as an ASGI app (one SimState per app)."""
    sim = state or SimState()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.loop = asyncio.get_running_loop()
        yield
        sim.release_all()

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/sms/2010-04-01/Accounts/{sid}/Messages.json", sms_send, methods=["POST"]),
            Route("/push/v1/batch", push_batch, methods=["POST"]),
            Route("/webhook/{name}", webhook_receive, methods=["POST"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/_sim/faults", sim_faults, methods=["GET", "POST"]),
            Route("/_sim/reset", sim_reset, methods=["POST"]),
            Route("/_sim/messages", sim_messages),
            Route("/_sim/stats", sim_stats),
            Route("/_sim/requests", sim_requests),
            Route("/_sim/keys", sim_keys),
        ],
        lifespan=lifespan,
    )
    app.state.sim = sim
    return app


class ProviderSimulator:
    """The simulator under uvicorn on a background thread: `start()`, use `.url`, `stop()`.

    Binds its socket before starting, so port 0 (the default) means a free port without a race.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.app = create_app()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="on",
                                timeout_graceful_shutdown=1)  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="provider-sim", daemon=True)  # fmt: skip

    @property
    def events(self) -> EventEmitter:
        """The emitter of this simulator's status callbacks."""
        emitter: EventEmitter = self.app.state.sim.events
        return emitter

    @property
    def url(self) -> str:
        """The base URL the simulator serves on."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> ProviderSimulator:
        """Start serving and wait until it is up; returns self."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("provider simulator did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Release held answers, stop serving and close the socket."""
        loop = getattr(self.app.state, "loop", None)
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.app.state.sim.release_all)
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()


class SimulatorControl:
    """The `/_sim` control API from tests and benchmarks."""

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as http:
            response = await http.request(method, path, **kwargs)
            response.raise_for_status()
            return response.json()

    async def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Replace the fault plan, e.g. `set_faults(fail_n=2, rate_limit={"count": 1, "retry_after": 1})`."""
        result: dict[str, Any] = await self._call("POST", "/_sim/faults", json=faults)
        return result

    async def reset(self) -> None:
        """Forget every message and clear the faults."""
        await self._call("POST", "/_sim/reset")

    async def messages(self, channel: str | None = None, contains: str | None = None) -> list[dict[str, Any]]:
        """The accepted messages, by channel or idempotency-key substring."""
        params = {k: v for k, v in (("channel", channel), ("contains", contains)) if v is not None}
        found: list[dict[str, Any]] = (await self._call("GET", "/_sim/messages", params=params))["messages"]
        return found

    async def stats(self) -> dict[str, int]:
        """The request, delivery and fault counters."""
        result: dict[str, int] = await self._call("GET", "/_sim/stats")
        return result

    async def key_counts(self, channel: str | None = None, contains: str | None = None) -> dict[str, Any]:
        """Deliveries and distinct idempotency keys matching, and the keys delivered more than once."""
        params = {k: v for k, v in (("channel", channel), ("contains", contains)) if v is not None}
        result: dict[str, Any] = await self._call("GET", "/_sim/keys", params=params)
        return result

    async def requests(self, contains: str | None = None) -> list[dict[str, Any]]:
        """The recent request log, by idempotency-key substring."""
        params = {"contains": contains} if contains is not None else {}
        found: list[dict[str, Any]] = (await self._call("GET", "/_sim/requests", params=params))["requests"]
        return found


def serve(host: str, port: int, events: EventEmitter | None = None) -> None:
    """Run the simulator in the foreground (`pennant provider-sim`) until SIGINT/SIGTERM."""
    app = create_app(SimState(events))
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=2)
