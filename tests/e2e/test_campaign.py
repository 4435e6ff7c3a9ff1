"""One campaign end to end through the HTTP API, Temporal, PostgreSQL and the SMTP sink."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
from temporalio.client import Client

from devstack.smtp_sink import read_outbox
from tests.helpers.runs import wait_for_run
from tests.helpers.tenants import MakeTenant


def _messages_for_run(outbox: Path, run_id: str) -> list[Any]:
    return [m for m in read_outbox(outbox, f":{run_id}:") if f":{run_id}:" in (m["X-Pennant-Idempotency-Key"] or "")]


async def test_every_member_of_the_audience_gets_exactly_one_rendered_email(
    make_tenant: MakeTenant, pool: asyncpg.Pool, workdir: Path, temporal_client: Client
) -> None:
    tenant = await make_tenant("freshmart", customers=300)
    body = {
        "name": "Gold weekly deals",
        "segment": {"attribute": "loyalty_tier", "op": "in", "value": ["gold", "platinum"]},
        "channels": ["email"],
        "variants": [
            {"key": "A", "template": "weekly_deals", "weight": 1},
            {"key": "B", "template": "weekly_deals", "weight": 1, "subject": "Deals for you, {{ first_name }}"},
        ],
    }
    created = await tenant.http.post(tenant.url("/campaigns"), json=body)
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]

    started = await tenant.http.post(tenant.url(f"/campaigns/{campaign_id}/runs"))
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    assert started.json()["workflow_id"] == f"run:{tenant.slug}:{campaign_id}:{run_id}"

    run = await wait_for_run(tenant, run_id)
    assert run["status"] == "completed", run

    # The audience, by a hand-written query: the segment, and consent for email.
    rows = await pool.fetch(
        """SELECT id, email, first_name, consent_email, locale FROM customers
           WHERE tenant_id = $1 AND loyalty_tier IN ('gold', 'platinum')""",
        tenant.slug,
    )
    consenting = {r["email"]: r for r in rows if r["consent_email"]}
    assert consenting, "the demo data should give this segment some consenting members"

    messages = _messages_for_run(workdir / "outbox", run_id)
    recipients = [m["To"] for m in messages]
    assert sorted(recipients) == sorted(consenting), "exactly one email per consenting member, nobody else"
    for message in messages:
        customer = consenting[message["To"]]
        subject = message["Subject"]
        if customer["locale"] == "fr-CA":
            assert customer["first_name"] in subject
        else:
            assert subject in (
                f"{customer['first_name']}, this week's fresh deals are here",
                f"Deals for you, {customer['first_name']}",
            )
        html = message.get_body(("html",)).get_content()
        assert customer["first_name"] in html and "FreshMart" in html and "Unsubscribe" in html
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message["Message-ID"].endswith(f"@{tenant.slug}.pennant>")

    counts = run["counts"]
    assert counts["planned"] == len(rows)
    assert counts["sent"] == len(consenting)
    assert counts["skipped"] == len(rows) - len(consenting)
    assert counts["failed"] == 0
    assert set(counts["by_variant"]) <= {"A", "B"}

    # Operators find the run by tenant in Temporal's visibility.
    found = [w async for w in temporal_client.list_workflows(f'TenantId = "{tenant.slug}"')]
    assert [w.id for w in found] == [started.json()["workflow_id"]]
