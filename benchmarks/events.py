"""Events in through the Segment-compatible `/v1/batch`: realistic ~1 KB track events in gzip
batches of at most 500 KB, through the whole path (auth, limits, parse, dedupe, identities,
commit), at one `pennant api` process started as `make run` starts it.

Three figures, each printed beside its goal:
- unique messageIds: events/s acknowledged (goal ≥ 10,000 on the 2-core machine) and p99 per
  batch (goal < 250 ms);
- the same with 20% duplicate messageIds: nothing stored twice, rate within 10% of the first;
- a tenant limited to 1,000 events/s offering far more while another sends about 1,000/s:
  the second's p99 within 2x of its solo figure.

The batches are built and compressed before the clock starts; the load generator's own CPU
share is reported (it shares the machine with the API and PostgreSQL).

    python -m benchmarks.events --seconds 20 --concurrency 4
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import json
import os
import random
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import make_tenant
from benchmarks.tracking_load import _cpu_seconds
from core.events.sources import create_source
from core.tenants.config_schema import Events, Experiments, Policies
from devstack.inprocess import LocalStack, free_port, local_stack
from devstack.launcher import wait_for_port

BATCH_EVENTS = 400
# Repeated messageIds are taken from batches at least this many batches back.
SETTLED_BATCHES = 20  # ~1 KB each: about 400 KB a batch, under Segment's 500 KB
_CATEGORIES = ("dairy", "bakery", "produce", "pantry", "frozen", "beverages", "household", "pharmacy")
_EVENTS = ("Product Viewed", "Product Added", "Cart Viewed", "Checkout Started", "Order Completed")


def _event(i: int, customers: int, message_id: str) -> dict[str, Any]:
    """One realistic track call (about 1 KB of JSON)."""
    sku = f"SKU-{i % 5000:05d}"
    category = _CATEGORIES[i % len(_CATEGORIES)]
    return {
        "type": "track",
        "event": _EVENTS[i % len(_EVENTS)],
        "userId": f"cust-{1 + i % customers:06d}",
        "anonymousId": str(uuid.UUID(int=i)),
        "messageId": message_id,
        "timestamp": "2026-12-08T03:00:00.000Z",
        "properties": {
            "product_id": sku, "sku": sku, "category": category, "name": f"Product {sku} from the {category} aisle",
            "brand": "FreshMart Own", "variant": "regular", "price": round(1 + (i % 400) / 10, 2),
            "quantity": 1 + i % 3, "currency": "USD", "position": i % 24, "coupon": None,
            "url": f"https://shop.example.com/{category}/{sku.lower()}",
            "image_url": f"https://cdn.example.com/images/{sku.lower()}-640x640.jpg",
        },
        "context": {
            "library": {"name": "analytics.js", "version": "5.2.0"},
            "page": {"path": f"/{category}/{sku.lower()}", "referrer": "https://www.google.com/",
                     "title": f"Product {sku} | FreshMart", "url": f"https://shop.example.com/{category}/{sku.lower()}"},
            "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
            "locale": "en-US", "timezone": "America/Chicago", "ip": "203.0.113.7",
        },
    }  # fmt: skip


def _batches(count: int, customers: int, duplicate_share: float, seed: int) -> tuple[list[bytes], int]:
    """`count` gzip batch bodies; with `duplicate_share`, that share of events repeat an earlier
    event's messageId. Returns the bodies and the number of distinct messageIds."""
    rng = random.Random(seed)
    issued: list[str] = []
    bodies = []
    n = 0
    for _ in range(count):
        events = []
        for _ in range(BATCH_EVENTS):
            # A repeat is a retry of a batch answered a while ago (not one still in flight).
            settled = len(issued) - SETTLED_BATCHES * BATCH_EVENTS
            if settled > 0 and rng.random() < duplicate_share:
                message_id = issued[rng.randrange(settled)]
            else:
                message_id = str(uuid.uuid4())
                issued.append(message_id)
            events.append(_event(n, customers, message_id))
            n += 1
        raw = json.dumps({"batch": events, "sentAt": "2026-12-08T03:00:00.000Z"}).encode()
        bodies.append(gzip.compress(raw, compresslevel=6))
    return bodies, len(set(issued))


