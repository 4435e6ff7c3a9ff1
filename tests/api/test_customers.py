"""Customers in, on the real API and database: upsert by external id (left-out fields kept,
attributes merged), invalid rows reported by index and field while valid rows are written,
ids allocated without collisions under concurrent writers, and `pennant customers import`
(a real subprocess) on CSV and JSON Lines files with bad lines."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg

from core.infra.settings import Settings
from tests.helpers.stack import ROOT
from tests.helpers.tenants import MakeTenant, Tenant

# A customer row with every field set.
ANA: dict[str, Any] = {
    "external_id": "crm-1",
    "email": "ana@example.com",
    "phone": "+1 (312) 555-0101",
    "first_name": "Ana",
    "last_name": "Silva",
    "locale": "pt-BR",
    "time_zone": "America/Sao_Paulo",
    "loyalty_tier": "gold",
    "consent": {"email": True, "sms": True},
    "attributes": {"store": "Downtown", "pets": 2},
}


async def _upsert(tenant: Tenant, rows: list[dict[str, Any]]) -> dict[str, Any]:
    response = await tenant.http.post(tenant.url("/customers"), json={"customers": rows})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _customers(pool: asyncpg.Pool, slug: str) -> dict[str, dict[str, Any]]:
    rows = await pool.fetch("SELECT * FROM customers WHERE tenant_id = $1", slug)
    return {r["external_id"]: dict(r) for r in rows}


async def test_upsert_inserts_then_a_partial_update_keeps_what_it_leaves_out(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(customers=3)
    first = await _upsert(tenant, [ANA, {"external_id": "crm-2"}])
    assert first == {"inserted": 2, "updated": 0, "rejected": 0, "errors": []}
    stored = await _customers(pool, tenant.slug)
    ana, bare = stored["crm-1"], stored["crm-2"]
    assert ana["phone"] == "+13125550101"  # punctuation removed: E.164 as stored
    assert (ana["consent_email"], ana["consent_sms"], ana["consent_push"]) == (True, True, False)
    # New customers follow the seeded ones, and a left-out field is the table default.
    assert sorted([ana["id"], bare["id"]]) == [4, 5]
    assert (bare["email"], bare["first_name"], bare["locale"], bare["time_zone"], bare["loyalty_tier"]) == (
        None,
        "",
        "en-US",
        "UTC",
        "none",
    )

    second = await _upsert(
        tenant,
        [
            {
                "external_id": "crm-1",
                "first_name": "Ana Maria",
                "phone": None,
                "consent": {"sms": False},
                "attributes": {"pets": None, "vip": True},
            }
        ],
    )
    assert second == {"inserted": 0, "updated": 1, "rejected": 0, "errors": []}
    after = (await _customers(pool, tenant.slug))["crm-1"]
    assert after["id"] == ana["id"]
    assert after["first_name"] == "Ana Maria"
    assert after["phone"] is None  # given as null: cleared
    # Left out: kept as they were.
    for column in ("email", "last_name", "locale", "time_zone", "loyalty_tier", "consent_email", "created_at"):
        assert after[column] == ana[column], column
    assert after["consent_sms"] is False
    # Attributes merge; a key set to null is removed.
    assert after["attributes"] == {"store": "Downtown", "vip": True}
    assert after["updated_at"] > ana["updated_at"]

    # The same external id twice in one request: the later row applies on top of the earlier.
    twice = await _upsert(
        tenant, [{"external_id": "crm-3", "first_name": "Cy"}, {"external_id": "crm-3", "last_name": "Do"}]
    )
    assert (twice["inserted"], twice["updated"]) == (1, 1)
    cy = (await _customers(pool, tenant.slug))["crm-3"]
    assert (cy["id"], cy["first_name"], cy["last_name"]) == (6, "Cy", "Do")


async def test_invalid_rows_are_reported_by_index_and_field_and_valid_rows_are_written(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(customers=0)
    body = await _upsert(
        tenant,
        [
            {"external_id": "ok-1", "email": "one@example.com"},
            {"external_id": "bad-email", "email": "not-an-address"},
            {"external_id": "bad-phone", "phone": "312-555"},
            {"external_id": "bad-zone", "time_zone": "Mars/Olympus", "locale": "english"},
            {"external_id": "bad-field", "nickname": "Al"},
            {"email": "no-id@example.com"},
            {"external_id": "bad-consent", "consent": {"email": "maybe"}},
            {"external_id": "ok-2", "consent": {"push": True}},
        ],
    )
    assert (body["inserted"], body["updated"], body["rejected"]) == (2, 0, 6)
    errors = body["errors"]
    for prefix in (
        "customers[1].email: 'not-an-address' is not an email address",
        "customers[2].phone: '312-555' is not an E.164 phone number",
        "customers[3].time_zone: unknown time zone 'Mars/Olympus'",
        "customers[3].locale: 'english' is not a locale",
        "customers[4].nickname: unknown field",
        "customers[5].external_id: Field required",
        "customers[6].consent.email:",
    ):
        assert any(e.startswith(prefix) for e in errors), (prefix, errors)
    assert set(await _customers(pool, tenant.slug)) == {"ok-1", "ok-2"}


async def test_a_malformed_body_is_422_and_names_the_field(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(customers=0)
    for body, field in (
        ({}, "body.customers"),
        ({"customers": []}, "body.customers"),
        ({"customers": "everyone"}, "body.customers"),
        ({"customers": [{"external_id": "x"}], "extra": 1}, "body.extra"),
    ):
        response = await tenant.http.post(tenant.url("/customers"), json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["errors"][0].startswith(field), response.json()


async def test_concurrent_upserts_of_new_customers_get_distinct_ids(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(customers=10)
    batches = [[{"external_id": f"w{w}-{i}"} for i in range(100)] for w in range(4)]
    bodies = await asyncio.gather(*(_upsert(tenant, rows) for rows in batches))
    assert [b["inserted"] for b in bodies] == [100, 100, 100, 100]
    ids = sorted(r["id"] for r in (await _customers(pool, tenant.slug)).values())
    assert ids == list(range(1, 411))


def _import(settings: Settings, path: Path, slug: str) -> subprocess.CompletedProcess[str]:
    """`pennant customers import` as its own process, on the session's database."""
    env = {**os.environ, "DATABASE_URL": settings.database_url or "", "OTEL_EXPORTER": "none"}
    return subprocess.run(
        [sys.executable, "-m", "devstack.cli", "customers", "import", str(path), "--tenant", slug, "--batch-size", "2"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_cli_imports_a_csv_file_and_reports_the_bad_line(
    make_tenant: MakeTenant, pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    tenant = await make_tenant(customers=0)
    path = tmp_path / "customers.csv"
    path.write_text(
        "external_id,email,first_name,consent_email,consent_sms,attributes.store,attributes\n"
        'c-1,c1@example.com,Chloé,yes,no,Downtown,"{""pets"": 2}"\n'
        "c-2,not-an-email,Bad,true,false,,\n"
        "c-3,,Ben,,,Airport,\n"
        "c-4,c4@example.com,Dee,maybe,,,\n"
        "c-5,c5@example.com,Eve,true,true,,\n",
        encoding="utf-8",
    )
    result = await asyncio.to_thread(_import, settings, path, tenant.slug)
    assert result.returncode == 1, result.stderr  # some rows were rejected
    assert "5 rows read, 3 customers inserted, 0 updated, 2 rows rejected" in result.stdout, result.stdout
    assert "line 3: email: 'not-an-email' is not an email address" in result.stderr, result.stderr
    assert "line 5: consent.email:" in result.stderr, result.stderr
    stored = await _customers(pool, tenant.slug)
    assert set(stored) == {"c-1", "c-3", "c-5"}
    assert stored["c-1"]["first_name"] == "Chloé"
    assert (stored["c-1"]["consent_email"], stored["c-1"]["consent_sms"]) == (True, False)
    assert stored["c-1"]["attributes"] == {"store": "Downtown", "pets": 2}
    # Empty cells are left out: defaults for a new customer.
    assert stored["c-3"]["email"] is None and stored["c-3"]["consent_email"] is False
    assert stored["c-3"]["attributes"] == {"store": "Airport"}


async def test_cli_imports_a_json_lines_file_and_reports_the_bad_lines(
    make_tenant: MakeTenant, pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    tenant = await make_tenant(customers=0)
    await _upsert(tenant, [{"external_id": "j-1", "first_name": "Old", "last_name": "Kept"}])
    lines = [
        json.dumps({"external_id": "j-1", "first_name": "New", "attributes": {"tier_points": 120}}),
        '{"external_id": "j-2", "email": ',  # cut short
        json.dumps({"external_id": "j-3", "phone": "+442079460000", "consent": {"sms": True}}),
        "",
        json.dumps({"external_id": "j-4", "time_zone": "Nowhere/Land"}),
        json.dumps({"external_id": "j-5", "locale": "fr-CA"}),
    ]
    path = tmp_path / "customers.jsonl"
    # Line 7 is not UTF-8 (a Latin-1 export, say).
    path.write_bytes(
        ("\n".join(lines) + "\n").encode() + '{"external_id": "j-7", "city": "Montréal"}\n'.encode("latin-1")
    )
    result = await asyncio.to_thread(_import, settings, path, tenant.slug)
    assert result.returncode == 1, result.stderr
    assert "6 rows read, 2 customers inserted, 1 updated, 3 rows rejected" in result.stdout, result.stdout
    assert "line 2: not valid JSON" in result.stderr, result.stderr
    assert "line 5: time_zone: unknown time zone 'Nowhere/Land'" in result.stderr, result.stderr
    assert "line 7: not valid UTF-8" in result.stderr, result.stderr
    stored = await _customers(pool, tenant.slug)
    assert set(stored) == {"j-1", "j-3", "j-5"}
    assert (stored["j-1"]["first_name"], stored["j-1"]["last_name"]) == ("New", "Kept")
    assert stored["j-1"]["attributes"] == {"tier_points": 120}
    assert stored["j-3"]["consent_sms"] is True and stored["j-5"]["locale"] == "fr-CA"
