"""Structured logs: one JSON object per line carrying tenant, campaign, run and the trace id, or
plain text for humans (`LOG_FORMAT=text`, what `pennant dev` uses).

Where a tenant or run is known, code calls `bind` (core.infra.telemetry.tag_current_span does, and
the workers' activity interceptor does for every activity); the fields live in a contextvar, so
each asyncio task (each activity, each request) carries its own.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace

CONTEXT_FIELDS = ("tenant", "campaign", "run")
_context: ContextVar[Mapping[str, str] | None] = ContextVar("pennant_log_context", default=None)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
# uvicorn adds `color_message`, the message with terminal colour codes: not for a log file.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}
# Temporal's workflow and activity loggers put their info in these extras; a few keys of it
# lead to the workflow in the Temporal UI.
_TEMPORAL_KEYS = {
    "temporal_workflow": {"workflow_id": "workflow_id", "workflow_type": "workflow_type"},
    "temporal_activity": {"workflow_id": "workflow_id", "activity_type": "activity_type", "attempt": "attempt"},
}


def bind(**fields: str | None) -> None:
    """Add tenant, campaign or run (any of them) to the log context of the current task."""
    current = dict(_context.get() or {})
    current.update({k: v for k, v in fields.items() if v})
    _context.set(current)


def log_context() -> dict[str, str]:
    """The fields bound so far in the current task, plus pennant.* attributes of the active span."""
    fields: dict[str, str] = {}
    attributes = getattr(trace.get_current_span(), "attributes", None) or {}
    for name in CONTEXT_FIELDS:
        value = attributes.get(f"pennant.{name}")
        if value:
            fields[name] = str(value)
    fields.update(_context.get() or {})
    return fields


def _trace_ids() -> dict[str, str]:
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return {}
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.__dict__.items():
        if key in _STANDARD or key.startswith("_"):
            continue
        if key in _TEMPORAL_KEYS and isinstance(value, Mapping):
            out.update({name: value[k] for k, name in _TEMPORAL_KEYS[key].items() if value.get(k) is not None})
        else:
            out[key] = value
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, context, trace ids, extras."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(log_context())
        entry.update(_trace_ids())
        entry.update(_extras(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time name level message [tenant=… run=…]`, for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(name)s %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The record as text, with its tenant, campaign and run when known."""
        text = super().format(record)
        context = log_context()
        if context:
            text += " [" + " ".join(f"{k}={v}" for k, v in context.items()) + "]"
        return text


class _PennantHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler setup_logging installs (recognised on a second call, and replaced)."""


def setup_logging(log_format: str = "json", level: str | int = "INFO") -> None:
    """Send every log record to stderr in `log_format` (json or text) at `level`."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _PennantHandler)]:
        root.removeHandler(handler)
    handler = _PennantHandler(sys.stderr)
    handler.setFormatter(TextFormatter() if log_format == "text" else JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # httpx logs every request at INFO: one line per SMS would drown the process's own log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
