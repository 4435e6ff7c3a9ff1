"""A run's experiment: read it from the campaign (an adaptive run also draws and records its
weights from the earlier runs' results), record when a winner test decides, and decide it from
the test slice's engagement."""

from __future__ import annotations

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.lookups import campaign_spec
from activities.names import DECIDE_WINNER, PREPARE_EXPERIMENT, RECORD_DECIDE_AT
from core.experiments import store as experiment_store
from core.experiments.models import (
    DecideWinnerInput,
    Decision,
    ExperimentPlan,
    PrepareExperimentInput,
    RecordDecideAtInput,
    VariantStat,
)
from core.experiments.spec import ExperimentSpec
from core.experiments.winner_selection import decide, thompson_weights
from core.infra.db import TenantConn, tenant_tx
from core.infra.telemetry import tag_current_span
from core.results import report as results
from core.runs import store as run_store


async def _metric_stats(
    conn: TenantConn, tenant: str, campaign_id: str, run_ids: list[str], experiment: ExperimentSpec,
    order: list[str],
) -> list[VariantStat]:  # fmt: skip
    """Each variant's successes and trials on the experiment's metric over `run_ids`."""
    found = await results.results(
        conn, tenant, scope="campaign", campaign_id=campaign_id, run_ids=run_ids, variant_order=order
    )
    return results.variant_stats(found.groups, order, experiment.metric)


class ExperimentActivities:
    """Winner tests and adaptive splits of a run, over the results' per-recipient rollup."""

    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    @activity.defn(name=PREPARE_EXPERIMENT)
    async def prepare_experiment(self, inp: PrepareExperimentInput) -> ExperimentPlan:
        """The campaign's experiment for this run (mode None without one); an adaptive run's
        weights are Thompson-sampled from the earlier runs of the campaign, seeded by the run id,
        and recorded with the results they came from (a retry keeps the first)."""
        tag_current_span(tenant=inp.tenant, campaign=inp.campaign_id, run=inp.run_id)
        async with tenant_tx(self.pool, inp.tenant) as conn:
            spec = await campaign_spec(conn, inp.tenant, inp.campaign_id)
            experiment = spec.experiment
            order = [v.key for v in spec.variants]
            if experiment is None or len(order) < 2:
                return ExperimentPlan()
            if experiment.mode == "winner":
                await experiment_store.start(conn, inp.tenant, inp.run_id, inp.campaign_id, experiment)
                return ExperimentPlan(
                    mode="winner",
                    variants=order,
                    decide_after_seconds=experiment.decide_after_seconds,
                    experiment=experiment,
                )
            runs = await run_store.campaign_run_ids(conn, inp.tenant, inp.campaign_id)
            earlier = runs[: runs.index(inp.run_id)] if inp.run_id in runs else runs
            prior = await _metric_stats(conn, inp.tenant, inp.campaign_id, earlier, experiment, order)
            weights = thompson_weights(prior, experiment.floor, seed=f"{inp.campaign_id}:{inp.run_id}")
            stored = await experiment_store.start(
                conn, inp.tenant, inp.run_id, inp.campaign_id, experiment, weights=weights, prior=prior
            )
        return ExperimentPlan(mode="adaptive", variants=order, weights=stored.weights, experiment=experiment)

    @activity.defn(name=RECORD_DECIDE_AT)
    async def record_decide_at(self, inp: RecordDecideAtInput) -> None:
        """Write when the run's winner test will be decided."""
        async with tenant_tx(self.pool, inp.tenant) as conn:
            await experiment_store.set_decide_at(conn, inp.tenant, inp.run_id, inp.decide_at)

    @activity.defn(name=DECIDE_WINNER)
    async def decide_winner(self, inp: DecideWinnerInput) -> Decision:
        """Decide the run's winner test from the test slice's engagement (only the slice has been
        sent so far), or record a marketer's pick with the statistics at that moment; by the
        experiment pinned at run start, whatever the campaign says now."""
        tag_current_span(tenant=inp.tenant, campaign=inp.campaign_id, run=inp.run_id)
        async with tenant_tx(self.pool, inp.tenant) as conn:
            spec = await campaign_spec(conn, inp.tenant, inp.campaign_id)
            experiment = inp.experiment or spec.experiment
            if experiment is None:  # only a run started before experiments were pinned
                raise ApplicationError("the campaign no longer has an experiment", non_retryable=True)
            order = [v.key for v in spec.variants]
            cells = await _metric_stats(conn, inp.tenant, inp.campaign_id, [inp.run_id], experiment, order)
            decision = decide(experiment, cells, inp.picked)
            return await experiment_store.record_decision(conn, inp.tenant, inp.run_id, decision)
