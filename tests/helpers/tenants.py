"""The tenant a test makes through the `make_tenant` fixture."""

from __future__ import annotations

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
