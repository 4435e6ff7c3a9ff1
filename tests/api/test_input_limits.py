"""Input PostgreSQL cannot store is a 422 naming the field, never a 500; bodies are bounded (413)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from core.infra.settings import Settings
from tests.helpers.tenants import MakeTenant

CAMPAIGN = {
    "name": "Deals",
    "segment": {},
    "channels": ["email"],
    "variants": [{"key": "A", "template": "weekly_deals"}],
}
OPERATORS = [
    ("eq", "a\u0000b"),
    ("ne", "a\u0000b"),
    ("in", ["ok", "a\u0000b"]),
    ("not_in", ["a\u0000b"]),
    ("gt", "a\u0000b"),
    ("gte", "a\u0000b"),
    ("lt", "a\u0000b"),
    ("lte", "a\u0000b"),
    ("contains", "a\u0000b"),
]


@pytest.mark.parametrize(("op", "value"), OPERATORS)
@pytest.mark.parametrize("attribute", ["attributes.x", "first_name"])
async def test_a_nul_in_a_segment_value_is_422_in_every_operator(
    make_tenant: MakeTenant, attribute: str, op: str, value: Any
) -> None:
    """Regression: these answered 500 (PostgreSQL refuses NUL in text and jsonb)."""
    tenant = await make_tenant(customers=3)
    segment = {"attribute": attribute, "op": op, "value": value}
    response = await tenant.http.post(tenant.url("/segments:estimate"), json={"segment": segment})
    assert response.status_code == 422, response.text
    where = "body.segment.value" + ("[1]" if op == "in" else "[0]" if op == "not_in" else "")
    assert response.json()["errors"] == [f"{where}: contains a NUL character"]


async def test_unpaired_surrogates_nul_keys_and_many_places_are_all_named(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(customers=0)
    # A lone surrogate can only be written as a JSON escape: raw bytes, not httpx's encoder.
    raw = (
        b'{"segment": {"any": [{"attribute": "city", "op": "eq", "value": "\\ud800"},'
        b' {"attribute": "attributes.a\\u0000", "op": "exists"}, {"\\u0000": 1}]}}'
    )
    response = await tenant.http.post(
        tenant.url("/segments:estimate"), content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["errors"] == [
        "body.segment.any[0].value: contains an unpaired surrogate (not valid Unicode)",
        "body.segment.any[1].attribute: contains a NUL character",
        "body.segment.any[2]: key '\\x00' contains a NUL character",
    ]
    assert body["detail"] == "; ".join(body["errors"])


async def test_unstorable_input_on_other_routes_is_422(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(customers=2)
    named = await tenant.http.post(tenant.url("/campaigns"), json={**CAMPAIGN, "name": "Deals\u0000"})
    assert named.status_code == 422
    assert named.json()["errors"] == ["body.name: contains a NUL character"]

    campaign = (await tenant.http.post(tenant.url("/campaigns"), json=CAMPAIGN)).json()["id"]
    huge = await tenant.http.post(tenant.url(f"/campaigns/{campaign}:preview"), json={"customer_id": 2**70})
    assert huge.status_code == 422
    assert huge.json()["errors"] == [
        "body.customer_id: integer out of range (-9223372036854775808 to 9223372036854775807)"
    ]

    nan = await tenant.http.post(
        tenant.url(f"/campaigns/{campaign}:preview"),
        content=b'{"customer_id": NaN}',
        headers={"content-type": "application/json"},
    )
    assert nan.status_code == 422
    assert nan.json()["errors"] == ["body.customer_id: must be a finite number"]

    suppressed = await tenant.http.delete(tenant.url("/suppressions/email/a%00b@example.com"))
    assert suppressed.status_code == 422
    assert suppressed.json()["errors"] == ["path.address: contains a NUL character"]

    queried = await tenant.http.get(tenant.url("/suppressions"), params={"channel": "email\x00"})
    assert queried.status_code == 422
    assert queried.json()["errors"] == ["query.channel: contains a NUL character"]

    suppression = await tenant.http.post(tenant.url("/suppressions"), json={"channel": "email", "address": "x\x00@y.z"})
    assert suppression.status_code == 422
    assert suppression.json()["errors"] == ["body.address: contains a NUL character"]


async def test_config_bodies_in_json_and_yaml_are_checked(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(customers=0)
    current = (await tenant.http.get(tenant.url("/config"))).json()["config"]
    current["display_name"] = "Fresh\u0000Mart"
    as_json = await tenant.http.put(tenant.url("/config"), json=current)
    assert as_json.status_code == 422
    assert as_json.json()["errors"] == ["body.display_name: contains a NUL character"]
    as_yaml = await tenant.http.post(
        tenant.url("/config:validate"),
        content=f'slug: {tenant.slug}\ndisplay_name: "Fresh\\ud800"\n'.encode(),
        headers={"content-type": "application/yaml"},
    )
    assert as_yaml.status_code == 422
    assert as_yaml.json()["errors"] == ["body.display_name: contains an unpaired surrogate (not valid Unicode)"]


async def test_absurd_nesting_is_422(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(customers=0)
    # Deeper than json.loads can recurse: must not become a RecursionError (500).
    raw = b'{"segment": ' + b'{"not": ' * 5000 + b"{}" + b"}" * 5000 + b"}"
    response = await tenant.http.post(
        tenant.url("/segments:estimate"), content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["errors"] == ["body: nested too deeply (more than 64 levels)"]

    raw = b'{"segment": ' + b'{"not": ' * 70 + b"{}" + b"}" * 70 + b"}"
    response = await tenant.http.post(
        tenant.url("/segments:estimate"), content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert "nested too deeply (more than 64 levels)" in response.json()["detail"]


async def test_request_bodies_over_the_limit_are_413(make_tenant: MakeTenant, settings: Settings) -> None:
    tenant = await make_tenant(customers=0)
    limit = settings.max_request_bytes
    big = {**CAMPAIGN, "name": "x" * limit}
    response = await tenant.http.post(tenant.url("/campaigns"), json=big)
    assert response.status_code == 413
    assert response.json()["detail"] == f"request body larger than {limit} bytes (setting MAX_REQUEST_BYTES)"

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while streaming too
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    streamed = await tenant.http.post(
        tenant.url("/campaigns"), content=chunked(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    # Under the limit the same route still works.
    assert (await tenant.http.post(tenant.url("/campaigns"), json=CAMPAIGN)).status_code == 201


async def test_a_yaml_alias_bomb_is_refused_before_it_expands(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(customers=0)
    current = (await tenant.http.get(tenant.url("/config"))).json()["config"]
    # A few hundred bytes that expand to 10^11 segment nodes once aliases are followed.
    anchors = ["  x0: &x0 {consent: email}"] + [
        f"  x{i}: &x{i} {{any: [{', '.join([f'*x{i - 1}'] * 10)}]}}" for i in range(1, 12)
    ]
    body = f"slug: {tenant.slug}\ndisplay_name: {current['display_name']}\nsegments:\n" + "\n".join(anchors) + "\n"
    response = await tenant.http.post(
        tenant.url("/config:validate"), content=body.encode(), headers={"content-type": "application/yaml"}
    )
    assert response.status_code == 422
    assert response.json()["errors"] == ["body: expands to more than 200000 values (YAML aliases)"]


async def test_a_forged_page_cursor_with_unstorable_values_is_422(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(customers=0)
    campaign = (await tenant.http.post(tenant.url("/campaigns"), json=CAMPAIGN)).json()["id"]
    run = (await tenant.http.post(tenant.url(f"/campaigns/{campaign}/runs"))).json()["run_id"]
    for position in ({"customer_id": 2**70, "channel": "email"}, {"customer_id": 1, "channel": "e\u0000"}):
        cursor = base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")
        response = await tenant.http.get(tenant.url(f"/runs/{run}/deliveries"), params={"cursor": cursor})
        assert response.status_code == 422, response.text
        assert response.json()["errors"] == ["query.cursor: not a cursor from a previous page"]
