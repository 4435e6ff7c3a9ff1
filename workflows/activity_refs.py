"""The activities the workflows call, each by its registered name (activities/names.py) and the
types it takes and returns. The workflows name activities this way rather than through the
activity classes so that importing workflow code, which the sandbox does for every run, loads
only model modules: the activity modules import the database driver, HTTP clients and the
template engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities import names
    from core.campaigns.schedules import RegisterRunInput
    from core.campaigns.test_send_io import TestSendInput, TestSendResult
    from core.experiments.models import (
        DecideWinnerInput,
        Decision,
        ExperimentPlan,
        PrepareExperimentInput,
        RecordDecideAtInput,
    )
    from core.runs.models import (
        AudiencePlan,
        BatchPage,
        BatchPageInput,
        BeginRunInput,
        ConfigPin,
        Counts,
        DeliverBatchInput,
        FallbackDue,
        FallbackPlan,
        LoadConfigInput,
        MarkRunInput,
        PlanAudienceInput,
        RunBegun,
        SkipRemainingInput,
    )

In = TypeVar("In")
R = TypeVar("R")


@dataclass(frozen=True)
class ActivityRef(Generic[In, R]):
    """One activity as a workflow calls it: the name it is registered under, and the type its
    result is decoded as (the argument type `In` is for the type checker)."""

    name: str
    result: type[R]


LOAD_CONFIG = ActivityRef[LoadConfigInput, ConfigPin](names.LOAD_CONFIG, ConfigPin)
BEGIN_RUN = ActivityRef[BeginRunInput, RunBegun](names.BEGIN_RUN, RunBegun)
PLAN_AUDIENCE = ActivityRef[PlanAudienceInput, AudiencePlan](names.PLAN_AUDIENCE, AudiencePlan)
LIST_BATCHES = ActivityRef[BatchPageInput, BatchPage](names.LIST_BATCHES, BatchPage)
SKIP_REMAINING = ActivityRef[SkipRemainingInput, Counts](names.SKIP_REMAINING, Counts)
DELIVER_BATCH = ActivityRef[DeliverBatchInput, Counts](names.DELIVER_BATCH, Counts)
MARK_RUN = ActivityRef[MarkRunInput, None](names.MARK_RUN, type(None))
REGISTER_RUN = ActivityRef[RegisterRunInput, None](names.REGISTER_RUN, type(None))
FALLBACK_DUE = ActivityRef[PlanAudienceInput, FallbackDue](names.FALLBACK_DUE, FallbackDue)
PLAN_FALLBACK = ActivityRef[PlanAudienceInput, FallbackPlan](names.PLAN_FALLBACK, FallbackPlan)
PREPARE_EXPERIMENT = ActivityRef[PrepareExperimentInput, ExperimentPlan](names.PREPARE_EXPERIMENT, ExperimentPlan)
RECORD_DECIDE_AT = ActivityRef[RecordDecideAtInput, None](names.RECORD_DECIDE_AT, type(None))
DECIDE_WINNER = ActivityRef[DecideWinnerInput, Decision](names.DECIDE_WINNER, Decision)
TEST_SEND = ActivityRef[TestSendInput, TestSendResult](names.TEST_SEND, TestSendResult)
