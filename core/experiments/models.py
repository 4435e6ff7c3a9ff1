"""Inputs and outputs of a run's experiment (winner selection, adaptive splits) as the run
workflow, its activities and the API pass them: variant keys, weights and statistics only."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.common.durations import Duration
from core.experiments.spec import ExperimentMetric, ExperimentMode, ExperimentSpec

# winner: test → waiting (for the decision) → deciding → rest (the winner to everyone else) → done.
Phase = Literal["test", "waiting", "deciding", "rest", "done"]


class PinnedExperiment(ExperimentSpec):
    """A campaign's experiment as a run carries it through Temporal: the same fields, but a field
    it does not know is ignored rather than refused, so during a rolling deploy an older worker
    reads what a newer one wrote (the campaign API still refuses unknown fields, by ExperimentSpec).
    Built from an ExperimentSpec by its attributes."""

    model_config = ConfigDict(extra="ignore", from_attributes=True)


class BatchExperiment(BaseModel):
    """What a batch (or the skip of a cancelled run) needs of the run's experiment: which part
    of the audience it serves, the winner once decided, an adaptive run's weights."""

    phase: Literal["test", "rest"] | None = None  # None: the whole audience (adaptive)
    winner: str | None = None
    weights: dict[str, float] | None = None
    # A winner test's slice as pinned at run start (None in runs started before it was pinned:
    # the campaign's experiment then tells it).
    test_percent: float | None = None


class PrepareExperimentInput(BaseModel):
    """Read a run's campaign experiment; for an adaptive one, choose and record this run's weights."""

    tenant: str
    run_id: str
    campaign_id: str
    config_version: int


class ExperimentPlan(BaseModel):
    """A run's experiment as its workflow carries it out (mode None: the campaign has none)."""

    mode: ExperimentMode | None = None
    variants: list[str] = Field(default_factory=list)
    decide_after_seconds: float = 0.0
    weights: dict[str, float] | None = None
    # The campaign's experiment when the run started: the run decides by it even if the
    # campaign's definition changes meanwhile (None in runs started before it was pinned).
    experiment: PinnedExperiment | None = None


class ExperimentState(BaseModel):
    """A winner test's progress inside the run workflow (carried over continue-as-new)."""

    plan: ExperimentPlan
    phase: Phase = "test"
    decide_at: dt.datetime | None = None
    picked: str | None = None  # a marketer's early choice
    winner: str | None = None
    stopped: bool = False  # inconclusive with if_inconclusive=stop: the rest get nothing


class VariantStat(BaseModel):
    """One variant's successes and trials on the experiment's metric."""

    variant: str
    successes: int
    trials: int
    rate: float | None


class Decision(BaseModel):
    """A winner test's decision and the statistics it rests on."""

    winner: str | None = Field(description="the variant the rest of the audience gets; null when stopped")
    how: Literal["test", "picked", "inconclusive"]
    stopped: bool = False
    reason: str
    metric: ExperimentMetric
    test: str = "two-proportion z-test, leader against runner-up, two-sided"
    leader: str | None = None
    runner_up: str | None = None
    statistic: float | None = None
    p_value: float | None = None
    alpha: float = Field(description="1 - confidence: significant when p_value < alpha")
    min_per_variant: int
    variants: list[VariantStat]


class DecideWinnerInput(BaseModel):
    """Decide a run's winner test from its engagement so far (or record a marketer's pick)."""

    tenant: str
    run_id: str
    campaign_id: str
    picked: str | None = None
    experiment: PinnedExperiment | None = None  # pinned at run start; None: the campaign's current one


class PickWinnerInput(BaseModel):
    """Decide a waiting winner test now, for this variant."""

    variant: str = Field(min_length=1, max_length=64)


class ExtendTestInput(BaseModel):
    """Wait this much longer before deciding (seconds, or '30m', '4h', '2d')."""

    by: Duration


class RecordDecideAtInput(BaseModel):
    """Write when a run's winner test will be decided (after an extension, or when it starts waiting)."""

    tenant: str
    run_id: str
    decide_at: dt.datetime


class RunExperiment(BaseModel):
    """A run's experiment as GET /runs/{id} shows it."""

    mode: ExperimentMode
    metric: ExperimentMetric
    test_percent: float | None = None
    decide_at: dt.datetime | None = Field(default=None, description="winner: when the test is (or was) decided")
    weights: dict[str, float] | None = Field(default=None, description="adaptive: this run's traffic split")
    prior: list[VariantStat] | None = Field(default=None, description="adaptive: the earlier runs' results used")
    decision: Decision | None = None
    decided_at: dt.datetime | None = None
