"""The run_experiments table (migration 046): a run's winner test (when it decides, the
decision and its statistics) or its adaptive weights. Functions take a tenant-scoped
connection (core/infra/db.py `tenant_tx`)."""

from __future__ import annotations

import datetime as dt

from core.experiments.models import Decision, RunExperiment, VariantStat
from core.experiments.spec import ExperimentSpec
from core.infra.db import TenantConn

_START_SQL = """
INSERT INTO run_experiments (tenant_id, run_id, campaign_id, mode, metric, test_percent, weights, prior)
VALUES ($1, $2::uuid, $3::uuid, $4, $5, $6, $7, $8)
ON CONFLICT (tenant_id, run_id) DO NOTHING
"""
_GET_SQL = """
SELECT mode, metric, test_percent, decide_at, weights, prior, decision, decided_at
FROM run_experiments WHERE tenant_id = $1 AND run_id = $2::uuid
"""
_DECIDE_AT_SQL = """
UPDATE run_experiments SET decide_at = $3 WHERE tenant_id = $1 AND run_id = $2::uuid AND decision IS NULL
"""
# The first decision stays: a retried activity writes the same one, a late one changes nothing.
_DECIDE_SQL = """
UPDATE run_experiments SET decision = coalesce(decision, $3), decided_at = coalesce(decided_at, now())
WHERE tenant_id = $1 AND run_id = $2::uuid
RETURNING decision
"""


async def start(
    conn: TenantConn,
    tenant: str,
    run_id: str,
    campaign_id: str,
    experiment: ExperimentSpec,
    weights: dict[str, float] | None = None,
    prior: list[VariantStat] | None = None,
) -> RunExperiment:
    """Record the run's experiment once (a retry keeps the first row); the row as stored."""
    await conn.execute(
        _START_SQL,
        tenant,
        run_id,
        campaign_id,
        experiment.mode,
        experiment.metric,
        experiment.test_percent if experiment.mode == "winner" else None,
        weights,
        [p.model_dump() for p in prior] if prior is not None else None,
    )
    found = await get(conn, tenant, run_id)
    assert found is not None
    return found


async def get(conn: TenantConn, tenant: str, run_id: str) -> RunExperiment | None:
    """The run's experiment, or None when the run has none."""
    row = await conn.fetchrow(_GET_SQL, tenant, run_id)
    if row is None:
        return None
    return RunExperiment(**dict(row))


async def set_decide_at(conn: TenantConn, tenant: str, run_id: str, decide_at: dt.datetime) -> None:
    """When the run's test will be decided (until it has been)."""
    await conn.execute(_DECIDE_AT_SQL, tenant, run_id, decide_at)


async def record_decision(conn: TenantConn, tenant: str, run_id: str, decision: Decision) -> Decision:
    """Record the decision unless one is there already; the one recorded."""
    stored = await conn.fetchval(_DECIDE_SQL, tenant, run_id, decision.model_dump(mode="json"))
    return Decision.model_validate(stored) if stored is not None else decision
