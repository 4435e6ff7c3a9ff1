"""Replays the committed histories of representative runs against today's workflow code, so a
change that would break runs already in flight fails here instead of in production. No server:
the SDK's Replayer runs the real workflow classes over each recorded history.

The histories are recorded by tests/workflows/test_record_histories.py; see
tests/workflows/histories/README.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.helpers.histories import HISTORIES, SCENARIOS, history_files, read_history, scenario_of
from tests.workflows.changed_workflows import ChangedCampaignRunWorkflow
from workflows.campaign_run import CampaignRunWorkflow
from workflows.scheduled_run import ScheduledCampaignWorkflow
from workflows.testsend import CampaignTestSendWorkflow

FILES = history_files()


def test_every_scenario_has_a_history() -> None:
    recorded = {scenario_of(path) for path in FILES}
    assert sorted(set(SCENARIOS) - recorded) == [], "re-record the missing scenarios (histories/README.md)"
    assert sorted(recorded - set(SCENARIOS)) == [], "a history of no known scenario: add it to SCENARIOS"
    chain = [p for p in FILES if scenario_of(p) == "continue_as_new"]
    assert len(chain) >= 2, "the continue-as-new scenario must hold every execution of its chain"
    assert any(p.name == "scheduled_occurrence.child.json" for p in FILES), "the occurrence's run is missing"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
async def test_history_replays_without_nondeterminism(path: Path) -> None:
    replayer = Replayer(
        workflows=[CampaignRunWorkflow, ScheduledCampaignWorkflow, CampaignTestSendWorkflow],
        data_converter=pydantic_data_converter,
    )
    # Raises on any nondeterminism (or other workflow-task failure) during the replay.
    result = await replayer.replay_workflow(read_history(path))
    assert result.replay_failure is None


async def test_an_unpatched_change_fails_the_replay_with_a_nondeterminism_error() -> None:
    """The harness catches a break (as sdk-python's test_replayer_workflow_nondeterministic does):
    the same history that replays above fails against the changed workflow."""
    replayer = Replayer(workflows=[ChangedCampaignRunWorkflow], data_converter=pydantic_data_converter)
    with pytest.raises(workflow.NondeterminismError):
        await replayer.replay_workflow(read_history(HISTORIES / "one_step_start.json"))
