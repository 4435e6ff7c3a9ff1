"""An acknowledged event survives PostgreSQL being SIGKILLed right after the answer: the
tracking API answers only after the batch's transaction has committed (on a PostgreSQL server
of the test's own, so killing it disturbs no other test)."""

from __future__ import annotations

import base64
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from core.events.sources import create_source
from core.infra.db import create_pool
from core.infra.settings import Settings
from devstack.postgres import DatabaseUrls
from tests.helpers.faults import private_postgres, serve_api, start_postgres
from tests.helpers.tenants import store_tenant


@pytest.fixture
async def own_postgres(workdir: Path) -> AsyncIterator[tuple[Any, DatabaseUrls]]:
    """A PostgreSQL server of the test's own: (server, urls)."""
    async with private_postgres(workdir, "events") as own:
        yield own


def _kill_server(pgdata: Path) -> None:
    """SIGKILL the postmaster and every process it started (no shutdown, no checkpoint)."""
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == postmaster:
                children.append(int(entry.name))
    for pid in (postmaster, *children):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in (postmaster, *children)) and time.monotonic() < deadline:
        time.sleep(0.05)


async def test_every_acknowledged_message_id_is_there_after_postgres_is_killed(
    own_postgres: tuple[Any, DatabaseUrls], settings: Settings, temporal_client: Client
) -> None:
    server, urls = own_postgres
    app_settings = settings.model_copy(
        update={
            "database_url": urls.app,
            "database_owner_url": urls.owner,
            "temporal_address": temporal_client.service_client.config.target_host,
        }
    )
    ids = [str(uuid.uuid4()) for _ in range(200)]
    async with serve_api(app_settings) as url:
        owner = await create_pool(urls.owner, max_size=2)
        try:
            slug = await store_tenant(owner, "events-", customers=0)
            key, _ = await create_source(owner, slug, "durability")
        finally:
            await owner.close()
        auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
        batch = {"batch": [{"type": "track", "event": "Viewed", "userId": "u", "messageId": m} for m in ids]}
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            answer = await http.post("/v1/batch", json=batch, headers=auth)
        assert answer.status_code == 200 and answer.json()["accepted"] == len(ids), answer.text
        _kill_server(Path(server.pgdata))
    start_postgres(server)
    owner = await create_pool(urls.owner, max_size=1)
    try:
        stored = {
            r["message_id"] for r in await owner.fetch("SELECT message_id FROM events WHERE tenant_id = $1", slug)
        }
    finally:
        await owner.close()
    assert stored == set(ids)
