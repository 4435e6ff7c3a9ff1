"""The SMTP adapter against the real SMTP sink (no Temporal): a tenant's messages go over at most
`channels.email.connections` connections at once, in parallel, reused from batch to batch."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from activities.channels.base import OutboundMessage, TransientChannelError
from activities.channels.email_smtp import SmtpEmailAdapter
from core.configs.checks import load_config_file
from core.content.templating import RenderedEmail
from core.security.egress import allowing
from core.tenants.config_schema import EmailChannel, TenantConfig
from devstack.inprocess import free_port
from devstack.smtp_sink import read_outbox, start_sink
from tests.helpers.stack import ROOT


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Controller]:
    """A sink of this test's own, so its connection counts are this test's alone (and allowed to
    the guard, in plaintext, while the test runs)."""
    controller = start_sink(tmp_path / "outbox", "127.0.0.1", free_port())
    with allowing(f"smtp+plain://127.0.0.1:{controller.port}"):
        yield controller
    controller.stop()


def tenant(port: int, connections: int, slug: str = "fm-smtp") -> TenantConfig:
    """FreshMart's config sending through the relay on `port` over at most `connections`."""
    config = load_config_file(ROOT / "tenant_configs" / "freshmart.yaml")
    email = EmailChannel(endpoint=f"smtp://127.0.0.1:{port}", connections=connections)
    return config.model_copy(update={"slug": slug, "channels": config.channels.model_copy(update={"email": email})})


def emails(prefix: str, count: int) -> list[OutboundMessage]:
    """`count` emails with idempotency keys `prefix:<n>`."""
    return [
        OutboundMessage(f"{prefix}:{n}", n, f"c{n}@example.com", RenderedEmail(f"Hi {n}", f"<p>{n}</p>", f"{n}"), {})
        for n in range(count)
    ]


async def test_a_tenant_never_has_more_connections_open_than_its_config_allows(relay: Controller) -> None:
    config = tenant(relay.port, connections=3)
    adapter = SmtpEmailAdapter("127.0.0.1", 1)  # the platform relay: unused, the tenant names its own
    # Four batches at once, twice: more lanes than connections, and a second round on the same pool.
    for round_ in range(2):
        batches = [emails(f"r{round_}b{b}", 40) for b in range(4)]
        results = await asyncio.gather(*(adapter.send_batch(config, batch) for batch in batches))
        for batch, got in zip(batches, results, strict=True):
            assert [r.idempotency_key for r in got] == [m.idempotency_key for m in batch], "in the batch's order"
            assert {r.status for r in got} == {"sent"}
    assert len(read_outbox(Path(relay.handler.outbox))) == 320
    assert relay.handler.peak_connections == 3, "in parallel, up to the limit and no further"
    assert relay.handler.sessions <= 3, "connections are reused from batch to batch, not opened again"


async def test_another_tenant_has_connections_of_its_own(relay: Controller) -> None:
    adapter = SmtpEmailAdapter("127.0.0.1", 1)
    one, two = tenant(relay.port, connections=2, slug="fm-one"), tenant(relay.port, connections=2, slug="fm-two")
    await asyncio.gather(adapter.send_batch(one, emails("one", 30)), adapter.send_batch(two, emails("two", 30)))
    assert relay.handler.peak_connections <= 4
    assert len(read_outbox(Path(relay.handler.outbox))) == 60


async def test_a_relay_that_cannot_be_reached_is_transient_with_nothing_settled() -> None:
    adapter = SmtpEmailAdapter("127.0.0.1", 1)
    port = free_port()
    with allowing(f"smtp+plain://127.0.0.1:{port}"), pytest.raises(TransientChannelError) as caught:
        await adapter.send_batch(tenant(port, connections=4), emails("down", 10))
    assert str(caught.value) == "SMTP connect failed: unreachable"  # no relay message, no errno
    assert caught.value.partial == []
