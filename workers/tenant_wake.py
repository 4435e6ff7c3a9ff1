"""Waking a tenant's activity Worker the moment one of its workflows schedules an activity.

An idle tenant's activity queue is not polled at all (`TenantWorkers`): a long poll per idle
tenant was most of what the Temporal server spent at rest with 500 tenants. Every activity on a
tenant's queue is scheduled by a workflow task, and every workflow runs on the shared queue of
some worker process, so the workflow Worker is where work for a tenant is first seen: this
interceptor tells its process the queue of every activity a workflow schedules, before the
workflow task completes and so before the task reaches the queue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import workflow
from temporalio.worker import (
    Interceptor,
    StartActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

# The name the wake function is known by inside the workflow sandbox.
WAKE_EXTERN = "pennant_wake_queue"


class ActivityWake(Interceptor):
    """Calls `wake(task_queue)` for every activity a workflow of this Worker schedules.

    `wake` runs on a workflow-task thread, in the middle of an activation: it must be quick and
    thread-safe (hand the queue to the event loop), and it must not fail. It is called on replay
    too, which only wakes a tenant whose workflow is open anyway.
    """

    def __init__(self, wake: Callable[[str], None]) -> None:
        self.wake = wake

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> type[WorkflowInboundInterceptor]:
        """Register the wake function as a sandbox extern; the inbound class that installs the outbound one."""
        input.unsafe_extern_functions[WAKE_EXTERN] = self.wake
        return _WakeInbound


class _WakeInbound(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_WakeOutbound(outbound))


class _WakeOutbound(WorkflowOutboundInterceptor):
    def start_activity(self, input: StartActivityInput) -> Any:
        if input.task_queue:  # None: the workflow's own queue, which is always polled
            workflow.extern_functions()[WAKE_EXTERN](input.task_queue)
        return super().start_activity(input)