@dataclass
class Load:
    """What one sender saw."""

    events: int = 0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)


async def _sender(port: int, key: str, bodies: list[bytes], next_body: list[int], stop_at: float, load: Load,
                  pace: float | None = None) -> None:  # fmt: skip
    """One keep-alive connection posting batches back to back (HTTP/1.1 by hand: a client
    library would cost more CPU than the server it measures). `pace`: seconds between posts."""
    auth = base64.b64encode(f"{key}:".encode()).decode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < stop_at and next_body[0] < len(bodies):
            body = bodies[next_body[0]]
            next_body[0] += 1
            began = time.perf_counter()
            head = (
                f"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n"
                f"Content-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode() + body)
            answer = await reader.readuntil(b"\r\n\r\n")
            status = int(answer[9:12])
            length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", answer)
            text = await reader.readexactly(int(length.group(1))) if length else b""
            load.latencies.append(time.perf_counter() - began)
            load.statuses[status] = load.statuses.get(status, 0) + 1
            if status == 200:
                found = json.loads(text)
                load.events += int(found["accepted"]) + int(found["duplicates"])
            if pace is not None:
                await asyncio.sleep(max(0.0, pace - (time.perf_counter() - began)))
    finally:
        writer.close()


def _start_api(stack: LocalStack, port: int, log: Path) -> subprocess.Popen[bytes]:
    """`pennant api` on `port`, on the stack's database and Temporal, as `make run` starts it."""
    settings = stack.settings
    env = {
        **os.environ,
        "PENNANT_ENV": "dev",
        "DATABASE_URL": settings.database_url or "",
        "DATABASE_OWNER_URL": settings.database_owner_url or "",
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "LINK_SIGNING_SECRET": settings.link_signing_secret or "",
        "SECRETS_KEYRING": settings.secrets_keyring or "",
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "OTEL_EXPORTER": "none",
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devstack.cli", "api"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port("127.0.0.1", port, 60, proc)
    except RuntimeError:
        print(log.read_text()[-3000:], file=sys.stderr)
        raise
    return proc


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(0.99 * len(ordered)) - 1))] * 1000 if ordered else float("nan")


async def _tenant(stack: LocalStack, customers: int, events: Events | None = None) -> tuple[str, str]:
    overrides: dict[str, Any] = {"policies": Policies(), "experiments": Experiments()}
    if events is not None:
        overrides["events"] = events
    slug, http = await make_tenant(stack, customers, **overrides)
    await http.aclose()
    key, _ = await create_source(stack.pool, slug, "benchmark")
    return slug, key


async def _drive(port: int, key: str, bodies: list[bytes], seconds: float, concurrency: int,
                 pace: float | None = None) -> tuple[Load, float]:  # fmt: skip
    load, cursor = Load(), [0]
    began = time.monotonic()
    await asyncio.gather(*(_sender(port, key, bodies, cursor, began + seconds, load, pace) for _ in range(concurrency)))
    return load, time.monotonic() - began


