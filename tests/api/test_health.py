"""GET /healthz answers 200 when PostgreSQL and Temporal answer, 503 naming what is down."""

from __future__ import annotations

import httpx
import uvicorn
from temporalio.client import Client

from api.app import create_app
from core.settings import Settings


async def test_healthz_ok(api_url: str) -> None:
    async with httpx.AsyncClient(base_url=api_url) as http:
        response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"postgres": "ok", "temporal": "ok"}


async def test_healthz_names_temporal_when_it_is_down(settings: Settings, temporal_client: Client) -> None:
    # An API whose Temporal goes away after start: the check must say so, not hang or 500.
    from temporalio.testing import WorkflowEnvironment

    from core.temporal import SEARCH_ATTRIBUTES
    from devstack.temporal_server import temporal_binary
    from tests.helpers.stack import free_port
    from tests.helpers.waiting import until

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(), search_attributes=SEARCH_ATTRIBUTES, dev_server_log_level="error"
    )
    target = env.client.service_client.config.target_host
    port = free_port()
    app = create_app(settings.model_copy(update={"temporal_address": target}))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    import asyncio

    task = asyncio.create_task(server.serve())
    await until(lambda: bool(server.started), what="the API server to start")
    try:
        await env.shutdown()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            response = await http.get("/healthz")
        assert response.status_code == 503
        body = response.json()
        assert body["checks"]["postgres"] == "ok"
        assert body["checks"]["temporal"].startswith("down")
        assert body["status"] == "down: temporal"
    finally:
        server.should_exit = True
        await task
