"""Email throughput: one run to N customers through the API and the pipeline over real SMTP to
the project's SMTP sink, and a raw aiosmtplib loop sending the same messages to the same sink,
in one benchmark run, side by side:

    python -m benchmarks.throughput --recipients 10000

The raw loop goes first, twice. It sends the message each eligible customer (an address and
email consent) gets, rendered with the delivery activity's own render and the SMTP adapter's
message builder, so its messages are the pipeline's in content and size, over the tenant's
`channels.email.connections` connections (plain asyncio, each connection taking the next
message as it is free), timed from the first connect to the last reply. The first time each
connection renders the next message before it sends it: the pipeline's work without Temporal,
policies and the ledger (as the million benchmark's raw loop is for push). The second time
every message is rendered before the clock starts: sending alone, the sink's ceiling. The
pipeline then runs on the same tenant: a campaign run started through the API, timed from the
POST until its row says it has finished.

The stack runs without provider events (the sink reporting a `delivered` per message to the
API in this process): they are neither the pipeline's nor the raw loop's work.

Goal (issue 10): the pipeline's emails/s at least 0.8 of the raw loop's (the one that renders;
the ratio to sending alone is printed beside it).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiosmtplib

from activities.channels.email_smtp import build_message
from activities.delivery import DeliveryActivities
from activities.lookups import pinned_config
from benchmarks.common import make_tenant
from benchmarks.push_common import PushTenant, load_average, raw_run, run_to_end
from core.content.channels import CHANNELS, message_key
from core.deliverability.dkim import DkimSigner, generate_key, sending_domain
from core.infra.db import tenant_tx
from core.tenants.config_schema import Channels, EmailChannel
from devstack.inprocess import LocalStack, local_stack

GOAL = 0.8


Message = tuple[str, str, bytes]  # sender, recipient, RFC 5322 bytes


async def raw_messages(stack: LocalStack, tenant: PushTenant) -> list[Callable[[], Message]]:
    """For every eligible customer of the tenant, a call that renders the message it gets from
    the campaign as the delivery activity renders it (links tracked)."""
    slug, settings = tenant.slug, stack.settings
    raw = await raw_run(stack, tenant)
    async with tenant_tx(stack.pool, slug) as conn:
        rows = await conn.fetch("SELECT * FROM customers WHERE tenant_id = $1 ORDER BY id", slug)
    customers = [dict(c) for c in rows]
    renderer = DeliveryActivities(stack.pool, {}, settings.public_base_url, settings.link_signing_secret or "")
    entry, config = CHANNELS["email"], raw.config
    # Signed as the pipeline signs (a key of the benchmark's own), so the ratio stays honest.
    signer = DkimSigner.from_pem(sending_domain(config), "bench", generate_key()[0])

    def render(cust: dict[str, Any], address: str) -> Message:
        key = message_key(slug, raw.run_id, cust["id"], "email")
        msg = renderer._render(config, "email", cust, raw.variant, raw.campaign_ctx, key, address, raw.tracking)
        return config.brand.from_email, address, build_message(config, msg, signer)

    makers: list[Callable[[], Message]] = []
    for cust in customers:
        address = entry.address(cust)
        if address and entry.consented(cust):
            makers.append(functools.partial(render, cust, address))
    return makers


def ready(message: Message) -> Callable[[], Message]:
    """The maker of a message rendered already."""
    return lambda: message


async def raw_loop(host: str, port: int, messages: list[Callable[[], Message]], connections: int) -> float:
    """Make and send `messages` over `connections` SMTP connections at once; the seconds it took."""
    queue: Iterator[Callable[[], Message]] = iter(messages)

    async def connection() -> None:
        client = aiosmtplib.SMTP(hostname=host, port=port, timeout=30)
        await client.connect()
        for make in queue:  # one iterator: each message goes once
            sender, recipient, data = make()
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
            raw_rate = send_rate = None
            if only in ("both", "raw"):
                makers = await raw_messages(stack, tenant)
                port = stack.settings.smtp_port
                # The same work as the pipeline's minus the ledger: render each message, send it.
                elapsed = await raw_loop("127.0.0.1", port, makers, connections)
                raw_rate = len(makers) / elapsed
                print(
                    f"throughput   raw loop ({connections} connections), rendering each message as it goes: "
                    f"{len(makers):,} emails in {elapsed:.1f} s → {raw_rate:,.0f} emails/s; {load_average()}",
                    flush=True,
                )
                # Sending alone: every message rendered before the clock starts.
                r0 = time.perf_counter()
                rendered = [make() for make in makers]
                render_s = time.perf_counter() - r0
                size = sum(len(m[2]) for m in rendered) / max(1, len(rendered))
                elapsed = await raw_loop("127.0.0.1", port, [ready(m) for m in rendered], connections)
                send_rate = len(rendered) / elapsed
                print(
                    f"throughput   raw loop ({connections} connections), sending only: {len(rendered):,} emails of "
                    f"{size:,.0f} bytes on average (rendered beforehand in {render_s:.1f} s) sent in "
                    f"{elapsed:.1f} s → {send_rate:,.0f} emails/s; {load_average()}",
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
                if raw_rate and send_rate:
                    print(
                        f"throughput   ratio pipeline / raw: {rate / raw_rate:.2f} against the loop that renders "
                        f"(goal ≥ {GOAL}), {rate / send_rate:.2f} against sending alone",
                        flush=True,
                    )


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
