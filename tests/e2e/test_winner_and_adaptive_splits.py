"""Winner selection and adaptive splits (issue 13) on the real servers: a winner test sends its
slice, waits out decide_after on the time-skipping server, decides from human engagement only and
sends the winner to exactly the rest; a marketer picks early through the API; an adaptive
campaign's weights move toward the variant that is clicked more, run after run."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import asyncpg
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from core.campaigns.spec import CampaignSpec
from core.experiments import store as experiment_store
from core.experiments.buckets import HOLDOUT
from core.experiments.spec import ExperimentSpec
from core.experiments.winner_selection import in_test_slice
from core.infra.db import tenant_tx
from core.infra.settings import Settings
from core.tenants.config_schema import Policies
from tests.helpers.asserts import not_none
from tests.helpers.histories import write_history
from tests.helpers.hits import record_hits, sent_by_variant
from tests.helpers.runs import assert_each_recipient_once, create_campaign, direct_run, start_run, wait_for_run
from tests.helpers.tenants import MakeTenant, Tenant, store_tenant
from tests.helpers.waiting import until
from workflows.campaign_run import CampaignRunWorkflow

POLICIES = Policies(consent_required={"email": True})  # no frequency caps: runs follow each other
VARIANTS: list[dict[str, Any]] = [
    {"key": "A", "template": "weekly_deals"},
    {"key": "B", "template": "weekly_deals", "subject": "{{ first_name }}, B deals inside"},
]


async def _reachable(pool: asyncpg.Pool, slug: str) -> None:
    """Every customer of the tenant has an email address and consents to email."""
    await pool.execute(
        """UPDATE customers SET consent_email = true, email = coalesce(email, 'c' || id || '@example.com')
           WHERE tenant_id = $1""",
        slug,
    )


async def _ledger(pool: asyncpg.Pool, slug: str, run_id: str) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            """SELECT customer_id, variant, status, created_at FROM deliveries
               WHERE tenant_id = $1 AND run_id = $2::uuid""",
            slug,
            run_id,
        )
    )


async def test_winner_test_sends_the_winner_to_exactly_the_rest(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, settings: Settings
) -> None:
    slug = await store_tenant(pool, "winner-", customers=300, policies=POLICIES)
    await _reachable(pool, slug)
    experiment = ExperimentSpec(mode="winner", test_percent=40, metric="click", decide_after="4h", min_per_variant=20)
    spec = CampaignSpec(
        name="Winner test", channels=["email"], variants=VARIANTS, holdout_percent=10, experiment=experiment
    )
    async with direct_run(time_skipping_env, pool, settings, slug, spec) as (run_id, handle):

        async def waiting() -> bool:
            state = await handle.query(CampaignRunWorkflow.experiment)
            return state is not None and state.phase == "waiting"

        await until(waiting, within=120, what="the test slice to be sent")
        tested = await sent_by_variant(pool, slug, run_id)
        assert set(tested) == {"A", "B"}, tested
        # B is clicked by people more; A only by a link scanner, which never counts.
        await record_hits(pool, slug, run_id, tested["B"][: len(tested["B"]) * 6 // 10], "click")
        await record_hits(pool, slug, run_id, tested["A"][: len(tested["A"]) // 10], "click")
        await record_hits(pool, slug, run_id, tested["A"], "click", machine=True)
        await record_hits(pool, slug, run_id, tested["A"], "open", machine=True)
        result = await handle.result()  # the time-skipping server jumps the 4 h wait
        history = await handle.fetch_history()
    if os.environ.get("PENNANT_RECORD_HISTORIES") == "1":  # the replay test's winner scenario
        write_history("winner_test", handle.id, history)
    assert result.status == "completed", result
    planned = await assert_each_recipient_once(pool, slug, run_id)
    assert planned == 300 and result.counts.sent + result.counts.skipped == 300

    async with tenant_tx(pool, slug) as conn:
        record = not_none(await experiment_store.get(conn, slug, run_id))
        campaign_id = str(await conn.fetchval("SELECT campaign_id FROM runs WHERE id = $1::uuid", run_id))
    decision = not_none(record.decision)
    assert decision.winner == "B" and decision.how == "test", decision
    assert decision.p_value is not None and decision.p_value < 0.05, decision
    stats = {v.variant: v for v in decision.variants}
    assert stats["A"].successes == len(tested["A"]) // 10, "machine clicks must not count"
    assert stats["B"].trials == len(tested["B"]) and stats["A"].trials == len(tested["A"])
    decided_at = not_none(record.decided_at)

    # The durable timer waited decide_after, from when the test slice had been sent.
    timers = [
        e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
    ]
    assert any(abs(t - dt.timedelta(hours=4)) < dt.timedelta(seconds=5) for t in timers), timers

    rest_sent = 0
    for row in await _ledger(pool, slug, run_id):
        in_test = in_test_slice(campaign_id, row["customer_id"], 40)
        if in_test:  # sent in the test, before the decision, never again
            assert row["created_at"] <= decided_at, dict(row)
            if row["status"] == "sent":
                assert row["customer_id"] in tested[row["variant"]], dict(row)
        elif row["variant"] != HOLDOUT:  # the rest: the winner, once, after the decision
            assert row["variant"] == "B" and row["status"] == "sent", dict(row)
            assert row["created_at"] >= decided_at, dict(row)
            rest_sent += 1
    assert rest_sent > 100  # about 90% of the 60% outside the slice


async def _post(tenant: Tenant, path: str, body: dict[str, Any] | None = None) -> Any:
    return await tenant.http.post(tenant.url(path), json=body)


async def test_pick_winner_early_and_extend_the_test(
    make_tenant: MakeTenant, pool: asyncpg.Pool, temporal_client: Client
) -> None:
    tenant = await make_tenant(customers=120, policies=POLICIES)
    await _reachable(pool, tenant.slug)
    # Saved campaigns are checked: one variant has nothing to test, durations need a unit.
    bad = await tenant.http.post(
        tenant.url("/campaigns"),
        json={"name": "x", "channels": ["email"], "variants": VARIANTS[:1], "experiment": {"mode": "winner"}},
    )
    assert bad.status_code == 422 and "experiment.mode" in bad.text, bad.text
    bad = await tenant.http.post(
        tenant.url("/campaigns"),
        json={"name": "x", "channels": ["email"], "variants": VARIANTS,
              "experiment": {"mode": "winner", "decide_after": "4 hours"}},
    )  # fmt: skip
    assert bad.status_code == 422 and "decide_after" in bad.text, bad.text

    experiment = {"mode": "winner", "test_percent": 50, "metric": "open", "decide_after": "2d"}
    # A run still waiting for its send time has no test to decide yet.
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    waiting_run = await start_run(tenant, await create_campaign(tenant, variants=VARIANTS, experiment=experiment,
                                                                send_at=later))  # fmt: skip
    early = await _post(tenant, f"/runs/{waiting_run}:pick-winner", {"variant": "A"})
    assert early.status_code == 409 and "winner test" in early.text, early.text
    assert (await _post(tenant, f"/runs/{waiting_run}:cancel")).status_code == 200

    run_id = await start_run(tenant, await create_campaign(tenant, variants=VARIANTS, experiment=experiment))
    body: dict[str, Any] = {}

    async def deciding() -> bool:
        nonlocal body
        body = (await tenant.http.get(tenant.url(f"/runs/{run_id}"))).json()
        return bool((body.get("experiment") or {}).get("decide_at"))

    await until(deciding, within=60, what="the run to wait for its decision")
    decide_at = dt.datetime.fromisoformat(body["experiment"]["decide_at"])
    unknown = await _post(tenant, f"/runs/{run_id}:pick-winner", {"variant": "Z"})
    assert unknown.status_code == 422 and "unknown variant 'Z'" in unknown.text, unknown.text
    extended = await _post(tenant, f"/runs/{run_id}:extend-test", {"by": "2h"})
    assert extended.status_code == 200, extended.text
    moved = dt.datetime.fromisoformat(extended.json()["experiment"]["decide_at"])
    assert moved - decide_at == dt.timedelta(hours=2)

    picked = await _post(tenant, f"/runs/{run_id}:pick-winner", {"variant": "A"})
    assert picked.status_code == 200, picked.text
    run = await wait_for_run(tenant, run_id)
    assert run["status"] == "completed", run
    decision = run["experiment"]["decision"]
    assert decision["winner"] == "A" and decision["how"] == "picked", decision
    assert {v["variant"] for v in decision["variants"]} == {"A", "B"}
    assert (await _post(tenant, f"/runs/{run_id}:pick-winner", {"variant": "B"})).status_code == 409
    if os.environ.get("PENNANT_RECORD_HISTORIES") == "1":  # the replay test's pick-winner scenario
        picked_history = await temporal_client.get_workflow_handle(run["workflow_id"]).fetch_history()
        write_history("winner_picked", run["workflow_id"], picked_history)

    await assert_each_recipient_once(pool, tenant.slug, run_id)
    campaign_id = run["campaign_id"]
    for row in await _ledger(pool, tenant.slug, run_id):
        if not in_test_slice(campaign_id, row["customer_id"], 50):
            assert row["variant"] == "A", dict(row)

    # A cancel cuts the wait short: the rest are recorded as cancelled, with no variant.
    cancelled_id = await start_run(tenant, campaign_id)
    await until(lambda: _deciding(tenant, cancelled_id), within=60, what="the second run to wait for its decision")
    assert (await _post(tenant, f"/runs/{cancelled_id}:cancel")).status_code == 200
    assert (await wait_for_run(tenant, cancelled_id))["status"] == "cancelled"
    await assert_each_recipient_once(pool, tenant.slug, cancelled_id)
    for row in await _ledger(pool, tenant.slug, cancelled_id):
        if not in_test_slice(campaign_id, row["customer_id"], 50):
            assert row["status"] == "skipped" and row["variant"] is None, dict(row)


async def _deciding(tenant: Tenant, run_id: str) -> bool:
    """Whether the run's winner test is waiting for its decision (its decision time is set)."""
    body = (await tenant.http.get(tenant.url(f"/runs/{run_id}"))).json()
    return bool((body.get("experiment") or {}).get("decide_at"))


