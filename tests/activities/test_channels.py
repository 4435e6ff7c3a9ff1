"""The HTTP channel adapters against the real provider simulator (no Temporal): what goes on the
wire, how answers are classified, and that a re-sent key is delivered once."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from activities.channels.base import ChannelConfigError, OutboundMessage, TransientChannelError
from activities.channels.http_common import parse_retry_after
from activities.channels.push_http import HttpPushAdapter
from activities.channels.sms_http import HttpSmsAdapter
from activities.channels.webhook_http import HttpWebhookAdapter
from core.common.signing import verify
from core.configs.checks import load_config_file
from core.content.templating import RenderedPush, RenderedSms, RenderedWebhook
from core.security.egress import allowing
from core.security.secrets import SecretResolver
from core.tenants.config_schema import TenantConfig, WebhookChannel
from devstack.provider_simulator import ProviderSimulator, SimulatorControl
from tests.helpers.asserts import not_none
from tests.helpers.stack import PROVIDER_SECRETS, ROOT, TEST_KEYRING
from tests.helpers.tenants import store_provider_secrets


@pytest.fixture
async def provider_secrets(pool: asyncpg.Pool) -> SecretResolver:
    """The adapters' secret resolver, with the provider credentials stored for the two tenants."""
    for slug in ("fm-test", "quickstop"):
        await store_provider_secrets(pool, slug)
    return SecretResolver(pool, TEST_KEYRING)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A provider HTTP client with a short timeout, as the workers use one."""
    async with httpx.AsyncClient(timeout=0.5) as client:
        yield client


def freshmart(**channel_updates: object) -> TenantConfig:
    """FreshMart's config with a webhook channel and `channel_updates` applied."""
    config = load_config_file(ROOT / "tenant_configs" / "freshmart.yaml")
    webhook = WebhookChannel(credentials={"signing_secret": "secret:WEBHOOK_SIGNING_SECRET"})
    channels = config.channels.model_copy(update={"webhook": webhook, **channel_updates})
    return config.model_copy(update={"slug": "fm-test", "channels": channels})


def quickstop() -> TenantConfig:
    """QuickStop's config (push)."""
    return load_config_file(ROOT / "tenant_configs" / "quickstop.yaml")


def sms(key: str, to: str, body: str = "hello") -> OutboundMessage:
    """An outbound SMS with idempotency key `key` to `to`."""
    return OutboundMessage(key, 1, to, RenderedSms(body), {})


def push(key: str, token: str) -> OutboundMessage:
    """An outbound push with idempotency key `key` to registration token `token`."""
    return OutboundMessage(key, 1, token, RenderedPush("Title", "Body", {"deep_link": "qs://x"}), {})


def token(n: int) -> str:
    """A well-formed, deterministic push registration token."""
    return hashlib.sha256(str(n).encode()).hexdigest()


async def test_sms_posts_a_form_per_message_and_rejects_bad_numbers_without_a_request(
    sim: SimulatorControl, provider_sim: ProviderSimulator, http: httpx.AsyncClient, provider_secrets: SecretResolver
) -> None:
    adapter = HttpSmsAdapter(http, provider_sim.url, provider_secrets)
    batch = [sms("k:1", "+12125550101", "Hi Ann"), sms("k:2", "212-555-0102"), sms("k:3", "+447700900123", "Hi Bo")]
    results = await adapter.send_batch(freshmart(), batch)

    assert [(r.idempotency_key, r.status) for r in results] == [("k:1", "sent"), ("k:2", "failed"), ("k:3", "sent")]
    assert results[1].reason == "invalid phone number (not E.164)"
    assert results[0].provider_message_id and results[0].provider_message_id.startswith("SM")
    delivered = {m["idempotency_key"]: m for m in await sim.messages("sms")}
    assert set(delivered) == {"k:1", "k:3"}
    assert delivered["k:1"]["to"] == "+12125550101"
    assert delivered["k:1"]["from"] == "+15005550006"
    assert delivered["k:1"]["body"] == "Hi Ann"
    assert delivered["k:1"]["account_sid"] == PROVIDER_SECRETS["SMS_ACCOUNT_SID"]
    assert delivered["k:1"]["headers"]["idempotency-key"] == "k:1"
    assert delivered["k:1"]["headers"]["authorization"] == "Basic <redacted>"
    assert (await sim.stats())["requests"] == 2


async def test_a_resent_batch_is_delivered_once_and_gets_the_original_answers(
    sim: SimulatorControl, provider_sim: ProviderSimulator, http: httpx.AsyncClient, provider_secrets: SecretResolver
) -> None:
    adapter = HttpSmsAdapter(http, provider_sim.url, provider_secrets)
    batch = [sms(f"k:{i}", f"+1212555010{i}") for i in range(3)]
    first = await adapter.send_batch(freshmart(), batch)
    again = await adapter.send_batch(freshmart(), batch)
    assert first == again
    assert len(await sim.messages("sms")) == 3
    stats = await sim.stats()
    assert (stats["requests"], stats["duplicates"], stats["delivered"]) == (6, 3, 3)


