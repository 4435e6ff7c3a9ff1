"""DKIM: every email a run sends is signed for the tenant's From domain, and the dev SMTP sink
verifies each signature with the key the loopback DNS server publishes; rotation keeps two
selectors live; the signer's header list and over-signing."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import asyncpg
import dkim
from aiosmtpd.controller import Controller

from core.deliverability.dkim import SIGNED_HEADERS, DkimKeys, DkimSigner, generate_key, secret_name, txt_value
from core.infra.settings import Settings
from core.security.secrets import SecretResolver
from core.tenants.config_store import get_config
from devstack.smtp_sink import read_outbox
from tests.helpers.runs import run_campaign
from tests.helpers.tenants import MakeTenant

MESSAGE = (
    b"From: Fresh <deals@freshmart.example.com>\r\nTo: ann@example.org\r\nSubject: Deals\r\n"
    b"Date: Tue, 08 Dec 2026 03:00:00 -0000\r\nMessage-ID: <a@b>\r\nList-Unsubscribe: <https://u.example/x>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nMIME-Version: 1.0\r\n\r\nHello  there \r\n\r\n"
)


def _signed() -> tuple[bytes, bytes]:
    pem, public_key = generate_key()
    signer = DkimSigner.from_pem("freshmart.example.com", "pntest", pem)
    return signer.sign(MESSAGE), txt_value(public_key).encode()


def _verify(message: bytes, record: bytes) -> bool:
    return bool(dkim.verify(message, dnsfunc=lambda name, timeout=5: record))


def test_signature_is_relaxed_and_over_signs_from_subject_and_unsubscribe() -> None:
    signed, record = _signed()
    assert _verify(signed, record)
    header = re.sub(rb"\s+", b"", signed.split(b"\r\n\r\n")[0])
    assert b"c=relaxed/relaxed" in header and b"a=rsa-sha256" in header
    assert b";h=" + b":".join(SIGNED_HEADERS) + b";" in header
    # relaxed: whitespace changes in transit still verify
    assert _verify(signed.replace(b"Subject: Deals", b"Subject:   Deals"), record)
    # a changed subject, or a second From/Subject/List-Unsubscribe added, does not
    assert not _verify(signed.replace(b"Subject: Deals", b"Subject: Dealz"), record)
    for extra in (b"From: evil@example.net\r\n", b"Subject: other\r\n", b"List-Unsubscribe: <https://evil/>\r\n"):
        head, _, body = signed.partition(b"\r\n\r\n")
        assert not _verify(head + b"\r\n" + extra.rstrip(b"\r\n") + b"\r\n\r\n" + body, record), extra


def _results(outbox: list[Any]) -> list[str]:
    return [str(m["Authentication-Results"]) for m in outbox]


async def test_every_email_of_a_run_is_signed_and_verifies(
    make_tenant: MakeTenant, smtp_sink: Controller, pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant("freshmart", customers=30)
    before = dict(smtp_sink.handler.dkim_results)
    run = await run_campaign(tenant)
    assert run["counts"]["sent"] > 0
    mail = read_outbox(smtp_sink.handler.outbox, f"@{tenant.slug}.pennant>")
    assert len(mail) == run["counts"]["sent"]
    async with pool.acquire() as conn:
        selector = await conn.fetchval(
            "SELECT selector FROM dkim_keys WHERE tenant_id = $1 AND state = 'active'", tenant.slug
        )
    for result in _results(mail):
        assert result.startswith("pennant-sink; dkim=pass"), result
        assert f"header.d=freshmart.example.com header.s={selector}" in result, result
    # the session so far: no message unsigned or failing verification
    after = smtp_sink.handler.dkim_results
    assert after["pass"] - before.get("pass", 0) >= len(mail)
    assert after["fail"] == 0 and after["none"] == 0, dict(after)


async def test_rotation_keeps_two_selectors_live(make_tenant: MakeTenant, smtp_sink: Controller) -> None:
    tenant = await make_tenant("freshmart", customers=5)
    path = tenant.url("/sending-domains/freshmart.example.com")
    first = (await tenant.http.get(path)).json()
    [old] = [r for r in first["records"] if r["purpose"] == "dkim"]
    assert old["state"] == "active"

    step1 = await tenant.http.post(path + ":rotate-dkim")
    assert step1.status_code == 200, step1.text
    states = {r["selector"]: r["state"] for r in step1.json()["records"] if r["purpose"] == "dkim"}
    assert states[old["selector"]] == "active" and sorted(states.values()) == ["active", "next"]
    check = (await tenant.http.post(path + ":check")).json()
    assert all(r["status"] == "present" for r in check["records"] if r["purpose"] == "dkim"), check

    step2 = (await tenant.http.post(path + ":rotate-dkim")).json()
    states = {r["selector"]: r["state"] for r in step2["records"] if r["purpose"] == "dkim"}
    assert states[old["selector"]] == "retiring"
    [new] = [s for s, state in states.items() if state == "active"]

    # Each batch reads the active key: the run after the rotation signs with the new one.
    run = await run_campaign(tenant)
    mail = read_outbox(smtp_sink.handler.outbox, f"@{tenant.slug}.pennant>")
    assert len(mail) == run["counts"]["sent"] > 0
    assert all(f"dkim=pass header.d=freshmart.example.com header.s={new}" in r for r in _results(mail)), _results(mail)


async def test_concurrent_first_sends_agree_on_one_key_and_a_deleted_secret_is_replaced(
    make_tenant: MakeTenant, app_pool: asyncpg.Pool, settings: Settings
) -> None:
    tenant = await make_tenant("wellcare-pharmacy", customers=0)
    found = await get_config(app_pool, tenant.slug)
    assert found is not None
    config = found[1]
    resolver = SecretResolver(app_pool, settings.secrets_keyring)
    signers = await asyncio.gather(*(DkimKeys(app_pool, resolver).signer(config) for _ in range(5)))
    assert len({s.selector for s in signers}) == 1
    [first] = {s.selector for s in signers}

    # The tenant deletes the platform's key from its secret store: the next signer makes a new one.
    deleted = await tenant.http.delete(tenant.url(f"/secrets/{secret_name(first, 'wellcare.example.com')}"))
    assert deleted.status_code == 204, deleted.text
    resolver.forget(tenant.slug)
    replaced = await DkimKeys(app_pool, resolver).signer(config)
    assert replaced.selector != first
    keys = (await tenant.http.get(tenant.url("/sending-domains/wellcare.example.com"))).json()["records"]
    assert [r["selector"] for r in keys if r["purpose"] == "dkim"] == [replaced.selector]
