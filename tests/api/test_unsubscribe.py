"""Unsubscribe: signed links in every email, a confirmation page, RFC 8058 one-click POST,
and the next run respects the change. Plus the suppression list API."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import asyncpg
import httpx

from core.common import signed_links as links
from core.infra.settings import Settings
from devstack.smtp_sink import read_outbox
from tests.helpers.runs import run_campaign
from tests.helpers.tenants import MakeTenant, Tenant


async def _run(tenant: Tenant) -> str:
    return str((await run_campaign(tenant, name="Unsub"))["id"])


async def test_one_click_unsubscribe_from_a_real_email_is_respected_by_the_next_run(
    make_tenant: MakeTenant, api_url: str, pool: asyncpg.Pool, workdir: Path
) -> None:
    tenant = await make_tenant(customers=40)
    first = await _run(tenant)
    message = next(
        m for m in read_outbox(workdir / "outbox", f":{first}:") if f":{first}:" in m["X-Pennant-Idempotency-Key"]
    )
    link = message["List-Unsubscribe"].strip("<>")
    path = urlparse(link).path
    assert path.startswith("/u/")
    customer = await pool.fetchrow(
        "SELECT id, email FROM customers WHERE tenant_id = $1 AND email = $2", tenant.slug, message["To"]
    )
    assert customer is not None

    async with httpx.AsyncClient(base_url=api_url) as public:
        page = await public.get(path)
        assert page.status_code == 200 and "Unsubscribe from FreshMart" in page.text
        assert await pool.fetchval(
            "SELECT consent_email FROM customers WHERE tenant_id = $1 AND id = $2", tenant.slug, customer["id"]
        ), "viewing the page must not unsubscribe (link scanners open links)"
        # What a mail client sends for List-Unsubscribe-Post: List-Unsubscribe=One-Click.
        done = await public.post(
            path, content=b"List-Unsubscribe=One-Click", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert done.status_code == 200 and "You are unsubscribed" in done.text

    assert not await pool.fetchval(
        "SELECT consent_email FROM customers WHERE tenant_id = $1 AND id = $2", tenant.slug, customer["id"]
    )
    listed = (await tenant.http.get(tenant.url("/suppressions"))).json()
    assert [(s["channel"], s["address"], s["reason"]) for s in listed] == [
        ("email", customer["email"].lower(), "unsubscribed")
    ]

    second = await _run(tenant)
    row = await pool.fetchrow(
        "SELECT status, reason FROM deliveries WHERE tenant_id = $1 AND run_id = $2::uuid AND customer_id = $3",
        tenant.slug,
        second,
        customer["id"],
    )
    assert row is not None
    assert (row["status"], row["reason"]) in {("skipped", "no_consent"), ("skipped", "suppressed")}


async def test_forged_expired_and_garbled_tokens_are_refused(
    make_tenant: MakeTenant, api_url: str, settings: Settings
) -> None:
    tenant = await make_tenant(customers=3)
    secret = settings.link_signing_secret
    assert secret
    good = links.sign({"t": tenant.slug, "c": 1, "ch": "email"}, secret)
    forged = links.sign({"t": tenant.slug, "c": 2, "ch": "email"}, "not-the-secret")
    # Another customer's payload under this token's signature.
    other_body = links.sign({"t": tenant.slug, "c": 2, "ch": "email"}, secret).split(".")[0]
    tampered = f"{other_body}.{good.split('.')[1]}"
    expired = links.sign({"t": tenant.slug, "c": 1, "ch": "email"}, secret, ttl_seconds=-1)
    async with httpx.AsyncClient(base_url=api_url) as public:
        assert (await public.get(f"/u/{good}")).status_code == 200
        for token in (forged, tampered, expired, "garbage", "a.b"):
            for method in ("GET", "POST"):
                response = await public.request(method, f"/u/{token}")
                assert response.status_code == 400, (token, method)
                assert "not valid" in response.text


async def test_suppression_list_api(make_tenant: MakeTenant) -> None:
    a = await make_tenant(customers=0)
    b = await make_tenant(customers=0)
    added = await a.http.post(a.url("/suppressions"), json={"channel": "email", "address": " Someone@Example.COM "})
    assert added.status_code == 201 and added.json()["address"] == "someone@example.com"
    bad = await a.http.post(a.url("/suppressions"), json={"channel": "fax", "address": "x"})
    assert bad.status_code == 422 and bad.json()["errors"][0].startswith("body.channel:")
    assert [s["address"] for s in (await a.http.get(a.url("/suppressions"))).json()] == ["someone@example.com"]
    assert (await b.http.get(b.url("/suppressions"))).json() == [], "lists are per tenant"
    assert (await b.http.get(a.url("/suppressions"))).status_code == 404
    assert (await a.http.delete(a.url("/suppressions/email/SOMEONE@example.com"))).status_code == 204
    assert (await a.http.delete(a.url("/suppressions/email/someone@example.com"))).status_code == 404
