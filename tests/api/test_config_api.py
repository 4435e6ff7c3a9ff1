"""The configuration control plane over HTTP: versions, validation, isolation, live propagation."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml

from devstack.smtp_sink import read_outbox
from tests.helpers.runs import create_campaign, start_run, wait_for_run
from tests.helpers.stack import ROOT
from tests.helpers.tenants import MakeTenant, Tenant
from tests.helpers.waiting import until
from workers.tenant_workers import TenantWorkers


async def _current(tenant: Tenant) -> dict[str, Any]:
    response = await tenant.http.get(tenant.url("/config"))
    assert response.status_code == 200, response.text
    current: dict[str, Any] = response.json()
    return current


def _with_subject(config: dict[str, Any], subject: str) -> dict[str, Any]:
    config = copy.deepcopy(config)
    config["templates"]["weekly_deals"]["email"]["subject"] = subject
    return config


async def test_versions_are_immutable_listed_and_diffable(make_tenant: MakeTenant, pool: asyncpg.Pool) -> None:
    tenant = await make_tenant(customers=0)
    first = await _current(tenant)
    assert first["version"] == 1 and first["current"] and first["author"] == "test"

    changed = _with_subject(first["config"], "New deals, {{ first_name }}")
    saved = await tenant.http.put(tenant.url("/config"), json=changed)
    assert saved.status_code == 200, saved.text
    assert saved.json() == {"tenant": tenant.slug, "version": 2, "created": True}
    again = await tenant.http.put(tenant.url("/config"), json=changed)
    assert again.json() == {"tenant": tenant.slug, "version": 2, "created": False}, "no-op saves make no version"

    versions = (await tenant.http.get(tenant.url("/config/versions"))).json()
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[0]["author"] == f"tenant key ({tenant.slug})"
    assert versions[0]["checksum"] != versions[1]["checksum"]
    old = (await tenant.http.get(tenant.url("/config/versions/1"))).json()
    assert old["config"] == first["config"] and old["current"] is False
    assert (await tenant.http.get(tenant.url("/config/versions/9"))).status_code == 404

    diff = (await tenant.http.get(tenant.url("/config/diff"), params={"from": 1, "to": 2})).json()
    assert diff["changes"] == [
        {
            "path": "templates.weekly_deals.email.subject",
            "change": "changed",
            "old": first["config"]["templates"]["weekly_deals"]["email"]["subject"],
            "new": "New deals, {{ first_name }}",
        }
    ]
    assert "+      subject: New deals, {{ first_name }}" in diff["unified"]

    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await pool.execute("UPDATE tenant_config_versions SET author = 'mallory' WHERE tenant_id = $1", tenant.slug)
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await pool.execute("DELETE FROM tenant_config_versions WHERE tenant_id = $1", tenant.slug)


async def test_invalid_config_is_rejected_with_paths_and_stores_nothing(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(customers=0)
    config = (await _current(tenant))["config"]
    bad = _with_subject(config, "Hi {{ frist_name }}")
    bad["channels"]["sms"]["credentials"]["auth_token"] = "hunter2"
    bad["segments"]["lapsed"] = {"attribute": "loyality_tier"}
    expected = {
        "templates.weekly_deals.email.subject: unknown variable 'frist_name' (did you mean 'first_name'?)",
        "channels.sms.credentials.auth_token: a literal secret is not allowed;"
        " store it (PUT /v1/tenants/{tenant}/secrets/NAME) and write secret:NAME",
        "segments.lapsed.attribute: unknown attribute 'loyality_tier' (did you mean 'loyalty_tier'?)",
    }
    for path in ("/config", "/config:validate"):
        method = "PUT" if path == "/config" else "POST"
        response = await tenant.http.request(method, tenant.url(path), json=bad)
        assert response.status_code == 422, response.text
        assert set(response.json()["errors"]) == expected
    assert "hunter2" not in response.text.replace('"hunter2"', ""), "the literal secret is not echoed back"
    assert (await _current(tenant))["version"] == 1

    valid = await tenant.http.post(tenant.url("/config:validate"), json=config)
    assert valid.status_code == 200 and valid.json()["valid"] is True
    assert (await _current(tenant))["version"] == 1, "a dry run stores nothing"

    mismatch = await tenant.http.put(tenant.url("/config"), json={**config, "slug": "someone-else"})
    assert mismatch.status_code == 422
    assert mismatch.json()["errors"] == [
        f"slug: 'someone-else' does not match the tenant in the path ('{tenant.slug}')"
    ]

    text = yaml.safe_dump(config) + "brand: [oops\n"
    as_yaml = await tenant.http.put(tenant.url("/config"), content=text, headers={"Content-Type": "application/yaml"})
    assert as_yaml.status_code == 422
    assert "YAML syntax error at line" in as_yaml.json()["detail"]
    not_json = await tenant.http.put(tenant.url("/config"), content=b"{", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 422 and "invalid JSON at line 1" in not_json.json()["detail"]


async def test_a_tenant_key_cannot_read_or_edit_another_tenants_config(make_tenant: MakeTenant) -> None:
    a = await make_tenant(customers=0)
    b = await make_tenant(customers=0)
    b_config = (await _current(b))["config"]
    for method, path, body in [
        ("GET", "/config", None),
        ("PUT", "/config", b_config),
        ("POST", "/config:validate", b_config),
        ("GET", "/config/versions", None),
        ("GET", "/config/versions/1", None),
        ("GET", "/config/diff?from=1", None),
    ]:
        response = await a.http.request(method, b.url(path), json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["detail"] == f"tenant '{b.slug}' not found"
    assert (await _current(b))["version"] == 1
    listed = (await a.http.get("/v1/tenants")).json()
    assert [t["slug"] for t in listed] == [a.slug]


async def test_new_tenant_is_served_without_restart_and_removed_one_is_dropped(
    make_tenant: MakeTenant, api_url: str, admin_key: str, workers: TenantWorkers, pool: asyncpg.Pool
) -> None:
    from devstack.demo_data import seed_customers

    existing = await make_tenant(customers=0)
    config = yaml.safe_load((ROOT / "tenant_configs" / "wellcare-pharmacy.yaml").read_text())
    config["slug"] = slug = f"new-{existing.slug[-8:]}"
    del config["policies"]["quiet_hours"]  # the run below must not wait for the pharmacy's morning
    refused = await existing.http.post("/v1/tenants", json=config)
    assert refused.status_code == 403 and refused.json()["detail"] == "creating a tenant needs an admin key"

    admin = httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {admin_key}"})
    async with admin:
        created = await admin.post("/v1/tenants", json=config)
        assert created.status_code == 201, created.text
        assert created.json() == {"tenant": slug, "version": 1, "created": True}
        assert (await admin.post("/v1/tenants", json=config)).status_code == 409
        await until(lambda: slug in workers.tenants, within=10, what="the running workers to add the new queue")

        await seed_customers(pool, slug, 40)
        assert (await existing.http.post(f"/v1/tenants/{slug}/keys")).status_code == 404
        issued = await admin.post(f"/v1/tenants/{slug}/keys", params={"label": "crm"})
        assert issued.status_code == 201 and issued.json()["tenant"] == slug
        key = issued.json()["key"]
        http = httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {key}"})
        async with http:
            campaign = await http.post(
                f"/v1/tenants/{slug}/campaigns",
                json={"name": "Flu", "channels": ["email"], "variants": [{"key": "A", "template": "flu_season"}]},
            )
            assert campaign.status_code == 201, campaign.text
            run = await http.post(f"/v1/tenants/{slug}/campaigns/{campaign.json()['id']}/runs")
            finished = await wait_for_run(Tenant(slug, key, http), run.json()["run_id"])
            assert finished["status"] == "completed"

        removed = await admin.delete(f"/v1/tenants/{slug}")
        assert removed.status_code == 204
        await until(
            lambda: slug not in workers.tenants, within=10, what="the running workers to drop the removed queue"
        )
        assert (await admin.get(f"/v1/tenants/{slug}/config")).status_code == 404
        # Removal is removal: the key is revoked, and the slug cannot be created again (that
        # used to hand its keys, customers and history to whoever created it next).
        async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {key}"}) as old:
            assert (await old.get(f"/v1/tenants/{slug}/campaigns")).status_code == 401
        again = await admin.post("/v1/tenants", json=config)
        assert again.status_code == 409 and ":restore" in again.json()["detail"], again.text
        # An admin's restore brings back the data, never the keys.
        assert (await admin.post(f"/v1/tenants/{slug}:restore")).status_code == 204
        assert (await admin.post(f"/v1/tenants/{slug}:restore")).status_code == 404
        assert (await admin.get(f"/v1/tenants/{slug}/config")).status_code == 200
        async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {key}"}) as old:
            assert (await old.get(f"/v1/tenants/{slug}/campaigns")).status_code == 401


async def test_a_run_keeps_its_pinned_version_while_a_new_one_is_saved(
    make_tenant: MakeTenant, pool: asyncpg.Pool, workdir: Path
) -> None:
    tenant = await make_tenant(customers=30)
    v1 = await _current(tenant)
    send_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
    campaign_id = await create_campaign(tenant, name="Pinned", send_at=send_at.isoformat())
    first = await start_run(tenant, campaign_id)

    async def pinned_version_is(version: int) -> bool:
        return bool(await pool.fetchval("SELECT config_version FROM runs WHERE id = $1::uuid", first) == version)

    await until(lambda: pinned_version_is(1), within=10, what="the first run to pin its config version")
    assert (await tenant.http.get(tenant.url(f"/runs/{first}"))).json()["status"] == "scheduled"

    saved = await tenant.http.put(tenant.url("/config"), json=_with_subject(v1["config"], "V2 for {{ first_name }}"))
    assert saved.json()["version"] == 2
    done = await wait_for_run(tenant, first)
    assert done["status"] == "completed" and done["config_version"] == 1

    # The campaign's send time has passed by now, so the second run goes at once, on version 2.
    second = await start_run(tenant, campaign_id)
    assert (await wait_for_run(tenant, second))["config_version"] == 2

    subjects = {
        run_id: {
            m["Subject"]
            for m in read_outbox(workdir / "outbox", f":{run_id}:")
            if f":{run_id}:" in m["X-Pennant-Idempotency-Key"]
        }
        for run_id in (first, second)
    }
    assert subjects[first] and not any(s.startswith("V2 for") for s in subjects[first])
    english = {s for s in subjects[second] if not s.startswith(("V2 for",))}
    assert subjects[second] and all("aubaines" in s for s in english), "only fr-CA keeps its own subject"
