"""Customers import: an N-row CSV (default 1,000,000) upserted into a fresh tenant on embedded
PostgreSQL through the path `pennant customers import` uses (core.customers.records.import_file).

    python -m benchmarks.customers_import [N] [--batch-size 5000] [--again]

Prints customers/s for the import (all inserts); with --again the same file is imported a
second time (all updates) and that rate is printed too. Generating the file is not timed.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from core.configs.checks import load_config_file
from core.customers.records import import_file
from core.infra.db import create_pool, migrate
from core.tenants.config_store import save_config
from devstack.postgres import ensure_database, start_embedded

ROOT = Path(__file__).resolve().parent.parent
HEADER = (
    "external_id", "email", "phone", "push_token", "first_name", "last_name", "locale", "time_zone",
    "loyalty_tier", "city", "country", "consent_email", "consent_sms", "consent_push",
    "attributes.preferred_store", "attributes.household_size", "attributes.pet_owner",
)  # fmt: skip
_FIRST = ("Ava", "Liam", "Noah", "Emma", "Olivia", "Mateo", "Chloé", "Zoë", "Sofia", "Ethan", "Amelia", "Lucas")
_LAST = ("Smith", "García", "Nguyen", "Brown", "Tremblay", "Patel", "Martin", "López", "Wilson", "Roy")
_PLACES = (
    ("Chicago", "America/Chicago", "US", "en-US", "312"),
    ("New York", "America/New_York", "US", "en-US", "212"),
    ("Los Angeles", "America/Los_Angeles", "US", "es-US", "213"),
    ("Toronto", "America/Toronto", "CA", "en-CA", "416"),
    ("Montréal", "America/Toronto", "CA", "fr-CA", "514"),
    ("Denver", "America/Denver", "US", "en-US", "303"),
)
_TIERS = ("none", "none", "bronze", "silver", "gold", "platinum")


def write_csv(path: Path, rows: int, seed: int = 7) -> None:
    """An N-row customers CSV shaped like a retailer's export (reserved example.* domains and
    fictional 555-01xx numbers)."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(HEADER)
        for i in range(1, rows + 1):
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            city, zone, country, locale, area = rng.choice(_PLACES)
            has_phone = rng.random() < 0.9
            writer.writerow((
                f"ext-{i:08d}", f"customer.{i}@example.com", f"+1{area}55501{i % 100:02d}" if has_phone else "",
                f"{rng.getrandbits(128):032x}" if rng.random() < 0.6 else "", first, last, locale, zone,
                rng.choice(_TIERS), city, country, "true" if rng.random() < 0.85 else "false",
                "true" if has_phone and rng.random() < 0.5 else "false", "true" if rng.random() < 0.5 else "false",
                f"{city} Downtown", rng.randint(1, 5), "true" if rng.random() < 0.38 else "false",
            ))  # fmt: skip


async def run(rows: int = 1_000_000, batch_size: int = 5_000, again: bool = False) -> None:
    """Import an N-row CSV into a fresh tenant on embedded PostgreSQL and print customers/s."""
    workdir = Path(tempfile.mkdtemp(prefix="pennant-import-"))
    workdir.chmod(0o755)
    pg = start_embedded(workdir / "pg", cleanup="delete")
    try:
        path = workdir / "customers.csv"
        t0 = time.perf_counter()
        write_csv(path, rows)
        size_mb = path.stat().st_size / 1e6
        print(f"customers-import generated {rows:,} rows ({size_mb:.0f} MB) in {time.perf_counter() - t0:.1f} s")
        pool = await create_pool((await ensure_database(pg.get_uri(), "pennant")).owner, max_size=4)
        try:
            await migrate(pool)
            slug = f"bench-{uuid.uuid4().hex[:8]}"
            config = load_config_file(ROOT / "tenant_configs" / "freshmart.yaml")
            await save_config(pool, config.model_copy(update={"slug": slug}), "benchmark")
            passes = ("insert", "update") if again else ("insert",)
            for label in passes:
                t0 = time.perf_counter()
                report = await import_file(pool, slug, path, batch_size=batch_size)
                elapsed = time.perf_counter() - t0
                stored = await pool.fetchval("SELECT count(*) FROM customers WHERE tenant_id = $1", slug)
                print(
                    f"customers-import {label}: {report.rows:,} rows in {elapsed:.1f} s → "
                    f"{report.rows / elapsed:,.0f} customers/s (inserted {report.counts.inserted:,}, "
                    f"updated {report.counts.updated:,}, rejected {report.rejected}, stored {stored:,}; "
                    f"batch {batch_size})"
                )
        finally:
            await pool.close()
    finally:
        pg.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    """Entry point: `python -m benchmarks.customers_import [N] [--batch-size B] [--again]`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("rows", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--again", action="store_true", help="import the same file again (all updates)")
    args = parser.parse_args()
    asyncio.run(run(args.rows, args.batch_size, args.again))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
