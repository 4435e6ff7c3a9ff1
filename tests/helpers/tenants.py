"""Tenants as tests make them: written straight to the database, and reached through the API
with a key of their own."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any, Protocol

import asyncpg
import httpx

from core.configs.checks import load_config_file
from core.infra.db import tenant_tx
from core.security.secrets import Keyring, put_secret
from core.tenants.config_store import save_config
from core.tenants.keys import new_key, store_key
from devstack.demo_data import seed_customers
from tests.helpers.stack import ISOLATED_PREFIX, PROVIDER_SECRETS, TENANT_CONFIGS, TEST_KEYRING


class Tenant:
    """A tenant made for one test: its slug, API key and an HTTP client that uses the key."""

    def __init__(self, slug: str, key: str, http: httpx.AsyncClient):
        self.slug = slug
        self.key = key
        self.http = http

    def url(self, path: str) -> str:
        """The API path `path` under this tenant (`/v1/tenants/{slug}{path}`)."""
        return f"/v1/tenants/{self.slug}{path}"


class MakeTenant(Protocol):
    """The `make_tenant` fixture: a fresh tenant from a template config, with its own slug."""

    async def __call__(self, template: str = "freshmart", customers: int = 200, **overrides: Any) -> Tenant:
        """Save the template's config (with `overrides`) under a new slug, seed customers, issue a key."""
        ...


async def store_tenant(
    pool: asyncpg.Pool, prefix: str, template: str = "freshmart", customers: int = 0, **overrides: Any
) -> str:
    """Save `template`'s config (with `overrides`) under a new slug `<prefix><random>` and seed
    `customers` customers, straight to the database; the slug."""
    config = load_config_file(TENANT_CONFIGS / f"{template}.yaml")
    slug = f"{prefix}{uuid.uuid4().hex[:8]}"
    config = config.model_copy(update={"slug": slug, **overrides})
    await store_provider_secrets(pool, slug)
    await save_config(pool, config, "test")
    await seed_customers(pool, slug, customers)
    return slug


async def store_provider_secrets(pool: asyncpg.Pool, slug: str) -> None:
    """Give the tenant `slug` every PROVIDER_SECRETS value, as its admins would through the API."""
    keyring = Keyring.parse(TEST_KEYRING)
    async with tenant_tx(pool, slug) as conn:
        for name, value in PROVIDER_SECRETS.items():
            await put_secret(conn, keyring, slug, name, value)


@contextlib.asynccontextmanager
async def api_tenant(pool: asyncpg.Pool, api_url: str, slug: str) -> AsyncIterator[Tenant]:
    """The tenant `slug` with a new API key and an HTTP client that uses it (closed on exit)."""
    key = new_key("tk")
    await store_key(pool, key, slug, "test")
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        yield Tenant(slug, key, http)


@contextlib.asynccontextmanager
async def isolated_api_tenant(
    pool: asyncpg.Pool, api_url: str, customers: int, **overrides: Any
) -> AsyncIterator[Tenant]:
    """A new FreshMart-shaped tenant that no session worker serves (its slug starts with
    ISOLATED_PREFIX), with `customers` customers and `overrides`, reached through the API."""
    slug = await store_tenant(pool, ISOLATED_PREFIX, customers=customers, **overrides)
    async with api_tenant(pool, api_url, slug) as tenant:
        yield tenant