async def run(seconds: float = 20.0, concurrency: int = 4, customers: int = 2000) -> dict[str, float]:
    """The three figures; printed and returned."""
    needed = int(seconds * 15_000 / BATCH_EVENTS) + 10  # enough batches for 15k events/s
    unique, _ = _batches(needed, customers, 0.0, 1)
    duplicated, distinct = _batches(needed, customers, 0.2, 2)
    small, _ = _batches(int(seconds * 1_000 / 50) + 10, customers, 0.0, 3)
    small = [gzip.compress(json.dumps({"batch": json.loads(gzip.decompress(b))["batch"][:50]}).encode())
             for b in small]  # fmt: skip
    figures: dict[str, float] = {}
    async with local_stack(provider_events=False) as stack:
        fast = Events(rate_per_second=100_000, burst_seconds=5)
        slug_a, key_a = await _tenant(stack, customers, fast)
        slug_b, key_b = await _tenant(stack, customers, fast)
        _, key_c = await _tenant(stack, customers, Events(rate_per_second=1_000, burst_seconds=1))
        port = free_port()
        proc = _start_api(stack, port, stack.workdir / "events-api.log")
        try:
            cpu0, own0 = _cpu_seconds(proc.pid), time.process_time()
            load, elapsed = await _drive(port, key_a, unique, seconds, concurrency)
            cpu1, own1 = _cpu_seconds(proc.pid), time.process_time()
            figures["events_per_s"] = load.events / elapsed
            figures["p99_ms"] = _p99(load.latencies)
            figures["api_cpu_us_per_event"] = (
                (cpu1 - cpu0) * 1e6 / max(1, load.events) if cpu0 is not None and cpu1 is not None else float("nan")
            )
            figures["generator_cpu_share"] = (own1 - own0) / elapsed
            stored_a = await stack.pool.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", slug_a)

            dup_load, dup_elapsed = await _drive(port, key_b, duplicated, seconds, concurrency)
            figures["dup_events_per_s"] = dup_load.events / dup_elapsed
            repeats = await stack.pool.fetchval(
                "SELECT count(*) - count(DISTINCT message_id) FROM events WHERE tenant_id = $1", slug_b
            )
            figures["stored_twice"] = float(repeats)

            solo, _ = await _drive(port, key_a, small, seconds / 2, 1, pace=0.05)
            flood_task = asyncio.create_task(_drive(port, key_c, unique, seconds / 2, concurrency))
            beside, _ = await _drive(port, key_a, small[len(small) // 2 :], seconds / 2, 1, pace=0.05)
            flood, _ = await flood_task
            figures["solo_p99_ms"], figures["beside_flood_p99_ms"] = _p99(solo.latencies), _p99(beside.latencies)
            figures["flood_429"] = float(flood.statuses.get(429, 0))
        finally:
            proc.terminate()
            proc.wait(30)
    print(
        f"events in (/v1/batch, {BATCH_EVENTS} ~1 KB events per gzip batch, {concurrency} connections, "
        f"{seconds:.0f} s; machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)\n"
        f"  unique ids:   {figures['events_per_s']:,.0f} events/s (goal >= 10,000)   "
        f"p99 {figures['p99_ms']:.0f} ms per batch (goal < 250)   statuses {load.statuses}   stored {stored_a:,}\n"
        f"                API CPU {figures['api_cpu_us_per_event']:.0f} us per event; "
        f"load generator {figures['generator_cpu_share']:.0%} of a CPU\n"
        f"  20% repeats:  {figures['dup_events_per_s']:,.0f} events/s (goal within 10% of the above)   "
        f"stored twice {figures['stored_twice']:.0f} (goal 0; {distinct:,} distinct ids offered)   "
        f"statuses {dup_load.statuses}\n"
        f"  isolation:    a 1,000/s tenant offered more (429s: {figures['flood_429']:.0f}); the other's p99 "
        f"{figures['beside_flood_p99_ms']:.0f} ms vs {figures['solo_p99_ms']:.0f} ms solo (goal within 2x)"
    )
    return figures


def main() -> None:
    """Command line: `python -m benchmarks.events --seconds 20 --concurrency 4`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each figure's load runs")
    parser.add_argument("--concurrency", type=int, default=4, help="keep-alive connections posting at once")
    parser.add_argument("--customers", type=int, default=2000, help="customers of each tenant (the events' userIds)")
    args = parser.parse_args()
    asyncio.run(run(args.seconds, args.concurrency, args.customers))
    sys.stdout.flush()
    os._exit(0)  # Temporal's runtime can abort at exit (sdk-python#300)


if __name__ == "__main__":
    main()
