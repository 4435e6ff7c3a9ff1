"""Tenant configs: the demo files are valid, and every class of mistake is rejected with its path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.configs.checks import parse_config, parse_config_yaml
from core.tenants.config_schema import json_schema_text
from core.tenants.config_store import ConfigError
from devstack.tenants import config_files, validate_files

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "tenant_configs"


def _freshmart() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((CONFIGS / "freshmart.yaml").read_text())
    return config


def test_every_demo_config_is_valid_and_named_after_its_file() -> None:
    files = config_files(CONFIGS)
    assert {p.stem for p in files} >= {"freshmart", "wellcare-pharmacy", "quickstop"}
    assert validate_files(files) == {p: [] for p in files}


def test_demo_tenants_have_the_promised_shapes() -> None:
    shapes = {p.stem: parse_config_yaml(p.read_text()) for p in config_files(CONFIGS)}
    assert shapes["freshmart"].channels.enabled() == ["email", "sms"]
    assert shapes["quickstop"].channels.enabled() == ["push"]
    pharmacy = shapes["wellcare-pharmacy"]
    assert pharmacy.policies.quiet_hours is not None
    assert set(pharmacy.policies.quiet_hours.channels) == {"email", "sms", "push", "webhook"}
    assert all(pharmacy.policies.consent_required.values())


def test_schema_json_is_up_to_date() -> None:
    assert (CONFIGS / "schema.json").read_text() == json_schema_text(), (
        "tenant_configs/schema.json is stale: run `.venv/bin/pennant tenants schema`"
    )


def _set(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    node = data
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("colour", "green", "colour: unknown key"),
        ("brand.logo", "x.png", "brand.logo: unknown key"),
        ("slug", "Fresh Mart", "slug: must be lowercase letters, digits and '-'"),
        ("brand.from_email", "deals-at-freshmart", "brand.from_email: 'deals-at-freshmart' is not an email address"),
        ("brand.default_time_zone", "America/Chicgo", "brand.default_time_zone: unknown time zone 'America/Chicgo'"),
        ("brand.default_locale", "english", "brand.default_locale: 'english' is not a locale"),
        (
            "channels.sms.credentials.auth_token",
            "s3cr3t-t0ken",
            "channels.sms.credentials.auth_token: a literal secret is not allowed;"
            " store it (PUT /v1/tenants/{tenant}/secrets/NAME) and write secret:NAME",
        ),
        ("channels.sms.provider", "carrier-pigeon", "channels.sms.provider: Input should be 'twilio-like'"),
        ("channels.fax", {"provider": "x"}, "channels.fax: unknown key"),
        ("policies.quiet_hours", {"start": "25:00", "end": "08:00"}, "policies.quiet_hours.start: String should match"),
        ("policies.quiet_hours", {"start": "08:00", "end": "08:00"}, "policies.quiet_hours: start and end must differ"),
        (
            "policies.frequency_caps",
            [{"channel": "email", "max_messages": 0, "window_hours": 24}],
            "policies.frequency_caps[0].max_messages: Input should be greater than or equal to 1",
        ),
        ("execution.batch_size", 0, "execution.batch_size: Input should be greater than or equal to 1"),
        (
            "channels.email.connections",
            0,
            "channels.email.connections: Input should be greater than or equal to 1",
        ),
        (
            "channels.email.connections",
            33,
            "channels.email.connections: Input should be less than or equal to 32",
        ),
        ("channels.email.connections", "many", "channels.email.connections: Input should be a valid integer"),
        (
            "experiments.default_variant_weights",
            {"A": 0},
            "experiments.default_variant_weights: weights must be positive",
        ),
        (
            "templates.weekly_deals.email.subject",
            "Hi {{ frist_name }}",
            "templates.weekly_deals.email.subject: unknown variable 'frist_name' (did you mean 'first_name'?)",
        ),
        (
            "templates.weekly_deals.email.html",
            "<p>{% if %}</p>",
            "templates.weekly_deals.email.html: syntax error at line 1",
        ),
        (
            "templates.weekly_deals.locales.fr-CA.email.subject",
            "Bonjour {{ prenom }}",
            "templates.weekly_deals.locales.fr-CA.email.subject: unknown variable 'prenom'",
        ),
        (
            "segments.lapsed",
            {"attribute": "loyality_tier", "value": "gold"},
            "segments.lapsed.attribute: unknown attribute 'loyality_tier' (did you mean 'loyalty_tier'?)",
        ),
        (
            "segments.lapsed",
            {"attribute": "loyalty_tier", "op": "like", "value": "g%"},
            "segments.lapsed.op: unknown operator 'like'",
        ),
        ("segments.lapsed", {"segment": "lapsed"}, "segments.lapsed.segment: segment 'lapsed' refers to itself"),
    ],
)
def test_each_class_of_invalid_config_is_rejected_with_its_path(path: str, value: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_set(_freshmart(), path, value))
    assert any(err.startswith(expected) or expected in err for err in caught.value.errors), caught.value.errors


def test_several_errors_are_reported_at_once() -> None:
    data = _set(_freshmart(), "slug", "Bad Slug")
    data = _set(data, "channels.sms.credentials.auth_token", "literal")
    data = _set(data, "templates.win_back.email.subject", "{{ frist_name }}")
    data = _set(data, "segments.gold_members.attribute", "tier")
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    paths = sorted(err.split(":")[0] for err in caught.value.errors)
    assert paths == [
        "channels.sms.credentials.auth_token",
        "segments.gold_members.attribute",
        "slug",
        "templates.win_back.email.subject",
    ]


def test_yaml_syntax_errors_give_line_and_column() -> None:
    text = "slug: demo\nbrand:\n  name: [unclosed\n  from_email: a@b.co\n"
    with pytest.raises(ConfigError) as caught:
        parse_config_yaml(text, "demo.yaml")
    (error,) = caught.value.errors
    assert error.startswith("demo.yaml: YAML syntax error at line 4, column")
