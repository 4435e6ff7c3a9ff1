"""Bad input gets a 4xx naming the problem, never a 500 and never a started workflow."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from temporalio.client import Client

from tests.helpers.tenants import MakeTenant

GOOD = {
    "name": "Deals",
    "segment": {},
    "channels": ["email"],
    "variants": [{"key": "A", "template": "weekly_deals"}],
}


async def _workflow_count(client: Client, slug: str) -> int:
    return len([w async for w in client.list_workflows(f'TenantId = "{slug}"')])


async def test_missing_and_wrong_keys_are_401(make_tenant: MakeTenant, api_url: str) -> None:
    tenant = await make_tenant(customers=0)
    async with httpx.AsyncClient(base_url=api_url) as anon:
        missing = await anon.get(tenant.url("/campaigns"))
        assert missing.status_code == 401
        assert "Authorization: Bearer" in missing.json()["detail"]
        wrong = await anon.get(tenant.url("/campaigns"), headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.json()["detail"] == "invalid API key"


async def test_a_tenant_key_sees_only_its_own_tenant(make_tenant: MakeTenant) -> None:
    a = await make_tenant(customers=5)
    b = await make_tenant(customers=5)
    created = await b.http.post(b.url("/campaigns"), json=GOOD)
    assert created.status_code == 201
    campaign = created.json()["id"]
    # A's key on B's tenant: indistinguishable from a tenant that does not exist.
    for method, path in [
        ("GET", f"/campaigns/{campaign}"),
        ("GET", "/campaigns"),
        ("POST", f"/campaigns/{campaign}/runs"),
    ]:
        response = await a.http.request(method, b.url(path))
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["detail"] == f"tenant '{b.slug}' not found"


async def test_admin_key_reaches_every_tenant(make_tenant: MakeTenant, api_url: str, admin_key: str) -> None:
    tenant = await make_tenant(customers=0)
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {admin_key}"}) as admin:
        response = await admin.get(tenant.url("/campaigns"))
    assert response.status_code == 200
    assert response.json() == []


async def test_unknown_tenant_campaign_and_run_are_404(make_tenant: MakeTenant, api_url: str, admin_key: str) -> None:
    tenant = await make_tenant(customers=0)
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {admin_key}"}) as admin:
        response = await admin.get("/v1/tenants/no-such-tenant/campaigns")
        assert response.status_code == 404
        assert response.json()["detail"] == "tenant 'no-such-tenant' not found"
    for path, detail in [
        (
            "/campaigns/0b7c6f9e-8f5e-4a5b-9a43-5f0f5c1d2e3f",
            "campaign '0b7c6f9e-8f5e-4a5b-9a43-5f0f5c1d2e3f' not found",
        ),
        ("/campaigns/not-a-uuid", "campaign 'not-a-uuid' not found"),
        ("/runs/not-a-uuid", "run 'not-a-uuid' not found"),
    ]:
        response = await tenant.http.get(tenant.url(path))
        assert response.status_code == 404
        assert response.json()["detail"] == detail
    response = await tenant.http.post(tenant.url("/campaigns/0b7c6f9e-8f5e-4a5b-9a43-5f0f5c1d2e3f/runs"))
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"channels": []}, "body.channels: List should have at least 1 item"),
        ({"channels": ["fax"]}, "body.channels[0]: Input should be 'email', 'sms', 'push' or 'webhook'"),
        ({"variants": [{"key": "A"}]}, "body.variants[0].template: Field required"),
        ({"colour": "red"}, "body.colour: unknown field"),
        (
            {"segment": {"attribute": "loyality_tier", "value": "gold"}},
            "segment.attribute: unknown attribute 'loyality_tier' (did you mean 'loyalty_tier'?)",
        ),
        ({"segment": "no_such_segment"}, "segment.segment: unknown segment 'no_such_segment'"),
        ({"variants": [{"key": "A", "template": "nope"}]}, "variants[0].template: unknown template 'nope'"),
        (
            {"variants": [{"key": "A", "template": "weekly_deals", "subject": "Hi {{ frist_name }}"}]},
            "variants[0].subject: unknown variable 'frist_name' (did you mean 'first_name'?)",
        ),
        ({"channels": ["push"]}, "channels[0]: channel 'push' is not enabled for this tenant"),
        ({"send_at": "2030-01-01T10:00:00"}, "body.send_at: must include a time zone offset"),
    ],
)
async def test_invalid_campaigns_are_rejected_with_the_field_named(
    make_tenant: MakeTenant, temporal_client: Client, change: dict[str, Any], expected: str
) -> None:
    tenant = await make_tenant(customers=0)
    response = await tenant.http.post(tenant.url("/campaigns"), json={**GOOD, **change})
    assert response.status_code == 422, response.text
    assert any(expected in error for error in response.json()["errors"]), response.json()
    listed = await tenant.http.get(tenant.url("/campaigns"))
    assert listed.json() == []
    assert await _workflow_count(temporal_client, tenant.slug) == 0


async def test_malformed_json_is_422_not_500(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(customers=0)
    response = await tenant.http.post(
        tenant.url("/campaigns"), content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert "JSON" in response.json()["detail"]
