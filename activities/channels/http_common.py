"""What the HTTP channel adapters (SMS, push, webhook) share: credentials resolved from the
environment at send time, endpoints, classification of provider answers, bounded concurrency."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import os
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from activities.channels.base import ChannelConfigError, OutboundMessage, SendResult, TransientChannelError
from core.tenants.config_schema import ChannelConfig, TenantConfig

# Status codes that mean "not now" rather than "never": the batch is retried by Temporal.
TRANSIENT_STATUS = frozenset({408, 429})
# Sends one message as its own request: the result, or TransientChannelError.
SendOne = Callable[[OutboundMessage], Awaitable[SendResult]]


def channel_config(config: TenantConfig, channel: str) -> ChannelConfig:
    """The tenant's config for `channel` (a config error if it has none)."""
    found: ChannelConfig | None = getattr(config.channels, channel, None)
    if found is None:
        raise ChannelConfigError(f"tenant {config.slug} has no {channel} channel configured")
    return found


def credential(config: TenantConfig, channel: str, name: str) -> str:
    """The secret behind `channels.<channel>.credentials.<name>` (an `env:NAME` reference).

    Read at send time so a rotated secret needs no config change; the value never appears in
    an error message, only the variable's name.
    """
    ref = channel_config(config, channel).credentials.get(name)
    where = f"channels.{channel}.credentials.{name} of tenant {config.slug}"
    if ref is None:
        raise ChannelConfigError(f"{where} is not configured")
    variable = ref.removeprefix("env:")
    value = os.environ.get(variable)
    if not value:
        raise ChannelConfigError(f"{where}: environment variable {variable} is not set")
    return value


def endpoint(config: TenantConfig, channel: str, default: str) -> str:
    """The channel's configured endpoint, else the platform default; without a trailing slash."""
    return (channel_config(config, channel).endpoint or default).rstrip("/")


class HttpAdapter:
    """What every HTTP channel adapter holds: the worker's shared HTTP client and the platform's
    provider base URL, under which its channel's default endpoint is `<base>/<channel>`."""

    channel: str

    def __init__(self, http: httpx.AsyncClient, default_base_url: str):
        self.http = http
        self.default_base_url = default_base_url.rstrip("/")

    def url(self, config: TenantConfig, path: str) -> str:
        """`path` under the tenant's endpoint for the channel, else under the platform default."""
        return endpoint(config, self.channel, f"{self.default_base_url}/{self.channel}") + path


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def check_transient(response: httpx.Response, what: str) -> None:
    """Raise TransientChannelError for 5xx, 429 (with its Retry-After) and 408."""
    status = response.status_code
    if status >= 500 or status in TRANSIENT_STATUS:
        raise TransientChannelError(
            f"{what}: HTTP {status} {response.reason_phrase}",
            retry_after_seconds=parse_retry_after(response.headers.get("retry-after")),
            rate_limited=status == 429,
        )


def provider_reason(response: httpx.Response) -> str:
    """A short reason for a permanent rejection, from the provider's JSON error if it sent one."""
    text = f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return text
    if isinstance(body, dict):
        code, message = body.get("code"), body.get("message") or body.get("error")
        if code is not None:
            text += f" code {code}"
        if message:
            text += f": {message}"
    return text[:500]


def json_field(response: httpx.Response, name: str) -> str | None:
    """One string field of a JSON object answer; None when the answer is not one."""
    try:
        body = response.json()
    except ValueError:
        return None
    value = body.get(name) if isinstance(body, dict) else None
    return str(value) if value is not None else None


def transport_error(exc: Exception, what: str) -> Exception:
    """Timeouts and connection problems are transient; a malformed endpoint is a config error."""
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return ChannelConfigError(f"{what}: bad endpoint: {exc}")
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    return TransientChannelError(f"{what} {kind}: {type(exc).__name__} {exc}".rstrip())


async def post(http: httpx.AsyncClient, url: str, request: str, provider: str, **kwargs: Any) -> httpx.Response:
    """POST to a provider. Transport errors, 5xx, 429 and 408 raise (transient, or a config
    error for a malformed endpoint); any other answer is the caller's to read."""
    try:
        response = await http.post(url, **kwargs)
    except (httpx.TransportError, httpx.InvalidURL) as exc:
        raise transport_error(exc, request) from exc
    check_transient(response, provider)
    return response


def one_result(msg: OutboundMessage, response: httpx.Response, refused: str, id_field: str) -> SendResult:
    """The result of a one-message request: sent with the provider's id, or failed with why."""
    if not response.is_success:
        return SendResult(msg.idempotency_key, "failed", f"{refused}: {provider_reason(response)}")
    return SendResult(msg.idempotency_key, "sent", provider_message_id=json_field(response, id_field))


async def send_each(
    messages: list[OutboundMessage],
    send_one: SendOne,
    concurrency: int,
) -> list[SendResult]:
    """Send one request per message, at most `concurrency` at a time.

    After the first transient error no new request starts (a 429 asks us to back off); the
    error is raised with the results settled so far, and the longest Retry-After seen.
    """
    results: dict[str, SendResult] = {}
    errors: list[TransientChannelError] = []
    semaphore = asyncio.Semaphore(concurrency)

    async def run(message: OutboundMessage) -> None:
        async with semaphore:
            if errors:
                return
            try:
                results[message.idempotency_key] = await send_one(message)
            except TransientChannelError as exc:
                errors.append(exc)

    await asyncio.gather(*(run(m) for m in messages))
    settled = [results[m.idempotency_key] for m in messages if m.idempotency_key in results]
    if errors:
        delays = [e.retry_after_seconds for e in errors if e.retry_after_seconds is not None]
        raise TransientChannelError(
            f"{errors[0]} ({len(errors)} of {len(messages)} requests failed; {len(settled)} settled)",
            retry_after_seconds=max(delays) if delays else None,
            partial=settled,
            rate_limited=any(e.rate_limited for e in errors),
        )
    return settled


class PerMessageHttpAdapter(HttpAdapter):
    """An HTTP adapter whose provider takes one message per request (SMS, webhook): it sends a
    batch's messages at most `concurrency` requests at a time."""

    def __init__(self, http: httpx.AsyncClient, default_base_url: str, concurrency: int = 10):
        super().__init__(http, default_base_url)
        self.concurrency = concurrency

    async def send_batch(self, config: TenantConfig, messages: list[OutboundMessage]) -> list[SendResult]:
        """Send each message as its own request, a few at a time (`send_each`)."""
        return await send_each(messages, self.message_sender(config), self.concurrency)

    def message_sender(self, config: TenantConfig) -> SendOne:
        """What sends one message for the tenant, its credentials and endpoint read once per batch."""
        raise NotImplementedError
