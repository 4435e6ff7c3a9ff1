"""Tenant-supplied work is bounded (issue 21, item 4), through the real API: each template bomb
that used to pass the save checks (and eat seconds of CPU or hundreds of MB on the API's event
loop) is a 422 naming the template path at config save, config:validate and campaign create;
a bomb filled in by customer data at send time fails that message, not the batch or the worker;
a check the sandbox's bounds do not stop is killed in the check pool and is still a 422; and a
named-segment expansion bomb is a 422 naming the segment."""

from __future__ import annotations

import copy
from typing import Any

import asyncpg
import pytest

from core.content.check_pool import CHECK_DEADLINE_SECONDS
from core.tenants.config_schema import Experiments, Policies
from tests.helpers.runs import EMAIL_CAMPAIGN, assert_each_recipient_once, create_campaign, start_run, wait_for_run
from tests.helpers.tenants import MakeTenant, Tenant

# Each bomb of the issue (and its relatives), with the words its 422 must carry.
BOMBS: dict[str, tuple[str, str]] = {
    "power": ("{{ (((10**100)**100)**100)**10 and 1 }}", "exponent 100 is over the limit"),
    "ljust": ("{{ 'a'.ljust(300000000) and 1 }}", "padding width 300,000,000 is over the limit"),
    "zfill": ("{{ 'a'.zfill(300000000) and 1 }}", "padding width 300,000,000 is over the limit"),
    "expandtabs": ("{{ ('\t' * 1000).expandtabs(1000000) and 1 }}", "expandtabs would make"),
    "format_width": ("{{ '{:>99999999}'.format(1) and 1 }}", "format width '99999999' is over the limit"),
    "format_nested_width": ("{{ '{:{}}'.format(1, 99999999) and 1 }}", "may not contain a replacement field"),
    "percent_width": ("{{ '%99999999d' % 1 and 1 }}", "format width '99999999' is over the limit"),
    "percent_star_width": ("{{ '%*d' % (99999999, 1) and 1 }}", "format width '*' is not allowed"),
    "format_filter_width": ("{{ '%99999999s'|format('x') and 1 }}", "format width '99999999' is over the limit"),
    "join_separator": ("{{ range(1000)|join('x' * 50000) and 1 }}", "join would make"),
    "join_method": ("{{ ('x' * 50000).join(range(1000)|map('string')) and 1 }}", "join would make"),
    "lipsum": ("{{ lipsum(100000) and 1 }}", "lipsum is limited to"),
    "tilde_concatenation": ("{% set a = 'a' * 60000 %}{{ (a ~ a) and 1 }}", "concatenation (~) would make"),
    "plus_concatenation": ("{% set a = 'a' * 60000 %}{{ (a + a) and 1 }}", "concatenation would make"),
    "repetition": ("{{ 'ab' * 60000 and 1 }}", "repetition would make 120,000 characters"),
    "replace_method": ("{{ ('a' * 1000).replace('a', 'b' * 1000) and 1 }}", "replace would make 1,000,000"),
    "replace_filter": ("{{ ('a' * 1000)|replace('a', 'b' * 1000) and 1 }}", "replace would make 1,000,000"),
    "center_filter": ("{{ 'x'|center(999999999) and 1 }}", "width 999999999 is over the limit"),
    "int_size": ("{{ (10**1000) * (10**1000) and 1 }}", "multiplication would make a number of about"),
    "method_not_allowed": ("{{ first_name.encode() }}", "'encode' of a str value is not allowed"),
}

EVERYONE: dict[str, Any] = {
    "policies": Policies(consent_required={"email": False, "sms": False}),
    "experiments": Experiments(),
}


async def _config(tenant: Tenant) -> dict[str, Any]:
    response = await tenant.http.get(tenant.url("/config"))
    assert response.status_code == 200, response.text
    config: dict[str, Any] = response.json()["config"]
    return config


def _with_subject(config: dict[str, Any], subject: str) -> dict[str, Any]:
    changed = copy.deepcopy(config)
    changed["templates"]["weekly_deals"]["email"]["subject"] = subject
    return changed


