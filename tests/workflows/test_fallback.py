"""A campaign's cross-channel fallback on the time-skipping server: after the first send, a
durable timer, then exactly the recipients who did not engage with the first channel (opens and
clicks made through the real tracking endpoints; machine opens do not count) get the second
channel, with caps across channels and the second channel's quiet hours respected."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import asyncpg
from temporalio.testing import WorkflowEnvironment

from core.campaigns.cross_channel import ENGAGED, NOT_REACHED
from core.campaigns.spec import CampaignSpec
from core.infra.settings import Settings
from core.runs.models import RunProgress
from core.tenants.config_schema import Engagement, Experiments, FrequencyCap, Policies, QuietHours
from devstack.provider_simulator import SimulatorControl
from tests.helpers.engagement import click_email, open_email, run_emails
from tests.helpers.histories import write_history
from tests.helpers.run_history import scheduled_batches
from tests.helpers.runs import assert_each_recipient_once, direct_run, ledger_count
from tests.helpers.tenants import store_tenant
from tests.helpers.waiting import until
from workflows.campaign_run import CampaignRunWorkflow

UTC = dt.UTC
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
AFTER = dt.timedelta(hours=2)


def _spec(**changes: Any) -> CampaignSpec:
    return CampaignSpec(
        **{
            "name": "Deals, then a text",
            "channels": ["email"],
            "variants": [{"key": "A", "template": "weekly_deals"}],
            "fallback": {"channel": "sms", "unless": "opened", "after": "2h"},
            **changes,
        }
    )


async def _tenant(pool: asyncpg.Pool, customers: int, policies: Policies) -> str:
    slug = await store_tenant(
        pool,
        "fallback-",
        customers=customers,
        policies=policies,
        experiments=Experiments(),
        engagement=Engagement(machine_seconds=0),
    )
    await pool.execute(
        """UPDATE customers SET email = 'f' || id || '@example.com', consent_email = true,
                                phone = '+1555030' || lpad(id::text, 4, '0'), consent_sms = true,
                                time_zone = 'Asia/Tokyo', locale = 'en-US'
           WHERE tenant_id = $1""",
        slug,
    )
    return slug


async def _skip_to_five_utc(env: WorkflowEnvironment) -> dt.datetime:
    """Skip the server's clock to 05:00 UTC two days on (quiet in New York, not in Tokyo)."""
    now = await env.get_current_time()
    start = dt.datetime.combine((now + dt.timedelta(days=2)).date(), dt.time(5, 0), UTC)
    await env.sleep(start - now)
    return start


async def _ledger(pool: asyncpg.Pool, slug: str, run_id: str, channel: str) -> dict[int, tuple[str, str | None]]:
    rows = await pool.fetch(
        """SELECT customer_id, status, reason FROM deliveries
           WHERE tenant_id = $1 AND run_id = $2::uuid AND channel = $3""",
        slug,
        run_id,
        channel,
    )
    return {r["customer_id"]: (r["status"], r["reason"]) for r in rows}


async def test_the_fallback_reaches_exactly_the_recipients_who_did_not_engage(
    time_skipping_env: WorkflowEnvironment,
    pool: asyncpg.Pool,
    settings: Settings,
    api_url: str,
    workdir: Path,
    sim: SimulatorControl,
) -> None:
    slug = await _tenant(pool, 30, Policies())
    await pool.execute("UPDATE customers SET consent_email = false WHERE tenant_id = $1 AND id = 10", slug)
    async with direct_run(time_skipping_env, pool, settings, slug, _spec()) as (run_id, handle):

        async def first_sent() -> bool:
            return await ledger_count(pool, slug, run_id, "channel = 'email'") == 30

        await until(first_sent, within=60, what="the email to be delivered")
        emails = run_emails(workdir, run_id)
        assert set(emails) == set(range(1, 31)) - {10}
        for customer in range(1, 6):  # opened in a mail client
            await open_email(api_url, emails[customer])
        for customer in range(6, 9):  # clicked (which opens it too)
            await click_email(api_url, emails[customer])
        await open_email(api_url, emails[9], user_agent=GMAIL_PROXY)  # a machine open only
        result: RunProgress = await handle.result()  # skips the fallback's two hours

    assert result.status == "completed", result
    expected = set(range(9, 31)) - {10}
    sms = await _ledger(pool, slug, run_id, "sms")
    assert {c for c, o in sms.items() if o == ("sent", None)} == expected
    assert {c for c, o in sms.items() if o == ("skipped", ENGAGED)} == set(range(1, 9))
    assert sms[10] == ("skipped", NOT_REACHED)
    assert await assert_each_recipient_once(pool, slug, run_id, channels=2) == 30
    texts = await sim.messages(channel="sms", contains=run_id)
    assert len(texts) == len(expected)
    assert result.counts.by_channel["sms"] == {"sent": 21, "failed": 0, "skipped": 9}
    assert result.counts.by_channel["email"]["sent"] == 29

    batches = await scheduled_batches(handle)
    first = [t for t, inp in batches if not inp.get("channels")]
    follow = [t for t, inp in batches if inp.get("channels") == ["sms"]]
    assert first and follow
    assert min(follow) - max(first) >= AFTER, (first, follow)
    if os.environ.get("PENNANT_RECORD_HISTORIES") == "1":  # the replay test's fallback scenario
        write_history("cross_channel_fallback", handle.id, await handle.fetch_history())


