"""What the HTTP channel adapters (SMS, push, webhook) share: credentials resolved from the
tenant's secret store at send time, endpoints, classification of provider answers, bounded concurrency."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from activities.channels.base import ChannelConfigError, OutboundMessage, SendResult, TransientChannelError
from core.infra.settings import get_settings
from core.security.egress import EgressError, EgressGuard, EgressRefused
from core.security.secrets import SecretResolver, SecretUnavailable
from core.tenants.config_schema import ChannelConfig, TenantConfig

# Status codes that mean "not now" rather than "never": the batch is retried by Temporal.
TRANSIENT_STATUS = frozenset({408, 429})
# Sends one message as its own request: the result, or TransientChannelError.
SendOne = Callable[[OutboundMessage], Awaitable[SendResult]]
# Requests in flight for one tenant in one worker process, over both the shared client (200
# connections) and the guarded one: a quarter of the pool, so a tenant with many batches in flight,
# or a slow endpoint of its own, leaves connections for every other tenant.
TENANT_HTTP_CONNECTIONS = 50


@dataclass(frozen=True)
class Sender:
    """Who makes a tenant's request: the shared client for the operator's own providers
    (trusted), or the guarded client for an endpoint the tenant set; and whose share of the
    process's connections the request takes."""

    client: httpx.AsyncClient | EgressGuard
    tenant: str


_tenant_slots: dict[str, asyncio.Semaphore] = {}


def tenant_slots(tenant: str) -> asyncio.Semaphore:
    """The process's cap on `tenant`'s requests in flight (TENANT_HTTP_CONNECTIONS)."""
    slots = _tenant_slots.get(tenant)
    if slots is None:
        slots = _tenant_slots[tenant] = asyncio.Semaphore(TENANT_HTTP_CONNECTIONS)
    return slots


# The reason recorded for every message of a batch after the guard refused its endpoint.
EGRESS_REFUSED = "egress_refused"


class EndpointRefused(Exception):
    """The guard refused the tenant's endpoint: the batch's remaining messages fail for good,
    with no further connection attempted."""


def channel_config(config: TenantConfig, channel: str) -> ChannelConfig:
    """The tenant's config for `channel` (a config error if it has none)."""
    found: ChannelConfig | None = getattr(config.channels, channel, None)
    if found is None:
        raise ChannelConfigError(f"tenant {config.slug} has no {channel} channel configured")
    return found


def endpoint(config: TenantConfig, channel: str, default: str) -> str:
    """The channel's configured endpoint, else the platform default; without a trailing slash."""
    return (channel_config(config, channel).endpoint or default).rstrip("/")


class HttpAdapter:
    """What every HTTP channel adapter holds: the worker's shared HTTP client and the platform's
    provider base URL, under which its channel's default endpoint is `<base>/<channel>`, and the
    resolver of the tenant's `secret:` credentials."""

    channel: str

    def __init__(
        self, http: httpx.AsyncClient, default_base_url: str, secrets: SecretResolver, guard: EgressGuard | None = None
    ):
        self.http = http
        self.default_base_url = default_base_url.rstrip("/")
        self.secrets = secrets
        # Tenant-set endpoints go through the guard; the process's settings make one if not given.
        self.guard = guard or EgressGuard.from_settings(get_settings())

    async def credential(self, config: TenantConfig, name: str) -> str:
        """The secret behind `channels.<channel>.credentials.<name>`, from the tenant's own store.

        Read at send time (cached briefly) so a rotated secret needs no config change; an error
        names the config path and the secret, never a value.
        """
        ref = channel_config(config, self.channel).credentials.get(name)
        where = f"channels.{self.channel}.credentials.{name} of tenant {config.slug}"
        try:
            return await self.secrets.resolve(config.slug, ref, where)
        except SecretUnavailable as exc:
            raise ChannelConfigError(str(exc)) from None

    def url(self, config: TenantConfig, path: str) -> str:
        """`path` under the tenant's endpoint for the channel, else under the platform default."""
        return endpoint(config, self.channel, f"{self.default_base_url}/{self.channel}") + path

    def sender(self, config: TenantConfig) -> Sender:
        """The guard when the tenant set the channel's endpoint, else the shared client: the
        platform default is the operator's own provider, trusted as configured."""
        client = self.guard if channel_config(config, self.channel).endpoint else self.http
        return Sender(client, config.slug)


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


