"""Push over an FCM-like batch HTTP API: many tokens per request, a result per token."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx

from activities.channels.base import OutboundMessage, SendResult, TransientChannelError
from activities.channels.http_common import (
    EndpointRefused,
    HttpAdapter,
    Sender,
    guarded,
    post,
    provider_reason,
    refused_result,
)
from core.content.templating import RenderedPush
from core.security.egress import EgressGuard
from core.security.secrets import SecretResolver
from core.tenants.config_schema import TenantConfig

# Per-token errors that say "try again later" rather than "this token is no good".
TRANSIENT_TOKEN_ERRORS = frozenset({"UNAVAILABLE", "INTERNAL", "QUOTA_EXCEEDED"})
# Per-token errors that mean the app was uninstalled or the token expired: never use it again.
GONE_TOKEN_ERRORS = frozenset({"UNREGISTERED"})
# The per-token error words recorded as they are; any other from a tenant-set endpoint is not.
KNOWN_TOKEN_ERRORS = TRANSIENT_TOKEN_ERRORS | GONE_TOKEN_ERRORS | {"INVALID_ARGUMENT", "SENDER_ID_MISMATCH", None}


def batch_key(messages: list[OutboundMessage]) -> str:
    """The request's own idempotency key: the same messages always make the same batch."""
    digest = hashlib.sha256("\n".join(m.idempotency_key for m in messages).encode()).hexdigest()
    return f"batch:{digest[:40]}"


class HttpPushAdapter(HttpAdapter):
    """Sends up to `max_per_request` notifications per request; each carries its own key."""

    channel = "push"

    def __init__(
        self,
        http: httpx.AsyncClient,
        default_base_url: str,
        secrets: SecretResolver,
        max_per_request: int = 500,
        guard: EgressGuard | None = None,
    ):
        super().__init__(http, default_base_url, secrets, guard)
        self.max_per_request = max_per_request

    async def send_batch(self, config: TenantConfig, messages: list[OutboundMessage]) -> list[SendResult]:
        """Send the notifications in requests of up to `max_per_request`."""
        server_key = await self.credential(config, "server_key")
        url = self.url(config, "/v1/batch")
        via = self.sender(config)
        results: list[SendResult] = []
        for start in range(0, len(messages), self.max_per_request):
            group = messages[start : start + self.max_per_request]
            try:
                results += await self._send(via, url, server_key, group)
            except EndpointRefused:  # the rest fail for good, with no further request
                return results + [refused_result(m) for m in messages[start:]]
            except TransientChannelError as exc:
                raise TransientChannelError(str(exc), exc.retry_after_seconds, partial=results + exc.partial) from exc
        return results

    async def _send(self, via: Sender, url: str, server_key: str, group: list[OutboundMessage]) -> list[SendResult]:
        body = {"messages": [self._message(m) for m in group]}
        headers = {"Authorization": f"Bearer {server_key}", "Idempotency-Key": batch_key(group)}
        response = await post(via, url, "push request", "push provider", json=body, headers=headers)
        if not response.is_success:
            reason = provider_reason(response) if guarded(response) else f"push rejected: {provider_reason(response)}"
            return [SendResult(m.idempotency_key, "failed", reason) for m in group]
        try:
            answers = response.json()["results"]
        except (ValueError, KeyError, TypeError):
            raise TransientChannelError(f"push provider: unreadable answer (HTTP {response.status_code})") from None
        by_key = {a.get("idempotency_key"): a for a in answers if isinstance(a, dict)}
        settled: list[SendResult] = []
        retry: list[str] = []
        for i, msg in enumerate(group):
            answer = by_key.get(msg.idempotency_key)
            if answer is None and len(answers) == len(group) and isinstance(answers[i], dict):
                answer = answers[i]  # providers that answer in request order without echoing keys
            error = answer.get("error") if answer else "missing result"
            if guarded(response) and error not in KNOWN_TOKEN_ERRORS:
                error = "rejected"  # a tenant-set endpoint's own words are never quoted
            if answer is not None and answer.get("message_id"):
                settled.append(SendResult(msg.idempotency_key, "sent", provider_message_id=answer["message_id"]))
            elif answer is None or error in TRANSIENT_TOKEN_ERRORS:
                retry.append(f"{msg.idempotency_key}: {error}")
            else:
                settled.append(
                    SendResult(
                        msg.idempotency_key,
                        "failed",
                        f"push token rejected: {error}",
                        address_gone=error in GONE_TOKEN_ERRORS,
                    )
                )
        if retry:
            raise TransientChannelError(f"push provider: {len(retry)} tokens to retry ({retry[0]})", partial=settled)
        return settled

    @staticmethod
    def _message(msg: OutboundMessage) -> dict[str, Any]:
        content: RenderedPush = msg.content
        return {
            "token": msg.address,
            "title": content.title,
            "body": content.body,
            "data": content.data,
            "idempotency_key": msg.idempotency_key,
        }