async def test_adaptive_weights_move_toward_the_better_variant(make_tenant: MakeTenant, pool: asyncpg.Pool) -> None:
    """Three occurrences of a recurring campaign on its Temporal Schedule: after each, people
    click B twice as often as A (and a bot clicks every A), and the next occurrence's split,
    drawn from the earlier occurrences' human clicks, leans to B."""
    tenant = await make_tenant(customers=200, policies=POLICIES)
    await _reachable(pool, tenant.slug)
    campaign_id = await create_campaign(
        tenant, variants=VARIANTS, experiment={"mode": "adaptive", "metric": "click", "floor": 0.1}
    )
    schedule = tenant.url(f"/campaigns/{campaign_id}/schedule")
    # Far enough apart that each occurrence's clicks are in before the next one starts.
    assert (await tenant.http.put(schedule, json={"interval_seconds": 10})).status_code == 201
    runs: list[dict[str, Any]] = []
    sent: list[dict[str, list[int]]] = []
    while len(runs) < 3:
        page: list[dict[str, Any]] = []

        async def next_completed() -> bool:
            nonlocal page
            body = (await tenant.http.get(tenant.url(f"/runs?campaign_id={campaign_id}&status=completed"))).json()
            page = sorted(body["items"], key=lambda r: r["created_at"])
            return len(page) > len(runs)

        await until(next_completed, within=60, what=f"occurrence {len(runs) + 1} to complete")
        run = (await tenant.http.get(tenant.url(f"/runs/{page[len(runs)]['id']}"))).json()
        runs.append(run)
        by_variant = await sent_by_variant(pool, tenant.slug, run["id"])
        sent.append(by_variant)
        for key, share in (("B", 0.5), ("A", 0.25)):
            ids = by_variant.get(key, [])
            await record_hits(pool, tenant.slug, run["id"], ids[: int(len(ids) * share)], "click")
        await record_hits(pool, tenant.slug, run["id"], by_variant.get("A", []), "click", machine=True)
    assert (await tenant.http.delete(schedule)).status_code == 204

    weights = [r["experiment"]["weights"] for r in runs]
    priors = [{p["variant"]: p for p in r["experiment"]["prior"]} for r in runs]
    assert priors[0]["B"]["trials"] == 0 and abs(weights[0]["B"] - 0.5) < 0.05, weights  # nothing known yet
    last = priors[-1]
    assert last["B"]["trials"] > 0 and last["A"]["successes"] < last["A"]["trials"], last  # bot clicks not counted
    assert weights[-1]["B"] > 0.6 and weights[-1]["B"] > weights[0]["B"], weights
    assert all(w["A"] >= 0.1 for w in weights), weights  # the floor keeps A measured
    assert len(sent[-1]["B"]) > len(sent[-1]["A"]), {k: len(v) for k, v in sent[-1].items()}
