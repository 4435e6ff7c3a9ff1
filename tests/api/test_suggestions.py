"""POST …/campaigns/{id}:suggest through the real API: ranked subject lines learnt from the
tenant's own results, or asked of a chat-completions provider (the provider simulator), each
checked like a saved template; and the tenant-config block that names the provider."""

from __future__ import annotations

import copy
from typing import Any

import asyncpg

from core.tenants.config_schema import ChatProvider, Suggestions
from devstack.provider_simulator import ProviderSimulator, SimulatorControl
from tests.helpers.runs import EMAIL_CAMPAIGN, create_campaign, run_campaign
from tests.helpers.tenants import MakeTenant, Tenant


async def _suggest(tenant: Tenant, campaign_id: str, **body: Any) -> Any:
    return await tenant.http.post(tenant.url(f"/campaigns/{campaign_id}:suggest"), json=body or None)


async def _saves_as_subject(tenant: Tenant, subject: str) -> bool:
    """Whether a campaign with this subject override passes the save-time checks."""
    variant = {"key": "A", "template": "weekly_deals", "subject": subject}
    response = await tenant.http.post(tenant.url("/campaigns"), json={**EMAIL_CAMPAIGN, "variants": [variant]})
    return response.status_code == 201


async def test_results_engine_learns_what_won_and_suggests_valid_subjects(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(customers=200)
    await pool.execute("UPDATE customers SET consent_email = true WHERE tenant_id = $1", tenant.slug)
    # A past run: variant B's personalised subject was opened far more than A's plain one.
    plain, personal = "Fresh deals this week", "{{ first_name }}, your deals are here"
    run = await run_campaign(
        tenant,
        name="Past test",
        variants=[
            {"key": "A", "template": "weekly_deals", "subject": plain},
            {"key": "B", "template": "weekly_deals", "subject": personal},
        ],
    )
    opened = await pool.execute(
        """INSERT INTO message_events (tenant_id, run_id, customer_id, channel, kind, machine, user_agent)
           SELECT tenant_id, run_id, customer_id, channel, 'open', false, 'Mozilla/5.0 (test)'
           FROM deliveries
           WHERE tenant_id = $1 AND run_id = $2::uuid AND status = 'sent'
             AND ((variant = 'B' AND customer_id % 10 < 6) OR (variant = 'A' AND customer_id % 10 < 2))""",
        tenant.slug,
        run["id"],
    )
    assert int(opened.split()[-1]) > 40

    current = "Weekend specials on fresh produce"
    campaign_id = await create_campaign(tenant, variants=[{"key": "A", "template": "weekly_deals", "subject": current}])
    response = await _suggest(tenant, campaign_id)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["engine"] == "results" and body["channel"] == "email" and body["metric"] == "open"
    assert body["current"] == [current]
    assert body["learnt_from"]["runs"] == 1 and body["learnt_from"]["variants"] == 2
    personalised = next(e for e in body["effects"] if e["feature"] == "personalised")
    assert personalised["effect"] > 0.2 and personalised["p_value"] < 0.05, personalised

    suggestions = body["suggestions"]
    assert suggestions and [s["rank"] for s in suggestions] == list(range(1, len(suggestions) + 1))
    rates = [s["predicted_rate"] for s in suggestions]
    assert rates == sorted(rates, reverse=True)
    texts = [s["text"] for s in suggestions]
    assert "{{ first_name }}, weekend specials on fresh produce" in texts, texts
    assert personal in texts and plain not in texts[:1]
    rewrite = suggestions[texts.index("{{ first_name }}, weekend specials on fresh produce")]
    assert "first name" in rewrite["reason"] and rewrite["source"] == "results"
    assert all(s["reason"] for s in suggestions)
    print(
        "\nsuggestions (results engine):", *(f"{s['rank']}. {s['text']} — {s['reason']}" for s in suggestions), sep="\n"
    )
    for text in texts:  # every suggestion passes the checks a saved campaign gets
        assert await _saves_as_subject(tenant, text), text
    # Advisory: the campaign is unchanged.
    stored = (await tenant.http.get(tenant.url(f"/campaigns/{campaign_id}"))).json()
    assert stored["variants"][0]["subject"] == current

    bad_bodies: list[tuple[dict[str, Any], str]] = [
        ({"channel": "push"}, "body.channel"),
        ({"channel": "sms"}, "channel: the campaign does not send on 'sms'"),
        ({"variant": "Z"}, "variant: unknown variant 'Z'"),
        ({"engine": "provider"}, "engine: the tenant has no suggestions.provider configured"),
        ({"limit": 0}, "body.limit"),
    ]
    for bad, field in bad_bodies:
        response = await _suggest(tenant, campaign_id, **bad)
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["errors"][0].startswith(field), (bad, response.json())


async def test_provider_engine_asks_the_chat_completions_api_and_drops_invalid_templates(
    make_tenant: MakeTenant,
    provider_sim: ProviderSimulator,
    sim: SimulatorControl,
) -> None:
    provider = ChatProvider(endpoint=f"{provider_sim.url}/v1", api_key="secret:CHAT_KEY", model="sim-gpt")
    tenant = await make_tenant(customers=0, suggestions=Suggestions(provider=provider))
    stored = await tenant.http.put(tenant.url("/secrets/CHAT_KEY"), json={"value": "sk-test-not-a-real-key"})
    assert stored.status_code == 201, stored.text
    campaign_id = await create_campaign(tenant)

    response = await _suggest(tenant, campaign_id)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["engine"] == "provider"
    texts = [s["text"] for s in body["suggestions"]]
    assert len(texts) == 3 and all(s["source"] == "provider" and s["reason"] for s in body["suggestions"])
    assert texts[0].startswith("{{ first_name }}, ")
    dropped = {d["text"]: d["errors"] for d in body["dropped"]}
    assert len(dropped) == 2
    assert any("unknown variable 'frist_name'" in e for errors in dropped.values() for e in errors), dropped
    assert any("syntax error" in e for errors in dropped.values() for e in errors), dropped
    for text in texts:
        assert await _saves_as_subject(tenant, text), text
    calls = [r for r in await sim.requests() if r["path"] == "/v1/chat/completions"]
    assert len(calls) == 1 and calls[0]["model"] == "sim-gpt" and calls[0]["status"] == 200

    # The results engine can still be asked for; with no past run it has nothing to learn from.
    own = await _suggest(tenant, campaign_id, engine="results")
    assert own.status_code == 200 and own.json()["suggestions"] == [] and "no completed run" in own.json()["note"]

    # The key is the tenant's own secret: while the config uses it, it cannot be deleted.
    in_use = await tenant.http.delete(tenant.url("/secrets/CHAT_KEY"))
    assert in_use.status_code == 409 and "the current config" in in_use.json()["detail"], in_use.text
    missing_key = ChatProvider(endpoint=f"{provider_sim.url}/v1", api_key="secret:NO_SUCH_KEY", model="sim-gpt")
    config = (await tenant.http.get(tenant.url("/config"))).json()["config"]
    config["suggestions"] = Suggestions(provider=missing_key).model_dump(mode="json")
    assert (await tenant.http.put(tenant.url("/config"), json=config)).status_code == 200
    missing = await _suggest(tenant, campaign_id)
    assert missing.status_code == 422
    assert missing.json()["errors"] == [
        f"suggestions.provider.api_key: secret NO_SUCH_KEY is not set for tenant {tenant.slug}"
    ]


async def test_the_suggestions_provider_block_is_validated(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(customers=0)
    config = (await tenant.http.get(tenant.url("/config"))).json()["config"]
    good = copy.deepcopy(config)
    good["suggestions"] = {
        "provider": {"endpoint": "https://llm.example.com/v1", "api_key": "secret:LLM_KEY", "model": "m"}
    }
    valid = await tenant.http.post(tenant.url("/config:validate"), json=good)
    assert valid.status_code == 200 and valid.json()["valid"] is True, valid.text

    bad = copy.deepcopy(config)
    bad["suggestions"] = {"provider": {"endpoint": "ftp://llm.example.com", "api_key": "sk-live-123", "temperature": 2}}
    response = await tenant.http.post(tenant.url("/config:validate"), json=bad)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    for prefix in (
        "suggestions.provider.endpoint: String should match pattern",
        "suggestions.provider.api_key: a literal secret is not allowed",
        "suggestions.provider.model: Field required",
        "suggestions.provider.temperature: unknown key",
    ):
        assert any(e.startswith(prefix) for e in errors), (prefix, errors)
    assert "sk-live-123" not in response.text.replace('"sk-live-123"', "")
