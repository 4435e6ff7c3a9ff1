"""Helpers shared by the benchmarks: a tenant with a key, waiting on the outbox, stopping a child process."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import time
import uuid
from pathlib import Path

import httpx

from core.configs.checks import load_config_file
from core.security.secrets import Keyring
from core.tenants.config_store import save_config
from core.tenants.keys import new_key, store_key
from devstack.demo_data import seed_customers
from devstack.inprocess import LocalStack
from devstack.tenants import seed_demo_secrets


async def make_tenant(stack: LocalStack, customers: int, **overrides: object) -> tuple[str, httpx.AsyncClient]:
    """A FreshMart-shaped tenant served by the workers; its slug and an HTTP client with its key."""
    base = load_config_file(stack.settings.tenant_configs_dir / "freshmart.yaml")
    slug = f"bench-{uuid.uuid4().hex[:8]}"
    config = base.model_copy(update={"slug": slug, **overrides})
    await seed_demo_secrets(stack.pool, Keyring.parse(stack.settings.secrets_keyring), config)
    await save_config(stack.pool, config, "benchmark")
    await seed_customers(stack.pool, slug, customers)
    key = new_key("tk")
    await store_key(stack.pool, key, slug)
    while slug not in stack.workers.tenants:
        await asyncio.sleep(0.01)
    http = httpx.AsyncClient(base_url=f"{stack.api_url}/v1/tenants/{slug}", headers={"Authorization": f"Bearer {key}"})
    return slug, http


def stop_process(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM a child process and wait up to `grace` seconds for it; SIGKILL it if it is still there."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


async def wait_for_subject(outbox: Path, marker: str, seen: set[str], limit_s: float = 30.0) -> float:
    """Poll the outbox until a message whose subject contains `marker` arrives; returns the time."""
    from email.parser import BytesHeaderParser

    parser = BytesHeaderParser()
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        for path in outbox.glob("*.eml"):
            if path.name in seen:
                continue
            seen.add(path.name)
            if marker in (parser.parsebytes(path.read_bytes())["Subject"] or ""):
                return time.perf_counter()
        await asyncio.sleep(0.005)
    raise TimeoutError(f"no message with {marker!r} within {limit_s}s")


def summary(samples_ms: list[float]) -> str:
    """One line of figures for latency samples in milliseconds: count, median, p95 and max."""
    ordered = sorted(samples_ms)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return f"n={len(ordered)} median={statistics.median(ordered):.0f} ms p95={p95:.0f} ms max={ordered[-1]:.0f} ms"
