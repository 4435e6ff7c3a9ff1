"""API keys: listed without their secret, revoked keys refused at once, key guessing slowed."""

from __future__ import annotations

import random

import asyncpg
import httpx
from temporalio.client import Client

from api.app import create_app
from core.infra.settings import Settings
from core.tenants.keys import new_key, store_key
from devstack.inprocess import serving
from tests.helpers.stack import free_port
from tests.helpers.tenants import MakeTenant

SECRET_FIELDS = {"key", "key_hash", "hash", "secret"}


def _from_address(api_url: str, address: str, key: str) -> httpx.AsyncClient:
    """A client whose connections come from `address` (any 127.x.y.z reaches the loopback
    server), so limiter tests neither disturb nor are disturbed by other tests' 127.0.0.1."""
    return httpx.AsyncClient(
        base_url=api_url,
        headers={"Authorization": f"Bearer {key}"},
        transport=httpx.AsyncHTTPTransport(local_address=address),
        timeout=30,
    )


def _random_loopback() -> str:
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(2, 254)}"


async def test_keys_are_listed_without_their_secret_and_revoked_keys_are_refused(
    make_tenant: MakeTenant, api_url: str, admin_key: str
) -> None:
    tenant = await make_tenant(customers=0)
    other = await make_tenant(customers=0)
    admin = httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30)
    async with admin:
        issued = await admin.post(tenant.url("/keys"), params={"label": "ci deploys"})
        assert issued.status_code == 201
        second = issued.json()
        assert second["key"].startswith(second["prefix"]) and len(second["prefix"]) < len(second["key"]) - 20

        # A tenant key lists its own tenant's keys: never the key or its hash.
        listed = await tenant.http.get(tenant.url("/keys"))
        assert listed.status_code == 200
        keys = {k["id"]: k for k in listed.json()}
        assert len(keys) == 2
        assert all(not SECRET_FIELDS & set(k) for k in keys.values())
        assert keys[second["id"]]["label"] == "ci deploys"
        assert keys[second["id"]]["prefix"] == second["prefix"]
        assert keys[second["id"]]["tenant"] == tenant.slug
        assert keys[second["id"]]["revoked_at"] is None
        assert keys[second["id"]]["last_used_at"] is None  # not used yet
        (own,) = [k for k in keys.values() if k["id"] != second["id"]]
        assert own["last_used_at"] is not None  # the key that made this very request
        assert tenant.key.startswith(own["prefix"])

        # Using a key records it (at most once a minute).
        async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {second['key']}"}) as ci:
            assert (await ci.get(tenant.url("/campaigns"))).status_code == 200
            used = {k["id"]: k for k in (await tenant.http.get(tenant.url("/keys"))).json()}
            assert used[second["id"]]["last_used_at"] is not None

            # Another tenant sees neither the list nor the keys.
            assert (await other.http.get(tenant.url("/keys"))).status_code == 404
            assert (await other.http.delete(other.url(f"/keys/{second['id']}"))).status_code == 404

            # Revoked by the tenant: refused on its very next request; the tenant's other key works.
            assert (await tenant.http.delete(tenant.url(f"/keys/{second['id']}"))).status_code == 204
            refused = await ci.get(tenant.url("/campaigns"))
            assert refused.status_code == 401
            assert refused.json()["detail"] == "invalid API key"
        assert (await tenant.http.get(tenant.url("/campaigns"))).status_code == 200
        assert (await tenant.http.delete(tenant.url(f"/keys/{second['id']}"))).status_code == 204  # idempotent
        revoked = {k["id"]: k for k in (await tenant.http.get(tenant.url("/keys"))).json()}
        assert revoked[second["id"]]["revoked_at"] is not None
        for missing in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
            response = await tenant.http.delete(tenant.url(f"/keys/{missing}"))
            assert response.status_code == 404
            assert response.json()["detail"] == f"key '{missing}' not found"

        # The admin sees every key: admin keys (tenant null) and every tenant's.
        every = await admin.get("/v1/keys")
        assert every.status_code == 200
        tenants_seen = {k["tenant"] for k in every.json()}
        assert {None, tenant.slug, other.slug} <= tenants_seen
        assert all(not SECRET_FIELDS & set(k) for k in every.json())
        only_other = (await admin.get("/v1/keys", params={"tenant": other.slug})).json()
        assert [k["tenant"] for k in only_other] == [other.slug]
        only_admin = (await admin.get("/v1/keys", params={"admin": "true"})).json()
        assert only_admin and all(k["tenant"] is None for k in only_admin)
        assert (await admin.get(other.url("/keys"))).status_code == 200
        assert (await tenant.http.get("/v1/keys")).status_code == 403

        # The admin revokes another tenant's key: refused next time.
        assert (await admin.delete(f"/v1/keys/{only_other[0]['id']}")).status_code == 204
        assert (await other.http.get(other.url("/campaigns"))).status_code == 401
        assert (await tenant.http.delete(f"/v1/keys/{only_other[0]['id']}")).status_code == 403


