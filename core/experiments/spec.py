"""A campaign's `experiment`: winner selection (test the variants on a slice, then send the
winner to the rest) or adaptive splits across a recurring campaign's occurrences. The model and
its save-time checks; what a run does with it is in core/experiments/winner_selection.py."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.common.durations import Duration, duration_seconds

ExperimentMode = Literal["winner", "adaptive"]
ExperimentMetric = Literal["open", "click", "conversion"]


class ExperimentSpec(BaseModel):
    """How a campaign's variants compete: `winner` tests them on a slice of the audience and
    sends the winner to the rest; `adaptive` splits each run's traffic by the results so far."""

    model_config = ConfigDict(extra="forbid")

    mode: ExperimentMode
    metric: ExperimentMetric = Field(
        default="click",
        description="open and click: unique human openers/clickers over recipients sent; conversion: "
        "recipients with an attributed purchase over recipients",
    )
    test_percent: float = Field(
        default=20.0, gt=0, lt=100, description="winner: the share of the audience (holdout apart) that tests"
    )
    decide_after: Duration = Field(
        default="4h", description="winner: how long after the test sends to decide; seconds or '30m', '4h', '2d'"
    )
    confidence: float = Field(default=0.95, ge=0.5, lt=1, description="winner: 1 - the test's significance level")
    min_per_variant: int = Field(
        default=100, ge=1, description="winner: the fewest recipients per variant (in the metric's denominator)"
    )
    if_inconclusive: Literal["send_best", "send_first", "stop"] = Field(
        default="send_best", description="winner: what the rest get when the test tells no winner"
    )
    floor: float = Field(
        default=0.1, ge=0, lt=1, description="adaptive: the smallest share of a run's traffic each variant keeps"
    )

    @property
    def decide_after_seconds(self) -> float:
        """`decide_after` in seconds."""
        return duration_seconds(self.decide_after)


def check_experiment(experiment: ExperimentSpec | None, variant_keys: list[str]) -> list[str]:
    """What stops the experiment from running with these variants, as `path: reason` lines."""
    if experiment is None:
        return []
    errors = []
    if len(variant_keys) < 2:
        errors.append(f"experiment.mode: {experiment.mode} needs at least 2 variants (the campaign has "
                      f"{len(variant_keys)})")  # fmt: skip
    if experiment.mode == "adaptive" and experiment.floor * len(variant_keys) >= 1:
        errors.append(
            f"experiment.floor: {experiment.floor} for each of {len(variant_keys)} variants leaves nothing to adapt "
            f"(must be under {1 / len(variant_keys):.3g})"
        )
    return errors
