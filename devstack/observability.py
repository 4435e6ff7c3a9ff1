"""Metrics endpoints of the local stack (`pennant dev`): which ports its worker uses and the
URLs the banner shows."""

from __future__ import annotations

import socket

from core.infra.settings import Settings

# The worker's Pennant metrics and its Temporal SDK metrics, when the environment names no port.
DEV_WORKER_METRICS_PORT = 9464
DEV_TEMPORAL_METRICS_PORT = 9465


def _free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def dev_metrics_env(settings: Settings) -> dict[str, str]:
    """WORKER_METRICS_PORT and TEMPORAL_METRICS_PORT for the local worker: 9464 and 9465 when
    the environment sets neither (0 turns one off) and the port is free; a busy port is skipped,
    not fatal, since metrics are optional locally."""
    env: dict[str, str] = {}
    for name, configured, default in (
        ("WORKER_METRICS_PORT", settings.worker_metrics_port, DEV_WORKER_METRICS_PORT),
        ("TEMPORAL_METRICS_PORT", settings.temporal_metrics_port, DEV_TEMPORAL_METRICS_PORT),
    ):
        if configured is None and _free(settings.metrics_host, default):
            env[name] = str(default)
    return env


def metrics_banner(settings: Settings, env: dict[str, str]) -> list[str]:
    """The banner lines naming every metrics URL of the local stack."""
    api = f"http://{settings.api_host}:{settings.api_port}/metrics"
    lines = [f"  Metrics      {api} (API)"]
    for name, what in (("WORKER_METRICS_PORT", "worker"), ("TEMPORAL_METRICS_PORT", "Temporal SDK")):
        port = env.get(name)
        if port and port != "0":
            lines.append(f"               http://{settings.metrics_host}:{port}/metrics ({what})")
    return lines
