"""The committed workflow histories: where they live, which scenarios they must cover, and
how one is written and read (tests/workflows/test_record_histories.py writes them,
tests/workflows/test_replay.py replays them)."""

from __future__ import annotations

import json
from pathlib import Path

from temporalio.client import WorkflowHistory

from tests.helpers.stack import ROOT

HISTORIES = ROOT / "tests" / "workflows" / "histories"
# Each must have at least one history: <scenario>.json, or <scenario>.<part>.json for every
# execution of a continue-as-new chain (.1, .2, …) or a parent and its child (.child).
SCENARIOS = (
    "send_at_timer",
    "rescheduled",
    "local_time_waves",
    "pause_resume",
    "cancel_in_flight",
    "cancel_stops_batches",
    "cancel_while_waiting",
    "continue_as_new",
    "scheduled_occurrence",
    "test_send",
    "failed_run",
    "cross_channel_fallback",  # recorded by tests/workflows/test_fallback.py
    "winner_test",  # recorded by tests/e2e/test_winner_and_adaptive_splits.py, as is winner_picked
    "winner_picked",
    "winner_then_fallback",  # recorded before local-bookkeeping; no longer recordable
    "local_bookkeeping",  # the same run after it and before local-plan; no longer recordable
    "local_plan",  # the same run after local-plan and before one-step-start; no longer recordable
    "one_step_start",  # the same run after one-step-start, recorded by tests/workflows/test_winner_runs.py
)


def history_files() -> list[Path]:
    """Every committed history, in name order."""
    return sorted(HISTORIES.glob("*.json"))


def scenario_of(path: Path) -> str:
    """The scenario a history file belongs to (its name up to the first dot)."""
    return path.name.split(".")[0]


def write_history(name: str, workflow_id: str, history: WorkflowHistory) -> Path:
    """Write `history` as histories/<name>.json, with its workflow id alongside the events."""
    # WorkflowHistory.from_json ignores the extra key; compact, since these files are read, not diffed.
    doc = {"workflowId": workflow_id, **history.to_json_dict()}
    path = HISTORIES / f"{name}.json"
    path.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    return path


def read_history(path: Path) -> WorkflowHistory:
    """A committed history, ready for the Replayer."""
    doc = json.loads(path.read_text())
    return WorkflowHistory.from_json(doc.get("workflowId", path.stem), doc)
