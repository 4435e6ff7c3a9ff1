"""What a worker registers with Temporal, read without a server or a database: the workflow
classes (workers.tenant_workers.WORKFLOWS) and the activities (workers.main.build_activities),
as the SDK's own definitions, for the tests that guard names and payloads of runs in flight."""

from __future__ import annotations

from typing import Any, cast

import httpx
from temporalio import activity, workflow

from core.infra.settings import Settings
from tests.helpers.stack import TEST_KEYRING
from workers.main import build_activities
from workers.tenant_workers import WORKFLOWS


def workflow_definitions() -> list[workflow._Definition]:
    """Each registered workflow class's definition: its name, run types, queries, signals, updates."""
    return [workflow._Definition.must_from_class(cls) for cls in WORKFLOWS]


async def activity_definitions() -> list[activity._Definition]:
    """Each registered activity's definition (name, argument and result types)."""
    settings = Settings(pennant_env="dev", secrets_keyring=TEST_KEYRING, link_signing_secret="registry-only")
    # Building the activities only wires their dependencies; nothing here touches the pool or the client.
    async with httpx.AsyncClient() as http:
        activities = build_activities(cast(Any, None), settings, http)
    return [activity._Definition.must_from_callable(fn) for fn in activities]
