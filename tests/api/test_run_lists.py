"""GET runs (filters, newest first, opaque cursor) and GET run deliveries (keyset pages over
the ledger with filters), through the API over real runs."""

from __future__ import annotations

import asyncpg

from tests.helpers.runs import AB_VARIANTS, create_campaign, ledger_count, start_run, wait_for_run
from tests.helpers.tenants import MakeTenant


async def test_runs_are_listed_newest_first_with_filters_and_cursor(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(customers=30)
    first, second = await create_campaign(tenant), await create_campaign(tenant, name="Other")
    runs = []
    for campaign in (first, second, first):
        runs.append(await start_run(tenant, campaign))
        await wait_for_run(tenant, runs[-1])
    newest_first = list(reversed(runs))

    page = (await tenant.http.get(tenant.url("/runs"), params={"limit": 2})).json()
    assert [r["id"] for r in page["items"]] == newest_first[:2]
    assert page["items"][0]["status"] == "completed" and page["items"][0]["planned"] == 30
    rest = (await tenant.http.get(tenant.url("/runs"), params={"limit": 2, "cursor": page["next_cursor"]})).json()
    assert [r["id"] for r in rest["items"]] == newest_first[2:]
    assert rest["next_cursor"] is None

    by_campaign = (await tenant.http.get(tenant.url("/runs"), params={"campaign_id": first})).json()
    assert [r["id"] for r in by_campaign["items"]] == [runs[2], runs[0]]
    completed = (await tenant.http.get(tenant.url("/runs"), params={"status": "completed"})).json()
    assert len(completed["items"]) == 3
    running = (await tenant.http.get(tenant.url("/runs"), params={"status": "running"})).json()
    assert running == {"items": [], "next_cursor": None}

    bad_queries: list[tuple[dict[str, str | int], str]] = [
        ({"status": "done"}, "query.status: Input should be 'scheduled', 'running', 'paused', 'completed'"),
        ({"campaign_id": "nope"}, "query.campaign_id: Input should be a valid UUID"),
        ({"cursor": "garbage"}, "query.cursor: not a cursor from a previous page"),
        ({"limit": 0}, "query.limit: Input should be greater than or equal to 1"),
    ]
    for params, expected in bad_queries:
        response = await tenant.http.get(tenant.url("/runs"), params=params)
        assert response.status_code == 422, response.text
        assert any(expected in e for e in response.json()["errors"]), response.json()


async def test_deliveries_page_through_the_whole_ledger_with_filters(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(customers=230)
    campaign = await create_campaign(tenant, variants=AB_VARIANTS, holdout_percent=10)
    run_id = await start_run(tenant, campaign)
    assert (await wait_for_run(tenant, run_id))["status"] == "completed"

    seen: list[tuple[int, str]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 50, **({"cursor": cursor} if cursor else {})}
        page = (await tenant.http.get(tenant.url(f"/runs/{run_id}/deliveries"), params=params)).json()
        seen += [(d["customer_id"], d["channel"]) for d in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 5
    assert seen == sorted(set(seen)) and len(seen) == 230

    for filters, where in [
        ({"status": "sent"}, "status = 'sent'"),
        ({"status": "skipped", "reason": "no_consent"}, "status = 'skipped' AND reason = 'no_consent'"),
        ({"reason": "holdout"}, "reason = 'holdout'"),
        ({"variant": "B"}, "variant = 'B'"),
        ({"channel": "email", "variant": "A", "status": "sent"}, "variant = 'A' AND status = 'sent'"),
        ({"channel": "sms"}, "channel = 'sms'"),
    ]:
        page = (
            await tenant.http.get(tenant.url(f"/runs/{run_id}/deliveries"), params={**filters, "limit": 1000})
        ).json()
        assert len(page["items"]) == await ledger_count(pool, tenant.slug, run_id, where), filters
        assert all(all(d[k] == v for k, v in filters.items()) for d in page["items"])
    held_out = (await tenant.http.get(tenant.url(f"/runs/{run_id}/deliveries"), params={"reason": "holdout"})).json()
    assert held_out["items"] and all(d["variant"] == "holdout" for d in held_out["items"])
    sent = (await tenant.http.get(tenant.url(f"/runs/{run_id}/deliveries"), params={"status": "sent"})).json()
    assert all(d["provider_message_id"] and d["address"] for d in sent["items"])

    bad = await tenant.http.get(tenant.url(f"/runs/{run_id}/deliveries"), params={"channel": "fax"})
    assert bad.status_code == 422
    missing = await tenant.http.get(tenant.url("/runs/0b7c6f9e-8f5e-4a5b-9a43-5f0f5c1d2e3f/deliveries"))
    assert missing.status_code == 404