async def test_permanent_rejections_are_results_and_transient_ones_raise(
    sim: SimulatorControl, provider_sim: ProviderSimulator, http: httpx.AsyncClient, provider_secrets: SecretResolver
) -> None:
    adapter = HttpSmsAdapter(http, provider_sim.url, provider_secrets, concurrency=1)
    await sim.set_faults(permanent_fail=["+12125550100"])
    [result] = await adapter.send_batch(freshmart(), [sms("k:p", "+12125550100")])
    assert result.status == "failed"
    assert result.reason == "sms rejected: HTTP 400 code 21610: Attempt to send to unsubscribed recipient"

    await sim.set_faults(fail_n=1)
    with pytest.raises(TransientChannelError) as err:
        # The bad number settles without a request; the 503 stops the rest and keeps that result.
        await adapter.send_batch(
            freshmart(), [sms("k:x", "12"), sms("k:a", "+12125550111"), sms("k:b", "+12125550112")]
        )
    assert "HTTP 503" in str(err.value) and err.value.retry_after_seconds is None
    assert [(r.idempotency_key, r.status) for r in err.value.partial] == [("k:x", "failed")]

    await sim.set_faults(rate_limit={"count": 1, "retry_after": 7})
    with pytest.raises(TransientChannelError) as err:
        await adapter.send_batch(freshmart(), [sms("k:a", "+12125550111")])
    assert "HTTP 429" in str(err.value) and err.value.retry_after_seconds == 7
    assert [m["idempotency_key"] for m in await sim.messages("sms")] == []

    assert [r.status for r in await adapter.send_batch(freshmart(), [sms("k:a", "+12125550111")])] == ["sent"]
    stats = await sim.stats()
    assert (stats["server_errors"], stats["rate_limited"], stats["rejected"]) == (1, 1, 1)


async def test_a_timeout_is_transient_and_the_retry_is_a_duplicate_at_the_provider(
    sim: SimulatorControl, provider_sim: ProviderSimulator, http: httpx.AsyncClient, provider_secrets: SecretResolver
) -> None:
    adapter = HttpSmsAdapter(http, provider_sim.url, provider_secrets)
    await sim.set_faults(timeout_n=1, hang_seconds=5)
    started = time.monotonic()
    with pytest.raises(TransientChannelError, match="timed out"):
        await adapter.send_batch(freshmart(), [sms("k:t", "+12125550120")])
    assert time.monotonic() - started < 2
    # The provider took the message before the answer was lost: the retry must not send it again.
    [result] = await adapter.send_batch(freshmart(), [sms("k:t", "+12125550120")])
    assert result.status == "sent"
    assert len(await sim.messages("sms")) == 1
    stats = await sim.stats()
    assert (stats["timeouts"], stats["duplicates"]) == (1, 1)


async def test_connection_refused_is_transient_and_a_missing_secret_is_a_config_error(
    sim: SimulatorControl, provider_sim: ProviderSimulator, http: httpx.AsyncClient, provider_secrets: SecretResolver
) -> None:
    adapter = HttpSmsAdapter(http, provider_sim.url, provider_secrets)
    closed = freshmart(sms=not_none(freshmart().channels.sms).model_copy(update={"endpoint": "http://127.0.0.1:9"}))
    # A tenant-set endpoint goes through the guard: allowed here, a closed port says only "unreachable".
    with allowing("http://127.0.0.1:9"), pytest.raises(TransientChannelError, match="SMS request failed: unreachable "):
        await adapter.send_batch(closed, [sms("k:c", "+12125550130")])

    creds = {"account_sid": "secret:NO_SUCH_SID", "auth_token": "secret:SMS_AUTH_TOKEN"}
    unset = freshmart(sms=not_none(freshmart().channels.sms).model_copy(update={"credentials": creds}))
    with pytest.raises(ChannelConfigError, match="secret NO_SUCH_SID is not set for tenant fm-test"):
        await adapter.send_batch(unset, [sms("k:c", "+12125550130")])
    # A reference from before the secret store names an environment variable: it never resolves,
    # even to a variable the process has.
    legacy = {"account_sid": "env:PATH", "auth_token": "secret:SMS_AUTH_TOKEN"}
    old = freshmart(sms=not_none(freshmart().channels.sms).model_copy(update={"credentials": legacy}))
    with pytest.raises(ChannelConfigError, match="env: references were removed"):
        await adapter.send_batch(old, [sms("k:c", "+12125550130")])
    assert (await sim.stats())["requests"] == 0


