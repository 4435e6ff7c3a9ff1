"""Idempotency-Key on the creating POSTs: a retry returns the original response and does the
work once, concurrent duplicates included; the same key with another request is 422."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from devstack.smtp_sink import read_outbox
from tests.helpers.stack import ROOT
from tests.helpers.tenants import MakeTenant, Tenant

CAMPAIGN = {
    "name": "Deals",
    "segment": {},
    "channels": ["email"],
    "variants": [{"key": "A", "template": "weekly_deals"}],
}
MISMATCH = "header.Idempotency-Key: already used with a different request (route or body); send a new key"


def _key() -> dict[str, str]:
    return {"Idempotency-Key": f"test-{uuid.uuid4()}"}


async def _runs_of(tenant: Tenant, campaign: str) -> list[dict[str, Any]]:
    response = await tenant.http.get(tenant.url("/runs"), params={"campaign_id": campaign})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_a_retried_run_start_returns_the_first_response_and_starts_one_run(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(customers=3)
    campaign = (await tenant.http.post(tenant.url("/campaigns"), json=CAMPAIGN)).json()["id"]
    key = _key()
    first = await tenant.http.post(tenant.url(f"/campaigns/{campaign}/runs"), headers=key)
    assert first.status_code == 202, first.text
    assert "idempotent-replayed" not in first.headers
    again = await tenant.http.post(tenant.url(f"/campaigns/{campaign}/runs"), headers=key)
    assert again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert [r["id"] for r in await _runs_of(tenant, campaign)] == [first.json()["run_id"]]
    # Without the header, or with a new key, each POST is a new run.
    fresh = await tenant.http.post(tenant.url(f"/campaigns/{campaign}/runs"), headers=_key())
    assert fresh.status_code == 202 and fresh.json()["run_id"] != first.json()["run_id"]
    assert len(await _runs_of(tenant, campaign)) == 2


async def test_concurrent_duplicates_run_once(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(customers=3)
    campaign = (await tenant.http.post(tenant.url("/campaigns"), json=CAMPAIGN)).json()["id"]
    key = _key()
    responses = await asyncio.gather(
        *(tenant.http.post(tenant.url(f"/campaigns/{campaign}/runs"), headers=key) for _ in range(8))
    )
    assert {r.status_code for r in responses} == {202}, [r.text for r in responses]
    assert len({r.json()["run_id"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 7
    assert len(await _runs_of(tenant, campaign)) == 1

    created = await asyncio.gather(
        *(tenant.http.post(tenant.url("/campaigns"), json=CAMPAIGN, headers=key) for _ in range(5))
    )
    # Same key, another route: refused for every one of them, whichever came first.
    assert {r.status_code for r in created} == {422}
    assert created[0].json()["errors"] == [MISMATCH]


async def test_the_same_key_with_a_different_body_is_422_naming_the_header(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(customers=0)
    key = _key()
    first = await tenant.http.post(tenant.url("/campaigns"), json=CAMPAIGN, headers=key)
    assert first.status_code == 201
    # The same request differently spelled (key order, whitespace) is the same request.
    respelled = await tenant.http.post(
        tenant.url("/campaigns"),
        content=b'{"variants": [{"template": "weekly_deals", "key": "A"}],  "channels": ["email"],'
        b' "segment": {}, "name": "Deals"}',
        headers={**key, "content-type": "application/json"},
    )
    assert respelled.status_code == 201 and respelled.json() == first.json()
    changed = await tenant.http.post(tenant.url("/campaigns"), json={**CAMPAIGN, "name": "Other"}, headers=key)
    assert changed.status_code == 422
    assert changed.json() == {"detail": MISMATCH, "errors": [MISMATCH]}
    assert len((await tenant.http.get(tenant.url("/campaigns"))).json()) == 1

    for bad in ("", "x" * 256):
        response = await tenant.http.post(tenant.url("/campaigns"), json=CAMPAIGN, headers={"Idempotency-Key": bad})
        assert response.status_code == 422
        assert response.json()["errors"] == ["header.Idempotency-Key: must be 1 to 255 characters"]


async def test_rejected_and_failed_requests_are_not_kept(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(customers=0)
    key = _key()
    invalid = await tenant.http.post(tenant.url("/campaigns"), json={**CAMPAIGN, "channels": []}, headers=key)
    assert invalid.status_code == 422
    # A 422 is not kept: the corrected request may reuse the key (it is then bound to it).
    fixed = await tenant.http.post(tenant.url("/campaigns"), json=CAMPAIGN, headers=key)
    assert fixed.status_code == 201
    # A 4xx outcome of a valid request is kept like a success.
    archived = fixed.json()["id"]
    assert (await tenant.http.delete(tenant.url(f"/campaigns/{archived}"))).status_code == 200
    run_key = _key()
    refused = await tenant.http.post(tenant.url(f"/campaigns/{archived}/runs"), headers=run_key)
    assert refused.status_code == 409
    replayed = await tenant.http.post(tenant.url(f"/campaigns/{archived}/runs"), headers=run_key)
    assert replayed.status_code == 409 and replayed.json() == refused.json()
    assert replayed.headers["idempotent-replayed"] == "true"


async def test_keys_are_scoped_per_api_key_and_tenant(make_tenant: MakeTenant) -> None:
    a = await make_tenant(customers=0)
    b = await make_tenant(customers=0)
    key = _key()
    first = await a.http.post(a.url("/suppressions"), json={"channel": "email", "address": "A@x.test"}, headers=key)
    other = await b.http.post(b.url("/suppressions"), json={"channel": "sms", "address": "+15550100"}, headers=key)
    assert first.status_code == 201 and other.status_code == 201
    assert first.json()["address"] == "a@x.test" and other.json()["channel"] == "sms"


async def test_admin_creations_are_idempotent_and_secrets_are_not_stored_in_clear(
    api_url: str, admin_key: str, pool: asyncpg.Pool
) -> None:
    slug = f"idem-{uuid.uuid4().hex[:8]}"
    config = (ROOT / "tenant_configs" / "freshmart.yaml").read_text().replace("slug: freshmart", f"slug: {slug}", 1)
    key = _key()
    async with httpx.AsyncClient(
        base_url=api_url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30
    ) as admin:
        yaml_headers = {**key, "content-type": "application/yaml"}
        made = await admin.post("/v1/tenants", content=config.encode(), headers=yaml_headers)
        assert made.status_code == 201, made.text
        again = await admin.post("/v1/tenants", content=config.encode(), headers=yaml_headers)
        assert again.status_code == 201 and again.json() == made.json()  # not 409 "already exists"

        key_key = _key()
        issued = await admin.post(f"/v1/tenants/{slug}/keys", params={"label": "ci"}, headers=key_key)
        reissued = await admin.post(f"/v1/tenants/{slug}/keys", params={"label": "ci"}, headers=key_key)
        assert issued.status_code == reissued.status_code == 201
        assert reissued.json() == issued.json()
        listed = (await admin.get(f"/v1/tenants/{slug}/keys")).json()
        assert [k["id"] for k in listed] == [issued.json()["id"]]
    # The stored response that holds the new key's secret does not hold it in clear.
    bodies = await pool.fetch("SELECT body FROM idempotency_keys WHERE key = $1", key_key["Idempotency-Key"])
    assert len(bodies) == 1
    assert issued.json()["key"].encode() not in bytes(bodies[0]["body"])


async def test_a_retried_test_send_emails_once(make_tenant: MakeTenant, workdir: Path) -> None:
    tenant = await make_tenant(customers=3)
    campaign = (await tenant.http.post(tenant.url("/campaigns"), json=CAMPAIGN)).json()["id"]
    seed = f"idem-{uuid.uuid4().hex[:8]}@example.com"
    key = _key()
    responses = await asyncio.gather(
        *(
            tenant.http.post(tenant.url(f"/campaigns/{campaign}:test-send"), json={"emails": [seed]}, headers=key)
            for _ in range(3)
        )
    )
    assert {r.status_code for r in responses} == {200}, [r.text for r in responses]
    assert all(r.json() == responses[0].json() for r in responses)
    assert [(m["email"], m["status"]) for m in responses[0].json()["messages"]] == [(seed, "sent")]
    # The one message is in the sink (the send completed before the first response), and only one.
    assert [m["To"] for m in read_outbox(workdir / "outbox", seed) if m["To"] == seed] == [seed]


async def test_a_key_is_free_again_after_24_hours_and_an_abandoned_claim_is_taken_over(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(customers=0)
    key = _key()
    first = await tenant.http.post(tenant.url("/campaigns"), json=CAMPAIGN, headers=key)
    assert first.status_code == 201
    expires_in = await pool.fetchval(
        "SELECT expires_at - created_at FROM idempotency_keys WHERE key = $1", key["Idempotency-Key"]
    )
    assert expires_in.total_seconds() == 24 * 3600
    # A day later (moved back in the table rather than waited for) the key starts afresh.
    await pool.execute(
        "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = $1", key["Idempotency-Key"]
    )
    later = await tenant.http.post(tenant.url("/campaigns"), json={**CAMPAIGN, "name": "Later"}, headers=key)
    assert later.status_code == 201 and later.json()["id"] != first.json()["id"]

    # A claim left in progress by a crashed API process blocks retries only until it times out.
    stuck = _key()
    await pool.execute(
        """INSERT INTO idempotency_keys (tenant_id, api_key_id, key, fingerprint, locked_until, expires_at)
           SELECT tenant_id, id, $2, 'from a crashed process', now() - interval '1 second', now() + interval '1 day'
           FROM api_keys WHERE tenant_id = $1""",
        tenant.slug,
        stuck["Idempotency-Key"],
    )
    taken_over = await tenant.http.post(tenant.url("/campaigns"), json=CAMPAIGN, headers=stuck)
    assert taken_over.status_code == 201, taken_over.text
