"""SMS, push and webhook rendering: locale selection, the SMS opt-out footer, payload checks."""

from __future__ import annotations

from typing import Any

from core.content.rendering import check_template_set
from core.content.templating import (
    content_for_locale,
    email_for_locale,
    render_context,
    render_push,
    render_sms,
    render_webhook,
)
from core.tenants.config_schema import Brand, TemplateSet
from tests.helpers.asserts import not_none

BRAND = Brand(name="Fresh & Co", from_email="deals@fresh.example.com", base_url="https://fresh.example.com")
CUSTOMER = {"first_name": "Zoë", "last_name": "O'Brien", "external_id": "cust-000042", "loyalty_tier": "gold",
            "locale": "fr-CA", "attributes": {"preferred_store": "Montréal <Downtown>"}}  # fmt: skip


def ctx() -> dict[str, Any]:
    """The render context of one sample customer, brand and campaign."""
    return render_context(CUSTOMER, BRAND, {"id": "c1", "name": "Spring"}, "A", "https://u.example/u/tok")


def tset(data: dict[str, Any]) -> TemplateSet:
    """A TemplateSet validated from `data`."""
    return TemplateSet.model_validate(data)


def test_content_for_locale_prefers_exact_then_language_then_default() -> None:
    locales = {
        "fr-CA": {"sms": {"body": "fr-CA"}},
        "fr": {"sms": {"body": "fr"}},
        "es": {"email": {"subject": "es", "html": "h"}},
    }
    t = tset({"sms": {"body": "default"}, "email": {"subject": "s", "html": "h"}, "locales": locales})
    assert not_none(content_for_locale(t, "sms", "fr-CA")).body == "fr-CA"
    assert not_none(content_for_locale(t, "sms", "fr-FR")).body == "fr"
    assert not_none(content_for_locale(t, "sms", "en-US")).body == "default"
    # A locale without this channel's part falls through to the default part.
    assert not_none(content_for_locale(t, "sms", "es-MX")).body == "default"
    assert content_for_locale(t, "push", "fr-CA") is None
    assert not_none(email_for_locale(t, "es-MX")).subject == "es"


def test_sms_gets_the_platform_footer_and_is_never_html_escaped() -> None:
    sms = render_sms(not_none(tset({"sms": {"body": "  {{ brand.name }}: hi {{ first_name }} <3  "}}).sms), ctx())
    assert sms.body == "Fresh & Co: hi Zoë <3\nReply STOP to opt out. Fresh & Co"


def test_push_renders_title_body_and_data() -> None:
    template = {
        "title": "Hi {{ first_name }}",
        "body": "At {{ attributes.preferred_store }}",
        "data": {"link": "app://c/{{ campaign.id }}?v={{ variant }}"},
    }
    push = render_push(not_none(tset({"push": template}).push), ctx())
    assert (push.title, push.body, push.data) == ("Hi Zoë", "At Montréal <Downtown>", {"link": "app://c/c1?v=A"})


def test_webhook_renders_every_string_and_keeps_other_values() -> None:
    payload = {"event": "campaign.message", "customer": {"id": "{{ external_id }}", "tier": "{{ loyalty_tier }}"},
               "tags": ["{{ brand.name }}", 1, True, None], "score": 2.5}  # fmt: skip
    rendered = render_webhook(not_none(tset({"webhook": {"payload": payload}}).webhook), ctx())
    assert rendered.payload == {"event": "campaign.message", "customer": {"id": "cust-000042", "tier": "gold"},
                                "tags": ["Fresh & Co", 1, True, None], "score": 2.5}  # fmt: skip


def test_unknown_variables_in_push_data_and_webhook_payload_are_found_with_their_path() -> None:
    t = tset({
        "push": {"title": "t", "body": "b", "data": {"link": "{{ campain.id }}"}},
        "webhook": {"payload": {"a": {"b": ["ok {{ first_name }}", "{{ frist_name }}"]}, "n": 3}},
        "locales": {"fr": {"webhook": {"payload": {"x": "{% if %}"}}}},
    })  # fmt: skip
    errors = check_template_set("promo", t, BRAND)
    assert "templates.promo.push.data.link: unknown variable 'campain' (did you mean 'campaign'?)" in errors
    assert (
        "templates.promo.webhook.payload.a.b[1]: unknown variable 'frist_name' (did you mean 'first_name'?)" in errors
    )
    assert any(e.startswith("templates.promo.locales.fr.webhook.payload.x: syntax error") for e in errors)
    assert len(errors) == 3