async def test_push_sends_many_tokens_per_request_with_a_result_per_token(
    sim: SimulatorControl, provider_sim: ProviderSimulator, http: httpx.AsyncClient, provider_secrets: SecretResolver
) -> None:
    await sim.set_faults(permanent_fail=[token(3)])
    batch = [push(f"p:{i}", token(i)) for i in range(6)] + [push("p:bad", "not a token")]
    results = await HttpPushAdapter(http, provider_sim.url, provider_secrets).send_batch(quickstop(), batch)

    by_key = {r.idempotency_key: r for r in results}
    assert len(results) == 7
    assert by_key["p:3"].status == "failed" and by_key["p:3"].reason == "push token rejected: UNREGISTERED"
    assert by_key["p:bad"].status == "failed" and by_key["p:bad"].reason == "push token rejected: INVALID_ARGUMENT"
    assert all(by_key[f"p:{i}"].status == "sent" for i in (0, 1, 2, 4, 5))
    delivered = await sim.messages("push")
    assert sorted(m["token"] for m in delivered) == sorted(token(i) for i in (0, 1, 2, 4, 5))
    assert {m["request_seq"] for m in delivered} == {delivered[0]["request_seq"]}, "one request for the batch"
    assert delivered[0]["batch_size"] == 7
    assert delivered[0]["data"] == {"deep_link": "qs://x"}
    assert delivered[0]["headers"]["authorization"] == "Bearer <redacted>"

    await sim.reset()
    small = HttpPushAdapter(http, provider_sim.url, provider_secrets, max_per_request=3)
    assert all(r.status == "sent" for r in await small.send_batch(quickstop(), batch[:6] + batch[:1]))
    assert (await sim.stats())["requests"] == 3
    assert len(await sim.messages("push")) == 6


async def test_push_failure_of_a_later_request_keeps_the_earlier_results(
    sim: SimulatorControl, provider_sim: ProviderSimulator, http: httpx.AsyncClient, provider_secrets: SecretResolver
) -> None:
    adapter = HttpPushAdapter(http, provider_sim.url, provider_secrets, max_per_request=2)
    batch = [push(f"p:{i}", token(i)) for i in range(4)]
    await sim.set_faults(after_n=1, rate_limit={"count": 1, "retry_after": 3})
    with pytest.raises(TransientChannelError) as err:
        await adapter.send_batch(quickstop(), batch)
    assert err.value.retry_after_seconds == 3
    assert [(r.idempotency_key, r.status) for r in err.value.partial] == [("p:0", "sent"), ("p:1", "sent")]
    # The retry sends only what is left.
    results = await adapter.send_batch(quickstop(), batch[2:])
    assert [r.status for r in results] == ["sent"] * 2
    assert len(await sim.messages("push")) == 4
    assert (await sim.stats())["duplicates"] == 0


async def test_webhook_posts_signed_json_that_the_receiver_can_verify(
    sim: SimulatorControl, provider_sim: ProviderSimulator, http: httpx.AsyncClient, provider_secrets: SecretResolver
) -> None:
    adapter = HttpWebhookAdapter(http, provider_sim.url, provider_secrets)
    payload = {"event": "campaign.message", "customer": "cust-000001", "name": "Zoë", "n": 1}
    [result] = await adapter.send_batch(
        freshmart(), [OutboundMessage("w:1", 1, "cust-000001", RenderedWebhook(payload), {})]
    )
    assert result.status == "sent" and result.provider_message_id

    [message] = await sim.messages("webhook")
    assert message["name"] == "fm-test" and message["body"] == payload
    headers, raw = message["headers"], message["raw_body"].encode()
    assert headers["idempotency-key"] == "w:1"
    assert headers["content-type"] == "application/json"
    timestamp = headers["x-pennant-timestamp"]
    assert abs(int(timestamp) - time.time()) < 60
    secret = PROVIDER_SECRETS["WEBHOOK_SIGNING_SECRET"].encode()
    expected = hmac.new(secret, timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    assert headers["x-pennant-signature"] == f"sha256={expected}"
    assert verify(secret.decode(), timestamp, raw, headers["x-pennant-signature"])
    assert not verify("wrong", timestamp, raw, headers["x-pennant-signature"])
    assert not verify(secret.decode(), timestamp, raw + b" ", headers["x-pennant-signature"])
    assert json.loads(raw) == payload

    await sim.set_faults(permanent_fail=["gone-hook"])
    gone = freshmart(
        webhook=not_none(freshmart().channels.webhook).model_copy(
            update={"endpoint": f"{provider_sim.url}/webhook/gone-hook"}
        )
    )
    with allowing(f"{provider_sim.url}/webhook"):  # a tenant-set endpoint: through the guard
        [result] = await adapter.send_batch(
            gone, [OutboundMessage("w:2", 2, "cust-000002", RenderedWebhook(payload), {})]
        )
    # The tenant's own endpoint: its status only, never its body.
    assert result.status == "failed" and result.reason == "rejected with status 410"


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= (parse_retry_after(later) or 0) <= 31
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT") == 0.0
