"""The run workflow's experiment (issue 13, winner selection): the state and controls the run
workflow mixes in. A winner test sends the variants to its slice, waits on a durable timer
(cut short by a cancel or a marketer's pick, moved by an extension), decides from the slice's
engagement in an activity, then has the rest sent the winner; an adaptive run only splits its
traffic by the weights an activity drew for it. Deterministic: no I/O here."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from core.common.durations import duration_seconds
    from core.experiments.models import (
        BatchExperiment,
        DecideWinnerInput,
        Decision,
        ExperimentPlan,
        ExperimentState,
        ExtendTestInput,
        PickWinnerInput,
        PrepareExperimentInput,
        RecordDecideAtInput,
    )
    from core.infra.temporal import task_queue_for
    from core.runs.models import CampaignRunInput, Counts, RunState, SkipRemainingInput
from workflows import activity_refs as act
from workflows.activity_options import RETRY as _RETRY
from workflows.activity_options import bookkeeping, call, run_ids

# Runs started before experiments replay without the prepare_experiment activity.
EXPERIMENTS = "experiments"
# The types of the ApplicationErrors the controls' validators raise (the API's 409 and 422).
EXPERIMENT_CONFLICT = "ExperimentStateConflict"
UNKNOWN_VARIANT = "UnknownVariant"
# The skip reason of the rest of the audience when an inconclusive test stops (if_inconclusive: stop).
STOPPED = "experiment_stopped"


class WinnerSelection:
    """A run's experiment state, its controls (pick-winner, extend-test) and the wait for the
    decision; mixed into CampaignRunWorkflow, which owns the rest of the run."""

    _inp: CampaignRunInput
    _run: RunState  # the experiment is carried in it over continue-as-new
    _cancel_requested: bool
    _decision: Decision | None

    @workflow.query(name="experiment")
    def experiment(self) -> ExperimentState | None:
        """The run's winner test: phase, when it decides, the winner once chosen."""
        return self._run.experiment

    @workflow.update(name="pick_winner")
    async def pick_winner(self, pick: PickWinnerInput) -> ExperimentState:
        """Decide a waiting test now, for `pick.variant`; returns once the decision is recorded."""
        assert self._run.experiment is not None
        self._run.experiment.picked = pick.variant
        await workflow.wait_condition(
            lambda: (
                self._cancel_requested
                or (self._run.experiment is not None and self._run.experiment.phase not in ("waiting", "deciding"))
            )
        )
        return self._run.experiment

    @pick_winner.validator
    def _validate_pick_winner(self, pick: PickWinnerInput) -> None:
        state = self._waiting("pick a winner for")
        if pick.variant not in state.plan.variants:
            raise ApplicationError(
                f"variant: unknown variant '{pick.variant}' (known: {', '.join(state.plan.variants)})",
                type=UNKNOWN_VARIANT,
                non_retryable=True,
            )

    @workflow.update(name="extend_test")
    async def extend_test(self, change: ExtendTestInput) -> ExperimentState:
        """Decide later: move the decision `change.by` further out."""
        assert self._run.experiment is not None and self._run.experiment.decide_at is not None
        self._run.experiment.decide_at += timedelta(seconds=duration_seconds(change.by))
        await self._record_decide_at()
        return self._run.experiment

    @extend_test.validator
    def _validate_extend_test(self, change: ExtendTestInput) -> None:
        self._waiting("extend the test of")

    def _waiting(self, action: str) -> ExperimentState:
        state = self._run.experiment
        if state is None or state.plan.mode != "winner":
            raise ApplicationError(f"cannot {action} a run without a winner test", type=EXPERIMENT_CONFLICT,
                                   non_retryable=True)  # fmt: skip
        if state.phase != "waiting" or state.picked is not None or self._cancel_requested:
            what = "sending its test" if state.phase == "test" and state.picked is None else "decided"
            what = "being cancelled" if self._cancel_requested else what
            raise ApplicationError(
                f"cannot {action} a run whose test is {what} (only while it waits for the decision)",
                state.phase,
                type=EXPERIMENT_CONFLICT,
                non_retryable=True,
            )
        return state

    async def _plan_experiment(self, config_version: int) -> None:
        """Read the campaign's experiment (runs started before experiments existed skip this);
        a winner test's batches run twice, once per part of the audience."""
        if not workflow.patched(EXPERIMENTS):
            return
        plan: ExperimentPlan = await bookkeeping(
            act.PREPARE_EXPERIMENT,
            PrepareExperimentInput(**run_ids(self._inp), config_version=config_version),
            timedelta(minutes=2),
        )
        self._apply_experiment_plan(plan)

    def _apply_experiment_plan(self, plan: ExperimentPlan) -> None:
        """Carry out the run's experiment as prepared (nothing without one)."""
        if plan.mode is not None:
            self._run.experiment = ExperimentState(plan=plan, phase="test" if plan.mode == "winner" else "done")
        if plan.mode == "winner":
            self._run.batches_total *= 2

    def _batch_experiment(self) -> BatchExperiment | None:
        """What the batches of the current phase need to know of the experiment."""
        state = self._run.experiment
        if state is None:
            return None
        if state.plan.mode == "adaptive":
            return BatchExperiment(weights=state.plan.weights)
        pinned = state.plan.experiment
        test_percent = pinned.test_percent if pinned is not None else None
        if self._run.fallback is not None:  # a fallback channel follows both parts up
            return BatchExperiment(winner=state.winner, test_percent=test_percent)
        phase = "rest" if state.phase in ("rest", "done") else "test"
        return BatchExperiment(phase=phase, winner=state.winner, test_percent=test_percent)

    async def _record_decide_at(self) -> None:
        assert self._run.experiment is not None and self._run.experiment.decide_at is not None
        await bookkeeping(
            act.RECORD_DECIDE_AT,
            RecordDecideAtInput(tenant=self._inp.tenant, run_id=self._inp.run_id,
                                decide_at=self._run.experiment.decide_at),
        )  # fmt: skip

    async def _next_experiment_phase(self, config_version: int) -> bool:
        """After the test slice is sent: wait for the decision (a durable timer to `decide_at`,
        cut short by a cancel or a pick), decide, and say whether the rest is to be sent."""
        state = self._run.experiment
        if state is None or state.plan.mode != "winner" or state.phase not in ("test", "waiting"):
            return False
        if state.decide_at is None:
            state.decide_at = workflow.now() + timedelta(seconds=state.plan.decide_after_seconds)
            await self._record_decide_at()
        state.phase = "waiting"
        while not self._cancel_requested and state.picked is None:
            target = state.decide_at
            assert target is not None
            if target <= workflow.now():
                break
            workflow.set_current_details(f"winner test: deciding at {target.isoformat()}")
            try:
                await workflow.wait_condition(
                    lambda: self._cancel_requested or state.picked is not None or state.decide_at != target,  # noqa: B023
                    timeout=target - workflow.now(),
                    timeout_summary="wait for the winner test's decision",
                )
            except TimeoutError:
                break
        if self._cancel_requested:
            return False
        state.phase = "deciding"  # a pick or an extension from now on would come too late
        self._decision = await bookkeeping(
            act.DECIDE_WINNER,
            DecideWinnerInput(**run_ids(self._inp), picked=state.picked, experiment=state.plan.experiment),
            timedelta(minutes=2),
        )  # fmt: skip
        state.winner, state.stopped = self._decision.winner, self._decision.stopped
        workflow.set_current_details(f"winner test decided: {self._decision.reason}")
        if state.stopped:
            # Nobody outside the slice is sent anything, and each is accounted for in the ledger.
            skipped: Counts = await call(
                act.SKIP_REMAINING,
                SkipRemainingInput(
                    **run_ids(self._inp), reason=STOPPED, config_version=config_version,
                    experiment=self._batch_experiment(),
                ),
                task_queue=task_queue_for(self._inp.tenant),
                start_to_close_timeout=timedelta(minutes=10),
                heartbeat_timeout=timedelta(seconds=60),
                retry_policy=_RETRY,
            )  # fmt: skip
            self._run.counts.add(skipped)
        state.phase = "done" if state.stopped else "rest"
        return not state.stopped
