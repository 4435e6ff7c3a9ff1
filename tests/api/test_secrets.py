"""Tenant secrets through the real API and workers: write-only, resolved only within the owning
tenant, bound to (tenant, name, key id), rotatable, never named by environment variable, and
never found in a log line, span, workflow history or ledger row."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

import asyncpg
import httpx
import pytest
from temporalio.client import Client

from core.infra.db import tenant_tx
from core.security.secrets import Keyring, SecretResolver, SecretUnavailable, legacy_references, rotate_rows
from core.tenants.config_schema import Experiments, Policies, TenantConfig
from core.tenants.config_store import save_config
from tests.helpers.runs import wait_for_run
from tests.helpers.stack import SPANS, TEST_KEYRING
from tests.helpers.tenants import MakeTenant, Tenant

EVERYONE: dict[str, Any] = {"policies": Policies(consent_required={"sms": False}), "experiments": Experiments()}


async def _config(tenant: Tenant) -> dict[str, Any]:
    config: dict[str, Any] = (await tenant.http.get(tenant.url("/config"))).json()["config"]
    return config


async def test_secrets_are_write_only_listed_by_fingerprint_and_deleted_only_when_unused(
    make_tenant: MakeTenant,
) -> None:
    tenant = await make_tenant(customers=0)
    created = await tenant.http.put(tenant.url("/secrets/PARTNER_TOKEN"), json={"value": "first-value"})
    assert created.status_code == 201, created.text
    first = created.json()
    assert set(first) == {"name", "fingerprint", "origin", "key_id", "created_at", "updated_at"}
    assert "first-value" not in created.text
    replaced = await tenant.http.put(tenant.url("/secrets/PARTNER_TOKEN"), json={"value": "second-value"})
    assert replaced.status_code == 200
    assert replaced.json()["fingerprint"] != first["fingerprint"]
    listed = await tenant.http.get(tenant.url("/secrets"))
    names = [s["name"] for s in listed.json()]
    assert "PARTNER_TOKEN" in names and "second-value" not in listed.text

    # The provider credentials the current config names cannot be deleted from under it.
    in_use = await tenant.http.delete(tenant.url("/secrets/SMS_AUTH_TOKEN"))
    assert in_use.status_code == 409 and "the current config (version 1)" in in_use.json()["detail"]
    assert (await tenant.http.delete(tenant.url("/secrets/PARTNER_TOKEN"))).status_code == 204
    assert (await tenant.http.delete(tenant.url("/secrets/PARTNER_TOKEN"))).status_code == 404

    generated = await tenant.http.post(tenant.url("/secrets/WEBHOOK_SIGNING:generate"))
    assert generated.status_code == 201 and generated.json()["origin"] == "generated"
    assert generated.json()["value"].startswith("whsec_") and len(generated.json()["value"]) > 40

    for name, body, field in (
        ("1BAD", {"value": "x"}, "name"),
        ("GOOD", {"value": ""}, "value"),
        ("GOOD", {"value": "x" * 9000}, "value"),
        ("GOOD", {"value": "é" * 5000}, "value"),  # 5,000 characters, 10,000 bytes
        ("GOOD", {}, "value"),
    ):
        bad = await tenant.http.put(tenant.url(f"/secrets/{name}"), json=body)
        assert bad.status_code == 422 and field in bad.text, (name, bad.text)


async def test_a_tenant_key_reaches_only_its_own_secrets(make_tenant: MakeTenant, api_url: str, admin_key: str) -> None:
    a, b = await make_tenant(customers=0), await make_tenant(customers=0)
    assert (await a.http.put(a.url("/secrets/ONLY_A"), json={"value": "a-secret"})).status_code == 201
    for method, path in (("GET", "/secrets"), ("PUT", "/secrets/ONLY_A"), ("DELETE", "/secrets/ONLY_A")):
        response = await b.http.request(method, a.url(path), json={"value": "b-overwrites"})
        assert response.status_code in (403, 404), (method, response.text)
    assert "ONLY_A" not in {s["name"] for s in (await b.http.get(b.url("/secrets"))).json()}
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {admin_key}"}) as admin:
        assert "ONLY_A" in {s["name"] for s in (await admin.get(a.url("/secrets"))).json()}


async def test_config_cannot_name_an_environment_variable(make_tenant: MakeTenant) -> None:
    """The attack: `api_key: env:ADMIN_KEY`, `auth_token: env:LINK_SIGNING_SECRET`, another tenant's
    `env:FRESHMART_SMS_TOKEN` — refused at save, naming each path."""
    tenant = await make_tenant(customers=0)
    config = await _config(tenant)
    config["channels"]["sms"]["credentials"] = {"account_sid": "env:LINK_SIGNING_SECRET", "auth_token": "env:ADMIN_KEY"}
    config["suggestions"] = {
        "provider": {"endpoint": "https://llm.example.com/v1", "api_key": "env:ADMIN_KEY", "model": "m"}
    }
    for method, path in (("PUT", "/config"), ("POST", "/config:validate")):
        response = await tenant.http.request(method, tenant.url(path), json=config)
        assert response.status_code == 422, response.text
        errors = response.json()["errors"]
        for field in (
            "channels.sms.credentials.account_sid",
            "channels.sms.credentials.auth_token",
            "suggestions.provider.api_key",
        ):
            assert any(e.startswith(f"{field}: 'env:") and "secret:NAME" in e for e in errors), (field, errors)
    assert (await tenant.http.get(tenant.url("/config"))).json()["version"] == 1


async def test_a_secret_row_copied_to_another_tenant_does_not_decrypt(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    a, b = await make_tenant(customers=0), await make_tenant(customers=0)
    assert (await a.http.put(a.url("/secrets/STOLEN"), json={"value": "a-only"})).status_code == 201
    async with tenant_tx(pool, a.slug) as conn:
        row = await conn.fetchrow(
            "SELECT key_id, nonce, ciphertext, fingerprint FROM tenant_secrets WHERE name = 'STOLEN'"
        )
    copies = ((b.slug, "STOLEN"), (a.slug, "RENAMED"))  # to another tenant; to another name
    for slug, name in copies:
        async with tenant_tx(pool, slug) as conn:
            await conn.execute(
                "INSERT INTO tenant_secrets (tenant_id, name, key_id, nonce, ciphertext, fingerprint)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                slug,
                name,
                *row.values(),
            )
    resolver = SecretResolver(pool, TEST_KEYRING)
    assert await resolver.resolve(a.slug, "secret:STOLEN", "x") == "a-only"
    for slug, name in copies:
        with pytest.raises(SecretUnavailable, match="does not decrypt for this tenant and name"):
            await resolver.resolve(slug, f"secret:{name}", "x")


async def test_rotation_keeps_old_rows_readable_and_rewrites_them_under_the_new_key(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(customers=0)
    await tenant.http.put(tenant.url("/secrets/ROTATED"), json={"value": "kept-through-rotation"})
    rotated = f"{Keyring.new_entry('test2')},{TEST_KEYRING}"
    assert await SecretResolver(pool, rotated).resolve(tenant.slug, "secret:ROTATED", "x") == "kept-through-rotation"
    assert await rotate_rows(pool, Keyring.parse(rotated), tenant.slug) >= 1
    async with tenant_tx(pool, tenant.slug) as conn:
        assert {r["key_id"] for r in await conn.fetch("SELECT key_id FROM tenant_secrets")} == {"test2"}
    assert await SecretResolver(pool, rotated).resolve(tenant.slug, "secret:ROTATED", "x") == "kept-through-rotation"
    with pytest.raises(SecretUnavailable, match="not in SECRETS_KEYRING"):
        await SecretResolver(pool, TEST_KEYRING).resolve(tenant.slug, "secret:ROTATED", "x")


async def test_a_canary_secret_is_in_no_log_span_history_or_ledger_row(
    make_tenant: MakeTenant, pool: asyncpg.Pool, temporal_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    canary = "canary-7f3a9c1e5b2d4f60"
    tenant = await make_tenant(customers=30, **EVERYONE)
    assert (await tenant.http.put(tenant.url("/secrets/SMS_AUTH_TOKEN"), json={"value": canary})).status_code == 200
    SPANS.clear()
    caplog.set_level(logging.DEBUG)
    body = {"name": "canary", "channels": ["sms"], "variants": [{"key": "A", "template": "weekly_deals"}]}
    campaign = (await tenant.http.post(tenant.url("/campaigns"), json=body)).json()["id"]
    started = (await tenant.http.post(tenant.url(f"/campaigns/{campaign}/runs"))).json()
    run = await wait_for_run(tenant, started["run_id"])
    assert run["status"] == "completed" and run["counts"]["sent"] > 0, run

    histories = []
    pending = [started["workflow_id"]]
    while pending:
        history = await temporal_client.get_workflow_handle(pending.pop()).fetch_history()
        histories.append(history.to_json())
        for event in history.events:
            if event.HasField("child_workflow_execution_started_event_attributes"):
                pending.append(event.child_workflow_execution_started_event_attributes.workflow_execution.workflow_id)
    async with tenant_tx(pool, tenant.slug) as conn:
        ledger = [str(dict(r)) for r in await conn.fetch("SELECT * FROM deliveries")]
        stored = [str(dict(r)) for r in await conn.fetch("SELECT * FROM tenant_secrets")]
    spans = [str(s.to_json()) for s in SPANS.get_finished_spans()]
    logs = [r.getMessage() + str(r.__dict__) for r in caplog.records]
    assert ledger and spans and histories
    for where, texts in (
        ("ledger", ledger),
        ("spans", spans),
        ("history", histories),
        ("logs", logs),
        ("rows", stored),
    ):
        assert not any(canary in t for t in texts), f"the canary secret appears in {where}"


async def test_the_cli_sets_lists_and_deletes_secrets_reading_the_value_from_stdin(
    make_tenant: MakeTenant, api_url: str
) -> None:
    tenant = await make_tenant(customers=0)
    env = {**os.environ, "PENNANT_API_URL": api_url, "PENNANT_API_KEY": tenant.key, "COLUMNS": "200"}

    async def pennant(*args: str, stdin: bytes = b"") -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "devstack.cli", "tenants", "secrets", *args, "--tenant", tenant.slug,
            env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(stdin), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode()

    status, out = await pennant("set", "CLI_TOKEN", stdin=b"from-stdin\n")
    assert status == 0 and "secret CLI_TOKEN stored" in out, out
    status, out = await pennant("list")
    assert status == 0 and "CLI_TOKEN" in out and "from-stdin" not in out, out
    status, out = await pennant("delete", "SMS_AUTH_TOKEN")
    assert status == 1 and "in use by the current config" in out, out
    status, out = await pennant("delete", "CLI_TOKEN")
    assert status == 0, out
    assert "CLI_TOKEN" not in {s["name"] for s in (await tenant.http.get(tenant.url("/secrets"))).json()}


async def test_the_audit_trail_names_who_changed_secrets_endpoints_and_keys_never_values(
    make_tenant: MakeTenant, api_url: str, admin_key: str
) -> None:
    tenant, other = await make_tenant(customers=0), await make_tenant(customers=0)
    await tenant.http.put(tenant.url("/secrets/AUDITED"), json={"value": "audited-value-123"})
    await tenant.http.delete(tenant.url("/secrets/AUDITED"))
    config = await _config(tenant)
    config["channels"]["sms"]["endpoint"] = "https://sms.example.net"
    config["channels"]["sms"]["credentials"]["auth_token"] = "secret:SMS_ACCOUNT_SID"
    assert (await tenant.http.put(tenant.url("/config"), json=config)).status_code == 200
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {admin_key}"}) as admin:
        issued = await admin.post(tenant.url("/keys"), params={"label": "ci"})
        assert issued.status_code == 201
        admin_view = (await admin.get(tenant.url("/audit"))).json()

    trail = (await tenant.http.get(tenant.url("/audit"))).json()
    assert trail == admin_view
    actions = [(e["action"], e["target"]) for e in trail]
    assert actions[:4] == [
        ("key.issue", issued.json()["id"]),
        ("config.save", "version 2"),
        ("secret.delete", "AUDITED"),
        ("secret.set", "AUDITED"),
    ], actions
    assert trail[1]["detail"]["boundary"] == ["channels.sms.credentials.auth_token", "channels.sms.endpoint"]
    assert trail[0]["actor"].startswith("admin key ") and trail[3]["actor"].startswith("tenant key ")
    assert "audited-value-123" not in str(trail) and issued.json()["key"] not in str(trail)
    only_secrets = (await tenant.http.get(tenant.url("/audit"), params={"action": "secret."})).json()
    assert {e["action"] for e in only_secrets} == {"secret.set", "secret.delete"}
    assert (await other.http.get(tenant.url("/audit"))).status_code in (403, 404)


async def test_secret_writes_are_limited_per_tenant_and_a_neighbour_is_unaffected(make_tenant: MakeTenant) -> None:
    busy, neighbour = await make_tenant(customers=0), await make_tenant(customers=0)
    # A burst of 30 is allowed at once; a loop is refused soon after (the allowance refills at
    # 30 a minute, so the loop gets through at most one more write per two seconds it runs).
    answers: list[int] = []
    while len(answers) < 60 and 429 not in answers:
        answers.append(
            (await busy.http.put(busy.url("/secrets/LOOPED"), json={"value": f"v{len(answers)}"})).status_code
        )
    assert answers[:30] == [201] + [200] * 29 and answers[-1] == 429, answers
    limited = await busy.http.put(busy.url("/secrets/LOOPED"), json={"value": "again"})
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert (await busy.http.get(busy.url("/secrets"))).status_code == 200, "reading is not limited"
    assert (await neighbour.http.put(neighbour.url("/secrets/MINE"), json={"value": "x"})).status_code == 201


async def test_the_upgrade_lists_configs_still_naming_env_variables(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    """A version stored before the secret store (env: references) still loads for history, is
    listed by `pennant tenants secrets legacy`, and a run pinned to it fails naming the path."""
    tenant = await make_tenant(customers=3, **EVERYONE)
    current = TenantConfig.model_validate(await _config(tenant))
    assert current.channels.sms is not None
    old_sms = current.channels.sms.model_copy(
        update={"credentials": {"account_sid": "env:PATH", "auth_token": "env:HOME"}}
    )
    old = current.model_copy(update={"channels": current.channels.model_copy(update={"sms": old_sms})})
    await save_config(pool, old, "before the secret store")  # as stored then: save_config checks no refs

    listed = [(what, paths) for slug, what, paths in await legacy_references(pool) if slug == tenant.slug]
    assert listed == [
        ("current config (version 2)", ["channels.sms.credentials.account_sid", "channels.sms.credentials.auth_token"])
    ]
    history = await tenant.http.get(tenant.url("/config/versions/2"))
    assert (
        history.status_code == 200
        and history.json()["config"]["channels"]["sms"]["credentials"]["auth_token"] == "env:HOME"
    )

    body = {"name": "legacy", "channels": ["sms"], "variants": [{"key": "A", "template": "weekly_deals"}]}
    campaign = (await tenant.http.post(tenant.url("/campaigns"), json=body)).json()["id"]
    started = (await tenant.http.post(tenant.url(f"/campaigns/{campaign}/runs"))).json()
    run = await wait_for_run(tenant, started["run_id"])
    assert run["status"] == "failed" and "channels.sms.credentials.account_sid" in run["error"], run
    assert "env: references were removed" in run["error"]