def guarded(response: httpx.Response) -> bool:
    """The answer came from a tenant-set endpoint through the guard: nothing of it is quoted."""
    return bool(response.extensions.get("pennant_guarded"))


def check_transient(response: httpx.Response, what: str) -> None:
    """Raise TransientChannelError for 5xx, 429 (with its Retry-After) and 408."""
    status = response.status_code
    if status >= 500 or status in TRANSIENT_STATUS:
        said = f"rejected with status {status}" if guarded(response) else f"HTTP {status} {response.reason_phrase}"
        raise TransientChannelError(
            f"{what}: {said}",
            retry_after_seconds=parse_retry_after(response.headers.get("retry-after")),
            rate_limited=status == 429,
        )


def provider_reason(response: httpx.Response) -> str:
    """A short reason for a permanent rejection, from the provider's JSON error if it sent one
    (never from a tenant-set endpoint's body: only its status)."""
    if guarded(response):
        return f"rejected with status {response.status_code}"
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


async def post(via: Sender, url: str, request: str, provider: str, **kwargs: Any) -> httpx.Response:
    """POST to a provider, within the tenant's share of connections. Transport errors, 5xx, 429
    and 408 raise (transient, or a config error for a malformed endpoint); any other answer is the
    caller's to read. Through the guard, a refusal raises EndpointRefused and other failures say
    only the guard's fixed word."""
    async with tenant_slots(via.tenant):
        return await _post(via.client, url, request, provider, **kwargs)


async def _post(
    http: httpx.AsyncClient | EgressGuard, url: str, request: str, provider: str, **kwargs: Any
) -> httpx.Response:
    if isinstance(http, EgressGuard):
        try:
            response = await http.post(url, **kwargs)
        except EgressRefused:
            raise EndpointRefused(request) from None
        except EgressError as exc:
            raise TransientChannelError(f"{request} failed: {exc.word}") from None
        check_transient(response, provider)
        return response
    try:
        response = await http.post(url, **kwargs)
    except (httpx.TransportError, httpx.InvalidURL) as exc:
        raise transport_error(exc, request) from exc
    check_transient(response, provider)
    return response


def one_result(msg: OutboundMessage, response: httpx.Response, refused: str, id_field: str) -> SendResult:
    """The result of a one-message request: sent with the provider's id, or failed with why."""
    if not response.is_success:
        reason = provider_reason(response)
        return SendResult(msg.idempotency_key, "failed", reason if guarded(response) else f"{refused}: {reason}")
    return SendResult(msg.idempotency_key, "sent", provider_message_id=json_field(response, id_field))


def refused_result(msg: OutboundMessage) -> SendResult:
    """A message not sent because the guard refused its endpoint (never retried)."""
    return SendResult(msg.idempotency_key, "failed", EGRESS_REFUSED)


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
    refused: list[EndpointRefused] = []
    semaphore = asyncio.Semaphore(concurrency)

    async def run(message: OutboundMessage) -> None:
        async with semaphore:
            if errors or refused:
                return
            try:
                results[message.idempotency_key] = await send_one(message)
            except TransientChannelError as exc:
                errors.append(exc)
            except EndpointRefused as exc:
                refused.append(exc)

    await asyncio.gather(*(run(m) for m in messages))
    if refused:  # the endpoint can never be reached: the rest fail for good, unsent
        return [results.get(m.idempotency_key) or refused_result(m) for m in messages]
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

    def __init__(
        self,
        http: httpx.AsyncClient,
        default_base_url: str,
        secrets: SecretResolver,
        concurrency: int = 10,
        guard: EgressGuard | None = None,
    ):
        super().__init__(http, default_base_url, secrets, guard)
        self.concurrency = concurrency

    async def send_batch(self, config: TenantConfig, messages: list[OutboundMessage]) -> list[SendResult]:
        """Send each message as its own request, a few at a time (`send_each`)."""
        return await send_each(messages, await self.message_sender(config), self.concurrency)

    async def message_sender(self, config: TenantConfig) -> SendOne:
        """What sends one message for the tenant, its credentials and endpoint read once per batch."""
        raise NotImplementedError
