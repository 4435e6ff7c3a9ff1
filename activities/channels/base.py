"""The one Protocol every channel adapter implements, and the error classes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from core.tenants.config_schema import TenantConfig


@dataclass(frozen=True)
class OutboundMessage:
    """One rendered message for one recipient on one channel."""

    idempotency_key: str
    customer_id: int
    address: str
    content: Any  # channel-specific rendered content (e.g. RenderedEmail)
    headers: dict[str, str]


@dataclass(frozen=True)
class SendResult:
    """What became of one message at the provider."""

    idempotency_key: str
    status: str  # "sent" or "failed"
    reason: str | None = None
    provider_message_id: str | None = None
    # The provider says the address is gone for good (an unregistered push token): forget it.
    address_gone: bool = False


class TransientChannelError(Exception):
    """The provider could not take the batch now (timeout, 5xx, 429): Temporal retries.

    `partial` holds the results of messages that were settled before the error, so they can be
    recorded now instead of being sent again (and de-duplicated by the provider) on the retry.
    """

    def __init__(
        self,
        message: str,
        retry_after_seconds: float | None = None,
        partial: list[SendResult] | None = None,
        rate_limited: bool = False,
    ):
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds
        self.partial = partial or []
        # The provider said "too many requests" (429), as opposed to being down or slow.
        self.rate_limited = rate_limited


class ChannelConfigError(Exception):
    """The channel cannot send at all as configured (e.g. a credential's environment variable is
    unset): retrying cannot help, so the run fails with this message."""


class ChannelAdapter(Protocol):
    """Sends a batch of messages through one provider.

    Returns one result per message: permanent problems (invalid address, 4xx) are results with
    status "failed"; problems worth retrying raise TransientChannelError.
    """

    channel: str

    async def send_batch(self, config: TenantConfig, messages: list[OutboundMessage]) -> list[SendResult]:
        """Send `messages`; one result per settled message."""
        ...
