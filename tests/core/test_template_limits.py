"""Templates are bounded: loading statements are refused by name, and every limit on work and
output stops a render with a message that names the limit, quickly."""

from __future__ import annotations

import time
from typing import Any

import pytest

from core.content.rendering import check_part, check_template_set, sample_customer
from core.content.templating import (
    EMAIL_HTML,
    EMAIL_SUBJECT,
    MAX_RANGE,
    SMS_BODY,
    TIME_BUDGET_SECONDS,
    RenderFailure,
    check_source,
    render_context,
    render_part,
)
from core.tenants.config_schema import Brand, TemplateSet

BRAND = Brand(name="Fresh & Co", from_email="deals@fresh.example.com")


def ctx() -> dict[str, Any]:
    return render_context(sample_customer(), BRAND, {"id": "c1", "name": "Spring"}, "A", "https://u.example/u/t")


@pytest.mark.parametrize(
    ("source", "tag"),
    [("{% include 'x' %}", "include"), ("{% extends 'base' %}", "extends"), ("{% import 'm' as m %}", "import"),
     ("{% from 'm' import f %}", "import")],
)  # fmt: skip
def test_loading_statements_are_refused_by_name(source: str, tag: str) -> None:
    errors = check_source(source, "templates.t.email.subject")
    assert errors and errors[0].startswith(f"templates.t.email.subject: '{tag}' is not allowed")


@pytest.mark.parametrize(
    ("source", "limit"),
    [
        ("{{ 'a' * 100000000 }}", "over the limit of 100,000"),
        ("{{ range(10**9)|list }}", "range of 1,000,000,000 items is over the limit of 1,000"),
        ("{% for i in range(100000000) %}x{% endfor %}", f"over the limit of {MAX_RANGE:,}"),
        ("{{ '%999999999d' % 1 }}", "format width '999999999' is over the limit"),
        ("{{ '{:>999999999}'.format(1) }}", "format width '999999999' is over the limit"),
        ("{{ 'x'|center(999999999) }}", "width 999999999 is over the limit"),
        ("{{ 7 ** 10000000 }}", "exponent 10000000 is over the limit"),
    ],
)
def test_work_limits_stop_the_render_and_name_the_limit(source: str, limit: str) -> None:
    started = time.monotonic()
    with pytest.raises(RenderFailure) as err:
        render_part(source, ctx(), SMS_BODY)
    assert limit in err.value.reason
    assert time.monotonic() - started < 1.0


def test_nested_loops_stop_at_the_time_budget() -> None:
    source = "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}{% endfor %}{% endfor %}{% endfor %}"  # noqa: E501
    started = time.monotonic()
    with pytest.raises(RenderFailure) as err:
        render_part(source, ctx(), EMAIL_HTML)
    assert f"longer than the limit of {TIME_BUDGET_SECONDS * 1000:.0f} ms" in err.value.reason
    assert time.monotonic() - started < 1.0


def test_output_is_limited_per_part() -> None:
    with pytest.raises(RenderFailure) as err:
        render_part("{% for i in range(1000) %}0123456789{% endfor %}", ctx(), SMS_BODY)
    assert err.value.reason == "output is over the limit of 1,600 characters"
    # A subject must fit one header line.
    with pytest.raises(RenderFailure) as err:
        render_part("Hi\n{{ first_name }}\nthere", ctx(), EMAIL_SUBJECT)
    assert "line break" in err.value.reason


def test_ordinary_templates_render_within_the_limits() -> None:
    source = "{% for i in range(3) %}{{ first_name }} {{ i }};{% endfor %} {{ '%-5s|' % 'ab' }}"
    assert render_part(source, ctx(), SMS_BODY) == "Alex 0;Alex 1;Alex 2; ab   |"


def test_save_time_check_renders_against_a_customer_with_every_attribute() -> None:
    # Any attribute exists on the sample customer, so a template may use one...
    assert check_part("{{ attributes.shoe_size }}", "p", SMS_BODY, ctx()) == []
    # ...but it may not reach into it as if it were something else.
    errors = check_part("{{ attributes.shoe_size.x }}", "variants[0].subject", EMAIL_SUBJECT, ctx())
    assert errors and errors[0].startswith("variants[0].subject: does not render for a sample customer:")


def test_template_set_errors_name_part_and_limit() -> None:
    tset = TemplateSet.model_validate(
        {"sms": {"body": "{{ 'a' * 5000 }}"}, "email": {"subject": "{% include 'x' %}", "html": "<p>hi</p>"}}
    )
    errors = check_template_set("promo", tset, BRAND)
    assert "templates.promo.sms.body: does not render for a sample customer: output is over the limit" in errors[1]
    assert errors[0].startswith("templates.promo.email.subject: 'include' is not allowed")