async def test_each_bomb_is_refused_at_save_and_validate_naming_the_template(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(customers=0)
    config = await _config(tenant)
    path = "templates.weekly_deals.email.subject: "
    for name, (source, reason) in BOMBS.items():
        for method, url in (("PUT", "/config"), ("POST", "/config:validate")):
            response = await tenant.http.request(method, tenant.url(url), json=_with_subject(config, source))
            assert response.status_code == 422, (name, url, response.text)
            errors = response.json()["errors"]
            assert len(errors) == 1 and errors[0].startswith(path), (name, errors)
            assert reason in errors[0], (name, errors)
    versions = (await tenant.http.get(tenant.url("/config/versions"))).json()
    assert len(versions) == 1, "nothing was saved"
    # The demo tenant's own templates still pass.
    assert (await tenant.http.post(tenant.url("/config:validate"), json=config)).status_code == 200


async def test_each_bomb_is_refused_at_campaign_create_naming_the_variant(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(customers=0)
    for name, (source, reason) in BOMBS.items():
        body = {**EMAIL_CAMPAIGN, "variants": [{"key": "A", "template": "weekly_deals", "subject": source}]}
        response = await tenant.http.post(tenant.url("/campaigns"), json=body)
        assert response.status_code == 422, (name, response.text)
        error = response.json()["errors"][0]
        assert error.startswith("variants[0].subject: ") and reason in error, (name, error)


async def test_a_check_the_bounds_miss_is_killed_in_the_pool_and_answered_422(make_tenant: MakeTenant) -> None:
    """Each part's render stops at its time budget, but a config of many such parts adds up:
    the check pool's deadline stops the whole check, and the 422 names the template it was on."""
    tenant = await make_tenant(customers=0)
    config = await _config(tenant)
    spin = "{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}"
    for i in range(60):
        config["templates"][f"slow{i}"] = {"email": {"subject": "Hi", "html": spin}}
    response = await tenant.http.post(tenant.url("/config:validate"), json=config)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    stopped = f"the check was stopped: it took longer than {CHECK_DEADLINE_SECONDS:g} s or needed more than"
    assert len(errors) == 1 and stopped in errors[0], errors
    assert errors[0].startswith("templates.slow"), errors
    # The pool replaced the killed child: the next check is answered as usual.
    assert (await tenant.http.post(tenant.url("/config:validate"), json=await _config(tenant))).status_code == 200


async def test_a_send_time_bomb_fails_that_message_and_the_run_goes_on(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(customers=10, **EVERYONE)
    # Half the customers carry a width the sample customer never had: the save check passes.
    await pool.execute(
        """UPDATE customers SET attributes = attributes
               || CASE WHEN id % 2 = 0 THEN '{"w": "300000000"}'::jsonb ELSE '{"w": "3"}'::jsonb END
           WHERE tenant_id = $1""",
        tenant.slug,
    )
    subject = "{{ 'a'.ljust(attributes.w|int) }}!"
    campaign_id = await create_campaign(tenant, variants=[{"key": "A", "template": "weekly_deals", "subject": subject}])
    # A preview for such a customer is a 422 naming the variant, not an allocation of 300 MB.
    bomb_customer = await pool.fetchval(
        "SELECT id FROM customers WHERE tenant_id = $1 AND id % 2 = 0 ORDER BY id LIMIT 1", tenant.slug
    )
    preview = await tenant.http.post(
        tenant.url(f"/campaigns/{campaign_id}:preview"), json={"customer_id": bomb_customer}
    )
    assert preview.status_code == 422, preview.text
    assert preview.json()["errors"][0].startswith("variants[0].subject: "), preview.text
    assert "padding width 300,000,000 is over the limit" in preview.json()["errors"][0]

    run_id = await start_run(tenant, campaign_id)
    run = await wait_for_run(tenant, run_id)
    assert run["status"] == "completed", run
    assert await assert_each_recipient_once(pool, tenant.slug, run_id) == 10
    rows = await pool.fetch(
        "SELECT customer_id, status, reason, detail FROM deliveries WHERE tenant_id = $1 AND run_id = $2::uuid",
        tenant.slug,
        run_id,
    )
    for row in rows:
        if row["customer_id"] % 2 == 0:
            assert (row["status"], row["reason"]) == ("failed", "render_error"), dict(row)
            assert "padding width 300,000,000 is over the limit" in row["detail"], dict(row)
        else:
            assert row["status"] == "sent", dict(row)


@pytest.mark.parametrize("route", ["/config", "/config:validate"])
async def test_a_named_segment_expansion_bomb_is_refused_naming_the_segment(
    make_tenant: MakeTenant, route: str
) -> None:
    """Each named segment refers to the previous one ten times, five levels deep (about 1 KB)."""
    tenant = await make_tenant(customers=0)
    config = await _config(tenant)
    config["segments"]["level0"] = {"attribute": "city", "op": "eq", "value": "Springfield"}
    for level in range(1, 6):
        config["segments"][f"level{level}"] = {"any": [{"segment": f"level{level - 1}"}] * 10}
    response = await tenant.http.request("PUT" if route == "/config" else "POST", tenant.url(route), json=config)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert "segments.level5: expands to more than 2,000 conditions" in errors, errors
    assert not any(e.startswith(("segments.level1:", "segments.level2:")) for e in errors), errors
