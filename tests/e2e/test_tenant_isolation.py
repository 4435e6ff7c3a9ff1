"""A failure in one tenant never touches another: a tenant whose provider credentials are
missing fails its own run with a clear reason while another tenant's run, started at the
same moment on the same workers, delivers to everyone."""

from __future__ import annotations

import asyncio

from core.tenants.config_schema import Channels, EmailChannel, Policies, SmsChannel
from tests.helpers.runs import create_campaign, start_run, wait_for_run
from tests.helpers.tenants import MakeTenant, Tenant

EVERYONE = Policies(consent_required={"email": False, "sms": False})


async def _start(tenant: Tenant, channels: list[str]) -> str:
    return await start_run(tenant, await create_campaign(tenant, name="Isolation", channels=channels))


async def test_one_tenants_broken_channel_does_not_touch_another_tenant(make_tenant: MakeTenant) -> None:
    broken_sms = SmsChannel(credentials={"account_sid": "secret:UNSET_SID", "auth_token": "secret:UNSET_TOKEN"})
    broken = await make_tenant(customers=50, policies=EVERYONE, channels=Channels(email=EmailChannel(), sms=broken_sms))
    healthy = await make_tenant(customers=300, policies=EVERYONE)

    broken_run, healthy_run = await asyncio.gather(_start(broken, ["sms"]), _start(healthy, ["email"]))
    failed, done = await asyncio.gather(wait_for_run(broken, broken_run), wait_for_run(healthy, healthy_run))

    assert failed["status"] == "failed"
    assert "secret UNSET_SID is not set" in failed["error"]
    assert done["status"] == "completed"
    assert done["counts"]["planned"] == 300 and done["counts"]["sent"] == 300
    # The broken tenant's own email still works once its failing campaign is out of the way.
    again = await wait_for_run(broken, await _start(broken, ["email"]))
    assert again["status"] == "completed" and again["counts"]["sent"] == 50
