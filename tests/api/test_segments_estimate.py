"""segments:estimate selects exactly the customers a hand-written SQL query selects, for every
operator of the segment language, on seeded demo customers and purchases; bad segments are a
422 naming the path."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from tests.helpers.tenants import Tenant, api_tenant, store_tenant

CUSTOMERS = 3000
# A fixed instant for the timestamp operators, well inside the seeded created_at range.
CUTOFF = (dt.datetime.now(dt.UTC) - dt.timedelta(days=400)).replace(microsecond=0)


def _purchases(cond: str) -> str:
    return f"FROM purchases p WHERE p.tenant_id = c.tenant_id AND p.customer_id = c.id AND {cond}"


def _exists(cond: str) -> str:
    return f"EXISTS (SELECT 1 {_purchases(cond)})"


def _count(cond: str) -> str:
    return f"(SELECT count(*) {_purchases(cond)})"


def _spend(cond: str) -> str:
    return f"(SELECT coalesce(sum(p.amount), 0) {_purchases(cond)})"


def _within(days: int) -> str:
    return f"p.purchased_at >= now() - interval '{days} days'"


# (case id, segment, the same audience as a hand-written WHERE over customers c)
CASES: list[tuple[str, Any, str]] = [
    ("eq", {"attribute": "loyalty_tier", "op": "eq", "value": "gold"}, "c.loyalty_tier = 'gold'"),
    ("eq-default-op", {"attribute": "country", "value": "CA"}, "c.country = 'CA'"),
    ("ne", {"attribute": "loyalty_tier", "op": "ne", "value": "none"}, "c.loyalty_tier <> 'none'"),
    ("ne-nullable", {"attribute": "attributes.favorite_category", "op": "ne", "value": "dairy"},
     "c.attributes ->> 'favorite_category' IS NULL OR c.attributes ->> 'favorite_category' <> 'dairy'"),
    ("in", {"attribute": "loyalty_tier", "op": "in", "value": ["gold", "platinum"]},
     "c.loyalty_tier IN ('gold', 'platinum')"),
    ("not_in", {"attribute": "country", "op": "not_in", "value": ["US", "CA"]},
     "c.country IS NULL OR c.country NOT IN ('US', 'CA')"),
    ("gt-date", {"attribute": "birth_date", "op": "gt", "value": "1990-01-01"}, "c.birth_date > DATE '1990-01-01'"),
    ("gte-date", {"attribute": "birth_date", "op": "gte", "value": "1985-03-15"},
     "c.birth_date >= DATE '1985-03-15'"),
    ("lt-date", {"attribute": "birth_date", "op": "lt", "value": "1970-06-01"}, "c.birth_date < DATE '1970-06-01'"),
    ("lte-date", {"attribute": "birth_date", "op": "lte", "value": "1975-12-31"},
     "c.birth_date <= DATE '1975-12-31'"),
    ("gte-timestamp", {"attribute": "created_at", "op": "gte", "value": CUTOFF.isoformat()},
     f"c.created_at >= TIMESTAMPTZ '{CUTOFF.isoformat()}'"),
    ("lt-timestamp", {"attribute": "created_at", "op": "lt", "value": CUTOFF.isoformat()},
     f"c.created_at < TIMESTAMPTZ '{CUTOFF.isoformat()}'"),
    ("exists", {"attribute": "phone", "op": "exists"}, "c.phone IS NOT NULL AND c.phone <> ''"),
    ("exists-false", {"attribute": "phone", "op": "exists", "value": False}, "c.phone IS NULL OR c.phone = ''"),
    ("contains", {"attribute": "email", "op": "contains", "value": "EXAMPLE.ORG"},
     "lower(c.email) LIKE '%example.org%'"),
    ("contains-name", {"attribute": "first_name", "op": "contains", "value": "an"},
     "lower(c.first_name) LIKE '%an%'"),
    ("locale", {"attribute": "locale", "op": "eq", "value": "fr-CA"}, "c.locale = 'fr-CA'"),
    ("time_zone", {"attribute": "time_zone", "op": "in", "value": ["America/Chicago", "America/New_York"]},
     "c.time_zone IN ('America/Chicago', 'America/New_York')"),
    ("bool-attribute", {"attribute": "consent_push", "op": "eq", "value": True}, "c.consent_push"),
    ("custom-number-gte", {"attribute": "attributes.household_size", "op": "gte", "value": 3},
     "(c.attributes ->> 'household_size')::numeric >= 3"),
    ("custom-number-in", {"attribute": "attributes.household_size", "op": "in", "value": [1, 5]},
     "(c.attributes ->> 'household_size')::numeric IN (1, 5)"),
    ("custom-text-eq", {"attribute": "attributes.favorite_category", "op": "eq", "value": "dairy"},
     "c.attributes ->> 'favorite_category' = 'dairy'"),
    ("custom-text-not_in",
     {"attribute": "attributes.favorite_category", "op": "not_in", "value": ["dairy", "produce"]},
     "c.attributes ->> 'favorite_category' IS NULL"
     " OR c.attributes ->> 'favorite_category' NOT IN ('dairy', 'produce')"),
    ("custom-exists", {"attribute": "attributes.favorite_category", "op": "exists"},
     "coalesce(c.attributes ->> 'favorite_category', '') <> ''"),
    ("consent-email", {"consent": "email"}, "c.consent_email"),
    ("consent-sms", {"consent": "sms"}, "c.consent_sms"),
    ("consent-push", {"consent": "push"}, "c.consent_push"),
    ("purchased-category-window", {"purchased": {"category": "dairy", "within_days": 30}},
     _exists("p.category = 'dairy' AND " + _within(30))),
    ("purchased-sku", {"purchased": {"sku": "PET-1001"}}, _exists("p.sku = 'PET-1001'")),
    ("no_purchase_in_days", {"no_purchase_in_days": 60},
     "NOT " + _exists(_within(60))),
    ("purchase_count", {"purchase_count": {"op": "gte", "value": 8, "within_days": 365}},
     _count(_within(365)) + " >= 8"),
    ("purchase_count-category", {"purchase_count": {"op": "eq", "value": 2, "category": "snacks"}},
     _count("p.category = 'snacks'") + " = 2"),
    ("total_spend", {"total_spend": {"op": "gt", "value": 150, "within_days": 180}},
     _spend(_within(180)) + " > 150"),
    ("total_spend-lt-includes-none", {"total_spend": {"op": "lt", "value": 20, "within_days": 90}},
     _spend(_within(90)) + " < 20"),
    ("all", {"all": [{"consent": "email"}, {"attribute": "loyalty_tier", "op": "in", "value": ["gold", "silver"]}]},
     "c.consent_email AND c.loyalty_tier IN ('gold', 'silver')"),
    ("any", {"any": [{"consent": "sms"}, {"attribute": "country", "value": "GB"}]},
     "c.consent_sms OR c.country = 'GB'"),
    ("not", {"not": {"consent": "email"}}, "NOT c.consent_email"),
    ("nested",
     {"all": [{"any": [{"consent": "email"}, {"consent": "push"}]},
              {"not": {"any": [{"attribute": "loyalty_tier", "value": "none"}, {"no_purchase_in_days": 90}]}}]},
     "(c.consent_email OR c.consent_push) AND NOT (c.loyalty_tier = 'none' OR NOT " + _exists(_within(90)) + ")"),
    ("empty-all-is-everyone", {"all": []}, "TRUE"),
    ("empty-any-is-nobody", {"any": []}, "FALSE"),
    ("named", "gold_members", "c.loyalty_tier IN ('gold', 'platinum')"),
    ("named-with-purchases", "dairy_lovers",
     _exists("p.category = 'dairy' AND " + _within(90)) + " AND c.consent_email"),
    ("named-inside-tree", {"all": [{"segment": "lapsed"}, {"not": {"segment": "gold_members"}}]},
     "NOT " + _exists(_within(60)) + " AND NOT c.loyalty_tier IN ('gold', 'platinum')"),
]  # fmt: skip


@pytest.fixture(scope="module")
async def seeded(pool: asyncpg.Pool, api_url: str) -> AsyncIterator[Tenant]:
    """One tenant with demo customers and purchases, shared by every case (read-only)."""
    slug = await store_tenant(pool, "segments-", customers=CUSTOMERS)
    async with api_tenant(pool, api_url, slug) as tenant:
        yield tenant


@pytest.mark.parametrize(("segment", "where"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_estimate_selects_what_hand_written_sql_selects(
    seeded: Tenant, pool: asyncpg.Pool, segment: Any, where: str
) -> None:
    expected = [
        r["id"]
        for r in await pool.fetch(
            f"SELECT c.id FROM customers c WHERE c.tenant_id = $1 AND ({where}) ORDER BY c.id", seeded.slug
        )
    ]
    response = await seeded.http.post(seeded.url("/segments:estimate"), json={"segment": segment})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == len(expected)
    assert [c["id"] for c in body["sample"]] == expected[:10]
    if where not in ("TRUE", "FALSE"):
        # Each case splits the customers, so a wrong operator cannot pass by selecting all or none.
        assert 0 < len(expected) < CUSTOMERS, f"case selects {len(expected)} of {CUSTOMERS}: make it discriminate"


async def test_estimate_samples_name_and_email(seeded: Tenant, pool: asyncpg.Pool) -> None:
    body = (await seeded.http.post(seeded.url("/segments:estimate"), json={"segment": {}})).json()
    assert body["count"] == CUSTOMERS
    first = await pool.fetchrow(
        "SELECT id, first_name, email FROM customers WHERE tenant_id = $1 ORDER BY id LIMIT 1", seeded.slug
    )
    assert first is not None
    assert body["sample"][0] == dict(first)
    assert len(body["sample"]) == 10


@pytest.mark.parametrize(
    ("segment", "expected"),
    [
        ({"attribute": "loyality_tier", "value": "gold"},
         "segment.attribute: unknown attribute 'loyality_tier' (did you mean 'loyalty_tier'?)"),
        ({"attribute": "loyalty_tier", "op": "greater", "value": "gold"}, "segment.op: unknown operator 'greater'"),
        ({"all": [{"consent": "email"}, {"any": [{"consent": "fax"}]}]},
         "segment.all[1].any[0].consent: unknown channel 'fax'"),
        ({"attribute": "birth_date", "op": "gt", "value": "yesterday"},
         "segment.value: not a valid date: 'yesterday'"),
        ({"attribute": "loyalty_tier", "op": "in", "value": []}, "segment.value: 'in' needs a non-empty list"),
        ({"purchase_count": {"op": "gte", "value": "three"}}, "segment.purchase_count.value: must be a number"),
        ({"purchased": {"category": "dairy", "within_days": 0}},
         "segment.purchased.within_days: must be a positive integer"),
        ({"colour": "red"}, "segment.colour: unknown segment key 'colour'"),
        ("no_such_segment", "segment.segment: unknown segment 'no_such_segment'"),
        ({"all": [{"segment": "nope"}]}, "segment.all[0].segment: unknown segment 'nope'"),
    ],
)  # fmt: skip
async def test_bad_segments_are_422_with_the_path(seeded: Tenant, segment: Any, expected: str) -> None:
    response = await seeded.http.post(seeded.url("/segments:estimate"), json={"segment": segment})
    assert response.status_code == 422, response.text
    assert any(expected in error for error in response.json()["errors"]), response.json()


async def test_estimate_needs_a_segment(seeded: Tenant) -> None:
    response = await seeded.http.post(seeded.url("/segments:estimate"), json={})
    assert response.status_code == 422
    assert response.json()["errors"] == ["body.segment: Field required"]
