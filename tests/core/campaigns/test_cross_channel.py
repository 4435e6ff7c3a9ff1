"""Cross-channel campaigns on the real stack: `delivery: first_available` gives each recipient
exactly the first listed channel they can receive (address, consent, suppression, caps), and a
`fallback` is checked when the campaign is saved. The fallback's timed follow-up runs on the
time-skipping server (tests/workflows/test_fallback.py)."""

from __future__ import annotations

from typing import Any

import asyncpg

from core.campaigns.cross_channel import NOT_CHOSEN
from core.tenants.config_schema import Engagement, Experiments, FrequencyCap, Policies
from tests.helpers.runs import assert_each_recipient_once, run_campaign
from tests.helpers.tenants import MakeTenant

# sms before email; sms capped at one a day. No quiet hours: the run goes now.
CAPS = [FrequencyCap(channel="sms", max_messages=1, window_hours=24)]
POLICIES: dict[str, Any] = {"policies": Policies(frequency_caps=CAPS), "experiments": Experiments()}
# customer id % 6 → (phone, sms consent, email consent, sms suppressed, an sms sent earlier today)
GROUPS = {
    0: (True, True, True, False, False),  # sms
    1: (False, True, True, False, False),  # no phone → email
    2: (True, False, True, False, False),  # no sms consent → email
    3: (True, True, True, True, False),  # phone suppressed → email
    4: (True, True, True, False, True),  # sms cap reached → email
    5: (False, False, False, False, False),  # nothing receivable
}
EXPECTED: dict[int, dict[str, tuple[str, str | None]]] = {
    0: {"sms": ("sent", None), "email": ("skipped", NOT_CHOSEN)},
    1: {"sms": ("skipped", "no_address"), "email": ("sent", None)},
    2: {"sms": ("skipped", "no_consent"), "email": ("sent", None)},
    3: {"sms": ("skipped", "suppressed"), "email": ("sent", None)},
    4: {"sms": ("skipped", "capped"), "email": ("sent", None)},
    5: {"sms": ("skipped", "no_address"), "email": ("skipped", "no_consent")},
}


async def _set_group(pool: asyncpg.Pool, slug: str, group: int, **columns: Any) -> None:
    sets = ", ".join(f"{name} = ${i + 3}" for i, name in enumerate(columns))
    await pool.execute(
        f"UPDATE customers SET {sets} WHERE tenant_id = $1 AND id % 6 = $2", slug, group, *columns.values()
    )


async def test_first_available_sends_each_recipient_only_the_first_channel_they_can_receive(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(customers=60, engagement=Engagement(machine_seconds=0), **POLICIES)
    slug = tenant.slug
    await pool.execute(
        """UPDATE customers SET phone = '+1555010' || lpad(id::text, 4, '0'), consent_sms = false,
                                email = 'c' || id || '@example.com', consent_email = true
           WHERE tenant_id = $1""",
        slug,
    )
    # An sms earlier today (a real run) for group 4, which only they consent to at that time.
    await _set_group(pool, slug, 4, consent_sms=True)
    earlier = await run_campaign(tenant, name="Earlier sms", channels=["sms"])
    assert earlier["counts"]["sent"] == 10, earlier["counts"]
    for group, (phone, sms_ok, email_ok, _, _) in GROUPS.items():
        await _set_group(pool, slug, group, consent_sms=sms_ok, consent_email=email_ok)
        if not phone:
            await _set_group(pool, slug, group, phone=None)
    for row in await pool.fetch("SELECT phone FROM customers WHERE tenant_id = $1 AND id % 6 = 3", slug):
        added = await tenant.http.post(tenant.url("/suppressions"), json={"channel": "sms", "address": row["phone"]})
        assert added.status_code == 201, added.text

    run = await run_campaign(tenant, name="First available", channels=["sms", "email"], delivery="first_available")

    assert await assert_each_recipient_once(pool, slug, run["id"], channels=2) == 60
    rows = await pool.fetch(
        "SELECT customer_id, channel, status, reason FROM deliveries WHERE tenant_id = $1 AND run_id = $2::uuid",
        slug,
        run["id"],
    )
    got: dict[int, dict[str, tuple[str, str | None]]] = {}
    for r in rows:
        got.setdefault(r["customer_id"], {})[r["channel"]] = (r["status"], r["reason"])
    wrong = {c: ledger for c, ledger in got.items() if ledger != EXPECTED[c % 6]}
    assert not wrong, wrong
    counts = run["counts"]
    assert counts["sent"] == 50 and counts["failed"] == 0
    assert counts["by_channel"]["sms"]["sent"] == 10 and counts["by_channel"]["email"]["sent"] == 40
    assert counts["skipped_by_reason"] == {
        NOT_CHOSEN: 10,
        "no_address": 20,
        "no_consent": 20,
        "suppressed": 10,
        "capped": 10,
    }, counts


async def test_without_delivery_every_listed_channel_is_sent_as_before(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(customers=12, **POLICIES)
    await pool.execute(
        "UPDATE customers SET phone = '+1555020' || lpad(id::text, 4, '0'), consent_sms = true, consent_email = true,"
        " email = 'd' || id || '@example.com' WHERE tenant_id = $1",
        tenant.slug,
    )
    run = await run_campaign(tenant, name="Both", channels=["sms", "email"])
    assert run["counts"]["by_channel"]["sms"]["sent"] == 12 and run["counts"]["by_channel"]["email"]["sent"] == 12


async def test_a_fallback_is_checked_when_the_campaign_is_saved(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(customers=0, **POLICIES)
    base: dict[str, Any] = {
        "name": "Checked",
        "channels": ["email"],
        "variants": [{"key": "A", "template": "weekly_deals"}],
    }

    def fallback(channel: str = "sms", unless: str = "opened", after: str | int = "2h") -> dict[str, Any]:
        return {"fallback": {"channel": channel, "unless": unless, "after": after}}

    win_back = {"variants": [{"key": "A", "template": "win_back"}]}
    cases: list[tuple[dict[str, Any], str]] = [
        (fallback("email"), "fallback.channel: 'email' is already"),
        (fallback("push"), "fallback.channel: channel 'push' is not enabled"),
        (fallback(after=0), "fallback.after: must be more than 0"),
        (fallback(unless="read"), "fallback.unless"),
        ({**fallback(), "tracking": False}, "fallback.unless: needs tracking"),
        ({"channels": ["sms"], **fallback("email")}, "fallback.unless: 'opened' needs email"),
        (
            {**win_back, **fallback(unless="clicked", after=3600)},
            "variants[0].template: template 'win_back' has no sms",
        ),
        ({"delivery": "some"}, "delivery"),
    ]
    for change, message in cases:
        response = await tenant.http.post(tenant.url("/campaigns"), json={**base, **change})
        assert response.status_code == 422, (change, response.text)
        assert message in response.text, (change, response.text)
    good = {**base, "fallback": {"channel": "sms", "unless": "clicked", "after": "48h"}}
    created = await tenant.http.post(tenant.url("/campaigns"), json=good)
    assert created.status_code == 201, created.text
    assert created.json()["fallback"] == {"channel": "sms", "unless": "clicked", "after": "48h"}
