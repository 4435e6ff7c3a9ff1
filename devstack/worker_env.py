"""`pennant worker` processes started on a given set of servers (the fault tests' and the
benchmarks' own worker processes): their environment, and the processes themselves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from core.infra.settings import Settings

# The checkout: where `python -m devstack.cli` is run from.
ROOT = Path(__file__).resolve().parent.parent


def worker_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """This process's environment with `settings`' servers and secrets (PostgreSQL, Temporal,
    SMTP, provider base URL, link signing, tenant-secrets keyring), no trace exporter, then `overrides`."""
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "DATABASE_OWNER_URL": settings.owner_database_url or "",
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "SMTP_HOST": settings.smtp_host,
        "SMTP_PORT": str(settings.smtp_port),
        "PUBLIC_BASE_URL": settings.public_base_url,
        "LINK_SIGNING_SECRET": settings.link_signing_secret or "",
        "SECRETS_KEYRING": settings.secrets_keyring or "",
        "EGRESS_ALLOW": settings.egress_allow,
        "PROVIDER_BASE_URL": settings.provider_base_url,
        "OTEL_EXPORTER": "none",
        # The tests' and benchmarks' short secrets are allowed only in dev (Settings.check_production).
        "PENNANT_ENV": settings.pennant_env,
        **overrides,
    }


class WorkerProcesses:
    """`pennant worker --tenants <slug>` subprocesses, each logging to a file; all killed on close."""

    def __init__(self, env: dict[str, str], logdir: Path):
        self.env = env
        self.logdir = logdir
        self.started: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}

    def start(self, slug: str) -> subprocess.Popen[bytes]:
        """Start one worker serving only `slug`'s queue."""
        log_path = self.logdir / f"worker-{slug}-{len(self.started)}.log"
        with open(log_path, "wb") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                [sys.executable, "-m", "devstack.cli", "worker", "--tenants", slug],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.started.append(proc)
        self.logs[proc.pid] = log_path
        return proc

    def log_text(self, proc: subprocess.Popen[bytes]) -> str:
        """What the worker has logged so far."""
        return self.logs[proc.pid].read_text(errors="replace")

    def assert_alive(self, proc: subprocess.Popen[bytes]) -> None:
        """Fail with the end of the worker's log if it has exited."""
        if proc.poll() is not None:
            tail = self.log_text(proc)[-3000:]
            raise AssertionError(f"worker {proc.pid} exited with {proc.returncode}:\n{tail}")

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL: no shutdown, no goodbye to Temporal, in-flight activities just stop."""
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def close(self) -> None:
        """Kill every worker still running."""
        for proc in self.started:
            if proc.poll() is None:
                self.kill(proc)

    def __enter__(self) -> WorkerProcesses:
        """These processes, killed when the `with` block ends."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Kill every worker still running."""
        self.close()
