"""A channel adapter wrapped to time each provider call and count what became of its messages."""

from __future__ import annotations

import time

from activities.channels.base import (
    ChannelAdapter,
    ChannelConfigError,
    OutboundMessage,
    SendResult,
    TransientChannelError,
)
from core.infra.metrics import PROVIDER_MESSAGES, PROVIDER_REQUEST_DURATION
from core.tenants.config_schema import TenantConfig


class MeteredAdapter:
    """Delegates to `inner`; each `send_batch` is one observation of provider request duration,
    labelled ok, permanent (a refusal, or a config error), transient or rate_limited (429)."""

    def __init__(self, inner: ChannelAdapter):
        self.inner = inner
        self.channel = inner.channel

    async def send_batch(self, config: TenantConfig, messages: list[OutboundMessage]) -> list[SendResult]:
        """Send through the inner adapter, recording duration and outcomes."""
        started = time.monotonic()
        tenant, channel = config.slug, self.channel
        try:
            results = await self.inner.send_batch(config, messages)
        except TransientChannelError as exc:
            outcome = "rate_limited" if exc.rate_limited else "transient"
            PROVIDER_REQUEST_DURATION.labels(tenant, channel, outcome).observe(time.monotonic() - started)
            self._count(tenant, exc.partial)
            unsettled = len(messages) - len(exc.partial)
            if unsettled > 0:
                PROVIDER_MESSAGES.labels(tenant, channel, outcome).inc(unsettled)
            raise
        except ChannelConfigError:
            PROVIDER_REQUEST_DURATION.labels(tenant, channel, "permanent").observe(time.monotonic() - started)
            PROVIDER_MESSAGES.labels(tenant, channel, "permanent").inc(len(messages))
            raise
        refused = any(r.status != "sent" for r in results)
        PROVIDER_REQUEST_DURATION.labels(tenant, channel, "permanent" if refused else "ok").observe(
            time.monotonic() - started
        )
        self._count(tenant, results)
        return results

    def _count(self, tenant: str, results: list[SendResult]) -> None:
        sent = sum(1 for r in results if r.status == "sent")
        if sent:
            PROVIDER_MESSAGES.labels(tenant, self.channel, "ok").inc(sent)
        if len(results) - sent:
            PROVIDER_MESSAGES.labels(tenant, self.channel, "permanent").inc(len(results) - sent)
