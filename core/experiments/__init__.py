"""Experiments: deterministic variant and holdout buckets, the experiment spec, a run's experiment
inputs and outputs, its table, and winner selection."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core import lazy_exports

if TYPE_CHECKING:
    from core.experiments.buckets import GLOBAL_CONTROL, HOLDOUT, assign_variant, in_global_control
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
        RunExperiment,
        VariantStat,
    )
    from core.experiments.spec import ExperimentSpec, check_experiment
    from core.experiments.winner_selection import (
        ExperimentAssignment,
        decide,
        in_test_slice,
        thompson_weights,
    )

_EXPORTS = {
    "BatchExperiment": "models",
    "DecideWinnerInput": "models",
    "Decision": "models",
    "ExperimentAssignment": "winner_selection",
    "ExperimentPlan": "models",
    "ExperimentSpec": "spec",
    "ExperimentState": "models",
    "ExtendTestInput": "models",
    "GLOBAL_CONTROL": "buckets",
    "HOLDOUT": "buckets",
    "PickWinnerInput": "models",
    "PrepareExperimentInput": "models",
    "RecordDecideAtInput": "models",
    "RunExperiment": "models",
    "VariantStat": "models",
    "assign_variant": "buckets",
    "check_experiment": "spec",
    "decide": "winner_selection",
    "in_global_control": "buckets",
    "in_test_slice": "winner_selection",
    "thompson_weights": "winner_selection",
}
__all__ = [
    "GLOBAL_CONTROL",
    "HOLDOUT",
    "BatchExperiment",
    "DecideWinnerInput",
    "Decision",
    "ExperimentAssignment",
    "ExperimentPlan",
    "ExperimentSpec",
    "ExperimentState",
    "ExtendTestInput",
    "PickWinnerInput",
    "PrepareExperimentInput",
    "RecordDecideAtInput",
    "RunExperiment",
    "VariantStat",
    "assign_variant",
    "check_experiment",
    "decide",
    "in_global_control",
    "in_test_slice",
    "thompson_weights",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