async def test_an_admin_key_can_be_revoked(api_url: str, admin_key: str, pool: asyncpg.Pool) -> None:
    spare = new_key("adm")
    spare_id = await store_key(pool, spare, None, "spare admin")
    async with (
        httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {admin_key}"}) as admin,
        httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {spare}"}) as spare_client,
    ):
        assert (await spare_client.get("/v1/tenants")).status_code == 200
        assert (await admin.delete(f"/v1/keys/{spare_id}")).status_code == 204
        assert (await spare_client.get("/v1/tenants")).status_code == 401
        assert (await admin.get("/v1/tenants")).status_code == 200


async def test_repeated_authentication_failures_slow_the_guesser_not_a_working_key_or_the_neighbours(
    make_tenant: MakeTenant, api_url: str, settings: Settings, pool: asyncpg.Pool, temporal_client: Client
) -> None:
    tenant = await make_tenant(customers=0)
    api_settings = settings.model_copy(update={"temporal_address": temporal_client.service_client.config.target_host})
    guesser_address, neighbour_address = _random_loopback(), _random_loopback()
    async with (
        _from_address(api_url, guesser_address, "tk_guess") as guesser,
        _from_address(api_url, guesser_address, tenant.key) as guesser_with_key,
        _from_address(api_url, neighbour_address, "tk_typo") as neighbour,
        _from_address(api_url, neighbour_address, tenant.key) as neighbour_with_key,
    ):
        # The key has worked from the guesser's address before the guessing starts.
        assert (await guesser_with_key.get(tenant.url("/campaigns"))).status_code == 200
        for _ in range(settings.auth_failure_limit):
            assert (await guesser.get(tenant.url("/campaigns"))).status_code == 401
        blocked = await guesser.get(tenant.url("/campaigns"))
        assert blocked.status_code == 429
        retry_after = int(blocked.headers["retry-after"])
        assert 1 <= retry_after <= settings.auth_failure_window_seconds
        assert "too many failed authentications" in blocked.json()["detail"]
        # While blocked, a key that has authenticated is still served from that address (a
        # shared NAT or proxy must not lock out everyone behind it); a new guess is not.
        assert (await guesser_with_key.get(tenant.url("/campaigns"))).status_code == 200
        assert (await guesser.get(tenant.url("/campaigns"))).status_code == 429
        unseen = new_key("tk")
        assert (
            await guesser.get(tenant.url("/campaigns"), headers={"Authorization": f"Bearer {unseen}"})
        ).status_code == 429
        # A valid key never used before, from the blocked address, is served too: the guard
        # looks it up rather than refusing it for failures that were not its own.
        fresh = new_key("tk")
        await store_key(pool, fresh, tenant.slug, "issued during the block")
        assert (
            await guesser.get(tenant.url("/campaigns"), headers={"Authorization": f"Bearer {fresh}"})
        ).status_code == 200
        # The count is shared by every API process: a second one, which has seen none of these
        # failures, refuses the address at its first guess there and still serves the good key.
        async with serving(create_app(api_settings), free_port()) as second_url:
            async with (
                _from_address(second_url, guesser_address, "tk_guess_again") as second_guesser,
                _from_address(second_url, guesser_address, tenant.key) as second_with_key,
            ):
                assert (await second_guesser.get(tenant.url("/campaigns"))).status_code == 401
                assert (await second_guesser.get(tenant.url("/campaigns"))).status_code == 429
                assert (await second_with_key.get(tenant.url("/campaigns"))).status_code == 200
        # Another client is unaffected: its own mistakes are 401 and its good key works.
        assert (await neighbour.get(tenant.url("/campaigns"))).status_code == 401
        assert (await neighbour_with_key.get(tenant.url("/campaigns"))).status_code == 200
        # Requests without a key are not guesses: answered 401, never counted or blocked.
        async with httpx.AsyncClient(
            base_url=api_url, transport=httpx.AsyncHTTPTransport(local_address=_random_loopback())
        ) as anonymous:
            for _ in range(settings.auth_failure_limit + 1):
                assert (await anonymous.get(tenant.url("/campaigns"))).status_code == 401
