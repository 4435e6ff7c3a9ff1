"""A tenant's own SMTP relay (channels.email.endpoint) gets its mail, over pooled connections."""

from __future__ import annotations

from pathlib import Path

from core.security.egress import allowing
from core.tenants.config_schema import Channels, EmailChannel, Execution, Policies
from devstack.smtp_sink import read_outbox, start_sink
from tests.helpers.runs import wait_for_run
from tests.helpers.stack import free_port
from tests.helpers.tenants import MakeTenant


async def test_mail_goes_to_the_tenants_relay_reusing_connections(make_tenant: MakeTenant, workdir: Path) -> None:
    port = free_port()
    relay = start_sink(workdir / f"relay-{port}", "127.0.0.1", port)
    try:
        # The test's own relay on loopback: allowed to the guard, in plaintext, for this test.
        with allowing(f"smtp+plain://127.0.0.1:{port}"):
            tenant = await make_tenant(
                customers=400,
                policies=Policies(consent_required={"email": False}),
                channels=Channels(email=EmailChannel(endpoint=f"smtp://127.0.0.1:{port}", connections=3)),
                execution=Execution(batch_size=40, max_concurrent_batches=2),
            )
            body = {"name": "Relay", "channels": ["email"], "variants": [{"key": "A", "template": "weekly_deals"}]}
            campaign = (await tenant.http.post(tenant.url("/campaigns"), json=body)).json()["id"]
            run_id = (await tenant.http.post(tenant.url(f"/campaigns/{campaign}/runs"))).json()["run_id"]
            run = await wait_for_run(tenant, run_id)
            assert run["status"] == "completed" and run["counts"]["sent"] == 400
            mine = [
                m for m in read_outbox(workdir / f"relay-{port}") if f":{run_id}:" in m["X-Pennant-Idempotency-Key"]
            ]
            assert len(mine) == 400
            elsewhere = [
                m
                for m in read_outbox(workdir / "outbox", f":{run_id}:")
                if f":{run_id}:" in m["X-Pennant-Idempotency-Key"]
            ]
            assert elsewhere == [], "nothing went to the platform's relay"
            # Ten batches, at most two at a time, over the tenant's three connections: pooled, not one
            # handshake per batch, and never more open at once than its config allows.
            assert 1 <= relay.handler.sessions <= 3, relay.handler.sessions
            assert relay.handler.peak_connections <= 3, relay.handler.peak_connections
    finally:
        relay.stop()


async def test_a_malformed_relay_is_refused_when_the_config_is_saved(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(customers=0)
    config = (await tenant.http.get(tenant.url("/config"))).json()["config"]
    config["channels"]["email"]["endpoint"] = "mail.example.com"
    response = await tenant.http.put(tenant.url("/config"), json=config)
    assert response.status_code == 422
    assert response.json()["errors"] == [
        "channels.email.endpoint: 'mail.example.com' is not an SMTP relay like smtp://mail.example.com:587"
    ]
