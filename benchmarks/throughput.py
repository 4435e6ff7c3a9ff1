"""Delivery throughput: one run to a 10,000-customer tenant over real SMTP to the sink."""

from __future__ import annotations

import asyncio
import time

from benchmarks.common import make_tenant
from core.runs import TERMINAL_STATUSES
from core.tenant_config import Channels, EmailChannel

CUSTOMERS = 10_000


async def run() -> None:
    """Measure delivery throughput of one 10,000-recipient run and print it."""
    from devstack.inprocess import local_stack

    async with local_stack() as stack:
        # No send-rate limit (FreshMart's is 200/s): measure the pipeline, not the configured cap.
        _, http = await make_tenant(stack, customers=CUSTOMERS, channels=Channels(email=EmailChannel()))
        async with http:
            campaign = (
                await http.post(
                    "/campaigns",
                    json={
                        "name": "Throughput",
                        "channels": ["email"],
                        "variants": [{"key": "A", "template": "weekly_deals"}],
                    },
                )
            ).json()["id"]
            t0 = time.perf_counter()
            run_id = (await http.post(f"/campaigns/{campaign}/runs")).json()["run_id"]
            while True:
                body = (await http.get(f"/runs/{run_id}")).json()
                if body["status"] in TERMINAL_STATUSES:
                    break
                await asyncio.sleep(0.1)
            elapsed = time.perf_counter() - t0
        counts = body["counts"]
        print(
            f"throughput   {CUSTOMERS} customers, status {body['status']}: planned {counts['planned']}, "
            f"sent {counts['sent']}, skipped {counts['skipped']} in {elapsed:.1f} s → "
            f"{counts['sent'] / elapsed:.0f} emails/s, {counts['planned'] / elapsed:.0f} recipients/s"
        )


if __name__ == "__main__":
    asyncio.run(run())
