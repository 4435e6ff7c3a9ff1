"""Experiment defaults from the tenant config, and the tenant-wide control group."""

from __future__ import annotations

import math
from typing import Any

import asyncpg

from core.tenants.config_schema import Experiments, Policies
from tests.helpers.runs import run_campaign
from tests.helpers.tenants import MakeTenant, Tenant

N = 600


def _within(observed: int, share: float, n: int = N) -> bool:
    sigma = math.sqrt(n * share * (1 - share))
    return abs(observed - n * share) <= 4 * sigma


async def _run(tenant: Tenant, campaign: dict[str, Any]) -> dict[str, Any]:
    return await run_campaign(tenant, name="Split", **campaign)


async def test_campaigns_without_weights_or_holdout_use_the_tenant_defaults(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(
        customers=N,
        policies=Policies(consent_required={"email": False}),
        experiments=Experiments(default_holdout_percent=20, default_variant_weights={"A": 3, "B": 1}),
    )
    variants = [{"key": "A", "template": "weekly_deals"}, {"key": "B", "template": "win_back"}]
    run = await _run(tenant, {"variants": variants})
    by_variant = {k: sum(v.values()) for k, v in run["counts"]["by_variant"].items()}
    assert _within(by_variant["holdout"], 0.20), by_variant
    assert _within(by_variant["A"], 0.60), by_variant
    assert _within(by_variant["B"], 0.20), by_variant
    assert run["counts"]["skipped_by_reason"] == {"holdout": by_variant["holdout"]}

    # Explicit values win over the defaults, and the campaign keeps them.
    explicit = await _run(
        tenant, {"variants": [{**variants[0], "weight": 1}, {**variants[1], "weight": 1}], "holdout_percent": 0}
    )
    by_variant = {k: sum(v.values()) for k, v in explicit["counts"]["by_variant"].items()}
    assert "holdout" not in by_variant
    assert _within(by_variant["A"], 0.5) and _within(by_variant["B"], 0.5), by_variant


async def test_the_global_control_group_receives_no_campaign(make_tenant: MakeTenant, pool: asyncpg.Pool) -> None:
    tenant = await make_tenant(
        customers=N,
        policies=Policies(consent_required={"email": False}, holdout_percent=10),
        experiments=Experiments(),  # no per-campaign holdout by default
    )
    variants = [{"key": "A", "template": "weekly_deals"}]
    first = await _run(tenant, {"variants": variants})
    second = await _run(tenant, {"variants": variants, "holdout_percent": 0})
    controls = []
    for run in (first, second):
        rows = await pool.fetch(
            """SELECT customer_id FROM deliveries
               WHERE tenant_id = $1 AND run_id = $2::uuid AND reason = 'global_control'""",
            tenant.slug,
            run["id"],
        )
        controls.append({r["customer_id"] for r in rows})
        assert run["counts"]["sent"] == N - len(rows)
    assert controls[0] == controls[1], "the same customers are held out of every campaign"
    assert _within(len(controls[0]), 0.10)
