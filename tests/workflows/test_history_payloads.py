"""Every payload in the committed histories still decodes with today's models.

The Replayer runs no activities and hands the workflow the recorded results as they are, so a
reshaped model (a field renamed, removed, made required or given a stricter type) passes the
replay test and breaks only the runs in flight. Here each recorded payload is decoded as a
worker would decode it, with the data converter in use (pydantic's) and the types the
registered workflow, update, signal or activity declares: workflow inputs and results,
continue-as-new and child workflow inputs, activity inputs and results, local-activity results
(their markers), update arguments and results, and the schedule's argument (the input of the
occurrence workflow it starts). A recorded field that today's model would drop is a failure too.

Workflow I/O models must also not forbid unknown fields: during a rolling deploy an old worker
decodes what a new one wrote.
"""

from __future__ import annotations

import json
import types
import typing
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.contrib.pydantic import pydantic_data_converter

from tests.helpers.histories import history_files, read_history
from tests.helpers.registry import activity_definitions, workflow_definitions

CONVERTER = pydantic_data_converter.payload_converter
# The SDK's marker of a local activity's result; its "data" detail names the activity.
LOCAL_ACTIVITY_MARKER = "core_local_activity"
JSON = b"json/plain"
FILES = history_files()


@dataclass(frozen=True)
class Signature:
    """The types a workflow, handler or activity takes and returns."""

    args: Sequence[type] | None
    result: type | None


@dataclass(frozen=True)
class Recorded:
    """One recorded payload list and what it is: "activity input load_config", …"""

    what: str
    payloads: Sequence[Payload]
    types: Sequence[type] | None


class Registry:
    """The signatures of everything the workers register, by Temporal name."""

    def __init__(self) -> None:
        self.workflows: dict[str, Signature] = {}
        self.updates: dict[tuple[str, str], Signature] = {}
        self.signals: dict[tuple[str, str], Signature] = {}
        self.activities: dict[str, Signature] = {}

    @classmethod
    async def load(cls) -> Registry:
        registry = cls()
        for wf in workflow_definitions():
            assert wf.name is not None
            registry.workflows[wf.name] = Signature(wf.arg_types, wf.ret_type)
            for name, update in wf.updates.items():
                if name is not None:
                    registry.updates[wf.name, name] = Signature(update.arg_types, update.ret_type)
            for name, signal in wf.signals.items():
                if name is not None:
                    registry.signals[wf.name, name] = Signature(signal.arg_types, None)
        for act in await activity_definitions():
            assert act.name is not None
            registry.activities[act.name] = Signature(act.arg_types, act.ret_type)
        return registry


def recorded_payloads(path: Path, registry: Registry) -> Iterator[Recorded]:
    """Every model payload of one history, with the types a worker would decode it as."""
    events = read_history(path).events
    workflow_type = events[0].workflow_execution_started_event_attributes.workflow_type.name
    run = registry.workflows[workflow_type]
    scheduled: dict[int, str] = {}  # activity scheduled event id -> activity type
    updates: dict[str, str] = {}  # update id -> update name
    for event in events:
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            attrs = event.workflow_execution_started_event_attributes
            yield Recorded(f"{workflow_type} input", attrs.input.payloads, run.args)
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
            attrs_done = event.workflow_execution_completed_event_attributes
            yield Recorded(f"{workflow_type} result", attrs_done.result.payloads, _one(run.result))
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            attrs_can = event.workflow_execution_continued_as_new_event_attributes
            sig = registry.workflows[attrs_can.workflow_type.name]
            yield Recorded(f"{attrs_can.workflow_type.name} continue-as-new input", attrs_can.input.payloads, sig.args)
        elif kind == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            attrs_child = event.start_child_workflow_execution_initiated_event_attributes
            sig = registry.workflows[attrs_child.workflow_type.name]
            yield Recorded(f"{attrs_child.workflow_type.name} child input", attrs_child.input.payloads, sig.args)
        elif kind == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED:
            attrs_cdone = event.child_workflow_execution_completed_event_attributes
            sig = registry.workflows[attrs_cdone.workflow_type.name]
            yield Recorded(
                f"{attrs_cdone.workflow_type.name} child result", attrs_cdone.result.payloads, _one(sig.result)
            )
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs_act = event.activity_task_scheduled_event_attributes
            name = attrs_act.activity_type.name
            scheduled[event.event_id] = name
            yield Recorded(f"activity input {name}", attrs_act.input.payloads, registry.activities[name].args)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            attrs_adone = event.activity_task_completed_event_attributes
            name = scheduled[attrs_adone.scheduled_event_id]
            sig = registry.activities[name]
            yield Recorded(f"activity result {name}", attrs_adone.result.payloads, _one(sig.result))
        elif kind == EventType.EVENT_TYPE_MARKER_RECORDED:
            marker = event.marker_recorded_event_attributes
            if marker.marker_name != LOCAL_ACTIVITY_MARKER or "result" not in marker.details:
                continue  # patch markers carry no model; a failed local activity has no result
            data = json.loads(marker.details["data"].payloads[0].data)
            name = data["activity_type"]
            sig = registry.activities[name]
            yield Recorded(f"local activity result {name}", marker.details["result"].payloads, _one(sig.result))
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            request = event.workflow_execution_update_accepted_event_attributes.accepted_request
            name = request.input.name
            updates[request.meta.update_id] = name
            sig = registry.updates[workflow_type, name]
            yield Recorded(f"update {name} arguments", request.input.args.payloads, sig.args)
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED:
            attrs_udone = event.workflow_execution_update_completed_event_attributes
            if not attrs_udone.outcome.HasField("success"):
                continue
            name = updates[attrs_udone.meta.update_id]
            sig = registry.updates[workflow_type, name]
            yield Recorded(f"update {name} result", attrs_udone.outcome.success.payloads, _one(sig.result))
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            attrs_sig = event.workflow_execution_signaled_event_attributes
            sig = registry.signals[workflow_type, attrs_sig.signal_name]
            yield Recorded(f"signal {attrs_sig.signal_name} arguments", attrs_sig.input.payloads, sig.args)


