"""Test sends: a campaign's email, rendered with a sample customer's data, to seed addresses.

Goes through the same email adapter as real runs but never touches the ledger or any run."""

from __future__ import annotations

import dataclasses

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.channels.base import ChannelAdapter, OutboundMessage, TransientChannelError
from activities.lookups import campaign_spec, pinned_config
from activities.names import TEST_SEND
from core.campaigns.preview import preview_customer, preview_unsubscribe_url
from core.campaigns.test_send_io import TestSendInput, TestSendMessage, TestSendResult
from core.content.rendering import RenderError, render_message
from core.infra.db import tenant_tx
from core.infra.telemetry import tag_current_span


class TestSendActivities:
    """Test sends of a campaign's email to seed addresses."""

    __test__ = False  # not a pytest class

    def __init__(self, pool: asyncpg.Pool, email: ChannelAdapter, public_base_url: str):
        self.pool = pool
        self.email = email
        self.public_base_url = public_base_url

    @activity.defn(name=TEST_SEND)
    async def test_send(self, inp: TestSendInput) -> TestSendResult:
        """Render each variant for the sample customer and email it to the seed addresses."""
        tag_current_span(tenant=inp.tenant, campaign=inp.campaign_id)
        config = await pinned_config(self.pool, inp.tenant, None)
        async with tenant_tx(self.pool, inp.tenant) as conn:
            spec = await campaign_spec(conn, inp.tenant, inp.campaign_id)
            customer = await preview_customer(conn, inp.tenant, spec, config, inp.customer_id)
        if customer is None:
            raise ApplicationError(f"customer {inp.customer_id} not found", non_retryable=True)
        messages: list[OutboundMessage] = []
        labels: dict[str, tuple[str, str]] = {}
        for variant in [v for v in spec.variants if v.key in inp.variants]:
            try:
                rendered = render_message(
                    config,
                    variant,
                    "email",
                    customer,
                    campaign={"id": inp.campaign_id, "name": spec.name},
                    unsubscribe_url=preview_unsubscribe_url(self.public_base_url),
                )
            except RenderError as exc:
                raise ApplicationError(str(exc), type="RenderError", non_retryable=True) from exc
            content = dataclasses.replace(rendered, subject=f"[TEST] {rendered.subject}")
            for address in inp.emails:
                # Its own key space: a test send can never collide with a run's message.
                key = f"{inp.tenant}:test-send:{inp.send_id}:{variant.key}:{address}"
                labels[key] = (address, variant.key)
                messages.append(
                    OutboundMessage(key, customer.get("id") or 0, address, content, {"X-Pennant-Test-Send": "true"})
                )
        try:
            results = await self.email.send_batch(config, messages)
        except TransientChannelError as exc:
            raise ApplicationError(str(exc), type="TransientChannelError") from exc
        return TestSendResult(
            customer_id=customer.get("id"),
            messages=[
                TestSendMessage(
                    email=labels[r.idempotency_key][0],
                    variant=labels[r.idempotency_key][1],
                    status=r.status,
                    reason=r.reason,
                    message_id=r.provider_message_id,
                )
                for r in results
            ],
        )
