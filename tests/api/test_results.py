"""Results through the real API against a ledger and event tables seeded straight with SQL: every
figure is counted again here, in Python, from the rows the test inserted."""

from __future__ import annotations

import datetime as dt
import math
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from tests.helpers.runs import AB_VARIANTS, create_campaign
from tests.helpers.tenants import MakeTenant, Tenant

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
CONTROLS = ("holdout", "global_control")  # set aside, sent nothing
CAMPAIGN = {
    "variants": AB_VARIANTS,
    "holdout_percent": 10,
}
COUNTS = (
    "recipients sent messages_sent messages_failed messages_skipped delivered bounced opens_unique opens_all "
    "opens_machine clicks_unique clicks_all clicks_machine unsubscribes complaints conversions conversion_events"
).split()


@dataclass
class Seeded:
    """What the test inserted for one run, and its figures per group counted here."""

    run_id: str
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    hourly: dict[tuple[str, dt.datetime], dict[str, int]] = field(default_factory=dict)
    ledger: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)


def _empty() -> dict[str, Any]:
    return {**dict.fromkeys(COUNTS, 0), "revenue": Decimal("0")}


def _hour(at: dt.datetime) -> dt.datetime:
    return at.replace(minute=0, second=0, microsecond=0)


async def seed_run(
    pool: asyncpg.Pool,
    tenant: str,
    campaign_id: str,
    plan: dict[str, tuple[int, int]],
    *,
    seed: int = 1,
    first_customer: int = 1,
) -> Seeded:
    """Insert a completed run whose ledger holds, per group key, `n` recipients of whom `k`
    convert (`plan[key] = (n, k)`), with random sends, opens (some machine), clicks, bounces,
    unsubscribes, complaints and purchases; count every figure here as the rows are made."""
    rng = random.Random(seed)
    run = uuid.uuid4()
    seeded = Seeded(str(run))
    deliveries: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    purchases: list[tuple[Any, ...]] = []
    customer = first_customer
    for group, (n, converting) in plan.items():
        g = seeded.groups.setdefault(group, _empty())
        converters = set(rng.sample(range(n), converting))
        for i in range(n):
            customer += 1
            g["recipients"] += 1
            # Some recipients get an SMS too: they still count once.
            channels = ["email", "sms"] if i % 7 == 0 else ["email"]
            sent_any = False
            mine: list[tuple[str, bool]] = []  # this recipient's events, all channels
            for channel in channels:
                sent_at = T0 + dt.timedelta(minutes=rng.randrange(180))
                outcomes: list[tuple[str, str | None]] = [
                    ("sent", None),
                    ("failed", "rejected"),
                    ("skipped", "no_consent"),
                ]
                status, reason = ("skipped", group) if group in CONTROLS else rng.choices(outcomes, [90, 4, 6])[0]
                g[f"messages_{status}"] += 1
                deliveries.append(
                    (tenant, run, customer, channel, group, status, reason, f"{run}:{customer}:{channel}", sent_at)
                )
                if status != "sent":
                    continue
                sent_any = True
                key = (group, _hour(sent_at))
                seeded.hourly.setdefault(key, {"sends": 0, "opens": 0, "clicks": 0, "conversions": 0})["sends"] += 1
                kinds: list[tuple[str, bool]] = []
                kinds += [("delivered", False)] if rng.random() < 0.9 else [("bounce", False)]
                # Several opens and clicks by one recipient; machine ones among them.
                kinds += [("open", False)] * rng.choice([0, 0, 1, 2, 3]) + [("open", True)] * rng.choice([0, 0, 1])
                kinds += [("click", False)] * rng.choice([0, 0, 0, 1, 2]) + [("click", True)] * rng.choice([0, 0, 1])
                kinds += [("unsubscribe", False)] if rng.random() < 0.03 else []
                kinds += [("complaint", False)] if rng.random() < 0.02 else []
                for kind, machine in kinds:
                    at = sent_at + dt.timedelta(minutes=rng.randrange(1, 240))
                    events.append((tenant, run, customer, channel, kind, machine, at))
                    if kind in ("open", "click") and not machine:
                        seeded.hourly.setdefault(
                            (group, _hour(at)), {"sends": 0, "opens": 0, "clicks": 0, "conversions": 0}
                        )[f"{kind}s"] += 1
                seeded.events.extend((customer, channel, kind, machine) for kind, machine in kinds)
                mine += kinds
            g["sent"] += sent_any
            g["openers_any"] = g.get("openers_any", 0) + any(k == "open" for k, _ in mine)
            g["delivered"] += any(k == "delivered" for k, _ in mine)
            g["bounced"] += any(k == "bounce" for k, _ in mine)
            g["opens_unique"] += any(k == "open" and not m for k, m in mine)
            g["clicks_unique"] += any(k == "click" and not m for k, m in mine)
            g["opens_all"] += sum(k == "open" for k, _ in mine)
            g["opens_machine"] += sum(k == "open" and m for k, m in mine)
            g["clicks_all"] += sum(k == "click" for k, _ in mine)
            g["clicks_machine"] += sum(k == "click" and m for k, m in mine)
            g["unsubscribes"] += any(k == "unsubscribe" for k, _ in mine)
            g["complaints"] += any(k == "complaint" for k, _ in mine)
            if i in converters:
                # One to three attributed purchases: the recipient converts once.
                g["conversions"] += 1
                for p in range(rng.randint(1, 3)):
                    amount = Decimal(rng.randrange(100, 10000)) / 100
                    at = T0 + dt.timedelta(hours=rng.randrange(1, 48))
                    purchases.append((tenant, f"{run}-{customer}-{p}", customer, "purchase", at, amount, run, group))
                    g["conversion_events"] += 1
                    g["revenue"] += amount
                    hour = seeded.hourly.setdefault(
                        (group, _hour(at)), {"sends": 0, "opens": 0, "clicks": 0, "conversions": 0}
                    )
                    hour["conversions"] += 1
            if i % 5 == 0:
                g["carters"] = g.get("carters", 0) + 1
                # Not a conversion: another event type, attributed all the same.
                purchases.append((tenant, f"{run}-{customer}-cart", customer, "add_to_cart", T0, None, run, group))
    # A purchase attributed to no run is nobody's result.
    purchases.append((tenant, f"{run}-loose", first_customer + 1, "purchase", T0, Decimal("99.00"), None, None))
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO runs (tenant_id, id, campaign_id, workflow_id, status)
               VALUES ($1, $2, $3::uuid, $4, 'completed')""",
            tenant, run, campaign_id, f"test:{run}",
        )  # fmt: skip
        await conn.executemany(
            """INSERT INTO deliveries (tenant_id, run_id, customer_id, channel, variant, status, reason,
                                       idempotency_key, created_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
            deliveries,
        )
        await conn.executemany(
            """INSERT INTO message_events (tenant_id, run_id, customer_id, channel, kind, machine, occurred_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            events,
        )
        await conn.executemany(
            """INSERT INTO customer_events (tenant_id, event_id, customer_id, type, occurred_at, amount, run_id,
                                            channel, variant)
               VALUES ($1, $2, $3, $4, $5, $6, $7, 'email', $8)""",
            purchases,
        )
    seeded.ledger = deliveries
    return seeded


def _group(body: dict[str, Any], key: str) -> dict[str, Any]:
    return next(g for g in body["groups"] if g["variant"] == key)


def _comparison(body: dict[str, Any], metric: str) -> dict[str, Any]:
    return next(c for c in body["comparisons"] if c["metric"] == metric)


def _assert_figures(body: dict[str, Any], expected: dict[str, dict[str, Any]]) -> None:
    assert {g["variant"] for g in body["groups"]} == set(expected)
    for key, want in expected.items():
        got = _group(body, key)
        assert {c: got[c] for c in COUNTS} == {c: want[c] for c in COUNTS}, key
        assert Decimal(got["revenue"]) == want["revenue"], key
        n, sent = want["recipients"], want["sent"]
        rates = got["rates"]
        assert rates["conversions"] == pytest.approx(want["conversions"] / n)
        assert rates["opens_unique"] == pytest.approx(want["opens_unique"] / n)
        assert rates["revenue_per_recipient"] == pytest.approx(float(want["revenue"]) / n)
        assert rates["open_rate"] == (pytest.approx(want["opens_unique"] / sent) if sent else None)
        assert rates["click_rate"] == (pytest.approx(want["clicks_unique"] / sent) if sent else None)


@pytest.fixture
async def tenant(make_tenant: MakeTenant) -> Tenant:
    """A fresh tenant (no customers needed: the ledger is seeded directly)."""
    return await make_tenant(customers=0)


async def test_run_results_match_counts_made_from_the_rows(tenant: Tenant, pool: asyncpg.Pool) -> None:
    campaign = await create_campaign(tenant, **CAMPAIGN)
    seeded = await seed_run(pool, tenant.slug, campaign, {"A": (300, 45), "B": (300, 30), "holdout": (60, 3)})

    response = await tenant.http.get(tenant.url(f"/runs/{seeded.run_id}/results"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scope"] == "run" and body["run_ids"] == [seeded.run_id] and body["control"] == "holdout"
    assert [g["variant"] for g in body["groups"]] == ["A", "B", "holdout"]  # the campaign's order, then controls
    assert [g["kind"] for g in body["groups"]] == ["variant", "variant", "holdout"]
    _assert_figures(body, seeded.groups)
    holdout = _group(body, "holdout")
    assert holdout["sent"] == 0 and holdout["opens_all"] == 0 and holdout["rates"]["open_rate"] is None
    # Machine opens are in the "all" figures only: counting them would have made more openers.
    for key in ("A", "B"):
        assert _group(body, key)["opens_machine"] > 0
        assert _group(body, key)["opens_unique"] < seeded.groups[key]["openers_any"]

    conversion = _comparison(body, "conversion")
    assert conversion["baseline"] == "holdout" and conversion["denominator"] == "recipients"
    for lift in conversion["lifts"]:
        want = seeded.groups[lift["variant"]]
        rate, base = want["conversions"] / want["recipients"], 3 / 60
        assert lift["rate"] == pytest.approx(rate) and lift["baseline_rate"] == pytest.approx(base)
        assert lift["difference"] == pytest.approx(rate - base)
        assert math.copysign(1, lift["difference"]) == math.copysign(1, rate - base)
        low, high = lift["ci95"]
        assert low < lift["difference"] < high
        assert lift["relative"] == pytest.approx(rate / base - 1)
    # Another event type may be the conversion; revenue still sums purchases.
    carts = (await tenant.http.get(tenant.url(f"/runs/{seeded.run_id}/results?conversion_event=add_to_cart"))).json()
    for key, want in seeded.groups.items():
        got = _group(carts, key)
        assert got["conversions"] == got["conversion_events"] == want["carters"]
        assert Decimal(got["revenue"]) == want["revenue"]
    # Opens and clicks: the holdout got nothing, so B is compared with A.
    for metric in ("open", "click"):
        comp = _comparison(body, metric)
        assert comp["baseline"] == "A" and comp["denominator"] == "sent"
        assert [lift["variant"] for lift in comp["lifts"]] == ["B"]
        assert comp["leader"]["test"] == "two-proportion z-test"


async def test_significance_needs_a_large_enough_sample(tenant: Tenant, pool: asyncpg.Pool) -> None:
    campaign = await create_campaign(tenant, **CAMPAIGN)
    # The same rates, 20% against 10% against a 5% holdout, at two sizes.
    tiny = await seed_run(pool, tenant.slug, campaign, {"A": (20, 4), "B": (20, 2), "holdout": (20, 1)}, seed=2)
    large = await seed_run(
        pool, tenant.slug, campaign, {"A": (1000, 200), "B": (1000, 100), "holdout": (1000, 50)}, seed=3,
        first_customer=10_000,
    )  # fmt: skip
    small_body = (await tenant.http.get(tenant.url(f"/runs/{tiny.run_id}/results"))).json()
    large_body = (await tenant.http.get(tenant.url(f"/runs/{large.run_id}/results"))).json()

    small_leader = _comparison(small_body, "conversion")["leader"]
    assert small_leader["variant"] == "A" and small_leader["test"] == "two-proportion z-test"
    assert small_leader["significant"] is False and small_leader["verdict"] == "not yet significant"
    assert small_leader["p_value"] > 0.05 and small_leader["warning"]  # expected counts under 5

    leader = _comparison(large_body, "conversion")["leader"]
    assert leader["variant"] == "A" and leader["significant"] is True and leader["groups"] == ["A", "B"]
    # The pooled two-proportion z-test, done here by hand: 200/1000 against 100/1000.
    pooled = 300 / 2000
    z = (0.2 - 0.1) / math.sqrt(pooled * (1 - pooled) * (2 / 1000))
    assert leader["statistic"] == pytest.approx(z)
    assert leader["p_value"] == pytest.approx(math.erfc(z / math.sqrt(2)))
    assert leader["verdict"].startswith("A leads (p = ")
    lifts = {lift["variant"]: lift for lift in _comparison(large_body, "conversion")["lifts"]}
    assert lifts["A"]["significant"] and lifts["A"]["ci95"][0] > 0  # the interval clears zero
    tiny_lifts = {lift["variant"]: lift for lift in _comparison(small_body, "conversion")["lifts"]}
    assert not tiny_lifts["A"]["significant"] and tiny_lifts["A"]["ci95"][0] < 0 < tiny_lifts["A"]["ci95"][1]


async def test_three_variants_are_compared_by_chi_square(tenant: Tenant, pool: asyncpg.Pool) -> None:
    variants = [{"key": k, "template": "weekly_deals"} for k in ("A", "B", "C")]
    campaign = await create_campaign(tenant, variants=variants, holdout_percent=10)
    plan = {"A": (400, 40), "B": (400, 80), "C": (400, 44), "holdout": (100, 5)}
    seeded = await seed_run(pool, tenant.slug, campaign, plan, seed=4)
    body = (await tenant.http.get(tenant.url(f"/runs/{seeded.run_id}/results"))).json()
    leader = _comparison(body, "conversion")["leader"]
    assert leader["test"] == "chi-square test of homogeneity" and leader["df"] == 2
    # Pearson's statistic on the 3 by 2 table, and the chi-square(2) tail exp(-x/2), by hand.
    pooled = 164 / 1200
    stat = sum(
        (x - 400 * pooled) ** 2 / (400 * pooled) + (x - 400 * pooled) ** 2 / (400 * (1 - pooled)) for x in (40, 80, 44)
    )
    assert leader["statistic"] == pytest.approx(stat)
    assert leader["p_value"] == pytest.approx(math.exp(-stat / 2))
    assert leader["variant"] == "B" and leader["significant"] is True


async def test_campaign_results_sum_over_its_runs(tenant: Tenant, pool: asyncpg.Pool) -> None:
    campaign = await create_campaign(tenant, **CAMPAIGN)
    first = await seed_run(pool, tenant.slug, campaign, {"A": (80, 10), "B": (80, 6), "holdout": (20, 1)}, seed=5)
    second = await seed_run(
        pool, tenant.slug, campaign, {"A": (50, 9), "B": (50, 2), "holdout": (10, 0)}, seed=6, first_customer=1
    )  # the same customers again in another run: recipients of each run
    other = await create_campaign(tenant, **CAMPAIGN)
    await seed_run(pool, tenant.slug, other, {"A": (30, 3), "holdout": (5, 1)}, seed=7)

    response = await tenant.http.get(tenant.url(f"/campaigns/{campaign}/results"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scope"] == "campaign" and set(body["run_ids"]) == {first.run_id, second.run_id}
    expected = {}
    for key in ("A", "B", "holdout"):
        expected[key] = {c: first.groups[key][c] + second.groups[key][c] for c in [*COUNTS, "revenue"]}
    _assert_figures(body, expected)

    series = (await tenant.http.get(tenant.url(f"/campaigns/{campaign}/results/series"))).json()
    sends = {g["variant"]: sum(p["sends"] for p in g["points"]) for g in series["groups"]}
    conversions = {g["variant"]: sum(p["conversions"] for p in g["points"]) for g in series["groups"]}
    assert sends == {k: expected[k]["messages_sent"] for k in ("A", "B", "holdout")}
    assert conversions == {k: expected[k]["conversion_events"] for k in ("A", "B", "holdout")}


async def test_hourly_series_matches_the_rows(tenant: Tenant, pool: asyncpg.Pool) -> None:
    campaign = await create_campaign(tenant, **CAMPAIGN)
    seeded = await seed_run(pool, tenant.slug, campaign, {"A": (120, 20), "B": (120, 10), "holdout": (30, 2)}, seed=8)
    response = await tenant.http.get(tenant.url(f"/runs/{seeded.run_id}/results/series"))
    assert response.status_code == 200, response.text
    got = {}
    for g in response.json()["groups"]:
        for p in g["points"]:
            got[(g["variant"], dt.datetime.fromisoformat(p["hour"]))] = {
                k: p[k] for k in ("sends", "opens", "clicks", "conversions")
            }
    assert got == seeded.hourly
    assert [g["variant"] for g in response.json()["groups"]] == ["A", "B", "holdout"]


async def test_deliveries_rows_show_their_events(tenant: Tenant, pool: asyncpg.Pool) -> None:
    campaign = await create_campaign(tenant, **CAMPAIGN)
    seeded = await seed_run(pool, tenant.slug, campaign, {"A": (12, 2), "B": (12, 1), "holdout": (4, 0)}, seed=9)
    want: dict[tuple[int, str], list[tuple[str, bool]]] = defaultdict(list)
    for customer, channel, kind, machine in seeded.events:
        want[(customer, channel)].append((kind, machine))
    seen: dict[tuple[int, str], list[dict[str, Any]]] = {}
    cursor = None
    while True:  # pages of five: keyset paging as before
        params: dict[str, Any] = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        page = (await tenant.http.get(tenant.url(f"/runs/{seeded.run_id}/deliveries"), params=params)).json()
        for row in page["items"]:
            seen[(row["customer_id"], row["channel"])] = row["events"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(seeded.ledger)
    for key, events in seen.items():
        assert sorted((e["kind"], e["machine"]) for e in events) == sorted(want.get(key, []))
        times = [dt.datetime.fromisoformat(e["at"]) for e in events]
        assert times == sorted(times)


async def test_another_tenants_key_gets_404(make_tenant: MakeTenant, tenant: Tenant, pool: asyncpg.Pool) -> None:
    campaign = await create_campaign(tenant, **CAMPAIGN)
    seeded = await seed_run(pool, tenant.slug, campaign, {"A": (10, 1), "holdout": (2, 0)}, seed=10)
    other = await make_tenant(customers=0)
    for path in (
        f"/runs/{seeded.run_id}/results",
        f"/runs/{seeded.run_id}/results/series",
        f"/campaigns/{campaign}/results",
        f"/campaigns/{campaign}/results/series",
    ):
        # Under the owner's slug with the other key, and under the other's slug: 404 both ways.
        mine = await other.http.get(tenant.url(path))
        theirs = await other.http.get(other.url(path))
        assert mine.status_code == 404 and theirs.status_code == 404, (path, mine.text, theirs.text)
        assert (await tenant.http.get(tenant.url(path))).status_code == 200


async def test_without_a_holdout_the_global_control_is_the_baseline(tenant: Tenant, pool: asyncpg.Pool) -> None:
    campaign = await create_campaign(tenant, **CAMPAIGN)
    seeded = await seed_run(pool, tenant.slug, campaign, {"A": (100, 12), "B": (100, 8), "global_control": (40, 2)})
    body = (await tenant.http.get(tenant.url(f"/runs/{seeded.run_id}/results"))).json()
    assert body["control"] == "global_control"
    assert [(g["variant"], g["kind"]) for g in body["groups"]] == [
        ("A", "variant"), ("B", "variant"), ("global_control", "global_control")
    ]  # fmt: skip
    lifts = _comparison(body, "conversion")["lifts"]
    assert [(lift["variant"], lift["baseline"]) for lift in lifts] == [("A", "global_control"), ("B", "global_control")]
    assert lifts[0]["difference"] == pytest.approx(12 / 100 - 2 / 40)
