"""Workflow code runs inside the Temporal sandbox, and importing it loads no I/O library.

The sandbox imports a workflow's modules afresh for every run (passing through only what is
marked), so they must import cleanly under its restrictions and stay light: a model module that
pulled in the database driver, an HTTP client or the template engine would cost every run that
import and could reach I/O from workflow code. Nothing here disables the sandbox: the worker
runs the workflow with the SDK's SandboxedWorkflowRunner, as the production workers do.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from activities.names import TEST_SEND
from core.campaigns import test_send_io as send_io  # a module: pytest would try to collect its Test* models
from core.infra.temporal import task_queue_for
from tests.helpers.registry import workflow_definitions
from tests.helpers.stack import ROOT
from workflows.testsend import CampaignTestSendWorkflow

# What workflow code must never load: the database driver, the HTTP client (and its transport)
# and the template engine.
IO_LIBRARIES = ("asyncpg", "httpx", "httpcore", "jinja2")

# Imports every module under workflows/ in a fresh interpreter and prints which I/O libraries
# that loaded.
_PROBE = """
import importlib, json, pkgutil, sys
import workflows
for info in pkgutil.walk_packages(workflows.__path__, "workflows."):
    importlib.import_module(info.name)
print(json.dumps(sorted(m for m in sys.argv[1:] if m in sys.modules)))
"""


def test_importing_workflow_code_loads_no_io_library() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *IO_LIBRARIES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == [], f"importing workflows/ loads {loaded}; workflow modules may import only model modules"


async def test_every_registered_workflow_is_sandboxed_and_validates_in_the_sandbox() -> None:
    """The sandbox's own check, as a worker makes it on start: each workflow's module imports
    under the sandbox's restrictions (in a running event loop, as on a worker). No workflow opts
    out of the sandbox, nor do the workers."""
    runner = SandboxedWorkflowRunner()
    for defn in workflow_definitions():
        assert defn.sandboxed, f"{defn.name} is defined with sandboxed=False"
        runner.prepare_workflow(defn)  # raises when an import is refused
    for path in sorted((ROOT / "workers").rglob("*.py")):
        source = path.read_text()
        assert "UnsandboxedWorkflowRunner" not in source, f"{path.relative_to(ROOT)} disables the sandbox"
        assert "sandboxed=False" not in source, f"{path.relative_to(ROOT)} disables the sandbox"


@activity.defn(name=TEST_SEND)
async def _test_send(inp: send_io.TestSendInput) -> send_io.TestSendResult:
    """Stands in for the real test send (which needs the database and a channel): what is under
    test is the workflow running in the sandbox."""
    return send_io.TestSendResult(
        customer_id=inp.customer_id,
        messages=[send_io.TestSendMessage(email=e, variant=inp.variants[0], status="sent") for e in inp.emails],
    )


async def test_a_workflow_runs_under_the_sandbox(time_skipping_env: WorkflowEnvironment) -> None:
    tenant = f"sandbox-{uuid.uuid4().hex[:8]}"
    queue = task_queue_for(tenant)
    seed = send_io.TestSendInput(
        tenant=tenant,
        campaign_id=str(uuid.uuid4()),
        send_id=str(uuid.uuid4()),
        emails=["seed@example.com"],
        variants=["A"],
    )
    async with Worker(
        time_skipping_env.client,
        task_queue=queue,
        workflows=[CampaignTestSendWorkflow],
        activities=[_test_send],
        workflow_runner=SandboxedWorkflowRunner(),  # the default, named: this test is about it
    ):
        result = await time_skipping_env.client.execute_workflow(
            CampaignTestSendWorkflow.run,
            seed,
            id=f"sandbox-{uuid.uuid4()}",
            task_queue=queue,
        )
    assert result == send_io.TestSendResult(
        customer_id=None, messages=[send_io.TestSendMessage(email="seed@example.com", variant="A", status="sent")]
    )


def test_the_probe_sees_an_io_library_when_one_is_imported() -> None:
    """The import probe is not blind: a module that is imported shows up in its answer."""
    done = subprocess.run(
        [sys.executable, "-c", "import asyncpg\n" + _PROBE, "asyncpg"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["asyncpg"]
