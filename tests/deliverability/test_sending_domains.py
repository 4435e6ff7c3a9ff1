"""Sending domains: the records a domain needs, and the check against the loopback DNS server
(never the internet) reporting each present, missing or wrong."""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import httpx
import pytest
from temporalio.client import Client

from api.app import create_app
from core.configs.checks import load_config_file
from core.deliverability.gate import start_refusal
from core.infra.settings import Settings
from core.tenants.config_store import get_config
from devstack.dns_server import DnsServer
from devstack.inprocess import serving
from tests.helpers.runs import create_campaign
from tests.helpers.stack import TENANT_CONFIGS, free_port
from tests.helpers.tenants import MakeTenant


@pytest.fixture
def dns(dns_server: DnsServer) -> Iterator[DnsServer]:
    """The session's DNS server, with what a test changed undone after it."""
    yield dns_server
    dns_server.reset()


def _by_purpose(body: dict) -> dict[str, dict]:
    return {r["purpose"]: r for r in body["records"]}


async def test_records_listed_and_present_for_a_demo_domain(make_tenant: MakeTenant, dns: DnsServer) -> None:
    tenant = await make_tenant("freshmart", customers=0)
    listing = await tenant.http.get(tenant.url("/sending-domains"))
    assert listing.status_code == 200, listing.text
    [domain] = listing.json()
    assert domain["domain"] == "freshmart.example.com"
    records = _by_purpose(domain)
    assert set(records) == {"dkim", "spf", "dmarc", "bounce"}
    assert records["dkim"]["name"].endswith("._domainkey.freshmart.example.com")
    assert records["dkim"]["value"].startswith("v=DKIM1; k=rsa; p=")
    assert "include:spf.pennant.example" in records["spf"]["value"]
    assert records["dmarc"]["name"] == "_dmarc.freshmart.example.com"
    assert records["bounce"] == {**records["bounce"], "type": "CNAME", "name": "bounces.freshmart.example.com"}

    check = await tenant.http.post(tenant.url("/sending-domains/freshmart.example.com:check"))
    assert check.status_code == 200, check.text
    assert check.json()["ok"] is True, check.json()
    assert {r["status"] for r in check.json()["records"]} == {"present"}


async def test_missing_and_wrong_records_are_named(make_tenant: MakeTenant, dns: DnsServer) -> None:
    tenant = await make_tenant("freshmart", customers=0)
    dns.withhold("freshmart.example.com", "TXT")  # no SPF
    dns.publish("_dmarc.freshmart.example.com", "TXT", ["v=DMARC1; p=bogus"])
    dns.publish("bounces.freshmart.example.com", "CNAME", ["elsewhere.example.net."])
    dkim_name = _by_purpose((await tenant.http.get(tenant.url("/sending-domains/freshmart.example.com"))).json())[
        "dkim"
    ]["name"]
    dns.publish(dkim_name, "TXT", ["v=DKIM1; k=rsa; p=AAAA"])
    body = (await tenant.http.post(tenant.url("/sending-domains/freshmart.example.com:check"))).json()
    assert body["ok"] is False
    status = {r["purpose"]: (r["status"], r["found"]) for r in body["records"]}
    assert status == {
        "spf": ("missing", []),
        "dmarc": ("wrong", ["v=DMARC1; p=bogus"]),
        "bounce": ("wrong", ["elsewhere.example.net."]),
        "dkim": ("wrong", ["v=DKIM1; k=rsa; p=AAAA"]),
    }


async def test_a_domain_nobody_published_is_missing_all_but_its_key(make_tenant: MakeTenant, dns: DnsServer) -> None:
    brand = load_config_file(TENANT_CONFIGS / "freshmart.yaml").brand.model_copy(
        update={"from_email": "hi@new.example.net"}
    )
    tenant = await make_tenant("freshmart", customers=0, brand=brand)
    body = (await tenant.http.post(tenant.url("/sending-domains/new.example.net:check"))).json()
    status = {r["purpose"]: r["status"] for r in body["records"]}
    # The loopback server publishes every generated DKIM key (it stands in for the tenant's DNS);
    # the domain's own SPF, DMARC and bounce records it does not have.
    assert status == {"dkim": "present", "spf": "missing", "dmarc": "missing", "bounce": "missing"}


async def test_another_domain_is_not_found(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant("freshmart", customers=0)
    for path in ("/sending-domains/wellcare.example.com", "/sending-domains/wellcare.example.com:check"):
        response = await (tenant.http.get if ":" not in path else tenant.http.post)(tenant.url(path))
        assert response.status_code == 404, response.text
        assert "not a sending domain of this tenant" in response.json()["detail"]


async def test_the_start_gate_names_what_is_missing(
    make_tenant: MakeTenant, dns: DnsServer, app_pool: asyncpg.Pool, settings: Settings
) -> None:
    tenant = await make_tenant("freshmart", customers=0)
    found = await get_config(app_pool, tenant.slug)
    assert found is not None
    config = found[1]
    assert await start_refusal(app_pool, settings, config, ["email"]) is None  # off by default
    gated = settings.model_copy(update={"require_sending_domain_records": True})
    assert await start_refusal(app_pool, gated, config, ["email"]) is None  # every record present
    dns.withhold("_dmarc.freshmart.example.com", "TXT")
    refusal = await start_refusal(app_pool, gated, config, ["email"])
    assert refusal == (
        "sending domain freshmart.example.com is not ready: dmarc _dmarc.freshmart.example.com (missing)"
        " (see sending-domains/freshmart.example.com)"
    )
    assert await start_refusal(app_pool, gated, config, ["sms"]) is None  # no email, no gate


async def test_an_over_long_domain_is_a_422_naming_it(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant("freshmart", customers=0)
    response = await tenant.http.post(tenant.url("/sending-domains/" + "a" * 300 + ":check"))
    assert response.status_code == 422, response.text
    assert "domain" in response.text


async def test_a_run_through_the_api_is_refused_while_the_sending_domain_misses_a_record(
    make_tenant: MakeTenant, dns: DnsServer, settings: Settings, temporal_client: Client
) -> None:
    tenant = await make_tenant("freshmart", customers=1)
    campaign_id = await create_campaign(tenant, channels=["email"])
    gated = settings.model_copy(
        update={
            "require_sending_domain_records": True,
            "temporal_address": temporal_client.service_client.config.target_host,
        }
    )
    dns.withhold("_dmarc.freshmart.example.com", "TXT")
    async with serving(create_app(gated), free_port()) as url:
        async with httpx.AsyncClient(base_url=url, headers=tenant.http.headers, timeout=30) as http:
            refused = await http.post(tenant.url(f"/campaigns/{campaign_id}/runs"))
    assert refused.status_code == 409, refused.text
    assert "dmarc _dmarc.freshmart.example.com (missing)" in refused.json()["detail"]
