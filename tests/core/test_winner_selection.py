"""Winner selection's decisions and adaptive weights as pure functions: the test and each
if_inconclusive outcome, a marketer's pick, the slice, and seeded Thompson sampling."""

from __future__ import annotations

import pytest

from core.campaigns.cross_channel import Fallback
from core.common.durations import duration_seconds
from core.experiments.models import ExtendTestInput, VariantStat
from core.experiments.spec import ExperimentSpec, check_experiment
from core.experiments.winner_selection import decide, in_test_slice, thompson_weights


def _cells(*rows: tuple[str, int, int]) -> list[VariantStat]:
    return [VariantStat(variant=k, successes=x, trials=n, rate=x / n if n else None) for k, x, n in rows]


def _spec(**changes: object) -> ExperimentSpec:
    return ExperimentSpec.model_validate({"mode": "winner", "min_per_variant": 50, **changes})


def test_a_clear_leader_wins_the_test() -> None:
    decision = decide(_spec(), _cells(("A", 10, 100), ("B", 40, 100)))
    assert decision.winner == "B" and decision.how == "test" and decision.runner_up == "A"
    assert decision.p_value is not None and decision.p_value < 0.001 and decision.alpha == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("rule", "winner", "stopped"), [("send_best", "B", False), ("send_first", "A", False), ("stop", None, True)]
)
def test_an_inconclusive_test_follows_if_inconclusive(rule: str, winner: str | None, stopped: bool) -> None:
    close = _cells(("A", 20, 100), ("B", 22, 100))
    decision = decide(_spec(if_inconclusive=rule), close)
    assert (decision.winner, decision.stopped, decision.how) == (winner, stopped, "inconclusive")
    assert "is not below" in decision.reason


def test_too_few_recipients_per_variant_is_inconclusive_however_large_the_gap() -> None:
    decision = decide(_spec(min_per_variant=100), _cells(("A", 0, 60), ("B", 50, 60)))
    assert decision.how == "inconclusive" and "fewer than 100" in decision.reason and decision.winner == "B"


def test_a_pick_wins_and_keeps_the_statistics() -> None:
    decision = decide(_spec(), _cells(("A", 10, 100), ("B", 40, 100)), picked="A")
    assert decision.winner == "A" and decision.how == "picked" and decision.leader == "B"


def test_the_slice_is_stable_and_about_its_percent() -> None:
    inside = sum(in_test_slice("c1", i, 20) for i in range(10_000))
    assert 1_800 < inside < 2_200
    assert [in_test_slice("c1", i, 20) for i in range(50)] == [in_test_slice("c1", i, 20) for i in range(50)]


def test_thompson_weights_are_seeded_floored_and_favour_the_better_variant() -> None:
    cells = _cells(("A", 10, 100), ("B", 30, 100))
    weights = thompson_weights(cells, 0.1, seed="run-1")
    assert weights == thompson_weights(cells, 0.1, seed="run-1")
    assert weights["B"] > 0.85 and weights["A"] >= 0.1 and sum(weights.values()) == pytest.approx(1.0, abs=1e-3)
    even = thompson_weights(_cells(("A", 0, 0), ("B", 0, 0)), 0.1, seed="run-2")
    assert abs(even["A"] - 0.5) < 0.05


def test_durations_and_save_time_checks() -> None:
    assert duration_seconds("90m") == 5400 and duration_seconds(30) == 30 and duration_seconds("2d") == 172_800
    with pytest.raises(ValueError, match="duration like"):
        duration_seconds("4 hours")
    # One duration type: a decision, an extension and a fallback's wait accept and refuse alike.
    for bad in ("31d", 0, "4 hours"):
        for build in (
            lambda v: ExperimentSpec(mode="winner", decide_after=v),
            lambda v: ExtendTestInput(by=v),
            lambda v: Fallback(channel="sms", unless="clicked", after=v),
        ):
            with pytest.raises(ValueError):
                build(bad)
    assert Fallback(channel="sms", unless="clicked", after="30d").after_delta.days == 30
    assert check_experiment(_spec(), ["A"]) == [
        "experiment.mode: winner needs at least 2 variants (the campaign has 1)"
    ]
    adaptive = ExperimentSpec(mode="adaptive", floor=0.4)
    assert check_experiment(adaptive, ["A", "B", "C"])[0].startswith("experiment.floor:")
