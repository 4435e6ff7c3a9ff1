"""Email throughput: one run to N customers through the API and the pipeline over real SMTP to
the project's SMTP sink, and a raw aiosmtplib loop sending the same messages to the same sink,
in one benchmark run, side by side:

    python -m benchmarks.throughput --recipients 10000

The raw loop goes first. It renders, outside its timing, the message each eligible customer
(an address and email consent) gets, with the delivery activity's own render and the SMTP
adapter's message builder, so its messages are the pipeline's in content and size; then it
sends them over the tenant's `channels.email.connections` connections (plain asyncio, each
connection taking the next message as it is free) and is timed from the first connect to the
last reply. The pipeline then runs on the same tenant: a campaign run started through the API,
timed from the POST until its row says it has finished.

The stack runs without provider events (the sink reporting a `delivered` per message to the
API in this process): they are neither the pipeline's nor the raw loop's work.

Goal (issue 10): the pipeline's emails/s at least 0.8 of the raw loop's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib

from activities.channels.email_smtp import build_message
from activities.delivery import DeliveryActivities
from activities.lookups import campaign_spec, pinned_config
from benchmarks.common import make_tenant
from benchmarks.push_common import PushTenant, load_average, run_to_end
from core.channels import CHANNELS, message_key
from core.db import tenant_tx
from core.tenant_config import Channels, EmailChannel
from core.tracking import RunTracking
from devstack.inprocess import LocalStack, local_stack

GOAL = 0.8


async def raw_messages(stack: LocalStack, tenant: PushTenant) -> list[tuple[str, str, bytes]]:
    """(sender, recipient, RFC 5322 bytes) of the message every eligible customer of the tenant
    gets from the campaign, rendered as the delivery activity renders it (links tracked)."""
    slug, settings = tenant.slug, stack.settings
    config = await pinned_config(stack.pool, slug, None)
    async with tenant_tx(stack.pool, slug) as conn:
        spec = await campaign_spec(conn, slug, tenant.campaign_id)
        rows = await conn.fetch("SELECT * FROM customers WHERE tenant_id = $1 ORDER BY id", slug)
    customers = [dict(c) for c in rows]
    run_id = str(uuid.uuid4())
    secret = settings.link_signing_secret or ""
    tracking = RunTracking(secret, settings.public_base_url.rstrip("/"), slug, run_id, config.engagement)
    renderer = DeliveryActivities(stack.pool, {}, settings.public_base_url, secret)
    entry, variant = CHANNELS["email"], spec.variants[0]
    campaign_ctx = {"id": tenant.campaign_id, "name": spec.name}
    messages = []
    for cust in customers:
        address = entry.address(cust)
        if not address or not entry.consented(cust):
            continue
        key = message_key(slug, run_id, cust["id"], "email")
        msg = renderer._render(config, "email", cust, variant, campaign_ctx, key, address, tracking)
        messages.append((config.brand.from_email, address, build_message(config, msg)))
    return messages


async def raw_loop(host: str, port: int, messages: list[tuple[str, str, bytes]], connections: int) -> float:
    """Send `messages` over `connections` SMTP connections at once; the seconds it took."""
    queue: Iterator[tuple[str, str, bytes]] = iter(messages)

    async def connection() -> None:
        client = aiosmtplib.SMTP(hostname=host, port=port, timeout=30)
        await client.connect()
        for sender, recipient, data in queue:  # one iterator: each message goes once
            await client.sendmail(sender, [recipient], data)
        await client.quit()

    t0 = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    return time.perf_counter() - t0


def mean_size(paths: list[Path]) -> float:
    """Mean size in bytes of the files at `paths`."""
    return sum(p.stat().st_size for p in paths) / max(1, len(paths))


async def run(recipients: int = 10_000, only: str = "both", connections: int | None = None) -> None:
    """Measure and print the figures (see the module docstring)."""
    print(f"throughput   {recipients:,} customers, email over SMTP to the sink; {load_average()}", flush=True)
    async with local_stack(provider_events=False) as stack:
        t0 = time.perf_counter()
        # No send-rate limit (FreshMart's is 200/s): measure the pipeline, not the configured cap.
        email = EmailChannel() if connections is None else EmailChannel(connections=connections)
        slug, http = await make_tenant(stack, customers=recipients, channels=Channels(email=email))
        async with http:
            variants = [{"key": "A", "template": "weekly_deals"}]
            campaign = {"name": "Throughput", "channels": ["email"], "variants": variants}
            created = await http.post("/campaigns", json=campaign)
            assert created.status_code == 201, created.text
            tenant = PushTenant(slug, http, created.json()["id"])
            config = await pinned_config(stack.pool, slug, None)
            assert config.channels.email is not None
            connections = config.channels.email.connections  # the raw loop uses the same count
            print(f"throughput   tenant ready in {time.perf_counter() - t0:.1f} s", flush=True)
            raw_rate = None
            if only in ("both", "raw"):
                r0 = time.perf_counter()
                messages = await raw_messages(stack, tenant)
                rendered = time.perf_counter() - r0
                size = sum(len(m[2]) for m in messages) / max(1, len(messages))
                elapsed = await raw_loop("127.0.0.1", stack.settings.smtp_port, messages, connections)
                raw_rate = len(messages) / elapsed
                print(
                    f"throughput   raw loop ({connections} connections): {len(messages):,} emails of "
                    f"{size:,.0f} bytes on average (rendered beforehand in {rendered:.1f} s) sent in "
                    f"{elapsed:.1f} s → {raw_rate:,.0f} emails/s; {load_average()}",
                    flush=True,
                )
            if only in ("both", "pipeline"):
                before = set(stack.outbox.glob("*.eml"))
                outcome = await run_to_end(tenant, poll_seconds=0.1, rows=stack.pool)
                counts, elapsed = outcome.body["counts"], outcome.elapsed_s
                size = mean_size([p for p in stack.outbox.glob("*.eml") if p not in before])
                rate = counts["sent"] / elapsed
                print(
                    f"throughput   pipeline (channels.email.connections {connections}): status "
                    f"{outcome.body['status']}, planned {counts['planned']:,}, sent {counts['sent']:,}, skipped "
                    f"{counts['skipped']:,}, failed {counts['failed']:,} in {elapsed:.1f} s → {rate:,.0f} emails/s "
                    f"of {size:,.0f} bytes on average, {counts['planned'] / elapsed:,.0f} recipients/s; "
                    f"{load_average()}",
                    flush=True,
                )
                ratio = f"{rate / raw_rate:.2f}" if raw_rate else "n/a"
                print(f"throughput   ratio pipeline / raw: {ratio} (goal ≥ {GOAL})", flush=True)


def main() -> None:
    """Parse the command line and run the benchmark."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--only", choices=("both", "pipeline", "raw"), default="both")
    parser.add_argument(
        "--connections", type=int, help="the tenant's channels.email.connections (default: the config's default)"
    )
    args = parser.parse_args()
    asyncio.run(run(args.recipients, args.only, args.connections))


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # Temporal's runtime can abort at interpreter exit (sdk-python#300)
