"""`send_time: optimal` through the API: checked at save (422 naming the field), and previewed
with POST …/campaigns/{id}:send-times before any run: the chosen local hours match the habits
seeded for customers with enough history, and the others fall back."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import asyncpg

from tests.helpers.engagement_history import seed_hour_habits, set_time_zones
from tests.helpers.runs import EMAIL_CAMPAIGN
from tests.helpers.tenants import MakeTenant

ZONES = ["America/Chicago", "Europe/Paris", "Australia/Sydney"]


async def test_send_time_is_checked_when_a_campaign_is_saved(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(customers=0)
    url = tenant.url("/campaigns")
    shorthand = await tenant.http.post(url, json={**EMAIL_CAMPAIGN, "send_time": "optimal"})
    assert shorthand.status_code == 201, shorthand.text
    assert shorthand.json()["send_time"] == {"mode": "optimal", "within_hours": 24, "fallback_local_time": "10:00:00"}
    full = {"mode": "optimal", "within_hours": 12, "fallback_local_time": "09:30"}
    created = await tenant.http.post(url, json={**EMAIL_CAMPAIGN, "send_time": full})
    assert created.status_code == 201 and created.json()["send_time"]["within_hours"] == 12
    stored = await tenant.http.get(tenant.url(f"/campaigns/{created.json()['id']}"))
    assert stored.json()["send_time"]["fallback_local_time"] == "09:30:00"

    bad = [
        ({**full, "within_hours": 0}, "body.send_time.within_hours"),
        ({**full, "within_hours": 1000}, "body.send_time.within_hours"),
        ({**full, "fallback_local_time": "25:00"}, "body.send_time.fallback_local_time"),
        ({**full, "mode": "sometimes"}, "body.send_time.mode"),
        ({**full, "hour": 9}, "body.send_time.hour"),
        ("whenever", "body.send_time.mode"),
    ]
    for send_time, field in bad:
        response = await tenant.http.post(url, json={**EMAIL_CAMPAIGN, "send_time": send_time})
        assert response.status_code == 422, (send_time, response.text)
        assert any(e.startswith(field) for e in response.json()["errors"]), (send_time, response.json())
    both = await tenant.http.post(url, json={**EMAIL_CAMPAIGN, "send_time": "optimal", "local_send_time": "10:00"})
    assert both.status_code == 422
    assert both.json()["errors"] == [
        "send_time: cannot be combined with local_send_time (each recipient gets their own hour)"
    ]


async def test_send_times_preview_gives_customers_with_history_their_hour(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(customers=90)
    await set_time_zones(pool, tenant.slug, ZONES)
    # Customers 1-60 open at a known local hour between 07:00 and 20:00 (outside every quiet
    # window: freshmart's quiet hours are for SMS anyway); 61-75 opened once; 76-90 never did.
    habits = {c: (ZONES[(c - 1) % 3], 7 + (c * 5) % 14) for c in range(1, 61)}
    now = dt.datetime.now(dt.UTC)
    await seed_hour_habits(pool, tenant.slug, now, habits)
    once = {c: (ZONES[(c - 1) % 3], 12) for c in range(61, 76)}
    await seed_hour_habits(pool, tenant.slug, now, once, events=1, noise=0, machine=0)

    campaign = await tenant.http.post(
        tenant.url("/campaigns"),
        json={**EMAIL_CAMPAIGN, "send_time": {"mode": "optimal", "fallback_local_time": "09:30"}},
    )
    assert campaign.status_code == 201, campaign.text
    response = await tenant.http.post(tenant.url(f"/campaigns/{campaign.json()['id']}:send-times"))
    assert response.status_code == 200, response.text
    preview = response.json()
    assert preview["recipients"] == 90 and preview["optimised"] == 75 and preview["fallback"] == 15
    assert preview["fallback_local_time"] == "09:30" and preview["within_hours"] == 24
    assert sum(w["recipients"] for w in preview["waves"]) == 90
    assert [h["hour"] for h in preview["hours"]] == list(range(24))

    chosen = Counter({h["hour"]: h["recipients"] for h in preview["hours"] if h["recipients"]})
    expected = Counter(hour for _, hour in habits.values()) + Counter({12: len(once)})
    matched = sum(min(chosen[h], n) for h, n in expected.items())
    share = matched / sum(expected.values())
    print(
        f"\nsend-times preview: {matched}/{sum(expected.values())} chosen hours match the seeded habits ({share:.0%})"
    )
    assert share >= 0.9, (chosen, expected)

    # A different window or fallback can be previewed without changing the campaign.
    other = await tenant.http.post(
        tenant.url(f"/campaigns/{campaign.json()['id']}:send-times"),
        json={"send_time": {"within_hours": 2, "fallback_local_time": "08:00"}},
    )
    assert other.status_code == 200 and other.json()["within_hours"] == 2
    latest = now + dt.timedelta(hours=2, minutes=5)
    assert all(w["at"] is None or dt.datetime.fromisoformat(w["at"]) <= latest for w in other.json()["waves"])
    bad = await tenant.http.post(
        tenant.url(f"/campaigns/{campaign.json()['id']}:send-times"), json={"send_time": {"within_hours": -1}}
    )
    assert bad.status_code == 422 and bad.json()["errors"][0].startswith("body.send_time.within_hours")
