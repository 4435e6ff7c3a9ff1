"""GET /healthz answers 200 when PostgreSQL and Temporal answer, 503 naming what is down."""

from __future__ import annotations

import httpx
from temporalio.client import Client

from api.app import create_app
from core.infra.settings import Settings
from devstack.inprocess import free_port, serving
from devstack.temporal_server import start_local_environment


async def test_healthz_ok(api_url: str) -> None:
    async with httpx.AsyncClient(base_url=api_url) as http:
        response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"postgres": "ok", "temporal": "ok"}


async def test_healthz_names_temporal_when_it_is_down(settings: Settings, temporal_client: Client) -> None:
    # An API whose Temporal goes away after start: the check must say so, not hang or 500.
    env = await start_local_environment()
    target = env.client.service_client.config.target_host
    app = create_app(settings.model_copy(update={"temporal_address": target}))
    async with serving(app, free_port()) as url:
        await env.shutdown()
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            response = await http.get("/healthz")
        assert response.status_code == 503
        body = response.json()
        assert body["checks"]["postgres"] == "ok"
        assert body["checks"]["temporal"].startswith("down")
        assert body["status"] == "down: temporal"
