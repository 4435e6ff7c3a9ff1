"""A run's first step, for a run that is due when it starts: the config pin, the status writes,
the frozen audience and the experiment in one local activity.

Each of those was a local activity of its own (still the path of a run that waits for its send
time). Between two local activities the SDK hands a result to the workflow and a new command
back, a few event-loop turns and a thread hop each; while a neighbour's big run keeps the
worker's event loop busy, those hand-offs cost a small run more than the steps themselves
(benchmarks/isolation.py). Every step is safe to run again, so a retry repeats the whole.
"""

from __future__ import annotations

from temporalio import activity

from activities.audience import AudienceActivities
from activities.config import ConfigActivities
from activities.experiments import ExperimentActivities
from activities.names import BEGIN_RUN
from activities.pooled import PooledActivities
from activities.run_status import RunStatusActivities
from core.experiments.models import PrepareExperimentInput
from core.runs.models import BeginRunInput, LoadConfigInput, MarkRunInput, PlanAudienceInput, RunBegun, RunStatus


class RunStartActivities(PooledActivities):
    """The first step of a run that is due now."""

    @activity.defn(name=BEGIN_RUN)
    async def begin_run(self, inp: BeginRunInput) -> RunBegun:
        """Pin the config, mark the run running, freeze its audience, record the planned count
        and prepare its experiment: the steps the workflow otherwise takes one by one."""
        status = RunStatusActivities(self.pool)
        pin = await ConfigActivities(self.pool).load_config(LoadConfigInput(tenant=inp.tenant))
        ids = {"tenant": inp.tenant, "run_id": inp.run_id}
        # Running before the plan, as the step-by-step path writes it: a big audience takes a while.
        await status.mark_run(MarkRunInput(**ids, status=RunStatus.RUNNING, config_version=pin.version))
        plan = await AudienceActivities(self.pool).plan_audience(
            PlanAudienceInput(
                **ids,
                campaign_id=inp.campaign_id,
                config_version=pin.version,
                batch_size=pin.batch_size,
                now=inp.now,
            )
        )
        await status.mark_run(MarkRunInput(**ids, status=RunStatus.RUNNING, planned=plan.planned))
        experiment = await ExperimentActivities(self.pool).prepare_experiment(
            PrepareExperimentInput(**ids, campaign_id=inp.campaign_id, config_version=pin.version)
        )
        return RunBegun(pin=pin, plan=plan, experiment=experiment)
