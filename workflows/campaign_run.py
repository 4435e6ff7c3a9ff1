"""CampaignRunWorkflow: one durable execution chain per campaign run.

load config (pin a version) → wait for the send time → plan the audience → deliver batches
through a bounded window of activities → finish. Only ids, cursors and counts pass through
history; recipients and rendered bodies stay in PostgreSQL and the activities. Batch
boundaries are read a page at a time, and once an execution's history grows past a few
thousand events it continues as new, carrying only the cursor and the counters.

Pause, resume and cancel are updates whose validators reject what the run's status does not
allow, so a caller gets a clear refusal rather than a silent no-op.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from core.infra.temporal import task_queue_for
    from core.runs.models import (
        TERMINAL_STATUSES,
        AudiencePlan,
        BatchPage,
        BatchPageInput,
        BeginRunInput,
        CampaignRunInput,
        ConfigPin,
        Counts,
        DeliverBatchInput,
        LoadConfigInput,
        MarkRunInput,
        PlanAudienceInput,
        RescheduleInput,
        RunBegun,
        RunProgress,
        RunState,
        RunStatus,
        SkipRemainingInput,
    )
from workflows import activity_refs as act
from workflows.activity_options import LOCAL_PLAN, ONE_STEP_START, bookkeeping, call, call_local, run_ids
from workflows.activity_options import RETRY as _RETRY
from workflows.cross_channel import CROSS_CHANNEL_FALLBACK, fallback_phase
from workflows.winner_selection import WinnerSelection

# A batch heartbeats after every chunk it sends; a worker that died mid-batch is noticed after
# this long and the batch is retried elsewhere, skipping what the ledger already holds.
BATCH_HEARTBEAT = timedelta(seconds=20)
# Continue as new once an execution's history passes this many events (or the server suggests
# it). Draining the in-flight window adds at most a few hundred more, which keeps every
# execution far below the 5,000 events promised and Temporal's own limits.
HISTORY_EVENT_LIMIT = 2_000
# Batch boundaries read per list_batches call; only the cursor survives continue-as-new.
BATCH_PAGE = 100
# Runs started before cancels stopped running batches replay without it.
CANCEL_IN_FLIGHT_BATCHES = "cancel-in-flight-batches"
# The type of the ApplicationError a validator raises; details carry the current status.
RUN_STATE_CONFLICT = "RunStateConflict"


@workflow.defn(name="CampaignRunWorkflow")
class CampaignRunWorkflow(WinnerSelection):
    """Carries one campaign run to every recipient exactly once."""

    @workflow.init
    def __init__(self, inp: CampaignRunInput) -> None:
        self._inp = inp
        # Everything one execution hands the next: continue-as-new carries it whole.
        self._run: RunState = inp.carry.model_copy(deep=True) if inp.carry else RunState()
        self._status = RunStatus.RUNNING if inp.carry else RunStatus.SCHEDULED
        self._cancel_requested = False
        self._send_at = inp.send_at  # a reschedule moves it while the run waits
        self._finished = False  # the final status is written to the run's row
        self._batches_started = self._run.batches_done
        # The run's next_first_id is the next page's cursor; `_exhausted` once every batch
        # boundary of the current wave has been read.
        self._exhausted = inp.carry is not None and inp.carry.next_first_id is None
        self._decision = None  # the winner test's decision, once made (workflows/winner_selection.py)
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: ActivityError | None = None
        self._mark_lock = asyncio.Lock()

    # -- visibility ---------------------------------------------------------------------------

    def _status_now(self) -> str:
        if self._status in (RunStatus.SCHEDULED, RunStatus.RUNNING) and self._run.paused:
            return RunStatus.PAUSED
        return self._status

    @workflow.query(name="progress")
    def progress(self) -> RunProgress:
        """Status, planned count, batches and counts so far."""
        return RunProgress(
            status=self._status_now(),
            planned=self._run.planned,
            batches_total=self._run.batches_total,
            batches_done=self._run.batches_done,
            counts=self._run.counts,
            execution=self._run.execution,
        )

    # -- control ------------------------------------------------------------------------------

    @workflow.update(name="pause")
    async def pause(self) -> RunProgress:
        """Start no new batch until resumed; running batches stop sending between chunks (they
        read the run's status) and carry on when it is resumed."""
        self._run.paused = True
        await self._sync_status()
        return self.progress()

    @pause.validator
    def _validate_pause(self) -> None:
        self._require("pause", (RunStatus.SCHEDULED, RunStatus.RUNNING))

    @workflow.update(name="resume")
    async def resume(self) -> RunProgress:
        """Carry on a paused run."""
        self._run.paused = False
        await self._sync_status()
        return self.progress()

    @resume.validator
    def _validate_resume(self) -> None:
        self._require("resume", (RunStatus.PAUSED,))

    @workflow.update(name="cancel")
    async def cancel(self) -> RunProgress:
        """Start no new batch, stop the running ones (each records what it sent first), record
        everyone never attempted as skipped (cancelled); returns once the run is cancelled."""
        self._cancel_requested = True
        await workflow.wait_condition(lambda: self._finished)
        return self.progress()

    @cancel.validator
    def _validate_cancel(self) -> None:
        self._require("cancel", (RunStatus.SCHEDULED, RunStatus.RUNNING, RunStatus.PAUSED))

    @workflow.update(name="reschedule")
    async def reschedule(self, change: RescheduleInput) -> RunProgress:
        """Move the send time of a run that is still waiting for it (earlier, later, or now)."""
        self._send_at = change.send_at
        await self._sync_status(send_at=change.send_at)
        return self.progress()

    @reschedule.validator
    def _validate_reschedule(self, change: RescheduleInput) -> None:
        self._require("reschedule", (RunStatus.SCHEDULED, RunStatus.PAUSED))
        if self._status != RunStatus.SCHEDULED:
            raise ApplicationError(
                "cannot reschedule a run that has started delivering",
                self._status_now(),
                type=RUN_STATE_CONFLICT,
                non_retryable=True,
            )

    def _require(self, action: str, allowed: Sequence[str]) -> None:
        status = self._status_now()
        if self._cancel_requested and status not in TERMINAL_STATUSES:
            status = RunStatus.CANCELLING
        if status not in allowed:
            raise ApplicationError(
                f"cannot {action} a run that is {status} (only a {' or '.join(allowed)} run)",
                status,
                type=RUN_STATE_CONFLICT,
                non_retryable=True,
            )

    # -- the run ------------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: CampaignRunInput) -> RunProgress:
        """Prepare (pin config, wait, plan) and deliver; fails with the cause of an error no retry mends."""
        try:
            if inp.carry is None:
                await self._prepare(inp)
            if self._status == RunStatus.RUNNING:
                await self._deliver(inp)
        except ActivityError as err:
            self._status = RunStatus.FAILED
            cause = str(err.cause or err)
            await self._sync_status(error=cause)
            self._finished = True
            await workflow.wait_condition(workflow.all_handlers_finished)
            raise ApplicationError(f"run failed: {cause}", non_retryable=True) from err
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.progress()

    async def _prepare(self, inp: CampaignRunInput) -> None:
        """Pin the config, wait for the send time (and while paused), freeze the audience."""
        if self._due_at_start() and workflow.patched(ONE_STEP_START):
            await self._begin(inp)
            return
        # Pin the config first: a run uses the version current when it was started,
        # even when it then waits days for its send time.
        self._run.pin = await bookkeeping(act.LOAD_CONFIG, LoadConfigInput(tenant=inp.tenant))
        await self._sync_status(config_version=self._run.pin.version)
        # A durable timer to the send time, which a cancel cuts short and a reschedule restarts.
        while self._send_at is not None and self._send_at > workflow.now() and not self._cancel_requested:
            target = self._send_at
            workflow.set_current_details(f"scheduled for {target.isoformat()}")
            try:
                await workflow.wait_condition(
                    lambda: self._cancel_requested or self._send_at != target,  # noqa: B023
                    timeout=target - workflow.now(),
                    timeout_summary="wait for send time",
                )
            except TimeoutError:
                break
        await workflow.wait_condition(lambda: not self._run.paused or self._cancel_requested)
        if self._cancel_requested:
            await self._finish_cancelled()
            return
        self._status = RunStatus.RUNNING
        await self._sync_status()
        # Freezing the audience is one INSERT…SELECT that a retry does not repeat. As a local
        # activity it saves a small run an activity and a workflow task through the server, where
        # each costs tens of milliseconds (benchmarks/many_tenants.py); a long plan keeps the
        # workflow task open, which the SDK heartbeats.
        plan: AudiencePlan = await bookkeeping(
            act.PLAN_AUDIENCE,
            PlanAudienceInput(
                tenant=inp.tenant,
                run_id=inp.run_id,
                campaign_id=inp.campaign_id,
                config_version=self._run.pin.version,
                batch_size=self._run.pin.batch_size,
                now=workflow.now(),
            ),
            limit=timedelta(minutes=10),
            patch=LOCAL_PLAN,
        )
        self._take_plan(plan)
        await self._sync_status(planned=plan.planned)
        await self._plan_experiment(self._run.pin.version)

    def _due_at_start(self) -> bool:
        """Whether the run may start delivering at once: no send time ahead, not paused or cancelled."""
        due = self._send_at is None or self._send_at <= workflow.now()
        return due and not self._run.paused and not self._cancel_requested

    async def _begin(self, inp: CampaignRunInput) -> None:
        """The steps of `_prepare` for a run due now, in one local activity (activities/run_start.py
        says why). The status lock is held over it, as over any status write: a pause that
        comes meanwhile writes its status after the step's writes, not under them."""
        async with self._mark_lock:
            begun: RunBegun = await call_local(
                act.BEGIN_RUN,
                BeginRunInput(**run_ids(inp), now=workflow.now()),
                start_to_close_timeout=timedelta(minutes=10),  # as planning the audience alone
                retry_policy=_RETRY,
            )
        self._run.pin = begun.pin
        self._status = RunStatus.RUNNING
        self._take_plan(begun.plan)
        self._apply_experiment_plan(begun.experiment)

    def _take_plan(self, plan: AudiencePlan) -> None:
        """The frozen audience's size, batches and local-time waves, for the delivery to follow."""
        self._run.planned = plan.planned
        self._run.batches_total = plan.batches
        self._run.waves = plan.waves

    async def _deliver(self, inp: CampaignRunInput) -> None:
        pin = self._run.pin
        assert pin is not None
        details = f"{self._run.planned} recipients in {self._run.batches_total} batches"
        if len(self._run.waves) > 1:
            details += f", {len(self._run.waves)} local-time waves"
        execution = self._run.execution
        workflow.set_current_details(details + (f" (execution {execution})" if execution > 1 else ""))
        while self._run.wave_index < len(self._run.waves) and not self._cancel_requested:
            wave = self._run.waves[self._run.wave_index]
            if wave.at is not None and wave.at > workflow.now():
                which = f"wave {self._run.wave_index + 1}/{len(self._run.waves)}"
                try:
                    # A durable timer per wave, which a cancel cuts short.
                    await workflow.wait_condition(
                        lambda: self._cancel_requested,
                        timeout=wave.at - workflow.now(),
                        timeout_summary=f"{which} at {wave.at.isoformat()}",
                    )
                except TimeoutError:
                    pass
            if self._cancel_requested:
                break
            await self._deliver_wave(inp, pin, wave.at)
            self._run.wave_index += 1
            self._run.next_first_id, self._exhausted = None, False
        await self._drain()
        if not self._cancel_requested and await self._next_experiment_phase(pin.version):
            self._run.wave_index, self._run.next_first_id, self._exhausted = 0, None, False
            await self._deliver(inp)  # the winner to the rest of the audience, then the end of the run
            return
        if await self._begin_fallback(inp):
            await self._deliver(inp)  # the fallback's waves, then the end of the run
            return
        if self._cancel_requested:
            await self._finish_cancelled()
            return
        self._status = RunStatus.COMPLETED
        await self._sync_status()
        self._finished = True

    async def _deliver_wave(self, inp: CampaignRunInput, pin: ConfigPin, wave_at: datetime | None) -> None:
        """Start every batch of one wave through the bounded window (returns with batches
        possibly still running); continues as new when the history grows long."""
        queue: deque[tuple[int, int | None]] = deque()
        while True:
            if not queue and not self._exhausted:
                page: BatchPage = await bookkeeping(
                    act.LIST_BATCHES,
                    BatchPageInput(
                        tenant=inp.tenant,
                        run_id=inp.run_id,
                        wave_at=wave_at,
                        first_id=self._run.next_first_id,
                        batch_size=pin.batch_size,
                        max_batches=BATCH_PAGE,
                    ),
                )
                ends: list[int | None] = [*page.starts[1:], page.next_first_id]
                queue.extend(zip(page.starts, ends, strict=True))
                self._run.next_first_id = page.next_first_id
                self._exhausted = page.next_first_id is None
            if not queue:
                return
            await workflow.wait_condition(
                lambda: (
                    self._failure is not None
                    or self._cancel_requested
                    or self._history_full()
                    or (not self._run.paused and self._in_flight < pin.max_concurrent_batches)
                )
            )
            self._raise_failure()
            if self._cancel_requested:
                return
            if self._history_full():
                await self._continue_as_new(inp, queue[0][0])
                return  # only reached when a cancel arrived while draining
            first_id, end_id = queue.popleft()
            self._start_batch(inp, pin, first_id, end_id, wave_at)

    def _start_batch(
        self, inp: CampaignRunInput, pin: ConfigPin, first_id: int, end_id: int | None, wave_at: datetime | None
    ) -> None:
        self._in_flight += 1
        self._batches_started += 1
        batch = DeliverBatchInput(
            tenant=inp.tenant,
            run_id=inp.run_id,
            campaign_id=inp.campaign_id,
            config_version=pin.version,
            first_id=first_id,
            end_id=end_id,
            wave_at=wave_at,
            channels=[self._run.fallback] if self._run.fallback else None,
            experiment=self._batch_experiment(),
        )
        task = asyncio.create_task(self._run_batch(batch, f"batch {self._batches_started}/{self._run.batches_total}"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_batch(self, batch: DeliverBatchInput, summary: str) -> None:
        try:
            counts: Counts = await call(
                act.DELIVER_BATCH,
                batch,
                task_queue=task_queue_for(batch.tenant),
                start_to_close_timeout=timedelta(minutes=10),
                heartbeat_timeout=BATCH_HEARTBEAT,
                retry_policy=_RETRY,
                summary=summary,
                # A cancelled batch first records what it sent; only then is the rest skipped.
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
        except asyncio.CancelledError:
            pass  # the run is being cancelled (see _drain); the ledger holds what was sent
        except ActivityError as err:
            if not (self._cancel_requested and isinstance(err.cause, CancelledError)):
                self._failure = self._failure or err
        else:
            self._run.counts.add(counts)
            self._run.batches_done += 1
        finally:
            self._in_flight -= 1

    async def _drain(self) -> None:
        """Wait for every running batch; a failed one fails the run. A cancel stops the running
        batches (each records what it sent first), so it never waits on a stuck provider."""
        await workflow.wait_condition(lambda: self._in_flight == 0 or self._cancel_requested)
        if self._in_flight and self._cancel_requested and workflow.patched(CANCEL_IN_FLIGHT_BATCHES):
            for task in self._tasks:
                task.cancel()
        await workflow.wait_condition(lambda: self._in_flight == 0)
        self._raise_failure()

    async def _begin_fallback(self, inp: CampaignRunInput) -> bool:
        """After the first delivery: wait, then plan the fallback to the recipients who did not
        engage (workflows/cross_channel.py); True when its waves are to be delivered."""
        if self._run.fallback is not None or self._cancel_requested or not workflow.patched(CROSS_CHANNEL_FALLBACK):
            return False
        assert self._run.pin is not None
        plan = await fallback_phase(
            PlanAudienceInput(  # the fallback is planned like the audience, from workflow time
                tenant=inp.tenant,
                run_id=inp.run_id,
                campaign_id=inp.campaign_id,
                config_version=self._run.pin.version,
                batch_size=self._run.pin.batch_size,
            ),
            lambda: self._cancel_requested,
            lambda: self._run.paused,
        )
        if plan is None:
            return False
        self._run.fallback = plan.channel
        self._run.waves, self._run.wave_index = plan.waves, 0
        self._run.next_first_id, self._exhausted = None, False
        self._run.batches_total += sum(w.batches for w in plan.waves)
        return True

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _history_full(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() >= HISTORY_EVENT_LIMIT

    async def _continue_as_new(self, inp: CampaignRunInput, next_first_id: int) -> None:
        """Hand the run's state (cursor and counters) to a fresh execution; returns only if a
        cancel arrives first (the cancel is then finished in this execution)."""
        await self._drain()
        # Handlers must not be cut off; a cancel waits for the run to end, so it ends it here.
        await workflow.wait_condition(lambda: self._cancel_requested or workflow.all_handlers_finished())
        if self._cancel_requested:
            return
        assert self._run.pin is not None
        carry = self._run.model_copy(update={"next_first_id": next_first_id, "execution": self._run.execution + 1})
        workflow.continue_as_new(inp.model_copy(update={"carry": carry}))

    async def _finish_cancelled(self) -> None:
        if self._run.planned is not None:  # the audience is frozen: account for everyone in it
            remaining: Counts = await call(
                act.SKIP_REMAINING,
                SkipRemainingInput(
                    **run_ids(self._inp),
                    config_version=self._run.pin.version if self._run.pin else None,
                    experiment=self._batch_experiment(),
                    fallback=self._run.fallback,
                ),
                task_queue=task_queue_for(self._inp.tenant),
                start_to_close_timeout=timedelta(minutes=10),
                heartbeat_timeout=timedelta(seconds=60),
                retry_policy=_RETRY,
            )
            self._run.counts.add(remaining)
        self._status = RunStatus.CANCELLED
        await self._sync_status()
        self._finished = True

    async def _sync_status(self, **fields: Any) -> None:
        """Write the run's current status (and `fields`) to its row. Writes are serialised and
        each reads the status when it starts, so the row ends at the latest status whatever
        order the control handlers ran in."""
        async with self._mark_lock:
            await bookkeeping(
                act.MARK_RUN,
                MarkRunInput(tenant=self._inp.tenant, run_id=self._inp.run_id, status=self._status_now(), **fields),
            )
