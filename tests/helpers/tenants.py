"""The tenant a test makes through the `make_tenant` fixture."""

from __future__ import annotations

from typing import Any, Protocol

import httpx


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
