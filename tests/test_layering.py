"""The import contracts in .importlinter hold: core/ packages are layers (no cycle, no upward
import), core imports no application, and workflow code reaches no I/O library. Runs
`lint-imports` as CI would and fails with its report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint_imports), "--no-cache", str(ROOT / ".importlinter")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_core_services_name_the_workflows_as_registered() -> None:
    """core imports no workflow module, so its services name the workflows, updates, query and
    error types by their registered names: those must be the workflows' own."""
    from temporalio import workflow

    from core.campaigns import service as campaign_service
    from core.runs import service as run_service
    from workflows.campaign_run import RUN_STATE_CONFLICT, CampaignRunWorkflow
    from workflows.scheduled_run import ScheduledCampaignWorkflow
    from workflows.testsend import CampaignTestSendWorkflow
    from workflows.winner_selection import EXPERIMENT_CONFLICT, UNKNOWN_VARIANT

    run = workflow._Definition.must_from_class(CampaignRunWorkflow)
    assert run.name == run_service.RUN_WORKFLOW
    assert set(run_service.CONTROL_UPDATES.values()) <= set(run.updates)
    assert run_service.PROGRESS_QUERY in run.queries
    assert workflow._Definition.must_from_class(CampaignTestSendWorkflow).name == campaign_service.TEST_SEND_WORKFLOW
    scheduled = workflow._Definition.must_from_class(ScheduledCampaignWorkflow)
    assert scheduled.name == campaign_service.SCHEDULED_RUN_WORKFLOW
    assert (run_service.RUN_STATE_CONFLICT, run_service.EXPERIMENT_CONFLICT, run_service.UNKNOWN_VARIANT) == (
        RUN_STATE_CONFLICT,
        EXPERIMENT_CONFLICT,
        UNKNOWN_VARIANT,
    )