def _one(result: type | None) -> Sequence[type] | None:
    return None if result is None else [result]


def dropped_keys(recorded: Any, today: Any, at: str = "") -> list[str]:
    """Keys of a recorded JSON value that today's model, encoding what it decoded, no longer has."""
    if isinstance(recorded, dict) and not isinstance(today, dict):
        return [at or "(the whole value)"]
    lost: list[str] = []
    if isinstance(recorded, dict) and isinstance(today, dict):
        for key, value in recorded.items():
            if key not in today:
                lost.append(f"{at}.{key}")
            else:
                lost += dropped_keys(value, today[key], f"{at}.{key}")
    elif isinstance(recorded, list) and isinstance(today, list):
        for i, (was, now) in enumerate(zip(recorded, today, strict=False)):
            lost += dropped_keys(was, now, f"{at}[{i}]")
    return lost


@pytest.fixture(scope="module")
async def registry() -> Registry:
    return await Registry.load()


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
async def test_every_recorded_payload_decodes_with_todays_models(path: Path, registry: Registry) -> None:
    failures: list[str] = []
    for item in recorded_payloads(path, registry):
        if not item.payloads:
            continue
        try:
            values = CONVERTER.from_payloads(item.payloads, list(item.types) if item.types is not None else None)
        except Exception as exc:  # the converter wraps pydantic's ValidationError in its own errors
            failures.append(f"{item.what}: {exc}")
            continue
        for payload, value in zip(item.payloads, values, strict=True):
            if payload.metadata.get("encoding") != JSON:
                continue  # None is binary/null, with no fields to lose
            encoded = CONVERTER.to_payloads([value])[0]
            today = json.loads(encoded.data) if encoded.metadata.get("encoding") == JSON else None
            lost = dropped_keys(json.loads(payload.data), today)
            if lost:
                failures.append(f"{item.what}: today's model drops recorded fields {lost}")
    assert failures == [], "\n".join(failures)


async def test_the_histories_hold_every_kind_of_payload(registry: Registry) -> None:
    """The decoding above is only worth something if the histories hold each kind of payload."""
    kinds = Counter(
        item.what.split(" ")[0] if item.what.startswith(("activity", "local", "update")) else item.what.split(" ", 1)[1]
        for path in FILES
        for item in recorded_payloads(path, registry)
        if item.payloads
    )
    wanted = {"input", "result", "continue-as-new input", "child input", "child result", "activity", "local", "update"}
    assert wanted <= set(kinds), f"no recorded payload of {sorted(wanted - set(kinds))}; kinds seen: {dict(kinds)}"


def _models(hint: Any, seen: set[type[BaseModel]]) -> None:
    """Collect every pydantic model reachable from a type hint (fields, unions, containers)."""
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        if hint in seen:
            return
        seen.add(hint)
        for field in hint.model_fields.values():
            _models(field.annotation, seen)
        return
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is not None:
        for arg in typing.get_args(hint):
            _models(arg, seen)


async def test_workflow_io_models_accept_unknown_fields(registry: Registry) -> None:
    """A model that forbids extra fields would fail an old worker on a payload a new one wrote."""
    seen: set[type[BaseModel]] = set()
    signatures = [*registry.workflows.values(), *registry.updates.values(), *registry.signals.values()]
    for sig in [*signatures, *registry.activities.values()]:
        for hint in [*(sig.args or []), sig.result]:
            _models(hint, seen)
    assert seen, "no pydantic model found in the registered signatures"
    forbidding = sorted(f"{m.__module__}.{m.__qualname__}" for m in seen if m.model_config.get("extra") == "forbid")
    assert forbidding == [], f"workflow I/O models that forbid unknown fields: {forbidding}"
