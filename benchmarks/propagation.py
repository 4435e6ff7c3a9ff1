"""Config propagation: how long from saving a new config version (PUT /config) until a new
run renders with it (its email, with the new template, arrives at the SMTP sink)?
Target: under one second. Also: how long until a newly created tenant's queue is served."""

from __future__ import annotations

import asyncio
import time

from benchmarks.common import make_tenant, summary, wait_for_subject
from core.tenants.config_schema import Policies
from devstack.inprocess import local_stack

ROUNDS = 10


async def run() -> None:
    """Measure config propagation and new-tenant pickup and print the figures."""
    async with local_stack() as stack:
        # No caps or quiet hours: every round must send its one email.
        slug, http = await make_tenant(stack, customers=1, policies=Policies(consent_required={"email": False}))
        async with http:
            # One customer with email consent, so each run sends exactly one email.
            await stack.pool.execute(
                "UPDATE customers SET consent_email = true, locale = 'en-US' WHERE tenant_id = $1", slug
            )
            campaign = (
                await http.post(
                    "/campaigns",
                    json={
                        "name": "Propagation",
                        "channels": ["email"],
                        "variants": [{"key": "A", "template": "weekly_deals"}],
                    },
                )
            ).json()["id"]
            config = (await http.get("/config")).json()["config"]
            seen: set[str] = set()
            samples = []
            for i in range(ROUNDS):
                marker = f"edition-{i}-{time.time_ns()}"
                config["templates"]["weekly_deals"]["email"]["subject"] = f"{marker} {{{{ first_name }}}}"
                t0 = time.perf_counter()
                saved = await http.put("/config", json=config)
                assert saved.status_code == 200, saved.text
                await http.post(f"/campaigns/{campaign}/runs")
                arrived = await wait_for_subject(stack.outbox, marker, seen)
                samples.append((arrived - t0) * 1000)
        print(f"propagation  save → new run's email rendered with the new template: {summary(samples)}")

        t0 = time.perf_counter()
        _, new_http = await make_tenant(stack, customers=0)
        await new_http.aclose()
        print(
            f"propagation  new tenant saved → its task queue served (incl. seeding 0 customers): "
            f"{(time.perf_counter() - t0) * 1000:.0f} ms"
        )


if __name__ == "__main__":
    asyncio.run(run())
