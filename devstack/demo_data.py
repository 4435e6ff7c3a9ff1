"""Idempotent demo data: realistic customers and their purchases for one tenant.

Every customer is generated from a seed derived from (tenant seed, customer id) alone, so a
tenant gets the same people on every machine and seeding 100 and later 10,000 yields the
same first 100. Emails use the reserved example.* domains (RFC 2606), so no mail can reach a
person; North American and British phone numbers sit in the ranges reserved for fiction.
Mexico has no such range, so Mexican numbers are random: send SMS only to the simulator.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import random
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import accumulate
from typing import Any

import asyncpg
from faker import Faker

from core.infra.db import tenant_tx

# Generate and stage in chunks so memory stays flat for very large tenants.
_CHUNK = 5_000
_PURCHASE_WINDOW_DAYS = 400
_MAX_PURCHASES = 15  # purchase id = customer_id * 100 + n, so n must stay below 100

CUSTOMER_COLUMNS = (
    "tenant_id", "id", "external_id", "email", "phone", "push_token", "first_name",
    "last_name", "locale", "time_zone", "loyalty_tier", "city", "country", "birth_date",
    "consent_email", "consent_sms", "consent_push", "attributes", "created_at",
)  # fmt: skip
PURCHASE_COLUMNS = (
    "tenant_id", "id", "customer_id", "sku", "product_name", "category", "amount",
    "purchased_at",
)  # fmt: skip


@dataclass(frozen=True)
class _Region:
    faker_locale: str
    locale: str  # BCP 47 tag stored on the customer
    country: str  # ISO 3166-1 alpha-2
    weight: float
    # (city, IANA time zone, weight, phone area code; "" where mobiles carry none)
    cities: tuple[tuple[str, str, float, str], ...]
    # random.choices re-sums plain weights on every call; cumulative ones are summed once.
    city_cum: list[float] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "city_cum", list(accumulate(c[2] for c in self.cities)))


_REGIONS: tuple[_Region, ...] = (
    _Region("en_US", "en-US", "US", 70, (
        ("New York", "America/New_York", 10, "212"), ("Philadelphia", "America/New_York", 4, "215"),
        ("Boston", "America/New_York", 3, "617"), ("Atlanta", "America/New_York", 4, "404"),
        ("Miami", "America/New_York", 4, "305"), ("Charlotte", "America/New_York", 2, "704"),
        ("Detroit", "America/Detroit", 2, "313"), ("Chicago", "America/Chicago", 7, "312"),
        ("Houston", "America/Chicago", 5, "713"), ("Dallas", "America/Chicago", 5, "214"),
        ("Minneapolis", "America/Chicago", 2, "612"), ("Nashville", "America/Chicago", 2, "615"),
        ("Denver", "America/Denver", 3, "303"), ("Salt Lake City", "America/Denver", 1, "801"),
        ("Phoenix", "America/Phoenix", 3, "602"), ("Los Angeles", "America/Los_Angeles", 9, "213"),
        ("San Diego", "America/Los_Angeles", 3, "619"),
        ("San Francisco", "America/Los_Angeles", 3, "415"),
        ("Seattle", "America/Los_Angeles", 3, "206"), ("Portland", "America/Los_Angeles", 2, "503"),
        ("Honolulu", "Pacific/Honolulu", 1, "808"), ("Anchorage", "America/Anchorage", 0.5, "907"),
    )),
    # Spanish-speaking customers of US stores: Mexican-Spanish names, US addresses.
    _Region("es_MX", "es-US", "US", 4, (
        ("Los Angeles", "America/Los_Angeles", 4, "323"), ("Houston", "America/Chicago", 3, "832"),
        ("San Antonio", "America/Chicago", 2, "210"), ("Miami", "America/New_York", 2, "786"),
        ("Phoenix", "America/Phoenix", 2, "480"), ("Chicago", "America/Chicago", 2, "773"),
    )),
    _Region("en_CA", "en-CA", "CA", 9, (
        ("Toronto", "America/Toronto", 6, "416"), ("Ottawa", "America/Toronto", 2, "613"),
        ("Vancouver", "America/Vancouver", 4, "604"), ("Calgary", "America/Edmonton", 2, "403"),
        ("Edmonton", "America/Edmonton", 2, "780"), ("Winnipeg", "America/Winnipeg", 1, "204"),
        ("Halifax", "America/Halifax", 1, "902"),
    )),
    _Region("fr_CA", "fr-CA", "CA", 5, (
        ("Montréal", "America/Toronto", 6, "514"), ("Québec", "America/Toronto", 2, "418"),
        ("Gatineau", "America/Toronto", 1, "819"), ("Sherbrooke", "America/Toronto", 1, "819"),
    )),
    _Region("es_MX", "es-MX", "MX", 6, (
        ("Ciudad de México", "America/Mexico_City", 6, "55"),
        ("Guadalajara", "America/Mexico_City", 3, "33"),
        ("Monterrey", "America/Monterrey", 3, "81"), ("Puebla", "America/Mexico_City", 1, "222"),
        ("Tijuana", "America/Tijuana", 1, "664"), ("Cancún", "America/Cancun", 1, "998"),
    )),
    _Region("en_GB", "en-GB", "GB", 6, (
        ("London", "Europe/London", 6, ""), ("Manchester", "Europe/London", 2, ""),
        ("Birmingham", "Europe/London", 2, ""), ("Leeds", "Europe/London", 1, ""),
        ("Glasgow", "Europe/London", 1, ""), ("Bristol", "Europe/London", 1, ""),
    )),
)  # fmt: skip
_REGION_CUM = list(accumulate(r.weight for r in _REGIONS))

_TIERS = ("none", "bronze", "silver", "gold", "platinum")
_TIER_CUM = list(accumulate((45, 25, 17, 9, 4)))
# More loyal customers shop more often: (mean purchases in the window) per tier.
_TIER_ACTIVITY = {"none": 3.0, "bronze": 5.0, "silver": 7.0, "gold": 9.0, "platinum": 11.0}
_EMAIL_DOMAINS = ("example.com", "example.org", "example.net")
_EMAIL_DOMAIN_CUM = list(accumulate((60, 25, 15)))
_QUANTITY_CUM = list(accumulate((70, 20, 7, 3)))
_HOUSEHOLD_CUM = list(accumulate((28, 34, 16, 14, 8)))
_STORE_SUFFIXES = ("Downtown", "Midtown", "Northgate", "Westside", "Eastgate", "Riverside",
                   "Market Square", "Airport", "University", "Harbourfront")  # fmt: skip

# category -> (sku prefix, ((product name, unit price), ...))
_CATALOG: dict[str, tuple[str, tuple[tuple[str, float], ...]]] = {
    "dairy": ("DRY", (
        ("Whole Milk 1 gal", 4.29), ("2% Milk 1/2 gal", 2.89), ("Greek Yogurt 32 oz", 5.49),
        ("Cheddar Cheese Block 8 oz", 3.99), ("Salted Butter 1 lb", 4.79),
        ("Large Eggs Dozen", 3.69), ("Oat Milk 64 oz", 4.49), ("Cream Cheese 8 oz", 2.59),
    )),
    "produce": ("PRD", (
        ("Bananas 1 lb", 0.69), ("Gala Apples 3 lb bag", 4.99), ("Baby Spinach 5 oz", 3.49),
        ("Avocados 4 ct", 4.99), ("Strawberries 1 lb", 3.99), ("Russet Potatoes 5 lb", 4.29),
        ("Yellow Onions 3 lb", 3.29), ("Roma Tomatoes 1 lb", 1.79),
    )),
    "bakery": ("BKY", (
        ("Sourdough Loaf", 4.99), ("Whole Wheat Bread", 3.29), ("Croissants 4 ct", 5.49),
        ("Bagels 6 ct", 3.99), ("Blueberry Muffins 4 ct", 5.99), ("Flour Tortillas 10 ct", 2.99),
    )),
    "beverages": ("BEV", (
        ("Sparkling Water 12 pk", 5.99), ("Orange Juice 52 oz", 4.49),
        ("Ground Coffee 12 oz", 8.99), ("Green Tea 20 ct", 3.79), ("Cola 12 pk", 7.49),
        ("Cold Brew Coffee 32 oz", 5.99), ("Sports Drink 8 pk", 6.99),
    )),
    "snacks": ("SNK", (
        ("Potato Chips Family Size", 4.29), ("Tortilla Chips 13 oz", 3.99),
        ("Dark Chocolate Bar", 2.99), ("Mixed Nuts 16 oz", 9.49), ("Granola Bars 12 ct", 5.29),
        ("Microwave Popcorn 6 ct", 4.49), ("Pretzel Twists 16 oz", 3.49),
    )),
    "health": ("HLT", (
        ("Ibuprofen 200 mg 100 ct", 8.99), ("Daily Multivitamin 100 ct", 11.99),
        ("Allergy Relief 30 ct", 14.99), ("Vitamin D3 90 ct", 9.49),
        ("Cough Syrup 8 oz", 10.99), ("Adhesive Bandages 30 ct", 4.99),
        ("Digital Thermometer", 12.99),
    )),
    "beauty": ("BTY", (
        ("Moisturizing Lotion 16 oz", 9.99), ("Daily Facial Cleanser", 8.49),
        ("SPF 50 Sunscreen", 11.99), ("Shampoo 12 oz", 6.99), ("Lip Balm 3 pk", 4.49),
        ("Mascara", 9.99), ("Body Wash 18 oz", 5.99),
    )),
    "household": ("HSE", (
        ("Paper Towels 6 rolls", 10.99), ("Toilet Paper 12 rolls", 12.99),
        ("Laundry Detergent 92 oz", 13.99), ("Dish Soap 24 oz", 3.49),
        ("Trash Bags 40 ct", 9.99), ("All-Purpose Cleaner", 4.29), ("AA Batteries 8 pk", 8.99),
    )),
    "pet": ("PET", (
        ("Dry Dog Food 15 lb", 24.99), ("Cat Food Variety 12 pk", 11.99),
        ("Clumping Cat Litter 20 lb", 13.49), ("Dog Treats 16 oz", 7.99),
        ("Chew Toy", 6.49), ("Puppy Pads 50 ct", 19.99),
    )),
}  # fmt: skip
_CATEGORIES = tuple(_CATALOG)
# Everyday grocery dominates baskets; pet food is bought by pet owners.
_CATEGORY_WEIGHTS = {
    "dairy": 16, "produce": 18, "bakery": 11, "beverages": 13, "snacks": 12,
    "health": 8, "beauty": 6, "household": 9,
}  # fmt: skip
_CATEGORY_CUM = {  # keyed by pet_owner
    owner: list(accumulate(_CATEGORY_WEIGHTS.get(c, 14 if owner else 0.3) for c in _CATEGORIES))
    for owner in (False, True)
}


def _tenant_seed(tenant: str) -> int:
    # sha256 rather than hash(): stable across processes regardless of PYTHONHASHSEED.
    return int.from_bytes(hashlib.sha256(f"pennant-demo:{tenant}".encode()).digest()[:8], "big")


def _ascii_slug(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "", folded.lower()) or "customer"


def _phone(rng: random.Random, country: str, area_code: str) -> str:
    if country in ("US", "CA"):
        # NANP reserves 555-0100..0199 for fiction in every area code.
        return f"+1{area_code}55501{rng.randrange(100):02d}"
    if country == "GB":
        # Ofcom reserves mobiles 07700 900000..900999 for drama.
        return f"+447700900{rng.randrange(1000):03d}"
    # Mexico has no fictional range: local area code, random subscriber number.
    digits = 10 - len(area_code)
    return f"+52{area_code}{rng.randrange(10**digits):0{digits}d}"


def _birth_date(rng: random.Random) -> dt.date:
    # Fixed span (not "age relative to today") so a customer's birthday never changes.
    year = round(rng.triangular(1941, 2006, 1984))
    return dt.date(year, 1, 1) + dt.timedelta(days=rng.randrange(365))


class _Generator:
    """Builds customer and purchase rows; one per seeding call (Faker is not thread-safe)."""

    def __init__(self, tenant: str, base_seed: int, now: dt.datetime):
        self.tenant = tenant
        self.base_seed = base_seed
        self.now = now
        self.fakers = {loc: Faker(loc) for loc in {r.faker_locale for r in _REGIONS}}

    def rows(self, ids: Sequence[int]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        customers: list[tuple[Any, ...]] = []
        purchases: list[tuple[Any, ...]] = []
        for cid in ids:
            self._customer(cid, customers, purchases)
        return customers, purchases

    def _customer(self, cid: int, customers: list[tuple[Any, ...]], purchases: list[tuple[Any, ...]]) -> None:
        rng = random.Random(f"{self.base_seed}:{cid}")
        region = rng.choices(_REGIONS, cum_weights=_REGION_CUM)[0]
        fake = self.fakers[region.faker_locale]
        fake.seed_instance(rng.getrandbits(64))
        first, last = fake.first_name(), fake.last_name()
        city, time_zone, _, area_code = rng.choices(region.cities, cum_weights=region.city_cum)[0]

        domain = rng.choices(_EMAIL_DOMAINS, cum_weights=_EMAIL_DOMAIN_CUM)[0]
        email = f"{_ascii_slug(first)}.{_ascii_slug(last)}.{cid}@{domain}"
        phone = _phone(rng, region.country, area_code) if rng.random() < 0.92 else None
        push_token = f"{rng.getrandbits(256):064x}" if rng.random() < 0.60 else None
        tier = rng.choices(_TIERS, cum_weights=_TIER_CUM)[0]
        consent_email = rng.random() < 0.85
        consent_sms = phone is not None and rng.random() < 0.49
        consent_push = push_token is not None and rng.random() < 0.83

        # Most customers are long-standing; a slice joined recently (welcome campaigns).
        tenure_days = rng.uniform(1, 60) if rng.random() < 0.08 else rng.uniform(60, 5 * 365)
        created_at = self.now - dt.timedelta(days=tenure_days)
        pet_owner = rng.random() < 0.38

        # ~10% lapsed: every purchase lies more than 90 days back.
        lapsed = rng.random() < 0.10
        n = min(_MAX_PURCHASES, max(0, round(rng.gauss(_TIER_ACTIVITY[tier], 2.5))))
        window = min(_PURCHASE_WINDOW_DAYS, tenure_days)
        newest = 90.0 if lapsed and window > 120 else 0.0
        cat_cum = _CATEGORY_CUM[pet_owner]
        spend: dict[str, float] = {}
        for k in range(1, n + 1):
            category = rng.choices(_CATEGORIES, cum_weights=cat_cum)[0]
            prefix, products = _CATALOG[category]
            index = rng.randrange(len(products))
            name, price = products[index]
            quantity = rng.choices((1, 2, 3, 4), cum_weights=_QUANTITY_CUM)[0]
            amount = Decimal(f"{price * quantity:.2f}")
            days_ago = rng.uniform(newest, window)
            # Shopping hours, not uniform over the clock.
            at = (self.now - dt.timedelta(days=days_ago)).replace(
                hour=rng.randrange(7, 22), minute=rng.randrange(60), second=rng.randrange(60),
                microsecond=0,
            )  # fmt: skip
            at = min(at, self.now)
            purchases.append((
                self.tenant, cid * 100 + k, cid, f"{prefix}-{1001 + index}", name, category,
                amount, at,
            ))  # fmt: skip
            spend[category] = spend.get(category, 0.0) + float(amount)

        attributes = {
            "preferred_store": f"{city} {rng.choice(_STORE_SUFFIXES)}",
            "pet_owner": pet_owner,
            "household_size": rng.choices((1, 2, 3, 4, 5), cum_weights=_HOUSEHOLD_CUM)[0],
            "lifetime_orders": n + int(tenure_days / 365 * rng.uniform(0, 18)),
            "favorite_category": max(spend, key=spend.__getitem__) if spend else None,
        }
        customers.append((
            self.tenant, cid, f"cust-{cid:06d}", email, phone, push_token, first, last,
            region.locale, time_zone, tier, city, region.country, _birth_date(rng),
            consent_email, consent_sms, consent_push, json.dumps(attributes), created_at,
        ))  # fmt: skip


async def seed_customers(pool: asyncpg.Pool, tenant: str, count: int, *, seed: int | None = None) -> int:
    """Make sure `tenant` has customers 1..`count` (with purchases); returns customers inserted.

    Idempotent: a tenant that already has `count` customers gets nothing, otherwise only the
    missing ids are added. The `tenants` row must exist. `seed` overrides the tenant-derived seed.
    """
    if count <= 0:
        return 0
    base_seed = _tenant_seed(tenant) if seed is None else seed
    # No statement timeout: the operator's own demo data, up to millions of rows in one INSERT,
    # and a second seeder waits here for the first.
    async with tenant_tx(pool, tenant, statement_timeout=None) as conn:
        # Two seeders for one tenant (api and worker starting together) must not race.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('pennant.seed_customers'), hashtext($1))",
            tenant,
        )
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM tenants WHERE slug = $1)", tenant):
            raise LookupError(f"tenant {tenant!r} does not exist; create it before seeding")
        if await conn.fetchval("SELECT count(*) FROM customers") >= count:
            return 0
        present = {r["id"] for r in await conn.fetch("SELECT id FROM customers WHERE id BETWEEN 1 AND $1", count)}
        missing = [i for i in range(1, count + 1) if i not in present]
        if not missing:
            return 0

        # COPY FROM is refused on tables with row-level security for roles subject to it
        # ("COPY FROM not supported with row-level security"), so COPY into temp tables
        # and move the rows with INSERT ... SELECT, which the tenant policy still checks.
        # attributes is staged as text: the pool's jsonb codec is text-only, and binary COPY
        # needs a binary encoder.
        await conn.execute(
            """CREATE TEMP TABLE pg_temp.seed_customers
                   (LIKE customers INCLUDING DEFAULTS) ON COMMIT DROP;
               ALTER TABLE pg_temp.seed_customers ALTER COLUMN attributes DROP DEFAULT,
                   ALTER COLUMN attributes TYPE text;
               CREATE TEMP TABLE pg_temp.seed_purchases (LIKE purchases) ON COMMIT DROP;"""
        )
        generator = _Generator(tenant, base_seed, dt.datetime.now(dt.UTC))
        for start in range(0, len(missing), _CHUNK):
            # CPU-bound generation runs off the event loop so a serving process stays responsive.
            customers, purchases = await asyncio.to_thread(generator.rows, missing[start : start + _CHUNK])
            await conn.copy_records_to_table(
                "seed_customers", records=customers, columns=CUSTOMER_COLUMNS, schema_name="pg_temp"
            )
            await conn.copy_records_to_table(
                "seed_purchases", records=purchases, columns=PURCHASE_COLUMNS, schema_name="pg_temp"
            )
        columns = ", ".join(CUSTOMER_COLUMNS)
        selected = ", ".join(f"{c}::jsonb" if c == "attributes" else c for c in CUSTOMER_COLUMNS)
        await conn.execute(f"INSERT INTO customers ({columns}) SELECT {selected} FROM pg_temp.seed_customers")
        columns = ", ".join(PURCHASE_COLUMNS)
        await conn.execute(f"INSERT INTO purchases ({columns}) SELECT {columns} FROM pg_temp.seed_purchases")
        return len(missing)