async def test_the_fallback_holds_caps_across_channels_and_waits_out_its_quiet_hours(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, settings: Settings
) -> None:
    caps = [FrequencyCap(channel="any", max_messages=2, window_hours=24)]
    quiet = QuietHours(start="21:00", end="08:00", channels=["sms"])
    slug = await _tenant(pool, 20, Policies(frequency_caps=caps, quiet_hours=quiet))
    # Odd customers had an email earlier today (a real run, while only they consented).
    await pool.execute("UPDATE customers SET consent_email = (id % 2 = 1) WHERE tenant_id = $1", slug)
    async with direct_run(time_skipping_env, pool, settings, slug, _spec(name="Earlier", fallback=None)) as (_, h):
        assert (await h.result()).counts.sent == 10
    await pool.execute(
        """UPDATE customers SET consent_email = true,
                  time_zone = CASE WHEN id % 4 IN (0, 1) THEN 'Asia/Tokyo' ELSE 'America/New_York' END
           WHERE tenant_id = $1""",
        slug,
    )
    # 05:00 UTC: the email goes at once (quiet hours are the text's); the text would be due at
    # 07:00 UTC, 16:00 in Tokyo but 02:00/03:00 in New York, which waits for 08:00 there.
    start = await _skip_to_five_utc(time_skipping_env)
    async with direct_run(time_skipping_env, pool, settings, slug, _spec()) as (run_id, handle):
        result: RunProgress = await handle.result()

    assert result.status == "completed", result
    sms = await _ledger(pool, slug, run_id, "sms")
    assert {c for c, o in sms.items() if o == ("skipped", "capped")} == set(range(1, 21, 2)), sms
    assert {c for c, o in sms.items() if o == ("sent", None)} == set(range(2, 21, 2)), sms
    follow = [(t, inp) for t, inp in await scheduled_batches(handle) if inp.get("channels") == ["sms"]]
    at_once = [t for t, inp in follow if inp.get("wave_at") is None]
    deferred = {dt.datetime.fromisoformat(inp["wave_at"]) for _, inp in follow if inp.get("wave_at")}
    assert at_once and all(abs(t - (start + AFTER)) < dt.timedelta(minutes=5) for t in at_once), at_once
    assert len(deferred) == 1
    wave = deferred.pop()
    assert wave.astimezone(dt.timezone(dt.timedelta(hours=-5))).time() == dt.time(8, 0) or wave.astimezone(
        dt.timezone(dt.timedelta(hours=-4))
    ).time() == dt.time(8, 0), wave
    assert all(t >= wave for t, inp in follow if inp.get("wave_at"))


async def test_a_cancel_during_the_fallback_records_its_unsent_recipients_as_cancelled(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, settings: Settings
) -> None:
    quiet = QuietHours(start="21:00", end="08:00", channels=["sms"])
    slug = await _tenant(pool, 20, Policies(quiet_hours=quiet))
    await pool.execute(
        """UPDATE customers SET time_zone = CASE WHEN id % 2 = 0 THEN 'Asia/Tokyo' ELSE 'America/New_York' END
           WHERE tenant_id = $1""",
        slug,
    )
    await _skip_to_five_utc(time_skipping_env)
    async with direct_run(time_skipping_env, pool, settings, slug, _spec()) as (run_id, handle):

        async def sent(channel: str, n: int) -> bool:
            return await ledger_count(pool, slug, run_id, f"channel = '{channel}' AND status = 'sent'") == n

        await until(lambda: sent("email", 20), within=60, what="the email to be delivered")
        await time_skipping_env.sleep(AFTER + dt.timedelta(minutes=1))  # the fallback's wait
        await until(lambda: sent("sms", 10), within=60, what="the fallback to Tokyo (New York is in quiet hours)")
        cancelled: RunProgress = await handle.execute_update(CampaignRunWorkflow.cancel)

    assert cancelled.status == "cancelled", cancelled
    assert await assert_each_recipient_once(pool, slug, run_id, channels=2) == 20
    sms = await _ledger(pool, slug, run_id, "sms")
    assert {c for c, o in sms.items() if o == ("sent", None)} == set(range(2, 21, 2))
    assert {c for c, o in sms.items() if o == ("skipped", "cancelled")} == set(range(1, 21, 2))
