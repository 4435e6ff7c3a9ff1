"""`make bench`: run every benchmark and print its figures."""

from __future__ import annotations

import asyncio
import os
import sys

from benchmarks import customers_import, isolation, many_tenants, million, propagation, results_query, throughput


async def main() -> None:
    """Run every benchmark in turn, each on a stack of its own."""
    for bench in (propagation, throughput, customers_import, results_query):
        await bench.run()
    await many_tenants.run(tenants=100, idle_seconds=10)  # the full size: --tenants 500 --idle-seconds 120
    # The full size: --recipients 1000000; worker processes as `pennant worker` runs by default.
    await million.run(recipients=20_000, worker_processes=os.cpu_count() or 1)
    await isolation.run(a_recipients=50_000, runs=5)  # the full size: --a-recipients 1000000 --b-runs 10


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)  # Temporal's runtime can abort at interpreter exit (sdk-python#300)
