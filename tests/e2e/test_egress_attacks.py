"""Issue 21's outbound cases, against the real API, worker, Temporal and PostgreSQL: a tenant
aims its LLM provider, SMS endpoint, webhook or SMTP relay somewhere it should not reach (a
listener on loopback stands in for it), and the guard refuses before any connection is made."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from temporalio.client import Client

from core.configs.checks import load_config_file
from core.infra.settings import Settings
from core.security.egress import EgressGuard, EgressRefused, allowing
from core.tenants.config_schema import ChatProvider, EmailChannel, Experiments, Policies, Suggestions
from devstack.provider_simulator import ProviderSimulator, SimulatorControl
from tests.helpers.listeners import listening
from tests.helpers.runs import create_campaign, wait_for_run
from tests.helpers.stack import ROOT
from tests.helpers.tenants import MakeTenant, Tenant

NO_POLICIES: dict[str, Any] = {"policies": Policies(consent_required={"email": False}), "experiments": Experiments()}
BASE = load_config_file(ROOT / "tenant_configs" / "freshmart.yaml")


async def _run(tenant: Tenant, channel: str, template: str = "weekly_deals") -> tuple[str, str, dict[str, Any]]:
    """Create and run a one-channel campaign to its end: (run id, workflow id, run)."""
    body = {"name": f"{channel} egress", "channels": [channel], "variants": [{"key": "A", "template": template}]}
    created = await tenant.http.post(tenant.url("/campaigns"), json=body)
    assert created.status_code == 201, created.text
    started = await tenant.http.post(tenant.url(f"/campaigns/{created.json()['id']}/runs"))
    assert started.status_code == 202, started.text
    run_id, workflow_id = started.json()["run_id"], started.json()["workflow_id"]
    return run_id, workflow_id, await wait_for_run(tenant, run_id)


async def _reasons(pool: asyncpg.Pool, tenant: Tenant, run_id: str) -> list[tuple[str, str | None]]:
    rows = await pool.fetch(
        "SELECT status, reason FROM deliveries WHERE tenant_id = $1 AND run_id = $2::uuid", tenant.slug, run_id
    )
    return [(r["status"], r["reason"]) for r in rows]


async def _deliver_attempts(client: Client, workflow_id: str) -> list[int]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    started = [e for e in history.events if e.HasField("activity_task_started_event_attributes")]
    scheduled = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    return [
        e.activity_task_started_event_attributes.attempt
        for e in started
        if scheduled[e.activity_task_started_event_attributes.scheduled_event_id] == "deliver_batch"
    ]


def _with_provider(config: dict[str, Any], endpoint: str) -> dict[str, Any]:
    config["suggestions"] = {"provider": {"endpoint": endpoint, "api_key": "secret:CHAT_KEY", "model": "m"}}
    return config


async def test_an_llm_endpoint_at_the_apis_own_port_or_the_metadata_address_is_a_422_at_save(
    make_tenant: MakeTenant, api_url: str
) -> None:
    tenant = await make_tenant(customers=0)
    other = await make_tenant(customers=0)
    api_port = api_url.rsplit(":", 1)[1].rstrip("/")
    config = (await tenant.http.get(tenant.url("/config"))).json()["config"]
    for endpoint in (
        f"http://127.0.0.1:{api_port}/v1/tenants/{other.slug}/keys?label=x&x=",  # the API itself
        f"https://127.0.0.1:{api_port}/v1",
        f"https://[::ffff:127.0.0.1]:{api_port}/v1",
        "https://169.254.169.254/latest/meta-data",  # cloud metadata
        "https://[fd00:ec2::254]/latest",
        "https://100.100.100.200/v1",  # CGNAT
        "https://user:pw@llm.example.com/v1",
    ):
        response = await tenant.http.put(tenant.url("/config"), json=_with_provider(dict(config), endpoint))
        assert response.status_code == 422, (endpoint, response.text)
        assert response.json()["errors"][0].startswith("suggestions.provider.endpoint: "), response.json()


async def test_suggest_with_an_llm_endpoint_named_to_loopback_is_a_422_and_the_listener_gets_no_connection(
    make_tenant: MakeTenant,
) -> None:
    async with listening() as listener:
        provider = ChatProvider(endpoint=f"https://localhost:{listener.port}/v1", api_key="secret:CHAT_KEY", model="m")
        tenant = await make_tenant(customers=0, suggestions=Suggestions(provider=provider))
        stored = await tenant.http.put(tenant.url("/secrets/CHAT_KEY"), json={"value": "sk-canary-egress"})
        assert stored.status_code == 201, stored.text
        campaign_id = await create_campaign(tenant)
        response = await tenant.http.post(tenant.url(f"/campaigns/{campaign_id}:suggest"))
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0].startswith("suggestions.provider.endpoint: refused"), response.json()
    assert listener.connections == 0


async def test_a_failing_llm_provider_is_a_502_with_a_fixed_word_never_its_body(make_tenant: MakeTenant) -> None:
    body = b'{"error": "key minted: tk_CANARY_FROM_REMOTE"}'
    async with listening(status=500, body=body) as listener:
        with allowing(f"http://127.0.0.1:{listener.port}/v1"):
            provider = ChatProvider(endpoint=f"{listener.url}/v1", api_key="secret:CHAT_KEY", model="m")
            tenant = await make_tenant(customers=0, suggestions=Suggestions(provider=provider))
            await tenant.http.put(tenant.url("/secrets/CHAT_KEY"), json={"value": "sk-test"})
            campaign_id = await create_campaign(tenant)
            response = await tenant.http.post(tenant.url(f"/campaigns/{campaign_id}:suggest"))
    assert response.status_code == 502
    assert response.json()["detail"] == "suggestions provider: rejected with status 500"
    assert "CANARY" not in response.text
    assert listener.connections == 1


async def test_an_sms_endpoint_at_a_loopback_listener_fails_the_batch_as_egress_refused_with_no_connection(
    make_tenant: MakeTenant, pool: asyncpg.Pool, temporal_client: Client
) -> None:
    assert BASE.channels.sms is not None
    async with listening() as listener:
        sms = BASE.channels.sms.model_copy(update={"endpoint": f"https://localhost:{listener.port}"})
        tenant = await make_tenant(
            "freshmart", customers=40, channels=BASE.channels.model_copy(update={"sms": sms}), **NO_POLICIES
        )
        run_id, workflow_id, run = await _run(tenant, "sms")
    assert run["status"] == "completed", run
    reasons = await _reasons(pool, tenant, run_id)
    assert reasons and set(reasons) <= {("failed", "egress_refused"), ("skipped", None)} | {
        (s, r) for s, r in reasons if s == "skipped"
    }
    assert ("failed", "egress_refused") in reasons
    assert run["counts"]["sent"] == 0
    assert await _deliver_attempts(temporal_client, workflow_id) == [1] * len(
        await _deliver_attempts(temporal_client, workflow_id)
    ), "never retried"
    assert listener.connections == 0


async def test_the_simulators_message_paths_are_allowed_and_its_control_routes_are_not(
    make_tenant: MakeTenant, settings: Settings, provider_sim: ProviderSimulator, sim: SimulatorControl
) -> None:
    # The tests allow exactly what `make run` allows: the simulator's message paths, not /_sim.
    tenant = await make_tenant(customers=0)
    config = (await tenant.http.get(tenant.url("/config"))).json()["config"]
    config["channels"]["webhook"] = {
        "endpoint": f"{provider_sim.url}/_sim/reset",
        "credentials": {"signing_secret": "secret:WEBHOOK_SIGNING_SECRET"},
    }
    response = await tenant.http.put(tenant.url("/config"), json=config)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0].startswith("channels.webhook.endpoint: "), response.json()
    config["channels"]["webhook"]["endpoint"] = f"{provider_sim.url}/webhook/{tenant.slug}"
    assert (await tenant.http.put(tenant.url("/config"), json=config)).status_code == 200

    before = len(await sim.requests())
    async with EgressGuard.from_settings(settings) as guard:
        for path in ("/_sim/reset", "/_sim/faults", "/"):
            with pytest.raises(EgressRefused):
                await guard.post(f"{provider_sim.url}{path}", json={})
        answer = await guard.post(f"{provider_sim.url}/webhook/{tenant.slug}", json={"hello": 1})
    assert answer.status_code == 200
    assert len(await sim.requests()) == before + 1


async def test_an_smtp_relay_on_a_loopback_port_not_allowed_is_refused_with_no_connection(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    async with listening() as listener:
        email = EmailChannel(endpoint=f"smtp://localhost:{listener.port}", connections=2)
        tenant = await make_tenant(
            "freshmart", customers=30, channels=BASE.channels.model_copy(update={"email": email}), **NO_POLICIES
        )
        run_id, _, run = await _run(tenant, "email")
    assert run["status"] == "completed", run
    failed = [r for s, r in await _reasons(pool, tenant, run_id) if s == "failed"]
    assert failed and set(failed) == {"egress_refused"}
    assert run["counts"]["sent"] == 0
    assert listener.connections == 0


async def test_an_smtp_relay_literal_on_loopback_is_a_422_at_save(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(customers=0)
    config = (await tenant.http.get(tenant.url("/config"))).json()["config"]
    for endpoint in ("smtp://127.0.0.1:25", "smtp://169.254.169.254:25", "smtps://10.0.0.1:465"):
        config["channels"]["email"]["endpoint"] = endpoint
        response = await tenant.http.put(tenant.url("/config"), json=config)
        assert response.status_code == 422, (endpoint, response.text)
        assert response.json()["errors"][0].startswith("channels.email.endpoint: "), response.json()


async def test_a_tenant_has_at_most_two_provider_calls_in_flight_and_they_hold_no_db_connection(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    # A provider that trickles its answer: the calls are in flight together for a while.
    async with listening(body=b"x" * 40, trickle=0.05) as slow:
        with allowing(f"http://127.0.0.1:{slow.port}/v1"):
            provider = ChatProvider(endpoint=f"{slow.url}/v1", api_key="secret:CHAT_KEY", model="m")
            tenant = await make_tenant(customers=0, suggestions=Suggestions(provider=provider))
            await tenant.http.put(tenant.url("/secrets/CHAT_KEY"), json={"value": "sk-test"})
            campaign_id = await create_campaign(tenant)

            async def ask() -> int:
                response = await tenant.http.post(tenant.url(f"/campaigns/{campaign_id}:suggest"))
                return response.status_code

            async def open_transactions() -> int:
                # While the provider trickles, no connection of this database sits in a transaction.
                while not slow.requests:
                    await asyncio.sleep(0.01)
                return int(
                    await pool.fetchval(
                        """SELECT count(*) FROM pg_stat_activity
                           WHERE datname = current_database() AND state LIKE 'idle in transaction%'"""
                    )
                )

            *statuses, idle_in_tx = await asyncio.gather(ask(), ask(), ask(), open_transactions())
    assert sorted(statuses) == [429, 502, 502], statuses  # the answer is not a chat completion
    assert idle_in_tx == 0
    assert slow.connections == 2
