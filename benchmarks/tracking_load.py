"""Tracking ingestion under load: opens and clicks from real delivered emails, driven at the
`pennant api` process on loopback for a given time.

The stack is the in-process local stack (embedded PostgreSQL, Temporal dev server, SMTP sink,
workers); a real run delivers a FreshMart email to every customer, and the pixel and link URLs
are read from the sink's messages. The load then goes to a separate `pennant api` process on
the same database, started as `make run` starts it, so the load generator does not share its
interpreter. Keep-alive connections, each sending one request after another; every answer is
timed. At the end the rows in message_events are counted: events lost = hits acknowledged
(200 for a pixel, 302 for a click) minus rows stored.

    python -m benchmarks.tracking_load --seconds 60 --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from benchmarks.common import make_tenant
from core.runs.models import TERMINAL_STATUSES
from core.tenants.config_schema import Experiments, Policies
from devstack.inprocess import LocalStack, free_port, local_stack
from devstack.launcher import wait_for_port
from devstack.smtp_sink import read_outbox

# What opens and clicks come from: mostly people, some proxies and scanners (flagged machine).
AGENTS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    "Mozilla/5.0",
)
_PIXEL = re.compile(r'<img src="([^"]+/t/o/[A-Za-z0-9_-]+)"')
_CLICK = re.compile(r'href="([^"]+/t/c/[A-Za-z0-9_-]+)"')


@dataclass
class Load:
    """What the load generator saw: acknowledged hits, other answers, latencies in seconds."""

    acked: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)


async def _deliver(stack: LocalStack, customers: int) -> tuple[str, list[str], list[str]]:
    """Run a FreshMart email campaign to `customers` customers; (tenant, pixel paths, click paths)."""
    slug, http = await make_tenant(stack, customers, policies=Policies(), experiments=Experiments())
    async with http:
        body = {
            "name": "Tracking load",
            "segment": {},
            "channels": ["email"],
            "variants": [{"key": "A", "template": "weekly_deals"}],
        }
        created = await http.post("/campaigns", json=body)
        created.raise_for_status()
        started = await http.post(f"/campaigns/{created.json()['id']}/runs")
        started.raise_for_status()
        run_id = started.json()["run_id"]
        while (run := (await http.get(f"/runs/{run_id}")).json())["status"] not in TERMINAL_STATUSES:
            await asyncio.sleep(0.2)
    if run["status"] != "completed":
        raise RuntimeError(f"the seeding run did not complete: {run}")
    pixels: list[str] = []
    clicks: list[str] = []
    for message in read_outbox(stack.outbox):
        if f":{run_id}:" not in (message["X-Pennant-Idempotency-Key"] or ""):
            continue
        html = str(message.get_body(("html",)).get_content())
        pixels += [urlparse(u).path for u in _PIXEL.findall(html)]
        clicks += [urlparse(u).path for u in _CLICK.findall(html)]
    if not pixels or not clicks:
        raise RuntimeError("the delivered emails carry no tracked links (is tracking on?)")
    return slug, pixels, clicks


def _start_api(stack: LocalStack, port: int, log: Path) -> subprocess.Popen[bytes]:
    """`pennant api` on `port`, on the stack's database and Temporal, as `make run` starts it."""
    env = {
        **os.environ,
        "DATABASE_URL": stack.settings.database_url or "",
        "TEMPORAL_ADDRESS": stack.settings.temporal_address,
        "LINK_SIGNING_SECRET": stack.settings.link_signing_secret or "",
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "OTEL_EXPORTER": "none",
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devstack.cli", "api"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    wait_for_port("127.0.0.1", port, 60, proc)
    return proc


async def _client(port: int, paths: list[str], start: int, stop_at: float, load: Load) -> None:
    """One keep-alive connection sending GETs back to back until `stop_at` (HTTP/1.1 by hand:
    a full client library would cost more CPU than the server it measures)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = start
    try:
        while time.monotonic() < stop_at:
            path, agent = paths[i % len(paths)], AGENTS[i % len(AGENTS)]
            i += 1
            began = time.perf_counter()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {agent}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            if length:
                await reader.readexactly(int(length.group(1)))
            load.latencies.append(time.perf_counter() - began)
            if status in (200, 302):
                load.acked += 1
            else:
                load.refused[str(status)] += 1
    finally:
        writer.close()


def _mix(pixels: list[str], clicks: list[str], click_share: float) -> list[str]:
    """Every pixel, with clicks interleaved so that `click_share` of all hits are clicks."""
    paths: list[str] = []
    due, taken = 0.0, 0
    for pixel in pixels:
        paths.append(pixel)
        due += click_share / (1 - click_share)
        while due >= 1:
            paths.append(clicks[taken % len(clicks)])
            taken, due = taken + 1, due - 1
    return paths


def _cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) process `pid` has used so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] * 1000


async def run(
    seconds: float = 60.0, concurrency: int = 64, customers: int = 2000, click_share: float = 0.3
) -> dict[str, float]:
    """Deliver one run, drive its opens and clicks at the API for `seconds`; print and return the figures."""
    async with local_stack(provider_events=False) as stack:
        slug, pixels, clicks = await _deliver(stack, customers)
        paths = _mix(pixels, clicks, click_share)
        port = free_port()
        proc = _start_api(stack, port, stack.workdir / "tracking-api.log")
        try:
            load = Load()
            cpu_before, own_before = _cpu_seconds(proc.pid), time.process_time()
            began = time.monotonic()
            await asyncio.gather(*(_client(port, paths, i * 7919, began + seconds, load) for i in range(concurrency)))
            elapsed = time.monotonic() - began
            cpu_after, own_cpu = _cpu_seconds(proc.pid), time.process_time() - own_before
        finally:
            proc.terminate()
            proc.wait(30)
        stored = await stack.pool.fetchval(
            "SELECT count(*) FROM message_events WHERE tenant_id = $1 AND kind IN ('open', 'click')", slug
        )
        machine = await stack.pool.fetchval(
            "SELECT count(*) FROM message_events WHERE tenant_id = $1 AND kind IN ('open', 'click') AND machine", slug
        )
    ordered = sorted(load.latencies)
    figures = {
        "hits_per_s": load.acked / elapsed,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": _pct(ordered, 0.99),
        "max_ms": ordered[-1] * 1000,
        "acked": load.acked,
        "stored": stored,
        "lost": max(0, load.acked - stored),
        # On a shared machine hits/s says as much about the neighbours as about the API; the
        # API process's own CPU time per hit does not.
        "api_cpu_ms_per_hit": (cpu_after - cpu_before) * 1000 / max(1, load.acked)
        if cpu_before is not None and cpu_after is not None
        else float("nan"),
        "load_average": os.getloadavg()[0],
        "generator_cpu_share": own_cpu / elapsed,
    }
    print(
        f"tracking load: {seconds:.0f} s, {concurrency} connections, {len(pixels)} pixels and "
        f"{len(set(clicks))} distinct click links from {customers} delivered emails\n"
        f"  {figures['hits_per_s']:,.0f} hits/s acknowledged   p50 {figures['p50_ms']:.1f} ms   "
        f"p99 {figures['p99_ms']:.1f} ms   max {figures['max_ms']:.0f} ms\n"
        f"  acknowledged {load.acked:,}   stored {stored:,} ({machine:,} flagged machine)   "
        f"lost {figures['lost']:,}   other answers {dict(load.refused) or 'none'}\n"
        f"  API process CPU {figures['api_cpu_ms_per_hit']:.3f} ms per hit "
        f"(at most {1000 / figures['api_cpu_ms_per_hit']:,.0f} hits/s on a core of its own); "
        f"load generator {figures['generator_cpu_share']:.0%} of a CPU; "
        f"machine load average {figures['load_average']:.1f} on {os.cpu_count()} CPUs"
    )
    return figures


def main() -> None:
    """Command line: `python -m benchmarks.tracking_load --seconds 60 --concurrency 64`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to drive the load")
    parser.add_argument("--concurrency", type=int, default=64, help="keep-alive connections sending at once")
    parser.add_argument("--customers", type=int, default=2000, help="customers the seeding run emails")
    parser.add_argument("--click-share", type=float, default=0.3, help="share of hits that are clicks")
    args = parser.parse_args()
    if not 0 <= args.click_share < 1:
        parser.error("--click-share must be at least 0 and below 1")
    # The load generator must not be the bottleneck: uvloop's event loop where it is installed.
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    figures = runner(run(args.seconds, args.concurrency, args.customers, args.click_share))
    sys.stdout.flush()
    os._exit(0 if figures["lost"] == 0 else 1)  # Temporal's runtime can abort at exit (sdk-python#300)


if __name__ == "__main__":
    main()
