"""Variant split and holdout: the observed split of a real run matches the weights within
statistical tolerance, and two runs of the same campaign assign every customer identically."""

from __future__ import annotations

import asyncio
import math

import asyncpg

from core.tenants.config_schema import Execution
from tests.helpers.runs import assert_each_recipient_once, create_campaign, start_run, wait_for_run
from tests.helpers.tenants import MakeTenant

CUSTOMERS = 4000
WEIGHTS = {"A": 1.0, "B": 2.0, "C": 1.0}
HOLDOUT = 10.0
# Chi-square critical value for 2 degrees of freedom at p = 0.0001: a correct split fails
# this about once in ten thousand runs.
CHI2_CRITICAL_DF2 = 18.42


def _within_4_sigma(observed: int, n: int, p: float) -> bool:
    return abs(observed - n * p) <= 4 * math.sqrt(n * p * (1 - p))


async def test_split_and_holdout_match_the_weights_and_reruns_agree(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(
        customers=CUSTOMERS, execution=Execution(batch_size=500, max_concurrent_batches=8, activities_per_second=None)
    )
    # Every customer is assigned; a tenth have email consent, so the runs also send some mail.
    await pool.execute("UPDATE customers SET consent_email = (id % 10 = 0) WHERE tenant_id = $1", tenant.slug)
    campaign = await create_campaign(
        tenant,
        variants=[{"key": k, "template": "weekly_deals", "weight": w} for k, w in WEIGHTS.items()],
        holdout_percent=HOLDOUT,
    )
    first, second = [await start_run(tenant, campaign) for _ in range(2)]
    runs = await asyncio.gather(wait_for_run(tenant, first), wait_for_run(tenant, second))
    assert [r["status"] for r in runs] == ["completed", "completed"]

    assignments = []
    for run_id in (first, second):
        assert await assert_each_recipient_once(pool, tenant.slug, run_id) == CUSTOMERS
        rows = await pool.fetch(
            "SELECT customer_id, variant FROM deliveries WHERE tenant_id = $1 AND run_id = $2::uuid ORDER BY 1",
            tenant.slug,
            run_id,
        )
        assignments.append([(r["customer_id"], r["variant"]) for r in rows])
    assert assignments[0] == assignments[1], "a rerun must assign every customer the same variant"

    variant_of = dict(assignments[0])
    held_out = sum(1 for v in variant_of.values() if v == "holdout")
    assert _within_4_sigma(held_out, CUSTOMERS, HOLDOUT / 100), held_out

    treated = CUSTOMERS - held_out
    total = sum(WEIGHTS.values())
    observed = {k: sum(1 for v in variant_of.values() if v == k) for k in WEIGHTS}
    assert sum(observed.values()) == treated
    chi2 = sum((observed[k] - treated * w / total) ** 2 / (treated * w / total) for k, w in WEIGHTS.items())
    assert chi2 < CHI2_CRITICAL_DF2, (observed, chi2)
    for key, weight in WEIGHTS.items():
        assert _within_4_sigma(observed[key], treated, weight / total), (key, observed)

    # The ledger's reasons follow: held-out customers are skipped as holdout, never sent.
    counts = runs[0]["counts"]
    assert counts["skipped_by_reason"]["holdout"] == held_out
    assert counts["by_variant"]["holdout"] == {"sent": 0, "failed": 0, "skipped": held_out}
    assert {k: sum(counts["by_variant"][k].values()) for k in WEIGHTS} == observed
    assert counts["sent"] == sum(1 for c, v in variant_of.items() if c % 10 == 0 and v != "holdout")
