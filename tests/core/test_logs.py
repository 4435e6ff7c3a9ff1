"""Structured log lines: JSON with the task's tenant, campaign and run and the active trace,
or text for humans; each asyncio task keeps its own context."""

from __future__ import annotations

import asyncio
import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from core.infra.logs import JsonFormatter, TextFormatter, bind, log_context
from core.infra.metrics import reason_label
from core.infra.telemetry import tag_current_span


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("pennant.test", logging.INFO, __file__, 1, message, None, None)
    record.__dict__.update(extra)
    return record


async def test_a_json_line_carries_the_tasks_tenant_run_and_the_active_trace() -> None:
    async def in_task() -> dict[str, object]:
        with TracerProvider().get_tracer("test").start_as_current_span("batch") as span:
            tag_current_span(tenant="freshmart", campaign="c-1", run="r-1")
            line = JsonFormatter().format(_record("batch done", sent=3))
            assert format(span.get_span_context().trace_id, "032x") == json.loads(line)["trace_id"]
        parsed: dict[str, object] = json.loads(line)
        return parsed

    entry = await asyncio.create_task(in_task())
    assert entry["tenant"] == "freshmart" and entry["campaign"] == "c-1" and entry["run"] == "r-1"
    assert entry["message"] == "batch done" and entry["sent"] == 3 and entry["level"] == "info"
    assert "tenant" not in log_context()  # bound inside the task only


async def test_concurrent_tasks_keep_their_own_context() -> None:
    async def one(tenant: str) -> str:
        bind(tenant=tenant)
        await asyncio.sleep(0)
        return log_context()["tenant"]

    assert list(await asyncio.gather(one("a"), one("b"))) == ["a", "b"]


async def test_text_lines_name_the_context_and_temporal_extras_become_fields() -> None:
    async def in_task() -> tuple[str, dict[str, object]]:
        bind(tenant="wellcare", run="r-2")
        text = TextFormatter().format(_record("hello"))
        extra = {"temporal_activity": {"workflow_id": "run:wellcare:c:r-2", "activity_type": "deliver_batch"}}
        return text, json.loads(JsonFormatter().format(_record("hi", **extra)))

    text, entry = await asyncio.create_task(in_task())
    assert text.endswith("hello [tenant=wellcare run=r-2]")
    assert entry["workflow_id"] == "run:wellcare:c:r-2" and entry["activity_type"] == "deliver_batch"


def test_reason_labels_stay_bounded() -> None:
    assert reason_label("skipped", "no_consent") == "no_consent"
    assert reason_label("failed", "render_error") == "render_error"
    assert reason_label("failed", "invalid address: (550, 'no such user x@example.com')") == "provider_rejected"
    assert reason_label("sent", None) == ""
