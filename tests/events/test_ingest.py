"""The Segment-compatible tracking API against the real API and PostgreSQL: the real
`segment-analytics-python` library pointed at it delivers track, identify and alias calls that
land as the customer's events and traits; source keys write events and nothing else; a bad
event is rejected by index and field while the rest are kept; messageId dedupe; clock skew;
gzip bodies and a gzip bomb refused early; the per-tenant rate limit answers 429 before the
body is read."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import gzip
import json
import os
import random
import sys
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from segment.analytics import Client as SegmentClient

from core.events.stream import ensure_partitions
from core.tenants.config_schema import Events
from devstack.events_cli import demo_visit
from tests.helpers.tenants import Tenant, api_tenant, store_tenant


@pytest.fixture
async def tenant(pool: asyncpg.Pool, api_url: str) -> AsyncIterator[Tenant]:
    """A fresh tenant with no customers, reached through the API with a tenant key."""
    slug = await store_tenant(pool, "events-", customers=0)
    async with api_tenant(pool, api_url, slug) as made:
        yield made


async def _source(tenant: Tenant, label: str = "web shop") -> dict[str, Any]:
    response = await tenant.http.post(tenant.url("/sources"), json={"label": label})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert body["key"].startswith(f"sk_{tenant.slug}_")
    return body


def _basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


async def _post(api_url: str, key: str, path: str, body: Any, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await http.post(path, content=content, headers={**_basic(key), **headers})


async def test_the_segment_library_delivers_track_identify_and_alias(
    tenant: Tenant, api_url: str, pool: asyncpg.Pool
) -> None:
    source = await _source(tenant)
    errors: list[Any] = []
    client = SegmentClient(
        source["key"], host=api_url, sync_mode=True, gzip=True, on_error=lambda e, batch: errors.append(e)
    )

    def send() -> None:
        # Anonymous browsing first, then the shopper signs in (alias), is identified, and buys.
        client.track(anonymous_id="anon-1", event="Product Viewed", properties={"sku": "DRY-1", "price": 3.5})
        client.alias(previous_id="anon-1", user_id="shopper-1")
        client.identify(
            "shopper-1",
            traits={"email": "Ann@Example.com", "firstName": "Ann", "address": {"city": "Austin", "country": "us"},
                    "plan": "gold", "phone": "not a phone", "consent": {"email": True}},
            context={"ip": "203.0.113.9", "timezone": "America/Chicago", "locale": "en-US"},
        )  # fmt: skip
        order = {"order_id": "o-1", "revenue": 12.5, "total": 14, "currency": "usd",
                 "products": [{"sku": "DRY-1", "category": "dairy", "price": 12.5, "quantity": 1}]}  # fmt: skip
        client.track("shopper-1", "Order Completed", properties=order)
        client.track("shopper-1", "Order Completed", properties=order)  # a second copy: one conversion
        client.flush()

    await asyncio.to_thread(send)
    assert errors == []

    profile = await tenant.http.get(tenant.url("/customers/shopper-1"))
    assert profile.status_code == 200, profile.text
    found = profile.json()
    assert (found["email"], found["first_name"], found["city"], found["country"]) == (
        "Ann@Example.com", "Ann", "Austin", "US",
    )  # fmt: skip
    assert found["time_zone"] == "America/Chicago" and found["consent"]["email"] is True
    assert found["attributes"] == {"plan": "gold"}
    assert found["phone"] is None  # the bad trait was dropped, the rest kept

    events = await tenant.http.get(tenant.url("/customers/shopper-1/events"), params={"limit": 2})
    assert events.status_code == 200, events.text
    page = events.json()
    assert [e["type"] for e in page["events"]] == ["track", "track"]
    assert page["events"][0]["event"] == "Order Completed" and page["next_cursor"]
    rest = await tenant.http.get(tenant.url("/customers/shopper-1/events"), params={"cursor": page["next_cursor"]})
    older = rest.json()["events"]
    # The anonymous view joined the customer when the alias linked its anonymous id.
    assert [(e["type"], e["event"]) for e in older] == [
        ("identify", None),
        ("alias", None),
        ("track", "Product Viewed"),
    ]
    for event in page["events"] + older:
        assert "ip" not in event["context"]
    same = await tenant.http.get(tenant.url("/customers:lookup"), params={"external_id": "shopper-1"})
    assert same.json()["id"] == found["id"]

    # Order Completed is a conversion, unique by order_id, worth its revenue; its product is a purchase.
    conversions = await pool.fetch(
        "SELECT event_id, type, amount, currency, sku, category FROM customer_events WHERE tenant_id = $1",
        tenant.slug,
    )
    assert [tuple(r) for r in conversions] == [("order:o-1", "purchase", Decimal("12.50"), "USD", "DRY-1", "dairy")]
    bought = await tenant.http.post(
        tenant.url("/segments:estimate"), json={"segment": {"purchased": {"category": "dairy", "within_days": 1}}}
    )
    assert bought.json()["count"] == 1, bought.text


async def test_a_bad_event_is_rejected_by_index_and_field_and_the_rest_are_kept(
    tenant: Tenant, api_url: str, pool: asyncpg.Pool
) -> None:
    key = (await _source(tenant))["key"]
    now = dt.datetime.now(dt.UTC)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    batch = {
        "sentAt": (now + dt.timedelta(hours=2)).isoformat(),  # the client's clock is 2 h fast
        "batch": [
            {"type": "track", "event": "Cart Viewed", "userId": "u-1", "messageId": ids[0],
             "timestamp": (now + dt.timedelta(hours=1)).isoformat(), "context": {"ip": "198.51.100.1"}},
            {"type": "track", "userId": "u-1"},  # no event name
            {"type": "launch", "userId": "u-1"},
            {"type": "page", "name": "Home", "anonymousId": "a-9", "messageId": ids[1]},
            {"type": "track", "event": "Future", "userId": "u-1",
             "timestamp": (now + dt.timedelta(days=3)).isoformat()},  # sentAt absent per event: batch's used
            {"type": "track", "event": "Cart Viewed", "userId": "u-1", "messageId": ids[0]},  # repeat in body
            {"type": "track", "event": "No id", "userId": "u-1", "properties": {"k": "\u0000"}},
            {"type": "screen", "name": "Cart", "userId": "u-1", "messageId": ids[2]},
            {"type": "track", "event": "NaN", "userId": "u-1", "properties": {"price": float("nan")}},
            {"type": "track", "event": "Deep", "userId": "u-1", "context": {"d": json.loads("[" * 400 + "]" * 400)}},
            {"type": "track", "event": "Odd", "userId": "u-1", "properties": {"s": "\ud800"}},
        ],
    }  # fmt: skip
    response = await _post(api_url, key, "/v1/batch", gzip.compress(json.dumps(batch).encode()),
                           **{"Content-Encoding": "gzip", "Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["accepted"] == 3, body
    assert [(p["index"], p["field"]) for p in body["rejected"]] == [
        (1, "event"), (2, "type"), (4, "timestamp"), (6, "properties"), (8, "properties"), (9, "context"),
        (10, "properties"),
    ], body  # fmt: skip
    stored = await pool.fetch(
        'SELECT message_id, type, "timestamp", context FROM events WHERE tenant_id = $1', tenant.slug
    )
    by_id = {r["message_id"]: r for r in stored}
    assert set(by_id) == set(ids)
    # receivedAt - (sentAt - timestamp): an hour before receipt, whatever the client's clock said.
    skewed = by_id[ids[0]]["timestamp"]
    assert dt.timedelta(minutes=55) < now - skewed < dt.timedelta(minutes=65), skewed
    assert "ip" not in by_id[ids[0]]["context"]

    # The same messageIds again (a retry): nothing stored twice, answered 200.
    again = await _post(api_url, key, "/v1/batch", batch)
    assert again.json()["duplicates"] == 3 and again.json()["accepted"] == 0, again.text
    assert await pool.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant.slug) == 3
    # Past the 7-day window the id is new again.
    await pool.execute(
        "UPDATE event_dedupe SET received_at = now() - interval '8 days' WHERE tenant_id = $1 AND message_id = $2",
        tenant.slug,
        ids[2],
    )
    later = await _post(api_url, key, "/v1/batch", batch)
    assert (later.json()["accepted"], later.json()["duplicates"]) == (1, 2), later.text

    # One call, the short path, writeKey in a text/plain body (analytics.js in a page).
    single = {"writeKey": key, "event": "Clicked", "anonymousId": "a-9", "messageId": str(uuid.uuid4())}
    async with httpx.AsyncClient(base_url=api_url) as http:
        answer = await http.post("/v1/t", content=json.dumps(single), headers={"Content-Type": "text/plain"})
        assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text
        not_json = await http.post("/v1/batch", content=b"{", headers=_basic(key))
        assert not_json.status_code == 400


async def test_source_keys_write_events_only_and_revocation_holds_at_once(tenant: Tenant, api_url: str) -> None:
    source = await _source(tenant)
    async with httpx.AsyncClient(base_url=api_url) as http:
        for headers in (_basic(source["key"]), {"Authorization": f"Bearer {source['key']}"}):
            elsewhere = await http.get(tenant.url("/sources"), headers=headers)
            assert elsewhere.status_code == 401, elsewhere.text
    call = {"type": "track", "event": "Viewed", "userId": "u-2"}
    tenant_key = await _post(api_url, tenant.key, "/v1/track", call)  # a tenant API key works too
    assert tenant_key.status_code == 200 and tenant_key.json()["accepted"] == 1, tenant_key.text
    listed = (await tenant.http.get(tenant.url("/sources"))).json()
    assert [s["id"] for s in listed] == [source["id"]] and "key" not in listed[0]
    revoked = await tenant.http.delete(tenant.url(f"/sources/{source['id']}"))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    refused = await _post(api_url, source["key"], "/v1/track", call)
    assert refused.status_code == 401, refused.text
    unknown = await _post(api_url, "sk_nobody_" + "x" * 32, "/v1/track", call)
    assert unknown.status_code == 401


async def test_a_gzip_bomb_is_refused_after_500_kb_of_output(tenant: Tenant, api_url: str) -> None:
    key = (await _source(tenant))["key"]
    # 50 MB of zeros compress to about 50 KB; the answer comes after inflating 500 KB of it.
    bomb = gzip.compress(b'{"batch": [' + b" " * 50_000_000 + b"]}")
    assert len(bomb) < 100_000
    response = await _post(api_url, key, "/v1/batch", bomb, **{"Content-Encoding": "gzip"})
    assert response.status_code == 400 and "500 KB" in response.text, response.text


async def test_a_tenant_over_its_event_rate_gets_429_with_retry_after(pool: asyncpg.Pool, api_url: str) -> None:
    slug = await store_tenant(pool, "events-", customers=0, events=Events(rate_per_second=1, burst_seconds=5))
    async with api_tenant(pool, api_url, slug) as tenant:
        key = (await _source(tenant))["key"]
        batch = {"batch": [{"type": "track", "event": "E", "userId": f"u-{i}"} for i in range(20)]}
        first = await _post(api_url, key, "/v1/batch", batch)
        assert first.status_code == 200, first.text  # admitted: the bucket was not in debt
        second = await _post(api_url, key, "/v1/batch", batch)
        assert second.status_code == 429 and int(second.headers["retry-after"]) >= 1, second.text
        # Another tenant is not slowed by this one's debt.
        other_slug = await store_tenant(pool, "events-", customers=0)
        async with api_tenant(pool, api_url, other_slug) as other:
            fine = await _post(api_url, other.key, "/v1/batch", batch)
            assert fine.status_code == 200, fine.text


async def test_segments_select_customers_by_what_they_performed(tenant: Tenant, api_url: str) -> None:
    key = (await _source(tenant))["key"]
    now = dt.datetime.now(dt.UTC)
    old = (now - dt.timedelta(days=20)).isoformat()
    calls: list[dict[str, Any]] = [{"type": "identify", "userId": f"p-{i}"} for i in range(4)]
    calls += [
        {"type": "track", "userId": "p-0", "event": "Product Viewed", "properties": {"category": "dairy", "price": 4}},
        {"type": "track", "userId": "p-0", "event": "Product Viewed", "properties": {"category": "dairy", "price": 6}},
        {"type": "track", "userId": "p-0", "event": "Product Viewed", "properties": {"category": "dairy", "price": 9}},
        {"type": "track", "userId": "p-1", "event": "Product Viewed", "properties": {"category": "bakery"}},
        {"type": "track", "userId": "p-2", "event": "Product Viewed", "properties": {"category": "dairy"},
         "timestamp": old},
        {"type": "track", "userId": "p-3", "event": "Product Viewed", "properties": {"price": "cheap"}},
    ]  # fmt: skip
    response = await _post(api_url, key, "/v1/batch", {"batch": calls})
    assert response.json()["accepted"] == len(calls), response.text

    async def count(performed: dict[str, Any]) -> int:
        answer = await tenant.http.post(tenant.url("/segments:estimate"), json={"segment": {"performed": performed}})
        assert answer.status_code == 200, answer.text
        return int(answer.json()["count"])

    assert await count({"event": "Product Viewed"}) == 4
    assert await count({"event": "Product Viewed", "within_days": 7}) == 3
    assert await count({"event": "Product Viewed", "where": {"category": "dairy"}, "within_days": 7}) == 1
    assert await count({"event": "Product Viewed", "where": {"category": "dairy"}}) == 2
    assert await count({"event": "Product Viewed", "where": {"price": {"op": "gte", "value": 5}}}) == 1
    assert await count({"event": "Product Viewed", "count": {"op": "gte", "value": 3}}) == 1
    assert await count({"event": "Product Viewed", "where": {"category": {"op": "in", "value": ["bakery", "x"]}}}) == 1
    assert await count({"event": "Order Completed"}) == 0
    bad = await tenant.http.post(
        tenant.url("/segments:estimate"),
        json={"segment": {"performed": {"event": "Product Viewed", "within_days": 0, "count": {"value": -1}}}},
    )
    assert bad.status_code == 422 and "segment.performed.within_days" in bad.text, bad.text


async def test_pennant_events_send_posts_a_jsonl_file_and_the_stream_follows_it(
    tenant: Tenant, api_url: str, tmp_path: Path
) -> None:
    calls = tmp_path / "calls.jsonl"
    lines = [
        {"type": "track", "event": "Refill Requested", "userId": "rx-1", "messageId": "cli-1"},
        {"type": "track", "userId": "rx-1"},
        {"type": "page", "name": "Pharmacy", "anonymousId": "a-cli"},
    ]
    calls.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    env = {**os.environ, "PENNANT_API_URL": api_url, "PENNANT_API_KEY": tenant.key}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "devstack.cli", "events", "send", str(calls), "--tenant", tenant.slug,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 1, err.decode()  # one call was rejected
    assert "2 accepted, 0 duplicates, 1 rejected" in out.decode() and "call 2: event" in out.decode(), out.decode()
    stream = (await tenant.http.get(tenant.url("/stream"))).json()
    assert [e["event"] for e in stream["events"]] == ["Refill Requested", "Pharmacy"]
    later = (await tenant.http.get(tenant.url("/stream"), params={"after_id": stream["last_id"]})).json()
    assert later["events"] == [] and later["last_id"] == stream["last_id"]


async def test_identities_bind_once_and_customers_are_never_merged(tenant: Tenant, api_url: str) -> None:
    key = (await _source(tenant))["key"]
    first = await _post(api_url, key, "/v1/batch", {"batch": [
        {"type": "identify", "userId": "c-1", "anonymousId": "anon-x", "traits": {"birthday": "1990-04-01T00:00:00Z"}},
        {"type": "identify", "userId": "c-2", "traits": {"email": "not-an-address", "lastName": "Lee"}},
        {"type": "track", "event": "Before Signup", "userId": "c-3"},  # no customer c-3 yet
    ]})  # fmt: skip
    assert first.status_code == 200 and first.json()["accepted"] == 3, first.text
    assert [(p["index"], p["field"]) for p in first.json()["dropped"]] == [(1, "traits.email")], first.text
    two = (await tenant.http.get(tenant.url("/customers/c-2"))).json()
    assert (two["email"], two["last_name"]) == (None, "Lee")
    assert (await tenant.http.get(tenant.url("/customers/c-1"))).json()["birth_date"] == "1990-04-01"

    second = await _post(api_url, key, "/v1/batch", {"batch": [
        {"type": "alias", "previousId": "c-1", "userId": "c-2"},      # two customers: refused
        {"type": "alias", "previousId": "anon-x", "userId": "c-2"},   # anon-x is c-1's: refused
        {"type": "identify", "userId": "c-2", "anonymousId": "anon-x"},  # stored, not linked
        {"type": "identify", "userId": "c-3"},                          # c-3's earlier track joins it
        {"type": "track", "event": "Browsed", "anonymousId": "anon-x"},  # c-1's
    ]})  # fmt: skip
    body = second.json()
    assert [(p["index"], p["field"]) for p in body["rejected"]] == [(0, "previousId"), (1, "previousId")], body
    assert "not merged" in body["rejected"][0]["reason"]
    assert [(p["index"], p["field"]) for p in body["dropped"]] == [(2, "anonymousId")], body
    c1 = (await tenant.http.get(tenant.url("/customers/c-1/events"))).json()["events"]
    assert [e["event"] for e in c1] == ["Browsed", None]
    c3 = (await tenant.http.get(tenant.url("/customers/c-3/events"))).json()["events"]
    assert [e["event"] for e in c3] == [None, "Before Signup"]


async def test_browser_calls_only_from_the_origins_the_tenant_lists(pool: asyncpg.Pool, api_url: str) -> None:
    slug = await store_tenant(pool, "events-", customers=0, events=Events(cors_origins=["https://shop.example.com"]))
    async with api_tenant(pool, api_url, slug) as tenant, httpx.AsyncClient(base_url=api_url) as http:
        key = (await _source(tenant))["key"]
        preflight = await http.options("/v1/t", headers={"Origin": "https://shop.example.com"})
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "https://shop.example.com"
        call = json.dumps({"writeKey": key, "event": "Viewed", "anonymousId": "a-1"})
        plain = {"Content-Type": "text/plain"}
        listed = await http.post("/v1/t", content=call, headers={**plain, "Origin": "https://shop.example.com"})
        assert listed.status_code == 200 and listed.headers["access-control-allow-origin"] == "https://shop.example.com"
        other = await http.post("/v1/t", content=call, headers={**plain, "Origin": "https://evil.example"})
        assert other.status_code == 403 and "cors_origins" in other.text


async def test_the_demo_stream_is_accepted_whole(tenant: Tenant, api_url: str) -> None:
    rng = random.Random(7)
    calls = [call for _ in range(30) for call in demo_visit("wellcare", rng, 50)]
    answer = await _post(api_url, tenant.key, "/v1/batch", {"batch": calls})
    body = answer.json()
    assert (body["accepted"], body["rejected"], body["dropped"]) == (len(calls), [], []), body


async def test_a_body_of_many_bad_events_is_answered_with_the_first_thousand(tenant: Tenant, api_url: str) -> None:
    answer = await _post(api_url, tenant.key, "/v1/batch", {"batch": [{}] * 50_000})
    body = answer.json()
    assert answer.status_code == 200 and body["rejected_count"] == 50_000 and len(body["rejected"]) == 1000, answer.text


async def test_events_past_the_tenants_retention_are_expired(
    pool: asyncpg.Pool, app_pool: asyncpg.Pool, api_url: str
) -> None:
    slug = await store_tenant(pool, "events-", customers=0, events=Events(retention_days=30))
    async with api_tenant(pool, api_url, slug) as tenant:
        now = dt.datetime.now(dt.UTC)
        calls = [
            {"type": "track", "event": name, "userId": "r-1", "timestamp": (now - dt.timedelta(days=days)).isoformat()}
            for name, days in (("Old", 45), ("Recent", 10))
        ]
        assert (await _post(api_url, tenant.key, "/v1/batch", {"batch": calls})).json()["accepted"] == 2
        await ensure_partitions(app_pool)  # the upkeep the API runs every few hours, as the app role
        left = await pool.fetch("SELECT event FROM events WHERE tenant_id = $1", slug)
        assert [r["event"] for r in left] == ["Recent"]


async def test_wrong_write_keys_are_slowed_like_wrong_api_keys_and_a_genuine_one_still_writes(
    tenant: Tenant, api_url: str
) -> None:
    """The tracking lane answers in front of the app, behind the same shared failure guard."""
    address = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(2, 254)}"
    good = (await _source(tenant))["key"]
    event = {"type": "track", "userId": "guarded-1", "event": "Product Viewed"}
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(base_url=api_url, transport=transport, timeout=30) as site:
        answers = []
        for i in range(40):
            answers.append((await site.post("/v1/track", json=event, headers=_basic(f"sk_guess_{i}"))).status_code)
            if answers[-1] == 429:
                break
        assert answers[-1] == 429 and set(answers[:-1]) == {401}, answers
        # From the blocked address, a genuine write key is looked up and served.
        assert (await site.post("/v1/track", json=event, headers=_basic(good))).status_code == 200
        assert (await site.post("/v1/track", json=event, headers=_basic("sk_guess_again"))).status_code == 429
