"""What a run's experiment decides: who is in a winner test's slice and which variant each
recipient gets in each phase, the winner from the test's statistics, and an adaptive run's
Thompson-sampled weights. Pure functions: the activities read and write the data."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from core.common import stats
from core.experiments.buckets import GLOBAL_CONTROL, HOLDOUT, assign_variant, bucket, in_global_control
from core.experiments.models import BatchExperiment, Decision, VariantStat
from core.experiments.spec import ExperimentSpec

# Draws per Thompson-sampling estimate: the weights move by well under a percent between seeds.
THOMPSON_DRAWS = 4_000


def in_test_slice(campaign_id: str, customer_id: int, percent: float) -> bool:
    """Whether the customer is in the campaign's winner-test slice (a hash of its own, so the
    slice is independent of the holdout and the variant split)."""
    return bucket(campaign_id, customer_id, "test") * 100 < percent


class ExperimentAssignment:
    """Variant assignment for one part of a run: the campaign's split (or an adaptive run's
    weights) in a winner test's slice, the winner for the rest; holdout and global control as
    always. Deterministic per (campaign, customer), like core/experiments/buckets.py.

    `weights` and `holdout` are the campaign's effective split, `control` the tenant's global
    control percent (core.campaigns.spec.experiment_assignment reads them from a campaign)."""

    def __init__(
        self,
        weights: Sequence[tuple[str, float]],
        holdout: float,
        control: float,
        experiment: ExperimentSpec | None,
        tenant: str,
        campaign_id: str,
        exp: BatchExperiment | None,
    ):
        if exp is not None and exp.weights:
            weights = [(key, exp.weights.get(key, 0.0)) for key, _ in weights]
        self.weights = list(weights)
        self.holdout = holdout
        self.tenant, self.campaign_id, self.exp = tenant, campaign_id, exp
        self.control = control
        winner_test = experiment is not None and experiment.mode == "winner"
        self.test_percent = experiment.test_percent if experiment is not None and winner_test else None
        if exp is not None and exp.test_percent is not None:  # the run's own, pinned at its start
            self.test_percent = exp.test_percent

    def _split(self, customer_id: int) -> str:
        if in_global_control(self.tenant, customer_id, self.control):
            return GLOBAL_CONTROL
        return assign_variant(self.campaign_id, customer_id, self.weights, self.holdout)

    def _rest(self, customer_id: int) -> bool:
        return self.test_percent is not None and not in_test_slice(self.campaign_id, customer_id, self.test_percent)

    def in_batch(self, customer_id: int) -> bool:
        """Whether this phase of the run serves the customer (a test phase its slice, the rest
        phase everyone else; without a phase, everyone)."""
        if self.exp is None or self.exp.phase is None or self.test_percent is None:
            return True
        return self._rest(customer_id) == (self.exp.phase == "rest")

    def variant(self, customer_id: int) -> str:
        """The customer's variant key, HOLDOUT or GLOBAL_CONTROL: the winner, once there is one,
        for everyone outside the test slice."""
        key = self._split(customer_id)
        if key in (HOLDOUT, GLOBAL_CONTROL) or self.exp is None or not self.exp.winner or not self._rest(customer_id):
            return key
        return self.exp.winner

    def ledger_variant(self, customer_id: int) -> str | None:
        """The variant a skipped recipient is recorded with: None for the rest of a winner test
        whose winner was never chosen (stopped or cancelled), who were assigned nothing."""
        key = self.variant(customer_id)
        if key in (HOLDOUT, GLOBAL_CONTROL) or not self._rest(customer_id):
            return key
        return self.exp.winner if self.exp is not None and self.exp.winner else None


def decide(experiment: ExperimentSpec, cells: list[VariantStat], picked: str | None = None) -> Decision:
    """The winner of a test: the leader on the metric when a two-sided two-proportion z-test
    against the runner-up has p < 1 - confidence and every variant has min_per_variant trials;
    else what `if_inconclusive` says. A marketer's pick wins over both, with the statistics kept."""
    alpha = 1 - experiment.confidence
    ranked = sorted((c for c in cells if c.trials), key=lambda c: -(c.rate or 0.0))  # stable: ties keep order
    leader = ranked[0] if ranked else None
    runner = ranked[1] if len(ranked) > 1 else None
    statistic = p_value = None
    if leader is not None and runner is not None:
        result = stats.two_proportion_z(leader.successes, leader.trials, runner.successes, runner.trials)
        statistic, p_value = result.statistic, result.p_value
    short = [c.variant for c in cells if c.trials < experiment.min_per_variant]
    common = {
        "metric": experiment.metric,
        "leader": leader.variant if leader else None,
        "runner_up": runner.variant if runner else None,
        "statistic": statistic,
        "p_value": p_value,
        "alpha": alpha,
        "min_per_variant": experiment.min_per_variant,
        "variants": cells,
    }
    if picked is not None:
        return Decision(winner=picked, how="picked", reason=f"{picked} picked by a marketer", **common)
    significant = (
        leader is not None and runner is not None and p_value is not None and p_value < alpha
        and (leader.rate or 0.0) > (runner.rate or 0.0) and not short
    )  # fmt: skip
    if significant and leader is not None and runner is not None:
        reason = (
            f"{leader.variant} leads {runner.variant} on {experiment.metric} rate "
            f"({leader.rate:.3f} vs {runner.rate:.3f}, p = {p_value:.3g} < {alpha:.3g})"
        )
        return Decision(winner=leader.variant, how="test", reason=reason, **common)
    if short:
        why = f"fewer than {experiment.min_per_variant} recipients measured for {', '.join(short)}"
    elif p_value is None:
        why = "fewer than two variants measured"
    else:
        why = f"p = {p_value:.3g} is not below {alpha:.3g}"
    first = cells[0].variant
    if experiment.if_inconclusive == "stop":
        reason = f"inconclusive ({why}): stopped"
        return Decision(winner=None, how="inconclusive", stopped=True, reason=reason, **common)
    if experiment.if_inconclusive == "send_first" or leader is None:
        return Decision(winner=first, how="inconclusive", reason=f"inconclusive ({why}): sending {first}", **common)
    return Decision(
        winner=leader.variant, how="inconclusive", reason=f"inconclusive ({why}): sending the best, {leader.variant}",
        **common,
    )  # fmt: skip


def thompson_weights(cells: Sequence[VariantStat], floor: float, seed: str) -> dict[str, float]:
    """Each variant's share of the next run: the probability it has the best rate under
    independent Beta(1 + successes, 1 + failures) posteriors, estimated from THOMPSON_DRAWS
    draws seeded by `seed` (a replay or retry computes the same weights), then mixed with an
    even `floor` share each so no variant stops being measured."""
    rng = random.Random(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big"))
    wins = dict.fromkeys((c.variant for c in cells), 0)
    for _ in range(THOMPSON_DRAWS):
        draws = [(rng.betavariate(1 + c.successes, 1 + c.trials - c.successes), c.variant) for c in cells]
        wins[max(draws)[1]] += 1
    k = len(cells)
    return {key: round(floor + (1 - floor * k) * n / THOMPSON_DRAWS, 4) for key, n in wins.items()}
